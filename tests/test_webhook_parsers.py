"""Each registry's payload becomes the right normalized pushes (no database)."""

import json

import pytest

from webhooks.parsers import InvalidPayload, Push, parse_delivery

from .factories import WEBHOOK_FIXTURES as FIXTURES

GITHUB_HEADERS = {"X-GitHub-Event": "package", "X-GitHub-Delivery": "72d3162e-cc78-11e3-81ab-4c9367dc0958"}


def fixture(name: str) -> dict:
    return json.loads((FIXTURES / name).read_text())


def parse(payload, headers=None):
    body = payload if isinstance(payload, bytes) else json.dumps(payload).encode()
    return parse_delivery(headers or {}, body)


def invalid(payload, headers=None) -> InvalidPayload:
    with pytest.raises(InvalidPayload) as caught:
        parse(payload, headers)
    return caught.value


@pytest.mark.parametrize(
    ("name", "headers", "registry", "push"),
    [
        (
            "dockerhub-push.json",
            {},
            "dockerhub",
            Push("docker.io/svendowideit/testhook", "latest", None),
        ),
        (
            "ghcr-package-published.json",
            GITHUB_HEADERS,
            "github",
            Push(
                "ghcr.io/acme-iot/edge-agent",
                "2.4.1",
                "sha256:5d41402abc4b2a76b9719d911017c592ae4e4b1c0f2d3a8e6b0c1f2a3b4c5d6e",
            ),
        ),
        (
            "distribution-push.json",
            {},
            "distribution",
            Push(
                "registry.acme.example:5000/acme/telemetry",
                "3.1.0",
                "sha256:fea8895f450959fa676bcc1df0611ea93823a735a01205fd8622846041d0c7cf",
            ),
        ),
        (
            "harbor-push.json",
            {},
            "harbor",
            Push(
                "hub.harbor.com/test-webhook/debian",
                "latest",
                "sha256:8a9e9863dbb6e10edb5adfe917c00da84e1700fa76e7ed02476aa6e6fb8ee0d8",
            ),
        ),
        ("quay-push.json", {}, "quay", Push("quay.io/dgangaia/test", "latest", None)),
    ],
)
def test_it_parses_each_fixture_to_its_normalized_push(name, headers, registry, push):
    parsed = parse_delivery(headers, (FIXTURES / name).read_bytes())
    assert (parsed.registry, parsed.pushes, parsed.ignored_reason) == (registry, (push,), None)


def test_it_covers_every_fixture_in_the_fixtures_folder():
    # A fixture added for a new registry must get a row in the table above.
    assert sorted(path.name for path in FIXTURES.glob("*.json")) == [
        "distribution-push.json",
        "dockerhub-push.json",
        "ghcr-package-published.json",
        "harbor-push.json",
        "quay-push.json",
    ]


# --- Docker Hub ---


@pytest.mark.parametrize("repo_name", ["nginx", "library/nginx"])
def test_it_puts_docker_official_images_under_library(repo_name):
    payload = fixture("dockerhub-push.json")
    payload["repository"]["repo_name"] = repo_name
    assert parse(payload).pushes[0].image == "docker.io/library/nginx"


def test_it_keeps_docker_hub_pushes_on_docker_hub_whatever_the_repo_name():
    payload = fixture("dockerhub-push.json")
    payload["repository"]["repo_name"] = "ghcr.io/acme/app"
    assert parse(payload).pushes[0].image == "docker.io/ghcr.io/acme/app"


def test_it_builds_the_docker_hub_name_from_namespace_and_name_without_repo_name():
    payload = fixture("dockerhub-push.json")
    del payload["repository"]["repo_name"]
    assert parse(payload).pushes[0].image == "docker.io/svendowideit/testhook"


# --- GitHub ---


def test_it_reads_the_github_delivery_id_from_its_header():
    parsed = parse(fixture("ghcr-package-published.json"), GITHUB_HEADERS)
    assert parsed.delivery_id == GITHUB_HEADERS["X-GitHub-Delivery"]


