"""Latest-run mode against the simulator: ListJobRuns pages, `since`, and a run not listed yet."""

from __future__ import annotations

import asyncio
import time
from collections.abc import Iterator
from datetime import UTC, datetime

import pytest
from helpers import DOMAIN, FakeTime, keep

from poller import (
    AccessDeniedError,
    InvalidRequestError,
    JobRunNotFoundError,
    Outcome,
    PollPolicy,
    WaitTimeoutError,
    wait_for_latest_job_run,
)
from poller._latest import find_job_run
from poller._limiter import budget_for
from poller._policy import CallFault, FaultKind
from poller.aio import async_wait_for_latest_job_run
from poller.testing import Fault, RunScript, Seams, Simulator

T0 = 1_800_000_000.0  # epoch seconds of the first run's creation
FAST = PollPolicy(interval=1, jitter=0, not_found_grace=10)


@pytest.fixture
def clock() -> FakeTime:
    return FakeTime(500.0)


@pytest.fixture
def sim(clock: FakeTime) -> Iterator[Simulator]:
    with Simulator(clock=clock, wall=lambda: T0 + clock.now) as sim:
        yield sim


def add_history(sim: Simulator, count: int, *, job_id: str = "job-1") -> None:
    """``count`` finished runs, one a minute, added in shuffled creation order."""
    for i in sorted(range(count), key=lambda i: (i * 37) % count):
        script = RunScript(statuses=["SUCCESS" if i % 3 else "FAILED"])
        sim.add_run(DOMAIN, f"old-{i}", script, job_id=job_id, created_at=T0 + 60 * i)


def list_calls(sim: Simulator) -> int:
    """ListJobRuns calls of the search; the wait's own history lookup asks for successes only."""
    return sum(
        1
        for r in sim.requests
        if r.operation == "ListJobRuns" and "status=SUCCESS" not in (r.path or "")
    )


def test_latest_picks_the_newest_run_and_waits_on_it(sim: Simulator, clock: FakeTime) -> None:
    """Among 120 runs of the job (3 pages), the newest is chosen with one ListJobRuns call."""
    add_history(sim, 120)
    sim.add_run(
        DOMAIN,
        "newest",
        RunScript(statuses=["IN_PROGRESS", "IN_PROGRESS", "SUCCESS"]),
        created_at=T0 + 60 * 500,
    )
    sim.add_run(DOMAIN, "other-job", RunScript(statuses=["FAILED"]), job_id="job-2")
    result = wait_for_latest_job_run(
        DOMAIN,
        "job-1",
        client=keep(sim.client()),
        policy=FAST,
        seams=Seams(clock=clock, sleep=clock.sleep),
    )
    assert (result.job_run_id, result.outcome) == ("newest", Outcome.SUCCEEDED)
    assert list_calls(sim) == 1
    # The search reads the summary only (a look: it took the first IN_PROGRESS);
    # the result counts every call of the search-then-wait: the listing, then 2 reads.
    assert sim.calls("newest") == 2
    assert result.polls == 3


def test_since_walks_pages_back_to_the_first_run_created_after_it(
    sim: Simulator, clock: FakeTime
) -> None:
    """`since` selects the earliest run created at or after it, reading pages until past it."""
    add_history(sim, 150)
    since = datetime.fromtimestamp(T0 + 60 * 30, UTC)  # old-30 onwards: 120 runs, 3 pages
    result = wait_for_latest_job_run(
        DOMAIN,
        "job-1",
        since=since,
        client=keep(sim.client()),
        policy=FAST,
        seams=Seams(clock=clock, sleep=clock.sleep),
    )
    assert (result.job_run_id, result.outcome) == ("old-30", Outcome.FAILED)
    assert list_calls(sim) == 3


def test_since_accepts_epoch_seconds_and_naive_utc(sim: Simulator) -> None:
    """Epoch seconds, an aware and a naive (UTC) datetime name the same instant."""
    add_history(sim, 10)
    client = keep(sim.client())
    naive = datetime.fromtimestamp(T0 + 60 * 4, UTC).replace(tzinfo=None)
    found = {
        find_job_run(client, DOMAIN, "job-1", since=since).id
        for since in (T0 + 60 * 4 - 1, naive, datetime.fromtimestamp(T0 + 60 * 4, UTC))
    }
    assert found == {"old-4"}


def test_a_run_started_just_now_is_looked_for_until_it_is_listed(
    sim: Simulator, clock: FakeTime
) -> None:
    """The run you just triggered, not listed for 3 s, is found within the not-found grace."""
    add_history(sim, 5)
    triggered = T0 + clock.now
    sim.add_run(
        DOMAIN,
        "mine",
        RunScript(statuses=["SCHEDULED", "SUCCESS"]),
        created_at=triggered,
        visible_after=3,
    )
    result = wait_for_latest_job_run(
        DOMAIN,
        "job-1",
        since=triggered,
        client=keep(sim.client()),
        policy=FAST,
        seams=Seams(clock=clock, sleep=clock.sleep),
    )
    assert (result.job_run_id, result.outcome) == ("mine", Outcome.SUCCEEDED)
    assert list_calls(sim) > 1


