"""The agent endpoints over HTTP, driven by wrk: poll (304 and 200) and report.

Every scenario runs `--rounds` times for `--seconds`, the scenarios
interleaved (A B C … A B C …), so that a change in the machine's load touches
every scenario alike; the figures are the medians of the rounds. Beside each
figure: the bare Django view (same gunicorn, same middleware, no database) and
a bare WSGI app (same gunicorn, no Django), measured in the same rounds.
"""

import statistics
from dataclasses import dataclass, field
from datetime import datetime, timedelta

from django.conf import settings
from django.db import connection
from django.utils import timezone

from devices.models import Device, Fleet
from devices.views import state_etag

from ..fleets import ENGINE_100K, HOOK_100K, HTTP_IMAGE, REPORT_IMAGE, ensure_fleet, fleet_slug, settle
from ..report import ms, ratio, table
from ..wrk import Device as WrkDevice
from ..wrk import CLOSE_EVERY, DeviceFile, WrkResult, run_wrk
from ..wsgi import BARE_PREFIX

TITLE = "Agent endpoints over HTTP (wrk)"
STATE_PATH = "/api/v1/device/{uuid}/state"
DJANGO_PATH = "/bench/baseline/{uuid}/state"
WSGI_PATH = BARE_PREFIX + "{uuid}/state"
SMALL_FLEET = (HTTP_IMAGE, 1_000)
# Reports rewrite their devices' rows thousands of times a round: in a fleet of
# their own, the dead rows they leave never slow the polls of SMALL_FLEET.
REPORT_FLEET = (REPORT_IMAGE, 1_000)
# Two fleets of 100,000: one whose devices were all seen just now, one whose
# devices were all last seen one poll interval ago.
LARGE_FLEET = (HOOK_100K, 100_000)
INTERVAL_FLEET = (ENGINE_100K, 100_000)
FLEETS = (SMALL_FLEET, REPORT_FLEET, LARGE_FLEET, INTERVAL_FLEET)
WARMUP_SECONDS = 1.0
# Long enough that "seen just now" stays true through every round (a poll
# records presence only when the stored one is half an interval old).
FRESH_FOR = timedelta(hours=1)


@dataclass(frozen=True)
class Scenario:
    key: str
    label: str
    path: str
    mode: str  # see agents.lua
    fleet: tuple[str, int]
    expected_status: int


@dataclass
class Figures:
    rounds: list[WrkResult] = field(default_factory=list)
    server_cpu_seconds: list[float] = field(default_factory=list)
    busiest_worker_shares: list[float] = field(default_factory=list)
    unexpected_counts: list[int] = field(default_factory=list)

    def median(self, attribute: str) -> float:
        return statistics.median(getattr(result, attribute) for result in self.rounds)

    @property
    def requests(self) -> int:
        return sum(result.requests for result in self.rounds)

    @property
    def unexpected(self) -> int:
        return sum(self.unexpected_counts)

    @property
    def cpu_per_request_ms(self) -> float | None:
        if not self.server_cpu_seconds or not self.requests:
            return None
        return sum(self.server_cpu_seconds) / self.requests * 1000


def _set_presence(image: str, seen: datetime) -> None:
    fleet = Fleet.objects.get(slug=fleet_slug(image))
    with connection.cursor() as cursor:
        cursor.execute(
            f"UPDATE {Device._meta.db_table} SET last_seen_at = %s WHERE fleet_id = %s",
            [seen, fleet.pk],
        )


