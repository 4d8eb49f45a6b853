"""Notification hooks: the API (write-only secret, URLs that are refused),
and deliveries to a real receiver on loopback: signed, retried with backoff,
logged, never following a redirect, never stored beyond an excerpt, never
holding a worker past the timeout."""

import hashlib
import hmac
import json
import time

import pytest
from django.utils import timezone

from notifications.models import DeliveryStatus, NotificationDelivery, NotificationHook
from notifications.services import delivery_attempt, deliveries_dispatch, hook_create
from rollouts.models import EventType
from rollouts.services.events import event_record

from .receiver import Receiver, SilentReceiver
from .rollout_helpers import build_fleet, create_rollout, policy

HOOKS = "/api/v1/notification-hooks/"


@pytest.fixture
def receiver():
    receivers = []

    def make(*statuses: int, **options) -> Receiver:
        receivers.append(Receiver(list(statuses), **options))
        return receivers[-1]

    yield make
    for each in receivers:
        each.close()


@pytest.fixture
def private_ok(settings):
    settings.NOTIFICATION_ALLOW_PRIVATE_NETWORKS = True


@pytest.fixture
def rollout(db):
    build_fleet(1)
    policy()
    return create_rollout()


def _paused(rollout):
    return event_record(
        rollout=rollout, event_type=EventType.ROLLOUT_PAUSED, message="Paused by ops.", now=timezone.now()
    )


def _delivery_for(hook, rollout) -> NotificationDelivery:
    _paused(rollout)
    deliveries_dispatch()
    return NotificationDelivery.objects.get(hook=hook)


# --- API ---------------------------------------------------------------------


@pytest.mark.django_db
def test_it_never_returns_the_secret(admin_api, private_ok):
    created = admin_api.post(
        HOOKS, {"url": "http://127.0.0.1:9/x", "secret": "s3cret", "events": ["image.rollout_paused"]},
        format="json",
    )
    assert created.status_code == 201, created.content
    assert "secret" not in created.json() and created.json()["has_secret"] is True
    listed = admin_api.get(HOOKS).json()["results"][0]
    detail = admin_api.get(f"{HOOKS}{created.json()['id']}/").json()
    assert "secret" not in listed and "secret" not in detail
    assert b"s3cret" not in admin_api.get(HOOKS).content
    assert NotificationHook.objects.get().secret == "s3cret"


@pytest.mark.django_db
@pytest.mark.parametrize(
    "url",
    [
        "ftp://example.com/x",
        "not a url",
        "http://127.0.0.1:8000/x",
        "http://localhost/x",
        "http://10.1.2.3/x",
        "http://192.168.0.10/x",
        "http://169.254.169.254/latest/meta-data",
        "http://[::1]/x",
        "http://[::ffff:10.0.0.1]/x",
        "http://0.0.0.0/x",
    ],
)
def test_it_refuses_urls_that_are_not_public_http(admin_api, url):
    response = admin_api.post(HOOKS, {"url": url}, format="json")
    assert response.status_code == 400, response.content
    assert response.json()["error"] == "invalid" and "url" in response.json()["fields"]
    assert not NotificationHook.objects.exists()


@pytest.mark.django_db
def test_it_allows_private_addresses_when_told_to(admin_api, private_ok):
    response = admin_api.post(HOOKS, {"url": "http://127.0.0.1:8000/x", "format": "slack"}, format="json")
    assert response.status_code == 201


@pytest.mark.django_db
def test_it_refuses_unknown_event_types_and_formats(admin_api, private_ok):
    bad_event = admin_api.post(HOOKS, {"url": "http://127.0.0.1/x", "events": ["image.nope"]}, format="json")
    bad_format = admin_api.post(HOOKS, {"url": "http://127.0.0.1/x", "format": "xml"}, format="json")
    assert (bad_event.status_code, bad_format.status_code) == (400, 400)


@pytest.mark.django_db
def test_it_answers_401_and_403_as_the_operator_api(api_client, make_operator):
    assert api_client.get(HOOKS).status_code == 401
    assert make_operator().get(HOOKS).status_code == 403
    assert make_operator("notifications.view_notificationhook").get(HOOKS).status_code == 200


# --- Deliveries ----------------------------------------------------------------


