"""The Airflow 3 sensor and trigger, with real Airflow, against the simulator over real HTTP."""

from __future__ import annotations

# Sets AIRFLOW_HOME and the database before anything imports Airflow.
from _airflow_home import HOME as _HOME

# isort: split

import asyncio
import json
import os
import runpy
import shutil
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from dataclasses import replace
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest
from airflow.sdk.exceptions import (
    AirflowException,
    AirflowFailException,
    AirflowSensorTimeout,
    AirflowSkipException,
    TaskDeferred,
)
from airflow.sdk.module_loading import import_string
from airflow.triggers.base import TriggerEvent
from helpers import FAST, LINEAGE
from opentelemetry.sdk.trace import TracerProvider
from opentelemetry.sdk.trace.export import SimpleSpanProcessor
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter
from structlog.testing import capture_logs

import poller._runtime
from poller import PollPolicy, ServiceUnavailableError
from poller import _otel as otel
from poller.airflow import DataZoneJobRunSensor, DataZoneJobRunTrigger
from poller.airflow import _client as airflow_clients
from poller.airflow.trigger import policy_kwargs
from poller.testing import Fault, RunScript, Simulator

DOMAIN = "dzd_airflow"
EXAMPLE = Path(__file__).parent.parent / "examples" / "datazone_job_run_dag.py"
CONTEXT: Any = {}  # poke and execute_complete read nothing from the context
TERMINAL_FAILED = ["FAILED", "ABORTED", "TIMED_OUT", "CANCELED"]

_counter = iter(range(1_000_000))


@pytest.fixture(scope="module")
def shared_sim() -> Iterator[Simulator]:
    """One simulator for the module: the async core's shared client outlives a test."""
    # The async core and the sensor cache clients per configuration; start from none.
    poller._runtime.shared_client.cache_clear()
    airflow_clients.clear()
    with Simulator() as simulator:
        yield simulator
    poller._runtime.shared_client.cache_clear()
    airflow_clients.clear()


@pytest.fixture
def sim(
    shared_sim: Simulator, dummy_aws_environment: None, monkeypatch: pytest.MonkeyPatch
) -> Simulator:
    """The simulator, found through the environment as in production: no special hook."""
    monkeypatch.setenv("AWS_ENDPOINT_URL_DATAZONE", shared_sim.endpoint_url)
    return shared_sim


def new_run(sim: Simulator, *statuses: str | Fault, **script: Any) -> str:
    """A fresh run ID with this script on the shared simulator."""
    run_id = f"run-{next(_counter)}"
    sim.add_run(DOMAIN, run_id, RunScript(statuses=list(statuses), **script))
    return run_id


def sensor(run_id: str, **kwargs: Any) -> DataZoneJobRunSensor:
    """A sensor on the simulator, fast policy, boto3's default chain."""
    kwargs.setdefault("policy", FAST)
    kwargs.setdefault("poke_interval", 0.02)
    kwargs.setdefault("aws_conn_id", None)
    kwargs.setdefault("deferrable", False)
    return DataZoneJobRunSensor(
        task_id=f"wait_{run_id}".replace("-", "_"), domain_id=DOMAIN, job_run_id=run_id, **kwargs
    )


def run_trigger(trigger: DataZoneJobRunTrigger) -> list[TriggerEvent]:
    """Every event the trigger fires, as the triggerer would collect them."""

    async def collect() -> list[TriggerEvent]:
        return [event async for event in trigger.run()]

    return asyncio.run(collect())


def kwargs_deadline(deferral: TaskDeferred) -> float:
    """The deadline the trigger was given."""
    return float(deferral.trigger.serialize()[1]["deadline"])


def deferred(s: DataZoneJobRunSensor) -> TaskDeferred:
    """The TaskDeferred a deferrable sensor's execute raises."""
    with pytest.raises(TaskDeferred) as info:
        s.execute(CONTEXT)
    return info.value


def resume(s: DataZoneJobRunSensor, deferral: TaskDeferred) -> Any:
    """Run the deferral's trigger, then resume the sensor with its one event, as Airflow does."""
    [event] = run_trigger(deferral.trigger)
    next_kwargs = {**(deferral.kwargs or {}), "event": event.payload}
    return s.resume_execution(deferral.method_name, next_kwargs, CONTEXT)


# -- poke ---------------------------------------------------------------------


@pytest.mark.parametrize("status", ["SCHEDULED", "IN_PROGRESS"])
def test_poke_while_running(sim: Simulator, status: str) -> None:
    """A waiting status is 'not done', with no XCom, after one call."""
    run_id = new_run(sim, status)
    answer = sensor(run_id).poke(CONTEXT)
    assert (answer.is_done, answer.xcom_value, sim.calls(run_id)) == (False, None, 1)


def test_poke_success_returns_the_result_document(sim: Simulator) -> None:
    """SUCCESS is done, and the XCom value is poller's result document."""
    run_id = new_run(sim, "SUCCESS", lineage=LINEAGE)
    answer = sensor(run_id).poke(CONTEXT)
    assert answer.is_done
    doc = answer.xcom_value
    assert (doc["status"], doc["outcome"], doc["job_run_id"]) == ("SUCCESS", "succeeded", run_id)
    assert doc["lineage"]["num_queries_succeeded"] == 40
    json.dumps(doc)  # XCom-ready as it is


