"""Read rollout events in the order of their ids without ever skipping one
that commits late.

Ids come from a sequence when a row is inserted, but transactions commit in
their own order: event 11 may be visible while event 10 is still in flight.
A reader that moved past 11 would never see 10, and a client reconnecting
with `Last-Event-ID: 11` would lose it. So the cursor only moves across a
missing id once no transaction can still commit it:

- PostgreSQL: when the gap is first seen, note which transactions of this
  database are writing (pg_stat_activity: a backend with an xid); once all of
  them have ended, the id is either visible or was rolled back. (Not the
  snapshot's xmin: it counts every database of the cluster, so an unrelated
  long transaction would hold the stream.)
- SQLite (bin/run): writers take the database lock at BEGIN and an id is
  only used by a committed row (AUTOINCREMENT), so ids become visible in order
  and a gap is never waited for.

Gaps are rare (a rolled-back transaction), so the common path is one id scan.
"""

import time
from dataclasses import dataclass, field

from django.db import connection

from ..models import RolloutEvent

# Ids examined per scan: a replay after a long disconnect goes in chunks.
SCAN_CHUNK = 1000
# Below this age a gap is never settled, whatever the snapshot says: between
# taking an id and writing its row, a transaction may not have its xid yet.
GAP_MIN_AGE_SECONDS = 1.0


@dataclass
class _Gap:
    writers: frozenset[tuple[int, str]]
    seen_at: float


@dataclass
class CommittedEventCursor:
    """Every id up to `position` is settled: it is either a visible event or
    will never exist."""

    position: int
    gaps: dict[int, _Gap] = field(default_factory=dict)

    @classmethod
    def at_latest(cls) -> "CommittedEventCursor":
        latest = RolloutEvent.objects.order_by("-id").values_list("id", flat=True).first()
        return cls(position=latest or 0)

    @property
    def waiting_for_gap(self) -> bool:
        return bool(self.gaps)

    def advance(self) -> tuple[int, int]:
        """Move past every settled id; returns the (after, up_to] id range the
        caller should now read, empty when nothing moved."""
        start = self.position
        writers = self._writers() if self.gaps else frozenset()
        ids = list(
            RolloutEvent.objects.filter(id__gt=self.position)
            .order_by("id")
            .values_list("id", flat=True)[:SCAN_CHUNK]
        )
        for present in ids:
            while self.position + 1 < present:
                if not self._gap_settled(self.position + 1, writers):
                    return start, self.position
                self.position += 1
            self.position = present
            self.gaps.pop(present, None)
        return start, self.position

    def _gap_settled(self, missing_id: int, writers_now: frozenset) -> bool:
        if connection.vendor != "postgresql":
            return True
        gap = self.gaps.get(missing_id)
        if gap is None:
            self.gaps[missing_id] = _Gap(writers=self._writers(), seen_at=time.monotonic())
            return False
        old_enough = time.monotonic() - gap.seen_at >= GAP_MIN_AGE_SECONDS
        if old_enough and not gap.writers & writers_now:
            del self.gaps[missing_id]
            return True
        return False

    @staticmethod
    def _writers() -> frozenset[tuple[int, str]]:
        """Transactions of this database that hold an xid right now, each as
        (backend pid, transaction start): a pid alone may be reused."""
        with connection.cursor() as cursor:
            cursor.execute(
                "SELECT pid, xact_start::text FROM pg_stat_activity "
                "WHERE datname = current_database() AND backend_xid IS NOT NULL "
                "AND pid <> pg_backend_pid()"
            )
            return frozenset(cursor.fetchall())
