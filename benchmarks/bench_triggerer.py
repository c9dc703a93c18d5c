"""Triggerer: the fleet of bench_fleet.py waited on by N triggers on one loop, N threads, a fan-out.

The same 1,000 runs of 100 jobs (bench_fleet.py's fleet: typical durations
5..120 s, 20 past runs per job, one in ten FAILED) against a simulator that
throttles above 20 calls a second for the whole account, waited on three ways
in one process:

- the fan-out: one ``async_wait_for_job_runs`` (the baseline);
- N ``DataZoneJobRunTrigger.run()`` on one event loop, each trigger rebuilt
  from its ``serialize()`` as Airflow's triggerer does, its client built from
  the environment (no Airflow connection);
- N threads, each calling ``wait_for_job_run``.

Each way starts from a fresh process state (``poller.testing.reset``), whose
engine runs on the scaled clock and whose waits date their runs by the
simulator's scaled wall clock, and is made ready (Airflow imported, triggers
rebuilt, threads started and parked) before its runs start. Each reports
calls (GetJobRun and ListJobRuns of its runs), throttled calls, p95
detection lag and runs lost, as ratios against the fan-out of the same run;
*seen at the server* is the lag to the first GetJobRun answered finished,
before the result travels back to the waiter (a callback, a trigger's event,
a woken thread). Targets (issue 15): triggers and threads at most 1.1x the
fan-out's calls, at most 1 % of calls throttled, p95 lag at most 1.1x, 0 lost.

    .venv/bin/python benchmarks/bench_triggerer.py [--runs 1000] [--scale 5] [--seed 0]
"""

from __future__ import annotations

import argparse
import asyncio
import importlib
import logging
import os
import random
import sys
import tempfile
import threading
import time
from collections.abc import Callable
from typing import Any

import boto3
import structlog
from bench_fleet import (
    JOBS,
    PAST_RUNS,
    SERVER_RPS,
    Outcomes,
    ScaledTime,
    add_fleet,
    job_durations,
    quantile,
    summarise,
)
from botocore.config import Config

DOMAIN = "dzd_fleet"


def poller_client(sim: Any) -> Any:
    # The client poller builds for itself: botocore's retries off, poller owns the backoff.
    from poller.aio import CALL_WORKERS

    return boto3.client(
        "datazone",
        region_name="us-east-1",
        endpoint_url=sim.endpoint_url,
        aws_access_key_id="testing",
        aws_secret_access_key="testing",
        config=Config(retries={"total_max_attempts": 1}, max_pool_connections=CALL_WORKERS),
    )


def record(seen: Outcomes, clock: ScaledTime, result: Any) -> None:
    from poller import Outcome

    run = result.job_run
    ok = run is not None and result.outcome in (Outcome.SUCCEEDED, Outcome.FAILED)
    what = str(run.status) if ok and run else (result.problem.type if result.problem else "?")
    seen.record(result.job_run_id, what, clock())


# Each way is prepared before its runs start (clients built, Airflow imported,
# triggers rebuilt, threads started and parked) and returns the call that
# waits: at x5, a second of the harness's start-up inside the measured time
# would be five seconds of lag the engine has no part in (importing Airflow
# takes ~3 s here; a real triggerer has it loaded long before a trigger comes).
Go = Callable[[], Outcomes]


def fan_out(sim: Any, clock: ScaledTime, run_ids: list[str]) -> Go:
    from poller.aio import async_wait_for_job_runs

    seen = Outcomes()
    client = poller_client(sim)

    def go() -> Outcomes:
        asyncio.run(
            async_wait_for_job_runs(
                [(DOMAIN, rid) for rid in run_ids],
                client=client,
                on_result=lambda result: record(seen, clock, result),
            )
        )
        return seen

    return go


def triggers(sim: Any, clock: ScaledTime, run_ids: list[str]) -> Go:
    from poller.airflow import DataZoneJobRunTrigger

    seen = Outcomes()
    os.environ["AWS_ENDPOINT_URL_DATAZONE"] = sim.endpoint_url
    built = []
    for rid in run_ids:
        classpath, kwargs = DataZoneJobRunTrigger(DOMAIN, rid).serialize()
        module, name = classpath.rsplit(".", 1)
        built.append(getattr(importlib.import_module(module), name)(**kwargs))
    # Importing Airflow configures logging anew: silence it again, or the
    # triggers' phase writes a line per event while it is measured.
    quiet()

    async def one(trigger: Any) -> None:
        async for event in trigger.run():
            payload = event.payload
            status = payload["job_run_status"]
            ok = payload["status"] in ("success", "failure") and status is not None
            problem = (payload["result"].get("problem") or {}).get("type", "?")
            seen.record(trigger.job_run_id, status if ok else problem, clock())

    async def all_of_them() -> None:
        await asyncio.gather(*(one(trigger) for trigger in built))

    def go() -> Outcomes:
        asyncio.run(all_of_them())
        return seen

    return go


