"""The fan-out of 100,000 devices with version rules on, against the same
fan-out without them (CONTRACT section 7; goal: ratio <= 1.3).

Run by bench/run as its own step, in a database of its own (any name
starting with `fleet_bench`, dropped and created again):

    DATABASE_URL=postgres://postgres@127.0.0.1:5432/fleet_bench_versions \\
        python -m bench.version_rules --output bench/RESULTS.md

The fleet runs 20 distinct versions (v1.0.0 .. v1.19.0). Each measurement
is `rollout_create_for_push` + `rollout_fan_out` (what the webhook and the
worker run) of v1.25.0: "with rules" under a policy with a
`version_constraint`, `allowed_updates: minor` and a stepping stone
(`required_versions: ["v1.10.0"]`, so half the devices get a `via`);
"without" under a policy with none. Both write a row per device. Median of
`--repeats` each, interleaved, from a vacuumed database. `--devices` makes
it smaller (the section then says so).
"""

import argparse
import os
import statistics
import time

import django

os.environ.setdefault("DJANGO_SETTINGS_MODULE", "bench.settings")

DEVICES = 100_000
VERSIONS = 20
REPEATS = 3
RULED = "docker.io/bench/versions-ruled"
PLAIN = "docker.io/bench/versions-plain"
BEGIN = "<!-- version-rules:begin -->"
END = "<!-- version-rules:end -->"


def build(devices: int) -> None:
    """Two fleets of `devices` each, one per image, on VERSIONS versions."""
    from django.db import connection

    from devices.models import Device, DeviceService, Fleet
    from rollouts.models import ImagePolicy

    for image in (RULED, PLAIN):
        slug = image.rsplit("/", 1)[-1]
        fleet = Fleet.objects.create(slug=slug, name=slug, provisioning_key_hash=slug.ljust(64, "x"))
        with connection.cursor() as cursor:
            cursor.execute(
                f"""INSERT INTO {Device._meta.db_table} (uuid, name, fleet_id, api_key_hash,
                                                          target_version, created_at)
                    SELECT gen_random_uuid(), %s || '-' || i, %s, md5(%s || i) || md5(i::text),
                           1, now()
                    FROM generate_series(1, %s) AS i""",
                [slug, fleet.pk, slug, devices],
            )
            cursor.execute(
                f"""INSERT INTO {DeviceService._meta.db_table}
                        (device_id, name, target_image, target_tag, target_changed_at, pinned,
                         update_strategy, stop_timeout_seconds)
                    SELECT id, 'web', %s, 'v1.' || (id %% %s) || '.0', now(), false,
                           'download-then-kill', 10
                    FROM {Device._meta.db_table} WHERE fleet_id = %s""",
                [image, VERSIONS, fleet.pk],
            )
    ImagePolicy.objects.create(
        image_pattern=f"{RULED}:*",
        update_strategy="manual",
        version_constraint=">=1.0.0 <2.0.0",
        allowed_updates="minor",
        required_versions=["v1.10.0"],
    )
    ImagePolicy.objects.create(image_pattern=f"{PLAIN}:*", update_strategy="manual")


def fan_out(image: str, tag: str, devices: int) -> tuple[float, int]:
    from django.db import connection
    from django.test.utils import CaptureQueriesContext

    from rollouts.models import Rollout, RolloutDevice, RolloutStatus
    from rollouts.services import rollout_create_for_push, rollout_fan_out

    # The last round's rollout would be superseded inside the measurement.
    Rollout.objects.filter(image=image).update(status=RolloutStatus.CANCELLED)
    settle()
    with CaptureQueriesContext(connection) as queries:
        started = time.perf_counter()
        outcome = rollout_create_for_push(image=image, tag=tag, digest=None)
        rollout_fan_out(rollout_id=outcome.rollout.pk)
        elapsed = time.perf_counter() - started
    rows = RolloutDevice.objects.filter(rollout=outcome.rollout).count()
    if rows != devices:
        raise SystemExit(f"Benchmark setup is wrong: {rows} rows, expected {devices}.")
    return elapsed, len(queries)


def settle() -> None:
    from django.db import connection

    with connection.cursor() as cursor:
        cursor.execute("VACUUM ANALYZE")
        cursor.execute("CHECKPOINT")


def main() -> None:
    from bench.inventory import reset_database

    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--output", default="bench/RESULTS.md")
    parser.add_argument("--repeats", type=int, default=REPEATS)
    parser.add_argument("--devices", type=int, default=DEVICES)
    args = parser.parse_args()
    reset_database()
    django.setup()
    from django.conf import settings
    from django.core.management import call_command

    # The fan-out would ask Docker Hub for the digest of a bench image.
    settings.REGISTRY_RESOLVE_DIGESTS = False
    call_command("migrate", verbosity=0)
    started = time.perf_counter()
    build(args.devices)
    print(f"built 2 x {args.devices:,} devices in {time.perf_counter() - started:.1f} s", flush=True)
    fan_out(RULED, "v1.20.0", args.devices), fan_out(PLAIN, "v1.20.0", args.devices)  # warm-up
    ruled, plain, queries = [], [], {}
    for round_number in range(args.repeats):
        tag = f"v1.{21 + round_number}.0"
        seconds, queries["ruled"] = fan_out(RULED, tag, args.devices)
        ruled.append(seconds)
        seconds, queries["plain"] = fan_out(PLAIN, tag, args.devices)
        plain.append(seconds)
        print(f"round {round_number + 1}: with rules {ruled[-1]:.2f} s, without {plain[-1]:.2f} s", flush=True)
    write_section(args, statistics.median(ruled), statistics.median(plain), queries)


def write_section(args, ruled: float, plain: float, queries: dict) -> None:
    reduced = "" if args.devices == DEVICES else f" (reduced run: {args.devices:,} devices, not {DEVICES:,})"
    section = f"""{BEGIN}
## Fan-out with version rules

`bench/version_rules.py`{reduced}: create and fan out a rollout of
{args.devices:,} devices running {VERSIONS} distinct versions, under a policy
with a version constraint, `allowed_updates: minor` and a stepping stone
(half the devices get a `via`), against the same fan-out under a policy
without version rules. Median of {args.repeats} interleaved runs each,
from a vacuumed database; goal <= 1.3.

| measurement | with rules | without | with / without |
|---|---|---|---|
| create + fan-out, {args.devices:,} devices, {VERSIONS} versions | {ruled * 1000:.0f} ms ({queries["ruled"]} queries) | {plain * 1000:.0f} ms ({queries["plain"]} queries) | {ruled / plain:.2f} |
{END}
"""
    try:
        with open(args.output) as file:
            text = file.read()
    except FileNotFoundError:
        text = "# Benchmark results\n"
    if BEGIN in text and END in text:
        text = text[: text.index(BEGIN)] + section.rstrip("\n") + text[text.index(END) + len(END):]
    else:
        text = text.rstrip("\n") + "\n\n" + section
    with open(args.output, "w") as file:
        file.write(text)
    print(section, flush=True)


if __name__ == "__main__":
    main()