@pytest.mark.django_db
def test_it_delivers_rollout_level_events_signed_as_json(rollout, receiver, private_ok):
    target = receiver(200)
    hook = hook_create(url=target.url, secret="s3cret")
    delivery = _delivery_for(hook, rollout)

    assert delivery_attempt(delivery_id=delivery.pk).delivered
    request = target.requests[0]
    expected = "sha256=" + hmac.new(b"s3cret", request.body, hashlib.sha256).hexdigest()
    assert request.headers["X-Fleet-Signature-256"] == expected
    assert request.headers["X-Fleet-Event"] == "image.rollout_paused"
    assert request.headers["X-Fleet-Delivery"] == str(delivery.pk)
    body = json.loads(request.body)
    assert body["event_type"] == "image.rollout_paused" and body["message"] == "Paused by ops."
    assert body["rollout"]["id"] == str(rollout.pk) and "counts" in body["rollout"]


@pytest.mark.django_db
def test_it_sends_slack_text_and_no_signature_without_a_secret(rollout, receiver, private_ok):
    target = receiver(200)
    hook = hook_create(url=target.url, format="slack")
    delivery_attempt(delivery_id=_delivery_for(hook, rollout).pk)
    request = target.requests[0]
    assert "X-Fleet-Signature-256" not in request.headers
    text = json.loads(request.body)["text"]
    assert "image.rollout_paused" in text and "Paused by ops." in text


@pytest.mark.django_db
def test_it_sends_only_the_listed_events(rollout, private_ok):
    only_resumes = hook_create(url="http://127.0.0.1:9/x", events=["image.rollout_resumed"])
    everything = hook_create(url="http://127.0.0.1:9/y")
    _paused(rollout)
    deliveries_dispatch()
    assert not only_resumes.deliveries.exists()
    assert everything.deliveries.get().event_type == "image.rollout_paused"
    deliveries_dispatch()  # a second pass delivers nothing twice
    assert NotificationDelivery.objects.count() == 1


@pytest.mark.django_db
def test_it_does_not_follow_redirects(rollout, receiver, private_ok):
    elsewhere = receiver(200)
    target = receiver(302, extra_headers={"Location": elsewhere.url})
    delivery = _delivery_for(hook_create(url=target.url), rollout)
    attempt = delivery_attempt(delivery_id=delivery.pk)
    assert not attempt.delivered and attempt.retry_in is not None
    assert elsewhere.requests == []
    assert NotificationDelivery.objects.get().status_code == 302


@pytest.mark.django_db
def test_it_keeps_only_an_excerpt_of_the_answer(rollout, receiver, private_ok):
    target = receiver(200, answer_body=b"x" * 100_000)
    delivery = _delivery_for(hook_create(url=target.url), rollout)
    delivery_attempt(delivery_id=delivery.pk)
    assert len(NotificationDelivery.objects.get().response_excerpt) <= 200


@pytest.mark.django_db
def test_a_receiver_that_never_answers_frees_the_worker_after_the_timeout(rollout, private_ok, settings):
    settings.NOTIFICATION_TIMEOUT_SECONDS = 1
    silent = SilentReceiver()
    try:
        delivery = _delivery_for(hook_create(url=silent.url), rollout)
        started = time.monotonic()
        attempt = delivery_attempt(delivery_id=delivery.pk)
        assert time.monotonic() - started < 10
    finally:
        silent.close()
    assert not attempt.delivered and attempt.retry_in is not None
    assert NotificationDelivery.objects.get().error == "timeout after 1 s"


@pytest.mark.django_db
def test_it_refuses_at_send_time_an_address_that_became_private(rollout, receiver, settings):
    settings.NOTIFICATION_ALLOW_PRIVATE_NETWORKS = True
    target = receiver(200)
    delivery = _delivery_for(hook_create(url=target.url), rollout)
    settings.NOTIFICATION_ALLOW_PRIVATE_NETWORKS = False
    delivery_attempt(delivery_id=delivery.pk)
    assert target.requests == []
    assert NotificationDelivery.objects.get().error.startswith("refused:")


@pytest.mark.django_db
def test_it_retries_at_least_five_times_with_exponential_backoff_first_within_30_s(
    rollout, receiver, private_ok
):
    target = receiver(500)
    delivery = _delivery_for(hook_create(url=target.url), rollout)
    waits = []
    while (attempt := delivery_attempt(delivery_id=delivery.pk)).retry_in is not None:
        waits.append(attempt.retry_in)
    assert len(waits) >= 5 and waits[0] <= 30
    assert all(later == 2 * earlier for earlier, later in zip(waits, waits[1:]))
    delivery.refresh_from_db()
    assert (delivery.status, delivery.attempts) == (DeliveryStatus.FAILED, len(waits) + 1)
    assert delivery.error == "HTTP 500" and len(target.requests) == len(waits) + 1


