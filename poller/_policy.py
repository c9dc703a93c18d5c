"""The pure core of a wait: the policy, and what happens after each call.

Nothing here does I/O, reads a clock or sleeps. The loops (blocking, async,
Airflow trigger) feed it what a call returned and the time, and it answers
"poll again after N seconds" or "stop, with this outcome". That keeps one
implementation of the semantics in docs/design.md and makes it exact to test.
"""

from __future__ import annotations

import enum
import math
from dataclasses import dataclass, replace
from typing import Protocol

from poller._model import JobRun, Outcome
from poller.errors import (
    AccessDeniedError,
    InvalidRequestError,
    JobRunNotFoundError,
    PollerError,
    ServiceUnavailableError,
    WaitTimeoutError,
)

__all__ = [
    "CallFault",
    "FaultKind",
    "Forecast",
    "Jitter",
    "PollPolicy",
    "Step",
    "WaitState",
    "advance",
    "expire",
    "fail",
]


@dataclass(frozen=True, slots=True)
class PollPolicy:
    """How to wait: the ``[wait]`` and ``[retry]`` settings, durations in seconds.

    ``timeout=None`` waits with no deadline; ``timeout=0`` checks once.
    ``history`` lets a wait learn from the job's past runs (ListJobRuns) when
    to look: rarely while the run is surely still going, on the usual cadence
    around its expected end.
    """

    timeout: float | None = 3600.0
    interval: float = 2.0
    max_interval: float = 30.0
    multiplier: float = 1.5
    jitter: float = 0.2
    not_found_grace: float = 10.0
    retry_initial: float = 1.0
    retry_max: float = 20.0
    max_errors: int = 10
    history: bool = True

    def __post_init__(self) -> None:
        problems = []
        if not isinstance(self.history, bool):
            problems.append(f"history must be True or False, not {self.history!r}")
        for name in ("interval", "max_interval", "retry_initial", "retry_max"):
            value = getattr(self, name)
            if not (math.isfinite(value) and value > 0):
                problems.append(f"{name} must be a positive number of seconds, not {value!r}")
        if self.timeout is not None and not (math.isfinite(self.timeout) and self.timeout >= 0):
            problems.append(f"timeout must be >= 0 seconds or None, not {self.timeout!r}")
        if not (math.isfinite(self.not_found_grace) and self.not_found_grace >= 0):
            problems.append(f"not_found_grace must be >= 0 seconds, not {self.not_found_grace!r}")
        if self.max_interval < self.interval:
            problems.append("max_interval must not be smaller than interval")
        if self.retry_max < self.retry_initial:
            problems.append("retry_max must not be smaller than retry_initial")
        if not (math.isfinite(self.multiplier) and self.multiplier >= 1):
            problems.append(f"multiplier must be >= 1, not {self.multiplier!r}")
        if not (0 <= self.jitter <= 1):
            problems.append(f"jitter must be between 0 and 1, not {self.jitter!r}")
        if isinstance(self.max_errors, bool) or not isinstance(self.max_errors, int):
            problems.append(f"max_errors must be a whole number, not {self.max_errors!r}")
        elif self.max_errors < 1:
            problems.append(f"max_errors must be >= 1, not {self.max_errors!r}")
        if problems:
            raise InvalidRequestError("invalid poll policy: " + "; ".join(problems))

    def with_timeout(self, timeout: float | None) -> PollPolicy:
        """The same policy with another deadline."""
        return replace(self, timeout=timeout)


class FaultKind(enum.Enum):
    """What a failed call means for the wait."""

    THROTTLE = "throttle"  # retried for as long as the deadline allows
    TRANSIENT = "transient"  # retried up to max_errors in a row
    NOT_FOUND = "not_found"  # retried during not_found_grace, fatal after
    DENIED = "denied"  # fatal
    INVALID = "invalid"  # fatal
    DEADLINE = "deadline"  # the call was still unanswered at the deadline: the wait ends


class CallFault(PollerError):
    """A GetJobRun call that failed, classified by the DataZone edge; never leaves poller."""

    def __init__(self, kind: FaultKind, error_type: str, message: str) -> None:
        super().__init__(message)
        self.kind = kind
        self.error_type = error_type


