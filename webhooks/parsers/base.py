"""What every registry parser returns, and the checks they share.

A parser module exposes ``NAME``, ``SHAPE`` (how its body is recognized, for
the 400 that lists accepted shapes), ``detect(headers, payload) -> bool`` and
``parse(headers, payload) -> ParsedDelivery``.  ``payload`` is whatever
``json.loads`` returned, so parsers check every type they rely on: bodies come
from the network and a wrong type must become a 400, never an exception.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from typing import Any

from devices.references import (
    InvalidReference,
    normalize_repository,
    validate_digest,
    validate_tag,
)

# A registry's own delivery id becomes part of a unique key; real ones are
# GUIDs, so anything far longer or with spaces is not from a registry.
MAX_DELIVERY_ID_LENGTH = 128


class InvalidPayload(ValueError):
    """The body cannot be accepted; ``code`` and ``str(self)`` form the 400."""

    def __init__(self, code: str, detail: str):
        super().__init__(detail)
        self.code = code


@dataclass(frozen=True)
class Push:
    """One pushed tag: ``image`` is a normalized repository, ``digest`` may be None."""

    image: str
    tag: str
    digest: str | None = None

    def as_dict(self) -> dict[str, str | None]:
        return {"image": self.image, "tag": self.tag, "digest": self.digest}


@dataclass(frozen=True)
class ParsedDelivery:
    """A delivery reduced to what matters: its pushes, or why it is ignored."""

    registry: str
    pushes: tuple[Push, ...] = ()
    delivery_id: str | None = None
    ignored_reason: str | None = None

    def __post_init__(self) -> None:
        # Callers rely on exactly one of the two being set.
        if bool(self.pushes) == bool(self.ignored_reason):
            raise ValueError("a parsed delivery has either pushes or an ignored reason")


def delivery(
    registry: str,
    pushes: Iterable[Push],
    *,
    nothing_pushed: str,
    delivery_id: str | None = None,
) -> ParsedDelivery:
    """A delivery of ``pushes`` (exact repeats dropped), or ignored when there are none."""
    unique = tuple(dict.fromkeys(pushes))
    if not unique:
        return ParsedDelivery(registry, delivery_id=delivery_id, ignored_reason=nothing_pushed)
    return ParsedDelivery(registry, pushes=unique, delivery_id=delivery_id)


def ignored(registry: str, reason: str, *, delivery_id: str | None = None) -> ParsedDelivery:
    return ParsedDelivery(registry, delivery_id=delivery_id, ignored_reason=reason)


def make_push(registry: str, *, image: object, tag: object, digest: object = None) -> Push:
    """Validate and normalize one push; a bad image, tag or digest fails the delivery.

    The whole delivery fails rather than the one push because a registry that
    sends a malformed reference is misconfigured or not a registry at all, and
    a partial success would hide that.
    """
    # The reference functions refuse non-strings themselves, with a reason.
    try:
        repository = normalize_repository(image)
        checked_tag = validate_tag(tag)
        checked_digest = None if digest is None else validate_digest(digest)
    except InvalidReference as exc:
        raise InvalidPayload("invalid_push", f"{registry} push: {exc}") from None
    return Push(repository, checked_tag, checked_digest)


def obj(value: Any, where: str, registry: str) -> Mapping[str, Any]:
    if not isinstance(value, dict):
        raise _wrong_type(registry, where, "an object", value)
    return value


def arr(value: Any, where: str, registry: str) -> list[Any]:
    if not isinstance(value, list):
        raise _wrong_type(registry, where, "a list", value)
    return value


def text(value: Any, where: str, registry: str) -> str:
    if not isinstance(value, str):
        raise _wrong_type(registry, where, "a string", value)
    return value


def optional_text(value: Any, where: str, registry: str) -> str | None:
    return None if value is None else text(value, where, registry)


def short(value: object, limit: int = 64) -> str:
    """``repr`` of a value from the body, cut so a reason stays one readable line."""
    shown = repr(value)
    return shown if len(shown) <= limit else shown[: limit - 3] + "..."


def host_and_path(host: str, path: str, where: str, registry: str) -> str:
    """``host/path``, refusing a host that would silently become part of the path."""
    if not host or "/" in host:
        raise InvalidPayload(
            "invalid_payload", f"{registry}: {where} {short(host)} is not a registry host."
        )
    return f"{host}/{path}"


def delivery_id_from(value: str | None, header: str, registry: str) -> str | None:
    if value is None:
        return None
    plain = value.isascii() and value.isprintable() and " " not in value
    if not (plain and 0 < len(value) <= MAX_DELIVERY_ID_LENGTH):
        raise InvalidPayload(
            "invalid_payload",
            f"{registry}: header {header} must be 1 to {MAX_DELIVERY_ID_LENGTH} printable "
            "ASCII characters without spaces.",
        )
    return value


_JSON_TYPE_NAMES = {
    dict: "an object",
    list: "a list",
    str: "a string",
    int: "a number",
    float: "a number",
    bool: "a boolean",
    type(None): "null",
}


def _wrong_type(registry: str, where: str, expected: str, value: Any) -> InvalidPayload:
    got = _JSON_TYPE_NAMES.get(type(value), type(value).__name__)
    return InvalidPayload("invalid_payload", f"{registry}: {where} must be {expected}, got {got}.")
