"""The report's validation without DRF (devices.serializers.plain_state_report)
gives StateReportSerializer's answer, or leaves the answer to it.

The report endpoint validates a body with plain_state_report first and runs
the serializer only when that returns None, so every error an agent gets is
the serializer's. These tests hold the two to the same validated data: for
every body plain_state_report accepts, the serializer accepts it too and
makes the same target version and service reports of it.
"""

import pytest
from django.test import override_settings
from hypothesis import HealthCheck, given
from hypothesis import settings as hypothesis_settings
from hypothesis import strategies as st

from devices.serializers import StateReportSerializer, plain_state_report

DIGEST = "sha256:" + "9f86d0" + "a" * 58


def serializer_answer(body):
    serializer = StateReportSerializer(data=body)
    if not serializer.is_valid():
        return None
    return serializer.validated_data.get("target_version"), serializer.reports()


def assert_same_answer(body):
    plain = plain_state_report(body)
    if plain is not None:
        assert serializer_answer(body) == plain, body
    return plain


AGENT_REPORTS = [
    {},
    {"target_version": 1},
    {"target_version": None, "services": {}},
    {"target_version": 2**63 - 1, "services": {"web": {}}},
    {
        "target_version": 42,
        "services": {
            "web": {
                "image": "docker.io/iotistic/myapp",
                "tag": "v2.0.1",
                "digest": DIGEST,
                "status": "running",
                "health": "healthy",
            },
            "db": {"image": "postgres:16", "status": "exited", "health": "none"},
        },
    },
    {"services": {"web": {"image": "ghcr.io/Org/App:v1@" + DIGEST.upper().replace("SHA", "sha")}}},
    {"services": {"web": {"image": "nginx", "tag": None, "digest": None}}},
    {"services": {"web": {"status": None, "health": "unhealthy", "uptime": 12}}, "agent": "v9"},
    {"services": {"web.1_a-b": {"tag": "1.25", "status": "downloading"}}},
]


@pytest.mark.parametrize("body", AGENT_REPORTS)
def test_it_answers_what_agents_send_without_drf_and_as_drf_does(body):
    assert assert_same_answer(body) is not None


@pytest.mark.parametrize(
    "body",
    [
        {"target_version": True},
        {"target_version": 1.0},
        {"target_version": "1"},
        {"target_version": -1},
        {"target_version": 2**63},
        {"services": None},
        {"services": []},
        {"services": {"web": None}},
        {"services": {"web": "nginx"}},
        {"services": {"bad name!": {}}},
        {"services": {"web\n": {}}},
        {"services": {"web": {"image": 5}}},
        {"services": {"web": {"image": ""}}},
        {"services": {"web": {"image": " nginx"}}},
        {"services": {"web": {"image": "nginx\x00"}}},
        {"services": {"web": {"image": "not a ref!!"}}},
        {"services": {"web": {"tag": "x" * 129}}},
        {"services": {"web": {"tag": "bad tag"}}},
        {"services": {"web": {"digest": "sha256:short"}}},
        {"services": {"web": {"status": "bogus"}}},
        {"services": {"web": {"health": 5}}},
        {"services": {"web": {"status": ""}}},
        {"services": {"web": {"status": "Running"}}},
        {"services": {"web": {"health": " healthy"}}},
    ],
)
def test_it_leaves_anything_unusual_to_the_serializer(body):
    assert plain_state_report(body) is None


@override_settings(DEVICE_MAX_SERVICES=2)
def test_it_leaves_too_many_services_to_the_serializer():
    assert plain_state_report({"services": {"a": {}, "b": {}}}) is not None
    body = {"services": {"a": {}, "b": {}, "c": {}}}
    assert plain_state_report(body) is None
    assert serializer_answer(body) is None


TEXTS = st.sampled_from(
    [
        "nginx", "docker.io/library/nginx", "Acme/App:v1", "ghcr.io/org/app@" + DIGEST, DIGEST,
        DIGEST.upper(), "sha256:abc", "v2.0.1", "latest", "-bad", "bad tag", " v1", "v1 ", "",
        " ", "x" * 129, "x" * 256, "a//b", "nginx\x00", "caf\u00e9", "\ud800", "v1\n", "\t",
        "running", "exited", "healthy", "none", "Running",
    ]
) | st.text(max_size=12)
VALUES = st.none() | st.booleans() | st.integers(-3, 3) | st.floats(allow_nan=False) | TEXTS

# Each field mostly a value of its kind (good or nearly so), sometimes anything.
def field_values(*samples):
    return st.sampled_from(samples) | st.none() | VALUES


SERVICE = st.fixed_dictionaries(
    {},
    optional={
        "image": field_values(
            "nginx", "Acme/App:v1", "ghcr.io/org/app@" + DIGEST, " nginx", "a//b"
        ),
        "tag": field_values("v2.0.1", "latest", "-bad", "v1 ", "x" * 129),
        "digest": field_values(DIGEST, DIGEST.upper(), "sha256:abc"),
        "status": field_values("running", "exited", "Running", "bogus", ""),
        "health": field_values("healthy", "none", "None", " healthy"),
        "uptime": VALUES,
    },
)
NAMES = st.sampled_from(["web", "db", "web.1", "-web", "bad name", "web\n", "x" * 101, ""])
# An agent's usual body (one service, a version), its values varied...
ONE_SERVICE = st.fixed_dictionaries(
    {"services": st.fixed_dictionaries({"web": SERVICE})},
    optional={"target_version": st.none() | st.integers(0, 3) | VALUES},
)
# ... and bodies of any shape.
ANY_SHAPE = st.fixed_dictionaries(
    {},
    optional={
        "target_version": st.none()
        | st.booleans()
        | st.integers(-2, 2**64)
        | st.floats(allow_nan=False)
        | TEXTS,
        "services": st.dictionaries(NAMES, SERVICE | SERVICE | VALUES, max_size=3)
        | VALUES
        | st.lists(VALUES),
        "agent": VALUES,
    },
)


@hypothesis_settings(
    max_examples=2000, deadline=None, derandomize=True, suppress_health_check=[HealthCheck.too_slow]
)
@given(body=ONE_SERVICE | ANY_SHAPE)
def test_it_never_accepts_what_the_serializer_refuses_nor_answers_otherwise(body):
    assert_same_answer(body)
