"""Default DRF authentication. Its own module, like fleet.permissions: DRF
imports it while `rest_framework.views` is still loading."""

import re

from rest_framework import authentication, exceptions

# DRF tokens are 40 hex characters (rest_framework.authtoken.models.Token).
TOKEN = re.compile(r"[0-9a-f]{40}")


class TokenAuthentication(authentication.TokenAuthentication):
    """DRF's token check, minus the database lookup of what cannot be a token
    (a NUL in the header would make PostgreSQL raise)."""

    def authenticate_credentials(self, key):
        if not TOKEN.fullmatch(key):
            raise exceptions.AuthenticationFailed("Invalid token.")
        return super().authenticate_credentials(key)
