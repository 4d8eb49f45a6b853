"""Which policy a push uses: the most specific enabled pattern, then the lowest id."""

import pytest

from rollouts.selectors import policy_for_push
from rollouts.services import rollout_create_for_push

from .rollout_helpers import IMAGE, build_fleet, policy

pytestmark = pytest.mark.django_db


def _matched(image: str, tag: str) -> str | None:
    found = policy_for_push(image=image, tag=tag)
    return found.image_pattern if found else None


def test_it_prefers_the_most_specific_pattern_whatever_the_ids():
    # Created from least to most specific: the lowest id never decides here.
    for pattern in [
        "*",
        "docker.io/iotistic/*:*",
        "docker.io/iotistic/myapp:*",
        "docker.io/iotistic/myapp:v2.*",
        "docker.io/iotistic/myapp:v2.0.0",
    ]:
        policy(pattern)
    assert _matched(IMAGE, "v2.0.0") == "docker.io/iotistic/myapp:v2.0.0"
    assert _matched(IMAGE, "v2.1.0") == "docker.io/iotistic/myapp:v2.*"
    assert _matched(IMAGE, "v3.0.0") == "docker.io/iotistic/myapp:*"
    assert _matched("docker.io/iotistic/other", "v1") == "docker.io/iotistic/*:*"
    assert _matched("ghcr.io/acme/app", "v1") == "*:*"


def test_it_puts_a_pattern_without_wildcards_before_any_with_wildcards():
    # The character class spells more literal characters than the exact tag.
    policy("docker.io/iotistic/myapp:v2.0.[0123456789]")
    policy("docker.io/iotistic/myapp:v2.0.0")
    assert _matched(IMAGE, "v2.0.0") == "docker.io/iotistic/myapp:v2.0.0"


def test_it_prefers_the_longer_literal_among_wildcard_patterns():
    policy("docker.io/iotistic/*:v2.*")  # 23 literal characters
    policy("docker.io/iotistic/myapp:*")  # 25 literal characters
    assert _matched(IMAGE, "v2.0.0") == "docker.io/iotistic/myapp:*"


def test_it_breaks_ties_by_the_lowest_id():
    first = policy("docker.io/iotistic/myapp:v2.0.?", batch_delay_minutes=5)
    policy("docker.io/iotistic/myapp:v2.?.0", batch_delay_minutes=10)
    policy("docker.io/iotistic/myapp:v2.0.?", batch_delay_minutes=15)
    assert policy_for_push(image=IMAGE, tag="v2.0.0") == first


def test_it_ignores_disabled_policies():
    policy("docker.io/iotistic/myapp:v2.0.0", enabled=False)
    fallback = policy("docker.io/iotistic/*:*")
    assert policy_for_push(image=IMAGE, tag="v2.0.0") == fallback
    fallback.enabled = False
    fallback.save()
    assert policy_for_push(image=IMAGE, tag="v2.0.0") is None


def test_it_answers_no_matching_policy_when_only_disabled_policies_match():
    build_fleet(3)
    policy("docker.io/iotistic/*:*", enabled=False)
    outcome = rollout_create_for_push(image=IMAGE, tag="v2.0.0", digest=None)
    assert (outcome.status, outcome.rollout) == ("no_matching_policy", None)


@pytest.mark.parametrize(
    ("pattern", "image", "tag"),
    [
        ("iotistic/myapp:v2.*", IMAGE, "v2.0.0"),
        ("iotistic/*", IMAGE, "v2.0.0"),  # no tag part: any tag
        ("nginx:1.*", "docker.io/library/nginx", "1.27"),
        ("index.docker.io/library/nginx:*", "docker.io/library/nginx", "1.27"),
    ],
)
def test_it_matches_a_pattern_without_host_as_docker_hub(pattern, image, tag):
    stored = policy(pattern)
    assert stored.image_pattern.startswith("docker.io/")
    assert policy_for_push(image=image, tag=tag) == stored


def test_it_does_not_match_a_docker_hub_pattern_against_another_registry():
    policy("iotistic/myapp:*")
    assert policy_for_push(image="ghcr.io/iotistic/myapp", tag="v2.0.0") is None


def test_it_matches_tags_case_sensitively():
    policy("iotistic/myapp:V2.*")
    assert policy_for_push(image=IMAGE, tag="v2.0.0") is None
    assert policy_for_push(image=IMAGE, tag="V2.0.0") is not None


def test_it_creates_the_rollout_with_the_most_specific_policy_settings():
    build_fleet(3)
    policy("docker.io/iotistic/*:*", update_strategy="auto")
    chosen = policy("iotistic/myapp:v2.*", update_strategy="manual", batch_delay_minutes=7)
    outcome = rollout_create_for_push(image=IMAGE, tag="v2.0.0", digest=None)
    rollout = outcome.rollout
    assert (rollout.policy_id, rollout.strategy) == (chosen.pk, "manual")
    assert rollout.batch_delay_minutes == 7
