"""The asset watcher with real Airflow 3.3 parts, against the simulator over real HTTP.

The asset state store is Airflow's own accessor; only the supervisor behind it
(which writes the metadata database in a deployment) is a dictionary here.
Sharing goes through Airflow's own SharedStreamManager, as in the triggerer.
"""

from __future__ import annotations

# Sets AIRFLOW_HOME and the database before anything imports Airflow.
from _airflow_home import HOME as _HOME

# isort: split

import asyncio
import contextlib
import json
import runpy
import shutil
import time
from collections import Counter
from collections.abc import Iterator
from datetime import UTC, datetime
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import pytest
from airflow.sdk import Asset
from airflow.sdk.exceptions import ErrorType
from airflow.sdk.execution_time import task_runner
from airflow.sdk.execution_time.comms import (
    AssetStateStoreResult,
    ErrorResponse,
    GetAssetStateStoreByName,
    OKResponse,
    SetAssetStateStoreByName,
)
from airflow.sdk.execution_time.context import AssetStateStoreAccessors
from airflow.sdk.module_loading import import_string
from airflow.triggers.base import BaseEventTrigger
from airflow.triggers.shared_stream import SharedStreamManager
from helpers import LINEAGE
from structlog.testing import capture_logs

import poller._runtime
from poller import PollPolicy
from poller.airflow import DataZoneJobRunTrigger, DataZoneJobRunWatcher
from poller.airflow import _client as airflow_clients
from poller.airflow.trigger import policy_kwargs
from poller.airflow.watcher import WatcherStopped
from poller.errors import InvalidRequestError
from poller.testing import Fault, Simulator

DOMAIN = "dzd_watcher"
EXAMPLE = Path(__file__).parent.parent / "examples" / "datazone_job_run_watcher_dag.py"
FAST = 0.05  # seconds between listings while a run may be ending
_jobs = iter(range(1_000_000))


@pytest.fixture(scope="module")
def shared_sim() -> Iterator[Simulator]:
    poller._runtime.shared_client.cache_clear()
    airflow_clients.clear()
    with Simulator() as simulator:
        yield simulator
    airflow_clients.clear()


@pytest.fixture
def sim(
    shared_sim: Simulator, dummy_aws_environment: None, monkeypatch: pytest.MonkeyPatch
) -> Simulator:
    monkeypatch.setenv("AWS_ENDPOINT_URL_DATAZONE", shared_sim.endpoint_url)
    return shared_sim


class Supervisor:
    """The supervisor's side of Airflow's asset state store: rows in a dictionary."""

    def __init__(self) -> None:
        self.rows: dict[tuple[str, str], Any] = {}

    async def asend(self, message: Any) -> Any:
        return self.send(message)

    def send(self, message: Any) -> Any:
        if isinstance(message, GetAssetStateStoreByName):
            key = (message.name, message.key)
            if key not in self.rows:
                return ErrorResponse(error=ErrorType.ASSET_STORE_NOT_FOUND)
            return AssetStateStoreResult(value=self.rows[key])
        if isinstance(message, SetAssetStateStoreByName):
            self.rows[(message.name, message.key)] = message.value
            return OKResponse(ok=True)
        raise AssertionError(f"unexpected message {message!r}")


@pytest.fixture
def supervisor(monkeypatch: pytest.MonkeyPatch) -> Supervisor:
    comms = Supervisor()
    monkeypatch.setattr(task_runner, "SUPERVISOR_COMMS", comms, raising=False)
    return comms


def watching(trigger: DataZoneJobRunWatcher, *assets: str) -> DataZoneJobRunWatcher:
    """The trigger as the triggerer starts it: rebuilt from its serialized form, with the
    state store of the assets it watches."""
    classpath, kwargs = trigger.serialize()
    rebuilt: DataZoneJobRunWatcher = import_string(classpath)(**json.loads(json.dumps(kwargs)))
    if assets:
        rebuilt.asset_state_store = AssetStateStoreAccessors(
            inlets=[Asset(name=name, uri=f"x://{name}") for name in assets]
        )
    return rebuilt


