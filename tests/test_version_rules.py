"""Version policies (CONTRACT section 7): tags read as versions, and the
per-device decisions of the fan-out on a mixed fleet, with the webhook's
answer when no device is left."""

import json
import uuid
from collections import Counter

import pytest
from django.db import connection
from django.test.utils import CaptureQueriesContext

from devices.keys import hash_key
from devices.models import Device, DeviceService, Fleet
from rollouts.models import Rollout, RolloutDevice
from rollouts.services import rollout_create_for_push, rollout_fan_out
from rollouts.versions import VersionRules, decide, parse_constraint, parse_tag

from .factories import WEBHOOK_FIXTURES
from .rollout_helpers import IMAGE, T0, policy

pytestmark = pytest.mark.django_db

URL = "/api/v1/webhooks/docker-registry"


def mixed_fleet(tags: list[str], *, pinned: tuple[int, ...] = ()) -> dict[str, list[int]]:
    """One device per tag (a tag may repeat); device ids by tag."""
    fleet = Fleet.objects.create(
        slug=f"f-{uuid.uuid4().hex[:8]}", name="F", provisioning_key_hash=uuid.uuid4().hex
    )
    devices = Device.objects.bulk_create(
        Device(fleet=fleet, name=f"d{i}", api_key_hash=hash_key(uuid.uuid4().hex))
        for i in range(len(tags))
    )
    DeviceService.objects.bulk_create(
        DeviceService(
            device=device, name="web", target_image=IMAGE, target_tag=tag, pinned=i in pinned
        )
        for i, (device, tag) in enumerate(zip(devices, tags))
    )
    ids: dict[str, list[int]] = {}
    for device, tag in zip(devices, tags):
        ids.setdefault(tag, []).append(device.pk)
    return ids


def fan_out(tag: str, *, trigger: str = "webhook", **options) -> Rollout:
    outcome = rollout_create_for_push(image=IMAGE, tag=tag, digest=None, trigger=trigger, now=T0, **options)
    assert outcome.status == "rollout_created", (outcome.status, outcome.reason)
    rollout_fan_out(rollout_id=outcome.rollout.pk, now=T0)
    outcome.rollout.refresh_from_db()
    return outcome.rollout


def decisions(rollout: Rollout) -> dict[str, str | None]:
    """The skip_reason (None: it is sent the push) per old tag."""
    rows = RolloutDevice.objects.filter(rollout=rollout)
    by_tag: dict[str, set] = {}
    for old_tag, reason in rows.values_list("old_tag", "skip_reason"):
        by_tag.setdefault(old_tag, set()).add(reason)
    assert all(len(reasons) == 1 for reasons in by_tag.values()), by_tag
    return {tag: reasons.pop() for tag, reasons in by_tag.items()}


def webhook(client, tag: str) -> dict:
    payload = json.loads((WEBHOOK_FIXTURES / "dockerhub-push.json").read_text())
    payload["repository"]["repo_name"] = "iotistic/myapp"
    payload["push_data"]["tag"] = tag
    response = client.post(URL, json.dumps(payload), content_type="application/json")
    assert response.status_code == 202, response.content
    return response.json()


# --- reading tags ---


@pytest.mark.parametrize(
    "tag, release, prerelease, variant",
    [
        ("v2.1.0", (2, 1, 0), (), ""),
        ("2.1", (2, 1, 0), (), ""),
        ("16", (16, 0, 0), (), ""),
        ("2.1.0-rc.1", (2, 1, 0), ("rc", "1"), ""),
        ("2.1.0-rc1", (2, 1, 0), ("rc", "1"), ""),
        ("3.0.0-beta2-alpine", (3, 0, 0), ("beta", "2"), "alpine"),
        ("1.25.3-alpine", (1, 25, 3), (), "alpine"),
        ("12.1-slim-bookworm", (12, 1, 0), (), "slim-bookworm"),
        ("1.0.0-SNAPSHOT", (1, 0, 0), ("snapshot",), ""),
        ("2.0.0+build.7", (2, 0, 0), (), ""),
        ("22.04", (22, 4, 0), (), ""),
    ],
)
def test_it_reads_tags_as_versions(tag, release, prerelease, variant):
    parsed = parse_tag(tag)
    assert parsed.release == release
    assert parsed.version.prerelease == prerelease
    assert parsed.variant == variant


@pytest.mark.parametrize("tag", ["latest", "main", "sha-1a2b3c", "", "v", "1..2", "01.2.3"])
def test_it_reads_other_tags_as_no_version(tag):
    assert parse_tag(tag) is None


def test_prerelease_numbers_order_as_numbers():
    assert parse_tag("1.0.0-rc.2").version < parse_tag("1.0.0-rc.10").version < parse_tag("1.0.0").version


