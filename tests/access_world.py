"""Two fleets, their devices, policies and rollouts, and users with every
role: the world the per-fleet access tests (CONTRACT section 10) run in.

Berlin is the fleet under test; Tokyo is "another fleet". Rollouts: one in
each fleet and one spanning both.
"""

from dataclasses import dataclass, field

from django.contrib.auth.models import User
from django.utils import timezone
from rest_framework.authtoken.models import Token
from rest_framework.test import APIClient

from devices.models import (
    Device,
    DeviceService,
    Fleet,
    FleetAuditEvent,
    FleetMembership,
    ServiceHistory,
)
from rollouts.models import ImagePolicy, Rollout, RolloutDevice, RolloutEvent

from .factories import DeviceFactory, DeviceServiceFactory, FleetFactory

IMAGE = "docker.io/iotistic/myapp"
ROLES = ["viewer", "operator", "admin"]


@dataclass
class World:
    berlin: Fleet
    tokyo: Fleet
    device_berlin: Device
    device_tokyo: Device
    policy_berlin: ImagePolicy
    policy_tokyo: ImagePolicy
    policy_global: ImagePolicy
    rollout_berlin: Rollout
    rollout_tokyo: Rollout
    rollout_both: Rollout
    users: dict[str, User] = field(default_factory=dict)

    def client(self, name: str) -> APIClient:
        client = APIClient()
        token, _ = Token.objects.get_or_create(user=self.users[name])
        client.credentials(HTTP_AUTHORIZATION=f"Token {token.key}")
        return client


def member(username: str, **roles: str) -> User:
    """A user without model permissions, with `fleet=role` memberships."""
    user = User.objects.create_user(username=username, password="unused-password")
    for fleet_slug, role in roles.items():
        FleetMembership.objects.create(user=user, fleet=Fleet.objects.get(slug=fleet_slug), role=role)
    return user


def rollout_over(*devices: Device, tag: str, fleet: Fleet | None = None) -> Rollout:
    """An in-progress rollout of IMAGE:tag over `devices`, with a
    rollout-level event and one event per device."""
    rollout = Rollout.objects.create(
        image=IMAGE, new_tag=tag, trigger="manual", strategy="staged", status="in_progress",
        fleet=fleet, total_devices=len(devices), current_batch=1, total_batches=1,
    )
    RolloutEvent.objects.create(rollout=rollout, event_type="image.rollout_started", message="started", timestamp=timezone.now())
    for device in devices:
        RolloutDevice.objects.create(
            rollout=rollout, device=device, service="web", batch=1, status="scheduled", new_tag=tag
        )
        RolloutEvent.objects.create(
            rollout=rollout, event_type="image.device_scheduled", device_uuid=device.uuid,
            message="scheduled", timestamp=timezone.now(),
        )
    return rollout


def build_world() -> World:
    berlin = FleetFactory(slug="berlin")
    tokyo = FleetFactory(slug="tokyo")
    device_berlin = DeviceServiceFactory(device=DeviceFactory(fleet=berlin), target_tag="v1").device
    # Another image in Tokyo, so the image inventory tells the fleets apart.
    device_tokyo = DeviceServiceFactory(
        device=DeviceFactory(fleet=tokyo), target_image="docker.io/tokyo/app", target_tag="v1"
    ).device
    world = World(
        berlin=berlin,
        tokyo=tokyo,
        device_berlin=device_berlin,
        device_tokyo=device_tokyo,
        policy_berlin=ImagePolicy.objects.create(image_pattern=f"{IMAGE}:*", fleet=berlin),
        policy_tokyo=ImagePolicy.objects.create(image_pattern=f"{IMAGE}:*", fleet=tokyo),
        policy_global=ImagePolicy.objects.create(image_pattern="docker.io/other/*:*"),
        rollout_berlin=rollout_over(device_berlin, tag="v2", fleet=berlin),
        rollout_tokyo=rollout_over(device_tokyo, tag="v3", fleet=tokyo),
        rollout_both=rollout_over(device_berlin, device_tokyo, tag="v4"),
    )
    for role in ROLES:
        world.users[role] = member(f"berlin-{role}", berlin=role)
    # Without membership in Berlin, but admin elsewhere: sees nothing of Berlin.
    world.users["outsider"] = member("tokyo-admin", tokyo="admin")
    world.users["operator_both"] = member("both-operator", berlin="operator", tokyo="operator")
    world.users["stranger"] = member("stranger")
    return world


def snapshot() -> dict:
    """Everything an access-controlled write could change, to prove that a
    refused write wrote nothing."""
    return {
        "fleets": list(Fleet.objects.values_list("slug", "name", "provisioning_key_hash").order_by("pk")),
        "devices": list(Device.objects.values_list("uuid", "name", "fleet_id", "target_version").order_by("pk")),
        "services": list(
            DeviceService.objects.values_list(
                "device_id", "name", "target_tag", "target_digest", "pinned"
            ).order_by("pk")
        ),
        "history": ServiceHistory.objects.count(),
        "memberships": list(FleetMembership.objects.values_list("user_id", "fleet_id", "role").order_by("pk")),
        "audit": FleetAuditEvent.objects.count(),
        "policies": list(ImagePolicy.objects.values().order_by("pk")),
        "rollouts": list(Rollout.objects.values_list("id", "status").order_by("pk")),
        "events": RolloutEvent.objects.count(),
    }