@dataclass(frozen=True, slots=True)
class Step:
    """The core's answer: sleep ``delay`` then poll again, or stop with ``outcome``."""

    delay: float = 0.0
    outcome: Outcome | None = None
    error: PollerError | None = None

    @property
    def done(self) -> bool:
        """True when the wait is over."""
        return self.outcome is not None


@dataclass(frozen=True, slots=True)
class Forecast:
    """What the job's past runs say about this run, on the wait's clock (see ``_history``).

    ``started`` is when the run started; before ``quiet_until`` it is very
    unlikely to have ended; after ``late_after`` it has outlived nearly all of
    its job's past runs, and history says no more.
    """

    started: float
    quiet_until: float
    late_after: float


@dataclass(frozen=True, slots=True)
class WaitState:
    """Everything the core remembers between calls."""

    started: float
    deadline: float | None
    base: float  # the un-jittered cadence delay before the next poll
    polls: int = 0
    throttled: int = 0
    errors_retried: int = 0
    consecutive_errors: int = 0  # transient faults since the last good answer
    retry_attempt: int = 0  # failed calls since the last good answer: the backoff exponent
    backoff_floor: float = 0.0  # the last backoff; the cadence resumes no faster than it
    last: JobRun | None = None

    @classmethod
    def start(cls, policy: PollPolicy, now: float) -> WaitState:
        """The state before the first call, which happens at once."""
        deadline = None if policy.timeout is None else now + policy.timeout
        return cls(started=now, deadline=deadline, base=policy.interval)

    def time_left(self, now: float) -> float:
        """Seconds to the deadline (never negative); infinite without one."""
        return math.inf if self.deadline is None else max(self.deadline - now, 0.0)


class Jitter(Protocol):
    """Where jitter comes from: a ``random.Random``, or anything with its ``uniform``."""

    def uniform(self, a: float, b: float) -> float: ...


def _backoff(policy: PollPolicy, attempt: int) -> float:
    # retry_initial doubling per failed call, capped at retry_max: the formula
    # of tenacity's wait_exponential, written here because the core decides
    # and never sleeps (docs/design.md, "Why the code has this shape"), while
    # tenacity's strategies expect a Retrying loop that sleeps for them. The
    # exponent is bounded so a very long throttle storm cannot overflow.
    return min(policy.retry_initial * 2.0 ** min(attempt - 1, 64), policy.retry_max)


def _jittered(delay: float, jitter: float, cap: float, rng: Jitter) -> float:
    # Spread each delay over [delay*(1-j), delay*(1+j)] so waiters that started
    # together drift apart; at the cap the spread is one-sided rather than
    # clipped, or every waiter at the cap would poll in step again.
    return rng.uniform(delay * (1 - jitter), min(delay * (1 + jitter), cap)) if jitter else delay


def advance(
    policy: PollPolicy,
    state: WaitState,
    run: JobRun,
    now: float,
    rng: Jitter,
    forecast: Forecast | None = None,
    *,
    polled: bool = True,
) -> tuple[WaitState, Step]:
    """After a call that returned ``run`` at ``now``: stop, or poll again after how long.

    With a ``forecast`` (and ``policy.history``), a run still inside its quiet
    window is next looked at as the window ends, however long that is.
    ``polled=False``: the run was seen in its job's listing (a fan-out's
    shared ListJobRuns), not by a call of its own, so it is not counted in
    ``polls``; the cadence moves on as after any look.
    """
    changed = state.last is None or run.status != state.last.status
    # The first answer and any status change restart the cadence at
    # `interval`; a poll that saw nothing new lengthens it. After throttling,
    # it resumes no faster than the backoff that got through.
    base = policy.interval if changed else min(state.base * policy.multiplier, policy.max_interval)
    base = max(base, min(state.backoff_floor, policy.max_interval))
    seen = replace(
        state,
        base=base,
        polls=state.polls + polled,
        consecutive_errors=0,
        retry_attempt=0,
        backoff_floor=0.0,
        last=run,
    )
    if run.outcome is not None:
        return seen, Step(outcome=run.outcome)
    left = state.time_left(now)
    if left <= 0:
        return seen, _timeout(seen)
    delay = _jittered(base, policy.jitter, policy.max_interval, rng)
    quiet = forecast.quiet_until - now if forecast is not None and policy.history else 0.0
    if quiet > delay:
        assert forecast is not None
        # Skip the looks that could only see it still running, then go on at
        # the cadence the plain schedule would have reached by then, so the
        # end is watched as closely as without history. The wake-ups of runs
        # that share a window are spread over up to one such delay, early.
        # (After unchanged looks from the start, the plain delay at age a is
        # interval + (multiplier - 1) * a; base is what the next look multiplies.)
        age = forecast.quiet_until - forecast.started
        resume = min(policy.interval + (policy.multiplier - 1) * age, policy.max_interval)
        seen = replace(seen, base=max(base, resume / policy.multiplier))
        delay = quiet - rng.uniform(0, min(quiet * policy.jitter, resume))
    return seen, Step(delay=min(delay, left))


