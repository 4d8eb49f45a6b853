"""The registry API v2 client against a real registry (Debian's docker-registry)."""

import time

import pytest

from devices.registry import (
    MANIFEST_MEDIA_TYPES,
    RegistryClient,
    RegistryError,
    RegistryRateLimited,
    Repository,
    resolve_digest_cached,
)

from .registry import REGISTRY_PASSWORD, REGISTRY_USER, free_port, unique_name


def client_for(*hosts, credentials=None) -> RegistryClient:
    return RegistryClient(insecure_hosts=hosts, credentials=credentials or {}, timeout=5)


def test_it_resolves_a_single_platform_manifest(registry):
    name = unique_name()
    digest = registry.push_image(name, "1.0.0")
    assert client_for(registry.host).resolve_digest(f"{registry.host}/{name}", "1.0.0") == digest


def test_it_resolves_an_oci_image_manifest(registry):
    name = unique_name()
    digest = registry.push_image(name, "1.0.0", oci=True)
    assert client_for(registry.host).resolve_digest(f"{registry.host}/{name}", "1.0.0") == digest


def test_it_resolves_an_oci_index_to_the_index_digest(registry):
    name = unique_name()
    index_digest = registry.push_index(name, "2.0.0")
    assert client_for(registry.host).resolve_digest(f"{registry.host}/{name}", "2.0.0") == index_digest


def test_it_follows_a_re_pushed_tag(registry):
    name = unique_name()
    client = client_for(registry.host)
    first = registry.push_image(name, "latest")
    assert client.resolve_digest(f"{registry.host}/{name}", "latest") == first
    second = registry.push_image(name, "latest")
    assert second != first
    assert client.resolve_digest(f"{registry.host}/{name}", "latest") == second


def test_it_asks_for_the_four_manifest_media_types(registry, registry_front):
    front = registry_front()
    name = unique_name()
    registry.push_image(name, "1.0.0")
    client_for(front.host).resolve_digest(f"{front.host}/{name}", "1.0.0")
    method, path, accept = front.requests[0]
    assert (method, path) == ("HEAD", f"/v2/{name}/manifests/1.0.0")
    assert [part.strip() for part in accept.split(",")] == list(MANIFEST_MEDIA_TYPES)


def test_it_hashes_the_manifest_when_the_digest_header_is_missing(registry, registry_front):
    front = registry_front(strip_digest=True)
    name = unique_name()
    digest = registry.push_index(name, "3.0.0")
    assert client_for(front.host).resolve_digest(f"{front.host}/{name}", "3.0.0") == digest
    assert [method for method, _, _ in front.requests] == ["HEAD", "GET"]


def test_it_uses_basic_credentials_on_a_basic_challenge(auth_registry):
    name = unique_name()
    digest = auth_registry.push_image(name, "1.0.0")
    credentials = {auth_registry.host: {"username": REGISTRY_USER, "password": REGISTRY_PASSWORD}}
    client = client_for(auth_registry.host, credentials=credentials)
    assert client.resolve_digest(f"{auth_registry.host}/{name}", "1.0.0") == digest


def test_it_says_which_credentials_are_missing(auth_registry):
    name = unique_name()
    auth_registry.push_image(name, "1.0.0")
    with pytest.raises(RegistryError, match="REGISTRY_CREDENTIALS has none"):
        client_for(auth_registry.host).resolve_digest(f"{auth_registry.host}/{name}", "1.0.0")


def test_it_refuses_wrong_basic_credentials(auth_registry):
    name = unique_name()
    credentials = {auth_registry.host: {"username": REGISTRY_USER, "password": "wrong"}}
    with pytest.raises(RegistryError, match="denied access"):
        client_for(auth_registry.host, credentials=credentials).resolve_digest(
            f"{auth_registry.host}/{name}", "1.0.0"
        )


def test_it_answers_a_bearer_challenge_with_a_token(registry, registry_front):
    front = registry_front(bearer=True)
    name = unique_name()
    digest = registry.push_image(name, "1.0.0")
    credentials = {front.host: {"username": REGISTRY_USER, "password": REGISTRY_PASSWORD}}
    client = client_for(front.host, credentials=credentials)
    assert client.resolve_digest(f"{front.host}/{name}", "1.0.0") == digest
    (path, authorization), = front.token_requests
    assert f"scope=repository%3A{name.replace('/', '%2F')}%3Apull" in path
    assert "service=fleet-tests" in path
    assert authorization.startswith("Basic ")


