"""Prometheus metrics, computed from the database at scrape time.

Gauges read at scrape time are right whichever gunicorn worker answers, which
per-process counters would not be without prometheus_client's multiprocess
mode and its shared directory.
"""

from django.db.models import Count, Q
from prometheus_client import CONTENT_TYPE_LATEST, generate_latest
from prometheus_client.core import CollectorRegistry, GaugeMetricFamily

from devices.models import Device
from devices.selectors import online_since
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


def render_metrics() -> tuple[bytes, str]:
    registry = CollectorRegistry(auto_describe=False)
    registry.register(FleetCollector())
    return generate_latest(registry), CONTENT_TYPE_LATEST
