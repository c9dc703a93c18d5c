"""The async wait's own tests: off the event loop, cancelled as a task, on a few threads.

What it shares with the blocking wait runs through both in test_waiter.py.
"""

from __future__ import annotations

import asyncio
import random
import threading
import time
from typing import Any

import pytest
from helpers import DOMAIN, FAST, LINEAGE, FakeTime, keep
from structlog.testing import capture_logs

from poller import (
    Outcome,
    PollPolicy,
)
from poller._limiter import budget_for
from poller._waiter import wait_result
from poller.aio import CALL_WORKERS, async_wait_for_job_run, async_wait_result
from poller.testing import Fault, RunScript, Seams, Simulator, reset


def _scenario(fake: FakeTime) -> tuple[Simulator, Any]:
    sim = Simulator(clock=fake.clock, wall=lambda: 1_800_000_000 + fake.clock())
    sim.add_run(
        DOMAIN,
        "run-1",
        RunScript(
            statuses=[
                "SCHEDULED",
                Fault.throttle(),
                Fault.throttle(),
                "IN_PROGRESS",
                Fault.internal(),
                "IN_PROGRESS",
                Fault.reset(),
                "FAILED",
            ],
            lineage=LINEAGE,
            error_message="query 7 failed",
        ),
        created_at=1_800_000_000,
    )
    return sim, keep(sim.start().client(read_timeout=2))


def test_same_result_document_as_the_blocking_wait() -> None:
    """The same scenario gives the same result document, sync or async, down to the counters."""
    policy = PollPolicy(jitter=0.2)
    sync_time, async_time = FakeTime(), FakeTime()
    sim, client = _scenario(sync_time)
    with sim:
        blocking = wait_result(
            DOMAIN,
            "run-1",
            client=client,
            policy=policy,
            seams=Seams(clock=sync_time.clock, sleep=sync_time.sleep, rng=random.Random(7)),
        )
    # The same start: the job's history the first wait looked up (in the background, 0.1 s
    # after its first answer) is forgotten, so the second looks it up at the same time.
    reset()
    sim, client = _scenario(async_time)
    with sim:
        awaited = asyncio.run(
            async_wait_result(
                DOMAIN,
                "run-1",
                client=client,
                policy=policy,
                seams=Seams(
                    clock=async_time.clock, async_sleep=async_time.async_sleep, rng=random.Random(7)
                ),
            )
        )
    assert awaited.to_dict() == blocking.to_dict()
    assert async_time.sleeps == sync_time.sleeps
    assert awaited.to_dict()["outcome"] == "failed"
    assert (awaited.throttled, awaited.errors_retried) == (2, 2)


def test_cancellation_reports_the_last_state_and_propagates(sim: Simulator, client: Any) -> None:
    """Cancelling the task logs `finished` as interrupted, with the last status, then re-raises."""
    sim.add_run(DOMAIN, "run-1", RunScript(statuses=["IN_PROGRESS"]))

    async def scenario() -> None:
        seen = asyncio.Event()
        task = asyncio.create_task(
            async_wait_result(
                DOMAIN,
                "run-1",
                client=client,
                policy=PollPolicy(interval=30),
                on_change=lambda _: seen.set(),
            )
        )
        await seen.wait()
        task.cancel()
        with pytest.raises(asyncio.CancelledError):
            await task

    with capture_logs() as events:
        started = time.monotonic()
        asyncio.run(scenario())
    assert time.monotonic() - started < 5  # not the 30 s sleep
    finished = [e for e in events if e["event"] == "finished"]
    assert len(finished) == 1
    assert (finished[0]["outcome"], finished[0]["status"]) == ("interrupted", "IN_PROGRESS")
    assert finished[0]["problem"]["type"] == "WaitCancelledError"
    assert sim.calls("run-1") == 1


def test_slow_calls_do_not_block_the_event_loop(sim: Simulator, client: Any) -> None:
    """While a GetJobRun call takes 0.5 s, the event loop keeps running other work."""
    sim.add_run(DOMAIN, "run-1", RunScript(statuses=["SUCCESS"], latency=0.5))

    async def scenario() -> int:
        ticks = 0
        wait_task = asyncio.create_task(
            async_wait_for_job_run(DOMAIN, "run-1", client=client, policy=FAST)
        )
        while not wait_task.done():
            ticks += 1
            await asyncio.sleep(0.01)
        assert (await wait_task).outcome is Outcome.SUCCEEDED
        return ticks

    assert asyncio.run(scenario()) >= 10


def test_many_waits_share_a_few_threads(sim: Simulator) -> None:
    """200 concurrent waits finish, with the blocking calls on at most CALL_WORKERS threads."""
    for i in range(200):
        sim.add_run(
            DOMAIN, f"run-{i}", RunScript(statuses=["IN_PROGRESS", "IN_PROGRESS", "SUCCESS"])
        )
    client = keep(sim.client(max_pool_connections=CALL_WORKERS))
    budget_for(client, max_rps=1000)  # the account's budget: what is measured is threads
    peak = 0

    async def scenario() -> list[Any]:
        nonlocal peak
        waits = [
            async_wait_for_job_run(DOMAIN, f"run-{i}", client=client, policy=FAST)
            for i in range(200)
        ]
        gathered = asyncio.gather(*waits)
        while not gathered.done():
            callers = [t for t in threading.enumerate() if t.name.startswith("poller-call")]
            peak = max(peak, len(callers))
            await asyncio.sleep(0.005)
        return await gathered

    results = asyncio.run(scenario())
    assert [r.outcome for r in results] == [Outcome.SUCCEEDED] * 200
    # Each run read finished by its own call; the runs of the one job, looked at
    # together by its listing, take no more calls than 200 lone waits would.
    assert all(sim.calls(f"run-{i}") >= 1 for i in range(200))
    assert sum(sim.calls(f"run-{i}") for i in range(200)) <= 600
    assert 0 < peak <= CALL_WORKERS
