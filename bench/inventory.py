"""GET /api/v1/images/ over 100,000 devices and 50 images, against the raw SQL
aggregate computing the same figures on the same rows.

Run by bench/run as its own step, in a database of its own (any name
starting with `fleet_bench`, dropped and created again):

    DATABASE_URL=postgres://postgres@127.0.0.1:5432/fleet_bench_inventory \\
        python -m bench.inventory --output bench/RESULTS.md

Ours is the whole view (authentication, pagination, every aggregate, the
serializer) called in-process through Django's test client, so HTTP serving
is left out on both sides. The baseline is the fewest SQL statements that
produce the same figures (four), with nothing around them. The section
between its markers in RESULTS.md is replaced, the rest of the file kept.
"""

import argparse
import os
import statistics
import time
from datetime import timedelta

import django

os.environ.setdefault("DJANGO_SETTINGS_MODULE", "bench.settings")

DEVICES = 100_000
IMAGES = 50
REPEATS = 7
BEGIN = "<!-- inventory:begin -->"
END = "<!-- inventory:end -->"


def reset_database() -> None:
    import environ
    import psycopg

    db = environ.Env.db_url_config(os.environ["DATABASE_URL"])
    if not db["NAME"].startswith("fleet_bench"):
        raise SystemExit(f"Refusing to drop {db['NAME']!r}: it must be named fleet_bench*.")
    with psycopg.connect(
        host=db["HOST"], port=db["PORT"] or 5432, user=db["USER"], password=db["PASSWORD"] or None,
        dbname="postgres", autocommit=True,
    ) as conn:
        conn.execute(f'DROP DATABASE IF EXISTS "{db["NAME"]}" WITH (FORCE)')
        conn.execute(f'CREATE DATABASE "{db["NAME"]}"')


def build(now) -> None:
    """100,000 devices over 50 images: per image most devices on its latest
    version, some behind, a few drifting; four rollouts per image, the
    completed one with a verdict row per device."""
    from django.db import connection

    from devices.models import Device, DeviceService, Fleet
    from rollouts.models import Rollout, RolloutDevice

    fleet = Fleet.objects.create(slug="inventory", name="Inventory", provisioning_key_hash="x" * 64)
    devices, services = Device._meta.db_table, DeviceService._meta.db_table
    rollouts, rows = Rollout._meta.db_table, RolloutDevice._meta.db_table
    with connection.cursor() as cursor:
        cursor.execute(
            f"""INSERT INTO {devices} (uuid, name, fleet_id, api_key_hash, target_version, created_at)
                SELECT gen_random_uuid(), 'd-' || i, %s, md5('d' || i) || md5('k' || i), 1, %s
                FROM generate_series(1, %s) AS i""",
            [fleet.pk, now, DEVICES],
        )
        # Image i %% 50; version by i %% 20: 16 of 20 on 2.0 (latest), 3 on 1.9, 1 on 1.8;
        # every 50th device reports 1.9 while it targets 2.0 (drifting).
        cursor.execute(
            f"""INSERT INTO {services} (device_id, name, target_image, target_tag, target_digest,
                    target_changed_at, pinned, reported_image, reported_tag, reported_digest,
                    reported_status, reported_health, reported_at)
                SELECT d.id, 'web', v.image, v.tag, v.digest, %s, FALSE, v.image,
                       CASE WHEN d.id %% 50 = 0 THEN '1.9' ELSE v.tag END,
                       CASE WHEN d.id %% 50 = 0 THEN NULL ELSE v.digest END,
                       'running', 'healthy', %s
                FROM {devices} d,
                LATERAL (SELECT 'docker.io/bench/app-' || (d.id %% %s) AS image,
                                CASE WHEN d.id %% 20 < 16 THEN '2.0' WHEN d.id %% 20 < 19 THEN '1.9'
                                     ELSE '1.8' END AS tag,
                                CASE WHEN d.id %% 20 < 16
                                     THEN 'sha256:' || encode(sha256(convert_to('app-' || (d.id %% %s), 'UTF8')), 'hex')
                                END AS digest) v""",
            [now - timedelta(days=1), now, IMAGES, IMAGES],
        )
        for number, (tag, status, age) in enumerate(
            [("1.9", "completed", 20), ("2.0", "completed", 5), ("2.1", "rolled_back", 2), ("2.2", "pending", 0)]
        ):
            cursor.execute(
                f"""INSERT INTO {rollouts} (id, image, new_tag, new_digest, trigger, strategy, status,
                        status_reason, current_batch, total_batches, total_devices, step,
                        supersede_later, created_at, finished_at, batch_percentages,
                        batch_delay_minutes, health_check_enabled, health_check_timeout_seconds,
                        auto_rollback_enabled, max_failure_rate, min_failure_samples,
                        device_tags, device_uuids, require_digest)
                    SELECT gen_random_uuid(), 'docker.io/bench/app-' || i, %s,
                           CASE WHEN %s = '2.0' THEN 'sha256:' || encode(sha256(convert_to('app-' || i, 'UTF8')), 'hex') END,
                           'webhook', 'staged', %s, '', 0, 3, 0, 0, '[]', %s, %s, '[10, 50, 100]',
                           30, TRUE, 300, TRUE, 0.2, 5, '[]', '[]', FALSE
                    FROM generate_series(0, %s) AS i""",
                [tag, tag, status, now - timedelta(days=age, minutes=number),
                 None if status == "pending" else now - timedelta(days=age), IMAGES - 1],
            )
        # Verdicts of the completed 2.0 rollout: one row per device, 1 in 25 failed.
        cursor.execute(
            f"""INSERT INTO {rows} (rollout_id, device_id, service, batch, status, failure_reason,
                    new_tag, new_digest, verdict_at, step)
                SELECT r.id, s.device_id, 'web', 1,
                       CASE WHEN s.device_id %% 25 = 0 THEN 'failed' ELSE 'healthy' END,
                       CASE WHEN s.device_id %% 25 = 0 THEN 'unhealthy' ELSE '' END,
                       r.new_tag, r.new_digest, %s, 0
                FROM {services} s JOIN {rollouts} r
                  ON r.image = s.target_image AND r.new_tag = '2.0'""",
            [now - timedelta(days=5)],
        )
        cursor.execute("VACUUM ANALYZE")


