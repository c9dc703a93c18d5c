"""Fleet: 1,000 runs at once against a server limit of 20 requests/s, three ways of waiting.

Every strategy waits on the same 1,000 runs (durations 5..120 s, uniform from a
fixed seed, one in ten ending FAILED), all started together as a nightly import
does, against one simulator that answers 429 ThrottlingException above 20
GetJobRun calls a second for the whole account:

- poller: ``wait_for_job_runs`` on one event loop under the shared budget
  (the default ``max_rps``, and once with a budget set above the server's limit
  so AIMD has to find it);
- botocore waiter: a custom ``WaiterModel`` for GetJobRun with botocore's usual
  fixed delay of 15 s, one thread per run, on a default boto3 client (standard
  retry mode: 3 attempts);
- sleep loop: ``get_job_run`` then ``time.sleep(60)`` per run in a thread, on the
  same default client: the Airflow sensor pattern at its default poke_interval.

Time is scaled: the simulator's clock runs ``--scale`` times faster than real
time and every sleep (poller's, the waiter's, the loop's and botocore's own
retry backoff) is divided by the same factor, so every figure below is in
simulated seconds and requests/s. Request latency (about a millisecond) is not
scaled, which favours no strategy.

    .venv/bin/python benchmarks/bench_fleet.py [--runs 1000] [--scale 5] [--seed 0]
"""

from __future__ import annotations

import argparse
import asyncio
import logging
import random
import sys
import threading
import time
import types
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import boto3
import botocore.endpoint
import botocore.waiter
import structlog
from botocore.config import Config
from botocore.exceptions import ClientError, WaiterError

from poller import Outcome, RateLimiter, WaitResult
from poller.aio import CALL_WORKERS, async_wait_for_job_runs
from poller.testing import RunScript, Seams, Simulator

DOMAIN = "dzd_fleet"
SERVER_RPS = 20.0
TERMINAL = {"SUCCESS", "PARTIALLY_SUCCEEDED", "FAILED", "ABORTED", "TIMED_OUT", "CANCELED"}
QUIET = structlog.wrap_logger(
    structlog.PrintLogger(), wrapper_class=structlog.make_filtering_bound_logger(logging.CRITICAL)
)

WAITER_MODEL = botocore.waiter.WaiterModel(
    {
        "version": 2,
        "waiters": {
            "JobRunFinished": {
                "operation": "GetJobRun",
                "delay": 15,
                "maxAttempts": 60,
                "acceptors": [
                    {"matcher": "path", "argument": "status", "expected": s, "state": state}
                    for s, state in [
                        ("SUCCESS", "success"),
                        ("PARTIALLY_SUCCEEDED", "success"),
                        ("FAILED", "failure"),
                        ("ABORTED", "failure"),
                        ("TIMED_OUT", "failure"),
                        ("CANCELED", "failure"),
                    ]
                ],
            }
        },
    }
)


class ScaledTime:
    """Simulated time running ``scale`` times faster than the real clock."""

    def __init__(self, scale: float) -> None:
        self.scale = scale
        self.origin = time.monotonic()

    def __call__(self) -> float:
        return (time.monotonic() - self.origin) * self.scale

    def sleep(self, seconds: float) -> None:
        time.sleep(seconds / self.scale)

    async def async_sleep(self, seconds: float) -> None:
        await asyncio.sleep(seconds / self.scale)


@dataclass
class Outcomes:
    """What one strategy saw: per run, the status it reported (or why it gave up) and when."""

    reported: dict[str, str] = field(default_factory=dict)
    detected: dict[str, float] = field(default_factory=dict)
    lock: threading.Lock = field(default_factory=threading.Lock)

    def record(self, run_id: str, what: str, at: float) -> None:
        with self.lock:
            self.reported[run_id] = what
            self.detected[run_id] = at


def add_fleet(sim: Simulator, prefix: str, lengths: list[float]) -> dict[str, str]:
    truth = {}
    for i, length in enumerate(lengths):
        end = "FAILED" if i % 10 == 0 else "SUCCESS"
        timeline = [(0.0, "SCHEDULED"), (min(3.0, length / 2), "IN_PROGRESS"), (length, end)]
        sim.add_run(DOMAIN, f"{prefix}-{i}", RunScript(timeline=timeline))
        truth[f"{prefix}-{i}"] = end
    return truth


