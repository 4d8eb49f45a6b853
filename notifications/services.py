"""Notification hooks: turn committed rollout events into deliveries, and
attempt each delivery (signed, no redirects, short timeouts, retried with
exponential backoff by the task)."""

import hashlib
import hmac
import json
import logging
from dataclasses import dataclass
from datetime import datetime, timedelta

import httpx
from django.conf import settings
from django.db import transaction
from django.db.models import Q
from django.utils import timezone

from counters.services import counter_add
from rollouts.models import Rollout, RolloutEvent
from rollouts.selectors import with_counts
from rollouts.serializers import RolloutEventSerializer, RolloutSerializer
from rollouts.streams.cursor import CommittedEventCursor

from .models import DeliveryStatus, DispatchState, HookFormat, NotificationDelivery, NotificationHook
from .network import RefusedURL, check_hook_url

logger = logging.getLogger(__name__)

DISPATCH_TASK = "notifications.dispatch_events"
DELIVER_TASK = "notifications.deliver"
# Events looked at per dispatch pass; a backlog takes several passes.
DISPATCH_CHUNK = 500
EXCERPT_CHARS = 200
# A pending delivery this long past its next attempt lost its task (the
# enqueue after commit failed, a worker died holding it): the dispatch pass
# enqueues it again. Longer than a task takes to start on a busy worker.
DUE_GRACE_SECONDS = 30
# At most this many re-enqueued per pass (every 10 s by beat); more wait.
DUE_CHUNK = 500
ERROR_CHARS = 300


def dispatch_soon() -> None:
    """After a commit that wrote events: a worker turns them into deliveries.
    Nothing is enqueued while no hook is enabled."""
    if NotificationHook.objects.filter(enabled=True).exists():
        from .tasks import dispatch_events

        dispatch_events.delay()


# --- Dispatch: events -> deliveries -------------------------------------


@transaction.atomic
def deliveries_dispatch(*, now: datetime | None = None) -> list[str]:
    """One pass over the events committed since the last pass: a delivery
    per (enabled hook, matching event). Returns the ids of the deliveries to
    attempt, which the caller enqueues after commit. Passes run one at a
    time (row lock); a pass that finds the lock taken waits for it."""
    now = now or timezone.now()
    state = _locked_state()
    cursor = CommittedEventCursor.from_state(state.position, state.gap)
    hooks = list(NotificationHook.objects.filter(enabled=True))
    scanned_from = cursor.position
    cursor.advance()
    # Events beyond a gap are visible and committed: deliver them now; the
    # next pass looks at them again (the unique constraint keeps one
    # delivery) until the cursor has settled past them.
    events = list(
        _events_any_hook_wants(hooks).filter(id__gt=scanned_from).order_by("id")[:DISPATCH_CHUNK]
    ) if hooks else []
    created = _insert_new(_deliveries_of(events, hooks, now))
    if len(events) == DISPATCH_CHUNK:
        # A backlog: settle no further than what this pass looked at.
        cursor.position = min(cursor.position, events[-1].id)
    state.position, state.gap = cursor.state()
    state.save(update_fields=["position", "gap"])
    return created


def _deliveries_of(events, hooks, now) -> list[NotificationDelivery]:
    payloads: dict[int, dict] = {}
    return [
        NotificationDelivery(
            hook=hook,
            event=event,
            event_type=event.event_type,
            body=_body(hook, event, payloads),
            created_at=now,
            next_attempt_at=now,
        )
        for event in events
        for hook in hooks
        if _wants(hook, event)
    ]


def deliveries_due(*, now: datetime | None = None) -> list[str]:
    """Pending deliveries whose next attempt is more than DUE_GRACE_SECONDS
    overdue: nothing will attempt them unless they are enqueued again. The
    backoff holds: a failed attempt's next one is not due before its wait."""
    now = now or timezone.now()
    due = NotificationDelivery.objects.filter(
        status=DeliveryStatus.PENDING, next_attempt_at__lte=now - timedelta(seconds=DUE_GRACE_SECONDS)
    ).order_by("next_attempt_at")
    return [str(pk) for pk in due.values_list("id", flat=True)[:DUE_CHUNK]]


def _locked_state() -> DispatchState:
    dispatch_state_ensure()
    return DispatchState.objects.select_for_update().get(pk=1)


def dispatch_state_ensure() -> None:
    """The dispatcher starts at the newest event when the first hook is
    created: hooks hear about events from then on, not about the past."""
    if not DispatchState.objects.filter(pk=1).exists():
        latest = RolloutEvent.objects.order_by("-id").values_list("id", flat=True).first() or 0
        DispatchState.objects.get_or_create(pk=1, defaults={"position": latest})


def hook_create(**fields) -> NotificationHook:
    dispatch_state_ensure()
    return NotificationHook.objects.create(**fields)


def _events_any_hook_wants(hooks: list[NotificationHook]):
    explicit = {event_type for hook in hooks for event_type in hook.events}
    wanted = Q(event_type__in=explicit)
    if any(not hook.events for hook in hooks):
        wanted |= Q(device_uuid__isnull=True)
    return RolloutEvent.objects.filter(wanted)


def _wants(hook: NotificationHook, event: RolloutEvent) -> bool:
    if hook.events:
        return event.event_type in hook.events
    return event.device_uuid is None


def _insert_new(deliveries: list[NotificationDelivery]) -> list[str]:
    if not deliveries:
        return []
    NotificationDelivery.objects.bulk_create(deliveries, ignore_conflicts=True)
    # ignore_conflicts leaves no trace of which rows were new: ask.
    return [
        str(pk)
        for pk in NotificationDelivery.objects.filter(
            pk__in=[delivery.pk for delivery in deliveries]
        ).values_list("pk", flat=True)
    ]


