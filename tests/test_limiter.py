"""The shared budget in isolation: booking spacing, AIMD decrease and recovery, exact times."""

from __future__ import annotations

import asyncio
import itertools
import math

import pytest
from helpers import FakeTime, keep, make_client
from hypothesis import given
from hypothesis import strategies as st

from poller import InvalidRequestError, RateLimiter
from poller._limiter import (
    DEFAULT_MAX_RPS,
    AimdSettings,
    Booking,
    BudgetState,
    budget_for,
    fit,
    succeeded,
    throttled,
    until_booked,
)


def grants(limiter: RateLimiter, clock: FakeTime, count: int) -> list[float]:
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
    clock = FakeTime()
    times = grants(RateLimiter(4, clock=clock), clock, 5)
    assert [t - 1000 for t in times] == pytest.approx([0, 0.25, 0.5, 0.75, 1.0])


def test_a_booking_is_the_earliest_free_time_and_bookings_due_sooner_fill_gaps() -> None:
    """At 2/s a call wanted in 10 s is booked then, and one wanted now still goes now."""
    clock = FakeTime()
    limiter = RateLimiter(2, clock=clock)
    later = limiter.reserve(1010.0)
    now = limiter.reserve(1000.0)
    after = limiter.reserve(1000.0)
    assert [b.at if b else None for b in (later, now, after)] == [1010.0, 1000.0, 1000.5]


def test_a_booking_past_its_latest_time_is_refused() -> None:
    """With ``latest`` given, a time the budget cannot reach by then is not booked."""
    clock = FakeTime()
    limiter = RateLimiter(1, clock=clock)
    assert limiter.reserve(1000.0, latest=1001.0) is not None
    assert limiter.reserve(1000.0, latest=1001.0) is not None
    assert limiter.reserve(1000.0, latest=1001.0) is None


def test_a_throttle_halves_the_rate_and_moves_later_bookings_to_the_new_spacing() -> None:
    """Multiplicative decrease: 8/s becomes 4/s, and calls booked at 8/s move 1/4 s apart."""
    clock = FakeTime()
    limiter = RateLimiter(8, clock=clock)
    booked = [limiter.reserve(clock.now) for _ in range(3)]
    limiter.throttled(granted_at=clock.now)
    assert limiter.rate == 4
    assert [b.at - 1000 for b in booked if b is not None] == pytest.approx([0, 0.25, 0.5])


def test_a_throttled_run_alone_is_never_spaced_beyond_its_spacing_cap() -> None:
    """The floor is one call per spacing_cap: a wait's own retry_max bounds the budget's gap."""
    clock = FakeTime()
    limiter = RateLimiter(10, clock=clock)
    for _ in range(12):
        limiter.throttled(granted_at=clock.now, spacing_cap=0.1)
        clock.now += 0.1
    assert limiter.rate == 10


def test_an_urgent_booking_goes_before_ordinary_ones_and_moves_them_later() -> None:
    """At 2/s with calls booked for 1000..1002, an urgent one takes 1000.5 and the rest move."""
    clock = FakeTime()
    limiter = RateLimiter(2, clock=clock)
    ordinary = [limiter.reserve(1000.0) for _ in range(5)]
    urgent = limiter.reserve(1000.0, urgent=True)
    second = limiter.reserve(1000.0, urgent=True)
    assert urgent is not None
    assert second is not None
    # The call due now may be going out: the urgent ones keep their spacing from it,
    # and their order among themselves.
    assert (urgent.at, second.at) == (1000.5, 1001.0)
    assert [b.at if b else None for b in ordinary] == [1000.0, 1001.5, 1002.0, 1002.5, 1003.0]
    # An ordinary booking made now queues behind all of them.
    later = limiter.reserve(1000.0)
    assert later is not None
    assert later.at == 1003.5


def test_an_urgent_booking_that_moves_one_past_its_latest_time_makes_it_lost() -> None:
    """A booking moved past its ``latest`` by an urgent one is lost, as after a throttle."""
    clock = FakeTime()
    limiter = RateLimiter(1, clock=clock)
    first = limiter.reserve(1000.0)
    tight = limiter.reserve(1000.0, latest=1001.0)
    assert first is not None
    assert tight is not None
    assert not tight.lost
    assert limiter.reserve(1000.0, urgent=True) is not None
    assert tight.at == 1002.0
    assert tight.lost


@given(
    kinds=st.lists(st.booleans(), min_size=1, max_size=80),
    max_rps=st.integers(1, 20),
)
def test_urgent_and_ordinary_bookings_stay_a_spacing_apart(kinds: list[bool], max_rps: int) -> None:
    """Whatever mix of urgent and ordinary bookings, no two are closer than 1/rate."""
    clock = FakeTime()
    limiter = RateLimiter(max_rps, clock=clock)
    bookings = []
    for i, urgent in enumerate(kinds):
        booking = limiter.reserve(clock.now + (i % 3) * 0.3, urgent=urgent)
        assert booking is not None
        bookings.append(booking)
        clock.now += 0.05
    times = sorted(b.at for b in bookings)
    assert all(b - a >= 1 / max_rps - 1e-9 for a, b in itertools.pairwise(times))


