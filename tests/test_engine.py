"""One engine per process: every wait, whatever its front door, books on its account's budget."""

from __future__ import annotations

import asyncio
import contextlib
import contextvars
import json
import logging
import os
import threading
import time
from collections import Counter
from typing import Any

import pytest
import structlog

# Sets AIRFLOW_HOME and the database before anything imports Airflow.
from _airflow_home import HOME as _HOME  # noqa: F401  (imported for its side effect)
from helpers import DOMAIN, QUIET, keep
from structlog.testing import capture_logs

from poller import JobRun, JobRunStatus, Outcome, PollPolicy, WaitResult, wait_for_job_runs
from poller._engine import _ENGINE, FinishedRuns, Fleet, Follower, Pages, engine
from poller._limiter import RateLimiter, budget_for
from poller._waiter import wait_result
from poller.aio import async_wait_result, watch_job_runs
from poller.airflow import DataZoneJobRunTrigger
from poller.airflow.trigger import policy_kwargs
from poller.testing import RunScript, Seams, Simulator, reset

# Quick real-time waits: what is tested is who books the calls, not the cadence.
QUICK = PollPolicy(
    timeout=20, interval=0.05, max_interval=0.1, retry_initial=0.05, retry_max=0.2, history=False
)


def trigger_result(trigger: DataZoneJobRunTrigger) -> dict[str, Any]:
    async def first() -> dict[str, Any]:
        async for event in trigger.run():
            payload: dict[str, Any] = event.payload
            return payload
        raise AssertionError("no event")

    return asyncio.run(first())


