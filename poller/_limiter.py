"""The shared request budget: a token bucket whose rate adapts to throttling (AIMD).

DataZone throttles per account, not per wait, so a thousand waits that each
poll "politely" still add up to a thousand times the rate. Every fan-out wait
in a process takes its GetJobRun calls from one `RateLimiter`: at most
``rate`` calls a second, spaced evenly (the bucket holds a single token, so
there is no burst and no one-second window ever sees more than the budget).

The rate adapts like TCP's congestion window. A ThrottlingException halves
it (multiplicative decrease) and empties the bucket; each call that gets
through adds ``increase / rate`` back (additive increase: about ``increase``
requests a second more for every second of throttle-free calls at the current
rate), up to ``max_rps``. A fleet whose budget is set above the service's
real limit therefore converges to that limit instead of hammering it.

The arithmetic is pure functions of a frozen `BucketState` and the time;
`RateLimiter` only adds a clock (injectable) and a lock, so one limiter can be
shared by several event loops and threads.
"""

from __future__ import annotations

import math
import threading
import time
from dataclasses import dataclass, replace

from poller._session import Clock
from poller.errors import InvalidRequestError

__all__ = [
    "DEFAULT_MAX_RPS",
    "AimdSettings",
    "BucketState",
    "RateLimiter",
    "shared_limiter",
]

#: The default budget, in GetJobRun calls a second for the whole process.
#: DataZone does not publish its GetJobRun quota; 10/s is below the steady
#: rate AWS control-plane read APIs commonly allow per account, leaves room for
#: the console and other tools sharing the account's quota, and still polls
#: 300 runs every 30 s. AIMD only ever lowers it when the service says so.
DEFAULT_MAX_RPS = 10.0
_MIN_RPS = 0.2
_DECREASE = 0.5
_INCREASE = 1.0


@dataclass(frozen=True, slots=True)
class AimdSettings:
    """How the rate adapts: ceiling and floor (calls/s), decrease factor, increase step."""

    max_rps: float = DEFAULT_MAX_RPS
    # Never stall completely: even a badly throttled fleet polls now and then.
    min_rps: float = _MIN_RPS
    decrease: float = _DECREASE
    increase: float = _INCREASE

    def __post_init__(self) -> None:
        problems = []
        if not (math.isfinite(self.max_rps) and self.max_rps > 0):
            problems.append(f"max_rps must be a positive number, not {self.max_rps!r}")
        if not (math.isfinite(self.min_rps) and self.min_rps > 0):
            problems.append(f"min_rps must be a positive number, not {self.min_rps!r}")
        if not (0 < self.decrease < 1):
            problems.append(f"decrease must be between 0 and 1, not {self.decrease!r}")
        if not (math.isfinite(self.increase) and self.increase >= 0):
            problems.append(f"increase must be >= 0, not {self.increase!r}")
        if problems:
            raise InvalidRequestError("invalid rate limit: " + "; ".join(problems))

    @property
    def floor(self) -> float:
        """The lowest rate AIMD may reach; never above the ceiling."""
        return min(self.min_rps, self.max_rps)


@dataclass(frozen=True, slots=True)
class BucketState:
    """The bucket between calls: current rate, tokens (0..1), and when they were counted."""

    rate: float
    tokens: float
    updated: float
    # Throttles of calls granted before the last decrease say nothing about
    # the new rate; remembering when it happened stops one burst of 429s from
    # halving the rate once per call that was already in flight.
    decreased_at: float = -math.inf

    @classmethod
    def start(cls, settings: AimdSettings, now: float) -> BucketState:
        """A full bucket at the ceiling: the first call goes at once."""
        return cls(rate=settings.max_rps, tokens=1.0, updated=now)


# Float rounding can leave a refill a hair short of a whole token, and a
# wait of 1e-14 s at a clock reading of 1000 s does not move the clock: count
# "nearly one" as one so a waiter never spins on a delay the clock cannot show.
_WHOLE = 1.0 - 1e-9


