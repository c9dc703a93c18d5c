"""OpenTelemetry: the spans and metrics a wait emits, where they nest, and that off costs nothing.

Each test gets its own SDK providers (an in-memory span exporter and metric
reader), handed to poller with `_otel.reset`, so no global provider is set in
the test process; the tests that are about the global providers run in a
child interpreter.
"""

from __future__ import annotations

import asyncio
import contextvars
import json
import os
import subprocess
import sys
import textwrap
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

import pytest
from helpers import DOMAIN, FAST, LINEAGE, QUIET, FakeTime, Wait, keep
from opentelemetry import trace
from opentelemetry.sdk.metrics import MeterProvider
from opentelemetry.sdk.metrics.export import InMemoryMetricReader
from opentelemetry.sdk.trace import ReadableSpan, TracerProvider
from opentelemetry.sdk.trace.export import SimpleSpanProcessor
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter
from opentelemetry.trace import StatusCode

from poller import Outcome, PollPolicy, wait_for_job_run, wait_for_job_runs
from poller import _otel as otel
from poller._limiter import budget_for
from poller.poke import JobRunPoker
from poller.testing import Fault, RunScript, Seams, Simulator


@dataclass
class Telemetry:
    """What poller emitted during one test: finished spans, and the metrics read on demand."""

    spans: InMemorySpanExporter
    reader: InMemoryMetricReader
    tracer: trace.Tracer

    def waits(self) -> list[ReadableSpan]:
        return [s for s in self.spans.get_finished_spans() if s.name == "poller wait"]

    def points(self, name: str) -> list[Any]:
        data = self.reader.get_metrics_data()
        if data is None:
            return []
        return [
            point
            for resource in data.resource_metrics
            for scope in resource.scope_metrics
            for metric in scope.metrics
            if metric.name == name
            for point in metric.data.data_points
        ]

    def counts(self, name: str, key: str) -> dict[str, int]:
        """A counter's values by one attribute."""
        return {str(p.attributes[key]): p.value for p in self.points(name)}


@pytest.fixture
def telemetry() -> Iterator[Telemetry]:
    spans = InMemorySpanExporter()
    tracer_provider = TracerProvider()
    tracer_provider.add_span_processor(SimpleSpanProcessor(spans))
    reader = InMemoryMetricReader()
    meter_provider = MeterProvider(metric_readers=[reader])
    otel.reset(tracer_provider=tracer_provider, meter_provider=meter_provider)
    yield Telemetry(spans, reader, tracer_provider.get_tracer("test"))
    otel.reset()
    tracer_provider.shutdown()
    meter_provider.shutdown()


def events(span: ReadableSpan) -> list[tuple[str, dict[str, Any]]]:
    return [(e.name, dict(e.attributes or {})) for e in span.events]


def test_a_successful_wait_is_one_span_with_its_result_and_one_event_per_status(
    telemetry: Telemetry, sim: Simulator, client: Any, wait: Wait
) -> None:
    sim.add_run(
        DOMAIN,
        "run-1",
        RunScript(statuses=["SCHEDULED", "IN_PROGRESS", "IN_PROGRESS", "SUCCESS"], lineage=LINEAGE),
        job_id="job-7",
    )
    result = wait(client, policy=PollPolicy(jitter=0, history=False))
    (span,) = telemetry.waits()
    assert span.kind is trace.SpanKind.INTERNAL
    assert span.status.status_code is StatusCode.UNSET
    assert dict(span.attributes or {}) == {
        "cloud.provider": "aws",
        "cloud.region": "us-east-1",
        "poller.domain_id": DOMAIN,
        "poller.job_run_id": "run-1",
        "poller.job_id": "job-7",
        "poller.status": "SUCCESS",
        "poller.outcome": "succeeded",
        "poller.polls": 4,
        "poller.throttled": 0,
        "poller.errors_retried": 0,
        "poller.waited_s": result.waited_s,
        "poller.lineage.total_queries_processed": 42,
        "poller.lineage.num_queries_failed": 2,
        "poller.lineage.num_queries_succeeded": 40,
    }
    # One event per change, none per poll (four polls, three statuses).
    assert events(span) == [
        ("poller.status_changed", {"poller.status.to": "SCHEDULED"}),
        (
            "poller.status_changed",
            {"poller.status.from": "SCHEDULED", "poller.status.to": "IN_PROGRESS"},
        ),
        (
            "poller.status_changed",
            {"poller.status.from": "IN_PROGRESS", "poller.status.to": "SUCCESS"},
        ),
    ]
    assert telemetry.counts("poller.calls", "poller.call.answer") == {"ok": 4}
    (call,) = telemetry.points("poller.calls")
    assert dict(call.attributes) == {
        "rpc.system": "aws-api",
        "rpc.service": "DataZone",
        "rpc.method": "GetJobRun",
        "cloud.region": "us-east-1",
        "poller.call.answer": "ok",
    }
    assert telemetry.counts("poller.waits", "poller.outcome") == {"succeeded": 1}
    (lag,) = telemetry.points("poller.detection_lag")
    # The simulator's endTime is the wall time of its SUCCESS answer: known at once.
    assert lag.count == 1
    assert 0 <= lag.sum < 5


