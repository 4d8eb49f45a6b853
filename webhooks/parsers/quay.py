"""Quay (quay.io and self-hosted): repository push notifications.

``{"docker_url": "quay.io/ns/repo", "updated_tags": ["latest", ...]}``; old
Quay versions sent ``updated_tags`` as a map of tag to legacy v1 image id.
Those ids are not manifest digests, so pushes from either form carry no
digest.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from .base import ParsedDelivery, arr, delivery, make_push, text

NAME = "quay"
SHAPE = "Quay repository push (an object with 'docker_url' and 'updated_tags')"


def detect(headers: Mapping[str, str], payload: Any) -> bool:
    return isinstance(payload, dict) and "docker_url" in payload and "updated_tags" in payload


def parse(headers: Mapping[str, str], payload: Any) -> ParsedDelivery:
    image = text(payload["docker_url"], "'docker_url'", NAME)
    updated = payload["updated_tags"]
    if isinstance(updated, dict):
        tags = list(updated)
    else:
        tags = arr(updated, "'updated_tags' (a list of tags, or the legacy map)", NAME)
    pushes = [make_push(NAME, image=image, tag=tag) for tag in tags]
    return delivery(NAME, pushes, nothing_pushed="The Quay notification updated no tag.")