def _refilled(state: BucketState, now: float) -> BucketState:
    # A clock that steps back (an injected one) must not mint tokens.
    elapsed = max(now - state.updated, 0.0)
    return replace(state, tokens=min(1.0, state.tokens + elapsed * state.rate), updated=now)


def take(state: BucketState, now: float) -> tuple[BucketState, float]:
    """Take a token if there is one (delay 0.0); else the seconds until there will be."""
    state = _refilled(state, now)
    if state.tokens >= _WHOLE:
        return replace(state, tokens=max(state.tokens - 1.0, 0.0)), 0.0
    return state, (1.0 - state.tokens) / state.rate


def throttled(
    settings: AimdSettings, state: BucketState, granted_at: float, now: float
) -> BucketState:
    """A call granted at ``granted_at`` was throttled: halve the rate and empty the bucket."""
    if granted_at < state.decreased_at:
        return state
    state = _refilled(state, now)
    rate = max(state.rate * settings.decrease, settings.floor)
    return replace(state, rate=rate, tokens=0.0, decreased_at=now)


def succeeded(settings: AimdSettings, state: BucketState) -> BucketState:
    """A call got through: nudge the rate back up towards the ceiling."""
    rate = min(state.rate + settings.increase / state.rate, settings.max_rps)
    return replace(state, rate=rate)


class RateLimiter:
    """A token bucket with AIMD, shared by every wait that is given it; thread-safe.

    ``max_rps`` is the ceiling (the budget); ``rate`` is what throttling has
    left of it right now. ``clock`` (monotonic seconds) is injectable so tests
    and simulated-time benchmarks run it exactly.
    """

    def __init__(
        self,
        max_rps: float = DEFAULT_MAX_RPS,
        *,
        min_rps: float = _MIN_RPS,
        decrease: float = _DECREASE,
        increase: float = _INCREASE,
        clock: Clock | None = None,
    ) -> None:
        self._settings = AimdSettings(
            max_rps=float(max_rps), min_rps=min_rps, decrease=decrease, increase=increase
        )
        # Looked up per limiter, not bound as a default, so freezegun can patch it.
        self._clock = clock if clock is not None else time.monotonic
        self._lock = threading.Lock()
        self._state = BucketState.start(self._settings, self._clock())

    @property
    def clock(self) -> Clock:
        """The clock the limiter reads; waits using it must measure time the same way."""
        return self._clock

    @property
    def max_rps(self) -> float:
        """The budget: the rate never grows past it."""
        return self._settings.max_rps

    @max_rps.setter
    def max_rps(self, value: float) -> None:
        with self._lock:
            self._settings = replace(self._settings, max_rps=float(value))
            self._state = replace(self._state, rate=min(self._state.rate, self._settings.max_rps))

    @property
    def rate(self) -> float:
        """The rate allowed right now, in calls a second."""
        return self._state.rate

    def try_acquire(self) -> float:
        """Take a token and return 0.0, or return the seconds until one is due (taking none)."""
        with self._lock:
            self._state, delay = take(self._state, self._clock())
        return delay

    def throttled(self, granted_at: float) -> None:
        """Report that a call granted at ``granted_at`` (this clock) was throttled."""
        with self._lock:
            self._state = throttled(self._settings, self._state, granted_at, self._clock())

    def succeeded(self) -> None:
        """Report that a call got through."""
        with self._lock:
            self._state = succeeded(self._settings, self._state)


_shared: RateLimiter | None = None
_shared_lock = threading.Lock()


def shared_limiter(max_rps: float | None = None) -> RateLimiter:
    """The process-wide limiter every fan-out wait uses unless given another.

    ``max_rps`` sets the process's budget (the last setting wins), so a CLI
    flag or a config value applies to every wait the process runs.
    """
    global _shared  # noqa: PLW0603 - one budget per process is the point
    with _shared_lock:
        if _shared is None:
            _shared = RateLimiter(max_rps if max_rps is not None else DEFAULT_MAX_RPS)
        elif max_rps is not None and max_rps != _shared.max_rps:
            _shared.max_rps = max_rps
        return _shared