def naive_client(sim: Simulator) -> Any:
    # boto3's defaults, as a hand-written waiter gets them; only the pool is
    # widened so a thousand threads do not thrash ten connections.
    return boto3.client(
        "datazone",
        region_name="us-east-1",
        endpoint_url=sim.endpoint_url,
        aws_access_key_id="testing",
        aws_secret_access_key="testing",
        config=Config(max_pool_connections=1000),
    )


def error_code(exc: BaseException) -> str:
    if isinstance(exc, WaiterError):
        response = exc.last_response or {}
        status = response.get("status")
        if status in TERMINAL:
            return str(status)
        return str(
            response.get("Error", {}).get("Code") or exc.kwargs.get("reason") or "WaiterError"
        )
    if isinstance(exc, ClientError):
        return str(exc.response.get("Error", {}).get("Code") or "ClientError")
    return type(exc).__name__


def run_threads(run_ids: list[str], body: Callable[[str], None]) -> None:
    threads = [threading.Thread(target=body, args=(rid,), daemon=True) for rid in run_ids]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()


def botocore_waiter(sim: Simulator, clock: ScaledTime, run_ids: list[str]) -> Outcomes:
    client = naive_client(sim)
    seen = Outcomes()

    def wait(run_id: str) -> None:
        waiter = botocore.waiter.create_waiter_with_client("JobRunFinished", WAITER_MODEL, client)
        try:
            waiter.wait(domainIdentifier=DOMAIN, identifier=run_id)
            seen.record(run_id, "SUCCESS", clock())
        except Exception as exc:
            seen.record(run_id, error_code(exc), clock())

    run_threads(run_ids, wait)
    return seen


def sleep_loop(sim: Simulator, clock: ScaledTime, run_ids: list[str], interval: float) -> Outcomes:
    client = naive_client(sim)
    seen = Outcomes()

    def wait(run_id: str) -> None:
        try:
            while True:
                status = client.get_job_run(domainIdentifier=DOMAIN, identifier=run_id)["status"]
                if status in TERMINAL:
                    seen.record(run_id, status, clock())
                    return
                clock.sleep(interval)
        except Exception as exc:
            seen.record(run_id, error_code(exc), clock())

    run_threads(run_ids, wait)
    return seen


def poller_fleet(
    sim: Simulator, clock: ScaledTime, run_ids: list[str], max_rps: float, seed: int
) -> Outcomes:
    seen = Outcomes()
    # The client poller builds for itself: botocore's retries off, poller owns the backoff.
    client = boto3.client(
        "datazone",
        region_name="us-east-1",
        endpoint_url=sim.endpoint_url,
        aws_access_key_id="testing",
        aws_secret_access_key="testing",
        config=Config(retries={"total_max_attempts": 1}, max_pool_connections=CALL_WORKERS),
    )

    def on_result(result: WaitResult) -> None:
        run = result.job_run
        ok = run is not None and result.outcome in (Outcome.SUCCEEDED, Outcome.FAILED)
        what = str(run.status) if ok and run else (result.problem.type if result.problem else "?")
        seen.record(result.job_run_id, what, clock())

    asyncio.run(
        async_wait_for_job_runs(
            [(DOMAIN, rid) for rid in run_ids],
            client=client,
            limiter=RateLimiter(max_rps, clock=clock),
            seams=Seams(
                clock=clock, async_sleep=clock.async_sleep, rng=random.Random(seed), logger=QUIET
            ),
            on_result=on_result,
        )
    )
    return seen


@dataclass
class Row:
    name: str
    correct: int
    lost_to_throttling: int
    other_failures: int
    calls: int
    throttled: int
    p50: float
    p95: float
    worst: float
    sim_seconds: float


def quantile(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(int(q * len(ordered)), len(ordered) - 1)] if ordered else float("nan")


