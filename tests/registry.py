"""A real registry for the tests: Debian's `docker-registry` (CNCF Distribution).

Each instance runs on a free loopback port with its storage in a temporary
directory. Images are pushed through the registry's own HTTP API (blobs, then
the manifest), so no docker is needed. `RegistryFront` is a small HTTP server
in front of an instance: it plays a registry that wants a Bearer token (with
its token endpoint), or one that leaves out `Docker-Content-Digest`, or one
that answers 429; everything else it forwards to the real registry.

Fixtures (imported by conftest): `registry` (open), `auth_registry` (htpasswd
Basic auth, user `fleet` / `registry_password`), `token_registry` (Bearer
token front), and `registry_settings`, which points the REGISTRY_* settings at
them (and `docker.io` images at the open one, as at a mirror of Docker
Hub). All of them are session-scoped except `registry_settings`; tests use
distinct repository names, so they do not see each other's pushes.
"""

import base64
import ctypes
import hashlib
import http.server
import json
import os
import shutil
import signal
import socket
import subprocess
import tempfile
import threading
import time
import uuid
from dataclasses import dataclass, field

import httpx
import pytest

DOCKER_MANIFEST = "application/vnd.docker.distribution.manifest.v2+json"
DOCKER_CONFIG = "application/vnd.docker.container.image.v1+json"
DOCKER_LAYER = "application/vnd.docker.image.rootfs.diff.tar.gzip"
OCI_MANIFEST = "application/vnd.oci.image.manifest.v1+json"
OCI_CONFIG = "application/vnd.oci.image.config.v1+json"
OCI_LAYER = "application/vnd.oci.image.layer.v1.tar+gzip"
OCI_INDEX = "application/vnd.oci.image.index.v1+json"
REGISTRY_USER = "fleet"
REGISTRY_PASSWORD = "registry_password"


