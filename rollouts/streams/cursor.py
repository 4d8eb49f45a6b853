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
from dataclasses import dataclass

from django.db import connection

from ..models import RolloutEvent

# Ids examined per scan: a replay after a long disconnect goes in chunks.
SCAN_CHUNK = 1000
# Below this age a gap is never settled, whatever the snapshot says: between
# taking an id and writing its row, a transaction may not have its xid yet.
GAP_MIN_AGE_SECONDS = 1.0


@dataclass
class _Gap:
    """A run of ids (start..until) missing when first seen, below a visible
    id, and the transactions that were writing then."""

    start: int
    until: int
    writers: frozenset[tuple[int, str]]
    # Wall-clock time: a cursor may be saved and read by another process.
    seen_at: float

    def settled(self, writers_now: frozenset) -> bool:
        old_enough = time.time() - self.seen_at >= GAP_MIN_AGE_SECONDS
        return old_enough and not self.writers & writers_now


@dataclass
class CommittedEventCursor:
    """Every id up to `position` is settled: it is either a visible event or
    will never exist."""

    position: int
    gap: _Gap | None = None

    @classmethod
    def at_latest(cls) -> "CommittedEventCursor":
        latest = RolloutEvent.objects.order_by("-id").values_list("id", flat=True).first()
        return cls(position=latest or 0)

    @classmethod
    def from_state(cls, position: int, gap: dict | None) -> "CommittedEventCursor":
        """A cursor saved with `state()` (as JSON)."""
        if not gap:
            return cls(position=position)
        writers = frozenset(map(tuple, gap["writers"]))
        return cls(position, _Gap(gap["start"], gap["until"], writers, gap["seen_at"]))

    def state(self) -> tuple[int, dict]:
        if self.gap is None:
            return self.position, {}
        gap = self.gap
        writers = sorted(map(list, gap.writers))
        return self.position, {
            "start": gap.start, "until": gap.until, "writers": writers, "seen_at": gap.seen_at
        }

    @property
    def waiting_for_gap(self) -> bool:
        return self.gap is not None

    def advance(self, limit: int = SCAN_CHUNK) -> tuple[int, int]:
        """Move past every settled id; returns the (after, up_to] id range the
        caller should now read, empty when nothing moved."""
        start = self.position
        writers_now = self._writers() if self.gap else frozenset()
        ids = list(
            RolloutEvent.objects.filter(id__gt=self.position)
            .order_by("id")
            .values_list("id", flat=True)[:limit]
        )
        for present in ids:
            while self.position + 1 < present:  # ids missing below `present`
                if not self._skip_missing(present, writers_now):
                    return start, self.position
            self.position = present
        if self.gap and self.position >= self.gap.until:
            self.gap = None
        return start, self.position

    def _skip_missing(self, present: int, writers_now: frozenset) -> bool:
        """Move past missing ids below `present` if no transaction can still
        commit them; False (and the gap noted) if one may."""
        missing = self.position + 1
        if connection.vendor != "postgresql":
            self.position = present - 1
            return True
        gap = self.gap
        if gap is None or not gap.start <= missing <= gap.until:
            self.gap = _Gap(missing, present - 1, self._writers(), time.time())
            return False
        if not gap.settled(writers_now):
            return False
        self.position = min(present - 1, gap.until)
        return True

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