def new_job() -> str:
    return f"job-{next(_jobs)}"


def watcher(job: str, **kwargs: Any) -> DataZoneJobRunWatcher:
    kwargs.setdefault("aws_conn_id", None)
    kwargs.setdefault("poll_interval", FAST)
    kwargs.setdefault("since", time.time())
    return DataZoneJobRunWatcher(domain_id=DOMAIN, job_id=job, **kwargs)


async def take(trigger: DataZoneJobRunWatcher, count: int, limit: float = 30) -> list[Any]:
    """Run the trigger as the triggerer does until ``count`` events came, then cancel it."""
    events: list[Any] = []
    enough = asyncio.Event()

    async def run() -> None:
        async for event in trigger.run():
            events.append(event.payload)
            if len(events) >= count:
                enough.set()

    task = asyncio.create_task(run())
    waiter = asyncio.create_task(enough.wait())
    try:
        await asyncio.wait({task, waiter}, timeout=limit, return_when=asyncio.FIRST_COMPLETED)
        if task.done():
            task.result()  # the trigger ended: with its error
        assert enough.is_set(), f"{len(events)} of {count} events in {limit} s"
        await asyncio.sleep(FAST)  # the triggerer asks for the next event at once
    finally:
        waiter.cancel()
        task.cancel()
        await asyncio.gather(task, waiter, return_exceptions=True)
    return events


def test_the_watcher_round_trips_as_airflow_stores_it() -> None:
    """serialize() rebuilds an equal watcher; Airflow hashes it like any event trigger."""
    w = watcher("job-x", statuses=["failed", "SUCCESS"], since="2026-11-24T10:00:00Z")
    classpath, kwargs = w.serialize()
    assert classpath == "poller.airflow.watcher.DataZoneJobRunWatcher"
    assert kwargs["statuses"] == ["FAILED", "SUCCESS"]
    assert kwargs["since"] == datetime(2026, 11, 24, 10, tzinfo=UTC).timestamp()
    again = watching(w)
    assert again.serialize() == (classpath, kwargs)
    assert BaseEventTrigger.hash(classpath, kwargs) == BaseEventTrigger.hash(*again.serialize())


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"statuses": ["IN_PROGRESS"]}, "statuses must be end states"),
        ({"since": "yesterday"}, "not a timestamp"),
        ({"poll_interval": 0}, "poll_interval must be"),
    ],
)
def test_bad_arguments_are_refused_when_the_dag_is_parsed(
    kwargs: dict[str, Any], message: str
) -> None:
    """A wrong status, time or interval fails the DAG file, not the triggerer later."""
    with pytest.raises(InvalidRequestError, match=message):
        watcher("job-x", **kwargs)


def test_each_finished_run_fires_one_event_with_its_result_document(
    sim: Simulator, supervisor: Supervisor
) -> None:
    """Three runs end (one before the watcher's since): two events, in order, lineage in."""
    job = new_job()
    sim.add_scheduled_runs(DOMAIN, job, [(-5, 1, "SUCCESS")])
    ids = sim.add_scheduled_runs(
        DOMAIN, job, [(0.1, 0.2, "SUCCESS"), (0.4, 0.2, "FAILED")], lineage=LINEAGE
    )
    events = asyncio.run(take(watching(watcher(job), "runs"), 2))
    assert [(e["job_run_id"], e["status"]) for e in events] == [
        (ids[0], "SUCCESS"),
        (ids[1], "FAILED"),
    ]
    assert events[0]["lineage"]["total_queries_processed"] == 42
    assert [r.run_id for r in sim.requests if r.operation == "GetJobRun"] == ids


