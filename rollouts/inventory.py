"""Inventory reads: which image versions run where, who is behind.

The one source of these numbers, for `GET /images/` and the console's
fleet and image pages (console/inventory.py only lays them out). Both cost a
fixed number of queries whatever the number of images and devices, reading
the services table twice: once for devices, behind and drifting of every
image (the page is cut from that, most devices first), once for the versions
of the page's images; the rollouts and their verdicts are read once each for
the page. Never one query per image.
"""

from collections import defaultdict
from datetime import datetime, timedelta

from django.conf import settings
from django.db import connection
from django.db.models import Count, Exists, OuterRef, Q, QuerySet
from django.utils import timezone

from devices.models import Device, DeviceService, Fleet

from .models import DeviceStatus, ImagePush, Rollout, RolloutDevice, RolloutStatus

# Success rates look at verdicts this recent.
SUCCESS_WINDOW = timedelta(days=30)
# A device whose report still differs from its target this many poll
# intervals after the target changed is drifting.
DRIFT_POLL_INTERVALS = 3


class ImageRows:
    """Every image some device targets or runs, as `{"image", "devices",
    "behind", "drifting", "latest"}`, most devices first: a countable,
    sliceable list for DRF's paginator, computed by one aggregate on first use."""

    def __init__(
        self,
        *,
        fleet: str | None = None,
        image: str | None = None,
        visible: QuerySet | None = None,
        now: datetime | None = None,
    ):
        self.fleet, self.image, self.visible = fleet, image, visible
        self.now = now or timezone.now()
        self._rows: list[dict] | None = None

    def count(self) -> int:
        return len(self.rows())

    def __len__(self) -> int:
        return self.count()

    def __getitem__(self, window):
        return self.rows()[window]

    def rows(self) -> list[dict]:
        if self._rows is None:
            latest = latest_versions()
            self._rows = [
                {"image": image, "devices": devices, "behind": behind, "drifting": drifting,
                 "latest": latest.get(image)}
                for image, devices, behind, drifting in self._aggregate(latest)
            ]
        return self._rows

    def _aggregate(self, latest: dict[str, dict]) -> list[tuple]:
        """One pass over the services, each counted under the image it targets
        and, when it runs another one, under that too (a device counts once
        per image)."""
        table, devices = DeviceService._meta.db_table, Device._meta.db_table
        known = [(image, version["tag"], version["digest"]) for image, version in latest.items()]
        # A VALUES list needs a row: an image name no repository can have.
        known = known or [("", None, None)]
        values = ", ".join("(%s, %s, %s)" for _ in known)
        params = [value for row in known for value in row]
        where, where_params = _fleet_filter(self.fleet, self.visible)
        cutoff = self.now - timedelta(
            seconds=settings.DEVICE_POLL_INTERVAL_SECONDS * DRIFT_POLL_INTERVALS
        )
        sql = f"""
            WITH latest(image, tag, digest) AS (VALUES {values})
            SELECT x.image, COUNT(DISTINCT x.device_id) AS devices,
                   COUNT(DISTINCT CASE WHEN l.tag IS NOT NULL AND NOT COALESCE(
                       x.reported_image = x.image AND CASE
                           WHEN l.digest IS NOT NULL AND x.reported_digest IS NOT NULL
                           THEN x.reported_digest = l.digest ELSE x.reported_tag = l.tag END,
                       FALSE) THEN x.device_id END),
                   COUNT(DISTINCT CASE WHEN x.target_changed_at < %s AND NOT COALESCE(
                       x.reported_image = x.image AND x.reported_tag = x.target_tag
                       AND (x.reported_digest IS NULL OR x.target_digest IS NULL
                            OR x.reported_digest = x.target_digest), FALSE)
                       THEN x.device_id END)
            FROM (
                SELECT s.target_image AS image, s.device_id, s.reported_image, s.reported_tag,
                       s.reported_digest, s.target_tag, s.target_digest, s.target_changed_at
                FROM {table} s JOIN {devices} d ON d.id = s.device_id
                WHERE s.target_image IS NOT NULL {where}
                UNION ALL
                SELECT s.reported_image, s.device_id, s.reported_image, s.reported_tag,
                       s.reported_digest, NULL, NULL, NULL
                FROM {table} s JOIN {devices} d ON d.id = s.device_id
                WHERE s.reported_image IS NOT NULL
                  AND (s.target_image IS NULL OR s.target_image <> s.reported_image) {where}
            ) x LEFT JOIN latest l ON l.image = x.image
            WHERE (%s IS NULL OR x.image = %s)
            GROUP BY x.image ORDER BY devices DESC, x.image
        """
        with connection.cursor() as cursor:
            cursor.execute(
                sql, [*params, cutoff, *where_params, *where_params, self.image, self.image]
            )
            return cursor.fetchall()



