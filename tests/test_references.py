"""Table-driven tests for devices.references (pure functions, no Django)."""

import fnmatch

import pytest

from devices.references import (
    ImageReference,
    InvalidReference,
    normalize_image_pattern,
    normalize_repository,
    parse_reference,
    validate_digest,
    validate_tag,
)

HEX = "0123456789abcdef" * 4  # 64 lower-case hex digits
DIGEST = "sha256:" + HEX

# (input, repository, tag, digest)
VALID_REFERENCES = [
    ("nginx", "docker.io/library/nginx", None, None),
    ("nginx:latest", "docker.io/library/nginx", "latest", None),
    ("library/nginx:1.25", "docker.io/library/nginx", "1.25", None),
    ("docker.io/library/nginx", "docker.io/library/nginx", None, None),
    ("docker.io/nginx", "docker.io/library/nginx", None, None),
    ("index.docker.io/library/nginx", "docker.io/library/nginx", None, None),
    ("index.docker.io/nginx:1", "docker.io/library/nginx", "1", None),
    ("registry-1.docker.io/iotistic/agent:v2", "docker.io/iotistic/agent", "v2", None),
    ("Docker.IO/Library/Nginx", "docker.io/library/nginx", None, None),
    ("iotistic/agent", "docker.io/iotistic/agent", None, None),
    ("Iotistic/Agent:Edge", "docker.io/iotistic/agent", "Edge", None),
    ("ghcr.io/Org/App:tag", "ghcr.io/org/app", "tag", None),
    ("GHCR.IO/org/app", "ghcr.io/org/app", None, None),
    ("ghcr.io/app", "ghcr.io/app", None, None),
    ("registry:5000/a/b@" + DIGEST, "registry:5000/a/b", None, DIGEST),
    ("registry:5000/a/b:1.0@" + DIGEST, "registry:5000/a/b", "1.0", DIGEST),
    ("localhost/foo", "localhost/foo", None, None),
    ("LocalHost/foo", "localhost/foo", None, None),
    ("localhost:5000/foo:bar", "localhost:5000/foo", "bar", None),
    ("localhost", "docker.io/library/localhost", None, None),
    ("quay.io/a/b/c:tag@" + DIGEST, "quay.io/a/b/c", "tag", DIGEST),
    (
        "my.registry.example.com:443/team/svc@" + DIGEST,
        "my.registry.example.com:443/team/svc",
        None,
        DIGEST,
    ),
    ("192.168.1.10:5000/x", "192.168.1.10:5000/x", None, None),
    ("192.168.1.10:5000/x:y", "192.168.1.10:5000/x", "y", None),
    ("[::1]:5000/foo:bar", "[::1]:5000/foo", "bar", None),
    ("[FE80::1]/foo", "[fe80::1]/foo", None, None),
    ("nginx:1.25.3-alpine_slim", "docker.io/library/nginx", "1.25.3-alpine_slim", None),
    ("nginx:_private", "docker.io/library/nginx", "_private", None),
    ("nginx:V1.0-RC.1", "docker.io/library/nginx", "V1.0-RC.1", None),
    ("nginx:" + "t" * 128, "docker.io/library/nginx", "t" * 128, None),
    ("nginx@" + DIGEST, "docker.io/library/nginx", None, DIGEST),
    ("nginx@sha256:" + HEX.upper(), "docker.io/library/nginx", None, DIGEST),
    ("a/b.c/d_e/f__g/h---i", "docker.io/a/b.c/d_e/f__g/h---i", None, None),
    ("registry:5000", "docker.io/library/registry", "5000", None),  # no '/': a tag, as in docker
    ("host-name.io/x-y/z", "host-name.io/x-y/z", None, None),
    ("0/1", "docker.io/0/1", None, None),
    ("docker.io/team/" + "a" * 240, "docker.io/team/" + "a" * 240, None, None),  # exactly 255
    ("index.docker.io/library/" + "a" * 237, "docker.io/library/" + "a" * 237, None, None),
]


