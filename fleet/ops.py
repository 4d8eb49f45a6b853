"""Operations endpoints: liveness, readiness, Prometheus metrics."""

import hmac
import ipaddress
import logging

from django.conf import settings
from django.db import connection
from django.http import HttpRequest, HttpResponse, JsonResponse
from django.views.decorators.cache import never_cache

from fleet.api import json_error, require_methods

from .metrics import render_metrics

logger = logging.getLogger(__name__)


@never_cache
@require_methods("GET", "HEAD")
def healthz(request: HttpRequest) -> JsonResponse:
    # Liveness: the process answers. No dependency is touched on purpose, so a
    # database outage does not get every web process restarted.
    return JsonResponse({"status": "ok"})


@never_cache
@require_methods("GET", "HEAD")
def readyz(request: HttpRequest) -> JsonResponse:
    checks = {"database": _database_ok(), "broker": _broker_ok()}
    down = [name for name, ok in checks.items() if not ok]
    if down:
        return JsonResponse(
            {
                "error": "not_ready",
                "detail": f"Unreachable: {', '.join(down)}.",
                "checks": {name: "ok" if ok else "down" for name, ok in checks.items()},
            },
            status=503,
        )
    return JsonResponse({"status": "ok", "checks": {name: "ok" for name in checks}})


def _database_ok() -> bool:
    try:
        with connection.cursor() as cursor:
            cursor.execute("SELECT 1")
        return True
    except Exception:  # any failure means "not ready"; the reason goes to the log
        logger.exception("readiness: database check failed")
        return False


def _broker_ok() -> bool:
    from fleet.celery import app

    try:
        # One attempt with a short connect timeout: kombu's retries sleep two
        # seconds before the second try, and a probe must answer quickly.
        with app.connection_for_write(connect_timeout=2) as conn:
            conn.ensure_connection(max_retries=0)
        return True
    except Exception:  # any failure means "not ready"; the reason goes to the log
        logger.warning(
            "readiness: broker %s unreachable", _safe_url(app.conf.broker_url), exc_info=True
        )
        return False


def _safe_url(url: str) -> str:
    # Without the credentials, which may sit before the `@`.
    return url.split("@")[-1]


@require_methods("GET")
def metrics(request: HttpRequest) -> HttpResponse:
    refusal = _metrics_refusal(request)
    if refusal is not None:
        return refusal
    body, content_type = render_metrics()
    return HttpResponse(body, content_type=content_type)


def _metrics_refusal(request: HttpRequest) -> HttpResponse | None:
    """401 without the METRICS_TOKEN bearer when one is set; otherwise 403
    for anyone but the loopback address (a scraper on the same host)."""
    token = settings.METRICS_TOKEN
    if token:
        scheme, _, given = request.headers.get("Authorization", "").partition(" ")
        if scheme.lower() == "bearer" and hmac.compare_digest(given.strip().encode(), token.encode()):
            return None
        response = json_error(401, "not_authenticated", "Send Authorization: Bearer <METRICS_TOKEN>.")
        response["WWW-Authenticate"] = 'Bearer realm="metrics"'
        return response
    if _is_loopback(request.META.get("REMOTE_ADDR", "")):
        return None
    return json_error(
        403, "permission_denied", "Without METRICS_TOKEN, /metrics answers loopback only."
    )


def _is_loopback(address: str) -> bool:
    try:
        return ipaddress.ip_address(address).is_loopback
    except ValueError:
        return False
