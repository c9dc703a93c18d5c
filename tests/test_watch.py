"""A fan-out's job listing: one ListJobRuns looks at all runs of a job; every failure falls back."""

from __future__ import annotations

import asyncio
import random
from typing import Any

import pytest
from helpers import DOMAIN, keep
from structlog.testing import capture_logs

from poller import Outcome, PollPolicy, RateLimiter, WaitResult, _engine, wait_for_job_runs
from poller._engine import Fleet
from poller._fanout import LISTING_STOPPED, LISTING_TRIES
from poller._history import shared_cache
from poller.aio import async_wait_for_job_runs
from poller.testing import Fault, Lineage, RunScript, Seams, Simulator, VirtualClock, run_virtual

# Three minutes a run: long enough for a few listings, short enough for a test.
PAST = [170.0, 175.0, 178.0, 180.0, 182.0, 185.0, 190.0]


@pytest.fixture
def clock() -> VirtualClock:
    return VirtualClock()


@pytest.fixture
def sim(clock: VirtualClock) -> Any:
    with Simulator(clock=clock, seed=0) as sim:
        yield sim


def add_runs(sim: Simulator, count: int, length: float = 180.0, **script: Any) -> list[str]:
    """``count`` runs of job-1, running from the start and succeeding after ``length`` s."""
    ids = []
    for i in range(count):
        timeline = [(0.0, "IN_PROGRESS"), (length + i, "SUCCESS")]
        sim.add_run(DOMAIN, f"run-{i}", RunScript(timeline=timeline, **script))
        ids.append(f"run-{i}")
    return ids


def fan_out(sim: Simulator, clock: VirtualClock, ids: list[str], **kwargs: Any) -> list[WaitResult]:
    kwargs.setdefault("limiter", RateLimiter(5, clock=clock))
    return run_virtual(
        async_wait_for_job_runs(
            [(DOMAIN, i) for i in ids],
            client=keep(sim.client()),
            seams=Seams(clock=clock, rng=random.Random(0)),
            **kwargs,
        ),
        clock,
    )


def calls(sim: Simulator, operation: str) -> list[Any]:
    return [r for r in sim.requests if r.operation == operation]


def test_a_run_the_listing_shows_finished_is_read_at_once_with_its_lineage(
    sim: Simulator, clock: VirtualClock
) -> None:
    """The listing that shows a run finished is followed by its GetJobRun, lineage and all."""
    sim.add_history(DOMAIN, "job-1", PAST)
    ids = add_runs(sim, 3, lineage=Lineage())
    results = fan_out(sim, clock, ids)
    assert {r.outcome for r in results} == {Outcome.SUCCEEDED}
    assert all(
        r.job_run and r.job_run.lineage and r.job_run.lineage.total_queries_processed == 42
        for r in results
    )
    listings = calls(sim, "ListJobRuns")
    for result in results:
        end = sim.end_time(result.job_run_id)
        assert end is not None
        read = [r.t for r in calls(sim, "GetJobRun") if r.run_id == result.job_run_id][-1]
        shown = min(r.t for r in listings if r.t >= end)
        # Read in the same second the listing showed it (5 calls/s, urgent first).
        assert shown <= read <= shown + 1


def test_a_denied_listing_sends_the_runs_back_to_their_own_calls_with_one_event(
    sim: Simulator, clock: VirtualClock
) -> None:
    """ListJobRuns denied: one event says so, and each run is polled on its own to its end."""
    ids = add_runs(sim, 4)
    sim.fail_list_job_runs(DOMAIN, "job-1", Fault.error("AccessDeniedException", 403))
    with capture_logs() as events:
        results = fan_out(sim, clock, ids)
    assert {r.outcome for r in results} == {Outcome.SUCCEEDED}
    stopped = [e for e in events if e["event"] == LISTING_STOPPED]
    assert len(stopped) == 1
    assert "AccessDeniedException" in stopped[0]["reason"]
    assert len(calls(sim, "ListJobRuns")) == 1
    # Back to the plain cadence: a dozen looks each over three minutes.
    assert all(r.polls > 8 for r in results)


