"""Fleet: 1,000 runs at once against a server limit of 20 requests/s, three ways of waiting.

Every strategy waits on the same 1,000 runs, all started together as a nightly
import does, against one simulator that answers 429 ThrottlingException above
20 calls a second for the whole account. The runs belong to 100 jobs of 10
runs each; each job has a typical duration (uniform 5..120 s from a fixed
seed) and its runs vary around it (lognormal, sigma 0.2, clipped to 5..180 s);
one in ten ends FAILED. Each job also has 20 past successful runs drawn from
the same distribution as the runs being waited on, which is what
history-aware polling learns from (every ListJobRuns is counted in *calls*):

- poller: ``wait_for_job_runs`` on one event loop under the shared budget:
  with history (the default: a job's listing looks at all its runs, and its
  successes are the history) and without (``history=False``: every run
  polled on its own, the cadence as it was), at the default ``max_rps``, and
  once with a budget set above the server's limit so AIMD has to find it;
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
        [--poller-only] [--explain N] [--timeline] [--long]
"""

from __future__ import annotations

import argparse
import asyncio
import logging
import math
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

from poller import Outcome, PollPolicy, RateLimiter, WaitResult
from poller._history import JobHistory
from poller._model import JobRunStatus
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
        self.wall_origin = time.time()

    def __call__(self) -> float:
        return (time.monotonic() - self.origin) * self.scale

    def wall(self) -> float:
        """Epoch seconds on the same scale: a run's startTime and a wait's wall agree."""
        return self.wall_origin + self()

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


JOBS = 100
# The statuses a run's last GetJobRun answers with.
FINISHED = {status.value for status in JobRunStatus if status.is_terminal}
PAST_RUNS = 20


def job_durations(
    rng: random.Random, runs: int, low: float = 5.0, high: float = 120.0
) -> tuple[list[float], list[list[float]]]:
    """Each run's duration (run i is of job i mod JOBS), and each job's past durations."""
    typical = [rng.uniform(low, high) for _ in range(JOBS)]

    def one(job: int) -> float:
        return min(max(typical[job] * rng.lognormvariate(0, 0.2), low), 1.5 * high)

    lengths = [one(i % JOBS) for i in range(runs)]
    return lengths, [[one(j) for _ in range(PAST_RUNS)] for j in range(JOBS)]


def add_fleet(
    sim: Simulator, prefix: str, lengths: list[float], past: list[list[float]]
) -> dict[str, str]:
    for job, durations in enumerate(past):
        sim.add_history(DOMAIN, f"{prefix}-job{job}", durations)
    truth = {}
    for i, length in enumerate(lengths):
        end = "FAILED" if i % 10 == 0 else "SUCCESS"
        timeline = [(0.0, "SCHEDULED"), (min(3.0, length / 2), "IN_PROGRESS"), (length, end)]
        sim.add_run(
            DOMAIN, f"{prefix}-{i}", RunScript(timeline=timeline), job_id=f"{prefix}-job{i % JOBS}"
        )
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
    sim: Simulator,
    clock: ScaledTime,
    run_ids: list[str],
    max_rps: float,
    seed: int,
    policy: PollPolicy | None = None,
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
            policy=policy,
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
    floor_p95: float  # the p95 of max(0, first look - end): no waiter can see a run sooner


def quantile(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(int(q * len(ordered)), len(ordered) - 1)] if ordered else float("nan")


def summarise(
    name: str, sim: Simulator, truth: dict[str, str], seen: Outcomes, started: float
) -> Row:
    jobs = {f"{name_prefix(truth)}-job{j}" for j in range(JOBS)}
    requests = [
        r
        for r in sim.requests
        if (r.operation == "GetJobRun" and r.run_id in truth)
        or (r.operation == "ListJobRuns" and r.job_id in jobs)
    ]
    # A run's first look: its first GetJobRun, or its job's first listing.
    first: dict[str, float] = {}
    listed: dict[str, float] = {}
    for r in requests:
        if r.run_id is not None:
            first.setdefault(r.run_id, r.t)
        elif r.job_id is not None and r.status_code == 200:
            listed.setdefault(r.job_id, r.t)
    for run_id in truth:
        job = f"{name_prefix(truth)}-job{int(run_id.rsplit('-', 1)[1]) % JOBS}"
        if job in listed:
            first[run_id] = min(first.get(run_id, math.inf), listed[job])
    floors = []
    for run_id in truth:
        finished = sim.end_time(run_id)
        if finished is not None and run_id in first:
            floors.append(max(first[run_id] - finished, 0.0))
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
        floor_p95=quantile(floors, 0.95),
    )


