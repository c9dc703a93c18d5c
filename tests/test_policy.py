"""The pure schedule in isolation: exact delays, and properties over any policy."""

from __future__ import annotations

import random

import pytest
from hypothesis import given
from hypothesis import strategies as st

from poller import InvalidRequestError, PollPolicy
from poller._model import JobRun, Outcome
from poller._policy import CallFault, FaultKind, Step, WaitState, advance, fail
from poller.errors import (
    AccessDeniedError,
    JobRunNotFoundError,
    ServiceUnavailableError,
    WaitTimeoutError,
)

NO_JITTER = PollPolicy(interval=2, max_interval=30, multiplier=1.5, jitter=0, timeout=3600)


def run(status: str) -> JobRun:
    return JobRun(domain_id="dzd_a", id="r1", status=status)


def fault(kind: FaultKind) -> CallFault:
    return CallFault(kind, kind.value, f"a {kind.value} fault")


class Driver:
    """Feeds the core a script of answers on a fake clock, recording each delay."""

    def __init__(self, policy: PollPolicy, seed: int = 0) -> None:
        self.policy = policy
        self.now = 0.0
        self.rng = random.Random(seed)
        self.state = WaitState.start(policy, self.now)
        self.delays: list[float] = []

    def feed(self, answer: str | FaultKind) -> Step:
        if isinstance(answer, FaultKind):
            self.state, step = fail(self.policy, self.state, fault(answer), self.now, self.rng)
        else:
            self.state, step = advance(self.policy, self.state, run(answer), self.now, self.rng)
        if not step.done:
            self.delays.append(step.delay)
            self.now += step.delay
        return step


def test_cadence_starts_at_interval_and_grows_by_multiplier_to_the_cap() -> None:
    """Without jitter the delays are interval, then x1.5 per unchanged poll, capped at 30 s."""
    d = Driver(NO_JITTER)
    for _ in range(10):
        d.feed("IN_PROGRESS")
    assert d.delays == pytest.approx([2, 3, 4.5, 6.75, 10.125, 15.1875, 22.78125, 30, 30, 30])


def test_a_look_through_the_job_listing_moves_the_cadence_but_is_not_a_poll() -> None:
    """``polled=False`` (a fan-out's listing showed the run): the cadence grows, polls do not."""
    rng = random.Random(0)
    state = WaitState.start(NO_JITTER, 0.0)
    state, _ = advance(NO_JITTER, state, run("IN_PROGRESS"), 0.0, rng)
    listed, step = advance(NO_JITTER, state, run("IN_PROGRESS"), 2.0, rng, polled=False)
    polled, same = advance(NO_JITTER, state, run("IN_PROGRESS"), 2.0, rng)
    assert (listed.polls, polled.polls) == (1, 2)
    assert step.delay == same.delay == 3.0
    assert listed.last == polled.last


def test_a_status_change_restarts_the_cadence() -> None:
    """A new status brings the next poll back to `interval`."""
    d = Driver(NO_JITTER)
    for status in ["SCHEDULED", "SCHEDULED", "SCHEDULED", "IN_PROGRESS", "IN_PROGRESS"]:
        d.feed(status)
    assert d.delays == pytest.approx([2, 3, 4.5, 2, 3])


def test_terminal_status_stops_with_its_outcome() -> None:
    """Each terminal status ends the wait at once with the outcome it maps to."""
    expected = {
        "SUCCESS": Outcome.SUCCEEDED,
        "PARTIALLY_SUCCEEDED": Outcome.PARTIALLY_SUCCEEDED,
        "FAILED": Outcome.FAILED,
        "ABORTED": Outcome.FAILED,
        "TIMED_OUT": Outcome.FAILED,
        "CANCELED": Outcome.FAILED,
    }
    for status, outcome in expected.items():
        step = Driver(NO_JITTER).feed(status)
        assert (step.done, step.outcome, step.error) == (True, outcome, None)


def test_unknown_status_is_treated_as_still_running() -> None:
    """A status the model does not know keeps the wait going."""
    d = Driver(NO_JITTER)
    step = d.feed("SOME_NEW_STATUS")
    assert not step.done
    assert d.feed("SUCCESS").outcome is Outcome.SUCCEEDED


def test_throttles_back_off_exponentially_and_never_end_the_wait() -> None:
    """Throttles double the backoff from retry_initial to retry_max; 50 of them do not stop it."""
    d = Driver(NO_JITTER)
    for _ in range(50):
        assert not d.feed(FaultKind.THROTTLE).done
    assert d.delays[:7] == pytest.approx([1, 2, 4, 8, 16, 20, 20])
    assert d.state.throttled == 50
    assert d.feed("SUCCESS").outcome is Outcome.SUCCEEDED


def test_a_throttle_storm_of_any_length_stays_at_retry_max() -> None:
    """Past a thousand throttles in a row the backoff is still retry_max, never an overflow."""
    d = Driver(NO_JITTER.with_timeout(None))
    for _ in range(1100):
        assert not d.feed(FaultKind.THROTTLE).done
    assert d.delays[-1] == pytest.approx(20)


