"""The sensor wholly in the triggerer: start_from_trigger and end_from_trigger, with real Airflow.

The start arguments go through what Airflow does with them: the DAG is
serialized and rebuilt as the scheduler reads it, the trigger row's kwargs
are stored and decoded as the triggerer decodes them, the triggerer's own
`create_runtime_ti` builds the context and the trigger's templated fields
are rendered by Airflow's `render_template_fields`; the trigger then polls
the simulator over real HTTP.
"""

from __future__ import annotations

# Sets AIRFLOW_HOME and the database before anything imports Airflow.
from _airflow_home import HOME as _HOME  # noqa: F401

# isort: split

import asyncio
import json
import re
import time
import uuid
import warnings
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest
from airflow.api_fastapi.execution_api.datamodels.taskinstance import DagRun
from airflow.executors.workloads.task import TaskInstanceDTO
from airflow.jobs.triggerer_job_runner import TriggerRunner
from airflow.models.trigger import Trigger
from airflow.sdk import DAG
from airflow.sdk.exceptions import (
    AirflowFailException,
    AirflowSensorTimeout,
    AirflowSkipException,
    TaskDeferred,
)
from airflow.sdk.module_loading import import_string
from airflow.serialization.decoders import smart_decode_trigger_kwargs
from airflow.serialization.serialized_objects import DagSerialization
from airflow.triggers.base import (
    BaseTrigger,
    TaskFailedEvent,
    TaskSkippedEvent,
    TaskSuccessEvent,
    TriggerEvent,
)
from airflow.utils.state import TaskInstanceState
from helpers import FAST, LINEAGE
from structlog.testing import capture_logs

import poller._runtime
from poller import PollPolicy, ServiceUnavailableError
from poller.airflow import DataZoneJobRunSensor, DataZoneJobRunTrigger
from poller.airflow import _client as airflow_clients
from poller.airflow import sensor as sensor_module
from poller.testing import Fault, RunScript, Simulator

DOMAIN = "dzd_triggerer"
CONTEXT: Any = {}
RETRY_FAST = PollPolicy(
    interval=0.01, max_interval=0.02, retry_initial=0.001, retry_max=0.002, max_errors=3
)

_counter = iter(range(1_000_000))


@pytest.fixture(scope="module")
def shared_sim() -> Iterator[Simulator]:
    """One simulator for the module: the async core's shared client outlives a test."""
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


def sensor(job_run_id: str, **kwargs: Any) -> DataZoneJobRunSensor:
    """A sensor on the simulator, fast policy, boto3's default chain."""
    kwargs.setdefault("policy", FAST)
    kwargs.setdefault("poke_interval", 0.05)
    kwargs.setdefault("aws_conn_id", None)
    kwargs.setdefault("task_id", f"wait_{next(_counter)}")
    return DataZoneJobRunSensor(domain_id=DOMAIN, job_run_id=job_run_id, **kwargs)


def run_trigger(trigger: BaseTrigger) -> list[TriggerEvent]:
    """Every event the trigger fires, as the triggerer would collect them."""

    async def collect() -> list[TriggerEvent]:
        return [event async for event in trigger.run()]

    return asyncio.run(collect())


def serialized(s: DataZoneJobRunSensor, **params: Any) -> dict[str, Any]:
    """The sensor in a DAG, serialized as the DAG processor stores it."""
    with DAG(
        f"in_triggerer_{next(_counter)}",
        schedule=None,
        start_date=datetime(2026, 1, 1, tzinfo=UTC),
        params=params,
    ) as dag:
        dag.add_task(s)
    return DagSerialization.to_dict(dag)


