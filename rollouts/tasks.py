"""Celery tasks: thin, take ids, idempotent (each service locks the rollout and
checks its state before changing anything)."""

from celery import shared_task

from . import services
from .counting import engine_tick_timed, rollout_counters_rollup
from .services.fanout import FAN_OUT_TASK
from .services.polling import POLL_TASK, registries_poll_due


@shared_task(name=FAN_OUT_TASK, acks_late=True)
def fan_out_rollout(rollout_id: str) -> None:
    services.rollout_fan_out(rollout_id=rollout_id)


@shared_task(name="rollouts.advance_rollouts")
def advance_rollouts() -> int:
    return engine_tick_timed(services.rollouts_advance_all)


@shared_task(name="rollouts.count_events")
def count_events() -> int:
    return rollout_counters_rollup()


@shared_task(name=POLL_TASK)
def poll_registries() -> int:
    return registries_poll_due()
