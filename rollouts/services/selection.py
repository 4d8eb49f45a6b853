"""Which device services a push reaches, which it skips and why, and in which
batch: the one source of truth of the fan-out, the webhook's "anything to
do?" answer and the dry run (`POST /rollouts/preview`).

Version rules are decided once per *distinct* tag the image's services
target (a fleet runs few versions), in Python (`versions.decide`); the
decisions go to SQL as a VALUES list joined against the services, so the
per-device work is one statement whatever the number of devices.
"""

import json
import math
import uuid as uuid_lib
from dataclasses import dataclass, field

from django.db import connection
from django.db.models import Q

from devices.models import Device, DeviceService

from ..models import SkipReason
from ..selectors import already_current, image_services
from ..versions import Decision, Risk, VersionRules, decide

# Order in which the webhook answer names the reason that kept a push from
# every device (push-level rules first).
VERSION_REASONS = (
    SkipReason.VERSION_CONSTRAINT,
    SkipReason.PRERELEASE,
    SkipReason.VARIANT,
    SkipReason.DOWNGRADE,
    SkipReason.UPDATE_KIND,
)


@dataclass(frozen=True)
class Target:
    """A push as the selection sees it, with the filters and rules of its
    policy (or of the rollout that copied them)."""

    image: str
    tag: str
    digest: str | None
    fleet_id: int | None
    device_tags: tuple[str, ...]
    device_uuids: tuple[str, ...]
    rules: VersionRules

    @classmethod
    def of(cls, settings, *, image: str, tag: str, digest: str | None, rules: VersionRules) -> "Target":
        return cls(
            image=image,
            tag=tag,
            digest=digest,
            fleet_id=settings.fleet_id,
            device_tags=tuple(settings.device_tags or ()),
            device_uuids=tuple(settings.device_uuids or ()),
            rules=rules,
        )

    def candidates(self):
        """Every service of the image the push may touch: those it will not
        change are rows of the rollout too (`skipped`, with their reason)."""
        return image_services(
            image=self.image,
            fleet_id=self.fleet_id,
            device_tags=list(self.device_tags),
            device_uuids=list(self.device_uuids),
        )


@dataclass
class Summary:
    """Counts of a selection, from one grouped statement."""

    eligible: int = 0
    skipped: dict[str, int] = field(default_factory=dict)
    risk: Risk | None = None
    # (running tag, stepping stones) -> devices
    upgrade_paths: dict[tuple[str, tuple[str, ...]], int] = field(default_factory=dict)

    @property
    def total(self) -> int:
        return self.eligible + sum(self.skipped.values())


