"""Status changes shared by the operator actions and the fan-out.

Lower than both: `actions` and `fanout` import this module, never each other.
"""

from datetime import datetime

from ..models import EventType, Rollout, RolloutStatus
from ..versions import APPROVAL_LEVELS, Risk
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


def needs_approval(rollout: Rollout) -> bool:
    """Riskier than the policy lets start unapproved (`none`: always)."""
    allowed = APPROVAL_LEVELS[rollout.auto_approve_max_risk]
    return Risk.from_label(rollout.risk or "low") > allowed


def await_approval_locked(rollout: Rollout, now: datetime) -> None:
    set_status(
        rollout,
        RolloutStatus.AWAITING_APPROVAL,
        f"Risk {rollout.risk} is above what the policy approves by itself "
        f"({rollout.auto_approve_max_risk}): waiting for an operator to approve or reject.",
    )
    event_record(
        rollout=rollout,
        event_type=EventType.ROLLOUT_AWAITING_APPROVAL,
        message=rollout.status_reason,
        now=now,
        data={"risk": rollout.risk, "auto_approve_max_risk": rollout.auto_approve_max_risk},
    )
