"""Fan-out against the simulator: many runs, one budget, nothing lost, exact virtual time."""

from __future__ import annotations

import asyncio
import random
import threading
from collections import Counter
from collections.abc import Iterator
from typing import Any

import pytest
from helpers import DOMAIN, QUIET, busiest_second, keep

from poller import Outcome, PollPolicy, RateLimiter, WaitResult, wait_for_job_runs
from poller.aio import CALL_WORKERS, async_wait_for_job_runs
from poller.testing import Fault, RunScript, Seams, Simulator, VirtualClock, run_virtual

ENDS = ["SUCCESS", "FAILED", "PARTIALLY_SUCCEEDED", "SUCCESS", "CANCELED"]
OUTCOMES = {
    "SUCCESS": Outcome.SUCCEEDED,
    "FAILED": Outcome.FAILED,
    "PARTIALLY_SUCCEEDED": Outcome.PARTIALLY_SUCCEEDED,
    "CANCELED": Outcome.FAILED,
}


def client_for(sim: Simulator) -> Any:
    return keep(sim.client(max_pool_connections=CALL_WORKERS))


@pytest.fixture
def clock() -> VirtualClock:
    return VirtualClock()


@pytest.fixture
def sim(clock: VirtualClock) -> Iterator[Simulator]:
    with Simulator(clock=clock, seed=0) as sim:
        yield sim


def add_fleet(
    sim: Simulator, count: int, *, seed: int = 1, throttle_rate: float = 0.0, jobs: int = 1
) -> dict[str, str]:
    """``count`` runs of ``jobs`` jobs ending after 5..120 s; returns run id -> final status."""
    rng = random.Random(seed)
    ends = {}
    for i in range(count):
        end = ENDS[i % len(ENDS)]
        duration = rng.uniform(5, 120)
        timeline = [(0, "SCHEDULED"), (duration / 4, "IN_PROGRESS"), (duration, end)]
        script = RunScript(timeline=timeline, throttle_rate=throttle_rate)
        sim.add_run(DOMAIN, f"run-{i}", script, job_id=f"job-{i % jobs}")
        ends[f"run-{i}"] = end
    return ends


# These tests are about the shared budget, so each run makes its own calls:
# with history on, runs of one job are looked at by its listing
# (tests/test_watch.py), which the tests that say so turn on.
BUDGET_ONLY = PollPolicy(history=False)


def fan_out(
    sim: Simulator, clock: VirtualClock, refs: list[tuple[str, str]], **kwargs: Any
) -> list[WaitResult]:
    kwargs.setdefault("limiter", RateLimiter(kwargs.pop("max_rps", 10), clock=clock))
    kwargs.setdefault("policy", BUDGET_ONLY)
    coro = async_wait_for_job_runs(
        refs,
        client=client_for(sim),
        seams=Seams(clock=clock, rng=random.Random(0), logger=QUIET),
        **kwargs,
    )
    return run_virtual(coro, clock)


def get_calls(sim: Simulator) -> list[float]:
    return [r.t for r in sim.requests if r.operation == "GetJobRun"]


@pytest.mark.parametrize("history", [False, True], ids=["own-calls", "job-listing"])
def test_a_throttled_fleet_ends_with_every_result_correct_and_none_lost(
    sim: Simulator, clock: VirtualClock, history: bool
) -> None:
    """200 runs, a 10/s server limit, 5% random throttles: every run gets its true outcome."""
    sim_limited = Simulator(clock=clock, seed=3, max_rps=10)
    with sim_limited:
        ends = add_fleet(sim_limited, 200, throttle_rate=0.05, jobs=40)
        refs = [(DOMAIN, run_id) for run_id in ends]
        # A budget well above the server's limit, so both kinds of throttle happen.
        results = fan_out(sim_limited, clock, refs, max_rps=40, policy=PollPolicy(history=history))
        calls = [r for r in sim_limited.requests if r.operation == "GetJobRun"]
        throttles = Counter(r.fault for r in calls)
        over_limit = sum(1 for r in sim_limited.requests if r.fault == "max_rps")
    assert [(r.domain_id, r.job_run_id) for r in results] == refs
    assert [r.outcome for r in results] == [OUTCOMES[ends[rid]] for _, rid in refs]
    assert all(r.job_run is not None and r.job_run.status == ends[r.job_run_id] for r in results)
    # The throttling really happened, and the waits rode it out.
    # (5 % of the GetJobRun calls at random: fewer calls with the job listing.)
    assert throttles["throttle_rate"] > max(0.02 * len(calls), 5)
    assert over_limit > 0  # listings included: with the job listing, those are most calls
    assert sum(r.throttled for r in results) == throttles["throttle_rate"] + throttles["max_rps"]