def test_no_matching_run_after_the_grace_is_not_found(sim: Simulator, clock: FakeTime) -> None:
    """With nothing created since the time given, the search ends as the grace runs out."""
    add_history(sim, 5)
    with pytest.raises(JobRunNotFoundError, match="no run created since"):
        wait_for_latest_job_run(
            DOMAIN,
            "job-1",
            since=T0 + 10_000,
            client=keep(sim.client()),
            policy=FAST,
            seams=Seams(clock=clock, sleep=clock.sleep),
        )
    assert clock.now - 500 == pytest.approx(10)


def test_a_job_with_no_runs_has_no_latest_run(sim: Simulator) -> None:
    """One search on an empty job is a not-found fault, which the core may retry."""
    with pytest.raises(CallFault) as caught:
        find_job_run(keep(sim.client()), DOMAIN, "job-9")
    assert caught.value.kind is FaultKind.NOT_FOUND


def test_a_bad_job_identifier_is_rejected_before_any_call(sim: Simulator) -> None:
    """A malformed job ID is an InvalidRequestError naming the job, with no request made."""
    with pytest.raises(InvalidRequestError, match="job identifier"):
        wait_for_latest_job_run(DOMAIN, "bad job!", client=keep(sim.client()))
    assert sim.requests == []


def test_the_search_and_the_wait_share_one_deadline(sim: Simulator, clock: FakeTime) -> None:
    """Time spent finding the run is taken off the wait: the whole thing ends at the timeout."""
    sim.add_run(DOMAIN, "slow", RunScript(statuses=["IN_PROGRESS"]), created_at=T0, visible_after=5)
    with pytest.raises(WaitTimeoutError):
        wait_for_latest_job_run(
            DOMAIN,
            "job-1",
            timeout=30,
            client=keep(sim.client()),
            policy=FAST,
            seams=Seams(clock=clock, sleep=clock.sleep),
        )
    assert clock.now - 500 == pytest.approx(30)


def test_the_async_twin_finds_and_waits(sim: Simulator) -> None:
    """async_wait_for_latest_job_run does the same on an event loop."""
    add_history(sim, 60)

    async def no_sleep(_: float) -> None:
        await asyncio.sleep(0)

    result = asyncio.run(
        async_wait_for_latest_job_run(
            DOMAIN, "job-1", client=keep(sim.client()), seams=Seams(async_sleep=no_sleep)
        )
    )
    assert result.job_run_id == "old-59"


def test_a_throttled_search_is_retried_and_a_denied_one_ends_at_once(
    sim: Simulator, clock: FakeTime
) -> None:
    """The search's ListJobRuns faults come classified from the edge: a throttle is retried
    on the core's backoff, a denial is fatal with no second call."""
    add_history(sim, 3)
    sim.fail_list_job_runs(DOMAIN, "job-1", Fault.throttle())
    result = wait_for_latest_job_run(
        DOMAIN,
        "job-1",
        client=keep(sim.client()),
        policy=FAST,
        seams=Seams(clock=clock, sleep=clock.sleep),
    )
    assert (result.job_run_id, result.outcome) == ("old-2", Outcome.SUCCEEDED)
    assert list_calls(sim) == 2
    sim.fail_list_job_runs(DOMAIN, "job-1", Fault.error("AccessDeniedException", 403))
    with pytest.raises(AccessDeniedError):
        wait_for_latest_job_run(DOMAIN, "job-1", client=keep(sim.client()), policy=FAST)
    assert list_calls(sim) == 3


@pytest.mark.parametrize("door", ["blocking", "async"])
def test_the_search_for_the_latest_run_books_its_listing_on_the_account_s_budget(
    real_sim: Simulator, door: str
) -> None:
    """With the account's budget booked 2 s ahead, the listing waits its turn, then the read.

    At 2 calls/s the search's ListJobRuns gets the slot at 2.0 s and the
    wait's GetJobRun the one at 2.5 s; a search outside the budget would list
    at once and leave the read the 2.0 s slot.
    """
    real_sim.add_run(DOMAIN, "done", RunScript(statuses=["SUCCESS"]), job_id="job-9")
    client = keep(real_sim.client())
    budget = budget_for(client, 2.0)
    for _ in range(4):
        budget.reserve(budget.clock())
    started = time.monotonic()
    if door == "blocking":
        result = wait_for_latest_job_run(
            DOMAIN, "job-9", client=client, policy=PollPolicy(timeout=10)
        )
    else:
        result = asyncio.run(
            async_wait_for_latest_job_run(
                DOMAIN, "job-9", client=client, policy=PollPolicy(timeout=10)
            )
        )
    assert result.outcome is Outcome.SUCCEEDED
    assert time.monotonic() - started >= 2.4
