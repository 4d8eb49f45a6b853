"""GitHub Packages (GHCR): ``package`` and ``registry_package`` webhook events.

The event name comes from ``X-GitHub-Event``; without the header a body with
a ``package`` or ``registry_package`` object is taken as that event, so a
relay that drops headers still works.  Only container packages count, on
``ghcr.io/<owner>/<name>``, lower-cased as GHCR does.  Each published version
carries one tag; multi-platform pushes also announce their per-platform
manifests as untagged versions, which are ignored.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from .base import (
    ParsedDelivery,
    delivery_id_from,
    host_and_path,
    ignored,
    make_push,
    obj,
    optional_text,
    short,
    text,
)

NAME = "github"
SHAPE = (
    "GitHub 'package' or 'registry_package' event (header X-GitHub-Event, or an object "
    "with 'action' and 'package' or 'registry_package')"
)

HOST = "ghcr.io"
PACKAGE_EVENTS = ("package", "registry_package")
# "updated" also exists, but a container push arrives as a new published
# version; re-rolling out on an update of an old version's metadata would
# restart a rollout of a tag the fleet already moves to.
PUSH_ACTIONS = ("published",)


def detect(headers: Mapping[str, str], payload: Any) -> bool:
    if headers.get("X-GitHub-Event") is not None:
        return True
    return (
        isinstance(payload, dict)
        and "action" in payload
        and any(event in payload for event in PACKAGE_EVENTS)
    )


def parse(headers: Mapping[str, str], payload: Any) -> ParsedDelivery:
    delivery_id = delivery_id_from(headers.get("X-GitHub-Delivery"), "X-GitHub-Delivery", NAME)
    event = headers.get("X-GitHub-Event") or _event_from_body(payload)
    if event == "ping":
        return ignored(NAME, "GitHub ping: the webhook is set up.", delivery_id=delivery_id)
    if event not in PACKAGE_EVENTS:
        return ignored(
            NAME, f"GitHub event {short(event)} is not a package event.", delivery_id=delivery_id
        )
    body = obj(payload, "the body", NAME)
    action = text(body.get("action"), "'action'", NAME)
    if action not in PUSH_ACTIONS:
        return ignored(
            NAME, f"GitHub package action {short(action)} is not a push.", delivery_id=delivery_id
        )
    package = obj(body.get(event), f"'{event}'", NAME)
    package_type = _package_type(package, event)
    if package_type != "container":
        reason = f"GitHub package type {short(package_type)} is not a container."
        return ignored(NAME, reason, delivery_id=delivery_id)
    version = obj(package.get("package_version"), f"'{event}.package_version'", NAME)
    metadata = obj(version.get("container_metadata"), "'package_version.container_metadata'", NAME)
    tag_info = obj(metadata.get("tag"), "'container_metadata.tag'", NAME)
    tag = optional_text(tag_info.get("name"), "'container_metadata.tag.name'", NAME)
    if not tag:
        return ignored(
            NAME,
            "The package version has no tag (a per-platform manifest of a multi-platform push).",
            delivery_id=delivery_id,
        )
    image = host_and_path(HOST, f"{_owner(package, event)}/{_name(package, event)}", "host", NAME)
    digest = optional_text(tag_info.get("digest"), "'container_metadata.tag.digest'", NAME) or None
    # normalize_repository lower-cases, after refusing non-ASCII (see references).
    push = make_push(NAME, image=image, tag=tag, digest=digest)
    return ParsedDelivery(NAME, pushes=(push,), delivery_id=delivery_id)


def _event_from_body(payload: Any) -> str | None:
    if isinstance(payload, dict):
        for event in PACKAGE_EVENTS:
            if event in payload:
                return event
    return None


def _package_type(package: Mapping[str, Any], event: str) -> str:
    # "package_type" in both events; "ecosystem" in newer package payloads.
    for key in ("package_type", "ecosystem"):
        value = optional_text(package.get(key), f"'{event}.{key}'", NAME)
        if value:
            return value.lower()
    return ""


def _owner(package: Mapping[str, Any], event: str) -> str:
    namespace = optional_text(package.get("namespace"), f"'{event}.namespace'", NAME)
    if namespace:
        return namespace
    owner = obj(package.get("owner"), f"'{event}.owner'", NAME)
    return text(owner.get("login"), f"'{event}.owner.login'", NAME)


def _name(package: Mapping[str, Any], event: str) -> str:
    return text(package.get("name"), f"'{event}.name'", NAME)
