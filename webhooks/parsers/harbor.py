"""Harbor: ``{"type": "PUSH_ARTIFACT", "event_data": {"resources": [...], "repository": {...}}}``.

Harbor 1.x called the same event ``pushImage``.  The host comes from each
resource's ``resource_url`` (``hub.harbor.com/project/repo:tag``), the path
from ``repository.repo_full_name``.  Other event types (pulls, deletes,
scans, quota) are ignored.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from .base import (
    ParsedDelivery,
    Push,
    arr,
    delivery,
    host_and_path,
    ignored,
    make_push,
    obj,
    optional_text,
    short,
    text,
)

NAME = "harbor"
SHAPE = "Harbor event (an object with 'type' and 'event_data')"

PUSH_TYPES = ("push_artifact", "pushimage")


def detect(headers: Mapping[str, str], payload: Any) -> bool:
    return isinstance(payload, dict) and "type" in payload and "event_data" in payload


def parse(headers: Mapping[str, str], payload: Any) -> ParsedDelivery:
    event_type = text(payload["type"], "'type'", NAME)
    if event_type.lower() not in PUSH_TYPES:
        return ignored(NAME, f"Harbor event type {short(event_type)} is not a push.")
    event_data = obj(payload["event_data"], "'event_data'", NAME)
    repository = _repository(obj(event_data.get("repository"), "'event_data.repository'", NAME))
    resources = arr(event_data.get("resources"), "'event_data.resources'", NAME)
    pushes = [
        push
        for index, resource in enumerate(resources)
        if (push := _push(obj(resource, f"'resources[{index}]'", NAME), repository, index))
        is not None
    ]
    return delivery(NAME, pushes, nothing_pushed="The Harbor event pushed no tag.")


def _repository(repository: Mapping[str, Any]) -> str:
    full_name = optional_text(repository.get("repo_full_name"), "'repository.repo_full_name'", NAME)
    if full_name:
        return full_name
    namespace = text(repository.get("namespace"), "'repository.namespace'", NAME)
    name = text(repository.get("name"), "'repository.name'", NAME)
    return f"{namespace}/{name}"


def _push(resource: Mapping[str, Any], repository: str, index: int) -> Push | None:
    where = f"'resources[{index}]"
    tag = optional_text(resource.get("tag"), f"{where}.tag'", NAME)
    if not tag:
        # A push by digest: nothing a device could be told to run by tag.
        return None
    resource_url = text(resource.get("resource_url"), f"{where}.resource_url'", NAME)
    host = resource_url.split("/", 1)[0]
    image = host_and_path(host, repository, f"host of {where}.resource_url'", NAME)
    digest = optional_text(resource.get("digest"), f"{where}.digest'", NAME) or None
    return make_push(NAME, image=image, tag=tag, digest=digest)