class Selection:
    def __init__(self, target: Target):
        self.target = target
        self.decisions: dict[str, Decision] = {
            tag: decide(target.rules, target.tag, tag) for tag in distinct_target_tags(target.image)
        }
        # A tag that is not in the list (no tag, or one that appeared since)
        # is judged as a version we cannot read.
        self.default = decide(target.rules, target.tag, None)

    # --- SQL -----------------------------------------------------------------

    def _current(self) -> tuple[str, list]:
        if self.target.digest:
            return "s.target_digest = %s", [self.target.digest]
        return "s.target_tag = %s", [self.target.tag]

    def _decision_values(self) -> tuple[str, list]:
        rows = [(None, None, None, None, None)] + [
            (tag, d.skip_reason, int(d.risk), json.dumps(list(d.via)), d.via[0] if d.via else None)
            for tag, d in self.decisions.items()
        ]
        first = (
            "(CAST(%s AS VARCHAR(128)), CAST(%s AS VARCHAR(24)), CAST(%s AS INTEGER), "
            "CAST(%s AS TEXT), CAST(%s AS VARCHAR(128)))"
        )
        sql = ", ".join([first] + ["(%s, %s, %s, %s, %s)"] * (len(rows) - 1))
        return sql, [value for row in rows for value in row]

    def rows_sql(self, *, numbered: bool = True) -> tuple[str, list]:
        """One row per candidate service: device_id, name, target_tag,
        target_digest, uuid, skip (null: it is sent the push), risk, via
        (JSON text), first_stone (the first stepping stone, or null), rn (its
        place among the rows that are not skipped, or among the skipped
        ones; random by device uuid, stable across runs)."""
        services = DeviceService._meta.db_table
        devices = Device._meta.db_table
        candidate_sql, candidate_params = (
            self.target.candidates().order_by().values("id").query.get_compiler(connection=connection).as_sql()
        )
        values_sql, values_params = self._decision_values()
        current, current_params = self._current()
        default = self.default
        skip = (
            f"CASE WHEN s.pinned THEN 'pinned' WHEN {current} THEN 'already_current' "
            "WHEN v.tag IS NULL THEN %s ELSE v.skip END"
        )
        skip_params = [*current_params, default.skip_reason]
        # Counting needs no order: the row numbers (a sort of every row by
        # uuid) only for the statements that assign batches.
        rn = (
            "ROW_NUMBER() OVER (PARTITION BY y.skip IS NULL ORDER BY y.uuid, y.name)"
            if numbered
            else "NULL"
        )
        sql = f"""
            WITH decision(tag, skip, risk, via, first_stone) AS (VALUES {values_sql})
            SELECT y.*, {rn} AS rn
            FROM (
                SELECT s.device_id, s.name, s.target_tag, s.target_digest, d.uuid,
                       {skip} AS skip,
                       COALESCE(v.risk, %s) AS risk,
                       COALESCE(v.via, %s) AS via,
                       CASE WHEN v.tag IS NULL THEN %s ELSE v.first_stone END AS first_stone
                FROM {services} s
                JOIN {devices} d ON d.id = s.device_id
                LEFT JOIN decision v ON v.tag = s.target_tag
                WHERE s.id IN ({candidate_sql})
            ) y
        """
        params = [
            *values_params,
            *skip_params,
            int(default.risk),
            json.dumps(list(default.via)),
            default.via[0] if default.via else None,
            *candidate_params,
        ]
        return sql, params

    def batched_sql(self, boundaries: list[int]) -> tuple[str, list]:
        """rows_sql with `batch`: null for skipped rows, else by boundaries.
        The count behind the boundaries ran as its own statement: a device
        that appeared since gets a row number past the last boundary and
        joins the last batch."""
        rows_sql, rows_params = self.rows_sql()
        cases = " ".join("WHEN x.rn <= %s THEN %s" for _ in boundaries)
        params = [value for number, bound in enumerate(boundaries, 1) for value in (bound, number)]
        sql = f"""
            SELECT x.*, CASE WHEN x.skip IS NOT NULL THEN NULL {cases} ELSE %s END AS batch
            FROM ({rows_sql}) x
        """
        return sql, [*params, len(boundaries), *rows_params]

    # --- reads -----------------------------------------------------------------

    def summary(self) -> Summary:
        """Counts per skip reason, the risk and the upgrade paths: one
        grouped statement (groups: distinct tags x reasons)."""
        rows_sql, params = self.rows_sql(numbered=False)
        summary = Summary()
        with connection.cursor() as cursor:
            cursor.execute(
                f"SELECT z.skip, z.target_tag, COUNT(*) FROM ({rows_sql}) z GROUP BY z.skip, z.target_tag",
                params,
            )
            groups = cursor.fetchall()
        for skip, tag, count in groups:
            if skip:
                summary.skipped[skip] = summary.skipped.get(skip, 0) + count
                continue
            summary.eligible += count
            decision = self.decisions.get(tag, self.default) if tag is not None else self.default
            summary.risk = max(summary.risk or decision.risk, decision.risk)
            if decision.via:
                key = (tag, decision.via)
                summary.upgrade_paths[key] = summary.upgrade_paths.get(key, 0) + count
        return summary

    def samples(self, boundaries: list[int], per_batch: int = 10) -> dict[int, list[str]]:
        """Up to `per_batch` device uuids of each batch, in batch order."""
        batched, params = self.batched_sql(boundaries)
        sql = f"""
            SELECT w.batch, w.uuid FROM (
                SELECT b.batch, b.uuid, ROW_NUMBER() OVER (PARTITION BY b.batch ORDER BY b.rn) AS k
                FROM ({batched}) b WHERE b.batch IS NOT NULL
            ) w WHERE w.k <= %s ORDER BY w.batch, w.k
        """
        samples: dict[int, list[str]] = {}
        with connection.cursor() as cursor:
            cursor.execute(sql, [*params, per_batch])
            for batch, uuid in cursor.fetchall():
                samples.setdefault(batch, []).append(str(_uuid(uuid)))
        return samples


