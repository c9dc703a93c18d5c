"""Cost/lag curve: mean GetJobRun calls per run and p95 detection lag / duration.

Part 1 compares poller's plain schedule (history off) with fixed polling
intervals (5, 15, 30, 60 s) on a heavy-tailed mix of run durations:
lognormal, median 60 s, sigma 1, clipped to 5 s .. 1 h, from a fixed seed.

Part 2 measures history-aware polling (the default) against the plain
schedule on jobs whose runs have a typical duration each: every job's median
is drawn from the same heavy-tailed mix, and its runs are lognormal around it
with sigma 0.25 ("stable") or 1.5 ("erratic"). Each job starts with 50 past
successful runs from its own distribution (what ListJobRuns will list), and
its runs are waited on one after another, interleaved with other jobs' runs.
Both strategies wait on the same durations with the same jitter draws; the
history rows count ListJobRuns calls in their cost.

Every strategy waits through the simulator over real HTTP; time is simulated
(the simulator, the waits and their sleeps share a fake clock), so the whole
curve takes seconds and is exactly reproducible.

    .venv/bin/python benchmarks/bench_cost_lag.py [--runs 500] [--jobs 50] [--seed 0]

Each wait starts as its run is created, as when a pipeline starts a run and
then waits on it; a fixed interval polls at 0, i, 2i, ... and poller's first
call is at 0 too.
"""

from __future__ import annotations

import argparse
import logging
import math
import random
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass

import boto3
import structlog
from botocore.config import Config

from poller import PollPolicy
from poller._datazone import fetch_job_run
from poller._waiter import wait_result
from poller.testing import RunScript, Seams, Simulator

DOMAIN = "dzd_bench"
QUIET = structlog.wrap_logger(
    structlog.PrintLogger(), wrapper_class=structlog.make_filtering_bound_logger(logging.CRITICAL)
)


class FakeClock:
    """Simulated monotonic time, moved only by the waits' sleeps."""

    def __init__(self) -> None:
        self.now = 0.0

    def __call__(self) -> float:
        return self.now

    def sleep(self, seconds: float) -> None:
        self.now += seconds


def durations(count: int, seed: int) -> list[float]:
    rng = random.Random(seed)
    return [min(max(rng.lognormvariate(math.log(60), 1.0), 5.0), 3600.0) for _ in range(count)]


@dataclass
class Row:
    name: str
    calls: float
    p50_rel: float
    p95_rel: float
    p95_lag: float


def quantile(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(int(q * len(ordered)), len(ordered) - 1)]


def measure(
    name: str,
    sim: Simulator,
    clock: FakeClock,
    lengths: list[float],
    wait: Callable[[str], None],
) -> Row:
    calls, lags, rel = [], [], []
    for i, length in enumerate(lengths):
        run_id = f"{name.replace(' ', '')}-{i}"
        timeline = [(0.0, "IN_PROGRESS"), (length, "SUCCESS")]
        sim.add_run(DOMAIN, run_id, RunScript(timeline=timeline))
        wait(run_id)
        end = sim.end_time(run_id)
        assert end is not None, f"{run_id} was reported finished before it was"
        lag = clock() - end
        calls.append(sim.calls(run_id))
        lags.append(lag)
        rel.append(lag / length)
    return Row(
        name,
        sum(calls) / len(calls),
        quantile(rel, 0.5),
        quantile(rel, 0.95),
        quantile(lags, 0.95),
    )


@dataclass
class Cost:
    calls: float  # GetJobRun + ListJobRuns, per run
    lists: float  # ListJobRuns, per run
    p95_rel: float
    p95_lag: float


def job_mix(runs: int, jobs: int, sigma: float, seed: int) -> tuple[list[list[float]], list[float]]:
    """Per job: 50 past durations; per run (job i % jobs): its duration."""
    rng = random.Random(seed)
    medians = durations(jobs, seed + 1)
    past = [[rng.lognormvariate(math.log(m), sigma) for _ in range(50)] for m in medians]
    lengths = [rng.lognormvariate(math.log(medians[i % jobs]), sigma) for i in range(runs)]
    return past, lengths


def measure_jobs(
    tag: str,
    sim: Simulator,
    clock: FakeClock,
    client: object,
    past: list[list[float]],
    lengths: list[float],
    policy: PollPolicy,
    seed: int,
) -> Cost:
    jobs = [f"{tag}-j{j}" for j in range(len(past))]
    for job, durations_ in zip(jobs, past, strict=True):
        sim.add_history(DOMAIN, job, durations_)
    calls, lags, rel = [], [], []
    for i, length in enumerate(lengths):
        run_id = f"{tag}-{i}"
        timeline = [(0.0, "IN_PROGRESS"), (length, "SUCCESS")]
        sim.add_run(DOMAIN, run_id, RunScript(timeline=timeline), job_id=jobs[i % len(jobs)])
        wait_result(
            DOMAIN,
            run_id,
            policy=policy,
            client=client,  # type: ignore[arg-type]
            # The same jitter draws for both strategies.
            seams=Seams(
                clock=clock,
                sleep=clock.sleep,
                rng=random.Random(seed * 1_000_003 + i),
                logger=QUIET,
            ),
        )
        end = sim.end_time(run_id)
        assert end is not None, f"{run_id} was reported finished before it was"
        calls.append(sim.calls(run_id))
        lags.append(clock() - end)
        rel.append((clock() - end) / length)
    lists = sum(1 for r in sim.requests if r.operation == "ListJobRuns" and r.job_id in jobs)
    return Cost(
        (sum(calls) + lists) / len(lengths),
        lists / len(lengths),
        quantile(rel, 0.95),
        quantile(lags, 0.95),
    )