@pytest.mark.parametrize(
    "constraint, inside, outside",
    [
        (">=2.9.0 <3.0.0", ["2.9.0", "v2.12.4"], ["2.8.9", "3.0.0"]),
        ("^1.2.0", ["1.2.0", "1.9.9"], ["2.0.0", "1.1.9"]),
        ("~1.2.3", ["1.2.3", "1.2.9"], ["1.3.0"]),
        ("1.2.x", ["1.2.0", "1.2.7"], ["1.3.0"]),
    ],
)
def test_constraints_are_npm_ranges(constraint, inside, outside):
    rules = VersionRules(constraint=constraint)
    for tag in inside:
        assert rules.push_reason(parse_tag(tag)) is None, tag
    for tag in outside:
        assert rules.push_reason(parse_tag(tag)) == "version_constraint", tag


def test_include_prereleases_lets_prereleases_inside_the_range_only():
    rules = VersionRules(constraint=">=2.9.0 <3.0.0", include_prereleases=True)
    assert rules.push_reason(parse_tag("2.10.0-rc.1")) is None
    assert rules.push_reason(parse_tag("3.0.0-rc.1")) == "version_constraint"
    assert VersionRules(constraint=">=2.9.0 <3.0.0").push_reason(parse_tag("2.10.0-rc.1")) == "prerelease"


@pytest.mark.parametrize("text", ["", "   ", ">>2", "not a range", "1.2.3 <<", "x" * 201])
def test_malformed_constraints_are_refused(text):
    with pytest.raises(ValueError):
        parse_constraint(text)


@pytest.mark.parametrize(
    "running, pushed, risk",
    [
        ("2.0.3", "2.0.4", "low"),
        ("2.0.3", "2.1.0", "medium"),
        ("1.9.0", "2.0.0", "high"),
        ("2.0.0", "2.1.0-rc.1", "high"),
        ("2.1.0", "2.0.0", "high"),
        ("latest", "2.0.0", "high"),
        ("2.0.0", "stable", "high"),
        ("2.0.0", "2.0.0", "low"),
    ],
)
def test_risk_follows_the_kind_of_update(running, pushed, risk):
    rules = VersionRules(include_prereleases=True, allow_downgrade=True)
    assert decide(rules, pushed, running).risk.label == risk


# --- the fan-out on a mixed fleet ---


def test_a_constraint_keeps_a_push_outside_it_from_every_device(client):
    mixed_fleet(["2.9.0", "2.9.1"])
    policy(version_constraint=">=2.9.0 <3.0.0")
    answer = webhook(client, "3.0.0")
    assert (answer["status"], answer["reason"]) == ("ignored", "version_constraint")
    assert not Rollout.objects.exists()
    rollout = fan_out("2.10.0")
    assert decisions(rollout) == {"2.9.0": None, "2.9.1": None}


def test_a_non_semver_tag_reaches_no_device_while_a_constraint_is_set(client):
    mixed_fleet(["2.9.0"])
    policy(version_constraint="^2.9.0")
    answer = webhook(client, "latest")
    assert (answer["status"], answer["reason"]) == ("ignored", "version_constraint")


def test_a_prerelease_reaches_no_device_unless_the_policy_includes_them(client):
    mixed_fleet(["2.0.0", "2.1.0"])
    pol = policy()
    answer = webhook(client, "v3.0.0-rc1")
    assert (answer["status"], answer["reason"]) == ("ignored", "prerelease")
    pol.include_prereleases = True
    pol.save()
    rollout = fan_out("v3.0.0-rc2")
    assert decisions(rollout) == {"2.0.0": None, "2.1.0": None}
    assert rollout.risk == "high"


def test_devices_only_get_versions_of_their_own_variant():
    mixed_fleet(["1.25.0-alpine", "1.25.0", "1.25.0-slim"])
    policy()
    rollout = fan_out("1.25.3-alpine")
    assert decisions(rollout) == {"1.25.0-alpine": None, "1.25.0": "variant", "1.25.0-slim": "variant"}


@pytest.mark.parametrize(
    "allowed, sent",
    [
        ("all", {"1.9.0", "2.0.3", "2.1.0"}),
        ("major", {"1.9.0", "2.0.3", "2.1.0"}),
        ("minor", {"2.0.3", "2.1.0"}),
        ("patch", {"2.1.0"}),
    ],
)
def test_allowed_updates_are_judged_against_each_devices_version(allowed, sent):
    mixed_fleet(["1.9.0", "2.0.3", "2.1.0"])
    policy(allowed_updates=allowed)
    rollout = fan_out("2.1.4")
    expected = {tag: None if tag in sent else "update_kind" for tag in ("1.9.0", "2.0.3", "2.1.0")}
    assert decisions(rollout) == expected


