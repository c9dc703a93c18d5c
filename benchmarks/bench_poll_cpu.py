"""CPU cost of one poll through poller against one bare ``client.get_job_run``, tracing off and on.

The simulator runs in its own process, so only the client side is measured:
process CPU time (user + system, background threads included) per call. One
process measures four modes, alternating them round by round (in a rotating
order) so machine noise hits all alike; the medians are compared as ratios:

- ``bare``: one bare ``client.get_job_run`` per call, no poller;
- ``without``: a poller wait in a process with no OpenTelemetry loaded,
  poller's code path when the ``otel`` extra is not installed (the modules
  are taken out of ``sys.modules`` for the round, and poller's handles reset);
- ``off``: the OpenTelemetry API loaded, no provider set (the extra
  installed, tracing not configured);
- ``on``: the SDK's tracer and meter providers, made anew for the round and
  handed to poller (`poller._otel.reset`): spans batched to an exporter that
  drops them, metrics read every second by a reader whose exporter drops
  them. Everything poller records is made, only not sent; the providers are
  made before the measured time (a process makes them once), their shutdown
  (the last export) is inside it;
- ``engine``: the same wait as ``without``, on real time, so it runs on the
  process's engine (its loop thread, the account's budget, the call pool),
  with a 1 us cadence so that it does not sleep either and the budget raised
  out of the way: what a real wait pays per poll.

With ``--hop``, two more modes split the engine's cost (they alternate with
the others):

- ``pooled``: the bare call handed to poller's call pool (`CallPool`) and
  waited for with ``.result()``: the thread hop alone, no poller code;
- ``inplace``: the ``engine`` wait with its fleet's calls made on the
  engine's own thread (an executor that runs them where submitted): the
  engine's work without the hop. Not a mode poller can run in: a call that
  never answers would hold up every wait, which the hard deadline forbids.

With ``--stand-in``, the engine wait is also timed with a stand-in client
that makes no HTTP (canned answers, parsed as botocore's): the engine's own
work per poll, with the pool's hop and in place, when no real call runs
between two polls to take the caches (the engine's code then runs warm).

    .venv/bin/python benchmarks/bench_poll_cpu.py [--calls 2000] [--rounds 5] [--hop] [--stand-in]

Targets: a single wait, blocking loop and engine alike, at most 1.3x the bare
call's CPU (issue 23; the 1.10x of issues 2 and 15 was withdrawn); tracing off
stays within 2 % of a run without the extra, and on costs at most 10 % more
than off (issue 18).
"""

from __future__ import annotations

import argparse
import concurrent.futures
import json
import logging
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from concurrent.futures import Executor, Future
from dataclasses import replace
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import boto3
import structlog
from botocore.config import Config
from opentelemetry.sdk.metrics import MeterProvider
from opentelemetry.sdk.metrics.export import (
    MetricExporter,
    MetricExportResult,
    PeriodicExportingMetricReader,
)
from opentelemetry.sdk.trace import TracerProvider
from opentelemetry.sdk.trace.export import BatchSpanProcessor, SpanExporter, SpanExportResult

from poller import PollPolicy, _otel, wait_for_job_run
from poller._engine import engine
from poller._limiter import budget_for
from poller._runtime import CallPool
from poller.testing import Seams

DOMAIN = "dzd_bench"
MODES = ("bare", "without", "off", "on", "engine")
# With --hop: the engine's cost split into the hop to the pool and the rest.
HOP_MODES = ("pooled", "inplace")
# The modes that differ only in OpenTelemetry, whose hooks are also timed alone.
TRACED = ("without", "off", "on")


def start_simulator(calls: int, runs: int) -> tuple[subprocess.Popen[str], str]:
    """A simulator process with ``runs`` runs of ``calls`` IN_PROGRESS answers, then SUCCESS."""
    scenario_runs = [
        {
            "domain_id": DOMAIN,
            "run_id": f"run-{i}",
            "statuses": ["IN_PROGRESS"] * calls + ["SUCCESS"],
        }
        for i in range(runs)
    ]
    scenario_runs.append({"domain_id": DOMAIN, "run_id": "bare", "statuses": ["IN_PROGRESS"]})
    scenario = Path(tempfile.mkdtemp()) / "scenario.json"
    scenario.write_text(json.dumps({"runs": scenario_runs}))
    proc = subprocess.Popen(
        [sys.executable, "-m", "poller.testing", "--scenario", str(scenario)],
        stdout=subprocess.PIPE,
        stderr=subprocess.DEVNULL,
        text=True,
    )
    assert proc.stdout is not None
    return proc, proc.stdout.readline().strip()


class DropSpans(SpanExporter):
    def export(self, spans: Any) -> SpanExportResult:
        return SpanExportResult.SUCCESS


class DropMetrics(MetricExporter):
    def export(self, metrics_data: Any, timeout_millis: float = 0, **_: Any) -> Any:
        return MetricExportResult.SUCCESS

    def force_flush(self, timeout_millis: float = 0) -> bool:
        return True

    def shutdown(self, timeout_millis: float = 0, **_: Any) -> None:
        return None


