"""FleetSimulation: builds the fleet, the policy and the push, then drives the
engine tick by tick on the virtual clock."""

import hashlib
import math
import random
import secrets
import uuid
from collections import defaultdict
from collections.abc import Callable, Iterable, Iterator
from dataclasses import asdict
from datetime import UTC, datetime, timedelta

from django.db import transaction
from django.db.models import Count, F, Min, Q, Sum
from django.db.models.functions import Coalesce
from django.utils import timezone

from agent.drivers.simulated import Behaviour
from devices.keys import hash_key
from devices.models import Device, DeviceService, Fleet

from ..models import (
    IN_FLIGHT,
    DeviceStatus,
    FailureReason,
    ImagePolicy,
    Rollout,
    RolloutDevice,
    RolloutStatus,
    UpdateStrategy,
)
from ..services import rollout_create_for_push, rollout_fan_out, rollout_start
from ..services.engine import rollout_advance_locked
from .config import Progress, SimulationConfig, SimulationResult
from .devices import NEW_TAG, OLD_TAG, Report, _Devices

SERVICE = "web"
# Rows per bulk INSERT and ids per `IN (...)`: under SQLite's 32,766
# variables per statement, and few enough statements for 100,000 devices.
CHUNK = 5000


class FleetSimulation:
    def __init__(
        self,
        config: SimulationConfig,
        *,
        start: datetime | None = None,
        progress: Callable[[Progress], None] | None = None,
    ):
        config.validate()
        self.config = config
        self.start = (start or timezone.now()).astimezone(UTC).replace(microsecond=0)
        self._progress = progress
        self._random = random.Random(config.seed)
        run = secrets.token_hex(6)
        self.image = f"docker.io/simulator/app-{run}"
        self.slug = f"simulator-{run}"

    def run(self, *, keep: bool = False) -> SimulationResult:
        with transaction.atomic():
            self._build_fleet()
            result = self._run_seed(self.config.seed)
            if keep:
                result.fleet, result.rollout_id = self.slug, str(self.rollout.pk)
            else:
                transaction.set_rollback(True)
        return result

    def run_seeds(self, seeds: Iterable[int]) -> list[SimulationResult]:
        """One run per seed on one fleet, built once: each run happens in a
        transaction rolled back after it, so every seed starts from the same
        fleet (its canaries included) and draws its devices' behaviour from
        its own seed. Nothing is kept.

        The fleet itself is committed for the duration (and deleted at the
        end): in one long transaction the rolled-back runs would leave their
        dead rows to every later run (the tenth of 10,000-device runs took
        twice as long as the first), while between transactions autovacuum
        clears them. It holds no policy and no rollout, so no tick acts on it.
        """
        with transaction.atomic():
            self._build_fleet()
        try:
            results = []
            for seed in seeds:
                with transaction.atomic():
                    results.append(self._run_seed(seed))
                    transaction.set_rollback(True)
            return results
        finally:
            with transaction.atomic():
                Device.objects.filter(fleet=self.fleet).delete()
                self.fleet.delete()

    # --- setting up ---------------------------------------------------------

    def _run_seed(self, seed: int) -> SimulationResult:
        self._random = random.Random(seed)
        self._draw_devices()
        self._create_policy()
        self._push()
        return self._drive(seed)

    def _build_fleet(self) -> None:
        config = self.config
        self.fleet = Fleet.objects.create(
            slug=self.slug,
            name=f"Simulated fleet {self.slug}",
            provisioning_key_hash=hash_key(secrets.token_urlsafe(32)),
        )
        prefix = secrets.token_bytes(6)
        device_rows = [
            Device(
                fleet=self.fleet,
                name=f"sim-{index}",
                uuid=self._device_uuid(prefix),
                # Nobody can authenticate as a simulated device.
                api_key_hash=hash_key(secrets.token_urlsafe(32)),
                last_seen_at=self.start,
                last_report_at=self.start,
            )
            for index in range(config.devices)
        ]
        ids: list[int] = []
        for rows in _chunks(device_rows):
            ids.extend(device.pk for device in Device.objects.bulk_create(rows))
        self.index_of = {pk: index for index, pk in enumerate(ids)}
        self.ids = ids
        running_since = self.start - timedelta(seconds=config.tick_seconds)
        services = (
            DeviceService(
                device_id=pk,
                name=SERVICE,
                target_image=self.image,
                target_tag=OLD_TAG,
                target_digest=self._digest(OLD_TAG),
                target_changed_at=running_since,
                reported_image=self.image,
                reported_tag=OLD_TAG,
                reported_digest=self._digest(OLD_TAG),
                reported_status="running",
                reported_health="healthy",
                reported_at=running_since,
            )
            for pk in ids
        )
        for rows in _chunks(services):
            DeviceService.objects.bulk_create(rows)

    def _draw_devices(self) -> None:
        """Which devices never report, never poll, or fail their first
        attempt. Devices that never poll were last seen a day before the push."""
        config, draw = self.config, self._random.random
        count = config.devices
        silent = [draw() < config.never_report_rate for _ in range(count)]
        offline = [draw() < config.offline_rate for _ in range(count)]
        flaky = [draw() < config.flaky_rate for _ in range(count)]
        self.devices = _Devices(silent, offline, flaky)
        away = [pk for pk, gone in zip(self.ids, offline) if gone]
        for chunk in _chunks(away):
            Device.objects.filter(pk__in=chunk).update(last_seen_at=self.start - timedelta(days=1))

    def _device_uuid(self, prefix: bytes) -> uuid.UUID:
        # The fan-out orders devices by uuid to pick the canaries. A prefix
        # shared by the run keeps uuids unique across runs, and the seeded
        # rest makes the order, hence batch 1, the same for a given seed.
        rest = self._random.getrandbits(80).to_bytes(10, "big")
        return uuid.UUID(bytes=prefix + rest, version=4)

    def _digest(self, tag: str) -> str:
        return "sha256:" + hashlib.sha256(f"{self.image}:{tag}".encode()).hexdigest()

    def _create_policy(self) -> None:
        config = self.config
        # Its own fleet and a run-unique image: the policy matches nothing else.
        self.policy = ImagePolicy.objects.create(
            image_pattern=f"{self.image}:*",
            update_strategy=config.strategy,
            batch_percentages=list(config.batch_percentages),
            batch_delay_minutes=config.batch_delay_minutes,
            health_check_enabled=config.health_check,
            health_check_timeout_seconds=config.health_check_timeout_seconds,
            auto_rollback_enabled=config.auto_rollback,
            max_failure_rate=config.max_failure_rate,
            min_failure_samples=config.min_failure_samples,
            ramp_initial=config.ramp_initial,
            ramp_factor=config.ramp_factor,
            max_retries=config.max_retries,
            fleet=self.fleet,
        )

    def _push(self) -> None:
        outcome = rollout_create_for_push(
            image=self.image,
            tag=NEW_TAG,
            digest=self._digest(NEW_TAG),
            policy=self.policy,
            source={"simulator": True, "seed": self.config.seed},
            now=self.start,
        )
        self.rollout = outcome.rollout
        self._planned_step = 0
        # The fan-out task is enqueued on commit, which comes after the whole
        # run (if ever); run it here, on the virtual clock, as the worker would.
        rollout_fan_out(rollout_id=self.rollout.pk, now=self.start)
        if self.config.strategy == UpdateStrategy.MANUAL:
            rollout_start(rollout_id=self.rollout.pk, actor="simulator", now=self.start)
        self.rollout.refresh_from_db()
        self._plan_target_changes(0.0)

    # --- the clock ---------------------------------------------------------

    def _drive(self, seed: int) -> SimulationResult:
        config, devices = self.config, self.devices
        last_tick = int(config.max_hours * 3600 // config.tick_seconds)
        max_on_new = max_failing = ticks = 0
        seconds = 0.0
        stopped_at: float | None = None
        while ticks < last_tick:
            ticks += 1
            seconds = ticks * config.tick_seconds
            self._apply_reports(seconds)
            if stopped_at is None:
                self._advance(seconds)
                self._plan_target_changes(seconds)
                if self.rollout.status != RolloutStatus.IN_PROGRESS:
                    stopped_at = seconds
                elif self._past_last_batch_watched():
                    break
            max_on_new = max(max_on_new, devices.on_new)
            max_failing = max(max_failing, devices.failing_on_new)
            self._report_progress(seconds)
            # After a stop, devices sent back still pull and report the old image.
            if stopped_at is not None and not devices.queue:
                break
            # Never past the end: the last tick still runs.
            next_tick = self._next_busy_tick(engine=stopped_at is None)
            ticks = max(ticks, min(next_tick, last_tick) - 1)
        return self._result(
            seed=seed,
            seconds_to_stop=stopped_at,
            simulated_seconds=seconds,
            ticks=ticks,
            max_on_new=max_on_new,
            max_failing=max_failing,
        )

    def _past_last_batch_watched(self) -> bool:
        """`stop_after_batch`: that batch has all its verdicts."""
        last = self.config.stop_after_batch
        rollout = self.rollout
        if last is None:
            return False
        return rollout.current_batch > last or (
            rollout.current_batch == last and rollout.batch_finished_at is not None
        )

    def _next_busy_tick(self, *, engine: bool) -> int:
        """The next tick at which anything can change, so that the clock
        skips the ticks between: the next report a device makes, the first
        health-check timer of a device in flight to run out, the start of
        the next batch. Between those, the engine would look at the rollout
        and change nothing: every transition needs a new report, an expired
        timer or a due batch (a ramp releases all the room it has at once,
        and its room grows only with verdicts)."""
        tick = self.config.tick_seconds
        moments = []
        if self.devices.queue:
            moments.append(self.devices.queue[0][0])
        if engine:
            rollout = self.rollout
            if rollout.batch_finished_at is not None and rollout.next_batch_at is not None:
                moments.append((rollout.next_batch_at - self.start).total_seconds())
            first_timer = RolloutDevice.objects.filter(
                rollout=rollout, status__in=IN_FLIGHT
            ).aggregate(first=Min("timer_started_at"))["first"]
            if first_timer is not None:
                deadline = first_timer + timedelta(seconds=rollout.health_check_timeout_seconds)
                moments.append((deadline - self.start).total_seconds())
        if not moments:
            return 10**9
        return max(1, math.ceil(min(moments) / tick - 1e-9))

    def _at(self, seconds: float) -> datetime:
        return self.start + timedelta(seconds=seconds)

    def _advance(self, seconds: float) -> None:
        """One engine pass over this rollout: what the beat does for each
        active rollout, under the same row lock."""
        with transaction.atomic():
            self.rollout = Rollout.objects.select_for_update().get(pk=self.rollout.pk)
            rollout_advance_locked(self.rollout, self._at(seconds))

    def _plan_target_changes(self, seconds: float) -> None:
        """Start the timeline of every device whose target the engine changed
        at this moment, as the device would on its next poll. Every change
        is tagged with a step on its row: only rows of the steps since the
        last look are read, not every service of the fleet."""
        rows = RolloutDevice.objects.filter(rollout=self.rollout, step__gt=self._planned_step)
        changed = DeviceService.objects.filter(
            device_id__in=rows.values("device_id"),
            name=SERVICE,
            target_image=self.image,
            target_changed_at=self._at(seconds),
        ).values_list("device_id", "target_tag")
        self._planned_step = self.rollout.step
        late = self.config.health_check_timeout_seconds - self.config.tick_seconds
        polled = []
        for index, tag in sorted((self.index_of[pk], tag) for pk, tag in changed):
            if self.devices.offline[index]:
                continue  # It never polls: it never learns of the change.
            behaviour = self._behaviour(index, tag)
            self.devices.plan(index, seconds, tag, behaviour)
            # It polled to learn of its target. Written only where the
            # engine could tell: its first report (which records presence
            # too) comes after the timeout runs out, or never.
            first_report = behaviour.pull_seconds + behaviour.start_seconds
            if self.devices.silent[index] or first_report >= late:
                polled.append(self.ids[index])
        for chunk in _chunks(polled):
            Device.objects.filter(pk__in=chunk).update(last_seen_at=self._at(seconds))

    def _behaviour(self, index: int, tag: str) -> Behaviour:
        config, draw = self.config, self._random.random
        pull = self._pull_delay()
        if tag != NEW_TAG:
            # Sent back by a rollback: the old release is known to be good.
            self.devices.rolled_back.add(index)
            return Behaviour(pull_seconds=pull)
        self.devices.targeted.add(index)
        self.devices.attempts[index] += 1
        outcome = "healthy"
        if draw() < config.bad_rate:
            outcome = "crashed" if draw() < config.crash_share else "unhealthy"
        elif self.devices.flaky[index] and self.devices.attempts[index] == 1:
            outcome = "crashed"
        return Behaviour(pull_seconds=pull, health_seconds=config.health_delay, outcome=outcome)

    def _pull_delay(self) -> float:
        mean = self.config.pull_delay_mean
        if self.config.pull_delay_distribution == "uniform":
            return self._random.random() * 2 * mean
        return self._random.expovariate(1 / mean) if mean else 0.0

    def _apply_reports(self, seconds: float) -> None:
        """Write the reports that came due, as the report endpoint would, in
        one UPDATE per distinct report."""
        reports = self.devices.due(seconds)
        if not reports:
            return
        now = self._at(seconds)
        groups: dict[Report, list[int]] = defaultdict(list)
        for index, report in sorted(reports.items()):
            groups[report].append(self.ids[index])
            self.devices.record(index, report)
        for (tag, status, health), ids in groups.items():
            for chunk in _chunks(ids):
                DeviceService.objects.filter(device_id__in=chunk, name=SERVICE).update(
                    reported_image=self.image,
                    reported_tag=tag,
                    reported_digest=self._digest(tag),
                    reported_status=status,
                    reported_health=health,
                    reported_at=now,
                )
        # What a report also writes on the device (presence, the version it
        # works towards: every due report belongs to the device's latest
        # timeline, started when it took its current target) is only read by
        # the engine for a retried device (the retry's version guard); for
        # the others it could not change a verdict (presence matters only to
        # rows nobody reported for, see _plan_target_changes), so it is
        # written for retried devices alone: the 10,000-device runs spent a
        # tenth of their time on it.
        retried = [self.ids[index] for index in reports if self.devices.attempts[index] > 1]
        for chunk in _chunks(retried):
            Device.objects.filter(pk__in=chunk).update(
                last_report_at=now, last_seen_at=now, reported_target_version=F("target_version")
            )

    def _report_progress(self, seconds: float) -> None:
        if self._progress is None:
            return
        rollout = self.rollout
        self._progress(
            Progress(
                seconds=seconds,
                status=rollout.status,
                current_batch=rollout.current_batch,
                total_batches=rollout.total_batches,
                targeted=len(self.devices.targeted),
                devices=self.config.devices,
            )
        )

    # --- the outcome -------------------------------------------------------

    def _result(
        self,
        *,
        seed: int,
        seconds_to_stop: float | None,
        simulated_seconds: float,
        ticks: int,
        max_on_new: int,
        max_failing: int,
    ) -> SimulationResult:
        rollout, devices = self.rollout, self.devices
        rows = RolloutDevice.objects.filter(rollout=rollout)
        counts = rows.aggregate(
            targeted=Count("id", filter=Q(scheduled_at__isnull=False)),
            failed=Count("id", filter=~Q(failure_reason="")),
            rolled_back=Count("id", filter=Q(status=DeviceStatus.ROLLED_BACK)),
            deferred=Count("id", filter=Q(status=DeviceStatus.DEFERRED)),
            retries=Coalesce(Sum(F("attempts") - 1, filter=Q(attempts__gt=1)), 0),
            first_release=Min("scheduled_at"),
        )
        paused = rollout.status == RolloutStatus.PAUSED and seconds_to_stop is not None
        detect = None
        if paused and counts["first_release"] is not None:
            first = (counts["first_release"] - self.start).total_seconds()
            detect = seconds_to_stop - first
        failures = {reason: 0 for reason in FailureReason.values}
        failures.update(
            rows.exclude(failure_reason="")
            .values_list("failure_reason")
            .annotate(n=Count("id"))
            .order_by()
        )
        back = sum(1 for index in devices.rolled_back if devices.reported[index][0] == OLD_TAG)
        return SimulationResult(
            devices=self.config.devices,
            silent_devices=sum(devices.silent),
            offline_devices=sum(devices.offline),
            status=rollout.status,
            status_reason=rollout.status_reason,
            batches_reached=rollout.current_batch,
            total_batches=rollout.total_batches,
            devices_targeted=counts["targeted"],
            devices_ran_new_image=len(devices.ran_new),
            devices_failed=counts["failed"],
            failures=failures,
            devices_rolled_back=counts["rolled_back"],
            devices_back_on_old_image=back,
            max_on_failing_release=max_on_new if self.config.bad_rate > 0 else 0,
            max_failing_at_once=max_failing,
            seconds_to_stop=seconds_to_stop,
            devices_deferred=counts["deferred"],
            retries=counts["retries"],
            seconds_to_detect=detect,
            simulated_seconds=simulated_seconds,
            ticks=ticks,
            parameters={**_parameters(self.config), "seed": seed},
        )


def _parameters(config: SimulationConfig) -> dict:
    data = asdict(config)
    data["batch_percentages"] = list(config.batch_percentages)
    return data


def _chunks(items: Iterable) -> Iterator[list]:
    chunk: list = []
    for item in items:
        chunk.append(item)
        if len(chunk) == CHUNK:
            yield chunk
            chunk = []
    if chunk:
        yield chunk
