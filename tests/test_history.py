"""History-aware polling: what a job's past runs teach, and that every failure falls back."""

from __future__ import annotations

import asyncio
import itertools
import random
import time
from dataclasses import replace
from datetime import UTC, datetime
from typing import Any

import pytest
from helpers import DOMAIN, FakeTime, capture_every_log, keep
from hypothesis import given
from hypothesis import strategies as st

from poller import Outcome, PollPolicy, RateLimiter, WaitResult
from poller._config import load_settings
from poller._history import (
    FRESH_FOR,
    MIN_RUNS,
    HistoryCache,
    JobHistory,
    Learned,
    learn,
    shared_cache,
)
from poller._model import JobRun
from poller._policy import FaultKind, Forecast, WaitState, advance
from poller._waiter import wait_result
from poller.aio import async_wait_for_job_runs, async_wait_result
from poller.testing import Fault, RunScript, Seams, Simulator, VirtualClock, reset, run_virtual

# A job whose runs take about ten minutes.
TEN_MINUTES = [540.0, 560.0, 580.0, 590.0, 600.0, 600.0, 610.0, 620.0, 640.0, 660.0]
NO_JITTER = PollPolicy(timeout=None, jitter=0)
PLAIN = PollPolicy(timeout=None, jitter=0, history=False)


def list_calls(sim: Simulator) -> list[Any]:
    return [r for r in sim.requests if r.operation == "ListJobRuns"]


def add_run(sim: Simulator, run_id: str, length: float = 600.0, **kwargs: Any) -> None:
    timeline = [(0.0, "IN_PROGRESS"), (length, "SUCCESS")]
    sim.add_run(DOMAIN, run_id, RunScript(timeline=timeline), **kwargs)


def wait(
    sim: Simulator, client: Any, fake_time: FakeTime, run_id: str, policy: PollPolicy = NO_JITTER
) -> WaitResult:
    return wait_result(
        DOMAIN,
        run_id,
        policy=policy,
        client=client,
        seams=Seams(clock=fake_time.clock, sleep=fake_time.sleep, rng=random.Random(0)),
    )


def plain_sleeps(sim: Simulator, client: Any, run_id: str, length: float = 600.0) -> list[float]:
    """The sleeps of the same wait with history off: what every fallback must equal."""
    other = FakeTime(now=5000.0)
    plain = Simulator(clock=other.clock)
    with plain:
        add_run(plain, run_id, length)
        wait(plain, plain.client(), other, run_id, PLAIN)
    return other.sleeps


def looked_up(plain: list[float]) -> list[float]:
    """``plain`` with the history lookup made 0.1 s after the first answer (the budget's next
    free time), in the background, splitting the first sleep in two."""
    return [0.1, round(plain[0] - 0.1, 9), *plain[1:]]


# -- the pure part -----------------------------------------------------------


def test_quantiles_interpolate_between_the_sorted_durations() -> None:
    """The median of 1..4 is 2.5, and the extremes are the smallest and largest."""
    history = JobHistory.of([run_of(d) for d in (4.0, 1.0, 3.0, 2.0)])
    assert history.durations == (1.0, 2.0, 3.0, 4.0)
    assert (history.quantile(0), history.p50, history.quantile(1)) == (1.0, 2.5, 4.0)


def run_of(duration: float) -> JobRun:
    start = time.time() - 10_000
    return JobRun(
        DOMAIN,
        "r",
        "SUCCESS",
        start_time=datetime.fromtimestamp(start, UTC),
        end_time=datetime.fromtimestamp(start + duration, UTC),
    )


def test_a_stable_job_gets_a_long_quiet_window_and_an_erratic_one_a_short_one() -> None:
    """Ten-minute runs within 10 % are quiet for minutes; runs from 1 s to 1 h barely at all."""
    stable = JobHistory(tuple(TEN_MINUTES))
    erratic = JobHistory((1.0, 5.0, 30.0, 120.0, 600.0, 1800.0, 3600.0))
    assert 400 < stable.quiet_s < stable.durations[0]
    assert stable.late_s > stable.p50
    assert erratic.quiet_s < 1.0


