"""A small client of the registry HTTP API v2: tag -> digest, tag lists.

Used by the rollout worker (digest pinning), the device-target digest filler
and registry polling. It never runs in a request/response cycle: every call
may wait up to REGISTRY_TIMEOUT_SECONDS per round trip.

Authentication follows the registry's own challenge: an anonymous request
first; on `401` with `WWW-Authenticate: Bearer realm=...` a token is fetched
from the realm (with Basic credentials when REGISTRY_CREDENTIALS has some for
the host) and the request is repeated with it; on a `Basic` challenge the
request is repeated with the credentials. Tokens are kept for the life of the
client, so a paginated tag list asks for one token.
"""

import base64
import hashlib
import re
from dataclasses import dataclass, field

import httpx
from django.conf import settings
from django.core.cache import cache

from .references import InvalidReference, validate_digest

# What we accept for a tag, most specific last is irrelevant: the registry
# answers with the manifest the tag points at, and for a multi-arch image
# that is the index (whose digest is what devices must pin).
MANIFEST_MEDIA_TYPES = (
    "application/vnd.oci.image.index.v1+json",
    "application/vnd.oci.image.manifest.v1+json",
    "application/vnd.docker.distribution.manifest.list.v2+json",
    "application/vnd.docker.distribution.manifest.v2+json",
)
DOCKER_HUB = "docker.io"
# Image names say docker.io; its API answers on another host.
DOCKER_HUB_API = "registry-1.docker.io"
# A registry answering more pages than this for one tag list is broken or hostile.
MAX_TAG_PAGES = 1000
TAG_PAGE_SIZE = 1000
# A manifest (even an index of many platforms) is a few KiB; refuse to hash
# anything absurd read through the GET fallback.
MAX_MANIFEST_BYTES = 4 * 1024 * 1024
USER_AGENT = "fleet-rollouts/1 (+registry API v2)"
_CHALLENGE_PARAM = re.compile(r'(\w+)="([^"]*)"')


class RegistryError(Exception):
    """The registry could not tell us what we asked; str() is a sentence for
    an operator (it goes into events and `status_reason`)."""


class RegistryRateLimited(RegistryError):
    """429: the caller should not ask this registry again before `retry_after` seconds."""

    def __init__(self, message: str, retry_after: float):
        super().__init__(message)
        self.retry_after = retry_after


@dataclass(frozen=True)
class Repository:
    """A normalized image name split into the registry host (as image names
    spell it, e.g. `docker.io`, `127.0.0.1:5000`) and the repository path."""

    host: str
    name: str

    @classmethod
    def from_image(cls, image: str) -> "Repository":
        host, _, name = image.partition("/")
        if not name:
            raise RegistryError(f"{image!r} names no registry host.")
        return cls(host=host, name=name)