BASELINE = [
    # Devices per image and, against each image's latest completed version,
    # devices behind and drifting.
    """
    WITH latest AS (
        SELECT DISTINCT ON (image) image, new_tag AS tag, new_digest AS digest
        FROM rollouts_rollout WHERE status = 'completed' ORDER BY image, finished_at DESC
    ), sides AS (
        SELECT s.target_image AS image, s.device_id, s.reported_image, s.reported_tag,
               s.reported_digest, s.target_tag, s.target_digest, s.target_changed_at
        FROM devices_deviceservice s WHERE s.target_image IS NOT NULL
        UNION ALL
        SELECT s.reported_image, s.device_id, s.reported_image, s.reported_tag, s.reported_digest,
               NULL, NULL, NULL
        FROM devices_deviceservice s
        WHERE s.reported_image IS NOT NULL AND s.reported_image IS DISTINCT FROM s.target_image
    )
    SELECT x.image, COUNT(DISTINCT x.device_id),
           COUNT(DISTINCT x.device_id) FILTER (WHERE l.tag IS NOT NULL AND NOT COALESCE(
               x.reported_image = x.image AND CASE WHEN l.digest IS NOT NULL AND x.reported_digest IS NOT NULL
               THEN x.reported_digest = l.digest ELSE x.reported_tag = l.tag END, FALSE)),
           COUNT(DISTINCT x.device_id) FILTER (WHERE x.target_changed_at < now() - interval '3 minutes'
               AND NOT COALESCE(x.reported_image = x.image AND x.reported_tag = x.target_tag
               AND (x.reported_digest IS NULL OR x.target_digest IS NULL
                    OR x.reported_digest = x.target_digest), FALSE))
    FROM sides x LEFT JOIN latest l ON l.image = x.image
    GROUP BY x.image ORDER BY 2 DESC, x.image
    """,
    # Versions: targeted and running per (image, tag, digest).
    """
    SELECT image, tag, digest, SUM(targeted), SUM(running) FROM (
        SELECT target_image AS image, target_tag AS tag, target_digest AS digest,
               COUNT(DISTINCT device_id) AS targeted, 0 AS running
        FROM devices_deviceservice WHERE target_image IS NOT NULL GROUP BY 1, 2, 3
        UNION ALL
        SELECT reported_image, reported_tag, reported_digest, 0, COUNT(DISTINCT device_id)
        FROM devices_deviceservice WHERE reported_image IS NOT NULL GROUP BY 1, 2, 3
    ) v GROUP BY 1, 2, 3
    """,
    # Rollouts per image: totals, newest push, latest completed.
    """
    SELECT image, COUNT(*), COUNT(*) FILTER (WHERE status = 'completed'),
           COUNT(*) FILTER (WHERE status = 'rolled_back'), COUNT(*) FILTER (WHERE status = 'cancelled'),
           (ARRAY_AGG(new_tag ORDER BY created_at DESC))[1],
           (ARRAY_AGG(new_tag ORDER BY finished_at DESC) FILTER (WHERE status = 'completed'))[1]
    FROM rollouts_rollout GROUP BY image
    """,
    # Success rate over the verdicts of the last 30 days.
    """
    SELECT r.image, COUNT(*) FILTER (WHERE d.status = 'healthy'),
           COUNT(*) FILTER (WHERE d.failure_reason <> '')
    FROM rollouts_rolloutdevice d JOIN rollouts_rollout r ON r.id = d.rollout_id
    WHERE d.verdict_at >= now() - interval '30 days'
    GROUP BY r.image
    """,
]


