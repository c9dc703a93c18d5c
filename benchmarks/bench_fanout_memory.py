"""Memory: peak RSS of one process waiting on N runs at once, against a baseline of one.

The simulator runs in a child process of its own (its records would
otherwise count), with every run already SUCCESS; each measurement is a fresh
interpreter that calls ``wait_for_job_runs`` on the runs with a budget high
enough not to matter, then reports its own peak RSS. The baseline is the same
interpreter, poller imported, waiting on one run, measured in the same run.

    .venv/bin/python benchmarks/bench_fanout_memory.py [--runs 100000]
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import subprocess
import sys
import tempfile
import time

DOMAIN = "dzd_memory"


def child(runs: int, endpoint: str) -> None:
    """Wait on ``runs`` runs; print peak RSS (MB), seconds, and the outcomes."""
    import logging

    import botocore.session
    import structlog
    from botocore.config import Config

    from poller import wait_for_job_runs
    from poller.testing import Seams

    quiet = structlog.wrap_logger(
        structlog.PrintLogger(),
        wrapper_class=structlog.make_filtering_bound_logger(logging.CRITICAL),
    )
    started = time.monotonic()
    results = wait_for_job_runs(
        [(DOMAIN, f"r{i}") for i in range(runs)],
        client=botocore.session.Session().create_client(
            "datazone",
            region_name="us-east-1",
            endpoint_url=endpoint,
            config=Config(retries={"total_max_attempts": 1}, max_pool_connections=8),
        ),
        max_rps=1_000_000,
        seams=Seams(logger=quiet),
    )
    took = time.monotonic() - started
    lost = sum(1 for r in results if str(r.outcome) != "succeeded")
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024  # KB on Linux
    print(
        json.dumps(
            {"runs": runs, "peak_mb": round(peak, 1), "seconds": round(took, 1), "lost": lost}
        )
    )


def measure(runs: int, endpoint: str) -> dict[str, float]:
    out = subprocess.run(
        [sys.executable, __file__, "--child", str(runs), "--endpoint", endpoint],
        capture_output=True,
        text=True,
        check=True,
    )
    result: dict[str, float] = json.loads(out.stdout.splitlines()[-1])
    return result


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--runs", type=int, default=100_000)
    parser.add_argument("--child", type=int, default=None, help=argparse.SUPPRESS)
    parser.add_argument("--endpoint", default=None, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.child is not None:
        child(args.child, args.endpoint)
        return
    scenario = {
        "runs": [
            {"domain_id": DOMAIN, "run_id": f"r{i}", "statuses": ["SUCCESS"]}
            for i in range(args.runs)
        ]
    }
    with tempfile.NamedTemporaryFile("w", suffix=".json", delete=False) as f:
        json.dump(scenario, f)
    env = {**os.environ, "AWS_ACCESS_KEY_ID": "x", "AWS_SECRET_ACCESS_KEY": "y"}
    os.environ.update(env)
    sim = subprocess.Popen(
        [sys.executable, "-m", "poller.testing", "--scenario", f.name],
        stdout=subprocess.PIPE,
        text=True,
    )
    try:
        assert sim.stdout is not None
        endpoint = sim.stdout.readline().strip()
        base = measure(1, endpoint)
        fleet = measure(args.runs, endpoint)
    finally:
        sim.terminate()
        sim.wait()
        os.unlink(f.name)
    ratio = fleet["peak_mb"] / base["peak_mb"]
    print(f"baseline (1 run):      {base['peak_mb']:7.1f} MB peak RSS")
    print(
        f"fan-out ({args.runs} runs): {fleet['peak_mb']:7.1f} MB peak RSS, {ratio:.2f}x baseline, "
        f"+{(fleet['peak_mb'] - base['peak_mb']) * 1024 / max(args.runs, 1):.2f} KB a run, "
        f"{fleet['seconds']} s, {fleet['lost']} not succeeded"
    )


if __name__ == "__main__":
    main()
