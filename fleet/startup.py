"""Checks a serving process makes before it answers anything."""

from django.conf import settings
from django.core.exceptions import ImproperlyConfigured


def require_secret_key() -> None:
    """Sessions, CSRF tokens and password resets are signed with SECRET_KEY:
    a web process without one must not start (commands like migrate may)."""
    try:
        settings.SECRET_KEY  # noqa: B018 - Django raises when it is empty
    except ImproperlyConfigured:
        raise ImproperlyConfigured(
            "SECRET_KEY is not set: export SECRET_KEY (bin/run writes one to .env for you)."
        ) from None
