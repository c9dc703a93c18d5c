"""Airflow at triggerer scale: a real Airflow 3 deployment waiting on simulated DataZone runs.

Starts, in a temporary AIRFLOW_HOME with LocalExecutor on SQLite, Airflow's
api-server, scheduler, dag-processor and a triggerer, plus the simulator
(``python -m poller.testing --scenario ... --log ...``) on one port, with one
AWS connection (``AIRFLOW_CONN_AWS_DEFAULT``: keys, region and endpoint_url).
Then, phase by phase, with a fresh triggerer each time so its peak is its own:

- control: N ``TimeDeltaSensor(deferrable=True)`` tasks;
- deferrable: N ``DataZoneJobRunSensor(deferrable=True)`` tasks on the one
  connection, each waiting on its own run, which ends after ``--run-s`` s;
- start, end, both: N sensors with ``start_from_trigger``, ``end_from_trigger``
  or both (the task never runs on a worker);
- ha: the same as both, with two triggerers (Airflow's high-availability
  set-up), each given ``[poller] max_rps`` = the server's limit / 2, as
  docs/airflow.md says to size it;
- poke and reschedule: ``--small`` sensors each (they hold or re-take worker
  slots, so fewer).

The simulator holds every client to ``--max-rps`` calls a second (server
wide, answering 429 ThrottlingException over it, as DataZone does per
account); ``--poller-max-rps`` sets the triggerer's own budget, the Airflow
option ``[poller] max_rps`` (``AIRFLOW__POLLER__MAX_RPS``), else poller's
default holds.

Reported: the triggerer's peak RSS (its process tree) and the ratio to the
control; trigger start (the triggerer's "trigger ... starting") to the
trigger's first GetJobRun after it (the simulator's log; a deferrable
sensor makes no call of its own); per phase, from the simulator's request log, the
calls (GetJobRun and ListJobRuns apart and together) and the throttled ones;
end of run (each run's endTime, read back from the simulator) to its first
SUCCESS answer, to its last GetJobRun and to task success; task states and
failed tasks; worker task runs per sensor (the scheduler's executor events
for the DAG run: a deferrable sensor's start and its resumption are one
each); CPU seconds of the scheduler (its own process), of the worker
processes it ran (its children) and of the triggerer(s); "async thread was
blocked" warnings. Every process it started
is stopped on the way out, whatever happens.

    .venv/bin/python benchmarks/bench_airflow.py [--n 200] [--small 10] [--run-s 300] \
        [--max-rps 5] [--poller-max-rps R] [--phases control,deferrable,...]

(``make bench-airflow``). Not part of ``make test``.
"""

from __future__ import annotations

import argparse
import contextlib
import datetime as dt
import json
import os
import re
import secrets
import shutil
import signal
import socket
import sqlite3
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path
from typing import Any

import psutil

from poller.testing._client import make_client

DOMAIN = "dzd_bench"
ACCESS_KEY = "AKIDBENCHCONN"
# The bench's own reads (each run's endTime, after a phase): left out of the figures.
READER_KEY = "AKIDBENCHREADER"
# The triggerer's per-account budget, Airflow's option [poller] max_rps.
BUDGET_ENV = "AIRFLOW__POLLER__MAX_RPS"
# The target (issue 15): TARGET_N deferred sensors against at most TARGET_RPS
# calls/s, no failed task, at most MAX_THROTTLED_SHARE of the calls throttled.
TARGET_N, TARGET_RPS, MAX_THROTTLED_SHARE = 200, 5.0, 0.02
POKE_INTERVAL = 5
# Phase: (DAG, triggerers; "N" or "small" sensors). Deferred phases wait in the triggerer.
PHASES = {
    "control": ("bench_control", 1, "n"),
    "deferrable": ("bench_deferrable", 1, "n"),
    "start": ("bench_start", 1, "n"),
    "end": ("bench_end", 1, "n"),
    "both": ("bench_both", 1, "n"),
    "ha": ("bench_ha", 2, "n"),
    "poke": ("bench_poke", 1, "small"),
    "reschedule": ("bench_reschedule", 1, "small"),
}
DEFERRED_PHASES = ("deferrable", "start", "end", "both", "ha")
DAGS = """
from datetime import UTC, datetime, timedelta

from airflow.providers.standard.sensors.time_delta import TimeDeltaSensor
from airflow.sdk import DAG

from poller import PollPolicy
from poller.airflow import DataZoneJobRunSensor

N, SMALL, RUN_S, POKE = {n}, {small}, {run_s}, {poke}
START = datetime(2026, 1, 1, tzinfo=UTC)

with DAG("bench_control", schedule=None, start_date=START, max_active_tasks=N) as control:
    for i in range(N):
        TimeDeltaSensor(task_id=f"t{{i}}", delta=timedelta(seconds=RUN_S), deferrable=True)

def sensors(dag_id, count, **kwargs):
    with DAG(dag_id, schedule=None, start_date=START, max_active_tasks=count) as dag:
        for i in range(count):
            DataZoneJobRunSensor(
                task_id=f"t{{i}}",
                domain_id="{domain}",
                job_run_id=f"{{dag_id}}-{{i}}",
                timeout=3600,
                policy=PollPolicy(interval=POKE, max_interval=POKE),
                **{{"poke_interval": POKE, **kwargs}},
            )
    return dag

deferrable = sensors("bench_deferrable", N, deferrable=True)
start = sensors("bench_start", N, start_from_trigger=True)
end = sensors("bench_end", N, deferrable=True, end_from_trigger=True)
both = sensors("bench_both", N, start_from_trigger=True, end_from_trigger=True)
ha = sensors("bench_ha", N, start_from_trigger=True, end_from_trigger=True)
poke = sensors("bench_poke", SMALL, deferrable=False, mode="poke")
# Airflow advises reschedule intervals of a minute or more; 15 s keeps the
# bench short without the scheduler racing a reschedule against its own
# late executor event (which it answers by failing the task).
reschedule = sensors(
    "bench_reschedule", SMALL, deferrable=False, mode="reschedule", poke_interval=3 * POKE
)
"""


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


