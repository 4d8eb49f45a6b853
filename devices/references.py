"""Container image references, parsed and normalized at every edge.

The grammar is the CNCF distribution reference grammar, transcribed from
``regexp.go`` in https://github.com/distribution/reference::

    reference      := name [ ":" tag ] [ "@" digest ]
    name           := [ domain "/" ] path-component { "/" path-component }
    domain         := host [ ":" port ]
    host           := domain-name | "[" ipv6 "]"
    domain-name    := domain-component { "." domain-component }
    path-component := [a-z0-9]+ ( ( [._] | "__" | [-]+ ) [a-z0-9]+ )*
    tag            := [\\w][\\w.-]{0,127}
    digest         := algorithm ":" hex{32,}

Normalization follows docker's ``ParseNormalizedNamed`` so that the same
image always yields the same string, whichever way a user spelled it:

* the first path component is a registry host only if it contains ``.`` or
  ``:`` or is ``localhost``; otherwise the host is ``docker.io``;
* ``index.docker.io`` and ``registry-1.docker.io`` become ``docker.io``;
* a single-component Docker Hub name gets ``library/`` (``nginx`` ->
  ``docker.io/library/nginx``).

Deliberate departures from docker, for a friendlier control plane:

* upper case in the host or path is accepted and lower-cased (GHCR owners are
  often mixed case and GHCR lower-cases them); docker rejects it.  Tags keep
  their case because registries treat them case-sensitively;
* digest hex may be given in upper case and is lower-cased;
* only ``sha256`` digests are accepted (every registry we talk to uses them,
  and the rest of the code base stores ``sha256:<64 hex>``).

Python's ``\\w`` and ``str.lower`` are Unicode-aware whereas Go's are ASCII
only, so every pattern below spells out ASCII classes and non-ASCII input is
rejected before any case folding (``"\\u212a".lower()`` is an ASCII ``k``).
"""

from __future__ import annotations

import re
from dataclasses import dataclass

__all__ = [
    "InvalidReference",
    "ImageReference",
    "parse_reference",
    "normalize_repository",
    "validate_tag",
    "validate_digest",
    "normalize_image_pattern",
]

DEFAULT_REGISTRY = "docker.io"
OFFICIAL_NAMESPACE = "library"

# Spellings of Docker Hub that all mean DEFAULT_REGISTRY.
_DOCKER_HUB_ALIASES = frozenset({"docker.io", "index.docker.io", "registry-1.docker.io"})

# distribution/reference: NameTotalLengthMax, checked on the normalized name.
MAX_REPOSITORY_LENGTH = 255
MAX_TAG_LENGTH = 128
# Cheap guard run before any regex so hostile input never reaches them; no
# valid reference (255 name + 128 tag + sha256 digest) comes near it.
_MAX_INPUT_LENGTH = 1024

# Known digest algorithms and the exact hex length each one requires.  The
# general grammar allows any algorithm with >= 32 hex digits; go-digest then
# rejects unknown ones, and we only store sha256.
_DIGEST_HEX_LENGTHS = {"sha256": 64}

# --- the grammar, compiled once (ASCII classes on purpose, see docstring) ---
_DOMAIN_COMPONENT = r"(?:[a-zA-Z0-9]|[a-zA-Z0-9][a-zA-Z0-9-]*[a-zA-Z0-9])"
_DOMAIN_NAME = _DOMAIN_COMPONENT + r"(?:\." + _DOMAIN_COMPONENT + r")*"
_IPV6_ADDRESS = r"\[(?:[a-fA-F0-9:]+)\]"
_OPTIONAL_PORT = r"(?::[0-9]+)?"

_HOST_RE = re.compile(r"(?:" + _DOMAIN_NAME + "|" + _IPV6_ADDRESS + ")" + _OPTIONAL_PORT)
_PATH_COMPONENT_RE = re.compile(r"[a-z0-9]+(?:(?:[._]|__|[-]+)[a-z0-9]+)*")
_TAG_RE = re.compile(r"[A-Za-z0-9_][A-Za-z0-9_.-]{0,127}")
_DIGEST_RE = re.compile(
    r"(?P<algorithm>[A-Za-z][A-Za-z0-9]*(?:[-_+.][A-Za-z][A-Za-z0-9]*)*)"
    r":(?P<hex>[0-9a-fA-F]{32,})"
)

# fnmatch metacharacters that can open a pattern component.
_GLOB_START = ("*", "?", "[")


class InvalidReference(ValueError):
    """Raised when text is not a valid image reference, tag, digest or pattern."""


class _Problem(Exception):
    """Internal: carries the reason only; public functions add the subject."""