def test_a_restarted_watcher_repeats_no_run_and_misses_none(
    sim: Simulator, supervisor: Supervisor
) -> None:
    """A watcher stopped after one event (a triggerer restart) and started again from its
    serialized form: the two runs that ended meanwhile come next, then a live one; no run
    twice, none missed."""
    job = new_job()
    w = watcher(job)
    first_ids = sim.add_scheduled_runs(DOMAIN, job, [(0.1, 0.1, "SUCCESS")])
    first = asyncio.run(take(watching(w, "runs"), 1))
    later = sim.add_scheduled_runs(DOMAIN, job, [(0, 0.1, "SUCCESS"), (0.1, 0.1, "ABORTED")])
    time.sleep(0.5)  # both end while no watcher runs
    live = sim.add_scheduled_runs(DOMAIN, job, [(0.5, 0.1, "SUCCESS")])
    second = asyncio.run(take(watching(w, "runs"), 3))
    assert [e["job_run_id"] for e in first] == first_ids
    assert [e["job_run_id"] for e in second] == [*later, *live]
    [(_, saved)] = supervisor.rows.items()
    assert saved["version"] == 1


def test_without_a_state_store_it_says_so_and_still_announces(sim: Simulator) -> None:
    """An Airflow without asset_state_store: one warning, and the runs are still announced
    (what was announced lasts as long as the triggerer process)."""
    job = new_job()
    ids = sim.add_scheduled_runs(DOMAIN, job, [(0.1, 0.1, "SUCCESS")])
    trigger = watching(watcher(job))
    with capture_logs() as logs:
        events = asyncio.run(take(trigger, 1))
    assert [e["job_run_id"] for e in events] == ids
    warnings = [e for e in logs if e["log_level"] == "warning"]
    assert len(warnings) == 1
    assert "kept in memory only" in warnings[0]["event"] % warnings[0].get("positional_args", ())


def test_watchers_of_one_job_share_one_listing_loop_through_airflow_s_manager(
    sim: Simulator, supervisor: Supervisor
) -> None:
    """Two watchers of one job (all end states; FAILED only) through the same connection
    have the same shared_stream_key; through Airflow's SharedStreamManager each gets its
    own events, and each run is read once for both."""
    job = new_job()
    ids = sim.add_scheduled_runs(DOMAIN, job, [(0.1, 0.1, "FAILED"), (0.3, 0.1, "SUCCESS")])
    every = watching(watcher(job), "all")
    failed = watching(watcher(job, statuses=["FAILED"]), "failed")
    key = every.shared_stream_key()
    assert key is not None
    assert key == failed.shared_stream_key()

    async def main() -> tuple[list[str], list[str]]:
        manager = SharedStreamManager()

        async def collect(trigger_id: int, w: DataZoneJobRunWatcher, n: int) -> list[str]:
            out: list[str] = []
            stream = manager.subscribe(trigger_id=trigger_id, trigger=w, key=key)
            async for event in w.filter_shared_stream(stream):
                out.append(event.payload["job_run_id"])
                if len(out) == n:
                    break
            return out

        try:
            got = await asyncio.wait_for(
                asyncio.gather(collect(1, every, 2), collect(2, failed, 1)), 30
            )
        finally:
            await manager.stop_all()
        return got[0], got[1]

    all_events, failed_events = asyncio.run(main())
    assert (all_events, failed_events) == (ids, ids[:1])
    reads = [r.run_id for r in sim.requests if r.operation == "GetJobRun" and r.run_id in ids]
    assert reads == ids


def settled(supervisor: Supervisor) -> list[str]:
    """The runs the watcher's saved state says were announced."""
    [(_, saved)] = supervisor.rows.items()
    return [run_id for run_id, _ in saved["settled"]]