def test_a_booking_moved_later_takes_a_sooner_time_given_back_since() -> None:
    """Five calls at 1/s; the first four given back: the fifth, asked again, goes at once."""
    clock = FakeTime()
    limiter = RateLimiter(1, clock=clock)
    early = [limiter.reserve(1000.0) for _ in range(4)]
    late = limiter.reserve(1000.0)
    assert late is not None
    assert late.at == 1004.0
    # Nothing was given back yet: the booking is kept as it is.
    assert limiter.sooner(late, 1000.0) is late
    for booking in early:
        assert booking is not None
        limiter.release(booking)
    sooner = limiter.sooner(late, 1000.0)
    assert sooner.at == 1000.0
    # The old time is free again: a call asked for then gets it.
    again = limiter.reserve(1004.0)
    assert again is not None
    assert again.at == 1004.0


def test_fit_skips_booked_times_closer_than_the_spacing() -> None:
    """The earliest time at least one spacing from every booking, from the given start."""
    booked = [Booking(t, None) for t in (0.0, 1.0, 1.5, 3.0)]
    assert fit(booked, 0.2, 0.5) == (0.5, 1)
    assert fit(booked, 0.9, 0.5) == (2.0, 3)


def test_throttles_of_calls_sent_before_a_decrease_do_not_decrease_again() -> None:
    """A burst of 429s from calls already in flight halves the rate once, not once each."""
    clock = FakeTime()
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
    clock = FakeTime()
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
    clock = FakeTime()
    limiter = RateLimiter(10, clock=clock)
    limiter.throttled(granted_at=clock.now)
    assert limiter.rate == 5
    for _ in range(60):
        grants(limiter, clock, 1)
        limiter.succeeded()
    assert limiter.rate == 10


def test_lowering_max_rps_caps_the_current_rate() -> None:
    """Setting the budget below the current rate takes effect at once."""
    limiter = RateLimiter(20, clock=FakeTime())
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


def test_one_budget_per_account_and_max_rps_sets_it() -> None:
    """Clients of one region, endpoint and key share a budget; another key or region has its own."""
    url = "http://127.0.0.1:9"
    one = budget_for(keep(make_client(url)))
    assert budget_for(keep(make_client(url))) is one
    assert one.max_rps == DEFAULT_MAX_RPS == 10
    other_key = budget_for(keep(make_client(url, aws_access_key_id="other")))
    other_region = budget_for(keep(make_client(url, region_name="eu-west-1")))
    assert len({id(one), id(other_key), id(other_region)}) == 3
    assert budget_for(keep(make_client(url)), 3) is one
    assert one.max_rps == 3
    # A stand-in client without a region or endpoint is an account of its own.
    stand_in = object()
    assert budget_for(stand_in) is budget_for(stand_in) is not budget_for(object())


@given(
    max_rps=st.integers(1, 50),
    events=st.lists(st.sampled_from(["call", "throttle", "idle"]), min_size=1, max_size=300),
)
def test_no_one_second_window_ever_holds_more_calls_than_the_budget(
    max_rps: int, events: list[str]
) -> None:
    """Whatever mix of throttles and idle time, any [t, t+1) window has <= max_rps grants."""
    clock = FakeTime()
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


def test_looking_for_a_sooner_time_for_an_urgent_booking_moves_no_other_booking() -> None:
    """`sooner` that finds nothing better leaves every other booking where it was."""
    clock = FakeTime(now=0.0)
    limiter = RateLimiter(10, clock=clock)
    ordinary = [limiter.reserve(0.0) for _ in range(5)]
    urgent = limiter.reserve(0.0, urgent=True)
    assert urgent is not None
    before = [b.at for b in ordinary if b is not None]
    kept = limiter.sooner(urgent, 0.0)
    assert kept.at == urgent.at
    assert [b.at for b in ordinary if b is not None] == before


def test_a_booking_moves_to_a_free_time_before_it_when_one_is_given_back() -> None:
    """Calls given back leave a hole; `sooner` takes the booking into it."""
    clock = FakeTime(now=0.0)
    limiter = RateLimiter(10, clock=clock)
    first = [limiter.reserve(0.0) for _ in range(5)]
    late = limiter.reserve(0.0)
    assert late is not None
    assert late.at == pytest.approx(0.5)
    for booking in first[2:]:
        assert booking is not None
        limiter.release(booking)
    assert limiter.sooner(late, 0.0).at == pytest.approx(0.2)


def test_a_booking_pushed_well_past_its_time_takes_a_slot_given_back_while_it_sleeps() -> None:
    """`until_booked`: pushed from 0 to 5 s, it looks again after 2 s and takes the freed 2 s."""
    clock = FakeTime(now=0.0)
    limiter = RateLimiter(1, clock=clock)
    early = [limiter.reserve(0.0) for _ in range(5)]  # at 0, 1, 2, 3, 4
    pushed = limiter.reserve(0.0)
    assert pushed is not None
    assert pushed.at == 5.0

    async def sleep(seconds: float) -> None:
        clock.sleep(seconds)
        for booking in early[2:]:  # given back meanwhile: their waits ended
            if booking is not None:
                limiter.release(booking)

    asyncio.run(until_booked(limiter, pushed, since=0.0, asked=0.0, clock=clock, sleep=sleep))
    assert (pushed.at, clock.now) == (2.0, 2.0)
    assert clock.sleeps == [2.0]
