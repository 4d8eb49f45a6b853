"""Everything that changes rollout state. Views, tasks and admin call these."""

from .actions import (
    InvalidTransition,
    rollout_approve,
    rollout_cancel,
    rollout_pause,
    rollout_reject,
    rollout_resume,
    rollout_retry,
    rollout_rollback_all,
    rollout_start,
)
from .fanout import PushOutcome, batch_boundaries, rollout_create_for_push
from .preview import rollout_preview
from .tick import rollout_fan_out, rollouts_advance_all

__all__ = [
    "InvalidTransition",
    "PushOutcome",
    "batch_boundaries",
    "rollout_approve",
    "rollout_cancel",
    "rollout_create_for_push",
    "rollout_fan_out",
    "rollout_pause",
    "rollout_preview",
    "rollout_reject",
    "rollout_resume",
    "rollout_retry",
    "rollout_rollback_all",
    "rollout_start",
    "rollouts_advance_all",
]