@pytest.mark.parametrize(("text", "repository", "tag", "digest"), VALID_REFERENCES)
def test_it_parses_and_normalizes_valid_references(text, repository, tag, digest):
    ref = parse_reference(text)
    assert ref == ImageReference(repository=repository, tag=tag, digest=digest)


@pytest.mark.parametrize(("text", "repository", "tag", "digest"), VALID_REFERENCES)
def test_it_round_trips_through_str(text, repository, tag, digest):
    ref = parse_reference(text)
    assert parse_reference(str(ref)) == ref


@pytest.mark.parametrize(
    ("ref", "expected"),
    [
        (ImageReference("docker.io/library/nginx", None, None), "docker.io/library/nginx"),
        (ImageReference("docker.io/library/nginx", "1.25", None), "docker.io/library/nginx:1.25"),
        (ImageReference("ghcr.io/org/app", None, DIGEST), "ghcr.io/org/app@" + DIGEST),
        (ImageReference("registry:5000/a/b", "v1", DIGEST), "registry:5000/a/b:v1@" + DIGEST),
    ],
)
def test_it_formats_references_with_the_parts_present(ref, expected):
    assert str(ref) == expected


@pytest.mark.parametrize(
    ("text", "registry"),
    [
        ("nginx", "docker.io"),
        ("index.docker.io/a/b", "docker.io"),
        ("registry:5000/a/b", "registry:5000"),
        ("GHCR.io/Org/App", "ghcr.io"),
        ("localhost/foo", "localhost"),
        ("[::1]:5000/foo", "[::1]:5000"),
    ],
)
def test_it_exposes_the_registry(text, registry):
    assert parse_reference(text).registry == registry


def test_it_makes_references_immutable():
    ref = parse_reference("nginx")
    with pytest.raises(AttributeError):
        ref.tag = "x"  # type: ignore[misc]


INVALID_REFERENCES = [
    "",
    " ",
    "nginx ",
    " nginx",
    "foo bar",
    "nginx\n",
    "nginx\t:latest",
    "nginx:",
    "nginx:@" + DIGEST,
    "nginx@",
    "nginx@sha256:abc",
    "nginx@sha256:" + HEX[:63],
    "nginx@sha256:" + HEX + "0",
    "nginx@sha256:" + HEX[:63] + "g",
    "nginx@SHA256:" + HEX,
    "nginx@md5:" + "a" * 32,
    "nginx@sha512:" + "a" * 128,
    "nginx@" + HEX,
    "nginx@" + DIGEST + "@" + DIGEST,
    "@" + DIGEST,
    ":latest",
    "http://x/y",
    "https://ghcr.io/org/app:1",
    "a//b",
    "a/",
    "/a",
    "/",
    "nginx:.hidden",
    "nginx:-dash",
    "nginx:tag!",
    "nginx:a/b",
    "nginx:" + "t" * 129,
    "nginx:1:2",
    "-nginx",
    "nginx-",
    "ngi..nx",
    "a/b_c_",
    "my_registry.io:port/x",
    "reg.io:5000:6000/x",
    "-bad.io/x",
    "bad-.io/x",
    "[::1/x",
    "[::g]/x",
    "ngïnx",
    "\u212aube/app",  # KELVIN SIGN lower-cases to ASCII 'k'
    "docker.io/team/" + "a" * 241,  # 256 chars normalized
    "a" * 250,  # 250 raw, 267 after docker.io/library/
    "a" * 2000,
]


@pytest.mark.parametrize("text", INVALID_REFERENCES)
def test_it_rejects_invalid_references(text):
    with pytest.raises(InvalidReference) as excinfo:
        parse_reference(text)
    assert isinstance(excinfo.value, ValueError)
    assert str(excinfo.value).startswith(f"{text!r} is not a valid image reference: ")