def test_a_throttled_listing_is_tried_again_and_the_watch_goes_on(
    sim: Simulator, clock: VirtualClock
) -> None:
    """One throttled listing is booked again; the runs are still read only at their end."""
    sim.add_history(DOMAIN, "job-1", PAST)
    ids = add_runs(sim, 4)
    sim.fail_list_job_runs(DOMAIN, "job-1", Fault.throttle())
    with capture_logs() as events:
        results = fan_out(sim, clock, ids)
    assert {r.outcome for r in results} == {Outcome.SUCCEEDED}
    assert not [e for e in events if e["event"] == LISTING_STOPPED]
    assert [r.status_code for r in calls(sim, "ListJobRuns")][:2] == [429, 200]
    assert [r.polls for r in results] == [2, 1, 1, 1]


def test_a_listing_failing_again_and_again_ends_the_watch(
    sim: Simulator, clock: VirtualClock
) -> None:
    """LISTING_TRIES transient failures in a row: the watch ends, the runs go on alone."""
    ids = add_runs(sim, 3)
    sim.fail_list_job_runs(DOMAIN, "job-1", *[Fault.internal()] * LISTING_TRIES)
    with capture_logs() as events:
        results = fan_out(sim, clock, ids)
    assert {r.outcome for r in results} == {Outcome.SUCCEEDED}
    assert len(calls(sim, "ListJobRuns")) == LISTING_TRIES
    assert [e["event"] for e in events].count(LISTING_STOPPED) == 1


def test_a_listing_reads_more_pages_while_they_show_runs_of_the_fan_out(
    sim: Simulator, clock: VirtualClock
) -> None:
    """120 runs of one job: three pages of 50 show them all; each is read once, at its end."""
    ids = add_runs(sim, 120, length=60.0)
    results = fan_out(sim, clock, ids, limiter=RateLimiter(20, clock=clock))
    assert {r.outcome for r in results} == {Outcome.SUCCEEDED}
    first = calls(sim, "ListJobRuns")[:3]
    assert ["nextToken" in (r.path or "") for r in first] == [False, True, True]
    assert [r.polls for r in results].count(1) >= 118  # the first ones read may poll once more


def test_runs_a_page_does_not_show_are_polled_on_their_own(
    sim: Simulator, clock: VirtualClock
) -> None:
    """The 10 oldest of 60 runs: the first page (the 50 newest) shows none; they poll alone."""
    ids = add_runs(sim, 60, length=60.0)
    results = fan_out(sim, clock, ids[:10])
    assert {r.outcome for r in results} == {Outcome.SUCCEEDED}
    assert all(r.polls > 3 for r in results[1:])
    # One page showed fewer than two of the fan-out's runs: no second page.
    assert not any("nextToken" in (r.path or "") for r in calls(sim, "ListJobRuns"))


def test_the_last_look_of_watched_runs_is_one_listing_at_their_deadline(
    sim: Simulator, clock: VirtualClock
) -> None:
    """Runs that never end, deadline 60 s: one listing at the deadline is every run's last look."""
    sim.add_history(DOMAIN, "job-1", PAST)
    ids = add_runs(sim, 3, length=10_000.0)
    results = fan_out(sim, clock, ids, timeout=60)
    assert {r.outcome for r in results} == {Outcome.WAIT_TIMEOUT}
    start = sim.requests[0].t
    assert 60 <= calls(sim, "ListJobRuns")[-1].t - start <= 60.1
    for result in results:
        assert 60 <= result.waited_s <= 61
        assert result.job_run is not None
        assert result.job_run.status == "IN_PROGRESS"
        assert "the run was still IN_PROGRESS" in str(result.error)


def test_with_history_off_a_fan_out_never_lists(sim: Simulator, clock: VirtualClock) -> None:
    """``history=False``: no ListJobRuns at all; every run is polled on its own."""
    ids = add_runs(sim, 5, length=30.0)
    results = fan_out(sim, clock, ids, policy=PollPolicy(history=False))
    assert {r.outcome for r in results} == {Outcome.SUCCEEDED}
    assert calls(sim, "ListJobRuns") == []