@pytest.mark.parametrize("allow_partial", [False, True])
def test_poke_partially_succeeded_follows_allow_partial(
    sim: Simulator, allow_partial: bool
) -> None:
    """PARTIALLY_SUCCEEDED is done with allow_partial, a hard failure without."""
    run_id = new_run(sim, "PARTIALLY_SUCCEEDED", error_message="3 tables skipped")
    s = sensor(run_id, allow_partial=allow_partial)
    if allow_partial:
        assert s.poke(CONTEXT).xcom_value["outcome"] == "partially_succeeded"
    else:
        with pytest.raises(AirflowFailException, match=r"3 tables skipped.*allow_partial is off"):
            s.poke(CONTEXT)


@pytest.mark.parametrize("status", TERMINAL_FAILED)
def test_poke_failed_run_fails_the_task_with_reason_and_lineage(
    sim: Simulator, status: str
) -> None:
    """A failed run raises AirflowFailException (no retries) naming its error and lineage."""
    run_id = new_run(sim, status, lineage=LINEAGE, error_message="query 7 failed")
    with pytest.raises(AirflowFailException) as info:
        sensor(run_id).poke(CONTEXT)
    message = str(info.value)
    assert f"ended {status}: query 7 failed" in message
    assert "42 SQL queries processed, 2 failed (4.76%); first error: bad SQL" in message


def test_throttling_inside_a_poke(sim: Simulator) -> None:
    """Throttles are absorbed inside one poke; the document counts them."""
    run_id = new_run(sim, *[Fault.throttle()] * 3, "SUCCESS")
    answer = sensor(run_id, poke_interval=5).poke(CONTEXT)
    assert answer.is_done
    assert (answer.xcom_value["throttled"], sim.calls(run_id)) == (3, 4)


def test_endless_throttling_is_not_done_yet(sim: Simulator) -> None:
    """A poke throttled for its whole interval says 'not done', not failed."""
    run_id = new_run(sim, *[Fault.throttle()] * 1000, "SUCCESS")
    started = time.monotonic()
    answer = sensor(run_id, poke_interval=0.2).poke(CONTEXT)
    assert not answer.is_done
    assert time.monotonic() - started < 2


def test_faults_that_do_not_clear_allow_airflow_retries(sim: Simulator) -> None:
    """Transient faults past max_errors raise a plain error, so the task's retries apply."""
    run_id = new_run(sim, *[Fault.internal()] * 5, "SUCCESS")
    policy = PollPolicy(interval=0.01, retry_initial=0.01, max_errors=2)
    s = sensor(run_id, policy=policy, poke_interval=5)  # the budget outlasts the faults
    with pytest.raises(ServiceUnavailableError) as info:
        s.poke(CONTEXT)
    assert not isinstance(info.value, AirflowException)


def test_access_denied_fails_without_retry(sim: Simulator) -> None:
    """AccessDenied is AirflowFailException after one call."""
    run_id = new_run(sim, Fault.error("AccessDeniedException", 403, "no read"), "SUCCESS")
    with pytest.raises(AirflowFailException, match="AccessDeniedError: no read"):
        sensor(run_id).poke(CONTEXT)
    assert sim.calls(run_id) == 1


def test_poke_mode_execute_runs_to_the_result(sim: Simulator) -> None:
    """Airflow's own poke loop ends with the result document as the return value."""
    run_id = new_run(sim, "SCHEDULED", "IN_PROGRESS", "SUCCESS")
    assert sensor(run_id).execute(CONTEXT)["status"] == "SUCCESS"
    assert sim.calls(run_id) == 3


def status_events(events: list[dict[str, Any]]) -> list[tuple[str, Any, Any]]:
    """The start and change events of a capture, as (event, from, to)."""
    wanted = ("wait_started", "status_changed")
    return [(e["event"], e.get("from"), e.get("to")) for e in events if e["event"] in wanted]


def test_poke_mode_logs_the_start_once_and_only_real_changes(sim: Simulator) -> None:
    """Across pokes of one sensor, wait_started comes once and status_changed only on a change."""
    run_id = new_run(sim, "IN_PROGRESS", "IN_PROGRESS", "IN_PROGRESS", "SUCCESS")
    s = sensor(run_id)
    with capture_logs() as events:
        answers = [s.poke(CONTEXT).is_done for _ in range(4)]
    assert answers == [False, False, False, True]
    assert status_events(events) == [
        ("wait_started", None, None),
        ("status_changed", None, "IN_PROGRESS"),
        ("status_changed", "IN_PROGRESS", "SUCCESS"),
    ]


