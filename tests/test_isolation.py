"""What others do to a process's waits: a hung endpoint, a loop closed under a wait, a denied
listing. Each runs on the process's engine, in real time, against real servers."""

from __future__ import annotations

import asyncio
import json
import logging
import subprocess
import sys
import threading
import time
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import botocore.session
import pytest
import structlog
from botocore.credentials import DeferredRefreshableCredentials
from helpers import DOMAIN, child_env, keep
from structlog.testing import capture_logs

from poller import AccessDeniedError, Outcome, PollPolicy, _runtime, wait_for_job_runs
from poller._latest import latest_result
from poller._limiter import account_key
from poller._waiter import wait_result
from poller.aio import async_wait_result, watch_job_runs
from poller.testing import Fault, RunScript, SilentServer, Simulator


def test_a_hung_endpoint_of_one_account_takes_no_capacity_from_another() -> None:
    """Ten waits stuck on an endpoint that never answers leave a healthy account's wait
    free to read its finished run at once (the call pool was shared by every account, and
    the healthy wait failed after 8.8 s with no call at its server)."""
    policy = PollPolicy(timeout=6, interval=0.5, history=False)
    with SilentServer() as silent, Simulator() as sim:
        sim.add_run(DOMAIN, "done", RunScript(statuses=["SUCCESS"]))
        hung = keep(silent.client(read_timeout=30))
        stuck = [
            threading.Thread(
                target=wait_result,
                args=(DOMAIN, f"run-{i}"),
                kwargs={"client": hung, "policy": policy},
            )
            for i in range(10)
        ]
        for thread in stuck:
            thread.start()
        deadline = time.monotonic() + 5
        while len(silent.requests) < 8 and time.monotonic() < deadline:
            time.sleep(0.02)
        assert len(silent.requests) >= 8  # the calls are out, and hang
        started = time.monotonic()
        result = wait_result(DOMAIN, "done", client=keep(sim.client()), policy=policy)
        took = time.monotonic() - started
        for thread in stuck:
            thread.join()
    assert result.outcome is Outcome.SUCCEEDED
    assert took < 2.0


def test_an_async_wait_stops_when_its_callers_loop_is_closed_under_it() -> None:
    """A wait with no deadline, left pending on a loop its thread then closes, makes no more
    calls (the engine kept calling GetJobRun for it until the process ended)."""
    with Simulator() as sim:
        sim.add_run(DOMAIN, "forever", RunScript(timeline=[(0.0, "IN_PROGRESS")]))
        client = keep(sim.client())
        policy = PollPolicy(timeout=None, interval=0.1, max_interval=0.1, history=False)
        loop = asyncio.new_event_loop()
        task = loop.create_task(async_wait_result(DOMAIN, "forever", client=client, policy=policy))
        loop.run_until_complete(asyncio.sleep(0.5))
        assert sim.calls("forever") >= 2  # it was polling
        loop.close()  # the task is left pending: nobody cancels it
        time.sleep(0.5)  # the engine notices within CANCEL_POLL
        before = sim.calls("forever")
        time.sleep(1.5)
        after = sim.calls("forever")
        del task
    assert after == before