def test_runs_of_distinct_jobs_cost_one_lookup_per_job_as_without_a_watch(
    sim: Simulator, clock: VirtualClock
) -> None:
    """Ten runs of ten jobs: one listing per job (its history lookup), nothing more."""
    for i in range(10):
        timeline = [(0.0, "IN_PROGRESS"), (60.0, "SUCCESS")]
        sim.add_run(DOMAIN, f"run-{i}", RunScript(timeline=timeline), job_id=f"job-{i}")
    results = fan_out(sim, clock, [f"run-{i}" for i in range(10)])
    assert {r.outcome for r in results} == {Outcome.SUCCEEDED}
    assert sorted(r.job_id for r in calls(sim, "ListJobRuns")) == sorted(
        f"job-{i}" for i in range(10)
    )


def test_finished_runs_of_one_job_cost_one_call_each_and_nothing_else(
    sim: Simulator, clock: VirtualClock
) -> None:
    """Ten runs of one job already finished: ten GetJobRun, no ListJobRuns."""
    for i in range(10):
        sim.add_run(DOMAIN, f"run-{i}", RunScript(statuses=["SUCCESS"]))
    results = fan_out(sim, clock, [f"run-{i}" for i in range(10)])
    assert [r.polls for r in results] == [1] * 10
    assert [r.operation for r in sim.requests] == ["GetJobRun"] * 10


def test_finished_runs_of_distinct_jobs_cost_one_call_each_and_nothing_else(
    sim: Simulator, clock: VirtualClock
) -> None:
    """Ten finished runs of ten jobs: ten GetJobRun, no ListJobRuns."""
    for i in range(10):
        sim.add_run(DOMAIN, f"run-{i}", RunScript(statuses=["FAILED"]), job_id=f"job-{i}")
    results = fan_out(sim, clock, [f"run-{i}" for i in range(10)])
    assert {r.outcome for r in results} == {Outcome.FAILED}
    assert [r.operation for r in sim.requests] == ["GetJobRun"] * 10


def test_a_listing_that_lags_does_not_take_a_run_back_to_scheduled(
    sim: Simulator, clock: VirtualClock
) -> None:
    """A run seen IN_PROGRESS that a listing shows SCHEDULED is not logged as going back."""
    for i in range(2):
        script = RunScript(statuses=["IN_PROGRESS", "SCHEDULED", "IN_PROGRESS", "SUCCESS"])
        sim.add_run(DOMAIN, f"run-{i}", script)
    with capture_logs() as events:
        results = fan_out(sim, clock, ["run-0", "run-1"])
    assert {r.outcome for r in results} == {Outcome.SUCCEEDED}
    changes = [(e["job_run_id"], e["to"]) for e in events if e["event"] == "status_changed"]
    assert ("run-0", "SCHEDULED") not in changes
    assert ("run-0", "SUCCESS") in changes


def test_cancelling_a_fan_out_with_listings_booked_gives_back_every_booking(
    sim: Simulator, clock: VirtualClock
) -> None:
    """Cancelled while its runs wait on their job's listing: the budget holds no leftover call."""
    sim.add_history(DOMAIN, "job-1", PAST)
    ids = add_runs(sim, 5)
    limiter = RateLimiter(5, clock=clock)

    async def cancelled_after(seconds: float) -> None:
        task = asyncio.create_task(
            async_wait_for_job_runs(
                [(DOMAIN, i) for i in ids],
                client=keep(sim.client()),
                limiter=limiter,
                seams=Seams(clock=clock, rng=random.Random(0)),
            )
        )
        await asyncio.sleep(seconds)
        task.cancel()
        with pytest.raises(asyncio.CancelledError):
            await task

    run_virtual(cancelled_after(30.0), clock)
    assert calls(sim, "ListJobRuns")  # the watch was on when it was cancelled
    booking = limiter.reserve(clock())
    assert booking is not None
    assert limiter.at(booking) == pytest.approx(clock())