def telemetry(mode: str) -> Callable[[], None]:
    """Put the process in ``mode``; returns what ends it (measured with the wait)."""
    loaded = {name: module for name, module in sys.modules.items() if name == "opentelemetry"}
    loaded |= {n: m for n, m in sys.modules.items() if n.startswith("opentelemetry.")}
    if mode == "without":
        for name in loaded:
            del sys.modules[name]
        _otel.reset()
        return lambda: sys.modules.update(loaded)
    if mode != "on":
        _otel.reset()
        return lambda: None
    spans = TracerProvider()
    spans.add_span_processor(BatchSpanProcessor(DropSpans()))
    meters = MeterProvider(
        metric_readers=[PeriodicExportingMetricReader(DropMetrics(), export_interval_millis=1000)]
    )
    _otel.reset(tracer_provider=spans, meter_provider=meters)

    def end() -> None:
        spans.shutdown()
        meters.shutdown()
        _otel.reset()

    return end


class InPlace(Executor):
    """Runs each call where it is submitted (``inplace``: on the engine's thread)."""

    def submit(self, fn: Callable[..., Any], /, *args: Any, **kwargs: Any) -> Future[Any]:
        future: Future[Any] = Future()
        try:
            future.set_result(fn(*args, **kwargs))
        except BaseException as exc:
            future.set_exception(exc)
        return future


def on_engine(fn: Callable[[], Any]) -> Any:
    """``fn()`` run on the engine's loop thread (where its fleets live)."""
    done: concurrent.futures.Future[Any] = concurrent.futures.Future()
    engine().loop().call_soon_threadsafe(lambda: done.set_result(fn()))
    return done.result()


class StandIn:
    """A client that makes no HTTP: ``calls`` answers IN_PROGRESS, then SUCCESS."""

    meta = None  # a client of its own: its own budget and fleet

    def __init__(self, calls: int) -> None:
        self.left = calls

    def get_job_run(self, *, domainIdentifier: str, identifier: str) -> dict[str, Any]:
        self.left -= 1
        when = datetime.now(UTC)
        answer: dict[str, Any] = {
            "domainId": domainIdentifier,
            "id": identifier,
            "jobId": "job",
            "jobType": "LINEAGE",
            "runMode": "SCHEDULED",
            "status": "IN_PROGRESS" if self.left > 0 else "SUCCESS",
            "createdAt": when,
            "startTime": when,
            "details": {"lineageRunDetails": {"sqlQueryRunDetails": {}}},
        }
        if self.left <= 0:
            answer["endTime"] = when
        return answer


def stand_in(calls: int, *, inplace: bool) -> float:
    """CPU seconds per poll of the engine wait on a `StandIn` client (no HTTP)."""
    client = StandIn(calls + 1)
    budget_for(client, 1e6)
    if inplace:
        on_engine(lambda: engine().fleet(client)).executor = InPlace()
    policy = PollPolicy(timeout=None, interval=1e-6, max_interval=1e-6, jitter=0.0)
    start = time.process_time()
    result = wait_for_job_run(
        DOMAIN, "stand-in", client=client, policy=replace(policy, history=False)
    )
    elapsed = time.process_time() - start
    assert result.polls == calls + 1, result.polls
    return elapsed / result.polls


def pooled(client: Any, calls: int, pool: CallPool) -> float:
    """CPU seconds per bare get_job_run call made on a pool worker, waited for here."""
    start = time.process_time()
    for _ in range(calls):
        pool.submit(client.get_job_run, domainIdentifier=DOMAIN, identifier="bare").result()
    return (time.process_time() - start) / calls


def bare(client: Any, calls: int) -> float:
    """CPU seconds per bare get_job_run call."""
    start = time.process_time()
    for _ in range(calls):
        client.get_job_run(domainIdentifier=DOMAIN, identifier="bare")
    return (time.process_time() - start) / calls


def polled(client: Any, run_id: str, calls: int, mode: str) -> float:
    """CPU seconds per poll of a poller wait that takes ``calls`` + 1 polls, sleeping 0."""
    end = telemetry("without" if mode in ("engine", "inplace") else mode)
    executor = None
    if mode == "inplace":
        fleet = on_engine(lambda: engine().fleet(client))
        executor, fleet.executor = fleet.executor, InPlace()
    if mode in ("engine", "inplace"):
        budget_for(client, 1e6)
        policy = PollPolicy(timeout=None, interval=1e-6, max_interval=1e-6, jitter=0.0)
        seams = None
    else:
        policy, seams = PollPolicy(timeout=None), Seams(sleep=lambda _: None)
    start = time.process_time()
    result = wait_for_job_run(
        DOMAIN, run_id, client=client, policy=replace(policy, history=False), seams=seams
    )
    end()
    elapsed = time.process_time() - start
    if executor is not None:
        fleet.executor = executor
    assert result.polls == calls + 1, result.polls
    return elapsed / result.polls