def fail(
    policy: PollPolicy, state: WaitState, fault: CallFault, now: float, rng: Jitter
) -> tuple[WaitState, Step]:
    """After a call that failed with ``fault`` at ``now``: retry after how long, or stop."""
    state = replace(state, polls=state.polls + 1)
    if fault.kind is FaultKind.DEADLINE:
        return state, expire(state, fault.message)
    if fault.kind is FaultKind.DENIED:
        return state, _error(AccessDeniedError(fault.message, job_run=state.last))
    if fault.kind is FaultKind.INVALID:
        return state, _error(InvalidRequestError(fault.message, job_run=state.last))
    if fault.kind is FaultKind.THROTTLE:
        state = replace(state, throttled=state.throttled + 1)
    elif fault.kind is FaultKind.TRANSIENT:
        errors = state.consecutive_errors + 1
        if errors >= policy.max_errors:
            return state, _error(
                ServiceUnavailableError(
                    f"{errors} transient faults in a row, the last: {fault.error_type}: "
                    f"{fault.message}",
                    job_run=state.last,
                ),
            )
        state = replace(state, consecutive_errors=errors, errors_retried=state.errors_retried + 1)
    else:  # NOT_FOUND: a run just created may not be visible yet.
        grace_left = state.started + policy.not_found_grace - now
        if grace_left <= 0:
            return state, _error(JobRunNotFoundError(fault.message, job_run=state.last))
        state = replace(state, errors_retried=state.errors_retried + 1)
    left = state.time_left(now)
    if left <= 0:
        return state, expire(
            state, f"the last call failed with {fault.error_type}: {fault.message}"
        )
    attempt = state.retry_attempt + 1
    delay = min(_jittered(_backoff(policy, attempt), policy.jitter, policy.retry_max, rng), left)
    if fault.kind is FaultKind.NOT_FOUND:
        # The last look happens as the grace period ends, not after it.
        delay = min(delay, max(state.started + policy.not_found_grace - now, 0.0))
    return replace(state, retry_attempt=attempt, backoff_floor=delay), Step(delay=delay)


def expire(state: WaitState, why: str) -> Step:
    """The deadline has passed with no answer to go on; ``why`` says what the last try met."""
    if state.last is None:
        # No status was ever read, so "still running at the deadline" would be
        # a guess: the honest verdict is that the status could not be read.
        return _error(
            ServiceUnavailableError(f"no status could be read before the deadline; {why}")
        )
    return _timeout(state, why)


def _error(error: PollerError) -> Step:
    return Step(outcome=Outcome.ERROR, error=error)


def _timeout(state: WaitState, why: str | None = None) -> Step:
    # Without a ``why``, the last look saw the run still going: that is the whole story.
    seen = state.last.status if state.last else "never seen"
    detail = f"{why}; last status: {seen}" if why else f"the run was still {seen}"
    error = WaitTimeoutError(
        f"the wait's deadline passed before the run finished ({detail})", job_run=state.last
    )
    return Step(outcome=Outcome.WAIT_TIMEOUT, error=error)
