"""Docker Hub: ``{"push_data": {"tag": ...}, "repository": {"repo_name": ...}}``.

Docker Hub sends no digest and no delivery id; the image always lives on
``docker.io`` (``library/`` is added for official images by normalization).
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from .base import ParsedDelivery, make_push, obj, optional_text, text

NAME = "dockerhub"
SHAPE = "Docker Hub push (an object with 'push_data' and 'repository')"


def detect(headers: Mapping[str, str], payload: Any) -> bool:
    return isinstance(payload, dict) and "push_data" in payload and "repository" in payload


def parse(headers: Mapping[str, str], payload: Any) -> ParsedDelivery:
    push_data = obj(payload["push_data"], "'push_data'", NAME)
    repository = obj(payload["repository"], "'repository'", NAME)
    tag = text(push_data.get("tag"), "'push_data.tag'", NAME)
    push = make_push(NAME, image=_repository_name(repository), tag=tag)
    return ParsedDelivery(NAME, pushes=(push,))


def _repository_name(repository: Mapping[str, Any]) -> str:
    repo_name = optional_text(repository.get("repo_name"), "'repository.repo_name'", NAME)
    if repo_name is None:
        namespace = text(repository.get("namespace"), "'repository.namespace'", NAME)
        name = text(repository.get("name"), "'repository.name'", NAME)
        repo_name = f"{namespace}/{name}"
    # Prefixing the host keeps a repo_name such as "evil.example/x" on Docker
    # Hub instead of letting it name another registry.
    return f"docker.io/{repo_name}"
