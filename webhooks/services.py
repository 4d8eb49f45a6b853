"""Receiving a parsed, authenticated delivery: record it once, act on it once.

The delivery row is inserted before anything else, inside a savepoint of the
transaction that then creates the rollouts.  Two copies arriving together
therefore meet at the unique constraint on ``delivery_key``: PostgreSQL makes
the second INSERT wait until the first transaction ends, and raise
IntegrityError once it has committed.  The second copy then reads the first
answer, which is committed by then (READ COMMITTED takes a new snapshot per
statement), and creates nothing.  Had the first transaction rolled back, the
second INSERT would simply succeed and the second copy would do the work.
"""

from __future__ import annotations

import hashlib
import ipaddress
import uuid as uuid_lib
from collections.abc import Mapping
from datetime import datetime
from typing import Any

from django.db import IntegrityError, transaction
from django.utils import timezone

from rollouts.services import rollout_create_for_push

from .models import Outcome, WebhookDelivery
from .parsers import ParsedDelivery

DUPLICATE = "duplicate"

# Kept with each delivery for the audit trail; credentials and signatures
# are deliberately absent.
HEADERS_OF_INTEREST = (
    "User-Agent",
    "Content-Type",
    "X-GitHub-Event",
    "X-GitHub-Delivery",
    "X-GitHub-Hook-ID",
    "X-Forwarded-For",
)
MAX_HEADER_LENGTH = 512


def delivery_receive(
    *,
    parsed: ParsedDelivery,
    body: bytes,
    headers: Mapping[str, str],
    remote_addr: str | None = None,
    now: datetime | None = None,
) -> dict[str, Any]:
    """Record a delivery and create a rollout per push; returns the 202 body.

    A delivery seen before creates nothing and returns the first answer with
    status ``duplicate``.
    """
    now = now or timezone.now()
    body_sha256 = hashlib.sha256(body).hexdigest()
    delivery = WebhookDelivery(
        id=uuid_lib.uuid4(),
        registry=parsed.registry,
        delivery_key=_delivery_key(parsed, body_sha256),
        body_sha256=body_sha256,
        headers=_headers_of_interest(headers),
        remote_addr=_ip_or_none(remote_addr),
        pushes=[push.as_dict() for push in parsed.pushes],
        received_at=now,
    )
    if parsed.ignored_reason:
        # Known before the insert, so one statement records it.
        delivery.outcome = Outcome.IGNORED
        delivery.response = _answer(delivery, parsed, results=[])
    else:
        delivery.outcome = Outcome.RECEIVED
    with transaction.atomic():
        if not _claim(delivery):
            return _duplicate_answer(delivery.delivery_key)
        if parsed.pushes:
            _act_on_pushes(delivery, parsed, now)
    return delivery.response


def _delivery_key(parsed: ParsedDelivery, body_sha256: str) -> str:
    if parsed.delivery_id:
        return f"{parsed.registry}:{parsed.delivery_id}"
    return f"sha256:{body_sha256}"


def _claim(delivery: WebhookDelivery) -> bool:
    """Insert the delivery; False when its key exists (waiting for a concurrent copy)."""
    try:
        # A savepoint, so the outer transaction stays usable for the read
        # of the first answer.
        with transaction.atomic():
            delivery.save(force_insert=True)
    except IntegrityError:
        return False
    return True


def _duplicate_answer(key: str) -> dict[str, Any]:
    rows = WebhookDelivery.objects.filter(delivery_key=key).values_list("response", flat=True)
    first = rows.first() or {}
    return {**first, "status": DUPLICATE, "first_status": first.get("status")}


def _act_on_pushes(delivery: WebhookDelivery, parsed: ParsedDelivery, now: datetime) -> None:
    source = {
        "registry": parsed.registry,
        "delivery_id": str(delivery.id),
        "registry_delivery_id": parsed.delivery_id,
    }
    results: list[dict[str, Any]] = [{} for _ in parsed.pushes]
    # Pushes are acted on in image order, whatever the payload's order: two
    # deliveries naming the same images then lock their rollouts in the same
    # order and cannot deadlock. For one image, `latest` goes first so that
    # a versioned tag pushed with it is the rollout that survives.
    for index, push in sorted(enumerate(parsed.pushes), key=_processing_order):
        outcome = rollout_create_for_push(
            image=push.image,
            tag=push.tag,
            digest=push.digest,
            trigger="webhook",
            source=source,
            now=now,
        )
        rollout_id = str(outcome.rollout.id) if outcome.rollout is not None else None
        results[index] = {**push.as_dict(), "status": outcome.status, "rollout_id": rollout_id}
        if outcome.reason:
            # `ignored` by the policy's version rules (CONTRACT section 7).
            results[index]["reason"] = outcome.reason
    headline = _headline(parsed, results)
    delivery.pushes = results
    delivery.outcome = headline["status"]
    delivery.rollout_id = headline["rollout_id"]
    delivery.response = _answer(delivery, parsed, results, headline)
    delivery.save(update_fields=["pushes", "outcome", "rollout_id", "response"])


def _processing_order(item: tuple[int, Any]) -> tuple[str, bool, int]:
    index, push = item
    return (push.image, push.tag != "latest", index)


def _headline(parsed: ParsedDelivery, results: list[dict[str, Any]]) -> dict[str, Any]:
    """The result the top-level answer shows: the first push in payload order
    whose rollout is still the active one of its image (a later push of the
    same image in this delivery superseded the others), else the first."""
    survivors = {}
    for index, push in sorted(enumerate(parsed.pushes), key=_processing_order):
        if results[index]["status"] == "rollout_created":
            survivors[push.image] = index
    return results[min(survivors.values())] if survivors else results[0]


def _answer(
    delivery: WebhookDelivery,
    parsed: ParsedDelivery,
    results: list[dict[str, Any]],
    headline: dict[str, Any] | None = None,
) -> dict[str, Any]:
    # Several pushes: the top-level fields are the headline push's (see
    # _headline), and `pushes` has every push's result.
    first = headline or (results[0] if results else {})
    answer = {
        "delivery_id": str(delivery.id),
        "registry": parsed.registry,
        "status": first.get("status", Outcome.IGNORED.value),
        "rollout_id": first.get("rollout_id"),
        "image": first.get("image"),
        "tag": first.get("tag"),
        "digest": first.get("digest"),
        "pushes": results,
    }
    if parsed.ignored_reason:
        answer["reason"] = parsed.ignored_reason
    elif first.get("reason"):
        answer["reason"] = first["reason"]
    return answer


def _headers_of_interest(headers: Mapping[str, str]) -> dict[str, str]:
    kept = {}
    for name in HEADERS_OF_INTEREST:
        value = headers.get(name)
        if value is not None:
            # PostgreSQL's jsonb cannot hold NUL characters.
            kept[name] = value[:MAX_HEADER_LENGTH].replace("\x00", "")
    return kept


def _ip_or_none(address: str | None) -> str | None:
    # REMOTE_ADDR is empty behind a unix socket; the column takes IPs only.
    try:
        return str(ipaddress.ip_address(address or ""))
    except ValueError:
        return None