@pytest.mark.parametrize("value", [None, 42, b"nginx", ["nginx"]])
def test_it_rejects_non_string_input(value):
    functions = (
        parse_reference,
        normalize_repository,
        validate_tag,
        validate_digest,
        normalize_image_pattern,
    )
    for function in functions:
        with pytest.raises(InvalidReference, match="expected a string"):
            function(value)


@pytest.mark.parametrize(
    ("text", "fragment"),
    [
        ("", "it is empty"),
        ("foo bar", "whitespace"),
        ("nginx:", "':' must be followed by a tag"),
        ("http://x/y", "scheme"),
        ("a//b", "'//'"),
        ("a/", "ends with '/'"),
        ("nginx:" + "t" * 129, "at most 128"),
        ("nginx@sha256:" + HEX[:63], "needs 64 hex digits, got 63"),
        ("nginx@md5:" + "a" * 32, "not supported"),
        ("a" * 250, "more than the 255 allowed"),
        ("Foo/Ba$r", "path component 'ba$r'"),
    ],
)
def test_it_explains_what_is_wrong(text, fragment):
    with pytest.raises(InvalidReference) as excinfo:
        parse_reference(text)
    assert fragment in str(excinfo.value)


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("nginx", "docker.io/library/nginx"),
        ("Index.Docker.IO/Library/Nginx", "docker.io/library/nginx"),
        ("registry-1.docker.io/iotistic/agent", "docker.io/iotistic/agent"),
        ("ghcr.io/Org/App", "ghcr.io/org/app"),
        ("registry:5000/a/b", "registry:5000/a/b"),
        ("localhost:5000/foo", "localhost:5000/foo"),
    ],
)
def test_it_normalizes_bare_repositories(text, expected):
    assert normalize_repository(text) == expected


@pytest.mark.parametrize(
    ("text", "fragment"),
    [
        ("nginx:1.25", "includes a tag ('1.25')"),
        ("registry:5000/a/b:v1", "includes a tag ('v1')"),
        ("nginx@" + DIGEST, "includes a digest"),
        ("nginx:1@" + DIGEST, "includes a digest"),
        ("registry:5000", "includes a tag ('5000')"),
        ("a//b", "'//'"),
        ("", "empty"),
    ],
)
def test_it_rejects_repositories_with_extras(text, fragment):
    with pytest.raises(InvalidReference) as excinfo:
        normalize_repository(text)
    assert isinstance(excinfo.value, ValueError)
    assert str(excinfo.value).startswith(f"{text!r} is not a valid repository name: ")
    assert fragment in str(excinfo.value)


@pytest.mark.parametrize(
    "tag",
    ["latest", "1.25", "v1.2.3-rc.1", "Mixed_Case", "_x", "0", "a" * 128, "a-b.c_d", "UPPER"],
)
def test_it_accepts_valid_tags_unchanged(tag):
    assert validate_tag(tag) == tag


@pytest.mark.parametrize(
    "tag",
    ["", " ", "v 1", ".x", "-x", "a" * 129, "a:b", "a/b", "a@b", "tag!", "tä"],
)
def test_it_rejects_invalid_tags(tag):
    with pytest.raises(InvalidReference) as excinfo:
        validate_tag(tag)
    assert isinstance(excinfo.value, ValueError)
    assert str(excinfo.value).startswith(f"{tag!r} is not a valid image tag: ")


@pytest.mark.parametrize(
    ("digest", "expected"),
    [
        (DIGEST, DIGEST),
        ("sha256:" + HEX.upper(), DIGEST),
        ("sha256:" + "A" * 64, "sha256:" + "a" * 64),
        ("sha256:" + "0" * 64, "sha256:" + "0" * 64),
    ],
)
def test_it_normalizes_valid_digests(digest, expected):
    assert validate_digest(digest) == expected


