"""The benchmark steps, in the order bench/run runs them.

A step is a module of this package with:

- `TITLE`: the heading of its section in RESULTS.md;
- `prepare(bench)` (optional): build the data it needs, before any step
  measures anything (use `bench.fleets.ensure_fleet` for shared fleets);
- `run(bench) -> list[str]`: measure, and return the markdown lines of its
  section below the heading (what is measured, then a table: use
  `bench.report.table`, `ratio`, `ms`).

`bench` is a `bench.runner.Bench`: the server's URL and gunicorn options, a
sampler of the server's CPU, the command-line options, and `log()`. To add a
step, write the module and name it in STEPS; `bench/run --steps NAME` runs
only the steps named.
"""

STEPS = ["agents", "webhooks", "engine", "release_safety"]