def test_threads_async_waits_and_triggers_share_one_budget_per_account(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """Six threads, six async waits and six triggers at once, each polling every 50 ms:
    one 3 calls/s budget for the account, so a server that allows 5/s throttles none.

    (At 5/s and at 4/s the full suite met one throttle now and then on a loaded
    machine, never alone: calls whose booked times passed while the engine's
    loop was held up go out together; the server's bucket takes a burst of 5.)"""
    with Simulator(max_rps=5) as sim:
        monkeypatch.setenv("AWS_ENDPOINT_URL_DATAZONE", sim.endpoint_url)
        for i in range(18):
            timeline = [(0.0, "IN_PROGRESS"), (2.0, "SUCCESS")]
            sim.add_run(DOMAIN, f"run-{i}", RunScript(timeline=timeline), job_id=f"job-{i}")
        client = keep(sim.client())
        budget_for(client, 3)
        results: dict[str, str] = {}

        def blocking(i: int) -> None:
            result = wait_result(DOMAIN, f"run-{i}", client=client, policy=QUICK)
            results[f"run-{i}"] = str(result.outcome)

        def asynchronous() -> None:
            async def all_of_them() -> list[WaitResult]:
                return await asyncio.gather(
                    *(
                        async_wait_result(DOMAIN, f"run-{i}", client=client, policy=QUICK)
                        for i in range(6, 12)
                    )
                )

            for result in asyncio.run(all_of_them()):
                results[result.job_run_id] = str(result.outcome)

        def triggers() -> None:
            async def all_of_them() -> None:
                made = [
                    DataZoneJobRunTrigger(
                        DOMAIN, f"run-{i}", deadline=time.time() + 20, policy=policy_kwargs(QUICK)
                    )
                    for i in range(12, 18)
                ]

                async def one(trigger: DataZoneJobRunTrigger) -> None:
                    async for event in trigger.run():
                        results[trigger.job_run_id] = event.payload["result"]["outcome"]

                await asyncio.gather(*(one(t) for t in made))

            asyncio.run(all_of_them())

        workers = [threading.Thread(target=blocking, args=(i,)) for i in range(6)]
        workers += [threading.Thread(target=asynchronous), threading.Thread(target=triggers)]
        for worker in workers:
            worker.start()
        for worker in workers:
            worker.join(timeout=60)
        requests = sim.requests
    assert results == {f"run-{i}": "succeeded" for i in range(18)}
    # Alone, each would have polled every 50 ms: hundreds of calls a second.
    assert Counter(r.status_code for r in requests)[429] == 0
    assert len(requests) < 5 * (max(r.t for r in requests) - min(r.t for r in requests) + 1)


def test_waits_join_and_leave_a_busy_engine_each_with_its_own_policy_and_deadline() -> None:
    """A fan-out is under way; a short wait, a cancelled one and a slow-cadence one come and go."""
    with Simulator() as sim:
        for i in range(10):
            sim.add_run(
                DOMAIN, f"long-{i}", RunScript(timeline=[(0.0, "IN_PROGRESS"), (3.0, "SUCCESS")])
            )
        sim.add_run(DOMAIN, "never", RunScript(statuses=["IN_PROGRESS"]))
        sim.add_run(DOMAIN, "cancelled", RunScript(statuses=["IN_PROGRESS"]))
        sim.add_run(DOMAIN, "slow", RunScript(timeline=[(0.0, "IN_PROGRESS"), (1.0, "SUCCESS")]))
        client = keep(sim.client())
        fan_out: list[WaitResult] = []
        busy = threading.Thread(
            target=lambda: fan_out.extend(
                wait_for_job_runs(
                    [(DOMAIN, f"long-{i}") for i in range(10)], client=client, policy=QUICK
                )
            )
        )
        busy.start()
        time.sleep(0.3)
        shorts: list[WaitResult] = []
        policy = PollPolicy(timeout=2.0, interval=0.05, history=False)
        short_wait = threading.Thread(
            target=lambda: shorts.append(wait_result(DOMAIN, "never", client=client, policy=policy))
        )
        short_wait.start()
        cancel = threading.Event()
        started = time.monotonic()
        threading.Timer(0.5, cancel.set).start()
        stopped = wait_result(DOMAIN, "cancelled", client=client, policy=QUICK, cancel=cancel)
        took = time.monotonic() - started - 0.5  # from the cancel to the result
        short_wait.join(timeout=10)
        (short,) = shorts
        slow = wait_result(
            DOMAIN, "slow", client=client, policy=PollPolicy(interval=0.7, history=False)
        )
        busy.join(timeout=30)
        calls = sim.calls("slow")
    # Its calls queued behind the fan-out's on the one budget; it saw the run going.
    assert short.outcome is Outcome.WAIT_TIMEOUT
    assert 2.0 <= short.waited_s < 3.0
    assert stopped.outcome is Outcome.INTERRUPTED
    assert took < 1.0
    assert slow.outcome is Outcome.SUCCEEDED
    assert calls <= 3  # its own 0.7 s cadence, not the fan-out's 50 ms
    assert [r.outcome for r in fan_out] == [Outcome.SUCCEEDED] * 10


def test_an_async_waits_callbacks_run_on_its_loop_and_its_events_see_its_context() -> None:
    """on_change runs on the caller's loop thread; the wait's log events see its contextvars."""
    request = contextvars.ContextVar("request", default="none")
    seen: list[tuple[str, Any]] = []

    class Recorder:
        def info(self, event: str, **fields: Any) -> None:
            seen.append((event, request.get()))

        warning = debug = info

    changes: list[threading.Thread] = []
    with Simulator() as sim:
        sim.add_run(DOMAIN, "run-1", RunScript(statuses=["IN_PROGRESS", "SUCCESS"]))
        client = keep(sim.client())

        async def scenario() -> WaitResult:
            request.set("req-42")
            return await async_wait_result(
                DOMAIN,
                "run-1",
                client=client,
                policy=QUICK,
                on_change=lambda run: changes.append(threading.current_thread()),
                seams=Seams(logger=Recorder()),
            )

        caller = threading.current_thread()
        result = asyncio.run(scenario())
    assert result.outcome is Outcome.SUCCEEDED
    assert changes == [caller, caller]
    assert engine().thread is not None
    assert engine().thread is not caller
    assert ("status_changed", "req-42") in seen
    assert {value for _, value in seen} == {"req-42"}


@pytest.mark.skipif(not hasattr(os, "fork"), reason="os.fork is POSIX only")
def test_a_forked_child_starts_with_a_fresh_engine_and_waits_fine() -> None:
    """The parent's engine is running; the forked child has none, builds its own and waits."""
    with Simulator() as sim:
        sim.add_run(DOMAIN, "parent", RunScript(statuses=["SUCCESS"]))
        sim.add_run(DOMAIN, "child", RunScript(statuses=["IN_PROGRESS", "SUCCESS"]))
        client = keep(sim.client())
        assert (
            wait_result(DOMAIN, "parent", client=client, policy=QUICK).outcome is Outcome.SUCCEEDED
        )
        assert engine().thread is not None
        assert engine().thread.is_alive()
        read, write = os.pipe()
        pid = os.fork()
        if pid == 0:  # the child: report and leave without running the parent's teardown
            code = 1
            try:
                inherited = _ENGINE.peek()
                result = wait_result(
                    DOMAIN, "child", client=sim.client(), policy=QUICK, seams=Seams(logger=QUIET)
                )
                os.write(write, json.dumps([inherited is None, str(result.outcome)]).encode())
                code = 0
            finally:
                os._exit(code)
        os.close(write)
        _, status = os.waitpid(pid, 0)
        with os.fdopen(read) as pipe:
            report = json.loads(pipe.read() or "null")
    assert os.waitstatus_to_exitcode(status) == 0
    assert report == [True, "succeeded"]


class Boom(Exception):
    """A callback's own error."""


def test_a_callback_that_raises_stops_its_wait_and_reaches_its_caller(
    real_sim: Simulator,
) -> None:
    """on_change raises in the caller's thread: the wait stops, the caller gets the error."""
    real_sim.add_run(DOMAIN, "run-1", RunScript(statuses=["IN_PROGRESS"]))
    client = keep(real_sim.client())

    def explode(run: Any) -> None:
        raise Boom(run.status)

    started = time.monotonic()
    with pytest.raises(Boom, match="IN_PROGRESS"):
        wait_result(DOMAIN, "run-1", client=client, policy=QUICK, on_change=explode)
    assert time.monotonic() - started < 2.0
    with pytest.raises(Boom):
        asyncio.run(
            async_wait_result(DOMAIN, "run-1", client=client, policy=QUICK, on_change=explode)
        )


def test_a_watcher_and_the_waits_of_one_job_make_one_listing_of_it_between_them() -> None:
    """A job watcher and two waits on runs of its job, in one process: every ListJobRuns of
    the job is one the watcher looked at (the waits' listing and the watcher's were two
    loops, each listing the job on its own cadence), the waits took their looks from those
    listings, not from GetJobRuns of their own, and each finished run was read once."""
    policy = PollPolicy(timeout=20, interval=0.5, max_interval=1.0)
    with Simulator() as sim:
        ids = sim.add_scheduled_runs(DOMAIN, "job-w", [(0.0, 4.0, "SUCCESS"), (0.0, 4.0, "FAILED")])
        client = keep(sim.client())

        async def main() -> tuple[list[str], list[WaitResult]]:
            announced: list[str] = []

            async def watch() -> None:
                stream = watch_job_runs(
                    DOMAIN,
                    "job-w",
                    client=client,
                    since=time.time() - 5,
                    interval=1.0,
                    logger=structlog.wrap_logger(  # its debug events too
                        None, wrapper_class=structlog.make_filtering_bound_logger(logging.DEBUG)
                    ),
                )
                async for result in stream:
                    announced.append(result.job_run_id)
                    if len(announced) == 2:
                        break
                await stream.aclose()

            watcher = asyncio.create_task(watch())
            await asyncio.sleep(0.5)  # the watcher's first listing is made
            waits = await asyncio.gather(
                *(async_wait_result(DOMAIN, run_id, client=client, policy=policy) for run_id in ids)
            )
            await asyncio.wait_for(watcher, 20)
            return announced, waits

        with capture_logs() as events:
            announced, waits = asyncio.run(main())
        listings = [r for r in sim.requests if r.operation == "ListJobRuns"]
        reads = Counter(r.run_id for r in sim.requests if r.operation == "GetJobRun")
    assert sorted(announced) == sorted(ids)
    assert [w.outcome for w in waits] == [Outcome.SUCCEEDED, Outcome.FAILED]
    looked = [e for e in events if e["event"] == "watch_listed"]
    assert len(listings) == len(looked)
    # Each run: at most the wait's first read and its last (for the lineage), whose answer
    # the watcher takes too (a finished run's never changes).
    assert all(reads[run_id] <= 2 for run_id in ids), reads


def test_a_watcher_following_the_engines_listing_ends_with_an_error_when_the_engine_closes() -> (
    None
):
    """poller.testing.reset() closes the engine under a job watcher: the watcher raises at
    once, rather than wait for listings that will never come."""
    with Simulator() as sim:
        sim.add_run(DOMAIN, "run-1", RunScript(statuses=["IN_PROGRESS"]), job_id="job-c")
        client = keep(sim.client())

        async def main() -> BaseException | None:
            stream = watch_job_runs(DOMAIN, "job-c", client=client, interval=0.3)
            first = asyncio.ensure_future(anext(stream))
            while not any(r.operation == "ListJobRuns" for r in sim.requests):
                await asyncio.sleep(0.01)
            await asyncio.to_thread(reset)
            try:
                await asyncio.wait_for(first, 5)
            except Exception as exc:
                return exc
            return None

        ended = asyncio.run(main())
    assert isinstance(ended, RuntimeError)
    assert "engine was closed" in str(ended)


def test_finished_runs_keeps_the_newest_finished_answers_by_account_and_nothing_going() -> None:
    """A run read going is not kept; of three finished ones in a memory of two, the oldest
    goes; another account's client is not handed an answer its own did not read."""
    finished = FinishedRuns(size=2)
    first = ("region", "https://a", "111")
    finished.put(first, JobRun(DOMAIN, "going", JobRunStatus.IN_PROGRESS))
    for run_id in ("r1", "r2", "r3"):
        finished.put(first, JobRun(DOMAIN, run_id, JobRunStatus.SUCCESS))
    assert finished.get(first, DOMAIN, "going") is None
    assert finished.get(first, DOMAIN, "r1") is None
    assert [finished.get(first, DOMAIN, r) for r in ("r2", "r3")] == [
        JobRun(DOMAIN, "r2", JobRunStatus.SUCCESS),
        JobRun(DOMAIN, "r3", JobRunStatus.SUCCESS),
    ]
    assert finished.get(("region", "https://a", "222"), DOMAIN, "r3") is None


def test_waits_starting_on_a_watched_job_take_their_first_look_from_its_listing() -> None:
    """Ten waits start on runs of a job a watcher follows: the first wait's read lists the
    job at once, and the other nine are seen on that page (each read its run itself before)."""
    policy = PollPolicy(timeout=20, interval=0.5, max_interval=1.0)
    with Simulator() as sim:
        ids = sim.add_scheduled_runs(DOMAIN, "job-u", [(0.0, 3.0, "SUCCESS")] * 10)
        client = keep(sim.client())

        async def main() -> int:
            stream = watch_job_runs(DOMAIN, "job-u", client=client, interval=5.0)
            watcher = asyncio.ensure_future(anext(stream))
            while not any(r.operation == "ListJobRuns" for r in sim.requests):
                await asyncio.sleep(0.01)  # the watcher's first listing
            waits = asyncio.gather(
                *(async_wait_result(DOMAIN, run_id, client=client, policy=policy) for run_id in ids)
            )
            await asyncio.sleep(1.5)  # every wait has had its first look; none has ended
            first_reads = sum(1 for r in sim.requests if r.operation == "GetJobRun")
            await waits
            watcher.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await watcher
            await stream.aclose()
            return first_reads

        first_reads = asyncio.run(main())
    assert first_reads <= 2


def test_a_watcher_that_has_not_taken_a_listing_gets_only_the_newest_and_its_number() -> None:
    """Three listings made while the watcher was busy: it takes the third (numbered 3), and
    an ask it makes before it took it is stale (a slow watcher held every listing made before)."""
    pages = [Pages((), (), False, 1, float(at)) for at in range(3)]

    async def main() -> tuple[tuple[int, Pages | Exception], bool]:
        fleet = Fleet(limiter=RateLimiter(10))
        follower = Follower(asyncio.get_running_loop(), lambda: fleet, (DOMAIN, "job"), None, 1)
        await asyncio.sleep(0)  # it follows the job's watch
        watch = follower.watch
        assert watch is not None
        for made in pages:
            watch.tell(made)
        await asyncio.sleep(0)  # the listings cross to the watcher's side
        taken = await follower.next()
        watch.ask(follower, 5.0, 0.0, seen=2)
        stale = follower.asked is None
        follower.close()
        await asyncio.sleep(0)
        await fleet.close()
        return taken, stale

    taken, stale = asyncio.run(main())
    assert taken == (3, pages[2])
    assert stale


def test_a_watcher_and_waits_sharing_a_listing_through_a_throttle_storm_lose_nothing() -> None:
    """Every call throttled for 5 s while the runs end: the watcher announces each once and
    every wait succeeds, all within a few seconds of the storm's end."""
    policy = PollPolicy(timeout=30, interval=0.5, max_interval=2.0)
    with Simulator() as sim:
        spec = [(0.0, 2.0 + 0.3 * i, "SUCCESS") for i in range(10)]
        ids = sim.add_scheduled_runs(DOMAIN, "job-storm", spec)
        now = time.monotonic()
        sim.storm(now + 0.5, now + 5.5)
        client = keep(sim.client())
        announced: Counter[str] = Counter()

        async def watch() -> None:
            stream = watch_job_runs(
                DOMAIN, "job-storm", client=client, since=time.time() - 1, interval=1.0
            )
            async for result in stream:
                announced[result.job_run_id] += 1
                if len(announced) == len(ids):
                    break
            await stream.aclose()

        async def main() -> list[WaitResult]:
            waits = [
                async_wait_result(DOMAIN, run_id, client=client, policy=policy) for run_id in ids
            ]
            done = await asyncio.wait_for(asyncio.gather(watch(), *waits), 30)
            return list(done[1:])

        results = asyncio.run(main())
        ended = time.monotonic()
        throttled = sum(1 for r in sim.requests if r.status_code == 429)
    assert announced == Counter(ids)
    assert [r.outcome for r in results] == [Outcome.SUCCEEDED] * len(ids)
    assert throttled > 0  # the storm hit the shared listing or the reads
    assert ended - (now + 5.5) < 10