def hooks(client: Any, mode: str, calls: int) -> float:
    """CPU seconds of poller's per-poll OpenTelemetry hooks alone, in ``mode``.

    What each poll runs of them: the call pool's ``call_context`` (the call in
    the submitter's contextvars, the wait's span current) and the edge's
    ``called`` (``poller.calls``). With tracing on, inside a wait's span.
    """
    end = telemetry(mode)
    span = _otel.wait_started(DOMAIN, "hooks")
    start = time.process_time()
    for _ in range(calls):
        _otel.call_context().run(int)
        _otel.called(client, "GetJobRun", None)
    elapsed = time.process_time() - start
    if span is not None:
        span.close(0)
    end()
    return elapsed / calls


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--calls", type=int, default=2000)
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument(
        "--split", action="store_true", help="also measure the wait without the call pool's hop"
    )
    parser.add_argument(
        "--hop", action="store_true", help="also split the engine's cost: the hop and the rest"
    )
    parser.add_argument(
        "--stand-in",
        action="store_true",
        help="also time the engine wait on a client that makes no HTTP (its own work, warm)",
    )
    args = parser.parse_args()
    modes = MODES + HOP_MODES if args.hop else MODES
    pool = CallPool()
    # A CLI or an application configures structlog; here, as in production
    # JSON logging, events are rendered, then dropped instead of printed.
    structlog.configure(
        processors=[structlog.processors.JSONRenderer()],
        wrapper_class=structlog.make_filtering_bound_logger(logging.INFO),
        logger_factory=structlog.ReturnLoggerFactory(),
    )
    polls = [mode for mode in modes if mode not in ("bare", "pooled")]
    proc, endpoint = start_simulator(args.calls, args.rounds * len(polls))
    costs: dict[str, list[float]] = {mode: [] for mode in modes}
    runs = iter(range(args.rounds * len(polls)))
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
        for i in range(args.rounds):
            for mode in modes[i % len(modes) :] + modes[: i % len(modes)]:
                if mode == "bare":
                    costs[mode].append(bare(client, args.calls))
                elif mode == "pooled":
                    costs[mode].append(pooled(client, args.calls, pool))
                else:
                    costs[mode].append(polled(client, f"run-{next(runs)}", args.calls, mode))
        # The hooks alone, measured exactly: what the rounds' noise cannot resolve.
        hook_costs = {
            mode: statistics.median(hooks(client, mode, 20 * args.calls) for _ in range(5))
            for mode in TRACED
        }
    finally:
        proc.terminate()
        proc.wait()
    med = {mode: statistics.median(values) for mode, values in costs.items()}
    rounds = f"median of {args.rounds}, {args.calls} calls each"
    print(f"bare get_job_run            : {med['bare'] * 1e6:7.1f} us CPU per call  ({rounds})")
    for mode, label in (
        ("without", "no otel"),
        ("off", "otel off"),
        ("on", "otel on"),
        ("engine", "on the engine"),
    ):
        print(f"poller wait, {label:<15}: {med[mode] * 1e6:7.1f} us CPU per poll")
    if args.hop:
        print(f"bare call on the call pool  : {med['pooled'] * 1e6:7.1f} us CPU per call")
        print(f"engine wait, calls in place : {med['inplace'] * 1e6:7.1f} us CPU per poll")
    for mode in modes:
        print(f"  {mode:<8} rounds (us): {', '.join(f'{c * 1e6:.1f}' for c in costs[mode])}")
    # Each ratio is also taken within each round (the modes ran back to back
    # there), and the median of those is given: it cancels the machine's drift.
    for a, b, label, target in (
        ("without", "bare", "poller / bare     ", "target at most 1.3x (issue 23)"),
        ("engine", "bare", "engine / bare     ", "target at most 1.3x (issue 23)"),
        ("off", "without", "otel off / no otel", "target within 2 %"),
        ("on", "off", "otel on / otel off", "target at most +10 %"),
        *(
            (
                ("pooled", "bare", "pool hop / bare   ", "the hop alone"),
                ("inplace", "bare", "engine in place   ", "the engine without the hop"),
            )
            if args.hop
            else ()
        ),
    ):
        ratio = med[a] / med[b]
        paired = statistics.median(x / y for x, y in zip(costs[a], costs[b], strict=True))
        print(
            f"{label}: {ratio:.3f} of medians ({100 * (ratio - 1):+.1f} %), "
            f"{paired:.3f} paired ({100 * (paired - 1):+.1f} %); {target}"
        )

    if args.stand_in:
        warm = {
            inplace: statistics.median(
                stand_in(args.calls, inplace=inplace) for _ in range(args.rounds)
            )
            for inplace in (False, True)
        }
        engine_extra = med["engine"] - med["bare"]
        print(
            f"stand-in client, on the engine: {warm[False] * 1e6:7.1f} us CPU per poll "
            f"(the engine and the hop, warm; {engine_extra * 1e6:.1f} us between real calls)"
        )
        print(f"stand-in client, in place    : {warm[True] * 1e6:7.1f} us CPU per poll")

    for mode, cost in hook_costs.items():
        share = 100 * cost / med["bare"]
        print(
            f"per-poll hooks alone, {mode:<7}: {cost * 1e6:6.2f} us CPU "
            f"({share:.2f} % of a bare call)"
        )


if __name__ == "__main__":
    main()