def scenarios() -> list[Scenario]:
    return [
        Scenario("wsgi 304", "bare WSGI app, GET 304", WSGI_PATH, "poll304", SMALL_FLEET, 304),
        Scenario("django 304", "bare Django view, GET 304", DJANGO_PATH, "poll304", SMALL_FLEET, 304),
        Scenario("poll 304", "poll 304, 1,000 devices back to back", STATE_PATH, "poll304",
                 SMALL_FLEET, 304),
        # Seen just now: no device is due to have its presence recorded, as
        # in the back-to-back scenario; only the size of the table differs.
        Scenario("poll 304 100k", "poll 304, 100,000 devices", STATE_PATH, "poll304",
                 LARGE_FLEET, 304),
        # Every device last seen one poll interval ago, and each round polls
        # devices no earlier round polled (agents.lua starts every round
        # 9,973 places further in its rotation of 100,000): every poll is a
        # device polling at its interval, whose presence must be recorded,
        # as in a real fleet.
        Scenario("poll 304 interval", "poll 304, 100,000 devices at their interval",
                 STATE_PATH, "poll304", INTERVAL_FLEET, 304),
        Scenario("poll 200", "poll 200, 1,000 devices", STATE_PATH, "poll200", SMALL_FLEET, 200),
        Scenario("wsgi PATCH", "bare WSGI app, PATCH", WSGI_PATH, "report", SMALL_FLEET, 200),
        Scenario("django PATCH", "bare Django view, PATCH", DJANGO_PATH, "report", SMALL_FLEET,
                 200),
        Scenario("report", "report (PATCH), 1,000 devices", STATE_PATH, "report", REPORT_FLEET,
                 200),
    ]


def prepare(bench) -> None:
    for image, count in FLEETS:
        ensure_fleet(image, count)
    now = timezone.now()
    _set_presence(LARGE_FLEET[0], now + FRESH_FOR)
    _set_presence(INTERVAL_FLEET[0], now - timedelta(seconds=settings.DEVICE_POLL_INTERVAL_SECONDS))
    settle()


# wrk rotates over every device of a fleet (100,000 lines read in well under
# a second). Each round starts 9,973 devices further (agents.lua), more than a
# round of --seconds 4 polls at this machine's rates, so no round polls a
# device an earlier round polled: at their interval, every poll is due.
ROTATION = 100_000


