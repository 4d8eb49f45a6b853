"""Status changes shared by the operator actions and the fan-out.

Lower than both: `actions` and `fanout` import this module, never each other.
"""

from datetime import datetime

from ..models import EventType, Rollout, RolloutStatus
from .events import event_record


def set_status(rollout: Rollout, status: str, reason: str = "", **fields) -> None:
    rollout.status = status
    rollout.status_reason = reason
    for name, value in fields.items():
        setattr(rollout, name, value)
    rollout.save(update_fields=["status", "status_reason", *fields])


def start_locked(rollout: Rollout, now: datetime, actor: str) -> None:
    set_status(rollout, RolloutStatus.IN_PROGRESS, started_at=now, judged_since=now)
    event_record(
        rollout=rollout,
        event_type=EventType.ROLLOUT_STARTED,
        message=f"Rollout started by {actor}.",
        now=now,
        data={"actor": actor},
    )
