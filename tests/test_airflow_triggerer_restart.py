"""The asset watcher in a real Airflow deployment whose triggerer is killed outright mid-stream.

benchmarks/bench_airflow.py's `Deployment` starts Airflow's scheduler and
dag-processor (LocalExecutor on SQLite, a throwaway AIRFLOW_HOME) with a DAG
scheduled on an asset that `DataZoneJobRunWatcher` watches, and a triggerer;
the simulator serves the job over real HTTP, here in this process. Once the
watcher is looking, runs of the job start one after another and each ends a
few seconds later. When some (not all) have been announced, and the watcher's
state (Airflow's asset_state_store) has them, the triggerer and its trigger
runner get SIGKILL; runs end while none runs; a new triggerer takes the
watcher over. Every run that ended must then have exactly one asset event:
none missed, none repeated. Asset events are counted, not DAG runs (the
scheduler may fold close events into one DAG run).
"""

from __future__ import annotations

# Sets AIRFLOW_HOME and the database before anything imports Airflow.
import _airflow_home  # noqa: F401

# isort: split

import collections
import importlib.util
import json
import os
import shutil
import tempfile
import time
from collections.abc import Callable, Iterator
from datetime import datetime
from pathlib import Path
from typing import Any

# The deployment is this Python's Airflow: the module runs where the Airflow extra is
# installed, as every Airflow test (.ci/pythons finds them by this import).
import airflow  # noqa: F401
import pytest

from poller.testing import Simulator

BENCH = Path(__file__).parent.parent / "benchmarks" / "bench_airflow.py"
JOB = "job-1"
DAG_ID = "on_job_runs"
RUNS = 10  # one starts every GAP seconds and ends END_S later
GAP, END_S = 4.0, 2.0
KILL_AFTER = 3  # announced runs before the kill, at least
STATE_KEY = "poller.datazone_job_run_watcher:%"
DAGS = """
from datetime import UTC, datetime

from airflow.providers.standard.operators.empty import EmptyOperator
from airflow.sdk import DAG, Asset, AssetWatcher

from poller.airflow import DataZoneJobRunWatcher

job_runs = Asset(
    "datazone_job_runs",
    watchers=[
        AssetWatcher(
            name="datazone_job_runs_watcher",
            trigger=DataZoneJobRunWatcher(domain_id="{domain}", job_id="{job}", poll_interval=1),
        )
    ],
)

with DAG("{dag_id}", schedule=[job_runs], start_date=datetime(2026, 1, 1, tzinfo=UTC)):
    EmptyOperator(task_id="noted")
"""


def _bench() -> Any:
    spec = importlib.util.spec_from_file_location("bench_airflow", BENCH)
    assert spec is not None
    assert spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


bench = _bench()


@pytest.fixture
def deployment() -> Iterator[Any]:
    """Scheduler and dag-processor up, the DAG parsed; every process stopped at the end."""
    home = Path(tempfile.mkdtemp(prefix="poller-triggerer-restart-"))
    env = {k: v for k, v in os.environ.items() if not k.startswith(("AIRFLOW", "AWS_"))}
    env.update(
        # A killed triggerer's triggers go to a live one once it has missed this many
        # seconds of heartbeats (default 30).
        AIRFLOW__TRIGGERER__TRIGGERER_HEALTH_CHECK_THRESHOLD="10",
        # Log servers on free ports: another deployment on the machine holds the defaults.
        AIRFLOW__LOGGING__WORKER_LOG_SERVER_PORT=str(bench.free_port()),
        AIRFLOW__LOGGING__TRIGGER_LOG_SERVER_PORT=str(bench.free_port()),
    )
    d = bench.Deployment(
        home, bench.arguments(["--n", "1", "--max-rps", "0", "--parallelism", "2"]), env
    )
    try:
        d.boot(DAGS.format(domain=bench.DOMAIN, job=JOB, dag_id=DAG_ID), {DAG_ID}, api_server=False)
        yield d
    finally:
        d.close()
        shutil.rmtree(home, ignore_errors=True)


