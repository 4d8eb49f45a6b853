"""Registry payload parsers: one module per registry behind one interface.

``parse_delivery`` decodes the body and hands it to the first module whose
``detect`` recognizes it (see ``base`` for the interface).  Adding a registry
means adding a module here and a fixture under ``tests/fixtures/webhooks``.
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from typing import Any

from django.utils.datastructures import CaseInsensitiveMapping

from . import distribution, dockerhub, github, harbor, quay
from .base import InvalidPayload, ParsedDelivery, Push

__all__ = [
    "REGISTRIES",
    "InvalidPayload",
    "ParsedDelivery",
    "Push",
    "accepted_shapes",
    "parse_delivery",
]

# Tried in order.  GitHub goes first because it is recognized by its header
# whatever the body; the body-shape checks of the others do not overlap.
REGISTRIES = (github, dockerhub, harbor, quay, distribution)


def parse_delivery(headers: Mapping[str, str], body: bytes) -> ParsedDelivery:
    """Parse a webhook body; raises InvalidPayload with a code fit for a 400."""
    payload = _decode(body)
    headers = CaseInsensitiveMapping(headers)
    for registry in REGISTRIES:
        if registry.detect(headers, payload):
            return registry.parse(headers, payload)
    raise InvalidPayload(
        "unknown_payload",
        f"The body matches no known registry webhook. Accepted shapes: {accepted_shapes()}.",
    )


def accepted_shapes() -> str:
    return "; ".join(registry.SHAPE for registry in REGISTRIES)


def _decode(body: bytes) -> Any:
    if not body.strip():
        raise InvalidPayload("malformed_json", "The body is empty; expected a JSON object.")
    try:
        return json.loads(body)
    except (ValueError, RecursionError):
        # ValueError covers bad JSON and bad UTF-8; RecursionError a body
        # nested deeper than the interpreter's stack.
        raise InvalidPayload("malformed_json", "The body is not valid JSON.") from None