def _device_file(image: str) -> DeviceFile:
    rows = list(
        Device.objects.filter(fleet__slug=fleet_slug(image))
        .order_by("id")
        .values_list("uuid", "name", "target_version")
    )
    rows = rows[:: max(1, len(rows) // ROTATION)]
    # The benchmark fleets' api key of a device is its name (bench.fleets).
    return DeviceFile(WrkDevice(str(uuid), name, state_etag(version)) for uuid, name, version in rows)


def run(bench) -> list[str]:
    options = bench.options
    plan = scenarios()
    files = {image: _device_file(image) for image, _ in FLEETS}
    figures = {scenario.key: Figures() for scenario in plan}
    try:
        for scenario in plan:
            bench.log(f"warm-up: {scenario.label}")
            _round(bench, scenario, files, seconds=WARMUP_SECONDS, seed=0)
        for number in range(1, options.rounds + 1):
            bench.log(f"round {number} of {options.rounds}: {len(plan)} scenarios")
            for scenario in plan:
                result, cpu, busiest = _round(bench, scenario, files, options.seconds, seed=number)
                figures[scenario.key].rounds.append(result)
                figures[scenario.key].unexpected_counts.append(result.unexpected(scenario.expected_status))
                if cpu is not None:
                    figures[scenario.key].server_cpu_seconds.append(cpu)
                if busiest is not None:
                    figures[scenario.key].busiest_worker_shares.append(busiest)
    finally:
        for file in files.values():
            file.remove()
    return section(bench, plan, figures)


def _round(bench, scenario: Scenario, files, seconds: float, seed: int):
    before = bench.server.sample()
    result = run_wrk(
        bench.url,
        files[scenario.fleet[0]],
        mode=scenario.mode,
        path=scenario.path,
        seconds=seconds,
        connections=bench.options.connections,
        seed=seed,
    )
    after = bench.server.sample()
    return (
        result,
        bench.server.seconds_between(before, after),
        bench.server.busiest_worker_share(before, after),
    )


# --- the section -------------------------------------------------------------


def _shares(shares: list[float]) -> str:
    if not shares:
        return "n/a"
    return f"{statistics.median(shares):.2f} ({min(shares):.2f}–{max(shares):.2f})"

BASELINES = {"304": ("django 304", "wsgi 304"), "PATCH": ("django PATCH", "wsgi PATCH")}


def _baselines(key: str) -> tuple[str, str]:
    return BASELINES["PATCH"] if key in ("report", "django PATCH", "wsgi PATCH") else BASELINES["304"]


def _throughput_ratio(figures: dict[str, Figures], ours: str, base: str) -> float:
    return figures[ours].median("throughput") / figures[base].median("throughput")


def section(bench, plan: list[Scenario], figures: dict[str, Figures]) -> list[str]:
    rows = []
    for scenario in plan:
        mine = figures[scenario.key]
        django_key, wsgi_key = _baselines(scenario.key)
        django, wsgi = figures[django_key], figures[wsgi_key]
        rows.append(
            [
                scenario.label,
                f"{mine.median('throughput'):,.0f} req/s",
                f"{ms(mine.median('p50_ms'))} / {ms(mine.median('p99_ms'))}",
                ms(mine.cpu_per_request_ms),
                ratio(mine.median("throughput"), django.median("throughput")),
                ratio(mine.cpu_per_request_ms, django.cpu_per_request_ms),
                ratio(mine.median("throughput"), wsgi.median("throughput")),
                f"{mine.requests:,} ({mine.unexpected} unexpected)",
                _shares(mine.busiest_worker_shares),
            ]
        )
    goals = _goals(figures)
    options = bench.options
    return [
        f"gunicorn as the Procfile runs it (`{bench.gunicorn}`); wrk with "
        f"{options.connections} keep-alive connections on one thread, one request in "
        f"{CLOSE_EVERY} closing its connection so that wrk opens a new one "
        "(`bench/agents.lua`): each request is the next device's, with its own api key "
        "and its own ETag, rotating over all the devices of a fleet. Every scenario ran "
        f"{options.rounds} rounds of {options.seconds:g} s, interleaved with the others "
        "(after a 1 s warm-up each); throughput and latencies are the medians of the "
        "rounds. Server CPU per request: gunicorn workers and PostgreSQL backends (from "
        "/proc), over all rounds. The baselines answer from the same gunicorn: the bare "
        "Django view (`bench/baseline_urls.py`: behind every middleware, no database) and "
        "a bare WSGI app (`bench/wsgi.py`: no Django at all); GET scenarios are compared "
        "with their GET 304, the report with their PATCH. \"Unexpected\" counts socket "
        "errors and answers of another status than the scenario's. The busiest worker's "
        "share of the workers' CPU (median, and range over the rounds) says how evenly the "
        "workers shared the work (0.50: evenly; 1.00: one did it all); a keep-alive "
        "connection stays with the worker that accepted it, which is why wrk's connections "
        "are renewed as they go.",
        "",
        *table(
            [
                "scenario",
                "throughput",
                "latency p50 / p99",
                "server CPU / request",
                "throughput / bare Django",
                "CPU / bare Django",
                "throughput / bare WSGI",
                "requests",
                "busiest worker's CPU share",
            ],
            rows,
        ),
        "",
        "The figures of issue 11, from the table above:",
        "",
        *table(["figure", "goal", "measured", "met"], goals),
    ]


def _goals(figures: dict[str, Figures]) -> list[list[str]]:
    def cpu_ratio(ours: str, base: str) -> float:
        mine, theirs = figures[ours].cpu_per_request_ms, figures[base].cpu_per_request_ms
        return mine / theirs if mine and theirs else float("nan")

    checks = [
        ("poll 304, throughput / bare Django 304", ">= 0.70",
         _throughput_ratio(figures, "poll 304", "django 304"), lambda v: v >= 0.70),
        ("poll 304, server CPU per request / bare Django 304", "<= 1.5",
         cpu_ratio("poll 304", "django 304"), lambda v: v <= 1.5),
        # Against the fleet of the same size, seen just now: only the presence
        # bookkeeping differs, not the size of the table and its index.
        ("poll 304 at their interval / back to back (both 100,000 devices)", ">= 0.95",
         _throughput_ratio(figures, "poll 304 interval", "poll 304 100k"), lambda v: v >= 0.95),
        ("poll 200, throughput / bare Django 304", ">= 0.50",
         _throughput_ratio(figures, "poll 200", "django 304"), lambda v: v >= 0.50),
        ("report PATCH, throughput / bare Django PATCH", ">= 0.45",
         _throughput_ratio(figures, "report", "django PATCH"), lambda v: v >= 0.45),
        ("poll 304 at 100,000 devices / 1,000", ">= 0.95",
         _throughput_ratio(figures, "poll 304 100k", "poll 304"), lambda v: v >= 0.95),
    ]
    return [
        [label, goal, f"{value:.2f}", "yes" if met(value) else "**no**"]
        for label, goal, value, met in checks
    ]
