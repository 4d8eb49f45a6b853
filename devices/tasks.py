"""Celery tasks of the devices app: thin, take ids, idempotent."""

from celery import shared_task

from .digests import FILL_DIGESTS_TASK, device_fill_target_digests, digests_sweep
from .registry import RegistryError


@shared_task(bind=True, name=FILL_DIGESTS_TASK, max_retries=8)
def fill_target_digests(self, device_id: int) -> None:
    errors = device_fill_target_digests(device_id=device_id)
    if errors:
        # "As soon as the registry answers": 30 s, 1 min, 2 min, ... up to ~1 h.
        raise self.retry(exc=RegistryError("; ".join(errors)), countdown=30 * 2**self.request.retries)


@shared_task(name="devices.sweep_target_digests")
def sweep_target_digests() -> dict[str, int]:
    """The safety net behind fill_target_digests, which gives up after ~2 h:
    every DIGEST_SWEEP_SECONDS, targets still without a digest are tried again."""
    return digests_sweep()
