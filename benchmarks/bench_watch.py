"""Watching scheduled jobs: poller's watcher against a naive one that lists every 30 s.

20 jobs run on schedules: each job every P minutes (uniform 30..120, from a
fixed seed), each run starting up to ±``--jitter`` of P off its slot, and
lasting about the job's typical duration (uniform 2..20 min; each run
lognormal around it, sigma 0.25). Each job has ``--past`` finished runs of the
same schedule on its listing. Over ``--hours`` (4) of simulated time, two
watchers announce every run that ends:

- poller: one ``poller.aio.watch_job_runs`` stream per job, all on one event
  loop under one request budget (the process's, at its default 10 calls/s);
- naive: per job, ListJobRuns every 30 s, and one GetJobRun for each run a
  listing shows newly finished (the pattern of a sensor in a loop).

Both watch the same runs, each against its own simulator built from the
same seed. The naive watcher reads every page of each listing, and announces
a run once GetJobRun says it ended too.

``--misbehave``: the listing misbehaves as real list APIs can. Pages of 5 runs
(so a job's listing takes several), ``--late`` of the runs listed going for
30 to 120 s after they ended (late ends: listed finished later, with their
true end, behind newer runs'), ``--early`` of them read going by GetJobRun for
30 to 120 s after the listing shows them finished (early ends), and the
poller watchers restarted every hour (each stream closed and opened again
on its store, as a process restart). The naive watcher is not restarted.

Measured: runs announced (and how many more than once), the lag
from a run's end to its announcement (p50, p95, max), and the calls
(ListJobRuns and GetJobRun together). Targets (issue 16): every run announced
exactly once, p95 lag at most 1.2x the naive watcher's, calls at most 0.35x.

Time is simulated: every party reads one virtual clock that jumps from timer
to timer (poller.testing.VirtualTimeLoop), while each request is real HTTP to the
simulator, so the four hours take seconds and the figures are exact.

    .venv/bin/python benchmarks/bench_watch.py [--jobs 20] [--hours 4] [--seed 0] [--misbehave]
"""

from __future__ import annotations

import argparse
import asyncio
import logging
import math
import random
import statistics
import sys
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import structlog

sys.path.insert(0, str(Path(__file__).resolve().parent.parent / "tests"))

from poller import RateLimiter
from poller._datazone import fetch_job_run
from poller._history import list_runs
from poller._watching import MemoryStore
from poller.aio import watch_job_runs
from poller.testing import Simulator, VirtualClock, run_virtual

DOMAIN = "dzd_watch"
EPOCH = 1_790_000_000.0
NAIVE_EVERY = 30.0
STATUSES = ["SUCCESS"] * 8 + ["FAILED", "PARTIALLY_SUCCEEDED"]
PAGE = 5  # runs per ListJobRuns page with --misbehave
RESTART_EVERY = 3600.0  # the poller watchers' restarts with --misbehave
QUIET = structlog.wrap_logger(
    structlog.PrintLogger(), wrapper_class=structlog.make_filtering_bound_logger(logging.CRITICAL)
)


@dataclass
class Job:
    job_id: str
    period: float
    typical: float
    runs: list[tuple[float, float, str]]  # (start, duration, status), start from now
    past: list[tuple[float, float, str]]
    lags: list[tuple[float, float]] = field(default_factory=list)  # (listing, reading) per run


@dataclass(frozen=True)
class Misbehaviour:
    """How the listing misbehaves (all off: a well-behaved service)."""

    late: float = 0.0  # share of runs listed going 30..120 s after they ended
    early: float = 0.0  # share of runs GetJobRun reads going 30..120 s after the listing ends them
    page: int | None = None  # runs per ListJobRuns page
    restart_every: float | None = None  # the poller watchers restart this often

    def lags(self, rng: random.Random, runs: int) -> list[tuple[float, float]]:
        out = []
        for _ in range(runs):
            draw, lag = rng.random(), rng.uniform(30, 120)
            if draw < self.late:
                out.append((lag, 0.0))
            elif draw < self.late + self.early:
                out.append((0.0, lag))
            else:
                out.append((0.0, 0.0))
        return out


