"""Registry polling against the real test registry: a policy with
`poll_registry` acts on the newest allowed tag once, as on a push."""

from datetime import timedelta

import pytest

from rollouts.models import ImagePolicy, Rollout
from rollouts.services.polling import policy_poll, registries_poll_due

from .registry import free_port, unique_name
from .rollout_helpers import T0, policy
from .test_digest_pinning import fleet_on

pytestmark = pytest.mark.django_db


def polled_policy(image: str, **fields) -> ImagePolicy:
    return policy(f"{image}:*", **{"poll_registry": True, "poll_interval_minutes": 15, **fields})


def rollouts_of(image: str) -> list[tuple[str, str]]:
    return list(Rollout.objects.filter(image=image).order_by("created_at").values_list("new_tag", "trigger"))


def test_a_polling_policy_creates_one_rollout_for_the_highest_allowed_tag(
    registry, registry_settings, django_capture_on_commit_callbacks
):
    name = unique_name()
    image = f"{registry.host}/{name}"
    for tag in ["1.0.0", "1.1.0", "1.2.0", "1.3.0-rc.1", "2.0.0", "latest"]:
        registry.push_image(name, tag)
    fleet_on(image, "1.0.0", None, 3)
    pol = polled_policy(image, version_constraint="^1.0.0")
    with django_capture_on_commit_callbacks(execute=True):
        assert registries_poll_due(now=T0) == 1
    assert rollouts_of(image) == [("1.2.0", "poll")]
    rollout = Rollout.objects.get(image=image)
    # As a push without a digest: the worker resolved the tag, then fanned out.
    assert rollout.new_digest and rollout.digest_source == "registry"
    assert rollout.devices.count() == 3
    pol.refresh_from_db()
    assert (pol.last_polled_at, pol.last_poll_error) == (T0, "")
    assert pol.next_poll_at == T0 + timedelta(minutes=15)
    # Not due again before its interval; when due, the same tag is not acted on twice.
    assert registries_poll_due(now=T0 + timedelta(minutes=5)) == 0
    assert registries_poll_due(now=T0 + timedelta(minutes=16)) == 1
    assert rollouts_of(image) == [("1.2.0", "poll")]


def test_a_prerelease_or_a_tag_outside_the_constraint_creates_nothing(registry, registry_settings):
    name = unique_name()
    image = f"{registry.host}/{name}"
    for tag in ["1.0.0", "1.1.0-rc.1", "2.0.0"]:
        registry.push_image(name, tag)
    fleet_on(image, "1.0.0", None, 2)
    pol = polled_policy(image, version_constraint="<2.0.0")
    assert policy_poll(policy_id=pol.pk, now=T0) == "no_new_tag"
    assert rollouts_of(image) == []


def test_a_tag_already_pushed_is_not_acted_on_again(registry, registry_settings):
    name = unique_name()
    image = f"{registry.host}/{name}"
    registry.push_image(name, "1.0.0")
    registry.push_image(name, "1.1.0")
    fleet_on(image, "1.0.0", None, 2)
    pol = polled_policy(image)
    from rollouts.services import rollout_create_for_push

    rollout_create_for_push(image=image, tag="1.1.0", digest=None, trigger="webhook", policy=pol, now=T0)
    assert policy_poll(policy_id=pol.pk, now=T0) == "no_new_tag"
    assert rollouts_of(image) == [("1.1.0", "webhook")]


def test_it_records_last_poll_error_and_backs_off_when_the_registry_is_down(registry_settings):
    host = registry_settings.allow(f"127.0.0.1:{free_port()}")
    image = f"{host}/acme/gone"
    fleet_on(image, "1.0.0", None, 1)
    pol = polled_policy(image)
    assert policy_poll(policy_id=pol.pk, now=T0) == "error"
    pol.refresh_from_db()
    assert "unreachable" in pol.last_poll_error
    assert (pol.poll_failures, pol.next_poll_at) == (1, T0 + timedelta(minutes=30))
    assert policy_poll(policy_id=pol.pk, now=T0 + timedelta(minutes=31)) == "error"
    pol.refresh_from_db()
    assert (pol.poll_failures, pol.next_poll_at) == (2, T0 + timedelta(minutes=31 + 60))
    assert rollouts_of(image) == []


def test_a_429_waits_at_least_the_registrys_retry_after(registry_front, registry_settings):
    front = registry_front(fail_with=(429, {"Retry-After": "3600"}))
    host = registry_settings.allow(front.host)
    image = f"{host}/acme/limited"
    fleet_on(image, "1.0.0", None, 1)
    pol = polled_policy(image, poll_interval_minutes=1)
    assert policy_poll(policy_id=pol.pk, now=T0) == "error"
    pol.refresh_from_db()
    assert "429" in pol.last_poll_error
    # Backoff alone would say 2 minutes; the registry asked for an hour.
    assert pol.next_poll_at == T0 + timedelta(hours=1)


def test_two_workers_never_poll_the_same_policy_at_once(registry, registry_settings):
    name = unique_name()
    image = f"{registry.host}/{name}"
    registry.push_image(name, "1.1.0")
    fleet_on(image, "1.0.0", None, 1)
    pol = polled_policy(image)
    # A worker holds the lease: the other finds nothing to do.
    ImagePolicy.objects.filter(pk=pol.pk).update(poll_lease_until=T0 + timedelta(minutes=5))
    assert policy_poll(policy_id=pol.pk, now=T0) is None
    assert registries_poll_due(now=T0) == 0
    # Once the lease has run out (the worker died), the policy is polled again.
    assert policy_poll(policy_id=pol.pk, now=T0 + timedelta(minutes=6)) == "rollout_created"
    assert rollouts_of(image) == [("1.1.0", "poll")]


def test_only_the_policys_own_devices_count_as_behind(registry, registry_settings):
    from devices.models import Device, Fleet

    name = unique_name()
    image = f"{registry.host}/{name}"
    registry.push_image(name, "1.0.0")
    registry.push_image(name, "1.1.0")
    fleet_on(image, "1.1.0", None, 2)
    behind = fleet_on(image, "1.0.0", None, 1)
    elsewhere = Fleet.objects.create(slug=f"x-{name[-6:]}", name="X", provisioning_key_hash=name.ljust(64, "x"))
    Device.objects.filter(pk__in=behind).update(fleet=elsewhere)
    first_fleet = Device.objects.exclude(fleet=elsewhere).filter(services__target_image=image).first().fleet
    pol = polled_policy(image, fleet=first_fleet)
    assert policy_poll(policy_id=pol.pk, now=T0) == "no_new_tag"