def test_allowed_updates_keep_a_push_that_no_device_may_take(client):
    mixed_fleet(["1.9.0", "1.8.0"])
    policy(allowed_updates="minor")
    answer = webhook(client, "2.0.0")
    assert (answer["status"], answer["reason"]) == ("ignored", "update_kind")


def test_a_device_on_a_newer_version_is_not_downgraded(client):
    mixed_fleet(["2.0.0", "1.0.0", "1.0.0"])
    policy()
    rollout = fan_out("1.5.0")
    assert decisions(rollout) == {"2.0.0": "downgrade", "1.0.0": None}
    assert rollout.risk == "medium"


def test_a_push_older_than_every_device_answers_ignored_downgrade(client):
    mixed_fleet(["2.0.0", "2.1.0"])
    policy()
    answer = webhook(client, "1.0.0")
    assert (answer["status"], answer["reason"]) == ("ignored", "downgrade")
    assert not Rollout.objects.exists()


def test_a_manual_trigger_may_roll_a_fleet_back_on_purpose(admin_api):
    mixed_fleet(["2.0.0", "2.1.0"])
    policy()
    response = admin_api.post(
        "/api/v1/rollouts/", {"image": IMAGE, "tag": "1.0.0", "allow_downgrade": True}, format="json"
    )
    assert response.status_code == 201, response.json()
    rollout = Rollout.objects.get(pk=response.json()["id"])
    rollout_fan_out(rollout_id=rollout.pk, now=T0)
    rollout.refresh_from_db()
    assert decisions(rollout) == {"2.0.0": None, "2.1.0": None}
    assert (rollout.allow_downgrade, rollout.risk) == (True, "high")


def test_a_policy_that_allows_downgrades_sends_older_tags():
    mixed_fleet(["2.0.0"])
    policy(allow_downgrade=True)
    assert decisions(fan_out("1.0.0")) == {"2.0.0": None}


def test_pinned_and_current_devices_keep_their_reasons_beside_version_rules(client):
    ids = mixed_fleet(["2.0.0", "2.0.0", "2.1.0", "3.0.0", "1.0.0"], pinned=(1,))
    policy(allowed_updates="minor")
    rollout = fan_out("2.1.0")
    rows = RolloutDevice.objects.filter(rollout=rollout)
    reasons = dict(rows.values_list("device_id", "skip_reason"))
    assert [reasons[i] for i in ids["2.0.0"]] == [None, "pinned"]
    assert reasons[ids["2.1.0"][0]] == "already_current"
    assert reasons[ids["3.0.0"][0]] == "downgrade"
    assert reasons[ids["1.0.0"][0]] == "update_kind"
    assert Counter(rows.values_list("status", flat=True)) == Counter({"skipped": 4, "scheduled": 1})


def test_a_push_every_device_already_runs_answers_no_affected_devices(client, settings):
    settings.REGISTRY_RESOLVE_DIGESTS = False
    mixed_fleet(["2.0.0", "2.0.0"])
    policy()
    answer = webhook(client, "2.0.0")
    assert answer["status"] == "no_affected_devices"
    assert "reason" not in answer


def test_the_fan_out_costs_the_same_queries_for_100_and_10000_devices():
    policy(allowed_updates="minor", version_constraint=">=1.0.0 <3.0.0", required_versions=["1.10.0"])
    counts = []
    for size in (100, 10_000):
        Rollout.objects.all().delete()
        Device.objects.all().delete()
        # 20 distinct running versions; some skipped (update_kind), some
        # going through the stepping stone, some straight.
        mixed_fleet([f"1.{i % 19}.0" if i % 20 else "0.9.0" for i in range(size)])
        outcome = rollout_create_for_push(image=IMAGE, tag="1.20.0", digest=None, now=T0)
        with CaptureQueriesContext(connection) as queries:
            rollout_fan_out(rollout_id=outcome.rollout.pk, now=T0)
        counts.append(len(queries))
        rows = RolloutDevice.objects.filter(rollout=outcome.rollout)
        assert rows.count() == size
        assert rows.filter(skip_reason="update_kind").count() == size // 20
        assert rows.filter(via=["1.10.0"]).count() > 0
    assert counts[0] == counts[1], counts


# --- bad input ---


