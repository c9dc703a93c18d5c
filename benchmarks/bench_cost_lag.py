"""Cost/lag curve: mean GetJobRun calls per run and p95 detection lag / duration.

Compares poller's default schedule with fixed polling intervals (5, 15, 30,
60 s) on a heavy-tailed mix of run durations: lognormal, median 60 s, sigma 1,
clipped to 5 s .. 1 h, from a fixed seed. Every strategy waits on the same
runs, one after another, through the simulator over real HTTP; time is
simulated (the simulator, the waits and their sleeps share a fake clock), so
the whole curve takes seconds and is exactly reproducible.

    .venv/bin/python benchmarks/bench_cost_lag.py [--runs 500] [--seed 0]

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


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--runs", type=int, default=500)
    parser.add_argument("--seed", type=int, default=0)
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
        policy = PollPolicy(timeout=None)

        def poller_wait(run_id: str) -> None:
            wait_result(
                DOMAIN,
                run_id,
                policy=policy,
                client=client,
                seams=Seams(clock=clock, sleep=clock.sleep, rng=rng, logger=QUIET),
            )

        rows.append(measure("poller default", sim, clock, lengths, poller_wait))
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
        f"up to {policy.max_interval:g} s, jitter {policy.jitter:g}; "
        f"{time.monotonic() - started:.1f} s of real time\n"
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
    return 1 if beaten else 0


if __name__ == "__main__":
    sys.exit(main())