def explain(
    sim: Simulator, truth: dict[str, str], seen: Outcomes, past: list[list[float]], worst: int
) -> None:
    """The ``worst`` lags of a strategy, each with what its job's history said: its quiet
    window (`JobHistory.quiet_s`), whether the run ended inside it, and the run's looks."""
    prefix = name_prefix(truth)
    start = min(r.t for r in sim.requests if r.run_id in truth)
    lags = []
    for rid in truth:
        end = sim.end_time(rid)
        if end is not None and rid in seen.detected:
            lags.append((seen.detected[rid] - end, rid, end))
    print(
        "| run | duration (s) | job's quiet window (s) | ended inside it | lag (s) "
        "| looks before the end | first look after the end (s after it) |"
    )
    print("|---|---:|---:|---|---:|---:|---:|")
    for lag, rid, end in sorted(lags, reverse=True)[:worst]:
        job = int(rid.rsplit("-", 1)[1]) % JOBS
        quiet = JobHistory(tuple(sorted(past[job]))).quiet_s
        listing = f"{prefix}-job{job}"
        looks = [
            r.t
            for r in sim.requests
            if r.status_code == 200
            and (r.run_id == rid or (r.operation == "ListJobRuns" and r.job_id == listing))
        ]
        after = [t - end for t in looks if t >= end]
        first = f"{after[0]:.1f}" if after else "-"
        inside = "yes" if end - start < quiet else "no"
        print(
            f"| {rid} | {end - start:.0f} | {quiet:.0f} | {inside} | {lag:.1f} "
            f"| {sum(1 for t in looks if t < end)} | {first} |"
        )