def test_reschedule_mode_does_not_repeat_the_start_in_each_new_sensor(sim: Simulator) -> None:
    """Each reschedule builds a new sensor: only the first poke of the try logs the start."""
    run_id = new_run(sim, "IN_PROGRESS", "IN_PROGRESS", "SUCCESS")
    with capture_logs() as events:
        for count in range(3):  # Airflow's task_reschedule_count: pokes before this one
            s = sensor(run_id, mode="reschedule", poke_interval=60)
            s.poke({"task_reschedule_count": count})
    assert status_events(events) == [
        ("wait_started", None, None),
        ("status_changed", None, "IN_PROGRESS"),
    ]
    assert [e["event"] for e in events].count("finished") == 1


def test_sensors_started_together_spread_their_first_pokes_over_the_interval(
    sim: Simulator,
) -> None:
    """Ten poke-mode sensors started at once make their first calls apart, not in one burst."""
    # The process's shared client is built before: only the pokes' own timing counts.
    sensor(new_run(sim, "IN_PROGRESS"), poke_interval=0.01).poke(CONTEXT)
    runs = [new_run(sim, "IN_PROGRESS") for _ in range(10)]
    sensors = [sensor(run_id, poke_interval=8.0) for run_id in runs]
    start = threading.Barrier(len(sensors))

    def first_poke(s: DataZoneJobRunSensor) -> None:
        start.wait()
        s.poke(CONTEXT)

    threads = [threading.Thread(target=first_poke, args=(s,)) for s in sensors]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    times = [r.t for r in sim.requests if r.run_id in runs]
    assert len(times) == 10
    # Uniform over 8 s: ten calls within 2 s of each other is a 1-in-25,000 draw.
    assert max(times) - min(times) >= 2.0


def test_only_the_first_poke_of_a_try_waits(sim: Simulator) -> None:
    """The spread costs the first poke of a try at most min(poke_interval, 10 s), and no other."""
    run_id = new_run(sim, "IN_PROGRESS")
    delays = [sensor(run_id, poke_interval=30).first_poke_delay(CONTEXT) for _ in range(200)]
    assert 0 <= min(delays) < 1
    assert 9 < max(delays) <= 10
    short = [sensor(run_id, poke_interval=0.5).first_poke_delay(CONTEXT) for _ in range(200)]
    assert max(short) <= 0.5
    s = sensor(run_id, poke_interval=0.01)
    s.poke(CONTEXT)
    assert s.first_poke_delay(CONTEXT) == 0  # poke mode's later pokes, in the same process
    rescheduled = sensor(run_id, poke_interval=30, mode="reschedule")
    assert rescheduled.first_poke_delay({"task_reschedule_count": 1}) == 0


# -- deferrable ---------------------------------------------------------------


def test_execute_defers_with_a_trigger_that_round_trips(sim: Simulator) -> None:
    """Execute raises TaskDeferred without a call; the trigger rebuilds from primitives."""
    run_id = new_run(sim, "IN_PROGRESS")
    s = sensor(run_id, deferrable=True, timeout=600, poke_interval=5, region_name="us-east-1")
    before = time.time()
    deferral = deferred(s)
    # Airflow's backstop comes a grace after the trigger's own deadline, never racing it.
    assert (deferral.method_name, deferral.timeout) == ("execute_complete", timedelta(seconds=660))
    assert deferral.kwargs == {"deadline": kwargs_deadline(deferral)}
    classpath, kwargs = deferral.trigger.serialize()
    assert classpath == "poller.airflow.trigger.DataZoneJobRunTrigger"
    assert json.loads(json.dumps(kwargs)) == kwargs  # primitives only
    rebuilt = import_string(classpath)(**kwargs)
    assert rebuilt.serialize() == (classpath, kwargs)
    assert before + 600 <= kwargs["deadline"] <= time.time() + 600
    assert kwargs["policy"]["max_interval"] == 0.02  # the policy's own cap, below poke_interval
    slow = sensor(new_run(sim, "IN_PROGRESS"), deferrable=True, poke_interval=0.015)
    assert deferred(slow).trigger.policy["max_interval"] == 0.015  # poke_interval caps it
    assert (kwargs["job_run_id"], kwargs["region_name"]) == (run_id, "us-east-1")
    assert sim.calls(run_id) == 0


def test_a_deferred_wait_logs_its_start_once(sim: Simulator) -> None:
    """Defer, the trigger waits: one wait, so one wait_started and one story of changes."""
    run_id = new_run(sim, "IN_PROGRESS", "IN_PROGRESS", "SUCCESS")
    s = sensor(run_id, deferrable=True, timeout=600)
    with capture_logs() as events:
        resume(s, deferred(s))
    assert status_events(events) == [
        ("wait_started", None, None),
        ("status_changed", None, "IN_PROGRESS"),
        ("status_changed", "IN_PROGRESS", "SUCCESS"),
    ]
    assert [e["event"] for e in events].count("finished") == 1


def test_a_deferrable_sensor_leaves_even_a_finished_run_to_the_trigger(sim: Simulator) -> None:
    """A finished run is read once, by the trigger: the worker spends no call outside its budget."""
    run_id = new_run(sim, "SUCCESS")
    s = sensor(run_id, deferrable=True)
    deferral = deferred(s)
    assert sim.calls(run_id) == 0
    assert resume(s, deferral)["status"] == "SUCCESS"
    assert sim.calls(run_id) == 1