class Deployment:
    """The processes of one benchmark; `close` stops every one of them."""

    def __init__(
        self, home: Path, args: argparse.Namespace, base_env: dict[str, str] | None = None
    ) -> None:
        """``base_env``: the environment the processes inherit (default: this process's)."""
        self.home = home
        self.args = args
        self.api_port = free_port()
        self.sim_port = free_port()
        self.procs: dict[str, subprocess.Popen[bytes]] = {}
        self.env = {
            **(os.environ if base_env is None else base_env),
            "AIRFLOW_HOME": str(home),
            "AIRFLOW__CORE__DAGS_FOLDER": str(home / "dags"),
            "AIRFLOW__CORE__LOAD_EXAMPLES": "False",
            "AIRFLOW__CORE__EXECUTOR": "LocalExecutor",
            "AIRFLOW__CORE__PARALLELISM": str(args.parallelism),
            "AIRFLOW__CORE__MAX_ACTIVE_TASKS_PER_DAG": str(max(args.n, 16)),
            "AIRFLOW__CORE__DAGS_ARE_PAUSED_AT_CREATION": "False",
            "AIRFLOW__DATABASE__SQL_ALCHEMY_CONN": f"sqlite:///{home / 'airflow.db'}",
            "AIRFLOW__API__PORT": str(self.api_port),
            "AIRFLOW__API__HOST": "127.0.0.1",
            "AIRFLOW__CORE__EXECUTION_API_SERVER_URL": (
                f"http://127.0.0.1:{self.api_port}/execution/"
            ),
            "AIRFLOW__API_AUTH__JWT_SECRET": secrets.token_hex(16),
            "AIRFLOW__CORE__SIMPLE_AUTH_MANAGER_ALL_ADMINS": "True",
            "AIRFLOW__DAG_PROCESSOR__REFRESH_INTERVAL": "5",
            "AIRFLOW__SCHEDULER__TASK_INSTANCE_HEARTBEAT_TIMEOUT": "600",
            "AIRFLOW_CONN_AWS_DEFAULT": json.dumps(
                {
                    "conn_type": "aws",
                    "login": ACCESS_KEY,
                    "password": "bench-secret-key",
                    "extra": {
                        "region_name": "us-east-1",
                        "endpoint_url": f"http://127.0.0.1:{self.sim_port}",
                    },
                }
            ),
            "AWS_EC2_METADATA_DISABLED": "true",
            "PYTHONUNBUFFERED": "1",
        }
        for name in ("AWS_ENDPOINT_URL", "AWS_ENDPOINT_URL_DATAZONE", "AWS_PROFILE"):
            self.env.pop(name, None)
        self.bin = Path(sys.executable).parent

    def start(
        self, name: str, *argv: str, env: dict[str, str] | None = None
    ) -> subprocess.Popen[bytes]:
        out = open(self.home / f"{name}.out", "ab")  # noqa: SIM115  (the child holds it)
        proc = subprocess.Popen(
            list(argv),
            env={**self.env, **(env or {})},
            stdout=out,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )
        self.procs[name] = proc
        return proc

    def stop(self, name: str, grace: float = 20) -> None:
        proc = self.procs.pop(name, None)
        if proc is None or proc.poll() is not None:
            return
        with contextlib.suppress(ProcessLookupError):
            os.killpg(proc.pid, signal.SIGTERM)
        try:
            proc.wait(grace)
        except subprocess.TimeoutExpired:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(proc.pid, signal.SIGKILL)
            proc.wait()

    def kill(self, name: str) -> None:
        """SIGKILL a component and every process under it at once, as when its machine dies.

        The whole tree, not the process group: Airflow's trigger runner (and a
        task's process) has a process group of its own.
        """
        proc = self.procs.pop(name)
        try:
            root = psutil.Process(proc.pid)
            tree = [root, *root.children(recursive=True)]
        except psutil.NoSuchProcess:
            tree = []
        for p in tree:
            with contextlib.suppress(psutil.Error):
                p.kill()
        proc.wait()
        psutil.wait_procs(tree, timeout=30)

    def tail(self, name: str, lines: int = 60) -> str:
        """The last lines of a component's output (``<name>.out``), for a failure's message."""
        path = self.home / f"{name}.out"
        text = path.read_text(errors="replace") if path.exists() else ""
        return "\n".join(text.splitlines()[-lines:])

    def boot(self, dags: str, dag_ids: set[str], *, api_server: bool = True) -> None:
        """Write the DAG file, make the database, start the components (the triggerer aside)
        and wait for ``dag_ids`` to be parsed.

        Without ``api_server`` only work that needs no worker gets done (an
        EmptyOperator's task succeeds in the scheduler).
        """
        (self.home / "dags").mkdir(exist_ok=True)
        (self.home / "dags" / "bench_dags.py").write_text(dags)
        self.airflow("db", "migrate")
        if api_server:
            self.start(
                "api-server", str(self.bin / "airflow"), "api-server", "--port", str(self.api_port)
            )
        self.start("dag-processor", str(self.bin / "airflow"), "dag-processor")
        self.start("scheduler", str(self.bin / "airflow"), "scheduler")
        if api_server:
            wait_for(lambda: port_open(self.api_port), 120, "the api-server")
        wait_for(
            lambda: dag_ids <= {r[0] for r in self.db("select dag_id from dag")},
            180,
            "the DAGs",
        )

    def close(self) -> None:
        for name in list(self.procs):
            self.stop(name)

    def airflow(self, *argv: str) -> subprocess.CompletedProcess[str]:
        return subprocess.run(
            [str(self.bin / "airflow"), *argv],
            env=self.env,
            capture_output=True,
            text=True,
            check=True,
        )

    def db(self, sql: str, *params: Any) -> list[tuple[Any, ...]]:
        with contextlib.closing(sqlite3.connect(self.home / "airflow.db", timeout=30)) as conn:
            return list(conn.execute(sql, params))

    def start_simulator(self, phase: str, dag_id: str, count: int, run_s: float) -> Path:
        scenario = self.home / f"{phase}.scenario.json"
        runs = [
            {
                "domain_id": DOMAIN,
                "run_id": f"{dag_id}-{i}",
                "timeline": [[0, "IN_PROGRESS"], [run_s, "SUCCESS"]],
            }
            for i in range(count)
        ]
        scenario.write_text(json.dumps({"runs": runs}))
        log = self.home / f"{phase}.requests.jsonl"
        limit = ["--max-rps", str(self.args.max_rps)] if self.args.max_rps > 0 else []
        self.start(
            "simulator",
            sys.executable,
            "-m",
            "poller.testing",
            "--port",
            str(self.sim_port),
            "--scenario",
            str(scenario),
            "--log",
            str(log),
            *limit,
        )
        wait_for(lambda: port_open(self.sim_port), 30, "the simulator")
        return log

    def run_ends(self, dag_id: str) -> dict[str, float]:
        """run_id -> the endTime the simulator reports, read with the bench's own key.

        The runs are every run the simulator has (one phase's), listed 50 a page;
        botocore's retries take care of the server's limit.
        """
        client = make_client(
            f"http://127.0.0.1:{self.sim_port}",
            aws_access_key_id=READER_KEY,
            retries={"total_max_attempts": 30, "mode": "standard"},
        )
        ends: dict[str, float] = {}
        kwargs: dict[str, Any] = {"domainIdentifier": DOMAIN, "jobIdentifier": "job-1"}
        while True:
            page = client.list_job_runs(**kwargs, maxResults=50)
            for item in page.get("items", []):
                if item["runId"].startswith(f"{dag_id}-") and item.get("endTime"):
                    ends[item["runId"]] = item["endTime"].timestamp()
            if not page.get("nextToken"):
                return ends
            kwargs["nextToken"] = page["nextToken"]


