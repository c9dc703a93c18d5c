"""The shared budget in isolation: booking spacing, AIMD decrease and recovery, exact times."""

from __future__ import annotations

import math

import pytest
from hypothesis import given
from hypothesis import strategies as st

from poller import InvalidRequestError, RateLimiter
from poller._limiter import (
    DEFAULT_MAX_RPS,
    AimdSettings,
    Booking,
    BudgetState,
    fit,
    shared_limiter,
    succeeded,
    throttled,
)


class FakeClock:
    """A clock that moves only when told to."""

    def __init__(self, now: float = 1000.0) -> None:
        self.now = now

    def __call__(self) -> float:
        return self.now


def grants(limiter: RateLimiter, clock: FakeClock, count: int) -> list[float]:
    """Times of ``count`` calls booked back to back, each made when its time comes."""
    times = []
    for _ in range(count):
        booking = limiter.reserve(clock.now)
        assert booking is not None
        clock.now = max(clock.now, booking.at)
        times.append(booking.at)
    return times


def test_first_call_goes_at_once_then_calls_are_spaced_evenly() -> None:
    """A full bucket holds one token: no burst, one call every 1/rate seconds."""
    clock = FakeClock()
    times = grants(RateLimiter(4, clock=clock), clock, 5)
    assert [t - 1000 for t in times] == pytest.approx([0, 0.25, 0.5, 0.75, 1.0])


def test_a_booking_is_the_earliest_free_time_and_bookings_due_sooner_fill_gaps() -> None:
    """At 2/s a call wanted in 10 s is booked then, and one wanted now still goes now."""
    clock = FakeClock()
    limiter = RateLimiter(2, clock=clock)
    later = limiter.reserve(1010.0)
    now = limiter.reserve(1000.0)
    after = limiter.reserve(1000.0)
    assert [b.at if b else None for b in (later, now, after)] == [1010.0, 1000.0, 1000.5]


def test_a_booking_past_its_latest_time_is_refused() -> None:
    """With ``latest`` given, a time the budget cannot reach by then is not booked."""
    clock = FakeClock()
    limiter = RateLimiter(1, clock=clock)
    assert limiter.reserve(1000.0, latest=1001.0) is not None
    assert limiter.reserve(1000.0, latest=1001.0) is not None
    assert limiter.reserve(1000.0, latest=1001.0) is None


def test_a_throttle_halves_the_rate_and_moves_later_bookings_to_the_new_spacing() -> None:
    """Multiplicative decrease: 8/s becomes 4/s, and calls booked at 8/s move 1/4 s apart."""
    clock = FakeClock()
    limiter = RateLimiter(8, clock=clock)
    booked = [limiter.reserve(clock.now) for _ in range(3)]
    limiter.throttled(granted_at=clock.now)
    assert limiter.rate == 4
    assert [b.at - 1000 for b in booked if b is not None] == pytest.approx([0, 0.25, 0.5])


def test_a_throttled_run_alone_is_never_spaced_beyond_its_spacing_cap() -> None:
    """The floor is one call per spacing_cap: a wait's own retry_max bounds the budget's gap."""
    clock = FakeClock()
    limiter = RateLimiter(10, clock=clock)
    for _ in range(12):
        limiter.throttled(granted_at=clock.now, spacing_cap=0.1)
        clock.now += 0.1
    assert limiter.rate == 10


def test_fit_skips_booked_times_closer_than_the_spacing() -> None:
    """The earliest time at least one spacing from every booking, from the given start."""
    booked = [Booking(t, None) for t in (0.0, 1.0, 1.5, 3.0)]
    assert fit(booked, 0.2, 0.5) == (0.5, 1)
    assert fit(booked, 0.9, 0.5) == (2.0, 3)


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
    state = BudgetState(rate=5.0)
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
    start = BudgetState.start(settings)
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