@dataclass(frozen=True)
class ImageReference:
    """A parsed, normalized image reference: ``repository[:tag][@digest]``."""

    repository: str  # normalized, e.g. "docker.io/library/nginx"
    tag: str | None = None
    digest: str | None = None  # "sha256:<64 lower-case hex>"

    @property
    def registry(self) -> str:
        """The registry host (and port), e.g. ``docker.io`` or ``registry:5000``."""
        # A normalized repository always starts with its host.
        return self.repository.split("/", 1)[0]

    def __str__(self) -> str:
        text = self.repository
        if self.tag is not None:
            text += ":" + self.tag
        if self.digest is not None:
            text += "@" + self.digest
        return text


# --------------------------------------------------------------------------
# public API
# --------------------------------------------------------------------------


def parse_reference(text: str) -> ImageReference:
    """Parse ``repo[:tag][@digest]`` into a normalized :class:`ImageReference`."""
    try:
        _check_text(text)
        name_and_tag, digest = _split_digest(text)
        name, tag = _split_tag(name_and_tag)
        return ImageReference(_normalize_name(name), tag, digest)
    except _Problem as problem:
        raise _invalid(text, "image reference", problem) from None


def normalize_repository(text: str) -> str:
    """Normalize a bare repository name; a tag or digest in ``text`` is an error."""
    try:
        _check_text(text)
        name_and_tag, digest = _split_digest(text)
        if digest is not None:
            raise _Problem("it includes a digest; give the repository name only")
        name, tag = _split_tag(name_and_tag)
        if tag is not None:
            raise _Problem(f"it includes a tag ({tag!r}); give the repository name only")
        return _normalize_name(name)
    except _Problem as problem:
        raise _invalid(text, "repository name", problem) from None


def validate_tag(tag: str) -> str:
    """Return ``tag`` unchanged (tags are case-sensitive) or raise InvalidReference."""
    try:
        _check_text(tag)
        return _checked_tag(tag)
    except _Problem as problem:
        raise _invalid(tag, "image tag", problem) from None


def validate_digest(digest: str) -> str:
    """Return ``digest`` with its hex lower-cased, or raise InvalidReference."""
    try:
        _check_text(digest)
        return _checked_digest(digest)
    except _Problem as problem:
        raise _invalid(digest, "image digest", problem) from None


def normalize_image_pattern(pattern: str) -> str:
    """Normalize a policy glob pattern (fnmatch ``*``, ``?``, ``[...]``).

    The caller matches the result (e.g. with ``fnmatch.fnmatchcase``) against
    ``f"{ref.repository}:{ref.tag}"`` of a normalized reference, so the
    pattern is normalized the same way:

    * a pattern with no registry host is matched as Docker Hub
      (``iotistic/*:*`` -> ``docker.io/iotistic/*:*``, ``nginx:*`` ->
      ``docker.io/library/nginx:*``); Docker Hub aliases become ``docker.io``;
    * the repository part is lower-cased, the tag part (after the last ``:``
      that follows the last ``/``) keeps its case;
    * a pattern without a tag part matches any tag: ``:*`` is appended;
    * a pattern whose first component starts with a wildcard (``*``,
      ``*/app:*``) gets no host prefix, since it may match any registry.

    Digests (``@``) are not part of the matched string and are rejected.
    """
    try:
        _check_text(pattern)
        if "@" in pattern:
            raise _Problem("patterns match 'repository:tag', so a digest ('@') cannot appear")
        repository, tag = _split_tag(pattern, validate=False)
        return _normalize_pattern_repository(repository) + ":" + ("*" if tag is None else tag)
    except _Problem as problem:
        raise _invalid(pattern, "image pattern", problem) from None


# --------------------------------------------------------------------------
# helpers: each raises _Problem with a human reason
# --------------------------------------------------------------------------


def _invalid(subject: object, kind: str, problem: _Problem) -> InvalidReference:
    # One message shape everywhere: "'x' is not a valid <kind>: <reason>".
    return InvalidReference(f"{subject!r} is not a valid {kind}: {problem}")


def _check_text(text: object) -> None:
    """Reject input no part of the grammar could ever accept."""
    if not isinstance(text, str):
        raise _Problem(f"expected a string, got {type(text).__name__}")
    if not text:
        raise _Problem("it is empty")
    if any(ch.isspace() for ch in text):
        raise _Problem("it contains whitespace")
    if not text.isascii():
        # Must precede lower(): some non-ASCII letters lower-case to ASCII.
        raise _Problem("it contains non-ASCII characters")
    if len(text) > _MAX_INPUT_LENGTH:
        raise _Problem(f"it is longer than {_MAX_INPUT_LENGTH} characters")
    if "://" in text:
        # Users paste URLs; say so rather than report a confusing tag error.
        raise _Problem("image references have no URL scheme; drop the 'scheme://' prefix")