def _body(hook: NotificationHook, event: RolloutEvent, payloads: dict[int, dict]) -> str:
    """The JSON of each event (with its rollout) is built once per pass."""
    if event.id not in payloads:
        payloads[event.id] = _event_payload(event)
    payload = payloads[event.id]
    if hook.format == HookFormat.SLACK:
        return json.dumps({"text": _slack_text(payload)})
    return json.dumps(payload)


def _event_payload(event: RolloutEvent) -> dict:
    rollout = with_counts(Rollout.objects.select_related("fleet")).get(pk=event.rollout_id)
    return {
        **RolloutEventSerializer(event).data,
        "rollout_id": str(event.rollout_id),
        "rollout": RolloutSerializer(rollout).data,
    }


def _slack_text(payload: dict) -> str:
    rollout = payload["rollout"]
    return (
        f"*{payload['event_type']}* {rollout['image']}:{rollout['new_tag']} "
        f"({rollout['status']}, {rollout['counts'].get('healthy', 0)}/{rollout['total_devices']} "
        f"healthy): {payload['message']}"
    )


# --- Delivery attempts ------------------------------------------------------


@dataclass
class Attempt:
    delivered: bool
    retry_in: float | None  # seconds until the next attempt; None: no more


def delivery_attempt(*, delivery_id: str, now: datetime | None = None) -> Attempt:
    """POST the delivery once. Returns whether it is delivered and, if not,
    when to try again (exponential backoff) or that it gave up."""
    delivery = _claim(delivery_id, now or timezone.now())
    if delivery is None:
        return Attempt(delivered=False, retry_in=None)
    # The request runs outside any transaction: a slow receiver holds no lock.
    status_code, excerpt, error = _post(delivery)
    delivered = error == "" and 200 <= status_code < 300
    retry_in = None if delivered else _backoff(delivery.attempts)
    NotificationDelivery.objects.filter(pk=delivery.pk).update(
        next_attempt_at=None if retry_in is None else timezone.now() + timedelta(seconds=retry_in),
        status_code=status_code or None,
        response_excerpt=excerpt,
        error=error[:ERROR_CHARS] or ("" if delivered else f"HTTP {status_code}"),
        status=(
            DeliveryStatus.DELIVERED if delivered
            else DeliveryStatus.PENDING if retry_in is not None
            else DeliveryStatus.FAILED
        ),
        delivered_at=timezone.now() if delivered else None,
    )
    result = "delivered" if delivered else "failed" if retry_in is not None else "gave_up"
    try:
        counter_add("fleet_notification_deliveries_total", {"result": result})
    except Exception:  # the attempt is recorded; only its count is lost
        logger.exception("could not count a notification delivery")
    return Attempt(delivered=delivered, retry_in=retry_in)


@transaction.atomic
def _claim(delivery_id: str, now: datetime) -> NotificationDelivery | None:
    """Count the attempt before making it; a delivery that is done, or that
    another worker is attempting right now, is left alone."""
    delivery = (
        NotificationDelivery.objects.select_for_update(skip_locked=True)
        .select_related("hook")
        .filter(pk=delivery_id, status=DeliveryStatus.PENDING)
        .first()
    )
    if delivery is None:
        return None
    delivery.attempts += 1
    delivery.last_attempt_at = now
    # While the attempt is in flight it is not due: a worker that dies
    # mid-request leaves it due again once the request would have timed out.
    delivery.next_attempt_at = now + timedelta(seconds=2 * settings.NOTIFICATION_TIMEOUT_SECONDS)
    delivery.save(update_fields=["attempts", "last_attempt_at", "next_attempt_at"])
    return delivery


def _backoff(attempts_made: int) -> float | None:
    """10 s, 20 s, 40 s, ... after each failure (NOTIFICATION_RETRY_BASE_SECONDS);
    None once the retries are spent."""
    retries_made = attempts_made - 1
    if retries_made >= settings.NOTIFICATION_MAX_RETRIES:
        return None
    return settings.NOTIFICATION_RETRY_BASE_SECONDS * 2**retries_made


def signature(secret: str, body: bytes) -> str:
    return "sha256=" + hmac.new(secret.encode(), body, hashlib.sha256).hexdigest()


def _post(delivery: NotificationDelivery) -> tuple[int, str, str]:
    """(status code, excerpt of the answer, error); never raises."""
    hook = delivery.hook
    body = delivery.body.encode()
    headers = {
        "Content-Type": "application/json",
        "User-Agent": "fleet-control-plane",
        "X-Fleet-Event": delivery.event_type,
        "X-Fleet-Delivery": str(delivery.pk),
    }
    if hook.secret:
        headers["X-Fleet-Signature-256"] = signature(hook.secret, body)
    try:
        check_hook_url(hook.url)
        timeout = settings.NOTIFICATION_TIMEOUT_SECONDS
        with httpx.Client(
            follow_redirects=False, timeout=httpx.Timeout(timeout, connect=min(timeout, 3.0))
        ) as client, client.stream("POST", hook.url, content=body, headers=headers) as response:
            return response.status_code, _excerpt(response), ""
    except RefusedURL as exc:
        return 0, "", f"refused: {exc}"
    except httpx.TimeoutException:
        return 0, "", f"timeout after {settings.NOTIFICATION_TIMEOUT_SECONDS:g} s"
    except httpx.HTTPError as exc:
        return 0, "", f"{type(exc).__name__}: {exc}"


def _excerpt(response: httpx.Response) -> str:
    """The start of the answer only: a receiver's body is never stored whole."""
    chunk = b""
    for data in response.iter_raw(EXCERPT_CHARS * 4):
        chunk += data
        if len(chunk) >= EXCERPT_CHARS * 4:
            break
    return chunk.decode("utf-8", "replace")[:EXCERPT_CHARS]