@pytest.mark.django_db
def test_a_delivery_whose_task_was_lost_is_enqueued_again_once_overdue(rollout, receiver, private_ok):
    from datetime import timedelta

    from notifications.services import DUE_GRACE_SECONDS, deliveries_due
    from notifications.tasks import dispatch_events

    target = receiver(200)
    # The dispatch pass committed the delivery; its enqueue was lost.
    delivery = _delivery_for(hook_create(url=target.url), rollout)
    created = delivery.next_attempt_at
    assert created is not None
    assert deliveries_due(now=created + timedelta(seconds=DUE_GRACE_SECONDS - 1)) == []
    assert deliveries_due(now=created + timedelta(seconds=DUE_GRACE_SECONDS + 1)) == [str(delivery.pk)]
    NotificationDelivery.objects.filter(pk=delivery.pk).update(next_attempt_at=created - timedelta(minutes=1))
    # Beat's periodic pass (tasks run eagerly here) sends it.
    dispatch_events.apply()
    delivery.refresh_from_db()
    assert (delivery.status, delivery.attempts, len(target.requests)) == (DeliveryStatus.DELIVERED, 1, 1)
    assert delivery.next_attempt_at is None


@pytest.mark.django_db
def test_the_deliveries_list_shows_when_a_pending_delivery_is_next_attempted(
    rollout, receiver, private_ok, settings, admin_api
):
    from datetime import datetime, timedelta

    settings.NOTIFICATION_RETRY_BASE_SECONDS = 120
    failing = hook_create(url=receiver(500).url)
    delivery = _delivery_for(failing, rollout)
    delivery_attempt(delivery_id=delivery.pk)
    delivery.refresh_from_db()
    row = admin_api.get(f"{HOOKS}{failing.pk}/deliveries/").json()["results"][0]
    assert row["status"] == "pending"
    assert row["next_attempt_at"].endswith("Z")
    next_attempt = datetime.fromisoformat(row["next_attempt_at"].replace("Z", "+00:00"))
    assert next_attempt == delivery.next_attempt_at
    # The backoff counts from the end of the attempt, a little after its start.
    assert timedelta(seconds=120) <= next_attempt - delivery.last_attempt_at < timedelta(seconds=180)
    working = hook_create(url=receiver(200).url)
    delivery_attempt(delivery_id=_delivery_for(working, rollout).pk)
    row = admin_api.get(f"{HOOKS}{working.pk}/deliveries/").json()["results"][0]
    assert (row["status"], row["next_attempt_at"]) == ("delivered", None)


@pytest.mark.django_db
def test_a_failed_delivery_is_not_due_again_before_its_backoff(rollout, receiver, private_ok, settings):
    from datetime import timedelta

    from notifications.services import DUE_GRACE_SECONDS, deliveries_due

    settings.NOTIFICATION_RETRY_BASE_SECONDS = 120
    target = receiver(500)
    delivery = _delivery_for(hook_create(url=target.url), rollout)
    assert delivery_attempt(delivery_id=delivery.pk).retry_in == 120
    delivery.refresh_from_db()
    failed_at = delivery.last_attempt_at
    assert delivery.status == DeliveryStatus.PENDING
    assert deliveries_due(now=failed_at + timedelta(seconds=100)) == []
    assert deliveries_due(now=failed_at + timedelta(seconds=120 + DUE_GRACE_SECONDS + 5)) == [str(delivery.pk)]


@pytest.mark.django_db
def test_a_delivered_or_given_up_delivery_is_never_due(rollout, receiver, private_ok, settings):
    from datetime import timedelta

    from notifications.services import deliveries_due

    settings.NOTIFICATION_MAX_RETRIES = 0
    delivery = _delivery_for(hook_create(url=receiver(500).url), rollout)
    assert delivery_attempt(delivery_id=delivery.pk).retry_in is None
    assert NotificationDelivery.objects.get(pk=delivery.pk).status == DeliveryStatus.FAILED
    assert deliveries_due(now=timezone.now() + timedelta(days=1)) == []


@pytest.mark.django_db
def test_it_counts_delivered_failed_and_given_up_attempts(rollout, receiver, private_ok, settings):
    from counters.models import Counter

    settings.NOTIFICATION_MAX_RETRIES = 1
    failing = _delivery_for(hook_create(url=receiver(500).url), rollout)
    working = hook_create(url=receiver(200).url)
    while delivery_attempt(delivery_id=failing.pk).retry_in is not None:
        pass
    _paused(rollout)
    deliveries_dispatch()
    delivery_attempt(delivery_id=NotificationDelivery.objects.get(hook=working).pk)
    counts = {
        json.loads(row.labels)["result"]: row.value
        for row in Counter.objects.filter(name="fleet_notification_deliveries_total")
    }
    assert counts == {"delivered": 1, "failed": 1, "gave_up": 1}
