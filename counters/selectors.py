"""Counters and histograms as Prometheus metric families."""

import json
import math
from collections import defaultdict

from prometheus_client.core import CounterMetricFamily, HistogramMetricFamily

from .models import Counter
from .services import DEFAULT_BUCKETS, _le


def counter_family(name: str, documentation: str, labels: list[str]) -> CounterMetricFamily:
    """`name` without its `_total` suffix, as prometheus_client wants it."""
    family = CounterMetricFamily(name, documentation, labels=labels)
    for row in Counter.objects.filter(name=f"{name}_total"):
        values = json.loads(row.labels)
        family.add_metric([values.get(label, "") for label in labels], row.value)
    return family


def histogram_family(
    name: str, documentation: str, labels: list[str], buckets=DEFAULT_BUCKETS
) -> HistogramMetricFamily:
    family = HistogramMetricFamily(name, documentation, labels=labels)
    series: dict[tuple, dict] = defaultdict(lambda: {"buckets": {}, "sum": 0.0})
    rows = Counter.objects.filter(name__in=[f"{name}_bucket", f"{name}_sum", f"{name}_count"])
    for row in rows:
        values = json.loads(row.labels)
        key = tuple(values.get(label, "") for label in labels)
        if row.name.endswith("_bucket"):
            series[key]["buckets"][values["le"]] = row.value
        elif row.name.endswith("_sum"):
            series[key]["sum"] = row.value
    for key, data in sorted(series.items()):
        bounds = [_le(bound) for bound in (*buckets, math.inf)]
        family.add_metric(
            list(key),
            [(bound, data["buckets"].get(bound, 0.0)) for bound in bounds],
            data["sum"],
        )
    return family