def threads(sim: Any, clock: ScaledTime, run_ids: list[str]) -> Go:
    from poller._waiter import wait_result

    seen = Outcomes()
    client = poller_client(sim)
    start = threading.Event()

    def wait(rid: str) -> None:
        start.wait()
        record(seen, clock, wait_result(DOMAIN, rid, client=client))

    workers = [threading.Thread(target=wait, args=(rid,), daemon=True) for rid in run_ids]
    for worker in workers:
        worker.start()

    def go() -> Outcomes:
        start.set()
        for worker in workers:
            worker.join()
        return seen

    return go


def server_p95(sim: Any, truth: dict[str, str]) -> float:
    """The p95 of (the first GetJobRun answered finished - the run's end): when poller saw
    the end, before its result travelled back to the waiter (a loop, a thread)."""
    seen: dict[str, float] = {}
    for r in sim.requests:
        if (
            r.operation == "GetJobRun"
            and r.run_id in truth
            and r.answered_status == truth[r.run_id]
        ):
            seen.setdefault(r.run_id, r.t)
    lags = []
    for run_id, at in seen.items():
        end = sim.end_time(run_id)
        if end is not None:
            lags.append(at - end)
    return quantile(lags, 0.95)


def quiet() -> None:
    structlog.configure(
        wrapper_class=structlog.make_filtering_bound_logger(logging.CRITICAL),
        cache_logger_on_first_use=False,
    )
    logging.getLogger("airflow").setLevel(logging.CRITICAL)
    logging.getLogger("poller").setLevel(logging.CRITICAL)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--runs", type=int, default=1000)
    parser.add_argument("--scale", type=float, default=5.0)
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args(argv)
    os.environ.setdefault("AIRFLOW_HOME", tempfile.mkdtemp(prefix="bench-triggerer-"))
    for name, value in {
        "AWS_ACCESS_KEY_ID": "testing",
        "AWS_SECRET_ACCESS_KEY": "testing",
        "AWS_DEFAULT_REGION": "us-east-1",
        "AWS_EC2_METADATA_DISABLED": "true",
    }.items():
        os.environ[name] = value
    quiet()
    from poller.testing import Seams, Simulator, reset

    rng = random.Random(args.seed)
    lengths, past = job_durations(rng, args.runs)
    clock = ScaledTime(args.scale)
    strategies: list[tuple[str, Callable[[Any, ScaledTime, list[str]], Go]]] = [
        ("fan-out (async_wait_for_job_runs)", fan_out),
        (f"{args.runs} triggers' run() on one event loop", triggers),
        (f"{args.runs} threads calling wait_for_job_run", threads),
    ]
    rows = []
    at_server = []
    real_start = time.monotonic()
    # One wall clock on the scaled time for the simulator (a run's startTime)
    # and every wait (its run's age): with the real wall, a wait started Δ
    # real seconds after its runs takes them as (scale - 1)·Δ younger.
    with Simulator(clock=clock, wall=clock.wall, seed=args.seed, max_rps=SERVER_RPS) as sim:
        for i, (name, strategy) in enumerate(strategies):
            # A fresh process state each time, its engine on the scaled clock.
            reset(seams=Seams(clock=clock, wall=clock.wall, async_sleep=clock.async_sleep))
            quiet()
            go = strategy(sim, clock, [f"s{i}-{n}" for n in range(len(lengths))])
            truth = add_fleet(sim, f"s{i}", lengths, past)
            started = clock()
            seen = go()
            rows.append(summarise(name, sim, truth, seen, started))
            at_server.append(server_p95(sim, truth))
            print(f"  {name}: done in {time.monotonic() - real_start:.0f} s real", file=sys.stderr)
            clock.sleep(5)  # the server's bucket refills between ways
    reset()
    base = rows[0]
    print(
        f"{args.runs} runs of {JOBS} jobs (bench_fleet.py's fleet, {PAST_RUNS} past runs per "
        f"job; seed {args.seed}), all started at once; simulator limit {SERVER_RPS:g} calls/s; "
        f"poller's default budget; time scaled x{args.scale:g}; "
        f"{time.monotonic() - real_start:.0f} s of real time\n"
    )
    print(
        "| waited on as | correct | lost | calls | calls vs fan-out | throttled calls "
        "| throttled share | lag p50 (s) | lag p95 (s) | lag p95 vs fan-out "
        "| seen at the server p95 (s) | vs fan-out |"
    )
    print("|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|")
    for row, server in zip(rows, at_server, strict=True):
        lost = row.lost_to_throttling + row.other_failures
        print(
            f"| {row.name} | {row.correct} | {lost} | {row.calls} "
            f"| {row.calls / base.calls:.2f}x | {row.throttled} "
            f"| {row.throttled / max(row.calls, 1):.1%} | {row.p50:.1f} | {row.p95:.1f} "
            f"| {row.p95 / base.p95:.2f}x | {server:.1f} | {server / at_server[0]:.2f}x |"
        )
    return 0


if __name__ == "__main__":
    sys.exit(main())
