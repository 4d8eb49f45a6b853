"""Add to counters and histograms in one statement per call, whichever
process calls: INSERT ... ON CONFLICT DO UPDATE adds on the row."""

import json
import math
from collections.abc import Iterable, Sequence

from django.db import connection

from .models import Counter

# Seconds: from a fast engine tick to a day-long rollout.
DEFAULT_BUCKETS = (0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60, 300, 900, 3600, 14400, 86400)


def _labels(labels: dict[str, str]) -> str:
    return json.dumps(labels, sort_keys=True, separators=(",", ":"))


def counters_add(increments: Iterable[tuple[str, dict[str, str], float]]) -> None:
    """Add each (name, labels, amount); one statement for all of them."""
    merged: dict[tuple[str, str], float] = {}
    for name, labels, amount in increments:
        key = (name, _labels(labels))
        merged[key] = merged.get(key, 0) + amount
    if not merged:
        return
    table = connection.ops.quote_name(Counter._meta.db_table)
    rows = ", ".join(["(%s, %s, %s)"] * len(merged))
    params = [value for (name, labels), amount in sorted(merged.items()) for value in (name, labels, amount)]
    with connection.cursor() as cursor:
        cursor.execute(
            f"INSERT INTO {table} (name, labels, value) VALUES {rows} "
            f"ON CONFLICT (name, labels) DO UPDATE SET value = {table}.value + excluded.value",
            params,
        )


def counter_add(name: str, labels: dict[str, str], amount: float = 1) -> None:
    counters_add([(name, labels, amount)])


def histogram_increments(
    name: str, labels: dict[str, str], value: float, buckets: Sequence[float] = DEFAULT_BUCKETS
) -> list[tuple[str, dict[str, str], float]]:
    """The increments that observe `value`: every cumulative bucket it falls
    in (always `+Inf`), the sum and the count."""
    increments = [
        (f"{name}_bucket", {**labels, "le": _le(bound)}, 1)
        for bound in (*buckets, math.inf)
        if value <= bound
    ]
    increments.append((f"{name}_sum", labels, value))
    increments.append((f"{name}_count", labels, 1))
    return increments


def histogram_observe(name: str, labels: dict[str, str], value: float, buckets=DEFAULT_BUCKETS) -> None:
    counters_add(histogram_increments(name, labels, value, buckets))


def _le(bound: float) -> str:
    return "+Inf" if math.isinf(bound) else repr(float(bound))