def history_part(
    sim: Simulator, clock: FakeClock, client: object, runs: int, jobs: int, seed: int
) -> bool:
    print(
        f"\n{runs} runs of {jobs} jobs (run i belongs to job i mod {jobs}); job medians "
        "lognormal (median 60 s, sigma 1, clipped 5 s..1 h); each job starts with 50 past "
        "successes from its own distribution\n"
    )
    print(
        "| jobs | strategy | mean calls/run (GetJobRun + ListJobRuns) | of which ListJobRuns "
        "| vs plain | p95 lag/duration | vs plain | p95 lag (s) | target |"
    )
    print("|---|---|---:|---:|---:|---:|---:|---:|---|")
    ok = True
    for name, sigma in (("stable", 0.25), ("erratic", 1.5)):
        past, lengths = job_mix(runs, jobs, sigma, seed)
        plain = measure_jobs(
            f"{name}-p",
            sim,
            clock,
            client,
            past,
            lengths,
            PollPolicy(timeout=None, history=False),
            seed,
        )
        learned = measure_jobs(
            f"{name}-h", sim, clock, client, past, lengths, PollPolicy(timeout=None), seed
        )
        calls, lag = learned.calls / plain.calls, learned.p95_rel / plain.p95_rel
        if name == "stable":
            met = calls <= 0.5 and lag <= 1.0
            rule = "calls <= 0.50x, lag <= 1.00x"
        else:
            met = abs(calls - 1) <= 0.05 and abs(lag - 1) <= 0.05
            rule = "both within 5 %"
        ok = ok and met
        print(
            f"| {name} (sigma {sigma:g}) | plain (history off) | {plain.calls:.2f} | "
            f"{plain.lists:.2f} | 1.00x | {plain.p95_rel:.3f} | 1.00x | {plain.p95_lag:.1f} | |"
        )
        print(
            f"| {name} (sigma {sigma:g}) | history (default) | {learned.calls:.2f} | "
            f"{learned.lists:.2f} | {calls:.2f}x | {learned.p95_rel:.3f} | {lag:.2f}x | "
            f"{learned.p95_lag:.1f} | {rule}: {'**met**' if met else 'missed'} |"
        )
    return ok


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--runs", type=int, default=500)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--jobs", type=int, default=50, help="jobs in part 2")
    parser.add_argument("--history-only", action="store_true", help="run part 2 only")
    args = parser.parse_args(argv)
    lengths = durations(args.runs, args.seed)
    clock = FakeClock()
    started = time.monotonic()
    rows = []
    with Simulator(clock=clock, seed=args.seed) as sim:
        client = boto3.client(
            "datazone",
            region_name="us-east-1",
            endpoint_url=sim.endpoint_url,
            aws_access_key_id="testing",
            aws_secret_access_key="testing",
            config=Config(retries={"total_max_attempts": 1}),
        )
        rng = random.Random(args.seed)
        # Part 1 is about the cadence itself: one job, no history.
        policy = PollPolicy(timeout=None, history=False)

        def poller_wait(run_id: str) -> None:
            wait_result(
                DOMAIN,
                run_id,
                policy=policy,
                client=client,
                seams=Seams(clock=clock, sleep=clock.sleep, rng=rng, logger=QUIET),
            )

        if args.history_only:
            ok = history_part(sim, clock, client, args.runs, args.jobs, args.seed)
            return 0 if ok else 1
        rows.append(measure("poller plain", sim, clock, lengths, poller_wait))
        for interval in (5, 15, 30, 60):

            def fixed_wait(run_id: str, interval: float = interval) -> None:
                # The plain loop people write: call, check, sleep a fixed time.
                while not fetch_job_run(client, DOMAIN, run_id).is_terminal:
                    clock.sleep(interval)

            rows.append(measure(f"fixed {interval} s", sim, clock, lengths, fixed_wait))
        base = rows[0]
        print(
            f"{args.runs} runs, lognormal durations (median 60 s, sigma 1, clipped 5 s..1 h), "
            f"seed {args.seed}; default policy {policy.interval:g} s x{policy.multiplier:g} "
            f"up to {policy.max_interval:g} s, jitter {policy.jitter:g}\n"
        )
        print(
            "| strategy | mean calls/run | vs poller | p50 lag/duration | p95 lag/duration "
            "| vs poller | p95 lag (s) | beats poller on both? |"
        )
        print("|---|---:|---:|---:|---:|---:|---:|---|")
        beaten = False
        for row in rows:
            both = row is not base and row.calls < base.calls and row.p95_rel < base.p95_rel
            beaten = beaten or both
            print(
                f"| {row.name} | {row.calls:.2f} | {row.calls / base.calls:.2f}x "
                f"| {row.p50_rel:.3f} | {row.p95_rel:.3f} | {row.p95_rel / base.p95_rel:.2f}x "
                f"| {row.p95_lag:.1f} | {'**yes**' if both else 'no'} |"
            )
        print()
        print(
            "A fixed interval beats the default on both."
            if beaten
            else "No fixed interval beats the default on both."
        )
        history_met = history_part(sim, clock, client, args.runs, args.jobs, args.seed)
    print(f"\n{time.monotonic() - started:.1f} s of real time in all")
    return 1 if beaten or not history_met else 0


if __name__ == "__main__":
    sys.exit(main())