def test_a_denied_listing_does_not_keep_the_jobs_later_waits_from_their_listing() -> None:
    """The first listing of job-x is denied; a later fleet of job-x's runs is listed again
    (the stopped listing stayed in the engine for the life of the process)."""
    policy = PollPolicy(timeout=20, interval=0.2, max_interval=0.5, retry_initial=0.1)
    with Simulator() as sim:
        for i in range(6):  # the second three still going when the first three have ended
            end = 1.0 + 0.1 * i if i < 3 else 5.0 + 0.1 * i
            timeline = [(0.0, "IN_PROGRESS"), (end, "SUCCESS")]
            sim.add_run(DOMAIN, f"run-{i}", RunScript(timeline=timeline), job_id="job-x")
        sim.fail_list_job_runs(DOMAIN, "job-x", Fault.error("AccessDeniedException", 403))
        client = keep(sim.client())
        first = wait_for_job_runs(
            [(DOMAIN, f"run-{i}") for i in range(3)], client=client, policy=policy
        )
        listed_first = sum(1 for r in sim.requests if r.operation == "ListJobRuns")
        second = wait_for_job_runs(
            [(DOMAIN, f"run-{i}") for i in range(3, 6)], client=client, policy=policy
        )
        listed_second = sum(1 for r in sim.requests if r.operation == "ListJobRuns") - listed_first
    outcomes: list[Any] = [r.outcome for r in (*first, *second)]
    assert outcomes == [Outcome.SUCCEEDED] * 6
    assert listed_first >= 1
    assert listed_second >= 1


@pytest.fixture
def built(monkeypatch: pytest.MonkeyPatch) -> list[object]:
    """Every client poller builds from now on, in order."""
    clients: list[object] = []
    real_build = _runtime.build_client

    def counting(**kwargs: Any) -> Any:
        client = real_build(**kwargs)
        clients.append(client)
        return client

    monkeypatch.setattr(_runtime, "build_client", counting)
    return clients


def test_forty_threads_starting_together_build_one_client_for_their_account(
    monkeypatch: pytest.MonkeyPatch, built: list[object]
) -> None:
    """Forty blocking waits with no client, started at once, share one client built once
    (each built its own: 0.6 to 1 s of start-up apiece)."""
    with Simulator() as sim:
        for i in range(40):
            sim.add_run(DOMAIN, f"run-{i}", RunScript(statuses=["SUCCESS"]))
        for name, value in sim.environ().items():
            monkeypatch.setenv(name, value)
        start = threading.Barrier(40)
        results: list[Any] = []

        def one(i: int) -> None:
            start.wait()
            results.append(wait_result(DOMAIN, f"run-{i}", policy=PollPolicy(timeout=20)))

        threads = [threading.Thread(target=one, args=(i,)) for i in range(40)]
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join()
    assert [r.outcome for r in results] == [Outcome.SUCCEEDED] * 40
    assert len(built) == 1


