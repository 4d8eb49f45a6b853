"""CNCF Distribution (``registry:2``, and registries built on it) notifications.

An envelope ``{"events": [...]}`` carries pushes of blobs and manifests, and
pulls and deletes if the registry is configured to send them.  A manifest
push with a tag is a push we act on; blobs, pulls, deletes and pushes by
digest only are skipped.  The registry host is the one the client pushed to
(``request.host``): that is the name devices pull the image by.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any
from urllib.parse import urlsplit

from .base import (
    InvalidPayload,
    ParsedDelivery,
    Push,
    arr,
    delivery,
    host_and_path,
    make_push,
    obj,
    optional_text,
    text,
)

NAME = "distribution"
SHAPE = "CNCF Distribution notification envelope (an object with an 'events' list)"

MANIFEST_MEDIA_TYPES = frozenset(
    {
        "application/vnd.docker.distribution.manifest.v1+json",
        "application/vnd.docker.distribution.manifest.v1+prettyjws",
        "application/vnd.docker.distribution.manifest.v2+json",
        "application/vnd.docker.distribution.manifest.list.v2+json",
        "application/vnd.oci.image.manifest.v1+json",
        "application/vnd.oci.image.index.v1+json",
    }
)


def detect(headers: Mapping[str, str], payload: Any) -> bool:
    return isinstance(payload, dict) and "events" in payload


def parse(headers: Mapping[str, str], payload: Any) -> ParsedDelivery:
    events = arr(payload["events"], "'events'", NAME)
    pushes = [
        push
        for index, event in enumerate(events)
        if (push := _push(obj(event, f"'events[{index}]'", NAME), index)) is not None
    ]
    return delivery(NAME, pushes, nothing_pushed="The envelope holds no tagged manifest push.")


def _push(event: Mapping[str, Any], index: int) -> Push | None:
    where = f"'events[{index}]"
    if event.get("action") != "push":
        return None
    target = obj(event.get("target"), f"{where}.target'", NAME)
    media_type = optional_text(target.get("mediaType"), f"{where}.target.mediaType'", NAME) or ""
    # Media types may carry parameters ("...+json; charset=utf-8").
    if media_type.split(";", 1)[0].strip().lower() not in MANIFEST_MEDIA_TYPES:
        return None
    tag = optional_text(target.get("tag"), f"{where}.target.tag'", NAME)
    if not tag:
        return None
    repository = text(target.get("repository"), f"{where}.target.repository'", NAME)
    image = host_and_path(_host(event, target, where), repository, f"{where}.request.host'", NAME)
    digest = optional_text(target.get("digest"), f"{where}.target.digest'", NAME) or None
    return make_push(NAME, image=image, tag=tag, digest=digest)


def _host(event: Mapping[str, Any], target: Mapping[str, Any], where: str) -> str:
    request = event.get("request")
    if request is not None:
        request = obj(request, f"{where}.request'", NAME)
        host = optional_text(request.get("host"), f"{where}.request.host'", NAME)
        if host:
            return host
    # Older registries and some relays leave request.host out; the manifest
    # URL names the same host.
    url = text(target.get("url"), f"{where}.target.url' (needed without request.host)", NAME)
    try:
        return urlsplit(url).netloc
    except ValueError:
        raise InvalidPayload(
            "invalid_payload", f"{NAME}: {where}.target.url' is not a URL."
        ) from None