def free_port() -> int:
    """A port nothing listens on right now (the OS picks it)."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def _die_with_parent() -> None:
    """In the child, before exec: a test run that is killed (not stopped)
    must not leave its registry running."""
    PR_SET_PDEATHSIG = 1
    ctypes.CDLL("libc.so.6", use_errno=True).prctl(PR_SET_PDEATHSIG, signal.SIGTERM)


def sha256_digest(body: bytes) -> str:
    return "sha256:" + hashlib.sha256(body).hexdigest()


class RegistryServer:
    """One `docker-registry serve` process; `host` is `127.0.0.1:<port>`."""

    def __init__(self, *, htpasswd: bool = False):
        self.directory = tempfile.mkdtemp(prefix="fleet-registry-")
        self.port = free_port()
        self.host = f"127.0.0.1:{self.port}"
        self.auth = (REGISTRY_USER, REGISTRY_PASSWORD) if htpasswd else None
        config = self._write_config(htpasswd)
        self.log = open(os.path.join(self.directory, "registry.log"), "wb")
        self.process = subprocess.Popen(
            [shutil.which("docker-registry") or "docker-registry", "serve", config],
            stdout=self.log,
            stderr=subprocess.STDOUT,
            preexec_fn=_die_with_parent,
        )
        self._wait_until_up()
        self.http = httpx.Client(base_url=f"http://{self.host}", auth=self.auth, timeout=10)

    def _write_config(self, htpasswd: bool) -> str:
        config = {
            "version": 0.1,
            "log": {"level": "warn"},
            "storage": {"filesystem": {"rootdirectory": os.path.join(self.directory, "data")}},
            "http": {"addr": self.host, "secret": uuid.uuid4().hex},
        }
        if htpasswd:
            path = os.path.join(self.directory, "htpasswd")
            line = subprocess.run(
                ["htpasswd", "-Bbn", REGISTRY_USER, REGISTRY_PASSWORD],
                check=True,
                capture_output=True,
                text=True,
            ).stdout.strip()
            with open(path, "w") as file:
                file.write(line + "\n")
            config["auth"] = {"htpasswd": {"realm": "fleet-tests", "path": path}}
        path = os.path.join(self.directory, "config.yml")
        # JSON is YAML: no YAML writer needed.
        with open(path, "w") as file:
            json.dump(config, file)
        return path

    def _wait_until_up(self) -> None:
        deadline = time.monotonic() + 20
        while time.monotonic() < deadline:
            if self.process.poll() is not None:
                raise RuntimeError(f"docker-registry exited: see {self.log.name}")
            try:
                httpx.get(f"http://{self.host}/v2/", timeout=1)
                return
            except httpx.HTTPError:
                time.sleep(0.05)
        raise RuntimeError("docker-registry did not start within 20 s")

    def stop(self) -> None:
        self.process.terminate()
        try:
            self.process.wait(timeout=10)
        except subprocess.TimeoutExpired:
            self.process.kill()
        self.http.close()
        self.log.close()
        shutil.rmtree(self.directory, ignore_errors=True)

    # --- pushing through the HTTP API --------------------------------------

    def push_blob(self, name: str, body: bytes) -> str:
        digest = sha256_digest(body)
        started = self.http.post(f"/v2/{name}/blobs/uploads/")
        assert started.status_code == 202, started.text
        location = httpx.URL(f"http://{self.host}").join(started.headers["Location"])
        done = self.http.put(
            location.copy_merge_params({"digest": digest}),
            content=body,
            headers={"Content-Type": "application/octet-stream"},
        )
        assert done.status_code == 201, done.text
        return digest

    def push_manifest(self, name: str, reference: str, manifest: dict, media_type: str) -> str:
        body = json.dumps(manifest, sort_keys=True).encode()
        answer = self.http.put(
            f"/v2/{name}/manifests/{reference}", content=body, headers={"Content-Type": media_type}
        )
        assert answer.status_code == 201, answer.text
        digest = sha256_digest(body)
        assert answer.headers["Docker-Content-Digest"] == digest
        return digest

    def push_image(self, name: str, tag: str, *, oci: bool = False, content: bytes | None = None) -> str:
        """A single-platform image (one layer of random or given bytes); returns
        its manifest digest."""
        manifest, media_type = self._image_manifest(name, oci=oci, content=content)
        return self.push_manifest(name, tag, manifest, media_type)

    def push_index(self, name: str, tag: str, platforms=("amd64", "arm64")) -> str:
        """An OCI index of one OCI image per platform; returns the index digest."""
        entries = []
        for architecture in platforms:
            manifest, media_type = self._image_manifest(name, oci=True, architecture=architecture)
            body = json.dumps(manifest, sort_keys=True).encode()
            digest = self.push_manifest(name, sha256_digest(body), manifest, media_type)
            entries.append(
                {
                    "mediaType": media_type,
                    "digest": digest,
                    "size": len(body),
                    "platform": {"architecture": architecture, "os": "linux"},
                }
            )
        index = {"schemaVersion": 2, "mediaType": OCI_INDEX, "manifests": entries}
        return self.push_manifest(name, tag, index, OCI_INDEX)

    def _image_manifest(self, name, *, oci, content=None, architecture="amd64"):
        layer = content if content is not None else os.urandom(64)
        config = json.dumps(
            {"architecture": architecture, "os": "linux",
             "rootfs": {"type": "layers", "diff_ids": [sha256_digest(layer)]}}
        ).encode()
        config_digest, layer_digest = self.push_blob(name, config), self.push_blob(name, layer)
        media_type, config_type, layer_type = (
            (OCI_MANIFEST, OCI_CONFIG, OCI_LAYER) if oci else (DOCKER_MANIFEST, DOCKER_CONFIG, DOCKER_LAYER)
        )
        manifest = {
            "schemaVersion": 2,
            "mediaType": media_type,
            "config": {"mediaType": config_type, "digest": config_digest, "size": len(config)},
            "layers": [{"mediaType": layer_type, "digest": layer_digest, "size": len(layer)}],
        }
        return manifest, media_type


@dataclass
class RegistryFront:
    """An HTTP server in front of an open RegistryServer.

    `bearer`: wants `Authorization: Bearer <token>` and sends the token
    challenge; its `/token` endpoint hands out the token for Basic
    credentials `fleet` / `registry_password`. `tag_page_size`: serves tag
    lists in pages of that many, linked by `Link` headers. `strip_digest`: leaves out the
    `Docker-Content-Digest` header. `fail_with`: answers every registry
    request with that (status, headers) instead. Counts what it saw.
    """

    backend: RegistryServer
    bearer: bool = False
    strip_digest: bool = False
    fail_with: tuple[int, dict] | None = None
    # Distribution 2.8 answers every tag at once: the front pages them itself
    # (`?n=` and `?last=`, with a `Link: <...>; rel="next"` header) as
    # Docker Hub and newer registries do.
    tag_page_size: int | None = None
    token: str = field(default_factory=lambda: uuid.uuid4().hex)
    token_requests: list = field(default_factory=list)
    requests: list = field(default_factory=list)

    def __post_init__(self):
        front = self

        class Handler(http.server.BaseHTTPRequestHandler):
            def log_message(self, *args):
                pass

            def do_GET(self):
                front._handle(self)

            def do_HEAD(self):
                front._handle(self)

        self.server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.host = f"127.0.0.1:{self.server.server_address[1]}"
        self.thread = threading.Thread(target=self.server.serve_forever, daemon=True)
        self.thread.start()

    def stop(self) -> None:
        self.server.shutdown()
        self.server.server_close()

    def _handle(self, handler) -> None:
        if handler.path.startswith("/token"):
            return self._hand_out_token(handler)
        self.requests.append((handler.command, handler.path, handler.headers.get("Accept")))
        if self.fail_with:
            status, headers = self.fail_with
            return _answer(handler, status, headers, b"")
        if self.bearer and handler.headers.get("Authorization") != f"Bearer {self.token}":
            name = handler.path.split("/v2/", 1)[-1].rsplit("/manifests/", 1)[0].rsplit("/tags/", 1)[0]
            challenge = (
                f'Bearer realm="http://{self.host}/token",service="fleet-tests",'
                f'scope="repository:{name}:pull"'
            )
            return _answer(handler, 401, {"WWW-Authenticate": challenge}, b'{"errors": []}')
        if self.tag_page_size and "/tags/list" in handler.path:
            return self._tag_page(handler)
        self._forward(handler)

    def _tag_page(self, handler) -> None:
        url = httpx.URL(handler.path)
        everything = self.backend.http.get(url.path).json()
        tags = sorted(everything["tags"])
        last = url.params.get("last")
        rest = [tag for tag in tags if last is None or tag > last]
        page = rest[: self.tag_page_size]
        headers = {"Content-Type": "application/json"}
        if len(rest) > len(page):
            following = url.copy_set_param("last", page[-1]).copy_set_param("n", str(self.tag_page_size))
            # Relative, as Distribution and Docker Hub send it.
            headers["Link"] = f'<{following.raw_path.decode()}>; rel="next"'
        body = json.dumps({"name": everything["name"], "tags": page}).encode()
        _answer(handler, 200, headers, body)

    def _hand_out_token(self, handler) -> None:
        self.token_requests.append((handler.path, handler.headers.get("Authorization")))
        basic = base64.b64encode(f"{REGISTRY_USER}:{REGISTRY_PASSWORD}".encode()).decode()
        if handler.headers.get("Authorization") != f"Basic {basic}":
            return _answer(handler, 401, {}, b'{"details": "bad credentials"}')
        body = json.dumps({"token": self.token, "expires_in": 300}).encode()
        _answer(handler, 200, {"Content-Type": "application/json"}, body)

    def _forward(self, handler) -> None:
        headers = {"Accept": handler.headers.get("Accept", "*/*")}
        answer = self.backend.http.request(handler.command, handler.path, headers=headers)
        keep = {"Content-Type", "Docker-Content-Digest", "Link", "Content-Length"}
        if self.strip_digest:
            keep.discard("Docker-Content-Digest")
        relayed = {name: value for name, value in answer.headers.items() if name.title() in keep}
        body = b"" if handler.command == "HEAD" else answer.content
        _answer(handler, answer.status_code, relayed, body, keep_length=handler.command == "HEAD")


def _answer(handler, status: int, headers: dict, body: bytes, keep_length: bool = False) -> None:
    handler.send_response(status)
    for name, value in headers.items():
        if name.lower() != "content-length":
            handler.send_header(name, value)
    if keep_length and "Content-Length" in {name.title() for name in headers}:
        handler.send_header("Content-Length", headers.get("Content-Length") or headers.get("content-length"))
    else:
        handler.send_header("Content-Length", str(len(body)))
    handler.end_headers()
    if body:
        handler.wfile.write(body)


def unique_name(prefix: str = "acme/app") -> str:
    """A repository no other test pushes to."""
    return f"{prefix}-{uuid.uuid4().hex[:10]}"


@pytest.fixture(scope="session")
def registry():
    server = RegistryServer()
    yield server
    server.stop()


@pytest.fixture(scope="session")
def auth_registry():
    server = RegistryServer(htpasswd=True)
    yield server
    server.stop()


@pytest.fixture
def registry_front(registry):
    """Factory of RegistryFront servers over `registry`, stopped after the test."""
    fronts = []

    def make(**options) -> RegistryFront:
        front = RegistryFront(registry, **options)
        fronts.append(front)
        return front

    yield make
    for front in fronts:
        front.stop()


@pytest.fixture
def registry_settings(settings, registry):
    """Point REGISTRY_* at the test registries: plain http, credentials for
    the htpasswd one and for any front added with `allow(host)`."""

    class Configure:
        def allow(self, host: str, credentials: bool = False) -> str:
            settings.REGISTRY_INSECURE_HOSTS = [*settings.REGISTRY_INSECURE_HOSTS, host]
            if credentials:
                settings.REGISTRY_CREDENTIALS = {
                    **settings.REGISTRY_CREDENTIALS,
                    host: {"username": REGISTRY_USER, "password": REGISTRY_PASSWORD},
                }
            return host

    settings.REGISTRY_RESOLVE_DIGESTS = True
    settings.REGISTRY_INSECURE_HOSTS = [registry.host]
    settings.REGISTRY_CREDENTIALS = {}
    settings.REGISTRY_TIMEOUT_SECONDS = 5
    # Docker Hub-shaped pushes (docker.io/...) are resolved here, as against a mirror.
    settings.REGISTRY_DOCKER_HUB_HOST = registry.host
    return Configure()