def test_a_throttle_storm_is_an_event_per_throttle_and_calls_counted_by_answer(
    telemetry: Telemetry, sim: Simulator, client: Any, wait: Wait
) -> None:
    sim.add_run(DOMAIN, "run-1", RunScript(statuses=[*[Fault.throttle()] * 6, "SUCCESS"]))
    result = wait(client)
    assert result.throttled == 6
    (span,) = telemetry.waits()
    throttles = [attrs for name, attrs in events(span) if name == "poller.throttled"]
    assert [t["poller.attempt"] for t in throttles] == [1, 2, 3, 4, 5, 6]
    assert {t["error.type"] for t in throttles} == {"ThrottlingException"}
    # Each names the real wait before the next call, as the `throttled` log event does.
    assert [t["poller.sleep_s"] for t in throttles] == [round(s, 3) for s in wait.fake_time.sleeps]
    assert span.attributes is not None
    assert span.attributes["poller.throttled"] == 6
    assert span.status.status_code is StatusCode.UNSET
    assert telemetry.counts("poller.calls", "poller.call.answer") == {"throttled": 6, "ok": 1}
    throttled = next(
        p for p in telemetry.points("poller.calls") if p.attributes["poller.call.answer"] != "ok"
    )
    assert throttled.attributes["error.type"] == "ThrottlingException"


def test_a_retried_fault_is_a_retrying_event(
    telemetry: Telemetry, sim: Simulator, client: Any, wait: Wait
) -> None:
    sim.add_run(DOMAIN, "run-1", RunScript(statuses=[Fault.internal(), "SUCCESS"]))
    wait(client)
    (span,) = telemetry.waits()
    assert [name for name, _ in events(span)] == [
        "poller.retrying",
        "poller.status_changed",
    ]
    assert events(span)[0][1]["error.type"] == "InternalServerException"
    assert telemetry.counts("poller.calls", "poller.call.answer") == {"transient": 1, "ok": 1}


def test_a_failed_run_makes_an_error_span_with_the_run_s_message(
    telemetry: Telemetry, sim: Simulator, client: Any, wait: Wait
) -> None:
    sim.add_run(
        DOMAIN, "run-1", RunScript(statuses=["IN_PROGRESS", "FAILED"], error_message="bad SQL")
    )
    assert wait.result(client).outcome is Outcome.FAILED
    (span,) = telemetry.waits()
    assert span.status.status_code is StatusCode.ERROR
    assert span.status.description == "bad SQL"
    assert span.attributes is not None
    assert span.attributes["error.type"] == "FAILED"
    assert span.attributes["poller.outcome"] == "failed"
    assert telemetry.counts("poller.waits", "poller.outcome") == {"failed": 1}


def test_a_wait_timeout_makes_an_error_span_named_by_its_error_and_no_detection_lag(
    telemetry: Telemetry, sim: Simulator, client: Any, wait: Wait
) -> None:
    sim.add_run(DOMAIN, "run-1", RunScript(statuses=["IN_PROGRESS"]))
    result = wait.result(client, timeout=30)
    assert result.outcome is Outcome.WAIT_TIMEOUT
    (span,) = telemetry.waits()
    assert span.status.status_code is StatusCode.ERROR
    assert span.attributes is not None
    assert span.attributes["error.type"] == "WaitTimeoutError"
    assert span.attributes["poller.status"] == "IN_PROGRESS"
    assert telemetry.counts("poller.waits", "poller.outcome") == {"wait_timeout": 1}
    assert telemetry.points("poller.detection_lag") == []


def test_a_denied_call_is_counted_as_denied_and_ends_the_span_in_error(
    telemetry: Telemetry, sim: Simulator, client: Any, wait: Wait
) -> None:
    sim.add_run(
        DOMAIN,
        "run-1",
        RunScript(statuses=[Fault.error("AccessDeniedException", 403, "no read"), "SUCCESS"]),
    )
    assert wait.result(client).outcome is Outcome.ERROR
    (span,) = telemetry.waits()
    assert span.status.status_code is StatusCode.ERROR
    assert span.attributes is not None
    assert span.attributes["error.type"] == "AccessDeniedError"
    assert telemetry.counts("poller.calls", "poller.call.answer") == {"denied": 1}


