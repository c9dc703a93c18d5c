"""CPU cost of one poll through poller against one bare ``client.get_job_run``.

The simulator runs in its own process, so only the client side is measured:
process CPU time (user + system) of this process, per call. Both sides use the
same boto3 client and the same simulator run; rounds alternate between them so
machine noise hits both alike, and the medians are compared as a ratio.

    .venv/bin/python benchmarks/bench_poll_cpu.py [--calls 2000] [--rounds 5] [--split]

Target (issue 2): poller adds less than 10 % CPU on top of the bare call.

``--split`` also measures, in the same rounds, the same wait with its calls
made on the waiting thread (``Seams(executor=...)`` given an executor that
runs each call where it is submitted): the difference between the two is
what the hop to the call pool costs, the rest is poller's own work per poll.
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
from collections.abc import Callable
from concurrent.futures import Executor, Future
from pathlib import Path
from typing import Any

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


class OnThisThread(Executor):
    """Runs each call where it is submitted: a wait without the hop to the call pool."""

    def submit(self, fn: Callable[..., Any], /, *args: Any, **kwargs: Any) -> Future[Any]:
        future: Future[Any] = Future()
        try:
            future.set_result(fn(*args, **kwargs))
        except BaseException as exc:  # handed to the waiter, as a pool would
            future.set_exception(exc)
        return future


def polled(client: object, run_id: str, calls: int, executor: Executor | None = None) -> float:
    """CPU seconds per poll of a poller wait that takes `calls` + 1 polls, sleeping 0."""
    start = time.process_time()
    result = wait_for_job_run(
        DOMAIN,
        run_id,
        client=client,
        policy=PollPolicy(timeout=None),
        seams=Seams(sleep=lambda _: None, executor=executor),
    )
    elapsed = time.process_time() - start
    assert result.polls == calls + 1, result.polls
    return elapsed / result.polls


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--calls", type=int, default=2000)
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument(
        "--split", action="store_true", help="also measure the wait without the call pool's hop"
    )
    args = parser.parse_args()
    # A CLI or an application configures structlog; here, as in production
    # JSON logging, events are rendered, then dropped instead of printed.
    structlog.configure(
        processors=[structlog.processors.JSONRenderer()],
        wrapper_class=structlog.make_filtering_bound_logger(logging.INFO),
        logger_factory=structlog.ReturnLoggerFactory(),
    )
    proc, endpoint = start_simulator(args.calls, args.rounds * (2 if args.split else 1))
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
        bare_costs, poll_costs, here_costs = [], [], []
        for i in range(args.rounds):
            bare_costs.append(bare(client, args.calls))
            poll_costs.append(polled(client, f"run-{i}", args.calls))
            if args.split:
                here = polled(client, f"run-{args.rounds + i}", args.calls, OnThisThread())
                here_costs.append(here)
    finally:
        proc.terminate()
        proc.wait()
    b, p = statistics.median(bare_costs), statistics.median(poll_costs)
    print(f"bare get_job_run   : {b * 1e6:8.1f} us CPU per call  (median of {args.rounds})")
    print(f"poller wait, per poll: {p * 1e6:6.1f} us CPU per poll  (median of {args.rounds})")
    print(f"ratio poller / bare: {p / b:.3f}  (poller adds {100 * (p / b - 1):+.1f} %)")
    if args.split:
        h = statistics.median(here_costs)
        print(f"poller wait, calls on the waiting thread: {h * 1e6:6.1f} us CPU per poll")
        print(
            f"ratio without the hop / bare: {h / b:.3f}  (the hop: {100 * (p - h) / b:+.1f} points)"
        )
    print(
        "per round (poller / bare):",
        ", ".join(f"{x / y:.3f}" for x, y in zip(poll_costs, bare_costs, strict=True)),
    )


if __name__ == "__main__":
    main()
