"""Throttles that fail open: a rate limit is a courtesy, not security.

DRF's throttles keep their counters in the cache (Redis). When it cannot be
reached, refusing (or a 500) would lose what the request carries, e.g. a
registry's webhook delivery, which some registries never send again.
"""

import logging

from rest_framework.throttling import ScopedRateThrottle

logger = logging.getLogger(__name__)


class FailOpenScopedRateThrottle(ScopedRateThrottle):
    def allow_request(self, request, view):
        try:
            return super().allow_request(request, view)
        except Exception:  # whatever the cache backend raises when it is down
            logger.warning(
                "Throttle %r not applied: its cache is unreachable; letting the request through.",
                getattr(view, "throttle_scope", None),
                exc_info=True,
            )
            return True
