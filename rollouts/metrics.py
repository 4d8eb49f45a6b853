"""Prometheus metric families of rollouts, read from the database at scrape time."""

from django.db.models import Count
from prometheus_client.core import GaugeMetricFamily

from .models import ACTIVE_STATUSES, Rollout, RolloutDevice
from .selectors import active_rollouts, failure_rate


def rollout_metric_families():
    by_status = GaugeMetricFamily("fleet_rollouts", "Rollouts per status.", labels=["status"])
    for status, count in Rollout.objects.values_list("status").annotate(n=Count("id")):
        by_status.add_metric([status], count)
    yield by_status

    devices = GaugeMetricFamily(
        "fleet_rollout_devices",
        "Devices of active rollouts per device status.",
        labels=["rollout", "image", "tag", "status"],
    )
    rows = (
        RolloutDevice.objects.filter(rollout__status__in=ACTIVE_STATUSES)
        .values_list("rollout_id", "rollout__image", "rollout__new_tag", "status")
        .annotate(n=Count("id"))
    )
    for rollout_id, image, tag, status, count in rows:
        devices.add_metric([str(rollout_id), image, tag, status], count)
    yield devices

    rates = GaugeMetricFamily(
        "fleet_rollout_failure_rate",
        "failed / (healthy + failed) of active rollouts.",
        labels=["rollout", "image", "tag"],
    )
    for rollout in active_rollouts():
        rate = failure_rate(rollout.count_healthy, rollout.count_failures)
        rates.add_metric([str(rollout.pk), rollout.image, rollout.new_tag], rate)
    yield rates