def _uuid(value):
    return value if isinstance(value, uuid_lib.UUID) else uuid_lib.UUID(str(value))


def distinct_target_tags(image: str) -> list[str]:
    """The distinct tags that services target for `image`.

    On PostgreSQL a loose index scan over (target_image, target_tag): one
    index probe per distinct tag, so it costs the same for 100 or 100,000
    devices on a few versions (a plain DISTINCT reads every row). SQLite
    (bin/run's small fleets) takes the plain DISTINCT.
    """
    if connection.vendor != "postgresql":
        tags = DeviceService.objects.filter(target_image=image, target_tag__isnull=False)
        return list(tags.values_list("target_tag", flat=True).distinct())
    table = DeviceService._meta.db_table
    sql = f"""
        WITH RECURSIVE t(tag) AS (
            (SELECT target_tag FROM {table} WHERE target_image = %s AND target_tag IS NOT NULL
             ORDER BY target_tag LIMIT 1)
            UNION ALL
            SELECT (SELECT s.target_tag FROM {table} s
                    WHERE s.target_image = %s AND s.target_tag > t.tag
                    ORDER BY s.target_tag LIMIT 1)
            FROM t WHERE t.tag IS NOT NULL
        )
        SELECT tag FROM t WHERE tag IS NOT NULL
    """
    with connection.cursor() as cursor:
        cursor.execute(sql, [image, image])
        return [row[0] for row in cursor.fetchall()]


def batch_boundaries(devices: int, percentages: list[int]) -> list[int]:
    """Cumulative last row number of each batch: round up, and give every batch
    at least one device while devices remain."""
    boundaries: list[int] = []
    for percentage in percentages:
        boundary = math.ceil(devices * percentage / 100)
        if boundaries:
            boundary = max(boundary, min(devices, boundaries[-1] + 1))
        boundaries.append(min(boundary, devices))
    return boundaries


def push_outcome(target: Target, *, digest_known: bool) -> tuple[str, str | None]:
    """Whether a push reaches any device: ("rollout_created", None),
    ("ignored", <the version rule that kept it from every device>) or
    ("no_affected_devices", None). A handful of indexed probes, however
    many devices run the image: the webhook answer must not grow with them.

    Without a digest (Docker Hub) a push may have moved a tag the devices
    already run: only the registry can tell, and the answer never waits for
    it, so "already current" is left to the fan-out then.
    """
    selection = Selection(target)
    services = target.candidates().exclude(pinned=True)
    if digest_known:
        services = services.exclude(already_current(target.tag, target.digest))
    if _any(services.filter(_tags_deciding(selection, None))):
        return "rollout_created", None
    for reason in VERSION_REASONS:
        if _any(services.filter(_tags_deciding(selection, reason))):
            return "ignored", str(reason)
    return "no_affected_devices", None


def _tags_deciding(selection: Selection, reason: str | None):
    tags = [tag for tag, d in selection.decisions.items() if d.skip_reason == reason]
    condition = Q(target_tag__in=tags)
    if selection.default.skip_reason == reason:
        condition |= Q(target_tag__isnull=True) | ~Q(target_tag__in=list(selection.decisions))
    return condition


def _any(services) -> bool:
    # Walk the (image, tag) index in order and stop at the first hit: a bare
    # EXISTS lets PostgreSQL pick a sequential scan (it assumes matching rows
    # are spread evenly), which reads the whole table when an image's devices
    # were created together.
    first = services.order_by("target_image", "target_tag").values_list("id", flat=True)[:1]
    return bool(list(first))