def latest_versions() -> dict[str, dict]:
    """Per image, the version of its newest completed rollout. Rollouts are
    counted in hundreds, not in devices: read in one query."""
    latest: dict[str, dict] = {}
    completed = (
        Rollout.objects.filter(status=RolloutStatus.COMPLETED, finished_at__isnull=False)
        .order_by("image", "-finished_at", "-pk")
        .values_list("image", "new_tag", "new_digest", "pk", "finished_at")
    )
    for image, tag, digest, pk, finished_at in completed:
        latest.setdefault(
            image, {"tag": tag, "digest": digest, "rollout_id": str(pk), "completed_at": finished_at}
        )
    return latest


def inventory_rows(
    rows: list[dict],
    *,
    fleet: str | None = None,
    visible: QuerySet | None = None,
    now: datetime | None = None,
) -> list[dict]:
    """Complete a page of ImageRows with versions, newest push, rollout
    totals and success rate."""
    now = now or timezone.now()
    images = [row["image"] for row in rows]
    if not images:
        return []
    rollouts = _rollout_summaries(images)
    versions = image_versions(images, fleet=fleet, visible=visible)
    success = _success_rates(images, now)
    return [
        {
            "image": row["image"],
            "devices": row["devices"],
            "latest": row["latest"],
            "newest_push": rollouts[row["image"]]["newest_push"],
            "versions": versions[row["image"]],
            "behind": row["behind"],
            "drifting": row["drifting"],
            "rollouts": rollouts[row["image"]]["counts"],
            "success_rate": success.get(row["image"]),
        }
        for row in rows
    ]


def _rollout_summaries(images: list[str]) -> dict[str, dict]:
    summaries = {
        image: {
            "newest_push": None,
            "counts": {"total": 0, "completed": 0, "rolled_back": 0, "cancelled": 0},
        }
        for image in images
    }
    fields = ("image", "status", "new_tag", "new_digest", "created_at")
    for image, status, tag, digest, created_at in (
        Rollout.objects.filter(image__in=images).order_by("-created_at", "-pk").values_list(*fields)
    ):
        summary = summaries[image]
        counts = summary["counts"]
        counts["total"] += 1
        if status in counts:
            counts[status] += 1
        if summary["newest_push"] is None:
            summary["newest_push"] = {"tag": tag, "digest": digest, "received_at": created_at}
    # Every push is recorded, whatever came of it; a rollout stands for its
    # push too (rollouts created before pushes were recorded).
    for push in ImagePush.objects.filter(image__in=images):
        newest = summaries[push.image]["newest_push"]
        if newest is None or push.received_at >= newest["received_at"]:
            summaries[push.image]["newest_push"] = {
                "tag": push.tag, "digest": push.digest, "received_at": push.received_at,
            }
    return summaries


