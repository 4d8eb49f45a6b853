"""Mutated registry bodies never cause a 500 nor a push that is not valid.

Bodies are the registry fixtures (tests/fixtures/webhooks), changed by a small mutator (replace, delete,
wrap or duplicate a value, edit a string, and at the byte level truncate or
corrupt the JSON).  The mutator takes any `random.Random`: hypothesis drives
it at the parser level, a seeded generator at the endpoint level.
"""

import copy
import json
import random
from collections import Counter

import pytest
from hypothesis import HealthCheck, given
from hypothesis import settings as hypothesis_settings
from hypothesis import strategies as st
# Imported now, not lazily by st.randoms() inside the test: pytest rewrites
# hypothesis's modules (it is a plugin) and CPython 3.11 can fail compiling
# one mid-test ("SystemError: AST constructor recursion depth mismatch", seen
# once in a full run); at collection the stack is shallow and clean.
from hypothesis.strategies._internal import random as _hypothesis_randoms  # noqa: F401

from devices.references import normalize_repository, validate_digest, validate_tag
from rollouts.models import Rollout
from webhooks.models import WebhookDelivery
from webhooks.parsers import InvalidPayload, parse_delivery

from .factories import WEBHOOK_FIXTURES as FIXTURES
from .factories import DeviceServiceFactory
from .rollout_helpers import policy

BODIES = {path.name: json.loads(path.read_text()) for path in sorted(FIXTURES.glob("*.json"))}
URL = "/api/v1/webhooks/docker-registry"
ENDPOINT_DELIVERIES = 1000

ODD_VALUES = [
    None, True, False, 0, -1, 2**70, 1.5, "", " ", "latest", "v2.0.1", "-bad", "v" * 129,
    "UPPER", "Acme/App", "ghcr.io/Acme/App", "localhost:5000/x", "[::1]:5000/x", "a//b", "/x", "x/",
    "https://registry.example/v2/x", "sha256:" + "a" * 64, "sha256:" + "A" * 64, "sha256:abc",
    "sha512:" + "a" * 128, "md5:x", "\u212a", "\x00", "\ud800", "caf\u00e9", "..", "push", "pull",
    "PUSH_ARTIFACT", "published", "container", "npm",
    "application/vnd.oci.image.manifest.v1+json", "application/octet-stream",
    [], {}, [None], {"": None}, ["latest", 1], {"name": "x"},
]
GITHUB_EVENTS = ["package", "registry_package", "ping", "push", "", "PACKAGE"]
DELIVERY_IDS = ["d-1", "d-2", "", "x" * 300, "a b", "\u00e9"]
STRING_NOISE = "aZ09-_.:/@ \x00\u00e9\u212a"


def mutated_delivery(rng: random.Random, extra_values=()) -> tuple[bytes, dict[str, str]]:
    """A mutated copy of a random fixture, as (body, headers)."""
    name = rng.choice(sorted(BODIES))
    tree = copy.deepcopy(BODIES[name])
    values = [*ODD_VALUES, *extra_values]
    for _ in range(rng.randint(1, 4)):
        tree = _mutate_once(tree, rng, values)
    body = json.dumps(tree, ensure_ascii=rng.random() < 0.5).encode("utf-8", "surrogatepass")
    if rng.random() < 0.1:
        body = _corrupt(body, rng)
    headers = {}
    if name.startswith("ghcr") or rng.random() < 0.05:
        headers["X-GitHub-Event"] = rng.choice(GITHUB_EVENTS)
        headers["X-GitHub-Delivery"] = rng.choice(DELIVERY_IDS)
    return body, headers


