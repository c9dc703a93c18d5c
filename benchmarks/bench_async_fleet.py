"""2,000 concurrent async waits in one process against 2,000 blocking waits in threads.

What an Airflow triggerer (or any event-loop service) gains from poller.aio:
thousands of waits sleep on one event loop while a small shared pool makes the
blocking boto3 calls. Each side runs in its own subprocess, so peak RSS is that
side's alone, against its own simulator process (started fresh, so the runs'
timelines start with the side), whose threads and memory are not counted.

Runs finish at random times over ``--spread`` seconds (fixed seed); both sides
wait with the same, default, poll policy. Reported per side: peak RSS, CPU
seconds (user + system, from the first wait to the last) per poll, peak OS
thread count, and the ratios async / threads.

    .venv/bin/python benchmarks/bench_async_fleet.py [--runs 2000] [--spread 60] [--rounds 1]

Targets (issue 4): async under 150 MB peak RSS, at most 1/10 of the baseline's
threads, and CPU per poll no higher than the baseline's.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import logging
import os
import random
import resource
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

DOMAIN = "dzd_fleet"
# The blocking baseline shares one client, as careful threaded code would
# (a client per thread would cost far more); its pool lets many calls overlap.
BASELINE_POOL = 100


def scenario(runs: int, spread: float, seed: int) -> dict[str, Any]:
    """Runs that start within a third of their life and succeed uniformly over `spread` s."""
    rng = random.Random(seed)
    out = []
    for i in range(runs):
        end = rng.uniform(1.0, spread)
        start = end * rng.uniform(0.0, 0.3)
        timeline = [[0, "SCHEDULED"], [round(start, 3), "IN_PROGRESS"], [round(end, 3), "SUCCESS"]]
        out.append({"domain_id": DOMAIN, "run_id": f"run-{i}", "timeline": timeline})
    return {"runs": out}


def start_simulator(path: Path) -> tuple[subprocess.Popen[str], str]:
    """The simulator in its own process, so its threads and memory are not measured."""
    proc = subprocess.Popen(
        [sys.executable, "-m", "poller.testing", "--scenario", str(path)],
        stdout=subprocess.PIPE,
        stderr=subprocess.DEVNULL,
        text=True,
    )
    assert proc.stdout is not None
    return proc, proc.stdout.readline().strip()


def os_threads() -> int:
    """Threads of this process as the kernel counts them (not only Python's)."""
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith("Threads:"):
            return int(line.split()[1])
    return threading.active_count()


class Sampler:
    """Peak OS thread count, sampled every 50 ms from one thread (on both sides alike)."""

    def __init__(self) -> None:
        self.peak = 0
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)

    def _run(self) -> None:
        while not self._stop.wait(0.05):
            self.peak = max(self.peak, os_threads())

    def __enter__(self) -> Sampler:
        self._thread.start()
        return self

    def __exit__(self, *_: object) -> None:
        self._stop.set()
        self._thread.join()


def cpu_seconds() -> float:
    usage = resource.getrusage(resource.RUSAGE_SELF)
    return usage.ru_utime + usage.ru_stime


def side_async(endpoint: str, runs: int) -> list[Any]:
    """Every wait a coroutine on one loop; calls in poller.aio's shared pool."""
    from poller import ClientSettings
    from poller.aio import async_wait_for_job_run

    settings = ClientSettings(endpoint_url=endpoint)

    async def all_waits() -> list[Any]:
        return await asyncio.gather(
            *(
                async_wait_for_job_run(DOMAIN, f"run-{i}", client=settings, timeout=600)
                for i in range(runs)
            )
        )

    return asyncio.run(all_waits())