def image_versions(
    images: list[str], *, fleet: str | None = None, visible: QuerySet | None = None
) -> dict[str, list[dict]]:
    """Per image, its versions (tag, digest) with the devices that target
    each and the devices that run it, most targeted first: one pass over the
    union of both sides."""
    table, devices = DeviceService._meta.db_table, Device._meta.db_table
    marks = ", ".join("%s" for _ in images)
    where, where_params = _fleet_filter(fleet, visible)
    counts: dict[str, dict[tuple, dict]] = defaultdict(dict)
    with connection.cursor() as cursor:
        cursor.execute(
            f"""SELECT v.image, v.tag, v.digest,
                       COUNT(DISTINCT CASE WHEN v.side = 't' THEN v.device_id END),
                       COUNT(DISTINCT CASE WHEN v.side = 'r' THEN v.device_id END)
                FROM (
                    SELECT s.target_image AS image, s.target_tag AS tag,
                           s.target_digest AS digest, s.device_id, 't' AS side
                    FROM {table} s JOIN {devices} d ON d.id = s.device_id
                    WHERE s.target_image IN ({marks}) {where}
                    UNION ALL
                    SELECT s.reported_image, s.reported_tag, s.reported_digest, s.device_id, 'r'
                    FROM {table} s JOIN {devices} d ON d.id = s.device_id
                    WHERE s.reported_image IN ({marks}) {where}
                ) v
                GROUP BY v.image, v.tag, v.digest""",
            [*images, *where_params, *images, *where_params],
        )
        for image, tag, digest, targeted, running in cursor.fetchall():
            counts[image][(tag, digest)] = {
                "tag": tag, "digest": digest, "targeted": targeted, "running": running,
            }
    return {
        image: sorted(counts[image].values(), key=lambda v: (-v["targeted"], -v["running"], v["tag"] or ""))
        for image in images
    }


def _fleet_filter(fleet: str | None, visible: QuerySet | None) -> tuple[str, list]:
    """SQL conditions on the device `d`: `?fleet=`, and the fleets the user
    may see (`visible`, a query of fleet ids; None: every fleet)."""
    where, params = "", []
    for fleet_ids in (
        Fleet.objects.filter(slug=fleet).values("pk") if fleet else None,
        visible,
    ):
        if fleet_ids is not None:
            sql, more = fleet_ids.query.get_compiler(connection=connection).as_sql()
            where += f" AND d.fleet_id IN ({sql})"
            params += list(more)
    return where, params


def _success_rates(images: list[str], now: datetime) -> dict[str, float | None]:
    rows = (
        RolloutDevice.objects.filter(rollout__image__in=images, verdict_at__gte=now - SUCCESS_WINDOW)
        .values("rollout__image")
        .annotate(
            healthy=Count("id", filter=Q(status=DeviceStatus.HEALTHY)),
            failed=Count("id", filter=~Q(failure_reason="")),
        )
    )
    rates = {}
    for row in rows:
        judged = row["healthy"] + row["failed"]
        rates[row["rollout__image"]] = round(row["healthy"] / judged, 4) if judged else None
    return rates


def runs_version_q(image: str, tag: str | None, digest: str | None) -> Q:
    """The service reports `image` at this version: by digest when both
    sides know it, by tag otherwise."""
    version = Q(reported_tag=tag)
    if digest:
        version = Q(reported_digest=digest) | (Q(reported_digest__isnull=True) & version)
    return Q(reported_image=image) & version


def devices_behind(queryset: QuerySet, image: str) -> QuerySet:
    """The devices of `queryset` with a service of `image` (targeted or
    running) that does not report its latest version (none before the
    image's first completed rollout)."""
    latest = (
        Rollout.objects.filter(image=image, status=RolloutStatus.COMPLETED)
        .order_by("-finished_at")
        .values("new_tag", "new_digest")
        .first()
    )
    if latest is None:
        return queryset.none()
    behind = DeviceService.objects.filter(
        Q(target_image=image) | Q(reported_image=image), device_id=OuterRef("pk")
    ).exclude(runs_version_q(image, latest["new_tag"], latest["new_digest"]))
    return queryset.filter(Exists(behind))