def timeline(
    sim: Simulator, truth: dict[str, str], seen: Outcomes, budget: float, step: float = 10.0
) -> None:
    """Where a strategy's calls went, ``step`` seconds at a time: the runs that ended, the
    GetJobRun calls answered finished (a run's last read, for its lineage), the other
    GetJobRun calls, the job listings, against the ``budget`` (calls/s); and the lag of
    the runs that ended in each step."""
    prefix = name_prefix(truth)
    start = min(r.t for r in sim.requests if r.run_id in truth)
    rows: dict[int, list[int]] = {}
    lags: dict[int, list[float]] = {}
    for r in sim.requests:
        if r.run_id not in truth and not (r.job_id or "").startswith(f"{prefix}-"):
            continue
        kind = 3 if r.operation == "ListJobRuns" else 1 if r.answered_status in FINISHED else 2
        rows.setdefault(int((r.t - start) // step), [0, 0, 0, 0])[kind] += 1
    for rid in truth:
        end = sim.end_time(rid)
        if end is not None and rid in seen.detected:
            bucket = int((end - start) // step)
            rows.setdefault(bucket, [0, 0, 0, 0])[0] += 1
            lags.setdefault(bucket, []).append(seen.detected[rid] - end)
    print(
        f"| from (s) | runs ended | last reads | other GetJobRun | listings "
        f"| calls of the {budget * step:g} the budget allows | lag p50 (s) | lag max (s) |"
    )
    print("|---:|---:|---:|---:|---:|---:|---:|---:|")
    for bucket in sorted(rows):
        ended, last, other, listed = rows[bucket]
        ordered = sorted(lags.get(bucket, [])) or [float("nan")]
        print(
            f"| {bucket * step:g} | {ended} | {last} | {other} | {listed} "
            f"| {last + other + listed} | {quantile(ordered, 0.5):.1f} | {ordered[-1]:.1f} |"
        )
    # The busiest minute of ends: what any waiter must do in it, whatever its cadence.
    ends = sorted((end - start, rid) for rid in truth if (end := sim.end_time(rid)) is not None)
    most, first = max(
        (sum(1 for t, _ in ends if a <= t < a + 60), a) for a in range(0, int(ends[-1][0]) + 1)
    )
    jobs = {int(rid.rsplit("-", 1)[1]) % JOBS for t, rid in ends if first <= t < first + 60}
    print(
        f"\nbusiest minute of ends: from {first} s, {most} runs of {len(jobs)} jobs ended; their "
        f"last reads alone take {most} of the {budget * 60:g} calls the budget allows in it"
    )


def name_prefix(truth: dict[str, str]) -> str:
    return next(iter(truth)).rsplit("-", 1)[0]


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
    parser.add_argument(
        "--poller-only", action="store_true", help="skip the waiter and sleep-loop rows"
    )
    parser.add_argument(
        "--explain", type=int, default=0, metavar="N",
        help="list the N worst lags of the history row with their job's quiet window",
    )  # fmt: skip
    parser.add_argument(
        "--timeline", action="store_true",
        help="show where the history row's calls went, 10 s at a time, against the budget",
    )  # fmt: skip
    parser.add_argument(
        "--long",
        action="store_true",
        help="typical durations 5..15 min instead of 5..120 s (poller rows only)",
    )
    args = parser.parse_args(argv)
    rng = random.Random(args.seed)
    low, high = (300.0, 900.0) if args.long else (5.0, 120.0)
    lengths, past = job_durations(rng, args.runs, low, high)
    args.poller_only = args.poller_only or args.long
    clock = ScaledTime(args.scale)
    install_scaled_sleep(clock)
    from poller._limiter import DEFAULT_MAX_RPS

    strategies: list[tuple[str, Callable[[Simulator, list[str]], Outcomes]]] = [
        (
            f"poller (max_rps {DEFAULT_MAX_RPS:g}, default: history)",
            lambda sim, ids: poller_fleet(sim, clock, ids, DEFAULT_MAX_RPS, args.seed),
        ),
        (
            f"poller (max_rps {DEFAULT_MAX_RPS:g}, history off: as before)",
            lambda sim, ids: poller_fleet(
                sim, clock, ids, DEFAULT_MAX_RPS, args.seed, PollPolicy(history=False)
            ),
        ),
        (
            f"poller (max_rps {args.above_limit:g}, AIMD, history)",
            lambda sim, ids: poller_fleet(sim, clock, ids, args.above_limit, args.seed),
        ),
        ("botocore waiter (15 s)", lambda sim, ids: botocore_waiter(sim, clock, ids)),
        ("sleep loop (60 s)", lambda sim, ids: sleep_loop(sim, clock, ids, 60.0)),
    ]
    if args.poller_only:
        strategies = strategies[:3]
    rows = []
    real_start = time.monotonic()
    with Simulator(clock=clock, seed=args.seed, max_rps=SERVER_RPS) as sim:
        for i, (name, strategy) in enumerate(strategies):
            truth = add_fleet(sim, f"s{i}", lengths, past)
            started = clock()
            seen = strategy(sim, list(truth))
            rows.append(summarise(name, sim, truth, seen, started))
            if i == 0 and args.explain:
                explain(sim, truth, seen, past, args.explain)
            if i == 0 and args.timeline:
                timeline(sim, truth, seen, DEFAULT_MAX_RPS)
            print(f"  {name}: done in {time.monotonic() - real_start:.0f} s real", file=sys.stderr)
            # Let the server's bucket refill so each strategy starts from the same state.
            clock.sleep(5)
    base = rows[1]  # history off: poller's cadence as it was before history
    print(
        f"{args.runs} runs of {JOBS} jobs (typical durations uniform {low:g}..{high:g} s, "
        "runs lognormal "
        f"sigma 0.2 around them, {PAST_RUNS} past runs per job; seed {args.seed}), all started "
        f"at once; simulator limit {SERVER_RPS:g} calls/s; time scaled x{args.scale:g}; "
        f"{time.monotonic() - real_start:.0f} s of real time\n"
    )
    print(
        "| strategy | correct | lost to throttling | other failures | calls | calls vs before "
        "| throttled calls | lag p50 (s) | lag p95 (s) | lag p95 vs before | lag max (s) "
        "| first-look floor p95 (s) | all done after (s) |"
    )
    print("|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|")
    for row in rows:
        print(
            f"| {row.name} | {row.correct} | {row.lost_to_throttling} | {row.other_failures} "
            f"| {row.calls} | {row.calls / base.calls:.2f}x | {row.throttled} "
            f"| {row.p50:.1f} | {row.p95:.1f} | {row.p95 / base.p95:.2f}x | {row.worst:.1f} "
            f"| {row.floor_p95:.1f} | {row.sim_seconds:.0f} |"
        )
    return 0


if __name__ == "__main__":
    sys.exit(main())