def _events(d: Any) -> list[tuple[str, float]]:
    """(run ID, end as epoch seconds) of each asset event, in the order stored."""
    rows = d.db(
        "select json_extract(extra, '$.payload.job_run_id'), "
        "json_extract(extra, '$.payload.end_time') from asset_event order by id"
    )
    return [(str(rid), datetime.fromisoformat(end).timestamp()) for rid, end in rows]


def _saved(d: Any) -> tuple[float, set[str]]:
    """The watcher's saved ledger: its high-water mark and the runs settled at or after it."""
    rows = d.db("select value from asset_state_store where key like ?", STATE_KEY)
    if not rows:
        return float("-inf"), set()
    [(value,)] = rows
    ledger = json.loads(value)
    if isinstance(ledger, str):  # stored as a JSON string of the JSON value
        ledger = json.loads(ledger)
    return float(ledger["since"]), {str(rid) for rid, _ in ledger["settled"]}


def _covered(events: list[tuple[str, float]], saved: tuple[float, set[str]]) -> bool:
    """Every announced run is in the saved ledger: a restart announces none of them again."""
    since, settled = saved
    return all(rid in settled or end < since for rid, end in events)


def _until(d: Any, ready: Callable[[], bool], timeout: float, what: str) -> None:
    deadline = time.monotonic() + timeout
    while not ready():
        if time.monotonic() > deadline:
            pytest.fail(
                f"{what}: not within {timeout:.0f} s; events {_events(d)}, "
                f"saved {_saved(d)}\n--- triggerer.out (tail) ---\n{d.tail('triggerer')}"
            )
        time.sleep(0.3)


def test_after_a_triggerer_is_killed_and_restarted_each_finished_run_has_one_asset_event(
    deployment: Any,
) -> None:
    """SIGKILL after some runs are announced and saved, runs ending while no triggerer runs:
    once a new triggerer has the watcher, each of the runs has one asset event, no more."""
    d = deployment
    with Simulator(port=d.sim_port) as sim:
        d.start("triggerer", str(d.bin / "airflow"), "triggerer", "--skip-serve-logs")
        _until(
            d,
            lambda: any(r.operation == "ListJobRuns" and r.job_id == JOB for r in sim.requests),
            240,
            "the watcher's first listing of the job",
        )
        statuses = ["SUCCESS", "SUCCESS", "FAILED"]
        runs = sim.add_scheduled_runs(
            bench.DOMAIN,
            JOB,
            [(i * GAP, END_S, statuses[i % 3]) for i in range(RUNS)],
        )

        def mid_stream() -> bool:
            events = _events(d)
            return KILL_AFTER <= len(events) <= RUNS - 3 and _covered(events, _saved(d))

        _until(d, mid_stream, 120, f"{KILL_AFTER} runs announced and saved, 3 still to come")
        d.kill("triggerer")
        at_kill = _events(d)
        # The one window the docs leave: an event stored and its save not yet made.
        assert _covered(at_kill, _saved(d)), f"killed between an event and its save: {at_kill}"
        time.sleep(2 * GAP)  # runs end while no triggerer runs
        restarted_at = time.time()
        d.start("triggerer", str(d.bin / "airflow"), "triggerer", "--skip-serve-logs")
        _until(
            d,
            lambda: {rid for rid, _ in _events(d)} >= set(runs),
            180,
            "every run announced after the restart",
        )
        time.sleep(3)  # a repeat would come with the listings after the last run's
    events = _events(d)
    counts = collections.Counter(rid for rid, _ in events)
    assert counts == dict.fromkeys(runs, 1), (
        f"killed after {[rid for rid, _ in at_kill]}\n"
        f"--- triggerer.out (tail) ---\n{d.tail('triggerer')}"
    )
    # The restarted watcher caught up on runs that ended while none ran.
    announced = {rid for rid, _ in at_kill}
    assert [rid for rid, end in events if rid not in announced and end < restarted_at]
    dag_runs = d.db(
        "select count(*) from dag_run where dag_id = ? and run_type = 'asset_triggered'", DAG_ID
    )
    assert dag_runs[0][0] >= 1