def scheduled_trigger(data: dict[str, Any], task_id: str, conf: dict[str, Any]) -> BaseTrigger:
    """The trigger as the triggerer builds it from the serialized DAG's start arguments.

    The scheduler's Trigger row stores the kwargs; the triggerer decodes them,
    builds the trigger, gives it the runtime task instance and renders it.
    """
    task = DagSerialization.from_dict(data).get_task(task_id)
    args = task.start_trigger_args
    assert task.start_from_trigger
    assert args is not None
    row = Trigger(classpath=args.trigger_cls, kwargs=args.trigger_kwargs)
    kwargs = {
        k: smart_decode_trigger_kwargs(v)
        for k, v in Trigger._decrypt_kwargs(row.encrypted_kwargs).items()
    }
    trigger = import_string(row.classpath)(**kwargs)
    ti = TaskInstanceDTO(
        id=uuid.uuid4(),
        task_id=task_id,
        dag_id=data["dag"]["dag_id"],
        run_id="manual_1",
        try_number=1,
        dag_version_id=uuid.uuid4(),
        pool_slots=1,
        priority_weight=1,
    )
    now = datetime.now(UTC)
    dag_run = DagRun(
        dag_id=ti.dag_id,
        run_id=ti.run_id,
        logical_date=now,
        data_interval_start=now,
        data_interval_end=now,
        run_after=now,
        start_date=now,
        end_date=None,
        run_type="manual",
        state="running",
        conf=conf,
        consumed_asset_events=[],
        partition_key=None,
    )
    runtime_ti = TriggerRunner.create_runtime_ti(ti, data, dag_run.model_dump(exclude_unset=True))
    context = runtime_ti.get_template_context()
    trigger.task_instance = runtime_ti
    trigger.render_template_fields(context=context)
    assert isinstance(trigger, BaseTrigger)
    return trigger


# -- start_from_trigger ---------------------------------------------------------


def test_start_args_survive_the_serialized_dag_and_match_a_worker_s_deferral(
    sim: Simulator,
) -> None:
    """The scheduler's start arguments name poller's trigger with a deferral's kwargs."""
    s = sensor("{{ params.run }}", start_from_trigger=True, timeout=600, region_name="us-east-1")
    assert s.deferrable  # start_from_trigger implies it
    task = DagSerialization.from_dict(serialized(s, run="r")).get_task(s.task_id)
    args = task.start_trigger_args
    assert task.start_from_trigger is True
    assert (args.trigger_cls, args.next_method) == (
        "poller.airflow.trigger.DataZoneJobRunTrigger",
        "execute_complete",
    )
    # Airflow's backstop: the timeout plus a grace, as for a worker's deferral.
    assert args.timeout == timedelta(seconds=660)
    stored = smart_decode_trigger_kwargs(args.trigger_kwargs)
    with pytest.raises(TaskDeferred) as deferral:
        s.execute(CONTEXT)
    _, from_worker = deferral.value.trigger.serialize()
    # The same trigger either way, but the clock: a worker knows when it started.
    assert stored == {**from_worker, "deadline": None}
    assert (stored["job_run_id"], stored["timeout"], stored["region_name"]) == (
        "{{ params.run }}",
        600,
        "us-east-1",
    )
    assert json.loads(json.dumps(stored)) == stored  # primitives only


def test_a_trigger_built_from_the_start_args_renders_and_reaches_the_run_s_end(
    sim: Simulator,
) -> None:
    """The triggerer renders the templated IDs, the trigger waits the run out, the task resumes."""
    run_id = new_run(sim, "IN_PROGRESS", "SUCCESS", lineage=LINEAGE)
    s = sensor("{{ params.run }}", start_from_trigger=True, timeout=60)
    trigger = scheduled_trigger(serialized(s, run="not-this-one"), s.task_id, {"run": run_id})
    assert isinstance(trigger, DataZoneJobRunTrigger)
    assert trigger.job_run_id == run_id  # rendered from the run's conf over the DAG's params
    [event] = run_trigger(trigger)
    assert type(event) is TriggerEvent  # end_from_trigger is off: the task resumes
    assert event.payload["status"] == "success"
    assert time.time() < event.payload["deadline"] <= time.time() + 60
    # The worker that resumes the task has its fields rendered too.
    s.job_run_id = run_id
    document = s.resume_execution("execute_complete", {"event": event.payload}, CONTEXT)
    assert (document["job_run_id"], document["status"]) == (run_id, "SUCCESS")
    assert document["lineage"]["total_queries_processed"] == 42
    assert sim.calls(run_id) == 2


def test_a_trigger_started_in_the_triggerer_times_out_on_its_own_clock(sim: Simulator) -> None:
    """No worker gave a deadline: the timeout counts from the trigger's start; the sensor agrees."""
    run_id = new_run(sim, "IN_PROGRESS")
    s = sensor(run_id, start_from_trigger=True, timeout=0.3)
    trigger = scheduled_trigger(serialized(s), s.task_id, {})
    started = time.time()
    [event] = run_trigger(trigger)
    assert 0.3 <= time.time() - started < 10
    with pytest.raises(AirflowSensorTimeout, match=f"{run_id} did not finish within the timeout"):
        s.resume_execution("execute_complete", {"event": event.payload}, CONTEXT)