def test_a_wait_nests_under_the_caller_s_span_blocking_or_async(
    telemetry: Telemetry, sim: Simulator, client: Any, wait: Wait
) -> None:
    sim.add_run(DOMAIN, "run-1", RunScript(statuses=["IN_PROGRESS", "SUCCESS"]))
    with telemetry.tracer.start_as_current_span("task") as task:
        wait(client)
        # The caller's current span is its own again once the wait is over.
        assert trace.get_current_span() is task
    (span,) = telemetry.waits()
    assert span.parent is not None
    assert span.parent.span_id == task.get_span_context().span_id
    assert span.context.trace_id == task.get_span_context().trace_id


def test_each_run_of_a_fan_out_has_its_own_span_under_the_caller_s(
    telemetry: Telemetry, real_sim: Simulator
) -> None:
    ends = {"a": "SUCCESS", "b": "FAILED", "c": "SUCCESS"}
    for run_id, end in ends.items():
        real_sim.add_run(DOMAIN, run_id, RunScript(statuses=["IN_PROGRESS", end]))
    with telemetry.tracer.start_as_current_span("task") as task:
        results = wait_for_job_runs(
            [(DOMAIN, run_id) for run_id in ends],
            client=keep(real_sim.client()),
            policy=FAST,
            seams=Seams(logger=QUIET),
        )
    assert [r.job_run_id for r in results] == list(ends)
    spans = {s.attributes["poller.job_run_id"]: s for s in telemetry.waits() if s.attributes}
    assert {run_id: s.attributes["poller.status"] for run_id, s in spans.items()} == ends  # type: ignore[index]
    for span in spans.values():
        assert span.parent is not None
        assert span.parent.span_id == task.get_span_context().span_id
    assert telemetry.counts("poller.waits", "poller.outcome") == {"succeeded": 2, "failed": 1}
    assert sum(p.count for p in telemetry.points("poller.detection_lag")) == 3
    # The process-wide budget's rate, as the gauge reads it.
    (rate,) = telemetry.points("poller.budget.rate")
    assert rate.value == budget_for(real_sim.client()).rate


def test_a_call_runs_in_the_caller_s_context_under_the_wait_s_span(
    telemetry: Telemetry, real_sim: Simulator
) -> None:
    """What an instrumentation of botocore sees in the call thread: the wait's trace."""
    real_sim.add_run(DOMAIN, "run-1", RunScript(statuses=["IN_PROGRESS", "SUCCESS"]))
    request = contextvars.ContextVar("request", default="none")
    seen: list[tuple[str, Any, str]] = []

    def before_call(**_: Any) -> None:
        import threading

        name = threading.current_thread().name
        seen.append((request.get(), trace.get_current_span(), name))

    client = keep(real_sim.client())
    client.meta.events.register("before-call.datazone.GetJobRun", before_call)
    request.set("req-42")
    with telemetry.tracer.start_as_current_span("task"):
        wait_for_job_run(DOMAIN, "run-1", client=client, policy=FAST, seams=Seams(logger=QUIET))

        async def in_a_task() -> None:
            request.set("req-43")
            real_sim.add_run(DOMAIN, "run-2", RunScript(statuses=["SUCCESS"]))
            from poller.aio import async_wait_for_job_run

            await async_wait_for_job_run(
                DOMAIN, "run-2", client=client, policy=FAST, seams=Seams(logger=QUIET)
            )

        asyncio.run(in_a_task())
    first, second = sorted(telemetry.waits(), key=lambda s: s.start_time or 0)
    assert [(value, span.get_span_context().span_id) for value, span, _ in seen] == [
        ("req-42", first.context.span_id),
        ("req-42", first.context.span_id),
        ("req-43", second.context.span_id),
    ]
    assert all(thread.startswith("poller-call") for _, _, thread in seen)


def test_a_poke_still_waiting_ends_its_span_and_the_last_poke_gives_the_result(
    telemetry: Telemetry, sim: Simulator, client: Any, fake_time: FakeTime
) -> None:
    sim.add_run(DOMAIN, "run-1", RunScript(statuses=["IN_PROGRESS", "SUCCESS"]))
    poker = JobRunPoker(
        DOMAIN,
        "run-1",
        client=client,
        seams=Seams(clock=fake_time.clock, sleep=fake_time.sleep, logger=QUIET),
    )
    assert not poker.poke().done
    assert poker.poke().done
    first, last = telemetry.waits()
    assert first.attributes is not None
    assert last.attributes is not None
    assert first.attributes["poller.polls"] == 1
    assert "poller.outcome" not in first.attributes
    assert last.attributes["poller.resumed"] is True
    assert last.attributes["poller.outcome"] == "succeeded"
    assert [name for name, _ in events(last)] == ["poller.status_changed"]