def summarise(
    name: str, sim: Simulator, truth: dict[str, str], seen: Outcomes, started: float
) -> Row:
    requests = [r for r in sim.requests if r.operation == "GetJobRun" and r.run_id in truth]
    lags = []
    correct = lost = other = 0
    for run_id, end in truth.items():
        what = seen.reported.get(run_id, "missing")
        if what == end:
            correct += 1
            finished = sim.end_time(run_id)
            assert finished is not None
            lags.append(seen.detected[run_id] - finished)
        elif "Throttl" in what:
            lost += 1
        else:
            other += 1
    return Row(
        name=name,
        correct=correct,
        lost_to_throttling=lost,
        other_failures=other,
        calls=len(requests),
        throttled=sum(1 for r in requests if r.status_code == 429),
        p50=quantile(lags, 0.5),
        p95=quantile(lags, 0.95),
        worst=max(lags, default=float("nan")),
        sim_seconds=max(seen.detected.values(), default=started) - started,
    )


def install_scaled_sleep(clock: ScaledTime) -> None:
    # botocore sleeps between waiter attempts and between its own retries with
    # time.sleep; give those modules a `time` whose sleep is scaled like ours.
    shim = types.SimpleNamespace(
        **{k: getattr(time, k) for k in dir(time) if not k.startswith("_")}
    )
    shim.sleep = clock.sleep
    botocore.waiter.time = shim  # type: ignore[attr-defined]
    botocore.endpoint.time = shim  # type: ignore[attr-defined]


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--runs", type=int, default=1000)
    parser.add_argument("--scale", type=float, default=5.0)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--above-limit", type=float, default=40.0, help="the AIMD row's budget")
    args = parser.parse_args(argv)
    rng = random.Random(args.seed)
    lengths = [rng.uniform(5, 120) for _ in range(args.runs)]
    clock = ScaledTime(args.scale)
    install_scaled_sleep(clock)
    from poller._limiter import DEFAULT_MAX_RPS

    strategies: list[tuple[str, Callable[[Simulator, list[str]], Outcomes]]] = [
        (
            f"poller (max_rps {DEFAULT_MAX_RPS:g}, default)",
            lambda sim, ids: poller_fleet(sim, clock, ids, DEFAULT_MAX_RPS, args.seed),
        ),
        (
            f"poller (max_rps {args.above_limit:g}, AIMD)",
            lambda sim, ids: poller_fleet(sim, clock, ids, args.above_limit, args.seed),
        ),
        ("botocore waiter (15 s)", lambda sim, ids: botocore_waiter(sim, clock, ids)),
        ("sleep loop (60 s)", lambda sim, ids: sleep_loop(sim, clock, ids, 60.0)),
    ]
    rows = []
    real_start = time.monotonic()
    with Simulator(clock=clock, seed=args.seed, max_rps=SERVER_RPS) as sim:
        for i, (name, strategy) in enumerate(strategies):
            truth = add_fleet(sim, f"s{i}", lengths)
            started = clock()
            seen = strategy(sim, list(truth))
            rows.append(summarise(name, sim, truth, seen, started))
            print(f"  {name}: done in {time.monotonic() - real_start:.0f} s real", file=sys.stderr)
            # Let the server's bucket refill so each strategy starts from the same state.
            clock.sleep(5)
    base = rows[0]
    print(
        f"{args.runs} runs, durations uniform 5..120 s (seed {args.seed}), all started at once; "
        f"simulator limit {SERVER_RPS:g} GetJobRun/s; time scaled x{args.scale:g}; "
        f"{time.monotonic() - real_start:.0f} s of real time\n"
    )
    print(
        "| strategy | correct | lost to throttling | other failures | calls | calls vs poller "
        "| throttled calls | lag p50 (s) | lag p95 (s) | lag max (s) | all done after (s) |"
    )
    print("|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|")
    for row in rows:
        print(
            f"| {row.name} | {row.correct} | {row.lost_to_throttling} | {row.other_failures} "
            f"| {row.calls} | {row.calls / base.calls:.2f}x | {row.throttled} "
            f"| {row.p50:.1f} | {row.p95:.1f} | {row.worst:.1f} | {row.sim_seconds:.0f} |"
        )
    return 0


if __name__ == "__main__":
    sys.exit(main())