def port_open(port: int) -> bool:
    with socket.socket() as s:
        return s.connect_ex(("127.0.0.1", port)) == 0


def wait_for(ready: Any, timeout: float, what: str) -> None:
    deadline = time.monotonic() + timeout
    while not ready():
        if time.monotonic() > deadline:
            raise TimeoutError(f"{what} was not ready within {timeout:.0f} s")
        time.sleep(0.5)


def cpu_s(pid: int, *, own: bool = True, children: bool = True) -> float:
    """CPU seconds (user + system) of a process, of its live descendants, or both."""
    try:
        root = psutil.Process(pid)
        procs = ([root] if own else []) + (root.children(recursive=True) if children else [])
    except psutil.Error:
        return 0.0
    total = 0.0
    for p in procs:
        with contextlib.suppress(psutil.Error):
            times = p.cpu_times()
            total += times.user + times.system
            if p is root and children:
                # Descendants that have exited and been waited for.
                total += times.children_user + times.children_system
    return total


class RssPeak:
    """Samples a process tree's total RSS every 0.25 s; `peak` in MB; `cpu`, its CPU seconds."""

    def __init__(self, pid: int) -> None:
        self.pid = pid
        self.peak = 0.0
        self.last = 0.0
        self.cpu = 0.0
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)
        self._thread.start()

    def _run(self) -> None:
        while not self._stop.wait(0.25):
            try:
                root = psutil.Process(self.pid)
                procs = [root, *root.children(recursive=True)]
                total = 0
                for p in procs:
                    with contextlib.suppress(psutil.Error):
                        total += p.memory_info().rss
            except psutil.Error:
                continue
            self.last = total / 2**20
            self.peak = max(self.peak, self.last)
            self.cpu = max(self.cpu, cpu_s(self.pid))

    def stop(self) -> None:
        self._stop.set()
        self._thread.join()