def test_templated_ids_start_on_a_worker_with_one_warning_before_airflow_3_3(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """Where the triggerer renders no templates, a templated sensor defers from a worker instead."""
    monkeypatch.setattr(sensor_module, "TRIGGERER_RENDERS_TEMPLATES", False)
    with pytest.warns(UserWarning, match="needs Airflow >= 3.3") as caught:
        templated = sensor("{{ params.run }}", start_from_trigger=True)
    assert len(caught) == 1
    assert "needs Airflow >= 3.3" in str(caught[0].message)
    assert "job_run_id" in str(caught[0].message)
    assert (templated.start_from_trigger, templated.deferrable) == (False, True)
    assert templated.start_trigger_args is None
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        plain = sensor("run-1", start_from_trigger=True)
    assert plain.start_from_trigger
    assert plain.start_trigger_args is not None


def test_start_and_end_in_the_triggerer_refuse_deferrable_false() -> None:
    """Waiting in the triggerer and deferrable=False contradict: one clear line, at parse time."""
    for option in ("start_from_trigger", "end_from_trigger"):
        with pytest.raises(ValueError, match="cannot go with deferrable=False"):
            sensor("run-1", deferrable=False, **{option: True})


def test_both_are_off_by_default(sim: Simulator) -> None:
    """A default sensor starts on a worker and resumes on one: plain start, plain event."""
    run_id = new_run(sim, "SUCCESS")
    s = sensor(run_id, deferrable=True)
    assert (s.start_from_trigger, s.end_from_trigger, s.start_trigger_args) == (False, False, None)
    task = DagSerialization.from_dict(serialized(s)).get_task(s.task_id)
    assert (task.start_from_trigger, task.start_trigger_args) == (False, None)
    with pytest.raises(TaskDeferred) as deferral:
        s.execute(CONTEXT)
    assert deferral.value.trigger.serialize()[1]["end_from_trigger"] is False
    [event] = run_trigger(deferral.value.trigger)
    assert type(event) is TriggerEvent
    assert DataZoneJobRunTrigger(DOMAIN, run_id).end_from_trigger is False


# -- end_from_trigger -------------------------------------------------------------

# Each situation: the script, the sensor's timeout, the event the trigger
# ends the task with, and what a worker resuming the task raises instead.
SITUATIONS: dict[str, tuple[list[Any], float, type[TriggerEvent], type[BaseException] | None]] = {
    "success": (["IN_PROGRESS", "SUCCESS"], 10, TaskSuccessEvent, None),
    "failed": (["IN_PROGRESS", "FAILED"], 10, TaskFailedEvent, AirflowFailException),
    "partial": (["PARTIALLY_SUCCEEDED"], 10, TaskFailedEvent, AirflowFailException),
    "denied": ([Fault.error("AccessDeniedException", 403)], 10, TaskFailedEvent,
               AirflowFailException),
    "faults": (["IN_PROGRESS", *[Fault.internal()] * 50], 10, TaskFailedEvent,
               ServiceUnavailableError),
    "timeout": (["IN_PROGRESS"], 0.3, TaskFailedEvent, AirflowSensorTimeout),
}  # fmt: skip


def both_ends(
    sim: Simulator, situation: str, **options: Any
) -> tuple[TriggerEvent, str, dict[str, Any] | None, BaseException | None, dict[str, Any]]:
    """The same situation ended in the triggerer and resumed on a worker.

    Returns the end event, the line the trigger logged with it, the XCom a
    worker pushed, what it raised (None: it succeeded) and what it returned.
    """
    script, timeout, _, _ = SITUATIONS[situation]
    ends = {}
    for end_from_trigger in (True, False):
        s = sensor(
            new_run(sim, *script, error_message="boom", lineage=LINEAGE),
            end_from_trigger=end_from_trigger,
            deferrable=True,
            timeout=timeout,
            policy=RETRY_FAST,
            **options,
        )
        with pytest.raises(TaskDeferred) as deferral:
            s.execute(CONTEXT)
        with capture_logs() as logs:
            [event] = run_trigger(deferral.value.trigger)
        ends[end_from_trigger] = (s, deferral.value, event, logs)
    _, _, ended, logs = ends[True]
    logged = [e["event"] for e in logs if e.get("log_level") in ("info", "warning", "error")]
    s, deferral_, resumed, _ = ends[False]
    pushed: dict[str, Any] = {}

    class TI:
        def xcom_push(self, key: str, value: Any) -> None:
            pushed[key] = value

    error: BaseException | None = None
    returned = None
    try:
        returned = s.resume_execution(
            deferral_.method_name,
            {**(deferral_.kwargs or {}), "event": resumed.payload},
            {"ti": TI()},
        )
    except Exception as raised:
        error = raised
    return ended, logged[-1], pushed.get("return_value", returned), error, resumed.payload


def same_but_waited(message: str) -> str:
    """A message without its "(waited 0.3 s)"."""
    return re.sub(r"\(waited [0-9.]+ s\)", "(waited ...)", message)


@pytest.mark.parametrize("situation", SITUATIONS)
def test_end_events_carry_the_result_document_and_the_worker_s_message(
    sim: Simulator, situation: str
) -> None:
    """The trigger ends the task as a worker would: same verdict, same line, document in XCom."""
    _, _, event_type, raised = SITUATIONS[situation]
    event, line, worker_xcom, error, _ = both_ends(sim, situation)
    assert type(event) is event_type
    assert isinstance(event, TaskSuccessEvent | TaskFailedEvent)
    assert set(event.xcoms or {}) == {"return_value"}
    document = (event.xcoms or {})["return_value"]
    assert isinstance(document, dict)
    assert isinstance(worker_xcom, dict)
    # The same document a worker pushes (but the run's ID, times and counts).
    same = {"status", "outcome", "error_message", "problem"}
    assert {k: document[k] for k in same} == {k: worker_xcom[k] for k in same}
    assert document["lineage"] is not None or situation in ("denied", "faults", "timeout")
    if raised is None:
        assert error is None
        assert line == f"DataZone job run {document['job_run_id']} ended SUCCESS"
    else:
        assert type(error) is raised
        # The worker's message, but for the run's ID and how long each waited.
        assert same_but_waited(line) == same_but_waited(
            str(error).replace(worker_xcom["job_run_id"], document["job_run_id"])
        )


def test_the_end_event_survives_airflow_s_event_serialization(sim: Simulator) -> None:
    """The triggerer sends end events through pydantic: the XCom comes back whole."""
    from airflow.triggers.base import DiscrimatedTriggerEvent
    from pydantic import TypeAdapter

    event, _, _, _, _ = both_ends(sim, "failed")
    adapter: TypeAdapter[Any] = TypeAdapter(DiscrimatedTriggerEvent)
    back = adapter.validate_python(json.loads(adapter.dump_json(event)))
    assert type(back) is TaskFailedEvent
    assert back.task_instance_state is TaskInstanceState.FAILED
    assert back.xcoms == event.xcoms


@pytest.mark.parametrize("situation", ["failed", "denied", "timeout", "faults"])
def test_soft_fail_skips_in_the_triggerer_where_a_worker_skips(
    sim: Simulator, situation: str
) -> None:
    """soft_fail: a skip event where the worker raises a skip; a retryable fault still fails."""
    event, _, worker_xcom, error, _ = both_ends(sim, situation, soft_fail=True)
    if isinstance(error, AirflowSkipException):
        assert type(event) is TaskSkippedEvent
        assert (event.xcoms or {})["return_value"]["outcome"] == worker_xcom["outcome"]
    else:
        assert situation == "faults"
        assert type(event) is TaskFailedEvent


def test_start_and_end_in_the_triggerer_never_need_a_worker(sim: Simulator) -> None:
    """Both options: the scheduler's start arguments give a trigger that ends the task itself."""
    run_id = new_run(sim, "IN_PROGRESS", "IN_PROGRESS", "SUCCESS", lineage=LINEAGE)
    s = sensor("{{ params.run }}", start_from_trigger=True, end_from_trigger=True, timeout=60)
    trigger = scheduled_trigger(serialized(s, run="none"), s.task_id, {"run": run_id})
    [event] = run_trigger(trigger)
    assert type(event) is TaskSuccessEvent
    document = (event.xcoms or {})["return_value"]
    assert isinstance(document, dict)
    assert (document["job_run_id"], document["status"]) == (run_id, "SUCCESS")
    assert document["lineage"]["total_queries_processed"] == 42
