"""The shared budget in isolation: token spacing, AIMD decrease and recovery, exact times."""

from __future__ import annotations

import math

import pytest
from hypothesis import given
from hypothesis import strategies as st

from poller import InvalidRequestError, RateLimiter
from poller._limiter import (
    DEFAULT_MAX_RPS,
    AimdSettings,
    BucketState,
    shared_limiter,
    succeeded,
    take,
    throttled,
)


class FakeClock:
    """A clock that moves only when told to."""

    def __init__(self, now: float = 1000.0) -> None:
        self.now = now

    def __call__(self) -> float:
        return self.now


def grants(limiter: RateLimiter, clock: FakeClock, count: int) -> list[float]:
    """Grant times of ``count`` calls taken back to back, sleeping as the limiter asks."""
    times = []
    while len(times) < count:
        delay = limiter.try_acquire()
        if delay:
            clock.now += delay
        else:
            times.append(clock.now)
    return times


def test_first_call_goes_at_once_then_calls_are_spaced_evenly() -> None:
    """A full bucket holds one token: no burst, one call every 1/rate seconds."""
    clock = FakeClock()
    times = grants(RateLimiter(4, clock=clock), clock, 5)
    assert [t - 1000 for t in times] == pytest.approx([0, 0.25, 0.5, 0.75, 1.0])


def test_try_acquire_says_how_long_until_the_next_token_and_takes_none() -> None:
    """A refused acquire returns the exact wait and leaves the bucket as it was."""
    clock = FakeClock()
    limiter = RateLimiter(2, clock=clock)
    assert limiter.try_acquire() == 0.0
    clock.now += 0.1
    assert limiter.try_acquire() == pytest.approx(0.4)
    assert limiter.try_acquire() == pytest.approx(0.4)
    clock.now += 0.4
    assert limiter.try_acquire() == 0.0


def test_a_throttle_halves_the_rate_and_empties_the_bucket() -> None:
    """Multiplicative decrease: 8/s becomes 4/s and the next call waits a full 1/4 s."""
    clock = FakeClock()
    limiter = RateLimiter(8, clock=clock)
    limiter.try_acquire()
    clock.now += 1.0
    limiter.throttled(granted_at=clock.now - 0.01)
    assert limiter.rate == 4
    assert limiter.try_acquire() == pytest.approx(0.25)


def test_throttles_of_calls_sent_before_a_decrease_do_not_decrease_again() -> None:
    """A burst of 429s from calls already in flight halves the rate once, not once each."""
    clock = FakeClock()
    limiter = RateLimiter(16, clock=clock)
    sent = clock.now
    clock.now += 0.5
    for _ in range(5):
        limiter.throttled(granted_at=sent)
    assert limiter.rate == 8
    clock.now += 0.5
    limiter.throttled(granted_at=clock.now)  # sent after the decrease: it counts
    assert limiter.rate == 4


def test_the_rate_never_falls_below_the_floor() -> None:
    """However many throttles, the fleet still polls at min_rps."""
    clock = FakeClock()
    limiter = RateLimiter(10, min_rps=0.5, clock=clock)
    for _ in range(20):
        clock.now += 1
        limiter.throttled(granted_at=clock.now)
    assert limiter.rate == 0.5


def test_successes_restore_the_rate_additively_up_to_the_ceiling() -> None:
    """Additive increase: +increase/rate per success, so about +1/s per second at full use."""
    settings = AimdSettings(max_rps=10)
    state = BucketState(rate=5.0, tokens=0.0, updated=0.0)
    rates = []
    for _ in range(200):
        state = succeeded(settings, state)
        rates.append(state.rate)
    assert rates[0] == pytest.approx(5.2)
    assert rates == sorted(rates)
    assert rates[-1] == 10.0
    # From 5 to 10 takes about (10**2 - 5**2) / 2 = 37.5 successes, not one.
    assert 30 < rates.index(10.0) < 45


