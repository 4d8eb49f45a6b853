"""Notification deliveries and counters with the control plane started from
the Procfile (two gunicorn workers, a Celery worker, beat) on PostgreSQL and
Redis: retries run through the real broker, and /metrics gives the same
counts whichever web worker answers."""

import hashlib
import hmac
import json
from pathlib import Path

import httpx
import pytest
from prometheus_client.parser import text_string_to_metric_families

from .factories import operator
from .processes import ROOT, eventually, procfile_stack
from .receiver import Receiver
from .stream_scenario import Operator, one_device_rollout

pytestmark = pytest.mark.django_db(transaction=True)


@pytest.fixture
def admin_token(transactional_db) -> str:
    user, key = operator(username="ops-admin")
    user.is_superuser = True
    user.save()
    return key


def test_a_failing_receiver_gets_the_signed_delivery_after_retries(tmp_path: Path, admin_token):
    receiver = Receiver([500, 503, 200])
    env = {"NOTIFICATION_ALLOW_PRIVATE_NETWORKS": "true", "NOTIFICATION_RETRY_BASE_SECONDS": "0.5"}
    try:
        with procfile_stack(tmp_path, **env) as (base_url, _):
            ops = Operator(base_url, admin_token)
            hook = ops.post(
                "/api/v1/notification-hooks/",
                {"url": receiver.url, "secret": "hook-secret", "events": ["image.rollout_paused"]},
            )
            rollout = one_device_rollout(ops)
            ops.post(f"/api/v1/rollouts/{rollout.rollout_id}/pause")

            delivered = eventually(
                lambda: [d for d in ops.get(f"/api/v1/notification-hooks/{hook['id']}/deliveries/")["results"]
                         if d["delivered_at"]],
                seconds=60,
            )
            assert delivered, (tmp_path / "worker.log").read_text()[-3000:]
    finally:
        receiver.close()
    (log,) = delivered
    assert (log["event_type"], log["status_code"], log["attempts"], log["error"]) == (
        "image.rollout_paused", 200, 3, ""
    )
    assert len(receiver.requests) == 3
    assert len({r.headers["X-Fleet-Delivery"] for r in receiver.requests}) == 1
    for request in receiver.requests:
        expected = "sha256=" + hmac.new(b"hook-secret", request.body, hashlib.sha256).hexdigest()
        assert request.headers["X-Fleet-Signature-256"] == expected
    body = json.loads(receiver.requests[-1].body)
    assert body["rollout"]["id"] == rollout.rollout_id and body["rollout"]["status"] == "paused"
    assert "hook-secret" not in json.dumps(ops.get(f"/api/v1/notification-hooks/{hook['id']}/"))


def _scrape(base_url: str) -> dict[tuple, float]:
    text = httpx.get(f"{base_url}/metrics", timeout=30).text
    return {
        (sample.name, tuple(sorted(sample.labels.items()))): sample.value
        for family in text_string_to_metric_families(text)
        for sample in family.samples
    }


def _value(scrape: dict, name: str, **labels) -> float:
    return scrape.get((name, tuple(sorted(labels.items()))), 0.0)


def _report_healthy(base_url: str, rollout, tag: str) -> None:
    response = httpx.patch(
        f"{base_url}/api/v1/device/{rollout.device_uuid}/state",
        headers={"Authorization": f"Bearer {rollout.device_key}"},
        json={"services": {"web": {"image": rollout.image, "tag": tag, "status": "running", "health": "healthy"}}},
        timeout=30,
    )
    assert response.status_code == 200, response.text


def test_counters_move_by_the_right_amount_across_processes(tmp_path: Path, admin_token):
    with procfile_stack(tmp_path) as (base_url, _):
        ops = Operator(base_url, admin_token)
        before = _scrape(base_url)

        completed = one_device_rollout(ops, tag="v2")
        _report_healthy(base_url, completed, "v2")
        assert eventually(
            lambda: ops.get(f"/api/v1/rollouts/{completed.rollout_id}/")["status"] == "completed", 60
        ), (tmp_path / "worker.log").read_text()[-3000:]
        rolled_back = one_device_rollout(ops, tag="v3")
        ops.post(f"/api/v1/rollouts/{rolled_back.rollout_id}/rollback-all")
        dockerhub = (ROOT / "tests/fixtures/webhooks/dockerhub-push.json").read_bytes()
        httpx.post(f"{base_url}/api/v1/webhooks/docker-registry", content=dockerhub, timeout=30)

        # Counting waits for late commits (about a second): scrape until the
        # completed rollout shows, then every web worker must show the same.
        assert eventually(
            lambda: _value(_scrape(base_url), "fleet_rollouts_finished_total", status="completed")
            > _value(before, "fleet_rollouts_finished_total", status="completed"),
            30,
        )
        scrapes = [_scrape(base_url) for _ in range(6)]

    for after in scrapes:
        def moved(name, **labels):
            return _value(after, name, **labels) - _value(before, name, **labels)

        assert moved("fleet_rollouts_finished_total", status="completed") == 1
        assert moved("fleet_rollouts_finished_total", status="rolled_back") == 1
        assert moved("fleet_device_updates_total", image=completed.image, result="healthy") == 1
        assert moved("fleet_device_updates_total", image=rolled_back.image, result="rolled_back") == 1
        assert moved("fleet_device_updates_total", image=completed.image, result="failed") == 0
        assert moved("fleet_rollout_duration_seconds_count") == 1
        assert moved("fleet_rollout_duration_seconds_bucket", le="+Inf") == 1
        assert moved("fleet_webhook_deliveries_total", registry="dockerhub", status="no_matching_policy") == 1
        assert moved("fleet_engine_tick_seconds_count") >= 1
