"""Many processes, one account: 4 processes x 250 runs, each with its own budget, 20 calls/s.

Several Airflow triggerers, CI jobs or hosts each run their own poller budget
against one account's limit. Here four real OS processes each wait on 250
runs with ``wait_for_job_runs``' machinery (``async_wait_for_job_runs``, its
own `RateLimiter`), all against one simulator that answers 429
ThrottlingException above 20 calls a second for the whole account. The runs
are those of ``bench_fleet.py``: 100 jobs of 10 runs, each job with a typical
duration (uniform 5..120 s), runs lognormal (sigma 0.2) around it, and 20 past
runs from the same distribution for history to learn from; a job's runs are
spread over the processes, and all 1,000 runs start together.

The same 1,000 runs in each scenario, all measured in the same run:

- the baseline: the whole work in one process at the account's limit
  (``max_rps`` 20), the time the work needs;
- every process at the default budget (``max_rps`` 10): 40 calls/s asked of a
  20/s account, so AIMD must find each process's share;
- the same with ``retry.max = 100ms`` (the floor of one call per
  ``retry_max`` must not hold a busy process above its share);
- every process sized to its share (``max_rps`` = 20 / 4 = 5), as the docs
  advise.

``--only`` picks scenarios besides the baseline; ``--high 10`` makes the runs
5 to 15 s long, so the work is bound by calls rather than by the runs.

Reported per scenario: runs correct and lost, calls and throttled calls
(share of all calls), detection lag, and each process's finish time (when
its last result came in) with their spread (latest minus earliest), and the
last one's over the baseline's.

Time is scaled as in ``bench_fleet.py``: the simulator's clock and every
process's clock run ``--scale`` times faster than real time (they share
``time.monotonic``'s origin, which is system-wide), so figures are in
simulated seconds.

    .venv/bin/python benchmarks/bench_processes.py [--processes 4] [--runs 250] [--scale 5]
        [--only default,fast,sized] [--high 120]
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import random
import subprocess
import sys
import time
from dataclasses import dataclass

from bench_fleet import JOBS, QUIET, ScaledTime, job_durations, quantile

from poller import Outcome, PollPolicy, RateLimiter, WaitResult
from poller._limiter import DEFAULT_MAX_RPS
from poller.aio import CALL_WORKERS, async_wait_for_job_runs
from poller.testing import RunScript, Seams, Simulator

DOMAIN = "dzd_procs"
SERVER_RPS = 20.0


class Clock(ScaledTime):
    """ScaledTime from a given origin, so every process reads the same simulated time."""

    def __init__(self, scale: float, origin: float) -> None:
        super().__init__(scale)
        self.origin = origin
        # The wall at the origin, the same in every process (to a few ms): the
        # simulator dates its runs by it, the waits their runs' ages.
        self.wall_origin = time.time() - (time.monotonic() - origin)


def policy(retry_max: float | None) -> PollPolicy:
    """The default policy, or one whose backoff stops at ``retry_max`` (and starts no later)."""
    if retry_max is None:
        return PollPolicy()
    return PollPolicy(retry_max=retry_max, retry_initial=min(PollPolicy().retry_initial, retry_max))


def worker(args: argparse.Namespace) -> int:
    """One process: wait on its runs under its own budget; print one JSON line per result."""
    clock = Clock(args.scale, args.origin)
    from poller.testing._client import make_client

    client = make_client(
        args.endpoint,
        aws_access_key_id=args.key,
        max_pool_connections=CALL_WORKERS,
    )
    run_ids = [f"{args.prefix}-{i}" for i in range(args.runs)]
    lines: list[str] = []

    def on_result(result: WaitResult) -> None:
        run = result.job_run
        ok = run is not None and result.outcome in (Outcome.SUCCEEDED, Outcome.FAILED)
        what = str(run.status) if ok and run else (result.problem.type if result.problem else "?")
        lines.append(json.dumps({"run_id": result.job_run_id, "what": what, "at": clock()}))

    # Start together: the parent adds the runs just before this moment.
    time.sleep(max(args.start_at - time.monotonic(), 0.0))
    asyncio.run(
        async_wait_for_job_runs(
            [(DOMAIN, rid) for rid in run_ids],
            client=client,
            limiter=RateLimiter(args.max_rps, clock=clock),
            policy=policy(args.retry_max),
            on_result=on_result,
            seams=Seams(
                clock=clock,
                wall=clock.wall,
                async_sleep=clock.async_sleep,
                rng=random.Random(args.seed),
                logger=QUIET,
            ),
        )
    )
    sys.stdout.write("\n".join(lines) + "\n")
    return 0


@dataclass
class Scenario:
    name: str
    asked: float
    correct: int
    lost: int
    calls: int
    throttled: int
    p50: float
    p95: float
    finishes: list[float]


def scenario(
    name: str,
    sim: Simulator,
    clock: Clock,
    args: argparse.Namespace,
    tag: str,
    *,
    max_rps: float,
    processes: int,
    retry_max: float | None = None,
) -> Scenario:
    """The same 1,000 runs (``args.processes * args.runs``), split over ``processes``."""
    total = args.runs * args.processes
    per = total // processes
    rng = random.Random(args.seed)
    lengths, past = job_durations(rng, total, high=args.high)
    start_at = time.monotonic() + 3.0  # room for the processes to start
    procs = []
    for k in range(processes):
        command = [
            sys.executable,
            os.path.abspath(__file__),
            "--worker",
            "--endpoint", sim.endpoint_url,
            "--origin", repr(clock.origin),
            "--scale", repr(args.scale),
            "--start-at", repr(start_at),
            "--prefix", f"{tag}p{k}",
            "--runs", str(per),
            "--key", f"AKID{tag.upper()}P{k}",
            "--max-rps", repr(max_rps),
            "--seed", str(args.seed + k),
        ]  # fmt: skip
        if retry_max is not None:
            command += ["--retry-max", repr(retry_max)]
        procs.append(subprocess.Popen(command, stdout=subprocess.PIPE, text=True))
    time.sleep(max(start_at - time.monotonic() - 0.05, 0.0))
    truth: dict[str, tuple[int, str]] = {}
    for job, durations in enumerate(past):
        sim.add_history(DOMAIN, f"{tag}-job{job}", durations)
    for k in range(processes):
        # Run n of the fleet (process n // R) is of job n mod JOBS, as in bench_fleet:
        # a job's runs are spread over the processes, each of which learns it on its own.
        for i in range(per):
            n = k * per + i
            end = "FAILED" if n % 10 == 0 else "SUCCESS"
            length = lengths[n]
            timeline = [(0.0, "SCHEDULED"), (min(3.0, length / 2), "IN_PROGRESS"), (length, end)]
            sim.add_run(
                DOMAIN,
                f"{tag}p{k}-{i}",
                RunScript(timeline=timeline),
                job_id=f"{tag}-job{n % JOBS}",
            )
            truth[f"{tag}p{k}-{i}"] = (k, end)
    started = clock()
    seen: dict[str, dict[str, object]] = {}
    for proc in procs:
        out, _ = proc.communicate()
        if proc.returncode != 0:
            raise SystemExit(f"a worker failed with exit code {proc.returncode}")
        for line in out.splitlines():
            if line.strip():
                item = json.loads(line)
                seen[item["run_id"]] = item
    keys = {f"AKID{tag.upper()}P{k}" for k in range(processes)}
    requests = [r for r in sim.requests if r.access_key_id in keys]
    lags, correct, lost = [], 0, 0
    finishes = [0.0] * processes
    for run_id, (k, end) in truth.items():
        item = seen.get(run_id)
        if item is None:
            lost += 1
            continue
        at = float(item["at"])  # type: ignore[arg-type]
        finishes[k] = max(finishes[k], at - started)
        if item["what"] == end:
            correct += 1
            finished = sim.end_time(run_id)
            assert finished is not None
            lags.append(at - finished)
        else:
            lost += 1
    return Scenario(
        name=name,
        asked=max_rps * processes,
        correct=correct,
        lost=lost,
        calls=len(requests),
        throttled=sum(1 for r in requests if r.status_code == 429),
        p50=quantile(lags, 0.5),
        p95=quantile(lags, 0.95),
        finishes=finishes,
    )


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--processes", type=int, default=4)
    parser.add_argument("--runs", type=int, default=250, help="runs per process")
    parser.add_argument("--scale", type=float, default=5.0)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument(
        "--high",
        type=float,
        default=120.0,
        help="longest typical job duration (s); 10 makes the work bound by calls, not by runs",
    )
    parser.add_argument(
        "--only", help="comma-separated scenarios to run besides the baseline: default,fast,sized"
    )
    parser.add_argument("--worker", action="store_true", help=argparse.SUPPRESS)
    parser.add_argument("--endpoint", help=argparse.SUPPRESS)
    parser.add_argument("--origin", type=float, help=argparse.SUPPRESS)
    parser.add_argument("--start-at", type=float, help=argparse.SUPPRESS)
    parser.add_argument("--prefix", help=argparse.SUPPRESS)
    parser.add_argument("--key", help=argparse.SUPPRESS)
    parser.add_argument("--max-rps", type=float, default=DEFAULT_MAX_RPS, help=argparse.SUPPRESS)
    parser.add_argument("--retry-max", type=float, help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.worker:
        return worker(args)
    clock = Clock(args.scale, time.monotonic())
    real_start = time.monotonic()
    n = args.processes
    share = SERVER_RPS / n
    # (tag, key, name, max_rps per process, processes, retry_max)
    plans = [
        ("w", "whole", f"the whole work in one process at the account's limit ({SERVER_RPS:g}/s)",
         SERVER_RPS, 1, None),
        ("d", "default", f"default budget (max_rps {DEFAULT_MAX_RPS:g} each)",
         DEFAULT_MAX_RPS, n, None),
        ("f", "fast", f"default budget, retry.max = 100ms (max_rps {DEFAULT_MAX_RPS:g} each)",
         DEFAULT_MAX_RPS, n, 0.1),
        ("s", "sized", f"sized to the share (max_rps {share:g} each)", share, n, None),
    ]  # fmt: skip
    wanted = set(args.only.split(",")) if args.only else {"default", "fast", "sized"}
    results = []
    with Simulator(clock=clock, wall=clock.wall, seed=args.seed, max_rps=SERVER_RPS) as sim:
        for tag, key, name, rps, processes, retry_max in plans:
            if key != "whole" and key not in wanted:
                continue
            row = scenario(
                name, sim, clock, args, tag, max_rps=rps, processes=processes, retry_max=retry_max
            )
            results.append(row)
            print(f"  {name}: done in {time.monotonic() - real_start:.0f} s real", file=sys.stderr)
            clock.sleep(5)  # let the server's bucket refill
    print(
        f"{n} processes x {args.runs} runs, all started at once, one account "
        f"limited to {SERVER_RPS:g} calls/s; time scaled x{args.scale:g}; "
        f"{time.monotonic() - real_start:.0f} s of real time\n"
    )
    print(
        "| scenario | asked of the account | correct | lost | calls | throttled | throttled share "
        "| lag p50 (s) | lag p95 (s) | process finish times (s) | spread (s) "
        "| last done vs the whole work |"
    )
    print("|---|---:|---:|---:|---:|---:|---:|---:|---:|---|---:|---:|")
    whole = max(results[0].finishes)
    for row in results:
        finishes = ", ".join(f"{f:.0f}" for f in row.finishes)
        print(
            f"| {row.name} | {row.asked:g}/s | {row.correct} | {row.lost} "
            f"| {row.calls} | {row.throttled} | {row.throttled / max(row.calls, 1):.1%} "
            f"| {row.p50:.1f} | {row.p95:.1f} | {finishes} "
            f"| {max(row.finishes) - min(row.finishes):.0f} | {max(row.finishes) / whole:.2f}x |"
        )
    return 0


if __name__ == "__main__":
    sys.exit(main())