def test_a_short_history_is_not_usable_and_runs_without_both_times_do_not_count() -> None:
    """Four durations say too little; a run with no end time adds none."""
    assert not JobHistory.of([run_of(60.0)] * (MIN_RUNS - 1)).usable
    unfinished = JobRun(DOMAIN, "r", "SUCCESS")
    assert JobHistory.of([run_of(60.0)] * (MIN_RUNS - 1) + [unfinished]).runs == MIN_RUNS - 1
    assert JobHistory.of([run_of(60.0)] * MIN_RUNS).usable


def test_in_the_quiet_window_the_next_look_is_at_its_end_past_max_interval() -> None:
    """At t=0 with a window ending at 400 s the core sleeps 400 s, then resumes at the cap."""
    policy = PollPolicy(timeout=None, jitter=0)
    state = WaitState.start(policy, 0.0)
    running = JobRun(DOMAIN, "r", "IN_PROGRESS", job_id="job-1")
    forecast = Forecast(started=0.0, quiet_until=400.0, late_after=900.0)
    state, step = advance(policy, state, running, 0.0, random.Random(0), forecast)
    assert step.delay == 400.0
    # The plain schedule would have reached its cap by 400 s, so the next look is 30 s later.
    state, step = advance(policy, state, running, 400.0, random.Random(0), forecast)
    assert step.delay == policy.max_interval


def test_without_a_forecast_or_with_history_off_the_cadence_is_the_plain_one() -> None:
    """The same answer at the same time gives interval (2 s) either way."""
    running = JobRun(DOMAIN, "r", "IN_PROGRESS", job_id="job-1")
    forecast = Forecast(started=0.0, quiet_until=400.0, late_after=900.0)
    for policy, given_forecast in (
        (PollPolicy(jitter=0), None),
        (PollPolicy(jitter=0, history=False), forecast),
    ):
        _, step = advance(
            policy, WaitState.start(policy, 0.0), running, 0.0, random.Random(0), given_forecast
        )
        assert step.delay == policy.interval


@given(
    now=st.floats(0, 5000),
    quiet=st.floats(0, 5000),
    timeout=st.floats(0, 5000),
    jitter=st.floats(0, 1),
)
def test_a_forecast_never_sleeps_past_the_deadline_or_past_the_window(
    now: float, quiet: float, timeout: float, jitter: float
) -> None:
    """Whatever the window, the delay ends by the deadline and by the window's end (or cadence)."""
    policy = PollPolicy(timeout=timeout, jitter=jitter)
    state = WaitState.start(policy, 0.0)
    forecast = Forecast(started=0.0, quiet_until=quiet, late_after=quiet + 100)
    running = JobRun(DOMAIN, "r", "IN_PROGRESS", job_id="job-1")
    _, step = advance(policy, state, running, now, random.Random(1), forecast)
    if step.done:
        assert now >= timeout
        return
    assert 0 <= step.delay <= timeout - now + 1e-9
    assert step.delay <= max(quiet - now, policy.max_interval) + 1e-9


def test_history_must_be_a_bool() -> None:
    """PollPolicy(history="yes") is refused rather than read as true."""
    with pytest.raises(Exception, match="history must be True or False"):
        PollPolicy(history="yes")  # type: ignore[arg-type]