@pytest.mark.parametrize("seed", range(4))
def test_a_throttled_fleet_of_few_jobs_ends_every_wait_with_its_true_outcome(
    clock: VirtualClock, seed: int
) -> None:
    """120 runs of 3 jobs, random throttles and a failing listing: all right, none stuck."""
    rng = random.Random(seed)
    ends = {}
    with Simulator(clock=clock, seed=seed, max_rps=10) as sim:
        for job in range(3):
            sim.add_history(DOMAIN, f"job-{job}", PAST)
            sim.fail_list_job_runs(DOMAIN, f"job-{job}", *[Fault.throttle()] * job)
        for i in range(120):
            end = ["SUCCESS", "FAILED", "PARTIALLY_SUCCEEDED"][i % 3]
            length = rng.uniform(5, 240)
            timeline = [(0.0, "SCHEDULED"), (length / 4, "IN_PROGRESS"), (length, end)]
            script = RunScript(timeline=timeline, throttle_rate=0.05)
            sim.add_run(DOMAIN, f"run-{i}", script, job_id=f"job-{rng.randrange(3)}")
            ends[f"run-{i}"] = end
        results = fan_out(sim, clock, list(ends), limiter=RateLimiter(40, clock=clock))
    assert {r.job_run_id: r.job_run.status if r.job_run else None for r in results} == ends
    # None waited on a listing that never came: every run is in within minutes of its end.
    assert max(r.waited_s for r in results) < 240 + 120


# -- Defects of the job listing found by attacking it (issue 15) ---------------


def test_runs_whose_first_call_the_budget_cannot_fit_are_not_given_up_at_once(
    sim: Simulator, clock: VirtualClock
) -> None:
    """150 runs of 6 jobs at 10 calls/s, 10 s: the listings show every run; none ends at 0 s."""
    for job in range(6):
        sim.add_history(DOMAIN, f"job-{job}", PAST)
    for i in range(150):
        timeline = [(0.0, "IN_PROGRESS"), (600.0, "SUCCESS")]
        sim.add_run(DOMAIN, f"run-{i}", RunScript(timeline=timeline), job_id=f"job-{i % 6}")
    results = fan_out(
        sim,
        clock,
        [f"run-{i}" for i in range(150)],
        timeout=10,
        limiter=RateLimiter(10, clock=clock),
    )
    assert {r.outcome for r in results} == {Outcome.WAIT_TIMEOUT}
    assert all(r.job_run is not None and r.job_run.status == "IN_PROGRESS" for r in results)
    assert min(r.waited_s for r in results) >= 10


def test_a_timeout_of_zero_reads_each_of_several_runs_once(
    sim: Simulator, clock: VirtualClock
) -> None:
    """Check once means each run once: three finished runs, three reads, three outcomes."""
    for i in range(3):
        sim.add_run(DOMAIN, f"z{i}", RunScript(statuses=["SUCCESS"]))
    results = fan_out(
        sim, clock, ["z0", "z1", "z2"], timeout=0, limiter=RateLimiter(10, clock=clock)
    )
    assert [(r.outcome, r.polls) for r in results] == [(Outcome.SUCCEEDED, 1)] * 3


@pytest.mark.parametrize(
    "foreign",
    [{"domainId": "dzd_other"}, {"jobId": "job-9"}],
    ids=["another-domain", "another-job"],
)
def test_a_listing_item_is_used_only_for_the_run_job_and_domain_it_names(
    sim: Simulator, clock: VirtualClock, foreign: dict[str, str]
) -> None:
    """An item saying b1 FAILED, of another domain or job, slipped into job-1's listing: b1,
    still running, is not ended by it when the listing is the last look at the deadline."""
    sim.add_history(DOMAIN, "job-1", PAST)
    ids = add_runs(sim, 3, length=10_000.0)
    sim.add_run(
        DOMAIN,
        "b1",
        RunScript(timeline=[(0.0, "IN_PROGRESS"), (10_000.0, "SUCCESS")]),
        job_id="job-2",
    )
    item = {
        "domainId": DOMAIN,
        "jobId": "job-2",
        "jobType": "LINEAGE",
        "runId": "b1",
        "runMode": "ON_DEMAND",
        "status": "FAILED",
        "createdAt": 1.0,
        **foreign,
    }
    sim.add_list_item(DOMAIN, "job-1", item)
    results = fan_out(sim, clock, [*ids, "b1"], timeout=60)
    assert [r.outcome for r in results] == [Outcome.WAIT_TIMEOUT] * 4
    assert all(r.job_run is not None and r.job_run.status == "IN_PROGRESS" for r in results)