def when(text: str) -> float:
    """Epoch seconds of an ISO timestamp (naive means UTC, as Airflow's SQLite rows are)."""
    value = dt.datetime.fromisoformat(text.replace("Z", "+00:00"))
    if value.tzinfo is None:
        value = value.replace(tzinfo=dt.UTC)
    return value.timestamp()


def pct(values: list[float], q: float) -> float | None:
    if not values:
        return None
    if len(values) == 1:
        return values[0]
    return statistics.quantiles(values, n=100, method="inclusive")[int(q) - 1]


def run_phase(
    d: Deployment, phase: str, dag_id: str, count: int, timeout: float, triggerers: int = 1
) -> dict[str, Any]:
    """Trigger ``dag_id`` once with fresh triggerer(s); wait for every task to end.

    With several triggerers each gets the server's limit divided among them
    as its ``[poller] max_rps`` (unless --poller-max-rps says otherwise).
    """
    per = d.args.poller_max_rps
    if per is None and triggerers > 1 and d.args.max_rps > 0:
        per = d.args.max_rps / triggerers
    budget = {} if per is None else {BUDGET_ENV: f"{per:g}"}
    names = [f"triggerer-{phase}" + (f"-{i}" if i else "") for i in range(triggerers)]
    for name in names:
        d.start(name, str(d.bin / "airflow"), "triggerer", env=budget)
    time.sleep(3)
    rss = [RssPeak(d.procs[name].pid) for name in names]
    scheduler = d.procs["scheduler"].pid
    sched_cpu, workers_cpu = cpu_s(scheduler, children=False), cpu_s(scheduler, own=False)
    run_id = f"bench-{phase}-{int(time.time())}"
    d.airflow("dags", "trigger", dag_id, "--run-id", run_id)
    started = time.time()
    max_deferred = 0
    states: dict[str, int] = {}
    while time.time() - started < timeout:
        rows = d.db(
            "select state, count(*) from task_instance where dag_id=? and run_id=? group by state",
            dag_id,
            run_id,
        )
        states = {str(s): int(c) for s, c in rows}
        max_deferred = max(max_deferred, states.get("deferred", 0))
        done = sum(c for s, c in states.items() if s in ("success", "failed", "skipped"))
        if done >= count:
            break
        time.sleep(1)
    sched_cpu = cpu_s(scheduler, children=False) - sched_cpu
    # LocalExecutor's workers are the scheduler's children; the ones that
    # ran tasks this phase exit and are waited for, so their time shows here.
    workers_cpu = cpu_s(scheduler, own=False) - workers_cpu
    for peak in rss:
        peak.stop()
    for name in names:
        d.stop(name)
    ends = d.db(
        "select task_id, state, end_date from task_instance where dag_id=? and run_id=?",
        dag_id,
        run_id,
    )
    return {
        "phase": phase,
        "dag_id": dag_id,
        "run_id": run_id,
        "count": count,
        "states": states,
        "max_deferred": max_deferred,
        # Any task that did not succeed: failed, or still waiting at --phase-timeout.
        "failed_tasks": count - states.get("success", 0),
        "wall_s": round(time.time() - started, 1),
        "triggerers": triggerers,
        "triggerer_max_rps": per,
        # Several triggerers: the sum of their peaks.
        "rss_peak_mb": round(sum(peak.peak for peak in rss), 1),
        "triggerer_cpu_s": round(sum(peak.cpu for peak in rss), 1),
        "scheduler_cpu_s": round(sched_cpu, 1),
        "workers_cpu_s": round(workers_cpu, 1),
        "ends": {str(t): (s, e) for t, s, e in ends},
        "blocked": [ln for name in names for ln in blocked_warnings(d.home / f"{name}.out")],
        "run_after": when(
            d.db("select run_after from dag_run where dag_id=? and run_id=?", dag_id, run_id)[0][0]
        ),
    }