def test_the_cache_keeps_a_history_while_fresh_and_a_failure_for_less() -> None:
    """A usable history is reused for FRESH_FOR; a failure is retried sooner."""
    clock = FakeTime(now=0.0)
    cache = HistoryCache(clock=clock.clock, fresh_for=100, retry_after=10)
    good, bad = ("d", "good"), ("d", "bad")
    assert cache.claim(good)
    assert not cache.claim(good)
    cache.put(good, Learned(JobHistory(tuple(TEN_MINUTES))))
    assert cache.claim(bad)
    cache.put(bad, Learned(None, "denied"))
    clock.now = 50
    assert cache.get(good) is not None
    assert cache.get(bad) is None
    assert cache.claim(bad)
    assert not cache.claim(good)
    clock.now = 101
    assert cache.get(good) is None
    assert cache.claim(good)
    cache.release(good)
    assert cache.claim(good)
    assert FRESH_FOR > 0


def test_the_cache_drops_stale_jobs_as_they_pile_up_and_keeps_the_fresh() -> None:
    """A process that waits on ever new jobs keeps only the fresh ones (every job it ever
    looked up was kept for its life)."""
    clock = FakeTime(now=0.0)
    cache = HistoryCache(clock=clock.clock, fresh_for=100, retry_after=10)
    for i in range(3000):
        cache.put(("d", f"old-{i}"), Learned(JobHistory(tuple(TEN_MINUTES))))
        clock.now += 0.01  # 30 s in all: every one of them still fresh
    assert len(cache) == 3000
    clock.now = 200  # every old one stale
    for i in range(3000):
        cache.put(("d", f"new-{i}"), Learned(None, "denied"))
    assert len(cache) == 3000  # the new ones only
    assert cache.get(("d", "new-0")) is not None
    assert cache.get(("d", "old-2999")) is None


# -- waits against the simulator --------------------------------------------


def test_history_cuts_the_calls_of_a_ten_minute_run(
    sim: Simulator, client: Any, fake_time: FakeTime
) -> None:
    """With ten past ten-minute runs, the wait sleeps through the quiet window: far fewer calls."""
    sim.add_history(DOMAIN, "job-1", TEN_MINUTES)
    add_run(sim, "run-1")
    with capture_every_log() as events:
        result = wait(sim, client, fake_time, "run-1")
    assert result.outcome is Outcome.SUCCEEDED
    lists = list_calls(sim)
    assert len(lists) == 1
    assert "status=SUCCESS" in (lists[0].path or "")
    assert "sortOrder=DESCENDING" in (lists[0].path or "")
    assert "maxResults=50" in (lists[0].path or "")
    quiet = JobHistory(tuple(sorted(TEN_MINUTES))).quiet_s
    # Looked up in the background (0.1 s after the first answer), the history shapes the
    # sleep after the next look, 2 s in: the rest of the quiet window.
    assert fake_time.sleeps[:2] == [0.1, 1.9]
    assert fake_time.sleeps[2] == pytest.approx(quiet - 2, abs=0.5)
    assert fake_time.sleeps[2] > NO_JITTER.max_interval
    plain = plain_sleeps(sim, client, "run-1")
    assert sim.calls("run-1") <= len(plain) + 1 - 10
    learned = [e for e in events if e["event"] == "history"]
    assert len(learned) == 1
    assert learned[0]["runs"] == 10
    assert learned[0]["p50_s"] == 600.0
    assert learned[0]["quiet_s"] == pytest.approx(quiet, abs=0.001)
    # The lag stays within the plain cadence's cap.
    end = sim.end_time("run-1")
    assert end is not None
    assert fake_time.now - end <= NO_JITTER.max_interval


def test_with_history_off_no_list_call_is_made_and_the_cadence_is_plain(
    sim: Simulator, client: Any, fake_time: FakeTime
) -> None:
    """PollPolicy(history=False) never calls ListJobRuns, even for a job with history."""
    sim.add_history(DOMAIN, "job-1", TEN_MINUTES)
    add_run(sim, "run-1")
    wait(sim, client, fake_time, "run-1", PollPolicy(timeout=None, jitter=0, history=False))
    assert list_calls(sim) == []
    assert fake_time.sleeps == plain_sleeps(sim, client, "run-1")