def test_cadence_does_not_snap_back_after_a_throttle() -> None:
    """After a 4 s backoff got through, the next poll waits at least 4 s, not `interval`."""
    d = Driver(NO_JITTER)
    d.feed("IN_PROGRESS")  # -> 2
    d.feed(FaultKind.THROTTLE)  # -> 1
    d.feed(FaultKind.THROTTLE)  # -> 2
    d.feed(FaultKind.THROTTLE)  # -> 4
    d.feed("IN_PROGRESS")  # unchanged: max(2 * 1.5, 4)
    d.feed("IN_PROGRESS")  # grows from there
    assert d.delays == pytest.approx([2, 1, 2, 4, 4, 6])


def test_transient_faults_end_the_wait_after_max_errors_in_a_row() -> None:
    """The max_errors-th consecutive transient fault ends the wait as ServiceUnavailableError."""
    policy = PollPolicy(jitter=0, max_errors=3)
    d = Driver(policy)
    assert not d.feed(FaultKind.TRANSIENT).done
    assert not d.feed(FaultKind.TRANSIENT).done
    step = d.feed(FaultKind.TRANSIENT)
    assert step.outcome is Outcome.ERROR
    assert isinstance(step.error, ServiceUnavailableError)
    assert (d.state.polls, d.state.errors_retried) == (3, 2)


def test_a_good_answer_resets_the_transient_count() -> None:
    """Faults separated by a successful call are not consecutive."""
    d = Driver(PollPolicy(jitter=0, max_errors=2))
    for answer in [FaultKind.TRANSIENT, "IN_PROGRESS"] * 5:
        assert not d.feed(answer).done


def test_throttles_between_transient_faults_do_not_reset_the_count() -> None:
    """A throttle is not a success: transient faults around it still count as consecutive."""
    d = Driver(PollPolicy(jitter=0, max_errors=2))
    d.feed(FaultKind.TRANSIENT)
    d.feed(FaultKind.THROTTLE)
    assert isinstance(d.feed(FaultKind.TRANSIENT).error, ServiceUnavailableError)


@pytest.mark.parametrize(
    ("kind", "error"),
    [(FaultKind.DENIED, AccessDeniedError), (FaultKind.INVALID, InvalidRequestError)],
)
def test_fatal_faults_end_the_wait_at_once(kind: FaultKind, error: type[Exception]) -> None:
    """Denied and invalid calls stop the wait on the first occurrence."""
    d = Driver(NO_JITTER)
    d.feed("IN_PROGRESS")
    step = d.feed(kind)
    assert step.outcome is Outcome.ERROR
    assert isinstance(step.error, error)
    assert step.error.job_run == run("IN_PROGRESS")


def test_not_found_is_retried_during_the_grace_period_and_fatal_after() -> None:
    """404s are retried until not_found_grace has passed, the last look at its end."""
    d = Driver(PollPolicy(jitter=0, not_found_grace=10))
    steps = [d.feed(FaultKind.NOT_FOUND) for _ in range(5)]
    # 1 + 2 + 4 = 7 s, then the grace period ends 3 s later: one last look at 10 s.
    assert d.delays == pytest.approx([1, 2, 4, 3])
    assert [s.done for s in steps] == [False, False, False, False, True]
    assert isinstance(steps[-1].error, JobRunNotFoundError)


def test_not_found_after_the_run_was_seen_past_grace_is_fatal() -> None:
    """A run that disappears late in the wait ends it as not found."""
    d = Driver(PollPolicy(jitter=0, not_found_grace=1))
    d.feed("IN_PROGRESS")
    assert isinstance(d.feed(FaultKind.NOT_FOUND).error, JobRunNotFoundError)


def test_the_last_poll_happens_at_the_deadline() -> None:
    """The delay is clamped so the final poll lands exactly on the deadline, then it times out."""
    d = Driver(PollPolicy(jitter=0, timeout=10))
    steps = [d.feed("IN_PROGRESS") for _ in range(5)]
    assert d.delays == pytest.approx([2, 3, 4.5, 0.5])
    assert d.now == pytest.approx(10)
    assert steps[-1].outcome is Outcome.WAIT_TIMEOUT
    assert isinstance(steps[-1].error, WaitTimeoutError)
    assert steps[-1].error.job_run == run("IN_PROGRESS")


def test_a_run_finishing_at_the_deadline_is_still_seen() -> None:
    """The poll at the deadline reports the terminal status rather than a timeout."""
    d = Driver(PollPolicy(jitter=0, timeout=5))
    d.feed("IN_PROGRESS")
    d.feed("IN_PROGRESS")
    assert d.now == pytest.approx(5)
    assert d.feed("SUCCESS").outcome is Outcome.SUCCEEDED