@pytest.mark.parametrize(
    "fields, field",
    [
        ({"version_constraint": ">>2.0"}, "version_constraint"),
        ({"version_constraint": "not a range"}, "version_constraint"),
        ({"allowed_updates": "sideways"}, "allowed_updates"),
        ({"auto_approve_max_risk": "extreme"}, "auto_approve_max_risk"),
        ({"required_versions": ["2.0.0", "latest"]}, "required_versions"),
        ({"required_versions": "2.0.0"}, "required_versions"),
        ({"poll_registry": True, "image_pattern": "docker.io/iotistic/*:*"}, "poll_registry"),
        ({"poll_interval_minutes": 0}, "poll_interval_minutes"),
        ({"poll_interval_minutes": -1}, "poll_interval_minutes"),
    ],
)
def test_a_policy_with_bad_version_rules_is_refused(admin_api, fields, field):
    body = {"image_pattern": "iotistic/myapp:*", **fields}
    response = admin_api.post("/api/v1/image-policies/", body, format="json")
    assert response.status_code == 400, response.json()
    assert response.json()["error"]
    assert field in response.json()["fields"]


def test_a_policy_stores_its_version_rules(admin_api):
    body = {
        "image_pattern": "127.0.0.1:5000/acme/app:*",
        "version_constraint": " ^2.1.0 ",
        "allowed_updates": "minor",
        "include_prereleases": True,
        "allow_downgrade": True,
        "auto_approve_max_risk": "medium",
        "required_versions": ["2.0.0"],
        "poll_registry": True,
    }
    response = admin_api.post("/api/v1/image-policies/", body, format="json")
    assert response.status_code == 201, response.json()
    stored = response.json()
    assert {key: stored[key] for key in body} == {
        **body,
        "image_pattern": "127.0.0.1:5000/acme/app:*",
        "version_constraint": "^2.1.0",
    }
    assert (stored["last_polled_at"], stored["last_poll_error"]) == (None, "")


@pytest.mark.parametrize("required", [["latest"], ["2.2.0"], ["3.0.0"]])
def test_a_manual_trigger_refuses_stepping_stones_not_below_the_push(admin_api, required):
    mixed_fleet(["1.5.0"])
    policy()
    body = {"image": IMAGE, "tag": "2.2.0", "required_versions": required}
    response = admin_api.post("/api/v1/rollouts/", body, format="json")
    assert response.status_code == 400, response.json()
    assert "required_versions" in response.json()["fields"]
    assert not Rollout.objects.exists()


def test_a_push_of_another_variant_answers_ignored_variant(client):
    mixed_fleet(["1.25.0-alpine", "1.25.0"])
    policy()
    answer = webhook(client, "1.26.0-slim")
    assert (answer["status"], answer["reason"]) == ("ignored", "variant")
    assert answer["pushes"][0]["reason"] == "variant"
    assert not Rollout.objects.exists()


def test_a_webhook_push_the_rules_let_through_creates_its_rollout(client):
    mixed_fleet(["2.0.0", "3.0.0"])
    policy(version_constraint="^2.0.0")
    answer = webhook(client, "v2.1.0")
    assert answer["status"] == "rollout_created"
    assert "reason" not in answer


ADMIN_FORM = {
    "image_pattern": "iotistic/myapp:*",
    "update_strategy": "staged",
    "batch_percentages": "[10, 50, 100]",
    "batch_delay_minutes": "30",
    "health_check_timeout_seconds": "300",
    "max_failure_rate": "0.2",
    "min_failure_samples": "5",
    "device_tags": "[]",
    "device_uuids": "[]",
    "maintenance_window": "null",
    "allowed_updates": "all",
    "auto_approve_max_risk": "high",
    "required_versions": "[]",
    "poll_interval_minutes": "15",
    "device_update_strategy": "download-then-kill",
    "stop_timeout_seconds": "10",
    "ramp_initial": "10",
    "ramp_factor": "2.0",
    "max_retries": "0",
}


@pytest.mark.parametrize(
    "fields, message",
    [
        ({"version_constraint": ">>2"}, b"not an npm-style range"),
        ({"required_versions": '["latest"]'}, b"not a semantic version"),
        ({"poll_registry": "on", "image_pattern": "iotistic/*:*"}, b"cannot be polled"),
    ],
)
def test_the_admin_form_refuses_what_the_api_refuses(client, fields, message):
    from django.contrib.auth.models import User

    from rollouts.models import ImagePolicy

    client.force_login(User.objects.create_superuser("boss", "boss@example.com", None))
    response = client.post("/admin/rollouts/imagepolicy/add/", {**ADMIN_FORM, **fields})
    assert response.status_code == 200
    assert message in response.content
    assert not ImagePolicy.objects.exists()
    accepted = client.post("/admin/rollouts/imagepolicy/add/", {**ADMIN_FORM, "version_constraint": "^1.2"})
    assert accepted.status_code == 302, accepted.content[:2000]
    assert ImagePolicy.objects.get().version_constraint == "^1.2"