@pytest.mark.parametrize(
    ("fault", "reason"),
    [
        (Fault.error("AccessDeniedException", 403), "AccessDeniedException"),
        (Fault.throttle(), "ThrottlingException"),
        (Fault.internal(), "InternalServerException"),
        (Fault.reset(), "ListJobRuns failed"),
    ],
    ids=["denied", "throttled", "failing", "reset"],
)
def test_a_failed_list_call_falls_back_to_the_plain_cadence_with_one_event(
    sim: Simulator, client: Any, fake_time: FakeTime, fault: Fault, reason: str
) -> None:
    """Denied, throttled or failing ListJobRuns: same sleeps as without history, one event why."""
    sim.add_history(DOMAIN, "job-1", TEN_MINUTES)
    sim.fail_list_job_runs(DOMAIN, "job-1", fault)
    add_run(sim, "run-1")
    with capture_every_log() as events:
        result = wait(sim, client, fake_time, "run-1")
    assert result.outcome is Outcome.SUCCEEDED
    assert (result.throttled, result.errors_retried) == (0, 0)
    assert len(list_calls(sim)) == 1  # not retried within the wait
    assert fake_time.sleeps == looked_up(plain_sleeps(sim, client, "run-1"))
    why = [e for e in events if e["event"].startswith("history")]
    assert [e["event"] for e in why] == ["history_unavailable"]
    assert reason in why[0]["reason"]


def test_too_little_history_falls_back_and_says_how_much_there_was(
    sim: Simulator, client: Any, fake_time: FakeTime
) -> None:
    """Four past runs: the plain cadence, and the event says 4 of 5 needed."""
    sim.add_history(DOMAIN, "job-1", TEN_MINUTES[:4])
    add_run(sim, "run-1")
    with capture_every_log() as events:
        wait(sim, client, fake_time, "run-1")
    assert fake_time.sleeps == looked_up(plain_sleeps(sim, client, "run-1"))
    why = [e for e in events if e["event"] == "history_unavailable"]
    assert len(why) == 1
    assert why[0]["reason"].startswith("4 finished run(s)")


def test_failed_runs_are_not_history(sim: Simulator, client: Any, fake_time: FakeTime) -> None:
    """Only successes are asked for: ten FAILED past runs teach nothing."""
    sim.add_history(DOMAIN, "job-1", TEN_MINUTES, status="FAILED")
    add_run(sim, "run-1")
    wait(sim, client, fake_time, "run-1")
    assert fake_time.sleeps == looked_up(plain_sleeps(sim, client, "run-1"))


def test_waits_of_one_job_share_one_list_call(
    sim: Simulator, client: Any, fake_time: FakeTime
) -> None:
    """Three waits in a row on runs of the same job: one ListJobRuns; all three use it."""
    sim.add_history(DOMAIN, "job-1", TEN_MINUTES)
    with capture_every_log() as events:
        for i in range(3):
            add_run(sim, f"run-{i}")
            assert wait(sim, client, fake_time, f"run-{i}").outcome is Outcome.SUCCEEDED
    assert len(list_calls(sim)) == 1
    assert [e["job_run_id"] for e in events if e["event"] == "history"] == [
        "run-0",
        "run-1",
        "run-2",
    ]
    assert shared_cache().get((DOMAIN, "job-1")) is not None


def test_another_job_is_looked_up_on_its_own(
    sim: Simulator, client: Any, fake_time: FakeTime
) -> None:
    """The cache is per (domain, job): a second job costs its own ListJobRuns."""
    sim.add_history(DOMAIN, "job-1", TEN_MINUTES)
    sim.add_history(DOMAIN, "job-2", TEN_MINUTES)
    add_run(sim, "run-1")
    wait(sim, client, fake_time, "run-1")
    add_run(sim, "run-2", job_id="job-2")
    wait(sim, client, fake_time, "run-2")
    assert [r.job_id for r in list_calls(sim)] == ["job-1", "job-2"]


