"""A job watcher and the waits on its job's runs, in one process: one listing between them.

``--jobs`` jobs (1), each with ``--runs`` runs (20) started together, each
lasting uniform 8..20 s (a fixed seed). Three phases, each against a fresh
simulator, in real time on the process's engine (its default budget), all
on one event loop:

- waits: one ``async_wait_for_job_run`` per run (interval 1 s, up to 4 s);
- watcher: one ``watch_job_runs`` stream per job (``interval`` 2 s) until it
  has announced every run of its job;
- together: both at once, as a triggerer runs an asset watcher and the
  deferred sensors of the same job.

Measured: the calls the server saw (ListJobRuns and GetJobRun), and the lag
from each run's end to its wait's result and to its announcement. The
baseline is the sum of the first two phases, in the same run: what the two
made when each listed the job on its own (item 7 of issue 23: the watcher's
listing loop and the waits' were two). Target: together at most 0.8x their
calls. The lags are shown against each alone: at most 1.2x while the budget
has room; at a budget the fleet saturates (``--jobs 100 --runs 2``) the two
share one budget together that each had to itself alone, so compare them
with the code before on the same phase (benchmarks/RESULTS.md).

    .venv/bin/python benchmarks/bench_shared_listing.py [--jobs 1] [--runs 20] [--seed 0]
"""

from __future__ import annotations

import argparse
import asyncio
import random
import statistics
import sys
import time
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent.parent / "tests"))

from helpers import DOMAIN, QUIET, keep

from poller import PollPolicy
from poller.aio import async_wait_for_job_run, watch_job_runs
from poller.testing import Seams, Simulator, reset

POLICY = PollPolicy(timeout=120, interval=1.0, max_interval=4.0)


def p95(values: list[float]) -> float:
    return sorted(values)[max(0, round(0.95 * len(values)) - 1)]


def phase(jobs: list[list[float]], *, waits: bool, watcher: bool) -> dict[str, Any]:
    """One phase against a fresh simulator: calls, and the lags of what ran."""
    reset()
    with Simulator() as sim:
        ids: dict[str, list[str]] = {}
        ends: dict[str, float] = {}
        for number, durations in enumerate(jobs):
            job = ids[f"job-{number}"] = sim.add_scheduled_runs(
                DOMAIN, f"job-{number}", [(0.0, d, "SUCCESS") for d in durations]
            )
            ends.update((run_id, time.time() + d) for run_id, d in zip(job, durations, strict=True))
        client = keep(sim.client())
        wait_lags: list[float] = []
        watch_lags: list[float] = []

        async def wait(run_id: str) -> None:
            await async_wait_for_job_run(
                DOMAIN, run_id, client=client, policy=POLICY, seams=Seams(logger=QUIET)
            )
            wait_lags.append(time.time() - ends[run_id])

        async def watch(job: str) -> None:
            stream = watch_job_runs(
                DOMAIN, job, client=client, since=time.time() - 1, interval=2.0, logger=QUIET
            )
            seen = 0
            async for result in stream:
                watch_lags.append(time.time() - ends[result.job_run_id])
                seen += 1
                if seen == len(ids[job]):
                    break
            await stream.aclose()

        async def main() -> None:
            tasks = [wait(run_id) for run_id in ends] if waits else []
            if watcher:
                tasks += [watch(job) for job in ids]
            await asyncio.gather(*tasks)

        asyncio.run(main())
        requests = sim.requests
    return {
        "list": sum(1 for r in requests if r.operation == "ListJobRuns"),
        "get": sum(1 for r in requests if r.operation == "GetJobRun"),
        "wait_lags": wait_lags,
        "watch_lags": watch_lags,
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--jobs", type=int, default=1)
    parser.add_argument("--runs", type=int, default=20, help="runs of each job")
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args()
    rng = random.Random(args.seed)
    jobs = [[rng.uniform(8.0, 20.0) for _ in range(args.runs)] for _ in range(args.jobs)]
    alone_waits = phase(jobs, waits=True, watcher=False)
    alone_watch = phase(jobs, waits=False, watcher=True)
    together = phase(jobs, waits=True, watcher=True)
    reset()
    apart = {key: alone_waits[key] + alone_watch[key] for key in ("list", "get")}
    print(f"{args.jobs} job(s) of {args.runs} runs each, lasting 8..20 s (seed {args.seed})")
    print(f"{'phase':<10}{'ListJobRuns':>12}{'GetJobRun':>10}{'wait p95 s':>12}{'watch p95 s':>13}")
    for name, got in (("waits", alone_waits), ("watcher", alone_watch), ("together", together)):
        wait_p95 = f"{p95(got['wait_lags']):.2f}" if got["wait_lags"] else "-"
        watch_p95 = f"{p95(got['watch_lags']):.2f}" if got["watch_lags"] else "-"
        print(f"{name:<10}{got['list']:>12}{got['get']:>10}{wait_p95:>12}{watch_p95:>13}")
    calls = (together["list"] + together["get"]) / (apart["list"] + apart["get"])
    lists = together["list"] / apart["list"]
    wait_lag = p95(together["wait_lags"]) / p95(alone_waits["wait_lags"])
    watch_lag = p95(together["watch_lags"]) / p95(alone_watch["watch_lags"])
    print(f"together / apart: calls {calls:.2f}x, ListJobRuns {lists:.2f}x (target calls <= 0.8x)")
    print(f"p95 lag together / alone: waits {wait_lag:.2f}x, watcher {watch_lag:.2f}x")
    print(f"median wait lag together {statistics.median(together['wait_lags']):.2f} s")


if __name__ == "__main__":
    main()
