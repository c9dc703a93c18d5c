"""Every error a wait raises carries the result so far, even one raised before any call."""

from __future__ import annotations

import asyncio
from typing import Any

import pytest
from helpers import DOMAIN, keep
from structlog.testing import capture_logs

from poller import (
    ClientSettings,
    InvalidRequestError,
    PollerError,
    PollPolicy,
    get_job_run,
    wait_for_job_run,
    wait_for_latest_job_run,
)
from poller.aio import async_wait_for_job_run, async_wait_for_latest_job_run
from poller.testing import RunScript, Simulator


def _bad_profile() -> ClientSettings:
    return ClientSettings(region_name="us-east-1", profile_name="no-such-profile-poller")


@pytest.mark.parametrize(
    ("call", "run_id"),
    [
        (lambda: wait_for_job_run(DOMAIN, "run 42"), "run 42"),
        (lambda: get_job_run("dzd bad", "run-1"), "run-1"),
        (lambda: wait_for_job_run(DOMAIN, "run-1", timeout=-1), "run-1"),
        (lambda: wait_for_job_run(DOMAIN, "run-1", client=_bad_profile()), "run-1"),
        (lambda: wait_for_latest_job_run(DOMAIN, "bad job!"), ""),
        (lambda: asyncio.run(async_wait_for_job_run(DOMAIN, "run 42")), "run 42"),
        (lambda: asyncio.run(async_wait_for_latest_job_run(DOMAIN, "bad job!")), ""),
    ],
)
def test_an_error_raised_before_any_call_carries_an_error_result(call: Any, run_id: str) -> None:
    """Bad IDs, a bad timeout, an unknown profile: the error's result is an `error` document."""
    with pytest.raises(PollerError) as caught:
        call()
    document = caught.value.result.to_dict()  # type: ignore[union-attr]
    assert (document["job_run_id"], document["outcome"], document["polls"]) == (run_id, "error", 0)
    assert document["problem"]["type"] == type(caught.value).__name__
    assert isinstance(caught.value, InvalidRequestError)


def test_a_latest_wait_logs_one_finished_event_equal_to_its_result(real_sim: Simulator) -> None:
    """The search's listing and the wait's reads are one result, logged once as `finished`."""
    real_sim.add_run(DOMAIN, "found", RunScript(statuses=["IN_PROGRESS", "SUCCESS"]), job_id="j")
    policy = PollPolicy(interval=0.05, max_interval=0.05, history=False)
    with capture_logs() as events:
        result = wait_for_latest_job_run(DOMAIN, "j", client=keep(real_sim.client()), policy=policy)
    (finished,) = [e for e in events if e["event"] == "finished"]
    logged = {k: v for k, v in finished.items() if k not in ("event", "log_level")}
    assert logged == result.to_dict()
    listings = sum(r.operation == "ListJobRuns" for r in real_sim.requests)
    assert (result.outcome, listings) == ("succeeded", 1)
    assert result.polls == 1 + real_sim.calls("found")  # the listing and the reads