def test_a_finished_run_costs_one_call(sim: Simulator, client: Any, fake_time: FakeTime) -> None:
    """A run already finished is one GetJobRun and nothing else, history or not."""
    sim.add_history(DOMAIN, "job-1", TEN_MINUTES)
    sim.add_run(DOMAIN, "done", RunScript(statuses=["SUCCESS"]))
    result = wait(sim, client, fake_time, "done")
    assert result.outcome is Outcome.SUCCEEDED
    assert [r.operation for r in sim.requests] == ["GetJobRun"]
    assert fake_time.sleeps == []


def test_a_deadline_inside_the_quiet_window_still_gets_its_last_look(
    sim: Simulator, client: Any, fake_time: FakeTime
) -> None:
    """Timeout 100 s inside a ~9 min quiet window: a sleep to the deadline, a look there,
    wait_timeout. The history, looked up 0.1 s after the first answer, is used from the
    second look (2 s in, the plain cadence's) on."""
    sim.add_history(DOMAIN, "job-1", TEN_MINUTES)
    add_run(sim, "run-1")
    result = wait(sim, client, fake_time, "run-1", PollPolicy(timeout=100, jitter=0))
    assert result.outcome is Outcome.WAIT_TIMEOUT
    assert fake_time.sleeps == [0.1, 1.9, 98.0]
    assert sim.calls("run-1") == 3 == result.polls


def test_a_run_already_going_for_a_while_has_less_quiet_left(
    sim: Simulator, client: Any, fake_time: FakeTime
) -> None:
    """A run started 300 s before the wait is quiet for the window minus those 300 s."""
    sim.add_history(DOMAIN, "job-1", TEN_MINUTES)
    timeline = [(0.0, "IN_PROGRESS"), (900.0, "SUCCESS")]
    sim.add_run(DOMAIN, "run-1", RunScript(timeline=timeline), created_at=time.time() - 300)
    wait(sim, client, fake_time, "run-1")
    quiet = JobHistory(tuple(sorted(TEN_MINUTES))).quiet_s
    # The history is used from the second look, 2 s in (the lookup: 0.1 s after the first).
    assert fake_time.sleeps[:2] == [0.1, 1.9]
    assert fake_time.sleeps[2] == pytest.approx(quiet - 300 - 2, abs=1.0)


@pytest.mark.parametrize("where", ["the wait's seams", "the process's (reset)"])
def test_a_run_is_dated_by_the_wall_seam_not_the_real_wall_clock(
    fake_time: FakeTime, where: str
) -> None:
    """On a simulated wall far from the real one, a run started 300 s ago has 300 s less quiet.

    Read from the real wall clock instead, its age would be decades, its quiet
    window long over, and the first sleep the plain cadence's.
    """
    wall = lambda: 1.0e9 + fake_time.now  # noqa: E731 - 2001: nowhere near time.time()
    with Simulator(clock=fake_time.clock, wall=wall) as sim:
        client = keep(sim.client())
        sim.add_history(DOMAIN, "job-1", TEN_MINUTES)
        add_run(sim, "run-1", 900.0)
        fake_time.now += 300
        seams = Seams(clock=fake_time.clock, sleep=fake_time.sleep, rng=random.Random(0))
        if where == "the wait's seams":
            seams = replace(seams, wall=wall)
        else:
            reset(seams=Seams(wall=wall))
        wait_result(DOMAIN, "run-1", policy=NO_JITTER, client=client, seams=seams)
    quiet = JobHistory(tuple(sorted(TEN_MINUTES))).quiet_s
    # The history is used from the second look, 2 s in (the lookup: 0.1 s after the first).
    assert fake_time.sleeps[:2] == [0.1, 1.9]
    assert fake_time.sleeps[2] == pytest.approx(quiet - 300 - 2, abs=1.0)