def test_an_unknown_run_fails_the_task_alike_in_poke_and_deferrable_mode(sim: Simulator) -> None:
    """A run ID the domain does not have fails the task once not_found_grace has passed, in both."""
    grace = replace(FAST, not_found_grace=0.3)
    messages = []
    poke = sensor("run-unknown-1", policy=grace)
    defer = sensor("run-unknown-1", policy=grace, deferrable=True)
    for s in (poke, defer):
        with pytest.raises(AirflowFailException) as info:
            resume(s, deferred(s)) if s.deferrable else s.execute(CONTEXT)
        messages.append(str(info.value))
    assert messages[0] == messages[1]
    assert "run-unknown-1" in messages[0]


class RescheduledTry:
    """What a rescheduled poke uses of Airflow's task instance: its try's first poke, XCom."""

    def __init__(self, first: datetime) -> None:
        self.first = first
        self.xcom: dict[str, Any] = {}

    def get_first_reschedule_date(self, context: Any) -> datetime:
        return self.first

    def xcom_push(self, key: str, value: Any) -> None:
        self.xcom[key] = value


def test_a_rescheduled_poke_counts_the_grace_from_the_tries_first_poke(sim: Simulator) -> None:
    """A new sensor process, its try's first poke past not_found_grace ago, fails an unknown run."""
    grace = replace(FAST, not_found_grace=5)
    s = sensor("run-unknown-2", policy=grace, mode="reschedule", poke_interval=60)
    first = datetime.now(UTC) - timedelta(seconds=6)
    ti = RescheduledTry(first)
    with pytest.raises(AirflowFailException, match="run-unknown-2"):
        s.poke({"task_reschedule_count": 1, "ti": ti})  # type: ignore[arg-type]
    assert ti.xcom["return_value"]["problem"]["type"] == "JobRunNotFoundError"
    assert sim.calls("run-unknown-2") == 1


def test_default_deferrable_comes_from_the_config(monkeypatch: pytest.MonkeyPatch) -> None:
    """deferrable defaults to [operators] default_deferrable; an explicit value wins."""
    monkeypatch.setenv("AIRFLOW__OPERATORS__DEFAULT_DEFERRABLE", "True")
    assert DataZoneJobRunSensor(task_id="a", domain_id=DOMAIN, job_run_id="r").deferrable
    assert not DataZoneJobRunSensor(
        task_id="b", domain_id=DOMAIN, job_run_id="r", deferrable=False
    ).deferrable
    monkeypatch.setenv("AIRFLOW__OPERATORS__DEFAULT_DEFERRABLE", "False")
    assert not DataZoneJobRunSensor(task_id="c", domain_id=DOMAIN, job_run_id="r").deferrable


def test_ids_and_connection_settings_are_templated_as_in_the_amazon_provider() -> None:
    """The template fields are the provider's AWS ones plus domain_id and job_run_id."""
    from airflow.providers.amazon.aws.utils.mixins import aws_template_fields

    fields = tuple(DataZoneJobRunSensor.template_fields)
    assert fields == aws_template_fields("domain_id", "job_run_id")
    assert {"aws_conn_id", "region_name"} <= set(fields)


# -- trigger ------------------------------------------------------------------


def trigger(run_id: str, **kwargs: Any) -> DataZoneJobRunTrigger:
    """A trigger on the simulator with a fast policy and a 30 s deadline."""
    kwargs.setdefault("deadline", time.time() + 30)
    kwargs.setdefault("policy", {**json.loads(json.dumps(_policy_fields())), "jitter": 0})
    return DataZoneJobRunTrigger(DOMAIN, run_id, **kwargs)


def _policy_fields() -> dict[str, Any]:
    from poller.airflow.trigger import policy_kwargs

    return policy_kwargs(FAST)


def test_trigger_success_event(sim: Simulator) -> None:
    """A run that succeeds after throttles gives one success event with the full document."""
    run_id = new_run(sim, "SCHEDULED", Fault.throttle(), "IN_PROGRESS", "SUCCESS", lineage=LINEAGE)
    [event] = run_trigger(trigger(run_id))
    payload = event.payload
    assert (payload["status"], payload["job_run_status"]) == ("success", "SUCCESS")
    assert payload["message"] == f"job run {run_id} in domain {DOMAIN} ended SUCCESS"
    assert payload["result"]["throttled"] == 1
    assert payload["result"]["polls"] == 4


def test_trigger_failure_event_keeps_the_reason(sim: Simulator) -> None:
    """A failed run gives one failure event with the run's error message and lineage."""
    run_id = new_run(sim, "IN_PROGRESS", "FAILED", lineage=LINEAGE, error_message="boom")
    [event] = run_trigger(trigger(run_id))
    assert (event.payload["status"], event.payload["job_run_status"]) == ("failure", "FAILED")
    assert "ended FAILED: boom; lineage: 42 SQL queries processed" in event.payload["message"]


