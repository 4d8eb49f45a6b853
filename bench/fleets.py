"""Fleets for the benchmarks, written with set-based SQL (setup is not measured)."""

from django.db import connection
from django.utils import timezone

from devices.models import Device, DeviceService, Fleet
from devices.services import fleet_create
from rollouts.models import ImagePolicy, UpdateStrategy

OLD_TAG = "v1.0.0"
# One image per fleet, so that a push reaches exactly the fleet it names.
ENGINE_10K = "docker.io/bench/engine-10k"
ENGINE_100K = "docker.io/bench/engine-100k"
HOOK_10 = "docker.io/bench/hook-10"
HOOK_100K = "docker.io/bench/hook-100k"
HTTP_IMAGE = "docker.io/bench/http"
# The report scenario's own fleet: its writes must not leave dead rows in the
# fleet the polls read.
REPORT_IMAGE = "docker.io/bench/report"
# Two batches: the first is half of the rollout, 50,000 devices of 100,000.
BATCH_PERCENTAGES = [50, 100]


def fleet_slug(image: str) -> str:
    return image.rsplit("/", 1)[-1]


def ensure_fleet(image: str, count: int) -> int:
    """The fleet of `image` (see build_fleet), built unless a step already did."""
    existing = Fleet.objects.filter(slug=fleet_slug(image)).values_list("pk", flat=True).first()
    return existing or build_fleet(image, count)


def build_fleet(image: str, count: int) -> int:
    """`count` devices whose service `web` targets image:OLD_TAG; returns the fleet id.

    The api key of device `{slug}-{i}` is its name, `{slug}-{i}` (stored hashed,
    as always): the HTTP benchmarks authenticate as these devices.
    """
    name = fleet_slug(image)
    fleet, _ = fleet_create(slug=name, name=f"Bench {name}")
    devices = Device._meta.db_table
    services = DeviceService._meta.db_table
    now = timezone.now()
    with connection.cursor() as cursor:
        cursor.execute(
            f"""
            INSERT INTO {devices} (uuid, name, fleet_id, api_key_hash, target_version, created_at)
            SELECT gen_random_uuid(), %s || '-' || i, %s,
                   encode(sha256(convert_to(%s || '-' || i, 'UTF8')), 'hex'), 1, %s
            FROM generate_series(1, %s) AS i
            """,
            [name, fleet.pk, name, now, count],
        )
        cursor.execute(
            f"""
            INSERT INTO {services}
                (device_id, name, target_image, target_tag, target_changed_at, pinned)
            SELECT id, 'web', %s, %s, %s, false FROM {devices} WHERE fleet_id = %s
            """,
            [image, OLD_TAG, now, fleet.pk],
        )
    return fleet.pk


def ensure_policy() -> ImagePolicy:
    """Manual strategy: the fan-out only fills the rollout, and starting it is
    a separate, separately measured step (the first batch). No ramp: the
    step measures a whole batch released by one statement."""
    policy, _ = ImagePolicy.objects.get_or_create(
        image_pattern="docker.io/bench/*:*",
        defaults={
            "update_strategy": UpdateStrategy.MANUAL,
            "batch_percentages": BATCH_PERCENTAGES,
            "ramp_initial": None,
        },
    )
    return policy


def settle() -> None:
    """No dead rows, fresh statistics and no dirty pages, so that every
    measured step starts from the same footing and none pays for the last."""
    with connection.cursor() as cursor:
        cursor.execute("VACUUM ANALYZE")
        cursor.execute("CHECKPOINT")
