"""CPU cost of one poll through poller against one bare ``client.get_job_run``.

The simulator runs in its own process, so only the client side is measured:
process CPU time (user + system) of this process, per call. Both sides use the
same boto3 client and the same simulator run; rounds alternate between them so
machine noise hits both alike, and the medians are compared as a ratio.

    .venv/bin/python benchmarks/bench_poll_cpu.py [--calls 2000] [--rounds 5]

Two poller rows: the wait with an injected no-op sleep (the blocking loop,
as in issue 2), and the same wait on real time, which runs on the process's
engine (its loop thread, the budget, the call pool) with a 1 us cadence.

Target (issues 2 and 15): poller adds less than 10 % CPU on top of the bare call.
"""

from __future__ import annotations

import argparse
import json
import logging
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import boto3
import structlog
from botocore.config import Config

from poller import PollPolicy, wait_for_job_run
from poller.testing import Seams

DOMAIN = "dzd_bench"


def start_simulator(calls: int, rounds: int) -> tuple[subprocess.Popen[str], str]:
    """A simulator process with one run per round: `calls` IN_PROGRESS answers, then SUCCESS."""
    runs = [
        {
            "domain_id": DOMAIN,
            "run_id": f"run-{i}",
            "statuses": ["IN_PROGRESS"] * calls + ["SUCCESS"],
        }
        for i in range(rounds)
    ]
    runs.append({"domain_id": DOMAIN, "run_id": "bare", "statuses": ["IN_PROGRESS"]})
    scenario = Path(tempfile.mkdtemp()) / "scenario.json"
    scenario.write_text(json.dumps({"runs": runs}))
    proc = subprocess.Popen(
        [sys.executable, "-m", "poller.testing", "--scenario", str(scenario)],
        stdout=subprocess.PIPE,
        stderr=subprocess.DEVNULL,
        text=True,
    )
    assert proc.stdout is not None
    return proc, proc.stdout.readline().strip()


def bare(client: object, calls: int) -> float:
    """CPU seconds per bare get_job_run call."""
    start = time.process_time()
    for _ in range(calls):
        client.get_job_run(domainIdentifier=DOMAIN, identifier="bare")  # type: ignore[attr-defined]
    return (time.process_time() - start) / calls


def polled(client: object, run_id: str, calls: int) -> float:
    """CPU seconds per poll of a poller wait that takes `calls` + 1 polls, sleeping 0."""
    start = time.process_time()
    result = wait_for_job_run(
        DOMAIN,
        run_id,
        client=client,
        policy=PollPolicy(timeout=None),
        seams=Seams(sleep=lambda _: None),
    )
    elapsed = time.process_time() - start
    assert result.polls == calls + 1, result.polls
    return elapsed / result.polls


def engine_polled(client: object, run_id: str, calls: int) -> float:
    """CPU seconds per poll of the same wait on real time: on the process's engine.

    The cadence is 1 us (no real sleep, as in the other row) and the
    account's budget is raised out of the way, so what is measured is the
    engine's path (the hop to its loop, the booking, the call pool), not the
    waiting.
    """
    from poller._limiter import budget_for

    budget_for(client, 1e6)
    start = time.process_time()
    result = wait_for_job_run(
        DOMAIN,
        run_id,
        client=client,
        policy=PollPolicy(
            timeout=None, interval=1e-6, max_interval=1e-6, jitter=0.0, history=False
        ),
    )
    elapsed = time.process_time() - start
    assert result.polls == calls + 1, result.polls
    return elapsed / result.polls


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--calls", type=int, default=2000)
    parser.add_argument("--rounds", type=int, default=5)
    args = parser.parse_args()
    # A CLI or an application configures structlog; here, as in production
    # JSON logging, events are rendered, then dropped instead of printed.
    structlog.configure(
        processors=[structlog.processors.JSONRenderer()],
        wrapper_class=structlog.make_filtering_bound_logger(logging.INFO),
        logger_factory=structlog.ReturnLoggerFactory(),
    )
    proc, endpoint = start_simulator(args.calls, 2 * args.rounds)
    try:
        client = boto3.client(
            "datazone",
            region_name="us-east-1",
            endpoint_url=endpoint,
            aws_access_key_id="testing",
            aws_secret_access_key="testing",
            config=Config(retries={"total_max_attempts": 1}),
        )
        bare(client, 50)  # warm the connection pool and botocore's caches
        bare_costs, poll_costs, engine_costs = [], [], []
        for i in range(args.rounds):
            bare_costs.append(bare(client, args.calls))
            poll_costs.append(polled(client, f"run-{i}", args.calls))
            engine_costs.append(engine_polled(client, f"run-{args.rounds + i}", args.calls))
    finally:
        proc.terminate()
        proc.wait()
    b, p = statistics.median(bare_costs), statistics.median(poll_costs)
    e = statistics.median(engine_costs)
    print(f"bare get_job_run   : {b * 1e6:8.1f} us CPU per call  (median of {args.rounds})")
    print(f"poller wait, per poll: {p * 1e6:6.1f} us CPU per poll  (median of {args.rounds})")
    print(f"ratio poller / bare: {p / b:.3f}  (poller adds {100 * (p / b - 1):+.1f} %)")
    print(f"engine wait, per poll: {e * 1e6:6.1f} us CPU per poll  (median of {args.rounds})")
    print(f"ratio engine / bare: {e / b:.3f}  (the engine adds {100 * (e / b - 1):+.1f} %)")


if __name__ == "__main__":
    main()