@pytest.mark.parametrize(
    ("statuses", "deadline", "problem"),
    [
        (
            [Fault.error("AccessDeniedException", 403, "no read"), "SUCCESS"],
            30,
            "AccessDeniedError",
        ),
        (["IN_PROGRESS"], 0.3, "WaitTimeoutError"),
        (["IN_PROGRESS", *[Fault.internal()] * 20], 30, "ServiceUnavailableError"),
        ([*[Fault.throttle()] * 10_000, "SUCCESS"], 0.3, "ServiceUnavailableError"),
    ],
    ids=["denied", "deadline", "faults", "throttled-unread"],
)
def test_trigger_error_event_keeps_the_last_status(
    sim: Simulator, statuses: list[Any], deadline: float, problem: str
) -> None:
    """A wait that cannot tell how the run ended gives one error event, never an exception."""
    run_id = new_run(sim, *statuses)
    [event] = run_trigger(trigger(run_id, deadline=time.time() + deadline))
    payload = event.payload
    assert payload["status"] == "error"
    assert payload["result"]["problem"]["type"] == problem
    assert payload["message"].startswith(problem)
    if statuses[0] == "IN_PROGRESS":
        assert payload["job_run_status"] == "IN_PROGRESS"


def test_trigger_bad_ids_give_an_error_event(sim: Simulator) -> None:
    """Even malformed IDs end in an error event rather than a triggerer traceback."""
    [event] = run_trigger(DataZoneJobRunTrigger(DOMAIN, "bad id!"))
    assert event.payload["status"] == "error"
    assert event.payload["result"]["problem"]["type"] == "InvalidRequestError"


def test_trigger_past_deadline_still_looks_once(sim: Simulator) -> None:
    """A trigger started after its deadline (triggerer lag) checks once before giving up."""
    run_id = new_run(sim, "SUCCESS")
    [event] = run_trigger(trigger(run_id, deadline=time.time() - 5))
    assert event.payload["status"] == "success"
    assert sim.calls(run_id) == 1


# -- execute_complete: the same result in every mode ----------------------------


def test_execute_complete_returns_the_poke_mode_document(sim: Simulator) -> None:
    """Deferred and poke mode return the same result document for the same run."""
    script = ("IN_PROGRESS", "SUCCESS")
    poked = sensor(new_run(sim, *script, lineage=LINEAGE)).execute(CONTEXT)
    run_id = new_run(sim, *script, lineage=LINEAGE)
    s = sensor(run_id, deferrable=True)
    resumed = resume(s, deferred(s))
    assert resumed.keys() == poked.keys()
    assert resumed["lineage"].keys() == poked["lineage"].keys()

    def stable(doc: dict[str, Any]) -> dict[str, Any]:
        # Times and IDs differ between two runs; poke mode counts its last
        # poke's calls, deferred mode the trigger's whole wait.
        timing = {"job_run_id", "created_at", "start_time", "end_time", "duration_s", "waited_s"}
        lineage = {k: v for k, v in doc["lineage"].items() if not k.startswith("query_")}
        return {k: v for k, v in doc.items() if k not in timing | {"polls"}} | {"lineage": lineage}

    assert stable(resumed) == stable(poked)


RETRY_FAST = PollPolicy(
    interval=0.01, max_interval=0.02, retry_initial=0.001, retry_max=0.002, max_errors=3
)
# Each situation: the script after a first IN_PROGRESS answer (so the wait has
# seen the run before it), the sensor's timeout, and what ends the task.
SITUATIONS: dict[str, tuple[list[Any], float, type[BaseException]]] = {
    "failed": (["FAILED"], 10, AirflowFailException),
    "partial": (["PARTIALLY_SUCCEEDED"], 10, AirflowFailException),
    "denied": ([Fault.error("AccessDeniedException", 403), "SUCCESS"], 10, AirflowFailException),
    "faults": ([*[Fault.internal()] * 50, "SUCCESS"], 10, ServiceUnavailableError),
    "timeout": (["IN_PROGRESS"], 0.3, AirflowSensorTimeout),
    "throttled": ([*[Fault.throttle()] * 10_000, "SUCCESS"], 0.3, AirflowSensorTimeout),
}


def ending(sim: Simulator, situation: str, *, deferrable: bool, soft_fail: bool) -> type:
    """The exception the sensor ends with in this situation and mode, run as Airflow runs it."""
    script, timeout, _ = SITUATIONS[situation]
    s = sensor(
        new_run(sim, "IN_PROGRESS", *script),
        deferrable=deferrable,
        soft_fail=soft_fail,
        timeout=timeout,
        # Long enough for max_errors faults inside one poke even on a slow machine.
        poke_interval=1 if situation == "faults" else 0.05,
        policy=RETRY_FAST,
    )
    try:
        if deferrable:
            resume(s, deferred(s))
        else:
            s.execute(CONTEXT)
    except Exception as error:
        return type(error)
    raise AssertionError("the sensor did not end badly")