def test_a_refused_token_is_an_error(registry, registry_front):
    front = registry_front(bearer=True)
    with pytest.raises(RegistryError, match="refused the credentials"):
        client_for(front.host).resolve_digest(f"{front.host}/{unique_name()}", "1.0.0")


def test_an_unknown_tag_is_an_error(registry):
    name = unique_name()
    registry.push_image(name, "1.0.0")
    with pytest.raises(RegistryError, match="404"):
        client_for(registry.host).resolve_digest(f"{registry.host}/{name}", "9.9.9")


def test_rate_limiting_says_when_to_come_back(registry_front):
    front = registry_front(fail_with=(429, {"Retry-After": "42"}))
    with pytest.raises(RegistryRateLimited) as caught:
        client_for(front.host).resolve_digest(f"{front.host}/{unique_name()}", "1.0.0")
    assert caught.value.retry_after == 42


def manifest_requests(front) -> int:
    return sum(1 for _, path, _ in front.requests if "/manifests/" in path)


def test_a_resolved_digest_is_reused_for_the_cache_time(registry, registry_front, registry_settings, settings):
    settings.REGISTRY_CACHE_SECONDS = 1
    front = registry_front()
    registry_settings.allow(front.host)
    name = unique_name()
    digest = registry.push_image(name, "1.0.0")
    image = f"{front.host}/{name}"
    assert resolve_digest_cached(image, "1.0.0") == digest
    assert resolve_digest_cached(image, "1.0.0") == digest
    assert manifest_requests(front) == 1
    time.sleep(1.2)
    assert resolve_digest_cached(image, "1.0.0") == digest
    assert manifest_requests(front) == 2


def test_after_a_429_the_registry_is_not_asked_before_its_retry_after(registry, registry_front, registry_settings):
    front = registry_front(fail_with=(429, {"Retry-After": "2"}))
    registry_settings.allow(front.host)
    name = unique_name()
    digest = registry.push_image(name, "1.0.0")
    with pytest.raises(RegistryRateLimited):
        resolve_digest_cached(f"{front.host}/{name}", "1.0.0")
    front.fail_with = None
    # Inside the window, whatever the repository of that registry: no request.
    for repository in (name, unique_name()):
        with pytest.raises(RegistryError, match="Not asked again"):
            resolve_digest_cached(f"{front.host}/{repository}", "1.0.0")
    assert manifest_requests(front) == 1
    time.sleep(2.2)
    assert resolve_digest_cached(f"{front.host}/{name}", "1.0.0") == digest
    assert manifest_requests(front) == 2


def test_an_unreachable_registry_is_an_error():
    host = f"127.0.0.1:{free_port()}"
    with pytest.raises(RegistryError, match="unreachable"):
        client_for(host).resolve_digest(f"{host}/acme/app", "1.0.0")


def test_it_lists_tags_across_link_pages(registry, registry_front):
    front = registry_front(bearer=True, tag_page_size=2)
    name = unique_name()
    tags = ["1.0.0", "1.1.0", "2.0.0", "2.1.0", "latest"]
    for tag in tags:
        registry.push_image(name, tag)
    credentials = {front.host: {"username": REGISTRY_USER, "password": REGISTRY_PASSWORD}}
    listed = client_for(front.host, credentials=credentials).list_tags(f"{front.host}/{name}", page_size=2)
    assert sorted(listed) == tags
    assert len([path for _, path, _ in front.requests if "/tags/list" in path]) >= 3
    # One token for every page.
    assert len(front.token_requests) == 1


def test_docker_hub_is_reached_at_its_api_host(settings):
    repository = Repository.from_image("docker.io/library/nginx")
    client = RegistryClient.from_settings()
    assert client._base_url(repository) == "https://registry-1.docker.io"
    client = RegistryClient(credentials={"docker.io": {"username": "u", "password": "p"}})
    assert client._base_url(repository) == "https://registry-1.docker.io"
    assert client._credentials_for(repository) == ("u", "p")


def test_it_reads_its_settings(settings):
    settings.REGISTRY_INSECURE_HOSTS = ["registry.local:5000"]
    settings.REGISTRY_CREDENTIALS = {"ghcr.io": {"username": "u", "password": "p"}}
    settings.REGISTRY_TIMEOUT_SECONDS = 3
    client = RegistryClient.from_settings()
    assert client._base_url(Repository.from_image("registry.local:5000/a/b")) == "http://registry.local:5000"
    assert client._base_url(Repository.from_image("ghcr.io/a/b")) == "https://ghcr.io"
    assert client.timeout == 3