@pytest.mark.parametrize(
    "digest",
    [
        "",
        "sha256",
        "sha256:",
        "sha256:abc",
        "sha256:" + HEX[:63],
        "sha256:" + HEX + "a",
        "sha256:" + HEX[:63] + "z",
        "SHA256:" + HEX,
        "sha512:" + "a" * 128,
        "md5:" + "a" * 32,
        HEX,
        ":" + HEX,
        " sha256:" + HEX,
        "sha256:" + HEX + " ",
        "sha256:" + HEX + "\n",
        "sha256::" + HEX,
    ],
)
def test_it_rejects_invalid_digests(digest):
    with pytest.raises(InvalidReference) as excinfo:
        validate_digest(digest)
    assert isinstance(excinfo.value, ValueError)
    assert str(excinfo.value).startswith(f"{digest!r} is not a valid image digest: ")


@pytest.mark.parametrize(
    ("pattern", "expected"),
    [
        ("iotistic/*:*", "docker.io/iotistic/*:*"),
        ("nginx:*", "docker.io/library/nginx:*"),
        ("nginx", "docker.io/library/nginx:*"),
        ("ghcr.io/Acme/*", "ghcr.io/acme/*:*"),
        ("GHCR.IO/Acme/App:V1.*", "ghcr.io/acme/app:V1.*"),
        ("registry:5000/a/*:v1.*", "registry:5000/a/*:v1.*"),
        ("registry:5000/a/*", "registry:5000/a/*:*"),
        ("index.docker.io/x/y:*", "docker.io/x/y:*"),
        ("registry-1.docker.io/nginx:1.?", "docker.io/library/nginx:1.?"),
        ("docker.io/library/nginx:[0-9]*", "docker.io/library/nginx:[0-9]*"),
        ("localhost:5000/*", "localhost:5000/*:*"),
        ("*", "*:*"),
        ("*:*", "*:*"),
        ("*/App:*", "*/app:*"),
        ("*/App:Edge", "*/app:Edge"),
        ("?cr.io/Org/*", "?cr.io/org/*:*"),
        ("[gq]*.io/Org/app:v*", "[gq]*.io/org/app:v*"),
        ("*.Example.com/App", "*.example.com/app:*"),
        ("ghcr.*/Org/app", "ghcr.*/org/app:*"),
        ("Iotistic/*", "docker.io/iotistic/*:*"),
        ("ngin*:1.*", "docker.io/library/ngin*:1.*"),
    ],
)
def test_it_normalizes_image_patterns(pattern, expected):
    assert normalize_image_pattern(pattern) == expected


@pytest.mark.parametrize(
    "pattern",
    [
        "",
        " ",
        "nginx :*",
        "iotistic/* ",
        "nginx:",
        "a//b:*",
        "a/:*",
        "/a",
        "nginx@" + DIGEST,
        "http://x/*",
        "ngïnx:*",
    ],
)
def test_it_rejects_invalid_image_patterns(pattern):
    with pytest.raises(InvalidReference) as excinfo:
        normalize_image_pattern(pattern)
    assert isinstance(excinfo.value, ValueError)
    assert str(excinfo.value).startswith(f"{pattern!r} is not a valid image pattern: ")


@pytest.mark.parametrize(
    ("pattern", "reference", "matches"),
    [
        ("iotistic/*:*", "iotistic/agent:1.0", True),
        ("iotistic/*:*", "ghcr.io/iotistic/agent:1.0", False),
        ("nginx:1.*", "index.docker.io/library/nginx:1.25", True),
        ("nginx", "nginx:latest", True),
        ("ghcr.io/Acme/*", "ghcr.io/ACME/App:Edge", True),
        ("*/app:*", "registry:5000/team/app:v1", True),
        ("registry:5000/a/*:v1.*", "registry:5000/a/b:v2.0", False),
        ("nginx:V1", "nginx:v1", False),  # tags are case-sensitive
    ],
)
def test_it_matches_patterns_against_normalized_references(pattern, reference, matches):
    ref = parse_reference(reference)
    subject = f"{ref.repository}:{ref.tag}"
    assert fnmatch.fnmatchcase(subject, normalize_image_pattern(pattern)) is matches