@dataclass
class RegistryClient:
    credentials: dict = field(default_factory=dict)
    insecure_hosts: tuple[str, ...] = ()
    timeout: float = 10.0
    # Where `docker.io` images are asked for (a pull-through mirror may stand in).
    docker_hub_host: str = DOCKER_HUB_API
    # Tokens by (realm, service, scope): a paginated list asks for one token.
    _tokens: dict = field(default_factory=dict, repr=False)

    @classmethod
    def from_settings(cls) -> "RegistryClient":
        return cls(
            credentials=dict(settings.REGISTRY_CREDENTIALS),
            insecure_hosts=tuple(settings.REGISTRY_INSECURE_HOSTS),
            timeout=settings.REGISTRY_TIMEOUT_SECONDS,
            docker_hub_host=settings.REGISTRY_DOCKER_HUB_HOST,
        )

    # --- public calls ------------------------------------------------------

    def resolve_digest(self, image: str, tag: str) -> str:
        """The digest `image:tag` points at right now (the index digest for a
        multi-platform image). Raises RegistryError."""
        repo = Repository.from_image(image)
        path = f"/v2/{repo.name}/manifests/{tag}"
        headers = {"Accept": ", ".join(MANIFEST_MEDIA_TYPES)}
        with self._http() as http:
            response = self._request(http, "HEAD", repo, path, headers)
            digest = response.headers.get("Docker-Content-Digest")
            if not digest:
                # Not every registry sends the header: the digest of a
                # manifest is the sha256 of its exact bytes.
                response = self._request(http, "GET", repo, path, headers)
                body = response.content[: MAX_MANIFEST_BYTES + 1]
                if len(body) > MAX_MANIFEST_BYTES:
                    raise RegistryError(f"{image}:{tag}: the manifest is larger than 4 MiB.")
                digest = "sha256:" + hashlib.sha256(body).hexdigest()
        try:
            return validate_digest(digest)
        except InvalidReference as exc:
            raise RegistryError(f"{image}:{tag}: the registry sent a malformed digest ({exc}).") from exc

    def list_tags(self, image: str, *, page_size: int = TAG_PAGE_SIZE) -> list[str]:
        """Every tag of the repository, following `Link: <...>; rel="next"`."""
        repo = Repository.from_image(image)
        url = f"/v2/{repo.name}/tags/list?n={page_size}"
        tags: list[str] = []
        with self._http() as http:
            for _ in range(MAX_TAG_PAGES):
                response = self._request(http, "GET", repo, url, {"Accept": "application/json"})
                try:
                    tags.extend(response.json().get("tags") or [])
                except (ValueError, AttributeError) as exc:
                    raise RegistryError(f"{image}: the tag list is not the JSON expected.") from exc
                url = response.links.get("next", {}).get("url")
                if not url:
                    return tags
        raise RegistryError(f"{image}: the tag list has more than {MAX_TAG_PAGES} pages.")

    # --- plumbing ----------------------------------------------------------

    def _http(self) -> httpx.Client:
        # No redirects followed blindly across hosts would be safer, but
        # registries legitimately redirect blob and manifest reads; our calls
        # only read manifests and tag lists, and httpx drops Authorization
        # on a redirect to another origin.
        return httpx.Client(
            timeout=self.timeout, follow_redirects=True, headers={"User-Agent": USER_AGENT}
        )

    def _api_host(self, repo: Repository) -> str:
        return self.docker_hub_host if repo.host == DOCKER_HUB else repo.host

    def _base_url(self, repo: Repository) -> str:
        api_host = self._api_host(repo)
        scheme = "http" if api_host in self.insecure_hosts else "https"
        return f"{scheme}://{api_host}"

    def _credentials_for(self, repo: Repository) -> tuple[str, str] | None:
        for host in (repo.host, self._api_host(repo)):
            entry = self.credentials.get(host)
            if entry:
                return entry["username"], entry["password"]
        return None

    def _request(
        self, http: httpx.Client, method: str, repo: Repository, url: str, headers: dict
    ) -> httpx.Response:
        url = httpx.URL(self._base_url(repo)).join(url)
        response = self._send(http, method, url, headers, repo, auth=None)
        if response.status_code == 401:
            auth = self._answer_challenge(http, response, repo)
            response = self._send(http, method, url, headers, repo, auth=auth)
        self._raise_for_status(response, repo)
        return response

    def _send(self, http, method, url, headers, repo, *, auth) -> httpx.Response:
        if auth:
            headers = {**headers, "Authorization": auth}
        try:
            return http.request(method, url, headers=headers)
        except httpx.HTTPError as exc:
            raise RegistryError(f"registry {self._api_host(repo)} unreachable: {exc or type(exc).__name__}.") from exc

    def _answer_challenge(self, http, response: httpx.Response, repo: Repository) -> str:
        challenge = response.headers.get("WWW-Authenticate", "")
        scheme, _, params = challenge.partition(" ")
        credentials = self._credentials_for(repo)
        if scheme.lower() == "bearer":
            return "Bearer " + self._token(http, dict(_CHALLENGE_PARAM.findall(params)), repo, credentials)
        if scheme.lower() == "basic" and credentials:
            return _basic_auth(credentials)
        raise RegistryError(
            f"registry {repo.host} asks for credentials and REGISTRY_CREDENTIALS has none for it."
        )

    def _token(self, http, challenge: dict, repo: Repository, credentials) -> str:
        realm = challenge.get("realm")
        if not realm:
            raise RegistryError(f"registry {self._api_host(repo)} sent a Bearer challenge without a realm.")
        scope = challenge.get("scope") or f"repository:{repo.name}:pull"
        key = (realm, challenge.get("service"), scope)
        if key in self._tokens:
            return self._tokens[key]
        params = {"scope": scope}
        if challenge.get("service"):
            params["service"] = challenge["service"]
        try:
            answer = http.get(realm, params=params, auth=httpx.BasicAuth(*credentials) if credentials else None)
        except httpx.HTTPError as exc:
            raise RegistryError(f"token endpoint of {self._api_host(repo)} unreachable: {exc}.") from exc
        if answer.status_code in (401, 403):
            raise RegistryError(f"registry {repo.host} refused the credentials for {repo.name}.")
        self._raise_for_status(answer, repo)
        try:
            payload = answer.json()
            token = payload.get("token") or payload.get("access_token")
        except (ValueError, AttributeError):
            token = None
        if not token:
            raise RegistryError(f"the token endpoint of {self._api_host(repo)} answered no token.")
        self._tokens[key] = token
        return token

    def _raise_for_status(self, response: httpx.Response, repo: Repository) -> None:
        code = response.status_code
        if code < 300:
            return
        if code == 429:
            raise RegistryRateLimited(
                f"registry {self._api_host(repo)} is rate limiting us (429).",
                retry_after=_retry_after(response),
            )
        if code == 404:
            raise RegistryError(f"registry {repo.host} has no {response.request.url.path} (404).")
        if code in (401, 403):
            raise RegistryError(f"registry {repo.host} denied access to {repo.name} ({code}).")
        raise RegistryError(f"registry {self._api_host(repo)} answered {code} for {repo.name}.")


def _basic_auth(credentials: tuple[str, str]) -> str:
    username, password = credentials
    return "Basic " + base64.b64encode(f"{username}:{password}".encode()).decode()


def _retry_after(response: httpx.Response, default: float = 30.0) -> float:
    # Seconds only: registries send the delta form; a date is rare enough to
    # fall back on a fixed pause.
    try:
        return min(max(float(response.headers.get("Retry-After", default)), 1.0), 3600.0)
    except ValueError:
        return default


def resolve_digest_cached(image: str, tag: str) -> str:
    """The digest of `image:tag`, reused for REGISTRY_CACHE_SECONDS; after a
    429 the registry is not asked again until its Retry-After has passed.
    Raises RegistryError."""
    key = f"registry:digest:{image}:{tag}"
    backoff_key = f"registry:backoff:{image.split('/', 1)[0]}"
    if cached := cache.get(key):
        return cached
    if waiting := cache.get(backoff_key):
        raise RegistryError(waiting)
    try:
        digest = RegistryClient.from_settings().resolve_digest(image, tag)
    except RegistryRateLimited as exc:
        cache.set(backoff_key, f"{exc} Not asked again for {exc.retry_after:.0f} s.", exc.retry_after)
        raise
    if settings.REGISTRY_CACHE_SECONDS:
        cache.set(key, digest, settings.REGISTRY_CACHE_SECONDS)
    return digest