def test_a_listing_that_answers_late_does_not_blind_its_runs(real_sim: Simulator) -> None:
    """ListJobRuns answers after 4 s; runs that end at 1.5 s are still seen by their own calls."""
    client = keep(real_sim.client())
    real_sim.add_history(DOMAIN, "job-1", PAST)
    for i in range(2):
        timeline = [(0.0, "IN_PROGRESS"), (1.5, "SUCCESS")]
        real_sim.add_run(DOMAIN, f"run-{i}", RunScript(timeline=timeline))
    real_sim.slow_list_job_runs(DOMAIN, "job-1", 4.0)
    policy = PollPolicy(timeout=3.5, interval=0.1, max_interval=0.2)
    results = wait_for_job_runs(
        [(DOMAIN, "run-0"), (DOMAIN, "run-1")], client=client, policy=policy
    )
    assert [r.outcome for r in results] == [Outcome.SUCCEEDED] * 2
    assert all(r.waited_s < 3.0 for r in results)


def test_a_fan_out_stopped_before_its_first_listing_gives_the_jobs_history_claim_back(
    sim: Simulator, clock: VirtualClock
) -> None:
    """Cancelled between the first read and the job's first listing: a later wait may learn."""
    sim.add_history(DOMAIN, "job-1", PAST)
    ids = add_runs(sim, 3)
    limiter = RateLimiter(0.5, clock=clock)  # a call every 2 s: the listing is not out at 1 s

    async def cancelled_after(seconds: float) -> None:
        task = asyncio.create_task(
            async_wait_for_job_runs(
                [(DOMAIN, i) for i in ids],
                client=keep(sim.client()),
                limiter=limiter,
                seams=Seams(clock=clock, rng=random.Random(0)),
            )
        )
        await asyncio.sleep(seconds)
        task.cancel()
        with pytest.raises(asyncio.CancelledError):
            await task

    run_virtual(cancelled_after(1.0), clock)
    assert [r.operation for r in sim.requests] == ["GetJobRun"]
    assert shared_cache().claim((DOMAIN, "job-1"))


class _ListingBug:
    """A client whose GetJobRun is the simulator's and whose ListJobRuns has a bug of its own."""

    def __init__(self, client: Any) -> None:
        self._client = client

    def get_job_run(self, **kwargs: Any) -> Any:
        return self._client.get_job_run(**kwargs)

    def list_job_runs(self, **kwargs: Any) -> Any:
        raise RuntimeError("a bug, not a fault of the call")


class _CountingLimiter(RateLimiter):
    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.successes = 0

    def succeeded(self) -> None:
        self.successes += 1
        super().succeeded()


def test_a_listing_failing_with_an_unknown_error_is_not_counted_as_a_call_that_got_through(
    sim: Simulator, clock: VirtualClock
) -> None:
    """ListJobRuns raising what `classify` does not know: the watch stops; the rate ignores it."""
    sim.add_history(DOMAIN, "job-1", PAST)
    ids = add_runs(sim, 3, length=30.0)
    limiter = _CountingLimiter(5, clock=clock)
    with capture_logs() as events:
        results = run_virtual(
            async_wait_for_job_runs(
                [(DOMAIN, i) for i in ids],
                client=_ListingBug(keep(sim.client())),
                limiter=limiter,
                seams=Seams(clock=clock, rng=random.Random(0)),
            ),
            clock,
        )
    assert {r.outcome for r in results} == {Outcome.SUCCEEDED}
    stopped = [e for e in events if e["event"] == LISTING_STOPPED]
    assert len(stopped) == 1
    assert "RuntimeError" in stopped[0]["reason"]
    assert limiter.successes == len(calls(sim, "GetJobRun"))