def worker_runs(scheduler_log: Path, dag_id: str, run_id: str) -> int:
    """Worker task runs of the DAG run: one executor event each, in the scheduler's log."""
    text = scheduler_log.read_text(errors="replace") if scheduler_log.exists() else ""
    marks = ("Received executor event with state", f"dag_id='{dag_id}'", f"run_id='{run_id}'")
    return sum(1 for line in text.splitlines() if all(m in line for m in marks))


def trigger_starts(home: Path, dag_id: str) -> dict[str, float]:
    """task_id -> epoch seconds the triggerer logged "trigger ... starting"."""
    found: dict[str, float] = {}
    for path in (home / "logs").rglob("*.trigger.*.log"):
        if f"dag_id={dag_id}" not in str(path):
            continue
        task = re.search(r"task_id=([^/]+)", str(path))
        for line in path.read_text(errors="replace").splitlines():
            with contextlib.suppress(ValueError, KeyError):
                record = json.loads(line)
                if str(record.get("event", "")).startswith("trigger ") and "starting" in str(
                    record["event"]
                ):
                    if task:
                        found.setdefault(task.group(1), when(record["timestamp"]))
                    break
    return found


def read_log(log: Path) -> list[dict[str, Any]]:
    """The simulator's request log, less the bench's own reads."""
    records = [json.loads(line) for line in log.read_text().splitlines() if line.strip()]
    return [r for r in records if r.get("access_key_id") != READER_KEY]


def requests_by_run(records: list[dict[str, Any]]) -> dict[str, list[dict[str, Any]]]:
    runs: dict[str, list[dict[str, Any]]] = {}
    for record in records:
        if record.get("operation") == "GetJobRun":
            runs.setdefault(record["path"].rstrip("/").rsplit("/", 1)[-1], []).append(record)
    return runs


def call_counts(records: list[dict[str, Any]]) -> dict[str, Any]:
    """Calls by operation and in all, the throttled ones (429 ThrottlingException), calls/s."""
    times = [when(r["time"]) for r in records]
    throttled = sum(1 for r in records if r.get("answer") == "ThrottlingException")
    span = max(times) - min(times) if len(times) > 1 else 0.0
    return {
        "get_job_run_calls": sum(1 for r in records if r.get("operation") == "GetJobRun"),
        "list_job_runs_calls": sum(1 for r in records if r.get("operation") == "ListJobRuns"),
        "calls": len(records),
        "throttled_calls": throttled,
        "throttled_share": throttled / len(records) if records else 0.0,
        "calls_per_s": len(records) / span if span else None,
    }