def test_without_a_provider_a_wait_emits_nothing_and_with_one_it_does() -> None:
    """In a child: the API loaded but no provider set, then the global SDK providers set."""
    code = textwrap.dedent(
        f"""
        import json
        from opentelemetry import metrics, trace
        from opentelemetry.sdk.metrics import MeterProvider
        from opentelemetry.sdk.metrics.export import InMemoryMetricReader
        from opentelemetry.sdk.trace import TracerProvider
        from opentelemetry.sdk.trace.export import SimpleSpanProcessor
        from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter
        from poller import PollPolicy, wait_for_job_run
        from poller.testing import RunScript, Simulator
        from poller import _otel

        def names(reader):
            data = reader.get_metrics_data()
            return sorted(
                m.name for r in (data.resource_metrics if data else []) for s in r.scope_metrics
                for m in s.metrics if m.name.startswith("poller.")
            )

        with Simulator() as sim:
            for run in ("before", "after"):
                sim.add_run("{DOMAIN}", run, RunScript(statuses=["SUCCESS"]))
            client = sim.client()
            wait_for_job_run("{DOMAIN}", "before", client=client, policy=PollPolicy(timeout=5))
            off = _otel.wait_started("{DOMAIN}", "x") is None
            spans, reader = InMemorySpanExporter(), InMemoryMetricReader()
            provider = TracerProvider()
            provider.add_span_processor(SimpleSpanProcessor(spans))
            trace.set_tracer_provider(provider)
            metrics.set_meter_provider(MeterProvider(metric_readers=[reader]))
            emitted_before = (len(spans.get_finished_spans()), names(reader))
            wait_for_job_run("{DOMAIN}", "after", client=client, policy=PollPolicy(timeout=5))
            ids = [s.attributes["poller.job_run_id"] for s in spans.get_finished_spans()]
        print(json.dumps({{"off": off, "before": emitted_before, "after": [ids, names(reader)]}}))
        """
    )
    env = {**os.environ, "AWS_DEFAULT_REGION": "us-east-1"}
    done = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, check=True, env=env
    )
    seen = json.loads(done.stdout.splitlines()[-1])
    assert seen["off"] is True
    # Nothing of the first wait was recorded; the gauge reads the account's budget that
    # wait made (every wait books on one), as it stands whenever metrics are collected.
    assert seen["before"] == [0, ["poller.budget.rate"]]
    assert seen["after"] == [
        ["after"],
        ["poller.budget.rate", "poller.calls", "poller.detection_lag", "poller.waits"],
    ]


def test_import_poller_and_a_wait_load_no_opentelemetry_unless_the_process_did() -> None:
    """The extra installed: `import poller` loads neither botocore nor OpenTelemetry, and a
    wait in a process that set up no OpenTelemetry does not load it either."""
    code = textwrap.dedent(
        f"""
        import sys
        import poller
        light = not {{m.split(".")[0] for m in sys.modules}} & {{"botocore", "opentelemetry"}}
        from poller.testing import RunScript, Simulator
        with Simulator() as sim:
            sim.add_run("{DOMAIN}", "run-1", RunScript(statuses=["SUCCESS"]))
            poller.wait_for_job_run("{DOMAIN}", "run-1", client=sim.client())
        print(light, "botocore" in sys.modules, "opentelemetry" in sys.modules)
        """
    )
    env = {**os.environ, "AWS_DEFAULT_REGION": "us-east-1"}
    done = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, check=True, env=env
    )
    assert done.stdout.split() == ["True", "True", "False"]


def test_a_blocking_fan_out_called_from_async_code_still_nests_under_the_caller_s_span(
    telemetry: Telemetry, real_sim: Simulator
) -> None:
    """With a loop running, the fan-out runs in a helper thread: the context goes with it."""
    real_sim.add_run(DOMAIN, "run-1", RunScript(statuses=["IN_PROGRESS", "SUCCESS"]))

    async def notebook_cell() -> Any:
        with telemetry.tracer.start_as_current_span("cell") as cell:
            wait_for_job_runs(
                [(DOMAIN, "run-1")],
                client=keep(real_sim.client()),
                policy=FAST,
                seams=Seams(logger=QUIET),
            )
        return cell

    cell = asyncio.run(notebook_cell())
    (span,) = telemetry.waits()
    assert span.parent is not None
    assert span.parent.span_id == cell.get_span_context().span_id
