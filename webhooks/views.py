"""The registry webhook endpoint: size guard, authentication, parse, record.

A DRF view only for its scoped throttle; it reads the raw body itself (the
signature covers the exact bytes) and has no authentication classes, since
registries prove themselves with the shared secret (see ``signatures``).
"""

from __future__ import annotations

import logging

from django.conf import settings
from drf_spectacular.types import OpenApiTypes
from drf_spectacular.utils import extend_schema, inline_serializer
from rest_framework import serializers
from rest_framework.negotiation import BaseContentNegotiation
from rest_framework.renderers import JSONRenderer
from rest_framework.request import Request
from rest_framework.response import Response
from rest_framework.views import APIView

from fleet.throttling import FailOpenScopedRateThrottle

from . import services
from .metrics import count_delivery
from .parsers import InvalidPayload, accepted_shapes, parse_delivery
from .serializers import WebhookAnswerSerializer, WebhookErrorSerializer
from .signatures import verify_delivery

logger = logging.getLogger(__name__)

MAX_BODY_BYTES = 1024 * 1024
_READ_CHUNK_BYTES = 64 * 1024


class _JSONWhateverTheAcceptHeader(BaseContentNegotiation):
    """Registries send odd Accept headers; a 406 would only lose the delivery."""

    def select_parser(self, request, parsers):
        return None  # the view reads the raw body itself

    def select_renderer(self, request, renderers, format_suffix=None):
        return renderers[0], renderers[0].media_type


class _WebhookView(APIView):
    authentication_classes: list = []
    permission_classes: list = []
    # Fails open: with Redis down a delivery is still stored and answered.
    throttle_classes = [FailOpenScopedRateThrottle]
    throttle_scope = "webhooks"
    parser_classes: list = []
    renderer_classes = [JSONRenderer]
    content_negotiation_class = _JSONWhateverTheAcceptHeader


class DockerRegistryWebhook(_WebhookView):
    def finalize_response(self, request, response, *args, **kwargs):
        # Every answer of the endpoint is counted, refusals and throttling too.
        response = super().finalize_response(request, response, *args, **kwargs)
        if request.method == "POST":
            count_delivery(response.status_code, getattr(response, "data", None))
        return response

    @extend_schema(
        tags=["webhooks"],
        summary="Receive a registry push notification",
        description=(
            "The registry is detected from the body (and GitHub's X-GitHub-Event "
            f"header). Accepted shapes: {accepted_shapes()}."
        ),
        request={"application/json": OpenApiTypes.OBJECT},
        responses={
            202: WebhookAnswerSerializer,
            400: WebhookErrorSerializer,
            401: WebhookErrorSerializer,
            413: WebhookErrorSerializer,
            429: WebhookErrorSerializer,
        },
    )
    def post(self, request: Request) -> Response:
        body = _read_capped_body(request)
        if body is None:
            return _error(413, "body_too_large", f"The body exceeds {MAX_BODY_BYTES} bytes.")
        remote_addr = request.META.get("REMOTE_ADDR")
        verdict = verify_delivery(
            secret=settings.DOCKER_WEBHOOK_SECRET,
            body=body,
            signature=request.headers.get("X-Hub-Signature-256"),
            authorization=request.headers.get("Authorization"),
            token=request.query_params.get("token"),
        )
        if not verdict.accepted:
            logger.warning("Rejected webhook delivery from %s: %s", remote_addr, verdict.reason)
            response = _error(401, "not_authenticated", _UNAUTHENTICATED_DETAIL)
            response["WWW-Authenticate"] = 'Bearer realm="webhooks"'
            return response
        try:
            parsed = parse_delivery(request.headers, body)
        except InvalidPayload as exc:
            return _error(400, exc.code, str(exc))
        answer = services.delivery_receive(
            parsed=parsed, body=body, headers=request.headers, remote_addr=remote_addr
        )
        logger.info(
            "Webhook delivery %s from %s (%s): %s",
            answer.get("delivery_id"),
            parsed.registry,
            remote_addr,
            answer["status"],
        )
        return Response(answer, status=202)


class DockerRegistryWebhookTest(_WebhookView):
    """Lets an operator check the URL they gave the registry reaches us."""

    @extend_schema(
        tags=["webhooks"],
        responses=inline_serializer("WebhookTestAnswer", {"status": serializers.CharField()}),
    )
    def get(self, request: Request) -> Response:
        return Response({"status": "ok"})


_UNAUTHENTICATED_DETAIL = (
    "Sign the body (X-Hub-Signature-256: sha256=<HMAC-SHA256>), or send "
    "'Authorization: Bearer <secret>' or '?token=<secret>'."
)


def _error(status: int, code: str, detail: str) -> Response:
    return Response({"error": code, "detail": detail}, status=status)


def _read_capped_body(request: Request) -> bytes | None:
    """The raw body, or None when it is larger than MAX_BODY_BYTES.

    The declared length is checked first so a large body is refused unread;
    the read is capped too, in case the declared length is absent or wrong.
    """
    try:
        declared = int(request.META.get("CONTENT_LENGTH") or 0)
    except ValueError:
        declared = 0
    if declared > MAX_BODY_BYTES:
        return None
    # Django's request underneath; nothing has touched its body yet.
    stream = request._request
    chunks, size = [], 0
    while chunk := stream.read(min(_READ_CHUNK_BYTES, MAX_BODY_BYTES + 1 - size)):
        chunks.append(chunk)
        size += len(chunk)
        if size > MAX_BODY_BYTES:
            return None
    return b"".join(chunks)