def latencies(
    d: Deployment, result: dict[str, Any], log: Path | None, ends: dict[str, float]
) -> None:
    """Fill in calls, throttling, trigger-start-to-first-poll and the end-of-run lags.

    ``ends`` is each run's endTime as the simulator reports it; a run missing
    there falls back to ``result["run_end"]`` (the phase's start plus the run's
    length, a little early) and is counted in ``ends_estimated``.
    """
    if log is None:
        # The control: each TimeDeltaSensor's moment is the DAG run's run_after plus the delta.
        end = result["run_after"] + d.args.run_s
        result["end_to_success_s"] = [
            when(e) - end for s, e in result["ends"].values() if s == "success" and e
        ]
        return
    records = read_log(log)
    result.update(call_counts(records))
    calls = requests_by_run(records)
    keys = {r["access_key_id"] for r in records}
    result["access_keys_seen"] = sorted(k for k in keys if k)
    ended, seen, last = [], [], []
    estimated = before_end = 0
    for task_id, (state, end_date) in result["ends"].items():
        run_id = f"{result['dag_id']}-{task_id[1:]}"
        if run_id not in ends:
            estimated += 1
        end = ends.get(run_id, result["run_end"])
        run_calls = [when(r["time"]) for r in calls.get(run_id, [])]
        done = [when(r["time"]) for r in calls.get(run_id, []) if r.get("answer") == "SUCCESS"]
        if state == "success" and end_date:
            # The first SUCCESS answer is when poller could first see the end;
            # the run's last GetJobRun is when its waiter stopped calling (it
            # comes before the end when the end was seen in a listing).
            ended.append(when(end_date) - end)
            if done:
                seen.append(done[0] - end)
            if run_calls:
                last.append(max(run_calls) - end)
                before_end += max(run_calls) < end
    result["end_to_seen_s"] = seen
    result["end_to_last_get_s"] = last
    result["end_to_success_s"] = ended
    result["last_get_before_end"] = before_end
    result["ends_estimated"] = estimated
    if result["phase"] in DEFERRED_PHASES:
        starts = trigger_starts(d.home, result["dag_id"])
        firsts = []
        for task_id, start in starts.items():
            run_calls = [
                when(r["time"]) for r in calls.get(f"{result['dag_id']}-{task_id[1:]}", [])
            ]
            # A deferrable sensor makes no call before its trigger starts; a
            # call before the start would be a retried try's trigger.
            after = [t for t in run_calls if t >= start]
            if after:
                firsts.append(min(after) - start)
        result["start_to_first_poll_s"] = firsts


def blocked_warnings(path: Path) -> list[str]:
    """The triggerer's "async thread was blocked for N seconds" lines."""
    text = path.read_text(errors="replace") if path.exists() else ""
    return [ln for ln in text.splitlines() if "async thread was blocked" in ln]


def fmt(xs: list[float], *, worst: bool = False) -> str:
    """p50 / p95 (and the max) of ``xs``, or "-"."""
    if not xs:
        return "-"
    out = f"{pct(xs, 50):.2f} / {pct(xs, 95):.2f}"
    return f"{out} / {max(xs):.2f}" if worst else out


def budget(args: argparse.Namespace) -> str:
    """The triggerer's budget, as the bench set it."""
    if args.poller_max_rps is None:
        return f"[poller] max_rps unset ({BUDGET_ENV} not set): poller's default"
    return f"[poller] max_rps = {args.poller_max_rps:g} calls/s ({BUDGET_ENV})"


def target(
    results: list[dict[str, Any]], args: argparse.Namespace, phase: str = "deferrable"
) -> dict[str, Any] | None:
    """Issues 15 and 26's target on a phase: 0 failed tasks, at most 2 % of calls throttled.

    ``met`` is None (not measured) unless the run is at least the target's
    size against at most its limit: fewer sensors or no limit prove nothing
    (the small phases are judged on their own size).
    """
    r = next((r for r in results if r["phase"] == phase), None)
    if r is None or "calls" not in r:
        return None
    ok = r["failed_tasks"] == 0 and r["throttled_share"] <= MAX_THROTTLED_SHARE
    big = args.n >= TARGET_N or PHASES[phase][2] == "small"
    measured = big and 0 < args.max_rps <= TARGET_RPS
    return {
        "phase": phase,
        "failed_tasks": r["failed_tasks"],
        "throttled_share": r["throttled_share"],
        "met": ok if measured else None,
    }