def test_the_budget_holds_in_every_one_second_window(sim: Simulator, clock: VirtualClock) -> None:
    """With max_rps=5 the simulator's log never shows 6 GetJobRun calls within one second."""
    ends = add_fleet(sim, 60)
    results = fan_out(sim, clock, [(DOMAIN, r) for r in ends], max_rps=5)
    assert all(r.outcome is OUTCOMES[ends[r.job_run_id]] for r in results)
    assert busiest_second(get_calls(sim)) == 5


def test_aimd_converges_to_the_server_limit_from_a_budget_above_it(clock: VirtualClock) -> None:
    """Budget 40/s against a 10/s server: after adapting, the rate sits at the server's limit."""
    limiter = RateLimiter(40, clock=clock)
    with Simulator(clock=clock, seed=0, max_rps=10) as sim:
        ends = add_fleet(sim, 300, seed=2)
        results = fan_out(sim, clock, [(DOMAIN, r) for r in ends], limiter=limiter)
        requests = [r for r in sim.requests if r.operation == "GetJobRun"]
    assert all(r.outcome is OUTCOMES[ends[r.job_run_id]] for r in results)
    start = requests[0].t
    adapted = [r for r in requests if start + 10 <= r.t < start + 60]
    throttled = [r for r in adapted if r.status_code == 429]
    # Probing above the limit costs a few throttles, not a storm...
    assert len(throttled) / len(adapted) < 0.05
    # ...and the fleet uses what the server allows: close to 10/s, not 40/s.
    assert 7 * 50 <= len(adapted) <= 11 * 50


class RecordingLimiter(RateLimiter):
    """A limiter that remembers its rate after every report."""

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.rates: list[float] = []

    def throttled(self, granted_at: float, spacing_cap: float | None = None) -> None:
        super().throttled(granted_at, spacing_cap)
        self.rates.append(self.rate)

    def succeeded(self) -> None:
        super().succeeded()
        self.rates.append(self.rate)


def test_aimd_lowers_the_shared_rate_on_throttles_and_restores_it(
    sim: Simulator, clock: VirtualClock
) -> None:
    """Throttles from one run lower the rate for all; sustained success brings it back to 8/s."""
    limiter = RecordingLimiter(8, clock=clock)
    sim.add_run(DOMAIN, "noisy", RunScript(statuses=[Fault.throttle()] * 3 + ["SUCCESS"]))
    for i in range(20):
        timeline = [(0, "IN_PROGRESS"), (60 + i, "SUCCESS")]
        sim.add_run(DOMAIN, f"run-{i}", RunScript(timeline=timeline))
    refs = [(DOMAIN, "noisy")] + [(DOMAIN, f"run-{i}") for i in range(20)]
    results = fan_out(sim, clock, refs, limiter=limiter)
    assert {r.outcome for r in results} == {Outcome.SUCCEEDED}
    lowest = min(limiter.rates)
    # Each of the three throttles came after the last decrease, and each counted.
    assert lowest < 4
    assert limiter.rates.index(lowest) < limiter.rates.index(8.0, limiter.rates.index(lowest))
    assert limiter.rate == 8.0


def test_the_most_overdue_poll_goes_first(sim: Simulator, clock: VirtualClock) -> None:
    """At 1 call/s for 4 waiting runs, polls rotate: nobody polls twice before the others once."""
    for i in range(4):
        sim.add_run(DOMAIN, f"run-{i}", RunScript(timeline=[(0, "IN_PROGRESS"), (40, "SUCCESS")]))
    policy = PollPolicy(interval=0.5, max_interval=0.5, jitter=0, history=False)
    refs = [(DOMAIN, f"run-{i}") for i in range(4)]
    fan_out(sim, clock, refs, max_rps=1, policy=policy)
    order = [r.run_id for r in sim.requests if r.operation == "GetJobRun"]
    assert order[:4] == [f"run-{i}" for i in range(4)]
    for k in range(0, len(order) - 4, 4):
        assert sorted(order[k : k + 4]) == sorted(order[:4]), order


