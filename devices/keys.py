"""Api keys for devices and fleets: random, shown once, stored as SHA-256.

A SHA-256 of a 256-bit random key cannot be brute-forced, so a slow password
hash would only cost CPU on every poll without adding safety.
"""

import hashlib
import secrets

KEY_BYTES = 32


def new_key() -> str:
    return secrets.token_urlsafe(KEY_BYTES)


def hash_key(key: str) -> str:
    return hashlib.sha256(key.encode()).hexdigest()


def bearer_token(authorization_header: str | None) -> str | None:
    """The token of an `Authorization: Bearer <token>` header, else None."""
    if not authorization_header:
        return None
    scheme, _, token = authorization_header.partition(" ")
    token = token.strip()
    if scheme.lower() != "bearer" or not token:
        return None
    return token
