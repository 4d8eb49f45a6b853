"""fleet_webhook_deliveries_total: every answer of the webhook endpoint,
counted in the database (so every web process adds to the same number)."""

import logging

from counters.services import counter_add

logger = logging.getLogger(__name__)

STATUS_BY_ERROR = {400: "invalid", 401: "rejected", 413: "too_large", 429: "throttled"}


def count_delivery(status_code: int, answer) -> None:
    """`status` is the answer's (rollout_created, duplicate, ...) or what
    refused the delivery; `registry` is "unknown" until a body was read."""
    answer = answer if isinstance(answer, dict) else {}
    if status_code == 202:
        status = str(answer.get("status", "accepted"))
    else:
        status = STATUS_BY_ERROR.get(status_code, "error")
    registry = str(answer.get("registry") or "unknown")
    try:
        counter_add("fleet_webhook_deliveries_total", {"registry": registry, "status": status})
    except Exception:  # the delivery is handled; only its count is lost
        logger.exception("could not count a webhook delivery")
