"""Prometheus metrics, computed from the database at scrape time.

Gauges read at scrape time are right whichever gunicorn worker answers, which
per-process counters would not be without prometheus_client's multiprocess
mode and its shared directory. Counters and histograms live in the database
too (the `counters` app): every web and worker process, on any machine, adds
to the same rows, and a scrape first counts the rollout events committed
since the last one (rollouts.counting).
"""

from django.db.models import Count, Q
from prometheus_client import CONTENT_TYPE_LATEST, generate_latest
from prometheus_client.core import CollectorRegistry, GaugeMetricFamily

from devices.models import Device
from devices.selectors import online_since
from counters.selectors import counter_family, histogram_family
from rollouts.counting import rollout_counters_rollup
from rollouts.metrics import rollout_metric_families


class FleetCollector:
    def collect(self):
        devices = GaugeMetricFamily(
            "fleet_devices", "Devices per fleet and online state.", labels=["fleet", "online"]
        )
        rows = Device.objects.values("fleet__slug").annotate(
            total=Count("id"), online=Count("id", filter=Q(last_seen_at__gte=online_since()))
        )
        for row in rows:
            devices.add_metric([row["fleet__slug"], "true"], row["online"])
            devices.add_metric([row["fleet__slug"], "false"], row["total"] - row["online"])
        yield devices
        yield from rollout_metric_families()
        yield from counter_families()


def counter_families():
    rollout_counters_rollup()
    yield counter_family(
        "fleet_device_updates",
        "Devices of rollouts that became healthy, failed, or went back to their previous image.",
        ["image", "result"],
    )
    yield counter_family(
        "fleet_rollouts_finished", "Rollouts that reached a final status.", ["status"]
    )
    yield counter_family(
        "fleet_auto_rollbacks",
        "Failure-threshold breaches whose rollout sent its devices back by itself"
        " (an operator's roll back all is not one).",
        ["image"],
    )
    yield counter_family(
        "fleet_notification_deliveries",
        "Attempts of notification hook deliveries: delivered, failed (retried later),"
        " gave_up (the last retry failed).",
        ["result"],
    )
    yield counter_family(
        "fleet_webhook_deliveries",
        "Answers of the registry webhook endpoint, by registry and outcome.",
        ["registry", "status"],
    )
    yield histogram_family(
        "fleet_rollout_duration_seconds", "Start to finish of completed rollouts.", []
    )
    yield histogram_family("fleet_engine_tick_seconds", "Duration of engine ticks.", [])


def render_metrics() -> tuple[bytes, str]:
    registry = CollectorRegistry(auto_describe=False)
    registry.register(FleetCollector())
    return generate_latest(registry), CONTENT_TYPE_LATEST
