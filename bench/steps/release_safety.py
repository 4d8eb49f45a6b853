"""Release safety (CONTRACT section 8): the simulator's scenarios on a fresh
policy's settings, with fixed seeds, each figure against its goal.

The same table as `manage.py simulate_rollout --scenarios`
(rollouts/simulation/scenarios.py); it needs no server. About 14 minutes on
2 busy cores (load 4 to 6), 9 of them the 100 seeds of the flaky-devices
row (`--safety-seeds` sets how many, `--safety-full-seeds` how many of
them run to the end rather than through batch 1).
"""

import time

from rollouts.models import DEFAULT_RAMP_FACTOR, DEFAULT_RAMP_INITIAL
from rollouts.simulation.scenarios import release_safety_table, table_lines

TITLE = "Release safety (simulator, fresh policy, fixed seeds)"


def run(bench) -> list[str]:
    started = time.monotonic()
    rows = release_safety_table(
        devices=10_000,
        flaky_seeds=bench.options.safety_seeds,
        flaky_full_seeds=bench.options.safety_full_seeds,
        log=bench.log,
    )
    minutes = (time.monotonic() - started) / 60
    return [
        "`manage.py simulate_rollout --scenarios` drives the real engine on a virtual "
        "clock (15 s ticks) over 10,000 simulated devices with a fresh policy's settings "
        f"(`ramp_initial` {DEFAULT_RAMP_INITIAL}, `ramp_factor` {DEFAULT_RAMP_FACTOR}, "
        "batches 10/50/100 %, 30 min apart, 20 % threshold, 5 samples, 300 s timeout; "
        "pulls exponential with a 30 s mean, health shown 20 s later). Each seed draws "
        "which devices fail, are flaky or offline and how long they take; the same seeds "
        f"give the same table. Took {minutes:.0f} min.",
        "",
        *table_lines(rows),
    ]
