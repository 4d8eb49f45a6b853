"""Redis (broker and cache) unreachable: writes are stored and answered, and
the tick does the work whose task could not be enqueued."""

import logging

import pytest

from fleet.celery import app as celery_app
from rollouts.models import Rollout
from webhooks.models import WebhookDelivery

from .rollout_helpers import build_fleet, policy, tick
from .test_webhook_endpoint import dockerhub_push, post

# Transactions really commit: the enqueue runs on commit, as in production.
pytestmark = pytest.mark.django_db(transaction=True)

# A real address on which nothing listens: every connection is refused.
CLOSED_PORT = "redis://127.0.0.1:1/0"


@pytest.fixture
def redis_down(settings):
    """Cache and broker both point at a port where nothing answers."""
    settings.CACHES = {
        "default": {"BACKEND": "django.core.cache.backends.redis.RedisCache", "LOCATION": CLOSED_PORT}
    }
    saved = celery_app.conf.broker_url, celery_app.conf.task_always_eager
    celery_app.conf.broker_url, celery_app.conf.task_always_eager = CLOSED_PORT, False
    _drop_broker_connections()
    try:
        yield
    finally:
        celery_app.conf.broker_url, celery_app.conf.task_always_eager = saved
        _drop_broker_connections()


def _drop_broker_connections():
    # The app keeps a connection pool and a producer pool to the broker it
    # first used; what a forked worker does to forget them does it here.
    # (`app.close()` would also unregister the app from shared tasks.)
    celery_app._after_fork()


def test_it_stores_and_accepts_a_webhook_delivery_while_redis_is_down(client, redis_down, caplog):
    policy()
    build_fleet(3)
    with caplog.at_level(logging.WARNING):
        response = post(client, dockerhub_push())
    assert response.status_code == 202
    assert response.json()["status"] == "rollout_created"
    assert WebhookDelivery.objects.count() == 1
    messages = [record.getMessage() for record in caplog.records]
    assert any("Throttle 'webhooks' not applied" in message for message in messages)
    assert any("Could not enqueue rollouts.fan_out_rollout" in message for message in messages)


def test_the_tick_fans_out_a_rollout_whose_task_was_lost(client, redis_down):
    policy(batch_percentages=[100])
    build_fleet(3)
    rollout_id = post(client, dockerhub_push()).json()["rollout_id"]
    assert Rollout.objects.get(pk=rollout_id).status == "pending"
    tick(None)
    rollout = Rollout.objects.get(pk=rollout_id)
    assert rollout.status == "in_progress"
    assert rollout.devices.filter(status="scheduled").count() == 3


def test_a_manual_trigger_answers_201_once_while_the_broker_is_down(admin_api, redis_down):
    policy()
    build_fleet(3)
    response = admin_api.post(
        "/api/v1/rollouts/", {"image": "iotistic/myapp", "tag": "v3.0.0"}, format="json"
    )
    assert response.status_code == 201
    assert response.json()["status"] == "pending"
    assert Rollout.objects.count() == 1