@pytest.mark.parametrize("situation", SITUATIONS)
def test_execute_complete_raises_what_poke_mode_raises(sim: Simulator, situation: str) -> None:
    """Each error event becomes the exception poke mode raises in the same situation."""
    _, _, hard = SITUATIONS[situation]
    assert ending(sim, situation, deferrable=True, soft_fail=False) is hard
    assert ending(sim, situation, deferrable=False, soft_fail=False) is hard


@pytest.mark.parametrize(
    "event",
    [
        None,
        {"status": "success"},
        {"status": "weird", "result": {}},
        {"status": "success", "result": {"outcome": "succeeded"}},
    ],
)
def test_execute_complete_rejects_a_malformed_event(event: Any) -> None:
    """An event that is not the trigger's fails clearly instead of pushing garbage to XCom."""
    s = DataZoneJobRunSensor(task_id="v", domain_id=DOMAIN, job_run_id="r", aws_conn_id=None)
    with pytest.raises(AirflowException, match="invalid event"):
        s.execute_complete(CONTEXT, event)


def test_execute_complete_rejects_another_runs_event(sim: Simulator) -> None:
    """An event about another run is refused."""
    [event] = run_trigger(trigger(new_run(sim, "SUCCESS")))
    s = DataZoneJobRunSensor(task_id="o", domain_id=DOMAIN, job_run_id="other", aws_conn_id=None)
    with pytest.raises(AirflowException, match="it is about"):
        s.execute_complete(CONTEXT, event.payload)


# -- soft_fail: the same skips in every mode ----------------------------------


@pytest.mark.parametrize("situation", SITUATIONS)
@pytest.mark.parametrize("soft_fail", [False, True])
def test_soft_fail_parity(sim: Simulator, situation: str, soft_fail: bool) -> None:
    """Poke and deferrable mode end the same way, skipping in the same situations."""
    poke = ending(sim, situation, deferrable=False, soft_fail=soft_fail)
    defer = ending(sim, situation, deferrable=True, soft_fail=soft_fail)
    _, _, hard = SITUATIONS[situation]
    skips = soft_fail and hard is not ServiceUnavailableError
    assert poke is defer is (AirflowSkipException if skips else hard)


@pytest.mark.parametrize("soft_fail", [False, True])
def test_airflow_deferral_timeout_backstop_matches(soft_fail: bool) -> None:
    """Airflow's own deferral timeout (triggerer down) ends like our deadline does."""
    s = DataZoneJobRunSensor(
        task_id="t", domain_id=DOMAIN, job_run_id="r", aws_conn_id=None, soft_fail=soft_fail
    )
    expected = AirflowSkipException if soft_fail else AirflowSensorTimeout
    with pytest.raises(expected):
        s.resume_execution("__fail__", {"error": "Trigger timeout"}, CONTEXT)


def test_the_triggerer_imports_the_trigger_without_loading_botocore() -> None:
    """The triggerer imports the trigger class on its event loop: botocore loads later, off it."""
    code = (
        "import sys, airflow.triggers.base; from poller.airflow import DataZoneJobRunTrigger; "
        "heavy = ('botocore', 'boto3', 'poller.airflow.sensor'); "
        "print(sorted(m for m in heavy if m in sys.modules))"
    )
    env = {**os.environ, "AIRFLOW_HOME": str(_HOME)}
    out = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, check=True, env=env
    )
    assert out.stdout.strip().splitlines()[-1] == "[]"


def test_poller_itself_does_not_import_airflow() -> None:
    """The extra stays optional: importing poller (and its sensor base) loads no Airflow."""
    code = "import sys, poller, poller.poke, poller.aio; print('airflow' in sys.modules)"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "False"


# -- the AWS connection -------------------------------------------------------


# -- end to end: dag.test() ----------------------------------------------------

E2E_DAGS = """
from datetime import UTC, datetime

from airflow.sdk import DAG, task

from poller import PollPolicy
from poller.airflow import DataZoneJobRunSensor

FAST = PollPolicy(interval=0.02, max_interval=0.05, retry_initial=0.01, retry_max=0.02)
for mode in ("poke", "deferrable"):
    with DAG(
        f"poller_e2e_{mode}",
        schedule=None,
        start_date=datetime(2026, 1, 1, tzinfo=UTC),
        params={"domain_id": "dzd_none", "job_run_id": "none", "aws_conn_id": "aws_default"},
    ) as dag:
        wait = DataZoneJobRunSensor(
            task_id="wait",
            domain_id="{{ params.domain_id }}",
            job_run_id="{{ params.job_run_id }}",
            aws_conn_id="{{ params.aws_conn_id }}",
            deferrable=mode == "deferrable",
            poke_interval=0.05,
            timeout=60,
            policy=FAST,
        )

        @task(trigger_rule="all_done")
        def why(result):
            # Runs whether the sensor succeeded or failed, and reads its document.
            return f"{result['outcome']}: {result['error_message']}"

        why(wait.output)
    globals()[dag.dag_id] = dag
"""


