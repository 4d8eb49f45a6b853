"""Prometheus counters and histograms kept in the database, so that every
web and worker process (on any machine) adds to, and /metrics reads, the
same numbers. Nothing here knows the product: names and labels come from
the callers."""

from django.db import models


class Counter(models.Model):
    """One time series: a counter, or one piece of a histogram (a
    `<name>_bucket` with its `le` label, `<name>_sum`, `<name>_count`)."""

    name = models.CharField(max_length=100)
    # The labels as canonical JSON (sorted keys): part of the identity.
    labels = models.CharField(max_length=500)
    value = models.FloatField(default=0)

    class Meta:
        constraints = [
            # The target of every increment's ON CONFLICT.
            models.UniqueConstraint(fields=["name", "labels"], name="counter_series_unique"),
        ]

    def __str__(self) -> str:
        return f"{self.name}{self.labels} {self.value:g}"


class CounterCursor(models.Model):
    """How far a job that derives counters from an append-only log has
    counted (e.g. rollout events), saved in the transaction that adds them,
    so each entry is counted exactly once."""

    name = models.CharField(max_length=100, primary_key=True)
    position = models.BigIntegerField(default=0)
    state = models.JSONField(default=dict, blank=True)