def measure_ours(client) -> tuple[float, int]:
    from django.db import connection
    from django.test.utils import CaptureQueriesContext

    with CaptureQueriesContext(connection) as queries:
        started = time.perf_counter()
        response = client.get(f"/api/v1/images/?page_size={IMAGES}")
        elapsed = time.perf_counter() - started
    assert response.status_code == 200, response.content[:300]
    body = response.json()
    assert body["count"] == IMAGES and len(body["results"]) == IMAGES, body["count"]
    return elapsed, len(queries.captured_queries)


def measure_baseline() -> float:
    from django.db import connection

    started = time.perf_counter()
    with connection.cursor() as cursor:
        for statement in BASELINE:
            cursor.execute(statement)
            cursor.fetchall()
    return time.perf_counter() - started


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--output", default="bench/RESULTS.md")
    parser.add_argument("--repeats", type=int, default=REPEATS)
    args = parser.parse_args()
    reset_database()
    django.setup()
    from django.conf import settings
    from django.contrib.auth.models import User
    from django.core.management import call_command
    from django.test import Client
    from django.utils import timezone

    settings.ALLOWED_HOSTS = [*settings.ALLOWED_HOSTS, "testserver"]
    call_command("migrate", verbosity=0)
    started = time.perf_counter()
    build(timezone.now())
    print(f"built {DEVICES:,} devices over {IMAGES} images in {time.perf_counter() - started:.1f} s", flush=True)
    client = Client()
    client.force_login(User.objects.create_superuser("bench", "bench@example.com", None))
    measure_ours(client), measure_baseline()  # warm-up: caches, plans
    ours, baseline, queries = [], [], 0
    for _ in range(args.repeats):
        elapsed, queries = measure_ours(client)
        ours.append(elapsed)
        baseline.append(measure_baseline())
    write_section(args.output, statistics.median(ours), statistics.median(baseline), queries, args.repeats)


def write_section(path: str, ours: float, baseline: float, queries: int, repeats: int) -> None:
    section = f"""{BEGIN}
## Inventory: GET /api/v1/images/

`bench/inventory.py`: {DEVICES:,} devices over {IMAGES} images (one page of
{IMAGES}), four rollouts per image and a verdict row per device. Ours is the
whole view in-process (auth, pagination, aggregates, serializer; no HTTP);
the baseline the four raw SQL statements that compute the same figures on
the same rows. Median of {repeats} runs each, interleaved.

| measurement | ours | raw SQL aggregate | ours / baseline |
|---|---|---|---|
| GET /images/, {DEVICES:,} devices, {IMAGES} images | {ours * 1000:.0f} ms ({queries} queries) | {baseline * 1000:.0f} ms (4 statements) | {ours / baseline:.2f} |
{END}
"""
    try:
        with open(path) as file:
            text = file.read()
    except FileNotFoundError:
        text = "# Benchmark results\n"
    if BEGIN in text and END in text:
        text = text[: text.index(BEGIN)] + section.rstrip("\n") + text[text.index(END) + len(END):]
    else:
        text = text.rstrip("\n") + "\n\n" + section
    with open(path, "w") as file:
        file.write(text)
    print(section, flush=True)


if __name__ == "__main__":
    main()