def test_runs_that_cannot_be_waited_on_get_error_results_and_the_rest_carry_on(
    sim: Simulator, clock: VirtualClock
) -> None:
    """Bad IDs, unknown and denied runs end as `error` results; good runs still succeed."""
    sim.add_run(DOMAIN, "good", RunScript(statuses=["IN_PROGRESS", "SUCCESS"]))
    denied = Fault.error("AccessDeniedException", 403)
    sim.add_run(DOMAIN, "denied", RunScript(statuses=[denied, "SUCCESS"]))
    refs = [(DOMAIN, "good"), ("not-a-domain", "x"), (DOMAIN, "missing"), (DOMAIN, "denied")]
    results = fan_out(sim, clock, refs, policy=PollPolicy(not_found_grace=1))
    assert [r.outcome for r in results] == [Outcome.SUCCEEDED] + [Outcome.ERROR] * 3
    problems = [r.problem.type if r.problem else None for r in results]
    assert problems == [None, "InvalidRequestError", "JobRunNotFoundError", "AccessDeniedError"]
    # The bad ID cost no call at all.
    assert {r.domain_id for r in sim.requests} == {DOMAIN}


def test_duplicates_are_waited_on_once_and_reported_at_each_place(
    sim: Simulator, clock: VirtualClock
) -> None:
    """A run listed twice costs one wait; on_result hears of it once, the list has it twice."""
    sim.add_run(DOMAIN, "a", RunScript(statuses=["IN_PROGRESS", "SUCCESS"]))
    sim.add_run(DOMAIN, "b", RunScript(statuses=["IN_PROGRESS", "IN_PROGRESS", "FAILED"]))
    heard: list[str] = []
    refs = [(DOMAIN, "a"), (DOMAIN, "b"), (DOMAIN, "a")]
    results = fan_out(sim, clock, refs, on_result=lambda r: heard.append(r.job_run_id))
    assert [r.job_run_id for r in results] == ["a", "b", "a"]
    assert results[0] is results[2]
    assert heard == ["a", "b"]  # in the order they finished
    assert sim.calls("a") == 2


def test_on_result_hears_each_run_as_it_finishes(sim: Simulator, clock: VirtualClock) -> None:
    """Results arrive by end time while the list keeps input order."""
    for i, end in enumerate([50, 10, 30]):
        sim.add_run(DOMAIN, f"run-{i}", RunScript(timeline=[(0, "IN_PROGRESS"), (end, "SUCCESS")]))
    heard: list[str] = []
    refs = [(DOMAIN, f"run-{i}") for i in range(3)]
    results = fan_out(sim, clock, refs, on_result=lambda r: heard.append(r.job_run_id))
    assert heard == ["run-1", "run-2", "run-0"]
    assert [r.job_run_id for r in results] == ["run-0", "run-1", "run-2"]


def test_a_deadline_ends_only_the_runs_still_going(sim: Simulator, clock: VirtualClock) -> None:
    """timeout applies per run: the slow run times out, the quick one succeeds."""
    sim.add_run(DOMAIN, "quick", RunScript(timeline=[(0, "IN_PROGRESS"), (5, "SUCCESS")]))
    sim.add_run(DOMAIN, "slow", RunScript(timeline=[(0, "IN_PROGRESS"), (500, "SUCCESS")]))
    results = fan_out(sim, clock, [(DOMAIN, "quick"), (DOMAIN, "slow")], timeout=60)
    assert [r.outcome for r in results] == [Outcome.SUCCEEDED, Outcome.WAIT_TIMEOUT]


def test_a_pair_that_is_not_a_pair_is_a_type_error(clock: VirtualClock) -> None:
    """A malformed runs list is a programming error, raised before anything is called."""
    with pytest.raises(TypeError, match=r"runs\[1\]"):
        run_virtual(async_wait_for_job_runs([(DOMAIN, "a"), "dzd_x/run"], client=object()), clock)  # type: ignore[list-item]


