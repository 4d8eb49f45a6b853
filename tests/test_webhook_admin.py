"""The delivery admin: a read-only audit trail that links to the rollouts."""

import json

import pytest
from django.contrib.auth.models import User

from webhooks.models import WebhookDelivery

from .factories import WEBHOOK_FIXTURES as FIXTURES
from .rollout_helpers import build_fleet, policy

CHANGELIST = "/admin/webhooks/webhookdelivery/"

pytestmark = pytest.mark.django_db


@pytest.fixture
def admin_client(client):
    client.force_login(User.objects.create_superuser("root", "root@example.com", "unused-password"))
    return client


def deliver(client) -> dict:
    payload = json.loads((FIXTURES / "dockerhub-push.json").read_text())
    payload["repository"]["repo_name"] = "iotistic/myapp"
    body = json.dumps(payload).encode()
    return client.post("/api/v1/webhooks/docker-registry", body, content_type="application/json").json()


def test_it_lists_deliveries_with_a_link_to_their_rollout(admin_client):
    policy()
    build_fleet(1)
    answer = deliver(admin_client)
    response = admin_client.get(CHANGELIST)
    assert response.status_code == 200
    assert f'/admin/rollouts/rollout/{answer["rollout_id"]}/change/' in response.content.decode()


def test_it_filters_deliveries_by_registry_and_outcome(admin_client):
    deliver(admin_client)
    assert admin_client.get(CHANGELIST, {"registry": "dockerhub", "outcome": "no_matching_policy"}).context[
        "cl"
    ].result_count == 1
    assert admin_client.get(CHANGELIST, {"registry": "quay"}).context["cl"].result_count == 0


def test_it_shows_a_delivery_read_only(admin_client):
    delivery_id = deliver(admin_client)["delivery_id"]
    url = f"{CHANGELIST}{delivery_id}/change/"
    assert admin_client.get(url).status_code == 200
    assert admin_client.post(url, {"outcome": "ignored"}).status_code == 403
    assert admin_client.get(f"{CHANGELIST}add/").status_code == 403
    assert admin_client.post(f"{CHANGELIST}{delivery_id}/delete/", {"post": "yes"}).status_code == 403
    assert WebhookDelivery.objects.get().outcome == "no_matching_policy"