def test_it_lower_cases_the_ghcr_owner_and_name():
    payload = fixture("ghcr-package-published.json")
    payload["package"]["namespace"] = "Acme-IoT"
    payload["package"]["name"] = "Edge-Agent"
    assert parse(payload, GITHUB_HEADERS).pushes[0].image == "ghcr.io/acme-iot/edge-agent"


def test_it_compares_the_package_type_case_insensitively():
    payload = fixture("ghcr-package-published.json")
    payload["package"]["package_type"] = "container"
    del payload["package"]["ecosystem"]
    assert parse(payload, GITHUB_HEADERS).pushes[0].tag == "2.4.1"


def test_it_parses_registry_package_events():
    payload = fixture("ghcr-package-published.json")
    payload["registry_package"] = payload.pop("package")
    headers = {**GITHUB_HEADERS, "X-GitHub-Event": "registry_package"}
    assert parse(payload, headers).pushes[0].image == "ghcr.io/acme-iot/edge-agent"


def test_it_recognizes_a_github_package_event_without_the_event_header():
    parsed = parse(fixture("ghcr-package-published.json"))
    assert (parsed.registry, parsed.pushes[0].tag) == ("github", "2.4.1")


def test_it_ignores_a_github_ping():
    parsed = parse({"zen": "Design for failure.", "hook_id": 1}, {"X-GitHub-Event": "ping"})
    assert parsed.pushes == ()
    assert "ping" in parsed.ignored_reason


def test_it_ignores_other_github_events():
    parsed = parse({"ref": "refs/heads/main"}, {"X-GitHub-Event": "push"})
    assert "'push' is not a package event" in parsed.ignored_reason


def test_it_ignores_non_push_package_actions():
    payload = fixture("ghcr-package-published.json")
    payload["action"] = "updated"
    assert "'updated' is not a push" in parse(payload, GITHUB_HEADERS).ignored_reason


def test_it_ignores_packages_that_are_not_containers():
    payload = fixture("ghcr-package-published.json")
    payload["package"]["package_type"] = payload["package"]["ecosystem"] = "npm"
    assert "'npm' is not a container" in parse(payload, GITHUB_HEADERS).ignored_reason


@pytest.mark.parametrize("tag_name", ["", None])
def test_it_ignores_an_untagged_package_version_with_a_reason(tag_name):
    payload = fixture("ghcr-package-published.json")
    payload["package"]["package_version"]["container_metadata"]["tag"]["name"] = tag_name
    parsed = parse(payload, GITHUB_HEADERS)
    assert parsed.pushes == ()
    assert "no tag" in parsed.ignored_reason


def test_it_refuses_a_github_delivery_id_that_no_registry_would_send():
    error = invalid(fixture("ghcr-package-published.json"), {**GITHUB_HEADERS, "X-GitHub-Delivery": "x" * 500})
    assert error.code == "invalid_payload"
    assert "X-GitHub-Delivery" in str(error)


# --- CNCF Distribution ---


def distribution_event(tag="3.1.0", media_type="application/vnd.oci.image.manifest.v1+json", **changes):
    event = fixture("distribution-push.json")["events"][0]
    event["target"].update(tag=tag, mediaType=media_type)
    event.update(changes)
    return event


def test_it_skips_blob_events_in_a_distribution_envelope():
    # The fixture holds a manifest push and a blob push: only the first counts.
    assert len(parse(fixture("distribution-push.json")).pushes) == 1


def test_it_handles_every_tagged_manifest_push_of_an_envelope():
    events = [distribution_event("3.1.0"), distribution_event("latest"), distribution_event("3.1.0")]
    parsed = parse({"events": events})
    assert [push.tag for push in parsed.pushes] == ["3.1.0", "latest"]


