"""Throttles that others cause: a storm, and a steady share of other clients' throttles.

Issue 23's fleets (`tests/test_throttle_proof.py`'s, the same code), each
waited on by one fan-out with its own budget (the engine's `Fleet`, calendar
and budget) on virtual time (poller.testing.VirtualTimeLoop):
every request is real HTTP to the simulator, but a minute of waiting takes
as long as its requests do. Reported against the same fleet on a healthy
server, measured in the same run:

- ``healthy``, ``others 5 %``, ``others 20 %``: runs of their own jobs ending
  2-8 s after the start on a 40 calls/s server (budget 40/s), that server
  also throttling that share of every call at random (other clients of the
  account; `Simulator.throttle_others`); ``PollPolicy(interval=0.5,
  max_interval=2, retry_initial=0.1, retry_max=2)``.
- ``5 %, told`` and ``20 %, told``: the same two fleets with the budget told
  other clients' share (``others_throttled`` 0.1 and 0.25): the throttles
  within it cut no rate.
- ``storm``: 30 runs ending 1-5 s after the start, every call throttled from
  0.5 s to 5.5 s (`Simulator.storm`), default policy and budget (10/s).

Each fleet reports its outcomes, the time until every run was seen ended,
and the calls. ``--runs`` scales the background fleets (150 by default;
10,000 runs in virtual time take a few minutes of real time).

    cd benchmarks && ../.venv/bin/python bench_background.py [--runs 150] [--json FILE]
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from collections import Counter
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent.parent / "tests"))
from test_throttle_proof import BRISK, fleet

from poller import PollPolicy, log


def measured(count: int, **kwargs: Any) -> dict[str, Any]:
    """One fleet of `tests/test_throttle_proof.py`, waited on, and its figures."""
    real = time.perf_counter()
    results, sim, took = fleet(count, **kwargs)
    calls = Counter(r.operation for r in sim.requests)
    faults = Counter(r.fault for r in sim.requests if r.fault)
    return {
        "runs": count,
        "outcomes": dict(Counter(str(r.outcome) for r in results)),
        "lost": sum(1 for r in results if r.outcome.value in ("error", "wait_timeout")),
        "all_seen_s": round(max(r.waited_s for r in results), 2),
        "took_s": round(took, 2),
        "get_job_run": calls["GetJobRun"],
        "list_job_runs": calls["ListJobRuns"],
        "throttled": dict(faults),
        "real_s": round(time.perf_counter() - real, 1),
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--runs", type=int, default=150)
    parser.add_argument("--json", help="write the figures to this file")
    args = parser.parse_args()
    log.configure_logging(level="error")
    n = args.runs
    background = {"max_rps": 40, "server_rps": 40, "policy": BRISK, "ends": (2, 8)}
    figures = {
        "healthy": measured(n, timeout=600, **background),
        "others 5 %": measured(n, timeout=600, others=0.05, **background),
        "others 20 %": measured(n, timeout=600, others=0.20, **background),
        "5 %, told": measured(n, timeout=600, others=0.05, others_throttled=0.1, **background),
        "20 %, told": measured(n, timeout=600, others=0.20, others_throttled=0.25, **background),
        "storm": measured(
            30, ends=(1, 5), timeout=30, policy=PollPolicy(), max_rps=10, storm=(0.5, 5.5)
        ),
    }
    healthy = figures["healthy"]["all_seen_s"]
    print(
        f"{'fleet':<12} {'runs':>6} {'lost':>5} {'all seen (s)':>13} {'vs healthy':>11} "
        f"{'GetJobRun':>10} {'ListJobRuns':>12} {'throttled':>10} {'real (s)':>9}"
    )
    for name, f in figures.items():
        ratio = "" if name == "storm" else f"{f['all_seen_s'] / healthy:.2f}x"
        print(
            f"{name:<12} {f['runs']:>6} {f['lost']:>5} {f['all_seen_s']:>13} {ratio:>11} "
            f"{f['get_job_run']:>10} {f['list_job_runs']:>12} "
            f"{sum(f['throttled'].values()):>10} {f['real_s']:>9}"
        )
    if args.json:
        Path(args.json).write_text(json.dumps(figures, indent=2) + "\n")


if __name__ == "__main__":
    main()