@pytest.mark.parametrize("moved_on", [False, True])
def test_in_ack_mode_the_state_is_saved_only_once_airflow_has_the_events(
    sim: Simulator, supervisor: Supervisor, moved_on: bool
) -> None:
    """Through Airflow's SharedStreamManager (ack mode) the state is saved when the watcher
    has moved past a listing, whose events the triggerer then stored: a watcher stopped
    before that announces the run again when it restarts (none lost); one stopped after
    does not (none twice)."""
    job = new_job()
    w = watcher(job)
    first = sim.add_scheduled_runs(DOMAIN, job, [(0.1, 0.1, "SUCCESS")])

    async def shared(count: int, after: float) -> list[str]:
        manager = SharedStreamManager()
        trigger = watching(w, "runs")
        stream = trigger.filter_shared_stream(
            manager.subscribe(trigger_id=1, trigger=trigger, key=trigger.shared_stream_key())
        )
        try:
            got = [(await asyncio.wait_for(anext(stream), 30)).payload["job_run_id"]]
            if after:  # the triggerer asks for the next event at once: the filter moves on
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(anext(stream), after)
        finally:
            await manager.stop_all()
        return got

    assert asyncio.run(shared(1, 5 * FAST if moved_on else 0)) == first
    assert settled(supervisor) == (first if moved_on else [])
    later = sim.add_scheduled_runs(DOMAIN, job, [(0.1, 0.1, "SUCCESS")])
    again = asyncio.run(take(watching(w, "runs"), 1 if moved_on else 2))
    assert [e["job_run_id"] for e in again] == (later if moved_on else [*first, *later])


def test_an_unknown_connection_ends_the_watcher_with_one_clear_error(sim: Simulator) -> None:
    """A misspelt aws_conn_id: the watcher ends at once, its error naming the job and the
    fix, with no call made (no retry loop hiding it)."""
    job = new_job()
    trigger = watching(watcher(job, aws_conn_id="dz_nowhere"))
    before = len(sim.requests)
    with pytest.raises(WatcherStopped) as info:
        asyncio.run(take(trigger, 1))
    message = str(info.value)
    assert f"watcher of job {job} in domain {DOMAIN} stopped" in message
    assert "'dz_nowhere' does not exist" in message
    assert len(sim.requests) == before


def test_no_region_ends_the_watcher_naming_where_to_set_one(
    sim: Simulator, monkeypatch: pytest.MonkeyPatch
) -> None:
    """No region anywhere: one error saying where a region goes."""
    monkeypatch.delenv("AWS_DEFAULT_REGION")
    with pytest.raises(WatcherStopped, match="no AWS region"):
        asyncio.run(take(watching(watcher(new_job())), 1))


def test_denied_access_ends_the_watcher_after_one_call(sim: Simulator) -> None:
    """AccessDenied on the listing is not retried: one call, one clear error."""
    job = new_job()
    sim.fail_list_job_runs(DOMAIN, job, Fault.error("AccessDeniedException", 403, "no list"))
    with pytest.raises(WatcherStopped, match="AccessDeniedError: ListJobRuns"):
        asyncio.run(take(watching(watcher(job)), 1))
    assert len([r for r in sim.requests if r.job_id == job]) == 1


# -- the example DAG, as Airflow loads, stores and runs it ---------------------


@pytest.fixture(scope="module")
def example() -> dict[str, Any]:
    folder = _HOME / "dags"
    folder.mkdir(exist_ok=True)
    shutil.copy(EXAMPLE, folder / EXAMPLE.name)
    return runpy.run_path(str(folder / EXAMPLE.name))


def test_the_example_dag_is_scheduled_on_an_asset_watched_by_the_watcher(
    example: dict[str, Any],
) -> None:
    """The DAG serializes as the DAG processor stores it; the asset's watcher is ours."""
    from airflow.serialization.serialized_objects import DagSerialization

    dag = example["datazone_job_run_finished"]()
    stored = json.loads(json.dumps(DagSerialization.to_dict(dag)))
    text = json.dumps(stored)
    assert "poller.airflow.watcher.DataZoneJobRunWatcher" in text
    [watcher_] = example["job_runs"].watchers
    assert isinstance(watcher_.trigger, DataZoneJobRunWatcher)


