"""Is a webhook delivery from a registry we trust?

With a shared secret configured, any one of three proofs is enough, because
registries differ in what they can send:

1. ``X-Hub-Signature-256: sha256=<hex>``, an HMAC-SHA256 of the raw body
   (GitHub, Gitea, Harbor with a signing proxy ...): the strongest, the
   secret never travels;
2. ``Authorization: Bearer <secret>``, for registries that add a fixed
   header (Distribution, Harbor, Quay);
3. ``?token=<secret>`` in the URL, for registries that can do neither
   (Docker Hub).

Every comparison is constant-time, on bytes (``hmac.compare_digest`` refuses
non-ASCII ``str``, and header and query values may hold anything).
"""

from __future__ import annotations

import hashlib
import hmac
from dataclasses import dataclass

from devices.keys import bearer_token

SIGNATURE_PREFIX = "sha256="


@dataclass(frozen=True)
class Verdict:
    accepted: bool
    reason: str  # which proof was accepted, or why none was


def body_signature(secret: str, body: bytes) -> str:
    """The ``X-Hub-Signature-256`` value for ``body``."""
    digest = hmac.new(_bytes(secret), body, hashlib.sha256).hexdigest()
    return SIGNATURE_PREFIX + digest


def verify_delivery(
    *,
    secret: str,
    body: bytes,
    signature: str | None,
    authorization: str | None,
    token: str | None,
) -> Verdict:
    """Check the proofs a delivery offers against ``secret`` (empty: accept all)."""
    if not secret:
        return Verdict(True, "no DOCKER_WEBHOOK_SECRET configured")
    offered = []
    if signature is not None:
        offered.append("X-Hub-Signature-256")
        if _same(signature.strip().lower(), body_signature(secret, body)):
            return Verdict(True, "X-Hub-Signature-256")
    bearer = bearer_token(authorization)
    if bearer is not None:
        offered.append("Authorization: Bearer")
        if _same(bearer, secret):
            return Verdict(True, "Authorization: Bearer")
    if token is not None:
        offered.append("?token=")
        if _same(token, secret):
            return Verdict(True, "?token=")
    if not offered:
        return Verdict(
            False, "no credentials (X-Hub-Signature-256, Authorization: Bearer or ?token=)"
        )
    return Verdict(False, "wrong " + ", ".join(offered))


def _same(given: str, expected: str) -> bool:
    return hmac.compare_digest(_bytes(given), _bytes(expected))


def _bytes(value: str) -> bytes:
    # surrogatepass: a lone surrogate (possible in decoded URLs and in an
    # environment variable) must compare unequal, not raise.
    return value.encode("utf-8", "surrogatepass")