def test_an_async_wait_builds_its_client_off_the_callers_loop(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """The async wait with no client builds it in a thread: the caller's loop is never held
    for the 0.6 to 1 s a boto3 client takes."""
    on: list[bool] = []
    real_build = _runtime.build_client

    def noting(**kwargs: Any) -> Any:
        try:
            asyncio.get_running_loop()
        except RuntimeError:
            on.append(False)
        else:
            on.append(True)
        return real_build(**kwargs)

    monkeypatch.setattr(_runtime, "build_client", noting)
    with Simulator() as sim:
        sim.add_run(DOMAIN, "run-1", RunScript(statuses=["SUCCESS"]))
        for name, value in sim.environ().items():
            monkeypatch.setenv(name, value)
        result = asyncio.run(async_wait_result(DOMAIN, "run-1", policy=PollPolicy(timeout=20)))
    assert result.outcome is Outcome.SUCCEEDED
    assert on == [False]


def test_poller_wait_rides_out_a_storm_and_every_run_succeeds(tmp_path: Path) -> None:
    """`poller wait --from-file` on 30 runs, every call throttled for the first 3.2 s, 20 s
    timeout: exit 0, 30 succeeded (22 `error` and 3 `wait_timeout` before, exit 5)."""
    runs = tmp_path / "runs.txt"
    runs.write_text("".join(f"run-{i}\n" for i in range(30)))
    with Simulator() as sim:
        for i in range(30):
            timeline = [(0.0, "IN_PROGRESS"), (1.0 + i / 10, "SUCCESS")]
            sim.add_run(DOMAIN, f"run-{i}", RunScript(timeline=timeline))
        now = time.monotonic()
        sim.storm(now, now + 3.2)
        done = subprocess.run(
            [sys.executable, "-m", "poller", "wait", "--domain-identifier", DOMAIN,
             "--from-file", str(runs), "--timeout", "20s", "--output", "json"],
            env=child_env(sim.endpoint_url, POLLER_WAIT_INTERVAL="2s",
                          POLLER_WAIT_MAX_INTERVAL="30s", POLLER_RETRY_INITIAL="1s",
                          POLLER_RETRY_MAX="20s"),
            capture_output=True, text=True, timeout=60, check=False,
        )  # fmt: skip
        stormed = sum(1 for r in sim.requests if r.fault == "storm")
    outcomes = [json.loads(line)["outcome"] for line in done.stdout.splitlines()]
    assert stormed > 0
    assert (done.returncode, outcomes) == (0, ["succeeded"] * 30), done.stderr[-2000:]


def test_the_latest_run_search_shares_the_process_client_as_every_wait_does(
    monkeypatch: pytest.MonkeyPatch, built: list[object]
) -> None:
    """Two `--latest` searches with no client and a wait build one client between them
    (the blocking search built its own on every call, where the wait and the async search
    share the process's)."""
    with Simulator() as sim:
        sim.add_run(DOMAIN, "run-1", RunScript(statuses=["SUCCESS"]), job_id="job-1")
        for name, value in sim.environ().items():
            monkeypatch.setenv(name, value)
        policy = PollPolicy(timeout=20)
        found = [latest_result(DOMAIN, "job-1", policy=policy) for _ in range(2)]
        waited = wait_result(DOMAIN, "run-1", policy=policy)
    assert [r.job_run_id for r in (*found, waited)] == ["run-1"] * 3
    assert len(built) == 1


def test_hung_watchers_of_one_account_take_no_capacity_from_another_accounts_watcher() -> None:
    """Eight job watchers whose listings hang on one endpoint leave a watcher of another
    account free to announce its finished run at once (their calls shared one pool with every
    account's, so it waited for the hung listings' read timeout)."""

    async def first(stream: Any) -> Any:
        try:
            return await anext(stream)
        finally:
            await stream.aclose()

    async def main(silent: SilentServer, sim: Simulator) -> tuple[Any, float]:
        hung = keep(silent.client(read_timeout=30))
        stuck = [
            asyncio.ensure_future(first(watch_job_runs(DOMAIN, f"job-{i}", client=hung)))
            for i in range(_runtime.CALL_WORKERS)
        ]
        deadline = time.monotonic() + 5
        while len(silent.requests) < _runtime.CALL_WORKERS and time.monotonic() < deadline:
            await asyncio.sleep(0.02)
        assert len(silent.requests) >= _runtime.CALL_WORKERS  # the listings are out, and hang
        started = time.monotonic()
        healthy = watch_job_runs(DOMAIN, "job-ok", since=time.time() - 3600, client=sim.client())
        try:
            result = await asyncio.wait_for(first(healthy), 10)
        finally:
            for task in stuck:
                task.cancel()
            await asyncio.gather(*stuck, return_exceptions=True)
        return result, time.monotonic() - started

    with SilentServer() as silent, Simulator() as sim:
        sim.add_run(DOMAIN, "done", RunScript(statuses=["SUCCESS"]), job_id="job-ok")
        result, took = asyncio.run(main(silent, sim))
    assert (result.job_run_id, result.outcome) == ("done", Outcome.SUCCEEDED)
    assert took < 2.0


def test_credentials_loading_slowly_for_one_account_hold_up_no_other_accounts_wait() -> None:
    """An assumed role's credentials load on first use (a call to STS): that happens in the
    call's worker, and a wait on another account reads its finished run at once (they loaded
    on the engine's own thread, every wait of the process stalled behind the load)."""
    loaded_in: list[str] = []

    def fetch() -> dict[str, str]:
        loaded_in.append(threading.current_thread().name)
        time.sleep(2)  # STS, slow today
        expiry = datetime.now(UTC) + timedelta(hours=1)
        return {
            "access_key": "ASIASLOW",
            "secret_key": "s",
            "token": "t",
            "expiry_time": expiry.isoformat(),
        }

    policy = PollPolicy(timeout=10, interval=0.5, history=False)
    with Simulator() as slow_sim, Simulator() as sim:
        slow_sim.add_run(DOMAIN, "slow", RunScript(statuses=["SUCCESS"]))
        sim.add_run(DOMAIN, "done", RunScript(statuses=["SUCCESS"]))
        session = botocore.session.get_session()
        session._credentials = DeferredRefreshableCredentials(fetch, "assume-role")
        slow = keep(
            session.create_client(
                "datazone", endpoint_url=slow_sim.endpoint_url, region_name="us-east-1"
            )
        )
        key = account_key(slow)
        assert not loaded_in  # naming its account loads nothing
        waiting = threading.Thread(
            target=wait_result, args=(DOMAIN, "slow"), kwargs={"client": slow, "policy": policy}
        )
        waiting.start()
        deadline = time.monotonic() + 5
        while not loaded_in and time.monotonic() < deadline:
            time.sleep(0.01)
        started = time.monotonic()
        result = wait_result(DOMAIN, "done", client=keep(sim.client()), policy=policy)
        took = time.monotonic() - started
        waiting.join()
    assert result.outcome is Outcome.SUCCEEDED
    assert took < 1.0
    assert loaded_in
    assert not loaded_in[0].startswith("poller-engine")
    assert account_key(slow) == key  # loaded, the client keeps its account


def test_a_denied_listing_shared_by_a_watcher_and_waits_ends_the_watcher_and_frees_the_waits() -> (
    None
):
    """Three waits and a watcher of job-x ride one listing; when it is denied, the watcher
    ends with AccessDeniedError and the waits finish on their own calls, after one denial."""
    policy = PollPolicy(timeout=20, interval=0.2, max_interval=0.5, retry_initial=0.1)
    with Simulator() as sim:
        for i in range(3):
            timeline = [(0.0, "IN_PROGRESS"), (3.0 + 0.1 * i, "SUCCESS")]
            sim.add_run(DOMAIN, f"run-{i}", RunScript(timeline=timeline), job_id="job-x")
        client = keep(sim.client())

        async def main() -> tuple[BaseException | None, list[Any]]:
            waits = asyncio.gather(
                *(
                    async_wait_result(DOMAIN, f"run-{i}", client=client, policy=policy)
                    for i in range(3)
                )
            )
            await asyncio.sleep(0.5)  # their listing is under way
            stream = watch_job_runs(
                DOMAIN, "job-x", client=client, interval=0.3, policy=policy, logger=debug
            )
            first = asyncio.ensure_future(anext(stream))
            while not any(e["event"] == "watch_listed" for e in events):
                await asyncio.sleep(0.01)  # until the watcher has had a look: it follows
            sim.fail_list_job_runs(DOMAIN, "job-x", Fault.error("AccessDeniedException", 403))
            try:
                await asyncio.wait_for(first, 10)
            except Exception as exc:
                ended: BaseException | None = exc
            else:
                ended = None
            return ended, list(await waits)

        with capture_logs() as events:
            debug = structlog.wrap_logger(  # the watcher's debug events too
                None, wrapper_class=structlog.make_filtering_bound_logger(logging.DEBUG)
            )
            ended, results = asyncio.run(main())
        denied = [r for r in sim.requests if r.status_code == 403]
    assert isinstance(ended, AccessDeniedError)
    # The waits heard of it too: theirs was the same listing.
    assert [e["job_id"] for e in events if e["event"] == "job_listing_stopped"] == ["job-x"]
    assert "ListJobRuns" in str(ended)
    assert [r.outcome for r in results] == [Outcome.SUCCEEDED] * 3
    assert len(denied) == 1
