"""The operator actions the console offers, and which of them a user may take.

One table says, per action, which rollout statuses allow it, whether it is
destructive (asks for a confirmation) and which service runs it. The page
shows exactly `allowed_actions(...)`, and the POST handler refuses anything
else, so what is shown and what is accepted cannot drift apart. Who may act
at all is `rollouts.access.may_steer`, as for the API. A test
checks the table against the services (each accepts exactly these statuses).
"""

from dataclasses import dataclass
from typing import Callable

from rollouts import services
from rollouts.access import may_steer
from rollouts.models import Rollout, RolloutStatus


@dataclass(frozen=True)
class RolloutAction:
    name: str
    label: str
    run: Callable
    statuses: frozenset[str]
    destructive: bool = False
    # Shown beside the confirmation of a destructive action.
    warning: str = ""


def _statuses(*statuses: RolloutStatus) -> frozenset[str]:
    return frozenset(str(status) for status in statuses)


ACTIONS: dict[str, RolloutAction] = {
    action.name: action
    for action in [
        RolloutAction(
            "approve",
            "Approve",
            services.rollout_approve,
            _statuses(RolloutStatus.AWAITING_APPROVAL),
        ),
        RolloutAction(
            "reject",
            "Reject",
            services.rollout_reject,
            _statuses(RolloutStatus.AWAITING_APPROVAL),
            destructive=True,
            warning="The rollout ends here: no device gets this version. This cannot be undone.",
        ),
        RolloutAction("start", "Start", services.rollout_start, _statuses(RolloutStatus.PENDING)),
        RolloutAction(
            "resume", "Resume", services.rollout_resume, _statuses(RolloutStatus.PAUSED)
        ),
        RolloutAction(
            "pause",
            "Pause",
            services.rollout_pause,
            _statuses(RolloutStatus.IN_PROGRESS),
            destructive=True,
            warning="No further devices are scheduled until the rollout is resumed.",
        ),
        RolloutAction(
            "cancel",
            "Cancel",
            services.rollout_cancel,
            _statuses(RolloutStatus.PENDING, RolloutStatus.IN_PROGRESS, RolloutStatus.PAUSED),
            destructive=True,
            warning="Devices keep what they run now; devices not yet reached are skipped. "
            "This cannot be undone.",
        ),
        RolloutAction(
            "retry",
            "Retry failed",
            services.rollout_retry,
            _statuses(RolloutStatus.IN_PROGRESS, RolloutStatus.PAUSED),
        ),
        RolloutAction(
            "rollback_all",
            "Roll back all",
            services.rollout_rollback_all,
            _statuses(
                RolloutStatus.IN_PROGRESS,
                RolloutStatus.PAUSED,
                RolloutStatus.COMPLETED,
                RolloutStatus.CANCELLED,
            ),
            destructive=True,
            warning="Every device this rollout moved goes back to the image it ran before. "
            "This cannot be undone.",
        ),
    ]
}


def allowed_actions(rollout: Rollout, user) -> list[RolloutAction]:
    """The actions the page offers: allowed by the status, and by the user's
    rights (`change_rollout`, or operator of every fleet the rollout touches)."""
    if not may_steer(user, rollout):
        return []
    return [action for action in ACTIONS.values() if rollout.status in action.statuses]