def test_the_async_wait_uses_history_too(sim: Simulator, client: Any, fake_time: FakeTime) -> None:
    """async_wait_result skips the quiet window like the blocking wait."""
    sim.add_history(DOMAIN, "job-1", TEN_MINUTES)
    add_run(sim, "run-1")

    async def sleep(seconds: float) -> None:
        fake_time.sleep(seconds)

    result = asyncio.run(
        async_wait_result(
            DOMAIN,
            "run-1",
            policy=NO_JITTER,
            client=client,
            seams=Seams(clock=fake_time.clock, async_sleep=sleep),
        )
    )
    assert result.outcome is Outcome.SUCCEEDED
    assert len(list_calls(sim)) == 1
    assert fake_time.sleeps[:2] == [0.1, 1.9]  # the lookup, then the second look
    assert fake_time.sleeps[2] > NO_JITTER.max_interval


# -- fan-out -----------------------------------------------------------------


def test_a_fan_out_of_one_job_looks_at_its_runs_through_the_job_listing() -> None:
    """Twenty runs of one job: one GetJobRun finds it, listings watch all, one call per end."""
    clock = VirtualClock()
    with Simulator(clock=clock, seed=0) as sim:
        sim.add_history(DOMAIN, "job-1", TEN_MINUTES)
        for i in range(20):
            add_run(sim, f"run-{i}")
        results = run_virtual(
            async_wait_for_job_runs(
                [(DOMAIN, f"run-{i}") for i in range(20)],
                client=sim.client(),
                limiter=RateLimiter(5, clock=clock),
                seams=Seams(clock=clock, rng=random.Random(0)),
            ),
            clock,
        )
        requests = sim.requests
    assert {r.outcome for r in results} == {Outcome.SUCCEEDED}
    listings = [r for r in requests if r.operation == "ListJobRuns"]
    # The first listing (unfiltered: the live runs and the history in one page)
    # came right after run-0's first answer, before any other run's first call.
    assert "status=" not in (listings[0].path or "")
    assert [r.run_id for r in requests[:2]] == ["run-0", None]
    # Only run-0 was read while running; every other run once, at its end.
    assert [r.polls for r in results] == [2] + [1] * 19
    assert sum(1 for r in requests if r.operation == "GetJobRun") == 21
    # The listing looked again as the quiet window ended (its earliest spread
    # wake-up), then on the cadence reached by then: every 24..30 s (jitter
    # 0.2 under max_interval), one look for all twenty runs, not one each.
    quiet = JobHistory(tuple(sorted(TEN_MINUTES))).quiet_s
    cap = PollPolicy().max_interval
    assert listings[1].t - requests[0].t == pytest.approx(quiet, abs=cap)
    after = [r.t for r in listings if r.t > requests[0].t + quiet]
    gaps = [b - a for a, b in itertools.pairwise(after)]
    assert len(gaps) >= 2
    assert all(0.8 * cap - 1e-6 <= gap <= cap + 1 for gap in gaps)
    # The budget covered both kinds of call: never more than 5 in any second.
    times = sorted(r.t for r in requests)
    assert all(sum(1 for u in times[i:] if u < t + 1 - 1e-6) <= 5 for i, t in enumerate(times))


