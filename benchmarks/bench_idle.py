"""CPU of a process holding 1,000 waits at steady state: 100 jobs, hour-long runs.

The simulator runs in its own process, so only poller's side is measured:
this process's CPU time (user + system, every thread) over a window of
steady state, after the cadence has reached ``max_interval`` (30 s). The
runs never finish within the hour, so every wait looks at its run every
30 s (by its own GetJobRun or its job's listing) and sleeps in between.

Reported: the share of one core over the window, the calls the simulator
saw in it, and the CPU per call against a bare ``client.get_job_run``
measured in the same process just before (a ratio, so machine noise
cancels out).

    .venv/bin/python benchmarks/bench_idle.py [--waits 1000] [--jobs 100] [--warm 150] [--window 60]

Target (issue 23): at most 2 % of a core at steady state.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

import boto3

from poller import PollPolicy, log, wait_for_job_runs

DOMAIN = "dzd_idle"


def start_simulator(waits: int, jobs: int) -> tuple[subprocess.Popen[str], str, Path]:
    """A simulator process with ``waits`` runs of ``jobs`` jobs, IN_PROGRESS for good."""
    runs = [
        {
            "domain_id": DOMAIN,
            "run_id": f"run-{i}",
            "job_id": f"job-{i % jobs}",
            "statuses": ["IN_PROGRESS"],
        }
        for i in range(waits)
    ]
    runs.append({"domain_id": DOMAIN, "run_id": "bare", "statuses": ["IN_PROGRESS"]})
    folder = Path(tempfile.mkdtemp())
    scenario = folder / "scenario.json"
    scenario.write_text(json.dumps({"runs": runs}))
    log_file = folder / "requests.jsonl"
    proc = subprocess.Popen(
        [
            sys.executable,
            "-m",
            "poller.testing",
            "--scenario",
            str(scenario),
            "--log",
            str(log_file),
        ],
        stdout=subprocess.PIPE,
        stderr=subprocess.DEVNULL,
        text=True,
    )
    assert proc.stdout is not None
    return proc, proc.stdout.readline().strip(), log_file


def requests_between(log_file: Path, start: float, end: float) -> int:
    """Requests the simulator logged between two epoch times."""
    from datetime import datetime

    count = 0
    for line in log_file.read_text().splitlines():
        at = datetime.fromisoformat(json.loads(line)["time"].replace("Z", "+00:00")).timestamp()
        count += start <= at < end
    return count


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--waits", type=int, default=1000)
    parser.add_argument("--jobs", type=int, default=100)
    parser.add_argument("--warm", type=float, default=150.0, help="seconds before the window")
    parser.add_argument("--window", type=float, default=60.0, help="seconds measured")
    args = parser.parse_args()
    log.configure_logging(level="error")
    proc, endpoint, log_file = start_simulator(args.waits, args.jobs)
    os.environ.update(
        AWS_ENDPOINT_URL_DATAZONE=endpoint,
        AWS_REGION="us-east-1",
        AWS_DEFAULT_REGION="us-east-1",
        AWS_ACCESS_KEY_ID="testing",
        AWS_SECRET_ACCESS_KEY="testing",
    )
    try:
        client = boto3.client("datazone")
        client.get_job_run(domainIdentifier=DOMAIN, identifier="bare")
        bare_calls = 300
        cpu = time.process_time()
        for _ in range(bare_calls):
            client.get_job_run(domainIdentifier=DOMAIN, identifier="bare")
        bare = (time.process_time() - cpu) / bare_calls

        refs = [(DOMAIN, f"run-{i}") for i in range(args.waits)]
        waiter = threading.Thread(
            target=wait_for_job_runs,
            args=(refs,),
            kwargs={"policy": PollPolicy(timeout=3600)},
            daemon=True,
        )
        waiter.start()
        time.sleep(args.warm)
        wall, cpu = time.time(), time.process_time()
        time.sleep(args.window)
        used = time.process_time() - cpu
        calls = requests_between(log_file, wall, wall + args.window)
    finally:
        proc.terminate()
        proc.wait()
    share = used / args.window
    per_call = used / calls if calls else float("nan")
    print(
        f"{args.waits} waits, {args.jobs} jobs, runs that do not end; "
        f"window {args.window:.0f} s after {args.warm:.0f} s"
    )
    print(f"CPU over the window: {used:.2f} s = {100 * share:.2f} % of a core")
    print(f"calls in the window: {calls} ({calls / args.window:.1f}/s)")
    print(
        f"CPU per call: {1000 * per_call:.2f} ms; a bare get_job_run: {1000 * bare:.2f} ms "
        f"({per_call / bare:.2f}x)"
    )


if __name__ == "__main__":
    main()
