"""The public entry points take a client (or its settings), a policy and one object of seams."""

from __future__ import annotations

import asyncio
import inspect
import random
from collections.abc import Callable
from typing import Any

import pytest
from structlog.testing import capture_logs

from poller import (
    ClientSettings,
    Outcome,
    PollPolicy,
    get_job_run,
    wait_for_job_run,
    wait_for_job_runs,
    wait_for_latest_job_run,
)
from poller._waiter import read_result, wait_result
from poller.aio import (
    async_wait_for_job_run,
    async_wait_for_job_runs,
    async_wait_for_latest_job_run,
    async_wait_result,
)
from poller.cli._render import render_text
from poller.poke import JobRunPoker
from poller.testing import Fault, Lineage, RunScript, Seams, Simulator

DOMAIN = "dzd_abc123"
ENTRY_POINTS: list[Callable[..., Any]] = [
    wait_for_job_run,
    wait_result,
    get_job_run,
    read_result,
    wait_for_job_runs,
    wait_for_latest_job_run,
    async_wait_for_job_run,
    async_wait_result,
    async_wait_for_job_runs,
    async_wait_for_latest_job_run,
    JobRunPoker,
]
# What `client=` and `seams=` replaced.
MOVED = {"region_name", "profile_name", "endpoint_url", "clock", "sleep", "rng", "executor"}
FAST = PollPolicy(interval=0.01, retry_initial=0.01, retry_max=0.02, jitter=0)


@pytest.mark.parametrize("entry", ENTRY_POINTS, ids=lambda f: f.__name__)
def test_every_entry_point_takes_a_client_and_seams_and_none_of_what_they_replaced(
    entry: Callable[..., Any],
) -> None:
    """No region, profile, endpoint or test seam of its own: `client=` and `seams=` hold them."""
    params = inspect.signature(entry).parameters
    assert {"client", "seams"} <= set(params)
    assert not MOVED & set(params), sorted(MOVED & set(params))
    assert "logger" not in params
    assert len(params) <= 12


def settings_for(sim: Simulator) -> ClientSettings:
    return ClientSettings(region_name="us-east-1", endpoint_url=sim.endpoint_url)


def test_client_settings_reach_the_simulator_through_every_front_door() -> None:
    """Blocking, async, fan-out, latest-run and poke waits each build a client from the settings."""
    with Simulator() as sim:
        sim.add_run(DOMAIN, "run-1", RunScript(statuses=[Fault.throttle(), "SUCCESS"]), job_id="j")
        settings = settings_for(sim)
        results = [
            wait_for_job_run(DOMAIN, "run-1", client=settings, policy=FAST),
            asyncio.run(async_wait_for_job_run(DOMAIN, "run-1", client=settings, policy=FAST)),
            *wait_for_job_runs([(DOMAIN, "run-1")], client=settings, policy=FAST),
            wait_for_latest_job_run(DOMAIN, "j", client=settings, policy=FAST),
            asyncio.run(async_wait_for_latest_job_run(DOMAIN, "j", client=settings, policy=FAST)),
        ]
        assert get_job_run(DOMAIN, "run-1", client=settings).status == "SUCCESS"
        verdict = JobRunPoker(DOMAIN, "run-1", client=settings, budget=5).poke()
    assert [r.outcome for r in results] == [Outcome.SUCCEEDED] * 5
    assert verdict.done


def test_the_seams_drive_a_wait_on_fake_time_the_same_blocking_and_async() -> None:
    """One Seams object (clock, sleep, rng, logger) gives the same wait through both loops."""
    sleeps: list[float] = []

    def run_once(blocking: bool) -> dict[str, Any]:
        now = [0.0]

        def sleep(seconds: float) -> None:
            sleeps.append(seconds)
            now[0] += seconds

        async def async_sleep(seconds: float) -> None:
            sleep(seconds)

        seams = Seams(
            clock=lambda: now[0], sleep=sleep, async_sleep=async_sleep, rng=random.Random(3)
        )
        script = RunScript(timeline=[(0, "IN_PROGRESS"), (300, "SUCCESS")])
        with Simulator(clock=lambda: now[0], wall=lambda: 1.8e9 + now[0]) as sim:
            sim.add_run(DOMAIN, "run-1", script)
            policy = PollPolicy()
            if blocking:
                result = wait_for_job_run(
                    DOMAIN, "run-1", client=sim.client(), policy=policy, seams=seams
                )
            else:
                result = asyncio.run(
                    async_wait_for_job_run(
                        DOMAIN, "run-1", client=sim.client(), policy=policy, seams=seams
                    )
                )
        return result.to_dict()

    blocking, awaited = run_once(True), run_once(False)
    assert blocking == awaited
    assert blocking["waited_s"] >= 300
    assert sum(sleeps) >= 600  # both waits slept on the fake clock, none for real


def test_a_search_and_a_wait_log_their_retries_with_the_same_fields() -> None:
    """`retrying` (the run not listed yet) and `throttled` (its wait) carry one set of fields."""
    with Simulator() as sim:
        client = sim.client()
        script = RunScript(statuses=[Fault.throttle(), "SUCCESS"])
        sim.add_run(DOMAIN, "run-1", script, job_id="j", visible_after=0.3)
        with capture_logs() as events:
            result = wait_for_latest_job_run(DOMAIN, "j", client=client, policy=FAST)
    assert result.outcome is Outcome.SUCCEEDED
    searching = [e for e in events if e["event"] == "retrying" and "job_id" in e]
    waiting = [e for e in events if e["event"] == "throttled" and "job_run_id" in e]
    assert searching
    assert waiting
    fields = {"error_type", "attempt", "sleep_s", "domain_id", "event", "log_level"}
    assert set(searching[0]) == fields | {"job_id"}
    assert set(waiting[0]) == fields | {"job_run_id"}


def test_the_cli_and_the_sensor_describe_lineage_in_the_same_words() -> None:
    """The CLI's text output and a failed poke's reason carry one lineage sentence."""
    lineage = Lineage(total_queries_processed=10, num_queries_failed=3, error_messages=("e1", "e2"))
    with Simulator() as sim:
        sim.add_run(DOMAIN, "run-1", RunScript(statuses=["FAILED"], lineage=lineage))
        verdict = JobRunPoker(DOMAIN, "run-1", client=sim.client()).poke()
    assert verdict.failed
    assert verdict.reason
    assert verdict.document
    sentence = verdict.reason.split("; lineage: ", 1)[1]
    assert sentence.startswith("10 SQL queries processed, 3 failed")
    assert f"  lineage: {sentence}" in render_text(verdict.document).splitlines()