def test_cancelling_the_task_stops_every_wait(sim: Simulator, clock: VirtualClock) -> None:
    """Task cancellation reaches every wait and is raised, as for one async wait."""
    sim.add_run(DOMAIN, "a", RunScript(statuses=["IN_PROGRESS"]))

    async def cancel_soon() -> None:
        task = asyncio.create_task(
            async_wait_for_job_runs(
                [(DOMAIN, "a")],
                client=client_for(sim),
                seams=Seams(clock=clock, logger=QUIET),
                limiter=RateLimiter(10, clock=clock),
            )
        )
        await asyncio.sleep(100)
        task.cancel()
        with pytest.raises(asyncio.CancelledError):
            await task

    run_virtual(cancel_soon(), clock)
    assert 3 < sim.calls("a") < 20


def test_the_blocking_call_returns_results_in_input_order(sim: Simulator) -> None:
    """wait_for_job_runs runs the async fan-out on a private loop and returns a list."""
    for i, end in enumerate(["SUCCESS", "FAILED", "SUCCESS"]):
        sim.add_run(DOMAIN, f"run-{i}", RunScript(statuses=["IN_PROGRESS", end]))
    refs = [(DOMAIN, f"run-{i}") for i in range(3)]
    results = wait_for_job_runs(
        refs,
        client=client_for(sim),
        policy=PollPolicy(interval=0.01, jitter=0),
        limiter=RateLimiter(1000),
        seams=Seams(logger=QUIET),
    )
    assert [r.outcome for r in results] == [Outcome.SUCCEEDED, Outcome.FAILED, Outcome.SUCCEEDED]


def test_the_blocking_call_works_from_inside_a_running_event_loop(sim: Simulator) -> None:
    """Called from async code it runs its loop in a helper thread instead of failing."""
    sim.add_run(DOMAIN, "a", RunScript(statuses=["SUCCESS"]))

    async def caller() -> list[WaitResult]:
        return wait_for_job_runs(
            [(DOMAIN, "a")],
            client=client_for(sim),
            limiter=RateLimiter(1000),
            seams=Seams(logger=QUIET),
        )

    assert [r.outcome for r in asyncio.run(caller())] == [Outcome.SUCCEEDED]


def test_setting_cancel_interrupts_the_waits_and_still_returns_results(sim: Simulator) -> None:
    """The blocking call's cancel event ends each wait `interrupted`, with its last status."""
    sim.add_run(DOMAIN, "done", RunScript(statuses=["SUCCESS"]))
    sim.add_run(DOMAIN, "forever", RunScript(statuses=["IN_PROGRESS"]))
    cancel = threading.Event()

    def on_result(result: WaitResult) -> None:
        if result.job_run_id == "done":
            threading.Timer(0.2, cancel.set).start()

    results = wait_for_job_runs(
        [(DOMAIN, "done"), (DOMAIN, "forever")],
        client=client_for(sim),
        policy=PollPolicy(interval=0.05, max_interval=0.05),
        limiter=RateLimiter(1000),
        on_result=on_result,
        cancel=cancel,
        seams=Seams(logger=QUIET),
    )
    assert [r.outcome for r in results] == [Outcome.SUCCEEDED, Outcome.INTERRUPTED]
    assert results[1].job_run is not None
    assert results[1].job_run.status == "IN_PROGRESS"
    assert results[1].problem is not None
    assert results[1].problem.type == "WaitCancelledError"


def test_a_cancel_before_the_waits_begin_still_gives_every_run_its_result() -> None:
    """Cancel already set: waits stopped before their first step are reported interrupted too."""
    cancel = threading.Event()
    cancel.set()
    with Simulator() as live:
        for i in range(50):
            live.add_run(DOMAIN, f"c{i}", RunScript(statuses=["IN_PROGRESS"]))
        seen: list[WaitResult] = []
        results = wait_for_job_runs(
            [(DOMAIN, f"c{i}") for i in range(50)],
            client=client_for(live),
            policy=PollPolicy(timeout=30),
            limiter=RateLimiter(1),
            cancel=cancel,
            on_result=seen.append,
            seams=Seams(logger=QUIET),
        )
    assert [r.job_run_id for r in results] == [f"c{i}" for i in range(50)]
    assert {r.outcome for r in results} == {Outcome.INTERRUPTED}
    assert len(seen) == 50
