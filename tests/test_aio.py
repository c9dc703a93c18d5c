"""The async wait against the simulator: same core, same results, off the event loop."""

from __future__ import annotations

import asyncio
import random
import threading
import time
from collections.abc import Awaitable, Callable
from typing import Any

import pytest
from structlog.testing import capture_logs

from poller import (
    AccessDeniedError,
    ClientSettings,
    JobRunStatus,
    Outcome,
    PollPolicy,
    ServiceUnavailableError,
    WaitTimeoutError,
)
from poller._waiter import wait_result
from poller.aio import CALL_WORKERS, async_wait_for_job_run, async_wait_result
from poller.testing import Fault, Lineage, RunScript, Seams, Simulator
from tests.conftest import DOMAIN, FakeTime, make_client

TERMINAL = ["SUCCESS", "PARTIALLY_SUCCEEDED", "FAILED", "ABORTED", "TIMED_OUT", "CANCELED"]
LINEAGE = Lineage(total_queries_processed=42, num_queries_failed=2, error_messages=("bad SQL",))
FAST = PollPolicy(interval=0.01, max_interval=0.02, retry_initial=0.01, retry_max=0.02)


def ticking(fake_time: FakeTime) -> Callable[[float], Awaitable[None]]:
    """An async sleep on fake time that still yields to the event loop."""

    async def sleep(seconds: float) -> None:
        fake_time.sleep(seconds)
        await asyncio.sleep(0)

    return sleep


def wait(client: Any, fake_time: FakeTime, run_id: str = "run-1", **kwargs: Any) -> Any:
    """async_wait_for_job_run on fake time, run to completion."""
    kwargs.setdefault("policy", PollPolicy(jitter=0))
    return asyncio.run(
        async_wait_for_job_run(
            DOMAIN,
            run_id,
            client=client,
            seams=Seams(clock=fake_time.clock, async_sleep=ticking(fake_time)),
            **kwargs,
        )
    )


@pytest.mark.parametrize("status", TERMINAL)
def test_every_terminal_status(
    sim: Simulator, client: Any, fake_time: FakeTime, status: str
) -> None:
    """Each terminal status ends the async wait with its outcome, lineage and cadence."""
    script = RunScript(statuses=["SCHEDULED", "IN_PROGRESS", status], lineage=LINEAGE)
    sim.add_run(DOMAIN, "run-1", script)
    result = wait(client, fake_time)
    assert result.job_run.status == status
    assert result.outcome is JobRunStatus(status).outcome
    assert result.polls == sim.calls("run-1") == 3
    assert fake_time.sleeps == [2.0, 2.0]
    assert result.to_dict()["lineage"]["num_queries_succeeded"] == 40


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
    return sim, make_client(sim.start().endpoint_url, read_timeout=2)


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
    sim, client = _scenario(async_time)
    with sim:
        awaited = asyncio.run(
            async_wait_result(
                DOMAIN,
                "run-1",
                client=client,
                policy=policy,
                seams=Seams(
                    clock=async_time.clock, async_sleep=ticking(async_time), rng=random.Random(7)
                ),
            )
        )
    assert awaited.to_dict() == blocking.to_dict()
    assert async_time.sleeps == sync_time.sleeps
    assert awaited.to_dict()["outcome"] == "failed"
    assert (awaited.throttled, awaited.errors_retried) == (2, 2)


def test_throttle_storm_ends_in_success(sim: Simulator, client: Any, fake_time: FakeTime) -> None:
    """Forty throttles in a row are retried with the core's backoff; the async wait succeeds."""
    storm = [Fault.throttle()] * 40
    sim.add_run(DOMAIN, "run-1", RunScript(statuses=["IN_PROGRESS", *storm, "SUCCESS"]))
    result = wait(client, fake_time)
    assert result.outcome is Outcome.SUCCEEDED
    assert (result.throttled, result.polls, sim.calls("run-1")) == (40, 42, 42)
    assert fake_time.sleeps[1:7] == [1, 2, 4, 8, 16, 20]


def test_deadline_carries_the_last_status(sim: Simulator, client: Any, fake_time: FakeTime) -> None:
    """Past the deadline: WaitTimeoutError with the last run, the last poll on the deadline."""
    sim.add_run(DOMAIN, "run-1", RunScript(statuses=["IN_PROGRESS"]))
    with pytest.raises(WaitTimeoutError) as info:
        wait(client, fake_time, timeout=60)
    assert info.value.job_run is not None
    assert info.value.job_run.status is JobRunStatus.IN_PROGRESS
    assert sim.requests[-1].t == pytest.approx(1000.0 + 60)
    assert info.value.result is not None
    assert info.value.result.outcome is Outcome.WAIT_TIMEOUT


def test_fatal_error_raises_and_result_variant_returns(
    sim: Simulator, client: Any, fake_time: FakeTime
) -> None:
    """A denied call raises AccessDeniedError; async_wait_result returns it as outcome error."""
    denied = RunScript(statuses=[Fault.error("AccessDeniedException", 403), "SUCCESS"])
    sim.add_run(DOMAIN, "run-1", denied)
    sim.add_run(DOMAIN, "run-2", denied)
    with pytest.raises(AccessDeniedError):
        wait(client, fake_time)
    result = asyncio.run(
        async_wait_result(DOMAIN, "run-2", client=client, seams=Seams(clock=fake_time.clock))
    )
    assert result.outcome is Outcome.ERROR
    assert result.to_dict()["problem"]["type"] == "AccessDeniedError"


def test_transient_faults_that_do_not_clear(
    sim: Simulator, client: Any, fake_time: FakeTime
) -> None:
    """max_errors 5xx answers in a row end the async wait with ServiceUnavailableError."""
    sim.add_run(DOMAIN, "run-1", RunScript(statuses=["IN_PROGRESS", *[Fault.internal()] * 9]))
    with pytest.raises(ServiceUnavailableError):
        wait(client, fake_time, policy=PollPolicy(jitter=0, max_errors=3))
    assert sim.calls("run-1") == 4


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
    client = make_client(sim.endpoint_url, max_pool_connections=CALL_WORKERS)
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
    assert sum(sim.calls(f"run-{i}") for i in range(200)) == 600
    assert 0 < peak <= CALL_WORKERS


def test_builds_its_client_from_the_environment(
    sim: Simulator, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Without a client, the shared poller-built one reaches the simulator through the env."""
    monkeypatch.setenv("AWS_ENDPOINT_URL_DATAZONE", sim.endpoint_url)
    monkeypatch.setenv("AWS_ACCESS_KEY_ID", "testing")
    monkeypatch.setenv("AWS_SECRET_ACCESS_KEY", "testing")
    # A region no other test uses, so the per-configuration client cache is fresh.
    sim.add_run(DOMAIN, "run-1", RunScript(statuses=[Fault.throttle(), "SUCCESS"]))
    result = asyncio.run(
        async_wait_for_job_run(
            DOMAIN, "run-1", client=ClientSettings(region_name="eu-north-1"), policy=FAST
        )
    )
    assert (result.outcome, result.throttled, sim.calls("run-1")) == (Outcome.SUCCEEDED, 1, 2)