@pytest.fixture(scope="module")
def dags() -> dict[str, Any]:
    """The example DAG and the end-to-end DAGs, in a fresh Airflow database."""
    from airflow.utils import db

    folder = _HOME / "dags"
    folder.mkdir(exist_ok=True)
    shutil.copy(EXAMPLE, folder / EXAMPLE.name)
    (folder / "poller_e2e.py").write_text(E2E_DAGS)
    db.resetdb()
    found = runpy.run_path(str(folder / "poller_e2e.py"))
    example = runpy.run_path(str(folder / EXAMPLE.name))
    return {
        "poke": found["poller_e2e_poke"],
        "deferrable": found["poller_e2e_deferrable"],
        "example": example["datazone_job_run"](),
    }


def xcom(dag_run: Any, task_id: str) -> Any:
    """The return value a task of a finished test run pushed."""
    return dag_run.get_task_instance(task_id).xcom_pull(task_ids=task_id)


@pytest.mark.parametrize("mode", ["poke", "deferrable"])
def test_dag_test_end_to_end(sim: Simulator, dags: dict[str, Any], mode: str) -> None:
    """dag.test() runs the sensor through throttles to SUCCESS; XCom is the result document."""
    run_id = new_run(
        sim, "SCHEDULED", Fault.throttle(), "IN_PROGRESS", "IN_PROGRESS", "SUCCESS", lineage=LINEAGE
    )
    dag_run = dags[mode].test(run_conf={"domain_id": DOMAIN, "job_run_id": run_id})
    assert dag_run.state == "success"
    doc = xcom(dag_run, "wait")
    assert (doc["job_run_id"], doc["status"], doc["outcome"]) == (run_id, "SUCCESS", "succeeded")
    assert doc["lineage"]["total_queries_processed"] == 42
    assert sim.calls(run_id) == 5


@pytest.mark.parametrize("mode", ["poke", "deferrable"])
def test_a_failed_run_fails_the_task_and_leaves_its_document_in_xcom(
    sim: Simulator, dags: dict[str, Any], mode: str
) -> None:
    """A failed run fails the sensor task; its result document is still its XCom, for downstream."""
    run_id = new_run(sim, "IN_PROGRESS", "FAILED", error_message="boom", lineage=LINEAGE)
    dag_run = dags[mode].test(run_conf={"domain_id": DOMAIN, "job_run_id": run_id})
    assert dag_run.get_task_instance("wait").state == "failed"
    doc = xcom(dag_run, "wait")
    assert (doc["job_run_id"], doc["status"], doc["outcome"]) == (run_id, "FAILED", "failed")
    assert doc["lineage"]["num_queries_failed"] == 2
    assert xcom(dag_run, "why") == "failed: boom"


def test_a_connection_problem_leaves_its_document_in_xcom(
    sim: Simulator, dags: dict[str, Any]
) -> None:
    """A connection that does not exist fails the task once, with the document saying why."""
    run_id = new_run(sim, "SUCCESS")
    conf = {"domain_id": DOMAIN, "job_run_id": run_id, "aws_conn_id": "dz_nowhere"}
    dag_run = dags["deferrable"].test(run_conf=conf)
    assert dag_run.get_task_instance("wait").state == "failed"
    problem = xcom(dag_run, "wait")["problem"]
    assert problem["type"] == "InvalidRequestError"
    assert "'dz_nowhere' does not exist" in problem["message"]
    assert sim.calls(run_id) == 0


def test_dag_test_reads_a_templated_connection_through_the_task_sdk(
    sim: Simulator, dags: dict[str, Any], monkeypatch: pytest.MonkeyPatch
) -> None:
    """A templated aws_conn_id is looked up by the task SDK; its keys are what DataZone sees."""
    monkeypatch.setenv(
        "AIRFLOW_CONN_DZ_E2E",
        json.dumps(
            {
                "conn_type": "aws",
                "login": "AKIDE2ECONNECTION",
                "password": "e2e-secret",
                "extra": {"region_name": "eu-central-1", "endpoint_url": sim.endpoint_url},
            }
        ),
    )
    monkeypatch.delenv("AWS_ENDPOINT_URL_DATAZONE")  # only the connection knows the endpoint
    for mode in ("poke", "deferrable"):
        run_id = new_run(sim, "IN_PROGRESS", "SUCCESS")
        conf = {"domain_id": DOMAIN, "job_run_id": run_id, "aws_conn_id": "dz_e2e"}
        assert dags[mode].test(run_conf=conf).state == "success"
        assert {r.access_key_id for r in sim.requests if r.run_id == run_id} == {
            "AKIDE2ECONNECTION"
        }


def test_the_example_dag_runs(sim: Simulator, dags: dict[str, Any]) -> None:
    """The example DAG, as shipped, defers, resumes and reports the run's lineage."""
    run_id = new_run(sim, "IN_PROGRESS", "SUCCESS", lineage=LINEAGE)
    dag_run = dags["example"].test(run_conf={"domain_id": DOMAIN, "job_run_id": run_id})
    assert dag_run.state == "success"
    assert xcom(dag_run, "report").endswith("2 of 42 SQL queries failed")


def test_the_sensor_carries_history_through_its_policy() -> None:
    """The trigger's serialized policy holds `history`, so a deferred wait keeps the choice."""
    assert policy_kwargs(PollPolicy(history=False))["history"] is False
    assert PollPolicy(**policy_kwargs(PollPolicy(history=False))).history is False


