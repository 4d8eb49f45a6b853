"""The simulated devices: what each last reported and what it will report next."""

import heapq

from agent.drivers.simulated import Behaviour

OLD_TAG = "v1"
NEW_TAG = "v2"

# What a device says about its one service: (tag, status, health).
Report = tuple[str, str, str]


class _Devices:
    """The Python side of the fleet: what each device last reported, and the
    reports it is going to make. Devices are numbered in creation order."""

    def __init__(self, silent: list[bool], offline: list[bool], flaky: list[bool]):
        self.silent = silent
        # Never poll: they never learn of a target change.
        self.offline = offline
        # Fail their first attempt at the new release, then are healthy.
        self.flaky = flaky
        # Times each device was sent the new release.
        self.attempts = [0] * len(silent)
        # Bumped on every target change: reports of an abandoned timeline are stale.
        self.generation = [0] * len(silent)
        self.reported: list[Report] = [(OLD_TAG, "running", "healthy")] * len(silent)
        # (due second, sequence, device, generation, report): a heap by time.
        self.queue: list[tuple[float, int, int, int, Report]] = []
        self._sequence = 0
        self.targeted: set[int] = set()
        self.ran_new: set[int] = set()
        self.rolled_back: set[int] = set()
        self.on_new = 0
        self.failing_on_new = 0

    def plan(self, device: int, at: float, tag: str, behaviour: Behaviour) -> None:
        """Queue the reports of `behaviour`'s timeline, started at `at`."""
        self.generation[device] += 1
        if self.silent[device]:
            return
        ready = behaviour.pull_seconds + behaviour.start_seconds
        for moment in sorted({ready, ready + behaviour.health_seconds}):
            status, health = behaviour.at(moment)
            self._sequence += 1
            generation = self.generation[device]
            heapq.heappush(
                self.queue, (at + moment, self._sequence, device, generation, (tag, status, health))
            )

    def due(self, now: float) -> dict[int, Report]:
        """The last report of each device made up to `now`."""
        reports = {}
        while self.queue and self.queue[0][0] <= now:
            _, _, device, generation, report = heapq.heappop(self.queue)
            if generation == self.generation[device]:
                reports[device] = report
        return reports

    def record(self, device: int, report: Report) -> None:
        self.on_new -= self.reported[device][0] == NEW_TAG
        self.failing_on_new -= _failing_on_new(self.reported[device])
        self.reported[device] = report
        self.on_new += report[0] == NEW_TAG
        self.failing_on_new += _failing_on_new(report)
        if report[0] == NEW_TAG:
            self.ran_new.add(device)


def _failing_on_new(report: Report) -> bool:
    tag, status, health = report
    return tag == NEW_TAG and (status in ("exited", "failed") or health == "unhealthy")