def scenario(
    jobs: int, hours: float, past: int, jitter: float, seed: int, bad: Misbehaviour
) -> list[Job]:
    """The jobs and their runs, from the seed alone."""
    rng = random.Random(seed)
    out = []
    span = hours * 3600
    for j in range(jobs):
        period = rng.uniform(30, 120) * 60
        typical = rng.uniform(2, 20) * 60
        phase = rng.uniform(0, period)

        def one(slot: float, rng: random.Random = rng, period: float = period) -> float:
            return slot + rng.uniform(-jitter, jitter) * period

        def length(rng: random.Random = rng, typical: float = typical) -> float:
            return rng.lognormvariate(math.log(typical), 0.25)

        history = [(one(phase - k * period), length(), "SUCCESS") for k in range(past, 0, -1)]
        history = [(s, d, st) for s, d, st in history if s + d < -60]
        runs = []
        k = 0
        while (slot := phase + k * period) < span:
            runs.append((max(one(slot), 1.0), length(), rng.choice(STATUSES)))
            k += 1
        out.append(Job(f"job-{j:02d}", period, typical, runs, history))
    lagged = random.Random(seed + 1)  # its own stream: the runs are the same with or without
    for job in out:
        job.lags = bad.lags(lagged, len(job.runs))
    return out


@dataclass
class Tally:
    announced: dict[str, list[float]] = field(default_factory=dict)  # run -> times announced

    def add(self, run_id: str, at: float) -> None:
        self.announced.setdefault(run_id, []).append(at)


def build(sim: Simulator, jobs: list[Job], bad: Misbehaviour) -> dict[str, str]:
    """Register every job's runs; the run IDs that will end, with their job."""
    ending: dict[str, str] = {}
    for job in jobs:
        sim.add_scheduled_runs(DOMAIN, job.job_id, job.past)
        if bad.page is not None:
            sim.page_list_job_runs(DOMAIN, job.job_id, bad.page)
        ids = sim.add_scheduled_runs(DOMAIN, job.job_id, job.runs)
        for run_id, (listing, reading) in zip(ids, job.lags, strict=True):
            ending[run_id] = job.job_id
            if listing or reading:
                sim.lag_run(DOMAIN, run_id, listing=listing, reading=reading)
    return ending


async def poller_side(
    sim: Simulator,
    clock: VirtualClock,
    jobs: list[Job],
    until: float,
    tally: Tally,
    bad: Misbehaviour,
) -> None:
    client = sim.client(max_pool_connections=32)
    budget = RateLimiter(clock=clock)
    wall = lambda: EPOCH + clock()  # noqa: E731
    started = clock()

    async def watch(job: Job) -> None:
        store = MemoryStore()  # kept across the restarts, as Airflow's asset state store
        restarts = 0
        while True:
            stream = watch_job_runs(
                DOMAIN,
                job.job_id,
                since=EPOCH + started,
                client=client,
                store=store,
                limiter=budget,
                wall=wall,
                logger=QUIET,
            )
            restarts += 1
            stop = math.inf if bad.restart_every is None else started + restarts * bad.restart_every
            try:
                async with asyncio.timeout_at(stop if stop < math.inf else None):
                    async for result in stream:
                        tally.add(result.job_run_id, clock())
            except TimeoutError:
                pass
            finally:
                await stream.aclose()

    tasks = [asyncio.create_task(watch(job)) for job in jobs]
    await asyncio.sleep(until - clock())
    for task in tasks:
        task.cancel()
    await asyncio.gather(*tasks, return_exceptions=True)


async def naive_side(
    sim: Simulator,
    clock: VirtualClock,
    jobs: list[Job],
    until: float,
    tally: Tally,
    bad: Misbehaviour,
) -> None:
    client = sim.client(max_pool_connections=32)
    loop = asyncio.get_running_loop()
    since = EPOCH + clock()

    async def watch(index: int, job: Job) -> None:
        seen: set[str] = set()
        await asyncio.sleep(NAIVE_EVERY * index / len(jobs))  # spread over the 30 s
        while True:
            runs, token = await loop.run_in_executor(
                None, list_runs, client, DOMAIN, job.job_id, None, None
            )
            while token is not None:  # every page
                page, token = await loop.run_in_executor(
                    None, list_runs, client, DOMAIN, job.job_id, None, token
                )
                runs += page
            for r in runs:
                ended = r.end_time is not None and r.end_time.timestamp() >= since
                if r.is_terminal and ended and r.id not in seen:
                    full = await loop.run_in_executor(None, fetch_job_run, client, DOMAIN, r.id)
                    if full.is_terminal:  # else GetJobRun lags: again at the next listing
                        seen.add(r.id)
                        tally.add(r.id, clock())
            await asyncio.sleep(NAIVE_EVERY)

    tasks = [asyncio.create_task(watch(i, job)) for i, job in enumerate(jobs)]
    await asyncio.sleep(until - clock())
    for task in tasks:
        task.cancel()
    await asyncio.gather(*tasks, return_exceptions=True)


