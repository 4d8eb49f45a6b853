"""Scoped lists cost a fixed number of queries, however many fleets a user
belongs to: the membership test is a subquery, never a query per fleet."""

import pytest
from django.db import connection
from django.test.utils import CaptureQueriesContext
from django.utils import timezone

from devices.models import FleetMembership
from rollouts.models import ImagePolicy, RolloutDevice, RolloutEvent

from .access_world import IMAGE, build_world, member, rollout_over
from .factories import DeviceFactory, DeviceServiceFactory, FleetFactory

pytestmark = pytest.mark.django_db

LISTS = [
    "/api/v1/fleets/",
    "/api/v1/devices/",
    "/api/v1/image-policies/",
    "/api/v1/rollouts/",
    "/api/v1/rollouts/{rollout}/devices/",
    "/api/v1/rollouts/{rollout}/events/",
    "/api/v1/fleets/berlin/members/",
    "/api/v1/fleets/berlin/audit/",
    "/api/v1/images/",
    "/api/v1/devices/{device}/history/",
]
# Lists whose rows are not one per fleet.
SAME_ROWS = ("members", "audit", "history", "images")


def _member_of(count: int, world):
    """An admin of Berlin, a viewer of `count - 1` more fleets, each with a device
    in the spanning rollout and a policy, so every list has a row per fleet."""
    # Admin of Berlin: the audit trail is a fleet admin's.
    user = member(f"member-of-{count}", berlin="admin")
    for _ in range(count - 1):
        fleet = FleetFactory()
        FleetMembership.objects.create(user=user, fleet=fleet, role="viewer")
        device = DeviceServiceFactory(device=DeviceFactory(fleet=fleet)).device
        ImagePolicy.objects.create(image_pattern=f"{IMAGE}:*", fleet=fleet)
        RolloutDevice.objects.create(
            rollout=world.rollout_both, device=device, service="web", batch=1, new_tag="v4"
        )
        RolloutEvent.objects.create(
            rollout=world.rollout_both, event_type="image.device_scheduled",
            device_uuid=device.uuid, message="scheduled", timestamp=timezone.now(),
        )
        rollout_over(device, tag="v5", fleet=fleet)
    world.users[user.username] = user
    return world.client(user.username)


def _queries(client, url) -> tuple[int, int]:
    with CaptureQueriesContext(connection) as queries:
        response = client.get(url)
    assert response.status_code == 200, response.content
    return len(queries), response.json()["count"]


@pytest.mark.parametrize("url", LISTS)
def test_a_scoped_list_costs_the_same_queries_at_1_and_50_memberships(url):
    world = build_world()
    url = url.format(rollout=world.rollout_both.pk, device=world.device_berlin.uuid)
    one, rows_one = _queries(_member_of(1, world), url)
    fifty, rows_fifty = _queries(_member_of(50, world), url)
    assert one == fifty
    if not any(word in url for word in SAME_ROWS):
        # The lists really grew with the memberships.
        assert rows_fifty > rows_one


ADMIN_LISTS = [
    "/admin/devices/fleet/",
    "/admin/devices/device/",
    "/admin/rollouts/imagepolicy/",
    "/admin/rollouts/rollout/",
    "/admin/rollouts/rolloutdevice/",
    "/admin/rollouts/rolloutevent/",
    "/admin/images/",
]


@pytest.mark.parametrize("url", ADMIN_LISTS)
def test_a_scoped_admin_page_costs_the_same_queries_at_1_and_50_memberships(url):
    from django.contrib.auth.models import User
    from django.test import Client

    world = build_world()

    def queries(count: int) -> int:
        _member_of(count, world)
        user = world.users[f"member-of-{count}"]
        User.objects.filter(pk=user.pk).update(is_staff=True)
        client = Client()
        client.force_login(user)
        client.get(url)  # warms the per-process caches (content types)
        with CaptureQueriesContext(connection) as captured:
            assert client.get(url).status_code == 200
        return len(captured)

    assert queries(1) == queries(50)