def test_aimd_recovers_after_a_throttle_with_sustained_success() -> None:
    """Throttle, then calls that get through: the rate comes back to the budget."""
    clock = FakeClock()
    limiter = RateLimiter(10, clock=clock)
    limiter.throttled(granted_at=clock.now)
    assert limiter.rate == 5
    for _ in range(60):
        grants(limiter, clock, 1)
        limiter.succeeded()
    assert limiter.rate == 10


def test_a_refill_a_rounding_hair_short_of_a_token_still_grants() -> None:
    """At clock readings near 1000 s a 1e-14 s wait cannot move the clock: no spinning."""
    settings = AimdSettings(max_rps=40)
    state, _ = take(BucketState.start(settings, 1000.0), 1000.0)
    now = 1000.0 + ((1000.0 + 0.025) - 1000.0)  # what an event loop's timer lands on
    _, delay = take(state, now)
    assert delay == 0.0


def test_a_clock_stepping_back_mints_no_tokens() -> None:
    """An injected clock that goes backwards leaves the bucket alone."""
    state = BucketState(rate=1.0, tokens=0.0, updated=10.0)
    state, delay = take(state, 5.0)
    assert delay == pytest.approx(1.0)
    assert state.tokens == 0.0


def test_lowering_max_rps_caps_the_current_rate() -> None:
    """Setting the budget below the current rate takes effect at once."""
    limiter = RateLimiter(20, clock=FakeClock())
    limiter.max_rps = 5
    assert (limiter.max_rps, limiter.rate) == (5, 5)


@pytest.mark.parametrize(
    "kwargs",
    [{"max_rps": 0}, {"max_rps": math.inf}, {"min_rps": 0}, {"decrease": 1}, {"increase": -1}],
)
def test_bad_settings_are_rejected(kwargs: dict[str, float]) -> None:
    """A budget that cannot work is an InvalidRequestError naming the setting."""
    with pytest.raises(InvalidRequestError, match=next(iter(kwargs))):
        RateLimiter(**kwargs)


def test_throttled_is_pure_and_keeps_the_rate_within_bounds() -> None:
    """The pure functions return new states and never leave [floor, ceiling]."""
    settings = AimdSettings(max_rps=3, min_rps=1)
    start = BucketState.start(settings, 0.0)
    lowered = throttled(settings, start, 0.0, 1.0)
    assert start.rate == 3
    assert lowered.rate == 1.5
    assert throttled(settings, lowered, 2.0, 2.0).rate == 1


def test_shared_limiter_is_one_per_process_and_max_rps_sets_its_budget() -> None:
    """Every caller gets the same limiter; passing max_rps changes the process's budget."""
    limiter = shared_limiter()
    before = limiter.max_rps
    try:
        assert shared_limiter() is limiter
        assert shared_limiter(3) is limiter
        assert limiter.max_rps == 3
    finally:
        limiter.max_rps = before
    assert DEFAULT_MAX_RPS == 10


@given(
    max_rps=st.integers(1, 50),
    events=st.lists(st.sampled_from(["call", "throttle", "idle"]), min_size=1, max_size=300),
)
def test_no_one_second_window_ever_holds_more_calls_than_the_budget(
    max_rps: int, events: list[str]
) -> None:
    """Whatever mix of throttles and idle time, any [t, t+1) window has <= max_rps grants."""
    clock = FakeClock()
    limiter = RateLimiter(max_rps, clock=clock)
    times: list[float] = []
    for event in events:
        if event == "idle":
            clock.now += 0.37
            continue
        times.extend(grants(limiter, clock, 1))
        if event == "throttle":
            limiter.throttled(granted_at=times[-1])
        else:
            limiter.succeeded()
    for i, start in enumerate(times):
        in_window = [t for t in times[i:] if t < start + 1 - 1e-6]
        assert len(in_window) <= max_rps