def measure(side: Any, jobs: list[Job], margin: float, bad: Misbehaviour) -> dict[str, Any]:
    clock = VirtualClock()
    with Simulator(clock=clock, wall=lambda: EPOCH + clock()) as sim:
        ending = build(sim, jobs, bad)
        last_end = max(s + d for job in jobs for s, d, _ in job.runs)
        tally = Tally()
        run_virtual(side(sim, clock, jobs, clock() + last_end + margin, tally, bad), clock)
        lags = []
        for run_id in ending:
            end = sim.end_time(run_id)
            times = tally.announced.get(run_id, [])
            if end is not None and times:
                lags.append(times[0] - end)
        requests = sim.requests
    quantiles = statistics.quantiles(lags, n=100, method="inclusive") if len(lags) > 1 else lags
    return {
        "runs": len(ending),
        "announced": sum(1 for r in ending if r in tally.announced),
        "twice": sum(1 for times in tally.announced.values() if len(times) > 1),
        "unknown": sum(1 for r in tally.announced if r not in ending),
        "p50": statistics.median(lags),
        "p95": quantiles[94],
        "max": max(lags),
        "list": sum(1 for r in requests if r.operation == "ListJobRuns"),
        "get": sum(1 for r in requests if r.operation == "GetJobRun"),
    }


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--jobs", type=int, default=20)
    parser.add_argument("--hours", type=float, default=4.0)
    parser.add_argument("--past", type=int, default=20, help="past runs per job on the listing")
    parser.add_argument("--jitter", type=float, default=0.05, help="start jitter, share of P")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument(
        "--misbehave",
        action="store_true",
        help=f"pages of {PAGE}, late and early ends, a restart of the poller watchers per hour",
    )
    parser.add_argument("--late", type=float, default=0.15, help="share of late ends")
    parser.add_argument("--early", type=float, default=0.15, help="share of early ends")
    args = parser.parse_args()
    bad = (
        Misbehaviour(args.late, args.early, PAGE, RESTART_EVERY)
        if args.misbehave
        else Misbehaviour()
    )
    jobs = scenario(args.jobs, args.hours, args.past, args.jitter, args.seed, bad)
    margin = 600.0
    rows = {
        "poller": measure(poller_side, jobs, margin, bad),
        "naive": measure(naive_side, jobs, margin, bad),
    }
    print(
        f"{args.jobs} jobs, {args.hours:g} h simulated, {rows['naive']['runs']} runs ending, "
        f"seed {args.seed}"
        + (
            f", misbehaving: pages of {bad.page}, {bad.late:.0%} late ends, {bad.early:.0%} "
            "early ends, a restart per hour"
            if args.misbehave
            else ""
        )
    )
    print(
        f"{'watcher':<8} {'announced':>9} {'twice':>5} {'p50 lag':>8} {'p95 lag':>8} "
        f"{'max lag':>8} {'List':>6} {'Get':>5} {'calls':>6}"
    )
    for name, r in rows.items():
        calls = r["list"] + r["get"]
        print(
            f"{name:<8} {r['announced']:>5}/{r['runs']:<3} {r['twice']:>5} {r['p50']:>7.1f}s "
            f"{r['p95']:>7.1f}s {r['max']:>7.1f}s {r['list']:>6} {r['get']:>5} {calls:>6}"
        )
    ours, naive = rows["poller"], rows["naive"]
    lag_ratio = ours["p95"] / naive["p95"]
    call_ratio = (ours["list"] + ours["get"]) / (naive["list"] + naive["get"])
    exact = ours["announced"] == ours["runs"] and ours["twice"] == 0 and ours["unknown"] == 0
    print(f"p95 lag ratio: {lag_ratio:.2f}x (target <= 1.2x)")
    print(f"calls ratio:   {call_ratio:.3f}x (target <= 0.35x)")
    print(f"every run announced exactly once: {exact}")
    return 0 if exact and lag_ratio <= 1.2 and call_ratio <= 0.35 else 1


if __name__ == "__main__":
    sys.exit(main())