def test_first_reads_take_the_slots_that_listed_runs_give_back(
    sim: Simulator, clock: VirtualClock
) -> None:
    """4 jobs x 25 runs at 10 calls/s, 8 s: each job is read within a second, every run seen."""
    for job in range(4):
        sim.add_history(DOMAIN, f"job-{job}", PAST)
        for i in range(25):
            timeline = [(0.0, "IN_PROGRESS"), (600.0, "SUCCESS")]
            sim.add_run(DOMAIN, f"j{job}-r{i}", RunScript(timeline=timeline), job_id=f"job-{job}")
    ids = [f"j{job}-r{i}" for job in range(4) for i in range(25)]
    results = fan_out(sim, clock, ids, timeout=8, limiter=RateLimiter(10, clock=clock))
    start = sim.requests[0].t
    first_read = {}
    for request in calls(sim, "GetJobRun"):
        first_read.setdefault(request.run_id.split("-")[0], request.t - start)
    assert max(first_read.values()) <= 1.5
    assert all(r.job_run is not None and r.job_run.status == "IN_PROGRESS" for r in results)


def test_a_look_the_budget_cannot_fit_before_the_deadline_is_not_made_early_instead(
    sim: Simulator, clock: VirtualClock
) -> None:
    """A's last look is due at its 5 s deadline, where B's look holds the budget: A makes no
    call before then (a wait whose look found no slot is not a wait with no call yet)."""
    for name in ("a", "b"):
        timeline = [(0.0, "IN_PROGRESS"), (600.0, "SUCCESS")]
        sim.add_run(DOMAIN, name, RunScript(timeline=timeline), job_id=f"job-{name}")
    limiter = RateLimiter(1, clock=clock)  # one call a second

    def wait(name: str, timeout: float) -> Any:
        policy = PollPolicy(timeout=timeout, interval=10, max_interval=10, history=False)
        return async_wait_for_job_runs(
            [(DOMAIN, name)],
            policy=policy,
            client=keep(sim.client()),
            limiter=limiter,
            seams=Seams(clock=clock, rng=random.Random(0)),
        )

    async def both() -> list[list[WaitResult]]:
        # B's first call at 0, A's at 1; B's last look, booked at its 4.6 s deadline,
        # holds the budget until 5.6 s: A's look due at 5 s finds no slot by 5 s + its grace.
        return await asyncio.gather(wait("b", 4.6), wait("a", 5.0))

    [_], [a] = run_virtual(both(), clock)
    start = sim.requests[0].t
    a_calls = [round(r.t - start, 1) for r in calls(sim, "GetJobRun") if r.run_id == "a"]
    b_calls = [round(r.t - start, 1) for r in calls(sim, "GetJobRun") if r.run_id == "b"]
    assert b_calls == [0.0, 4.6]
    assert a_calls == [1.0]
    assert a.outcome is Outcome.WAIT_TIMEOUT
    assert a.job_run is not None
    assert a.job_run.status == "IN_PROGRESS"


@pytest.mark.parametrize(
    "where",
    ["show", "learned_from_listing"],
    ids=["showing-a-page-to-the-waits", "learning-from-the-listing"],
)
def test_a_bug_in_what_a_listing_is_used_for_sends_the_runs_back_to_their_calls_and_says_so(
    sim: Simulator, clock: VirtualClock, monkeypatch: pytest.MonkeyPatch, where: str
) -> None:
    """A bug where a page is used (not a fault of the call): no run is blinded until its
    deadline; the watch stops with one error event naming the bug, not the call."""
    sim.add_history(DOMAIN, "job-1", PAST)
    ids = add_runs(sim, 3, length=30.0)

    def bug(*args: Any) -> Any:
        raise RuntimeError("a bug, not a fault of the call")

    if where == "show":
        monkeypatch.setattr(Fleet, "show", bug)
    else:
        monkeypatch.setattr(_engine, "learned_from_listing", bug)
    with capture_logs() as events:
        results = fan_out(sim, clock, ids, timeout=100)
    assert {r.outcome for r in results} == {Outcome.SUCCEEDED}
    assert max(r.waited_s for r in results) < 100
    stopped = [e for e in events if e["event"] == LISTING_STOPPED]
    assert [(e["log_level"], e["reason"]) for e in stopped] == [
        ("error", "a bug in poller: RuntimeError('a bug, not a fault of the call')")
    ]
    assert len(calls(sim, "ListJobRuns")) == 1