def test_it_ignores_an_envelope_without_a_tagged_manifest_push():
    events = [
        distribution_event(tag=None),  # push by digest
        distribution_event(action="pull"),
        distribution_event(media_type="application/vnd.docker.image.rootfs.diff.tar.gzip"),
    ]
    parsed = parse({"events": events})
    assert parsed.pushes == ()
    assert "no tagged manifest push" in parsed.ignored_reason


def test_it_accepts_manifest_media_types_with_parameters():
    event = distribution_event(media_type="application/vnd.docker.distribution.manifest.v2+json; charset=utf-8")
    assert parse({"events": [event]}).pushes[0].tag == "3.1.0"


def test_it_takes_the_host_from_the_manifest_url_without_request_host():
    event = distribution_event()
    del event["request"]
    event["target"]["url"] = "https://mirror.example:443/v2/acme/telemetry/manifests/3.1.0"
    assert parse({"events": [event]}).pushes[0].image == "mirror.example:443/acme/telemetry"


# --- Harbor ---


def test_it_ignores_harbor_events_other_than_pushes():
    payload = fixture("harbor-push.json")
    payload["type"] = "PULL_ARTIFACT"
    assert "'PULL_ARTIFACT' is not a push" in parse(payload).ignored_reason


def test_it_takes_the_harbor_host_from_the_resource_url():
    payload = fixture("harbor-push.json")
    payload["event_data"]["resources"][0]["resource_url"] = "harbor.internal:8443/test-webhook/debian:latest"
    assert parse(payload).pushes[0].image == "harbor.internal:8443/test-webhook/debian"


def test_it_accepts_harbor_1_push_image_events():
    payload = fixture("harbor-push.json")
    payload["type"] = "pushImage"
    assert parse(payload).pushes[0].tag == "latest"


# --- Quay ---


def test_it_accepts_quays_legacy_map_of_updated_tags():
    payload = fixture("quay-push.json")
    payload["updated_tags"] = {"latest": "b4c2e4f9a1d5", "1.2": "b4c2e4f9a1d5"}
    parsed = parse(payload)
    assert parsed.pushes == (Push("quay.io/dgangaia/test", "latest"), Push("quay.io/dgangaia/test", "1.2"))


def test_it_ignores_a_quay_notification_without_tags():
    payload = fixture("quay-push.json")
    payload["updated_tags"] = []
    assert "no tag" in parse(payload).ignored_reason


# --- what makes a delivery a 400 ---


def test_it_refuses_a_push_with_an_invalid_tag():
    payload = fixture("dockerhub-push.json")
    payload["push_data"]["tag"] = "-not a tag"
    error = invalid(payload)
    assert error.code == "invalid_push"
    assert "'-not a tag' is not a valid image tag" in str(error)


def test_it_refuses_the_whole_envelope_when_one_push_has_a_malformed_digest():
    bad = distribution_event("latest")
    bad["target"]["digest"] = "sha256:abc"
    error = invalid({"events": [distribution_event(), bad]})
    assert error.code == "invalid_push"
    assert "'sha256:abc' is not a valid image digest" in str(error)


def test_it_refuses_a_field_of_the_wrong_type():
    payload = fixture("harbor-push.json")
    payload["event_data"]["resources"] = {"tag": "latest"}
    error = invalid(payload)
    assert (error.code, str(error)) == (
        "invalid_payload",
        "harbor: 'event_data.resources' must be a list, got an object.",
    )


@pytest.mark.parametrize("payload", [{"hello": "world"}, [1, 2], "push", 42])
def test_it_refuses_an_unknown_shape_listing_the_accepted_ones(payload):
    error = invalid(payload)
    assert error.code == "unknown_payload"
    for shape in ("'push_data'", "X-GitHub-Event", "'events' list", "'event_data'", "'docker_url'"):
        assert shape in str(error)


@pytest.mark.parametrize("body", [b"", b"   ", b"{", b"\xff\xfe{}", b"[" * 100_000])
def test_it_refuses_a_body_that_is_not_json(body):
    assert invalid(body).code == "malformed_json"