def _mutate_once(tree, rng: random.Random, values):
    slots = list(_slots(tree))
    if not slots or rng.random() < 0.02:
        return copy.deepcopy(rng.choice(values))
    parent, key = rng.choice(slots)
    value = parent[key]
    operation = rng.choice(["replace", "replace", "delete", "wrap", "duplicate", "edit"])
    if operation == "replace":
        parent[key] = copy.deepcopy(rng.choice(values))
    elif operation == "delete":
        del parent[key]
    elif operation == "wrap":
        parent[key] = rng.choice([[value], {"value": value}])
    elif operation == "duplicate" and isinstance(parent, list):
        parent.append(copy.deepcopy(value))
    elif operation == "edit" and isinstance(value, str):
        at = rng.randint(0, len(value))
        parent[key] = value[:at] + rng.choice(STRING_NOISE) + value[at + rng.randint(0, 1) :]
    return tree


def _slots(node):
    """Every (container, key) pair in the tree."""
    items = node.items() if isinstance(node, dict) else enumerate(node) if isinstance(node, list) else ()
    for key, child in list(items):
        yield node, key
        yield from _slots(child)


def _corrupt(body: bytes, rng: random.Random) -> bytes:
    at = rng.randint(0, len(body))
    truncated = body[:at]
    flipped = body[:at] + bytes([rng.randint(0, 255)]) + body[at + 1 :]
    not_utf8 = body[:at] + b"\xff\xfe" + body[at:]
    return rng.choice([truncated, flipped, not_utf8])


def assert_valid_push(image: str, tag: str, digest: str | None) -> None:
    assert normalize_repository(image) == image
    assert validate_tag(tag) == tag
    assert digest is None or validate_digest(digest) == digest


json_values = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats(allow_nan=False) | st.text(max_size=20),
    lambda children: st.lists(children, max_size=3) | st.dictionaries(st.text(max_size=8), children, max_size=3),
    max_leaves=5,
)


@hypothesis_settings(
    max_examples=1000, deadline=None, derandomize=True, suppress_health_check=[HealthCheck.too_slow]
)
@given(rng=st.randoms(use_true_random=False), extra_values=st.lists(json_values, max_size=3))
def test_it_parses_a_mutated_body_into_valid_pushes_or_a_clear_refusal(rng, extra_values):
    body, headers = mutated_delivery(rng, extra_values)
    try:
        parsed = parse_delivery(headers, body)
    except InvalidPayload as exc:
        assert exc.code in {"malformed_json", "unknown_payload", "invalid_payload", "invalid_push"}
        assert str(exc)
        return
    assert bool(parsed.pushes) != bool(parsed.ignored_reason)
    for push in parsed.pushes:
        assert_valid_push(push.image, push.tag, push.digest)


@pytest.mark.django_db
def test_it_never_answers_500_nor_acts_on_an_invalid_push_for_a_thousand_mutated_deliveries(client):
    policy("*")
    for image in ("docker.io/svendowideit/testhook", "ghcr.io/acme-iot/edge-agent", "quay.io/dgangaia/test"):
        DeviceServiceFactory(target_image=image, target_tag="0.0.1")
    rng = random.Random(20261121)
    outcomes = Counter()
    for n in range(ENDPOINT_DELIVERIES):
        body, headers = mutated_delivery(rng)
        # A new address per delivery keeps the throttle out of the way.
        address = f"10.0.{n // 256}.{n % 256}"
        response = client.post(URL, body, content_type="application/json", headers=headers, REMOTE_ADDR=address)
        assert response.status_code in (202, 400), (response.status_code, body[:200])
        outcomes[response.json()["status"] if response.status_code == 202 else 400] += 1
    # The mutator reaches every kind of answer, or this test proves little.
    assert {"rollout_created", "ignored", "duplicate", 400} <= set(outcomes), outcomes
    acted_on = set()
    for delivery in WebhookDelivery.objects.all():
        for push in delivery.pushes:
            assert_valid_push(push["image"], push["tag"], push["digest"])
            acted_on.add(push.get("rollout_id"))
    for rollout in Rollout.objects.all():
        assert str(rollout.id) in acted_on
        assert_valid_push(rollout.image, rollout.new_tag, rollout.new_digest)