def test_the_trigger_s_wait_is_a_span_under_the_trigger_s_span(sim: Simulator) -> None:
    """As the triggerer runs a trigger inside its span (``[traces] otel_on``), the wait nests."""
    spans = InMemorySpanExporter()
    provider = TracerProvider()
    provider.add_span_processor(SimpleSpanProcessor(spans))
    otel.reset(tracer_provider=provider)
    try:
        run_id = new_run(sim, "IN_PROGRESS", Fault.throttle(), "SUCCESS")
        with provider.get_tracer("airflow").start_as_current_span("trigger.wait") as parent:
            [event] = run_trigger(trigger(run_id))
    finally:
        otel.reset()
    assert event.payload["status"] == "success"
    (wait,) = [s for s in spans.get_finished_spans() if s.name == "poller wait"]
    assert wait.parent is not None
    assert wait.parent.span_id == parent.get_span_context().span_id
    assert wait.attributes is not None
    assert wait.attributes["poller.job_run_id"] == run_id
    assert wait.attributes["poller.throttled"] == 1


def test_the_offline_recipe_of_the_airflow_page_runs_as_written(tmp_path: Path) -> None:
    """docs/airflow.md's shell recipe, in a fresh shell: a new AIRFLOW_HOME, migrated, a DAG run."""
    from _docs import ROOT, blocks

    page = ROOT / "docs" / "airflow.md"
    text = page.read_text(encoding="utf-8")
    start = text.splitlines().index("## Testing DAGs offline") + 1
    (recipe,) = [b for b in blocks(page) if b.language == "sh" and b.line > start][:1]
    (tmp_path / "dags").mkdir()
    shutil.copy(ROOT / "examples" / "datazone_job_run_dag.py", tmp_path / "dags")
    run = {"domain_id": "dzd_abc123", "run_id": "run-1", "statuses": ["IN_PROGRESS", "SUCCESS"]}
    (tmp_path / "runs.json").write_text(json.dumps({"runs": [run]}))
    env = {k: v for k, v in os.environ.items() if not k.startswith(("AIRFLOW", "AWS_"))}
    env["PATH"] = f"{Path(sys.executable).parent}{os.pathsep}{env.get('PATH', '')}"
    done = subprocess.run(
        ["bash", "-e", "-c", recipe.code],
        cwd=tmp_path, env=env, capture_output=True, text=True, timeout=300, check=False,
    )  # fmt: skip
    assert done.returncode == 0, done.stderr[-3000:]
    assert "DagRun Finished: dag_id=datazone_job_run" in done.stdout + done.stderr
    assert "state=success" in done.stdout + done.stderr


def test_the_airflow_setting_poller_max_rps_sets_the_triggerer_s_budget(
    sim: Simulator, monkeypatch: pytest.MonkeyPatch
) -> None:
    """`AIRFLOW__POLLER__MAX_RPS`, read once per triggerer, is its account budgets' ceiling."""
    from poller._limiter import budgets

    monkeypatch.setenv("AIRFLOW__POLLER__MAX_RPS", "3")
    [event] = run_trigger(trigger(new_run(sim, "IN_PROGRESS", "SUCCESS")))
    assert event.payload["status"] == "success"
    assert budgets().max_rps == 3.0


def test_the_airflow_setting_poller_others_throttled_is_the_share_the_budgets_excuse(
    sim: Simulator, monkeypatch: pytest.MonkeyPatch
) -> None:
    """`AIRFLOW__POLLER__OTHERS_THROTTLED` is the share of throttles the triggerer's budgets
    put down to other clients, as `[wait] others_throttled` is the CLI's."""
    from poller._limiter import budgets

    monkeypatch.setenv("AIRFLOW__POLLER__OTHERS_THROTTLED", "0.2")
    [event] = run_trigger(trigger(new_run(sim, "IN_PROGRESS", "SUCCESS")))
    assert event.payload["status"] == "success"
    assert budgets().others_throttled == 0.2
    assert budgets().max_rps == 10.0  # max_rps unset: poller's default


@pytest.mark.parametrize(
    ("variable", "value", "rule"),
    [
        ("AIRFLOW__POLLER__MAX_RPS", "fast", "a number of calls a second"),
        ("AIRFLOW__POLLER__MAX_RPS", "0", "a number of calls a second"),
        ("AIRFLOW__POLLER__OTHERS_THROTTLED", "0.7", "a share between 0 and 0.5"),
    ],
)
def test_a_budget_setting_out_of_range_fails_the_trigger_with_an_error_naming_it(
    sim: Simulator, monkeypatch: pytest.MonkeyPatch, variable: str, value: str, rule: str
) -> None:
    """A bad budget setting is one `error` event that names the setting and its rule."""
    monkeypatch.setenv(variable, value)
    [event] = run_trigger(trigger(new_run(sim, "SUCCESS")))
    assert event.payload["status"] == "error"
    assert f"({variable}) must be {rule}, not '{value}'" in event.payload["message"]
