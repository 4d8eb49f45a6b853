"""Upgrade paths (CONTRACT section 7): `required_versions` are stepping stones
inside one rollout; a device below a stone reaches the push only through
it, judged healthy there first."""

from collections import Counter

import pytest

from devices.models import DeviceService, ServiceHistory
from rollouts.models import Rollout, RolloutDevice
from rollouts.services import rollout_create_for_push, rollout_fan_out

from .registry import unique_name
from .rollout_helpers import IMAGE, T0, build_fleet, event_counts, policy, report, seconds, tick
from .test_digest_pinning import fleet_on

pytestmark = pytest.mark.django_db


def two_kinds_of_devices() -> tuple[list[int], list[int]]:
    """Three devices on 1.5.0 (below the stone 2.0.0), two on 2.1.0."""
    fleet = build_fleet(3, tag="1.5.0")
    build_fleet(2, fleet=fleet, tag="2.1.0")
    services = DeviceService.objects.order_by("device_id")
    old = list(services.filter(target_tag="1.5.0").values_list("device_id", flat=True))
    new = list(services.filter(target_tag="2.1.0").values_list("device_id", flat=True))
    return old, new


def pushed(tag: str = "2.2.0") -> Rollout:
    outcome = rollout_create_for_push(image=IMAGE, tag=tag, digest=None, now=T0)
    rollout_fan_out(rollout_id=outcome.rollout.pk, now=T0)
    outcome.rollout.refresh_from_db()
    return outcome.rollout


def rows_of(rollout: Rollout, device_ids) -> Counter:
    rows = RolloutDevice.objects.filter(rollout=rollout, device_id__in=list(device_ids))
    return Counter((row.status, row.new_tag, tuple(row.via)) for row in rows)


def targets(device_ids) -> set[str]:
    return set(DeviceService.objects.filter(device_id__in=list(device_ids)).values_list("target_tag", flat=True))


def test_a_device_below_a_stone_reaches_the_push_only_through_it(admin_api, settings):
    settings.REGISTRY_RESOLVE_DIGESTS = False
    old, new = two_kinds_of_devices()
    policy(update_strategy="auto", required_versions=["2.0.0"])
    rollout = pushed()
    assert rows_of(rollout, old) == Counter({("scheduled", "2.0.0", ("2.0.0",)): 3})
    assert rows_of(rollout, new) == Counter({("scheduled", "2.2.0", ()): 2})
    assert (targets(old), targets(new)) == ({"2.0.0"}, {"2.2.0"})
    api_rows = admin_api.get(f"/api/v1/rollouts/{rollout.pk}/devices/").json()["results"]
    assert Counter(tuple(row["via"]) for row in api_rows) == Counter({("2.0.0",): 3, (): 2})

    # Healthy on the stone: sent the push, the rollout goes on.
    report(old, tag="2.0.0", at=T0 + seconds(30))
    report(new, tag="2.2.0", at=T0 + seconds(30))
    tick(T0 + seconds(40))
    assert rows_of(rollout, old) == Counter({("scheduled", "2.2.0", ("2.0.0",)): 3})
    assert rows_of(rollout, new) == Counter({("healthy", "2.2.0", ()): 2})
    assert targets(old) == {"2.2.0"}
    rollout.refresh_from_db()
    assert rollout.status == "in_progress"

    report(old, tag="2.2.0", at=T0 + seconds(60))
    tick(T0 + seconds(70))
    tick(T0 + seconds(80))
    rollout.refresh_from_db()
    assert rollout.status == "completed"
    assert rows_of(rollout, old) == Counter({("healthy", "2.2.0", ("2.0.0",)): 3})
    history = ServiceHistory.objects.filter(device_id=old[0], rollout_id=rollout.pk).order_by("deployed_at", "id")
    assert list(history.values_list("tag", "outcome")) == [("2.0.0", "healthy"), ("2.2.0", "healthy")]
    assert event_counts(rollout)["device_scheduled"] == 3 + 2 + 3