def test_timeout_zero_checks_once() -> None:
    """With timeout 0 the first answer decides: finished, or a wait timeout."""
    assert Driver(PollPolicy(timeout=0)).feed("SUCCESS").outcome is Outcome.SUCCEEDED
    assert Driver(PollPolicy(timeout=0)).feed("IN_PROGRESS").outcome is Outcome.WAIT_TIMEOUT


def test_throttled_at_the_deadline_is_a_wait_timeout() -> None:
    """Throttles never end a wait by themselves, but the deadline still does."""
    d = Driver(PollPolicy(jitter=0, timeout=3))
    d.feed("IN_PROGRESS")
    d.now = 0  # as if that answer came at the start
    d.feed(FaultKind.THROTTLE)  # sleeps 1
    d.feed(FaultKind.THROTTLE)  # sleeps 2, reaching the deadline
    step = d.feed(FaultKind.THROTTLE)
    assert step.outcome is Outcome.WAIT_TIMEOUT
    assert "ThrottlingException" not in str(step.error)  # the kind name is in the test fault
    assert "throttle" in str(step.error)


def test_no_deadline_never_times_out() -> None:
    """timeout=None polls on for as long as the run lasts."""
    d = Driver(PollPolicy(timeout=None, jitter=0))
    for _ in range(3000):
        assert not d.feed("IN_PROGRESS").done
    assert d.now > 24 * 3600


def test_jitter_spreads_delays_within_the_fraction() -> None:
    """At the cap, jitter 0.2 spreads delays over [80 %, 100 %] of it rather than clipping."""
    d = Driver(PollPolicy(jitter=0.2, interval=10, max_interval=10), seed=7)
    for _ in range(50):
        d.feed("IN_PROGRESS")
    assert all(8 <= x <= 10 for x in d.delays)
    assert len(set(d.delays)) == 50


@pytest.mark.parametrize(
    "bad",
    [
        {"interval": 0},
        {"interval": -1},
        {"max_interval": 1, "interval": 2},
        {"multiplier": 0.5},
        {"jitter": 1.5},
        {"timeout": -1},
        {"max_errors": 0},
        {"retry_initial": float("nan")},
        {"not_found_grace": -1},
    ],
)
def test_invalid_policies_are_rejected_with_the_field_named(bad: dict[str, float]) -> None:
    """A policy that cannot work is an InvalidRequestError naming the field."""
    with pytest.raises(InvalidRequestError, match=next(iter(bad))):
        PollPolicy(**bad)  # type: ignore[arg-type]


answers = st.lists(
    st.one_of(
        st.sampled_from(["SCHEDULED", "IN_PROGRESS", "NEW_STATUS"]),
        st.sampled_from([FaultKind.THROTTLE, FaultKind.TRANSIENT]),
    ),
    max_size=60,
)
policies = st.builds(
    PollPolicy,
    timeout=st.one_of(st.none(), st.floats(0, 7200)),
    interval=st.floats(0.01, 60),
    max_interval=st.floats(60, 600),
    multiplier=st.floats(1, 4),
    jitter=st.floats(0, 1),
    retry_initial=st.floats(0.01, 5),
    retry_max=st.floats(5, 60),
    max_errors=st.integers(1, 20),
)


@given(policy=policies, script=answers, seed=st.integers(0, 2**32))
def test_delays_are_never_negative_nor_past_the_cap_nor_past_the_deadline(
    policy: PollPolicy, script: list[str | FaultKind], seed: int
) -> None:
    """Whatever happens, each delay is in [0, cap] and never sleeps past the deadline."""
    d = Driver(policy, seed)
    for answer in script:
        left = d.state.time_left(d.now)
        step = d.feed(answer)
        if step.done:
            break
        cap = policy.retry_max if isinstance(answer, FaultKind) else policy.max_interval
        assert 0 <= step.delay <= cap
        assert step.delay <= left
        if policy.timeout is not None:
            assert d.now <= policy.timeout + 1e-6


@given(policy=policies, n=st.integers(2, 40))
def test_the_unjittered_cadence_grows_monotonically_to_max_interval(
    policy: PollPolicy, n: int
) -> None:
    """Unchanged polls never shorten the base delay, and it reaches the cap."""
    d = Driver(policy.with_timeout(None))
    bases = []
    for _ in range(n):
        d.feed("IN_PROGRESS")
        bases.append(d.state.base)
    assert bases == sorted(bases)
    assert bases[0] == policy.interval
    assert max(bases) <= policy.max_interval
    if policy.multiplier > 1.01 and n >= 40 and policy.max_interval / policy.interval < 1.01**39:
        assert bases[-1] == policy.max_interval


@pytest.mark.parametrize("kind", [FaultKind.THROTTLE, FaultKind.TRANSIENT])
def test_deadline_without_any_status_read_is_service_unavailable(kind: FaultKind) -> None:
    """If no call ever got through, the status could not be read: not a wait timeout."""
    step = Driver(PollPolicy(timeout=0)).feed(kind)
    assert step.outcome is Outcome.ERROR
    assert isinstance(step.error, ServiceUnavailableError)
    assert "before the deadline" in str(step.error)