def report(results: list[dict[str, Any]], args: argparse.Namespace) -> None:
    control = next((r for r in results if r["phase"] == "control"), None)
    limit = f"{args.max_rps:g} calls/s" if args.max_rps > 0 else "none"
    print(
        f"\nAirflow {airflow_version()}, N={args.n}, small={args.small}, "
        f"runs of {args.run_s:.0f} s (small: {args.small_run_s:.0f} s), "
        f"poke_interval {POKE_INTERVAL} s, parallelism {args.parallelism}, "
        f"server limit {limit}"
    )
    print(f"triggerer budget: {budget(args)}")
    print(
        "\n| phase | tasks | states | failed tasks | max deferred at once "
        "| triggerer peak RSS (MB) | vs control | start→first poll p50/p95 (s) "
        "| 'blocked' warnings (longest s) |"
    )
    print("|---|---:|---|---:|---:|---:|---:|---:|---:|")
    for r in results:
        ratio = (
            f"{r['rss_peak_mb'] / control['rss_peak_mb']:.2f}x"
            if control and control["rss_peak_mb"]
            else "-"
        )
        states = ", ".join(f"{k} {v}" for k, v in sorted(r["states"].items()))
        print(
            f"| {r['phase']} | {r['count']} | {states} | {r['failed_tasks']} | {r['max_deferred']} "
            f"| {r['rss_peak_mb']:.0f} | {ratio} | {fmt(r.get('start_to_first_poll_s') or [])} "
            f"| {len(r['blocked'])}{longest(r['blocked'])} |"
        )
    print(
        "\n| phase | GetJobRun | ListJobRuns | calls | calls/s | throttled (share) "
        "| run end→first SUCCESS p50/p95 (s) | run end→last GetJobRun p50/p95/max (s) "
        "| run end→task success p50/p95/max (s) |"
    )
    print("|---|---:|---:|---:|---:|---:|---:|---:|---:|")
    for r in results:
        if "calls" in r:
            rate = f"{r['calls_per_s']:.2f}" if r["calls_per_s"] else "-"
            calls = (
                f"{r['get_job_run_calls']} | {r['list_job_runs_calls']} | {r['calls']} | {rate} "
                f"| {r['throttled_calls']} ({r['throttled_share']:.1%})"
            )
        else:
            calls = "- | - | - | - | -"
        print(
            f"| {r['phase']} | {calls} | {fmt(r.get('end_to_seen_s') or [])} "
            f"| {fmt(r.get('end_to_last_get_s') or [], worst=True)} "
            f"| {fmt(r.get('end_to_success_s') or [], worst=True)} |"
        )
    print(
        "\n| phase | triggerers (max_rps each) | worker task runs (per sensor) "
        "| scheduler CPU (s) | workers CPU (s) | triggerer CPU (s) |"
    )
    print("|---|---:|---:|---:|---:|---:|")
    for r in results:
        each = f"{r['triggerer_max_rps']:g}" if r["triggerer_max_rps"] is not None else "unset"
        print(
            f"| {r['phase']} | {r['triggerers']} ({each}) "
            f"| {r['worker_runs']} ({r['worker_runs'] / r['count']:.2f}) "
            f"| {r['scheduler_cpu_s']:.1f} | {r['workers_cpu_s']:.1f} "
            f"| {r['triggerer_cpu_s']:.1f} |"
        )
    keys = sorted({k for r in results for k in r.get("access_keys_seen", [])})
    print(f"\naccess key IDs the simulator saw: {keys}")
    print(
        "run end: each run's endTime read back from the simulator (control: each "
        "TimeDeltaSensor's target moment, run_after + delta); 'first SUCCESS' is the "
        "simulator's first SUCCESS answer for the run, 'last GetJobRun' its waiter's last call"
    )
    for r in results:
        if r.get("last_get_before_end"):
            print(
                f"{r['phase']}: {r['last_get_before_end']} runs' last GetJobRun came before the end"
            )
        if r.get("ends_estimated"):
            print(
                f"{r['phase']}: {r['ends_estimated']} runs' endTime unread: the estimate was used"
            )
    met = {True: "met", False: "NOT met", None: "not measured (a smaller run)"}
    for r in results:
        verdict = target(results, args, r["phase"])
        if verdict is not None:
            print(
                f"target, {r['phase']} (against {TARGET_RPS:g} calls/s: 0 failed tasks, at most "
                f"{MAX_THROTTLED_SHARE:.0%} of calls throttled): {met[verdict['met']]}; "
                f"here {verdict['failed_tasks']} failed, {verdict['throttled_share']:.1%} throttled"
            )


def longest(lines: list[str]) -> str:
    seconds = [float(m.group(1)) for ln in lines if (m := re.search(r"blocked for ([0-9.]+)", ln))]
    return f" ({max(seconds):.2f})" if seconds else ""


def airflow_version() -> str:
    from importlib.metadata import version

    return version("apache-airflow")