def test_a_device_that_fails_on_the_stone_counts_as_failed_and_goes_back_before_the_rollout(settings):
    settings.REGISTRY_RESOLVE_DIGESTS = False
    old, new = two_kinds_of_devices()
    policy(update_strategy="auto", required_versions=["2.0.0"], max_failure_rate=0.2, min_failure_samples=1)
    rollout = pushed()
    report(old, tag="2.0.0", health="unhealthy", at=T0 + seconds(30))
    report(new, tag="2.2.0", at=T0 + seconds(30))
    tick(T0 + seconds(40))
    rollout.refresh_from_db()
    assert rollout.status == "paused"
    assert "3 failed of 5" in rollout.status_reason
    # Rolled back to the version before the rollout, not to the stone.
    assert rows_of(rollout, old) == Counter({("rolled_back", "2.0.0", ("2.0.0",)): 3})
    assert targets(old) == {"1.5.0"}


def test_stones_not_below_the_push_or_above_the_device_are_left_out(settings):
    settings.REGISTRY_RESOLVE_DIGESTS = False
    fleet = build_fleet(1, tag="1.0.0")
    build_fleet(1, fleet=fleet, tag="1.5.0")
    policy(update_strategy="auto", required_versions=["3.0.0", "2.0.0", "1.2.0"])
    rollout = pushed("2.2.0")
    via = Counter(tuple(v) for v in RolloutDevice.objects.filter(rollout=rollout).values_list("via", flat=True))
    assert via == Counter({("1.2.0", "2.0.0"): 1, ("2.0.0",): 1})


def test_stepping_stones_are_pinned_to_their_digest(registry, registry_settings, django_capture_on_commit_callbacks):
    name = unique_name()
    image = f"docker.io/{name}"
    stone = registry.push_image(name, "2.0.0")
    final = registry.push_image(name, "2.2.0")
    ids = fleet_on(image, "1.5.0", None, 2)
    policy("docker.io/acme/*:*", update_strategy="auto", required_versions=["2.0.0"])
    with django_capture_on_commit_callbacks(execute=True):
        outcome = rollout_create_for_push(image=image, tag="2.2.0", digest=None, now=T0)
    rollout = Rollout.objects.get(pk=outcome.rollout.pk)
    assert (rollout.new_digest, rollout.via_digests) == (final, {"2.0.0": stone})
    services = DeviceService.objects.filter(device_id__in=ids)
    assert set(services.values_list("target_tag", "target_digest")) == {("2.0.0", stone)}
    assert event_counts(rollout)["digest_resolved"] == 2


def test_a_stone_that_does_not_resolve_holds_a_require_digest_rollout(registry, registry_settings):
    from rollouts.services import rollout_fan_out as fan_out

    name = unique_name()
    image = f"docker.io/{name}"
    registry.push_image(name, "2.2.0")  # 2.0.0 is missing
    fleet_on(image, "1.5.0", None, 1)
    policy("docker.io/acme/*:*", required_versions=["2.0.0"], require_digest=True)
    outcome = rollout_create_for_push(image=image, tag="2.2.0", digest=None, now=T0)
    fan_out(rollout_id=outcome.rollout.pk, now=T0)
    tick(T0 + seconds(15))
    tick(T0 + seconds(30))
    rollout = Rollout.objects.get(pk=outcome.rollout.pk)
    assert (rollout.status, rollout.fanned_out_at) == ("pending", None)
    assert rollout.status_reason.startswith("Waiting for the registry: 2.0.0:")
    assert event_counts(rollout)["digest_unresolved"] == 1
    # Once the stone is in the registry, the rollout goes on.
    stone = registry.push_image(name, "2.0.0")
    tick(T0 + seconds(45))
    rollout.refresh_from_db()
    assert (rollout.status, rollout.status_reason, rollout.via_digests) == ("in_progress", "", {"2.0.0": stone})
