"""Operations endpoints: /healthz, /readyz, /metrics, /api/schema/, /api/docs/."""

from datetime import timedelta

import pytest
from django.utils import timezone

from fleet.celery import app as celery_app
from tests.factories import DeviceFactory, FleetFactory

pytestmark = pytest.mark.django_db

# A real address on which nothing listens: the connection is refused at once.
CLOSED_PORT_BROKER = "redis://127.0.0.1:1/0"


def test_it_answers_healthz_without_touching_the_database(client, django_assert_num_queries):
    with django_assert_num_queries(0):
        response = client.get("/healthz")
    assert response.status_code == 200
    assert response.json() == {"status": "ok"}


def test_it_is_ready_with_the_real_database_and_broker(client):
    response = client.get("/readyz")
    assert response.status_code == 200
    assert response.json() == {"status": "ok", "checks": {"database": "ok", "broker": "ok"}}
    assert "no-cache" in response["Cache-Control"]


def test_it_is_not_ready_when_the_broker_is_down(client, monkeypatch):
    monkeypatch.setitem(celery_app.conf, "broker_url", CLOSED_PORT_BROKER)
    response = client.get("/readyz")
    assert response.status_code == 503
    body = response.json()
    assert body["error"] == "not_ready"
    assert "broker" in body["detail"]
    assert "database" not in body["detail"]
    assert body["checks"] == {"database": "ok", "broker": "down"}


def test_it_exports_devices_per_fleet_and_online_state(client):
    now = timezone.now()
    DeviceFactory(fleet__slug="lab", last_seen_at=now)
    edge = FleetFactory(slug="edge")
    DeviceFactory.create_batch(2, fleet=edge, last_seen_at=now - timedelta(days=1))
    response = client.get("/metrics")
    assert response.status_code == 200
    assert response["Content-Type"].startswith("text/plain")
    text = response.content.decode()
    assert "# TYPE fleet_devices gauge" in text
    assert 'fleet_devices{fleet="lab",online="true"} 1.0' in text
    assert 'fleet_devices{fleet="lab",online="false"} 0.0' in text
    assert 'fleet_devices{fleet="edge",online="false"} 2.0' in text


def test_it_serves_the_openapi_schema(client):
    response = client.get("/api/schema/?format=json")
    assert response.status_code == 200
    schema = response.json()
    assert schema["openapi"].startswith("3.")
    assert {"/api/v1/fleets/", "/api/v1/devices/{uuid}/"} <= set(schema["paths"])


def test_it_serves_the_interactive_docs(client):
    response = client.get("/api/docs/")
    assert response.status_code == 200
    assert b"swagger" in response.content.lower()


def test_it_exports_rollout_progress_as_metrics(api_client):
    from .rollout_helpers import build_fleet, policy, push

    build_fleet(10)
    policy()
    rollout = push()
    body = api_client.get("/metrics").content.decode()
    assert 'fleet_rollouts{status="in_progress"} 1.0' in body
    assert f'fleet_rollout_devices{{image="docker.io/iotistic/myapp",rollout="{rollout.pk}",status="scheduled",tag="v2.0.0"}} 1.0' in body
    assert f'fleet_rollout_failure_rate{{image="docker.io/iotistic/myapp",rollout="{rollout.pk}",tag="v2.0.0"}} 0.0' in body


def test_it_answers_metrics_to_loopback_without_a_token(client, settings):
    settings.METRICS_TOKEN = ""
    assert client.get("/metrics", REMOTE_ADDR="::1").status_code == 200
    assert client.get("/metrics", REMOTE_ADDR="127.0.0.1").status_code == 200


def test_it_refuses_metrics_to_other_addresses_without_a_token(client, settings):
    settings.METRICS_TOKEN = ""
    response = client.get("/metrics", REMOTE_ADDR="203.0.113.7")
    assert response.status_code == 403
    assert response.json()["error"] == "permission_denied"
    assert b"fleet_devices" not in response.content


@pytest.mark.parametrize(
    "authorization",
    [None, "Bearer wrong-token", "Token s3cret-metrics-token", "Bearer", "Basic czNjcmV0"],
)
def test_it_refuses_metrics_without_the_right_bearer_token(client, settings, authorization):
    settings.METRICS_TOKEN = "s3cret-metrics-token"
    headers = {"HTTP_AUTHORIZATION": authorization} if authorization else {}
    # Loopback is no excuse once a token is set.
    response = client.get("/metrics", REMOTE_ADDR="127.0.0.1", **headers)
    assert response.status_code == 401
    assert response.json()["error"] == "not_authenticated"
    assert response["WWW-Authenticate"].startswith("Bearer")


def test_it_answers_metrics_to_the_bearer_token_from_anywhere(client, settings):
    settings.METRICS_TOKEN = "s3cret-metrics-token"
    response = client.get(
        "/metrics",
        REMOTE_ADDR="203.0.113.7",
        HTTP_AUTHORIZATION="Bearer s3cret-metrics-token",
    )
    assert response.status_code == 200
    assert b"# TYPE fleet_devices gauge" in response.content