def arguments(argv: list[str] | None = None) -> argparse.Namespace:
    """The bench's settings from ``argv`` (default: the command line), checked."""
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--n", type=int, default=200, help="deferred sensors (and controls)")
    parser.add_argument("--small", type=int, default=10, help="sensors in poke/reschedule mode")
    parser.add_argument("--run-s", type=float, default=300, help="how long each run runs")
    parser.add_argument("--small-run-s", type=float, default=60, help="the same, poke/reschedule")
    parser.add_argument(
        "--max-rps",
        type=float,
        default=5,
        help="the simulator's server-wide limit, calls/s, in every phase it serves; 0: none",
    )
    parser.add_argument(
        "--poller-max-rps",
        type=float,
        default=None,
        help=f"the triggerer's budget, [poller] max_rps ({BUDGET_ENV}); default: unset",
    )
    parser.add_argument("--parallelism", type=int, default=16, help="[core] parallelism")
    parser.add_argument("--phase-timeout", type=float, default=900)
    parser.add_argument("--keep", action="store_true", help="keep AIRFLOW_HOME (path printed)")
    parser.add_argument("--json", type=Path, help="also write the figures here")
    parser.add_argument(
        "--phases",
        default=",".join(PHASES),
        help=f"the phases to run, in this order (default: all: {','.join(PHASES)})",
    )
    args = parser.parse_args(argv)
    phases = [p.strip() for p in args.phases.split(",") if p.strip()]
    if not phases or set(phases) - set(PHASES):
        parser.error(f"--phases: choose from {', '.join(PHASES)}")
    if args.max_rps < 0:
        parser.error("--max-rps must be 0 (no limit) or more")
    if args.poller_max_rps is not None and args.poller_max_rps <= 0:
        parser.error("--poller-max-rps must be more than 0")
    return args


def main() -> int:
    args = arguments()
    phases = [p.strip() for p in args.phases.split(",") if p.strip()]
    home = Path(tempfile.mkdtemp(prefix="poller-bench-airflow-"))
    d = Deployment(home, args)
    # SIGTERM (make interrupted, CI stopping) runs the same clean-up as Ctrl-C.
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(143))
    try:
        print(f"AIRFLOW_HOME={home}", file=sys.stderr)
        d.boot(
            DAGS.format(
                n=args.n, small=args.small, run_s=args.run_s, poke=POKE_INTERVAL, domain=DOMAIN
            ),
            {dag_id for dag_id, _, _ in PHASES.values()},
        )
        results = []
        for phase in phases:
            dag_id, triggerers, size = PHASES[phase]
            count, run_s = (args.n, args.run_s) if size == "n" else (args.small, args.small_run_s)
            print(f"phase {phase} ...", file=sys.stderr)
            if phase == "control":
                control = run_phase(d, "control", dag_id, count, args.phase_timeout)
                latencies(d, control, None, {})
                results.append(control)
                continue
            # The simulator's runs start when it loads the scenario: not before this.
            run_end = time.time() + run_s
            log = d.start_simulator(phase, dag_id, count, run_s)
            result = run_phase(d, phase, dag_id, count, args.phase_timeout, triggerers)
            try:
                ends = d.run_ends(dag_id)
            except Exception as error:  # botocore's: report on the estimate rather than nothing
                print(f"{phase}: endTime not read back ({error})", file=sys.stderr)
                ends = {}
            d.stop("simulator")
            result["run_end"] = run_end
            latencies(d, result, log, ends)
            results.append(result)
        # A task's end reaches the database before its worker's executor
        # event reaches the scheduler's log: count once the last has landed.
        time.sleep(15)
        for r in results:
            r["worker_runs"] = worker_runs(d.home / "scheduler.out", r["dag_id"], r["run_id"])
        report(results, args)
        if args.json:
            for r in results:
                r.pop("ends", None)
            settings = {
                key: getattr(args, key)
                for key in ("n", "small", "run_s", "small_run_s", "parallelism")
            }
            settings.update(
                airflow=airflow_version(),
                poke_interval_s=POKE_INTERVAL,
                server_max_rps=args.max_rps or None,
                poller_max_rps=args.poller_max_rps,
                triggerer_budget=budget(args),
            )
            targets = [target(results, args, r["phase"]) for r in results]
            document = {
                "settings": settings,
                "targets": [t for t in targets if t is not None],
                "results": results,
            }
            args.json.write_text(json.dumps(document, indent=1))
        return 0
    finally:
        d.close()
        if args.keep:
            print(f"kept {home}", file=sys.stderr)
        else:
            shutil.rmtree(home, ignore_errors=True)


if __name__ == "__main__":
    sys.exit(main())