def test_the_example_s_watcher_fires_and_its_task_reports_each_run(
    sim: Simulator, supervisor: Supervisor, example: dict[str, Any]
) -> None:
    """The example's own watcher, as the triggerer starts it, announces the example job's
    runs against the simulator; the example's task turns each payload into its report."""
    asset = example["job_runs"]
    [watcher_] = asset.watchers
    trigger = watching(watcher_.trigger, asset.name)
    assert trigger.job_id == example["JOB_ID"]
    ids = sim.add_scheduled_runs(
        example["DOMAIN_ID"], example["JOB_ID"], [(0.1, 0.2, "SUCCESS")], lineage=LINEAGE
    )
    # The example lists every 25 s while a run may end; this test does not wait that long.
    trigger.poll_interval = FAST
    [payload] = asyncio.run(take(trigger, 1))
    assert payload["job_run_id"] == ids[0]
    dag = example["datazone_job_run_finished"]()
    report = dag.get_task("report").python_callable
    event = SimpleNamespace(extra={"from_trigger": True, "payload": payload})
    [line] = report(triggering_asset_events={asset: [event]})
    assert line.startswith(f"job run {ids[0]} of {example['JOB_ID']} ended SUCCESS")
    assert line.endswith("2 of 42 SQL queries failed")


def test_the_watcher_books_on_the_budget_the_airflow_setting_poller_max_rps_sets(
    sim: Simulator, supervisor: Supervisor, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A watcher alone in its triggerer still takes `[poller] max_rps`, as the triggers do."""
    from poller._limiter import budgets

    monkeypatch.setenv("AIRFLOW__POLLER__MAX_RPS", "3")
    job = new_job()
    ids = sim.add_scheduled_runs(DOMAIN, job, [(0.1, 0.2, "SUCCESS")])
    events = asyncio.run(take(watching(watcher(job), "runs"), 1))
    assert [e["job_run_id"] for e in events] == ids
    assert budgets().max_rps == 3.0


def test_an_asset_watcher_and_deferred_sensors_of_one_job_share_its_listing_in_the_triggerer(
    sim: Simulator, supervisor: Supervisor
) -> None:
    """The watcher and two sensors' triggers of one job on one triggerer loop: each gets its
    events, the job is listed for all of them at once, and each finished run is read once
    (the watcher takes the answer its sensor's trigger read, lineage included)."""
    job = new_job()
    ids = sim.add_scheduled_runs(DOMAIN, job, [(0.0, 2.0, "SUCCESS"), (0.0, 2.0, "FAILED")])
    policy = policy_kwargs(PollPolicy(interval=0.3, max_interval=0.6))
    watched = watching(watcher(job, poll_interval=0.5), "all")

    async def main() -> tuple[list[Any], list[Any]]:
        listening = asyncio.create_task(take(watched, 2))
        await asyncio.sleep(0.3)  # the watcher's first listing
        sensors = [
            DataZoneJobRunTrigger(
                DOMAIN, run_id, aws_conn_id=None, deadline=time.time() + 30, policy=policy
            )
            for run_id in ids
        ]

        async def fired(trigger: DataZoneJobRunTrigger) -> Any:
            async for event in trigger.run():
                return event.payload
            raise AssertionError("no event")

        payloads = await asyncio.gather(*(fired(t) for t in sensors))
        return list(payloads), await listening

    payloads, events = asyncio.run(main())
    reads = Counter(r.run_id for r in sim.requests if r.operation == "GetJobRun")
    assert sorted(e["job_run_id"] for e in events) == sorted(ids)
    assert [p["result"]["outcome"] for p in payloads] == ["succeeded", "failed"]
    assert all(
        e["lineage"] == p["result"]["lineage"]
        for e, p in zip(
            sorted(events, key=lambda e: e["job_run_id"]),
            sorted(payloads, key=lambda p: p["result"]["job_run_id"]),
            strict=True,
        )
    )
    assert all(reads[run_id] <= 2 for run_id in ids), reads