def test_a_fan_out_looks_at_a_quiet_job_at_its_window_end_and_polls_the_others_meanwhile() -> None:
    """A job in its quiet window is listed at the window's end; a job without history all along."""
    clock = VirtualClock()
    with Simulator(clock=clock, seed=0) as sim:
        sim.add_history(DOMAIN, "job-1", TEN_MINUTES)
        add_run(sim, "quiet-0")
        add_run(sim, "quiet-1")
        add_run(sim, "plain", job_id="job-2")  # no history: the plain cadence
        results = run_virtual(
            async_wait_for_job_runs(
                [(DOMAIN, "quiet-0"), (DOMAIN, "quiet-1"), (DOMAIN, "plain")],
                client=sim.client(),
                limiter=RateLimiter(5, clock=clock),
                policy=NO_JITTER,
                seams=Seams(clock=clock, rng=random.Random(0)),
            ),
            clock,
        )
        requests = sim.requests
    assert {r.outcome for r in results} == {Outcome.SUCCEEDED}
    quiet = JobHistory(tuple(sorted(TEN_MINUTES))).quiet_s
    start = requests[0].t
    job_1 = [r.t - start for r in requests if r.job_id == "job-1"]
    # A run's age is wall time against its startTime, and wall time moves for
    # real while the test runs: a second or two on a loaded machine.
    assert job_1[1] == pytest.approx(quiet, abs=3)
    # quiet-1 was never read while running: the listing showed it.
    assert [r.answered_status for r in requests if r.run_id == "quiet-1"] == ["SUCCESS"]
    plain = [r.t - start for r in requests if r.run_id == "plain"]
    assert sum(1 for t in plain if t < quiet) > 10  # polled all along meanwhile
    # job-2's one run: the plain history lookup (successes only), once.
    job_2 = [r.path or "" for r in requests if r.job_id == "job-2"]
    assert len(job_2) == 1
    assert "status=SUCCESS" in job_2[0]


# -- settings ----------------------------------------------------------------


def test_history_is_on_by_default_and_off_from_config_or_environment(tmp_path: Any) -> None:
    """[wait] history = false and POLLER_WAIT_HISTORY=false both turn it off in the policy."""
    assert load_settings(environ={}).policy().history is True
    path = tmp_path / "poller.toml"
    path.write_text("[wait]\nhistory = false\n")
    assert load_settings(config_file=str(path), environ={}).policy().history is False
    assert load_settings(environ={"POLLER_WAIT_HISTORY": "false"}).policy().history is False


class CountingLimiter(RateLimiter):
    """A limiter that counts the calls it was told got through."""

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.successes = 0

    def succeeded(self) -> None:
        super().succeeded()
        self.successes += 1


class ListingBreaks:
    """A caller's client whose GetJobRun works and whose ListJobRuns has a bug."""

    def __init__(self, client: Any) -> None:
        self.client = client

    def get_job_run(self, **kwargs: Any) -> Any:
        return self.client.get_job_run(**kwargs)

    def list_job_runs(self, **kwargs: Any) -> Any:
        raise RuntimeError("a bug in the caller's client")


def test_a_lookup_failing_in_a_way_the_edge_does_not_know_is_no_success_for_the_budget() -> None:
    """A lone run's lookup raises an unknown error: the wait goes on, the budget hears no success.

    Only calls known to have got through may grow the rate; an error nobody
    classified says nothing of the sort (it counted as one before).
    """
    clock = VirtualClock()
    limiter = CountingLimiter(5, clock=clock)
    with Simulator(clock=clock) as sim:
        add_run(sim, "run-1", length=5.0, job_id="job-1")
        with capture_every_log() as events:
            [result] = run_virtual(
                async_wait_for_job_runs(
                    [(DOMAIN, "run-1")],
                    client=ListingBreaks(sim.client()),
                    limiter=limiter,
                    seams=Seams(clock=clock, rng=random.Random(0)),
                ),
                clock,
            )
        gets = sum(1 for r in sim.requests if r.operation == "GetJobRun" and r.status_code == 200)
    assert result.outcome is Outcome.SUCCEEDED
    assert gets >= 2
    assert limiter.successes == gets
    why = [e for e in events if e["event"] == "history_unavailable"]
    assert len(why) == 1
    assert "RuntimeError: a bug in the caller's client" in why[0]["reason"]


def test_learn_takes_an_error_the_edge_does_not_know_as_a_transient_fault() -> None:
    """No history, the error named, and a fault kind that is not a success."""
    learned = learn(ListingBreaks(None), DOMAIN, "job-x")
    assert learned.history is None
    assert learned.fault is FaultKind.TRANSIENT
    assert learned.reason == "ListJobRuns failed: RuntimeError: a bug in the caller's client"