def side_threads(endpoint: str, runs: int) -> list[Any]:
    """Every wait a blocking wait_for_job_run in its own thread, one shared client."""
    from poller import wait_for_job_run
    from poller._datazone import build_client

    client = build_client(endpoint_url=endpoint, max_pool_connections=BASELINE_POOL)
    results: list[Any] = [None] * runs

    def one(i: int) -> None:
        results[i] = wait_for_job_run(DOMAIN, f"run-{i}", client=client, timeout=600)

    threads = [threading.Thread(target=one, args=(i,)) for i in range(runs)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    return results


def measure(side: str, endpoint: str, runs: int) -> dict[str, Any]:
    """One side, measured in this (sub)process."""
    import structlog

    # As in production JSON logging: events are rendered, then dropped.
    structlog.configure(
        processors=[structlog.processors.JSONRenderer()],
        wrapper_class=structlog.make_filtering_bound_logger(logging.INFO),
        logger_factory=structlog.ReturnLoggerFactory(),
    )
    logging.getLogger("urllib3").setLevel(logging.ERROR)
    body: Callable[[str, int], list[Any]] = side_async if side == "async" else side_threads
    cpu, wall = cpu_seconds(), time.monotonic()
    with Sampler() as sampler:
        results = body(endpoint, runs)
    cpu, wall = cpu_seconds() - cpu, time.monotonic() - wall
    polls = sum(r.polls for r in results)
    return {
        "side": side,
        "runs": runs,
        "succeeded": sum(r.outcome == "succeeded" for r in results),
        "polls": polls,
        "throttled": sum(r.throttled for r in results),
        "wall_s": round(wall, 1),
        "cpu_s": round(cpu, 2),
        "cpu_us_per_poll": round(1e6 * cpu / polls, 1),
        # ru_maxrss is in KiB on Linux.
        "peak_rss_mb": round(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024, 1),
        "peak_threads": sampler.peak,
    }


def run_side(side: str, args: argparse.Namespace, path: Path) -> dict[str, Any]:
    sim, endpoint = start_simulator(path)
    try:
        out = subprocess.run(
            [
                sys.executable,
                __file__,
                "--side",
                side,
                "--endpoint",
                endpoint,
                "--runs",
                str(args.runs),
            ],
            check=True,
            capture_output=True,
            text=True,
            # Dummy credentials and a region: the simulator only checks their shape.
            env={
                **os.environ,
                "AWS_ACCESS_KEY_ID": "testing",
                "AWS_SECRET_ACCESS_KEY": "testing",
                "AWS_DEFAULT_REGION": "us-east-1",
            },
        )
    finally:
        sim.terminate()
        sim.wait()
    return dict(json.loads(out.stdout.strip().splitlines()[-1]))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--runs", type=int, default=2000)
    parser.add_argument("--spread", type=float, default=60.0, help="runs finish within this (s)")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--rounds", type=int, default=1, help="alternate the sides this often")
    parser.add_argument("--side", choices=["async", "threads"], help=argparse.SUPPRESS)
    parser.add_argument("--endpoint", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.side:
        print(json.dumps(measure(args.side, args.endpoint, args.runs)))
        return
    path = Path(tempfile.mkdtemp()) / "fleet.json"
    path.write_text(json.dumps(scenario(args.runs, args.spread, args.seed)))
    # Rounds alternate the sides, so drift on the machine hits both alike;
    # each figure is the median over the rounds.
    rounds: dict[str, list[dict[str, Any]]] = {"threads": [], "async": []}
    for _ in range(args.rounds):
        for side, seen in rounds.items():
            seen.append(run_side(side, args, path))
    sides = {
        side: {k: statistics.median(r[k] for r in seen) for k in seen[0] if k != "side"}
        for side, seen in rounds.items()
    }
    a, t = sides["async"], sides["threads"]
    print(
        f"{args.runs} waits, runs finishing over {args.spread:g} s (seed {args.seed}), "
        f"median of {args.rounds} round(s)"
    )
    print(f"{'':22}{'threads':>12}{'async':>12}{'async/threads':>15}")
    for key, label in [
        ("peak_rss_mb", "peak RSS (MB)"),
        ("peak_threads", "peak OS threads"),
        ("cpu_us_per_poll", "CPU per poll (us)"),
        ("cpu_s", "CPU total (s)"),
        ("polls", "polls"),
        ("wall_s", "wall (s)"),
        ("succeeded", "succeeded"),
    ]:
        print(f"{label:22}{t[key]:>12.1f}{a[key]:>12.1f}{a[key] / t[key]:>15.3f}")
    print(json.dumps(rounds))
    ok = (
        a["peak_rss_mb"] < 150
        and a["peak_threads"] <= t["peak_threads"] / 10
        and a["cpu_us_per_poll"] <= t["cpu_us_per_poll"]
    )
    print(
        "targets (RSS < 150 MB, threads <= 1/10, CPU/poll <= baseline):", "met" if ok else "MISSED"
    )


if __name__ == "__main__":
    main()