def _split_digest(text: str) -> tuple[str, str | None]:
    """Split off ``@digest``; the digest is validated and normalized."""
    name, at, digest = text.partition("@")
    if not at:
        return text, None
    if "@" in digest:
        raise _Problem("it contains more than one '@'")
    if not name:
        raise _Problem("it has a digest but no repository name")
    return name, _checked_digest(digest)


def _split_tag(text: str, validate: bool = True) -> tuple[str, str | None]:
    """Split off ``:tag``: the last ``:`` after the last ``/`` (else it is a port)."""
    colon = text.rfind(":")
    if colon <= text.rfind("/"):
        return text, None
    name, tag = text[:colon], text[colon + 1 :]
    if not tag:
        raise _Problem("':' must be followed by a tag")
    if not name:
        raise _Problem("it has a tag but no repository name")
    return name, (_checked_tag(tag) if validate else tag)


def _checked_tag(tag: str) -> str:
    if len(tag) > MAX_TAG_LENGTH:
        raise _Problem(f"a tag may be at most {MAX_TAG_LENGTH} characters, got {len(tag)}")
    if not _TAG_RE.fullmatch(tag):
        raise _Problem(
            f"tag {tag!r} must start with a letter, digit or '_' and contain only "
            "letters, digits, '_', '.' and '-'"
        )
    return tag


def _checked_digest(digest: str) -> str:
    match = _DIGEST_RE.fullmatch(digest)
    if not match:
        raise _Problem(f"digest {digest!r} must look like 'sha256:<64 hex digits>'")
    algorithm, hex_part = match["algorithm"], match["hex"]
    expected = _DIGEST_HEX_LENGTHS.get(algorithm)
    if expected is None:
        supported = ", ".join(sorted(_DIGEST_HEX_LENGTHS))
        raise _Problem(f"digest algorithm {algorithm!r} is not supported (use {supported})")
    if len(hex_part) != expected:
        raise _Problem(f"a {algorithm} digest needs {expected} hex digits, got {len(hex_part)}")
    return f"{algorithm}:{hex_part.lower()}"


def _split_components(name: str) -> list[str]:
    """Split on ``/`` and reject empty components with a specific reason."""
    if name.startswith("/"):
        raise _Problem("it starts with '/'")
    if name.endswith("/"):
        raise _Problem("it ends with '/'")
    if "//" in name:
        raise _Problem("it contains '//' (an empty path component)")
    return name.split("/")


def _is_host(component: str) -> bool:
    # docker's splitDockerDomain rule: only these mark a registry host, so
    # "iotistic/app" is a Docker Hub namespace, not a host called iotistic.
    return "." in component or ":" in component or component.lower() == "localhost"


def _normalized_host(host: str, strict: bool = True) -> str:
    # Patterns pass strict=False: "ghcr.*" is a fine glob but not a host.
    if strict and not _HOST_RE.fullmatch(host):
        raise _Problem(f"{host!r} is not a valid registry host[:port]")
    host = host.lower()  # DNS names are case-insensitive
    return DEFAULT_REGISTRY if host in _DOCKER_HUB_ALIASES else host


def _split_host(components: list[str], strict: bool = True) -> tuple[str, list[str]]:
    """Return (normalized host, path components), defaulting to Docker Hub."""
    if len(components) > 1 and _is_host(components[0]):
        host, path = _normalized_host(components[0], strict), components[1:]
    else:
        host, path = DEFAULT_REGISTRY, components
    if host == DEFAULT_REGISTRY and len(path) == 1:
        # Official images live under "library/" on Docker Hub.
        path = [OFFICIAL_NAMESPACE, *path]
    return host, path


def _normalize_name(name: str) -> str:
    """Normalize the name part (no tag, no digest) to ``host/path``."""
    host, path = _split_host(_split_components(name))
    path = [component.lower() for component in path]
    for component in path:
        if not _PATH_COMPONENT_RE.fullmatch(component):
            raise _Problem(
                f"path component {component!r} must be letters and digits "
                "joined by single '.', '_', '__' or runs of '-'"
            )
    repository = host + "/" + "/".join(path)
    if len(repository) > MAX_REPOSITORY_LENGTH:
        raise _Problem(
            f"the normalized repository name is {len(repository)} characters, "
            f"more than the {MAX_REPOSITORY_LENGTH} allowed"
        )
    return repository


def _normalize_pattern_repository(repository: str) -> str:
    """Host-normalize and lower-case the repository part of a glob pattern."""
    components = _split_components(repository)
    if components[0].startswith(_GLOB_START):
        # "*/app" may match any registry: adding docker.io would narrow it.
        return repository.lower()
    host, path = _split_host(components, strict=False)
    return host + "/" + "/".join(path).lower()
