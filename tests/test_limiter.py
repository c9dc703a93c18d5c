"""The shared budget in isolation: booking spacing, AIMD decrease and recovery, exact times."""

from __future__ import annotations

import asyncio
import itertools
import math
import random
from datetime import UTC, datetime, timedelta
from typing import Any

import botocore.session
import pytest
from botocore.credentials import Credentials, RefreshableCredentials
from helpers import FakeTime, keep, make_client
from hypothesis import given
from hypothesis import strategies as st

from poller import InvalidRequestError, RateLimiter
from poller._limiter import (
    ADVISE_EVERY,
    DEFAULT_MAX_RPS,
    TALLY_S,
    AimdSettings,
    Booking,
    BudgetState,
    HeldDown,
    Tally,
    account_key,
    budget_for,
    excused,
    fit,
    held_down,
    next_look,
    rate_at,
    succeeded,
    tallied,
    throttled,
    until_booked,
)
from poller._policy import FaultKind
from poller.testing import VirtualClock, run_virtual


def grants(limiter: RateLimiter, clock: FakeTime, count: int) -> list[float]:
    """Times of ``count`` calls booked back to back, each made when its time comes."""
    times = []
    for _ in range(count):
        booking = limiter.reserve(clock.now)
        assert booking is not None
        clock.now = max(clock.now, limiter.at(booking))
        times.append(limiter.at(booking))
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
    assert [limiter.at(b) if b else None for b in (later, now, after)] == [1010.0, 1000.0, 1000.5]


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
    assert [limiter.at(b) - 1000 for b in booked if b is not None] == pytest.approx([0, 0.25, 0.5])


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
    assert (limiter.at(urgent), limiter.at(second)) == (1000.5, 1001.0)
    assert [limiter.at(b) if b else None for b in ordinary] == [
        1000.0,
        1001.5,
        1002.0,
        1002.5,
        1003.0,
    ]
    # An ordinary booking made now queues behind all of them.
    later = limiter.reserve(1000.0)
    assert later is not None
    assert limiter.at(later) == 1003.5


def test_an_urgent_booking_that_moves_one_past_its_latest_time_makes_it_lost() -> None:
    """A booking moved past its ``latest`` by an urgent one is lost, as after a throttle."""
    clock = FakeTime()
    limiter = RateLimiter(1, clock=clock)
    first = limiter.reserve(1000.0)
    tight = limiter.reserve(1000.0, latest=1001.0)
    assert first is not None
    assert tight is not None
    assert not limiter.lost(tight)
    assert limiter.reserve(1000.0, urgent=True) is not None
    assert limiter.at(tight) == 1002.0
    assert limiter.lost(tight)


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
    times = sorted(limiter.at(b) for b in bookings)
    assert all(b - a >= 1 / max_rps - 1e-9 for a, b in itertools.pairwise(times))


Step = tuple[str, float, bool]


@given(
    steps=st.lists(
        st.tuples(
            st.sampled_from(["reserve", "reserve", "sooner", "release", "claim"]),
            st.floats(0.0, 3.0),
            st.booleans(),
        ),
        min_size=1,
        max_size=120,
    )
)
def test_the_packed_mark_never_changes_a_time_a_search_of_the_whole_calendar_gives(
    steps: list[Step],
) -> None:
    """`reserve` and `sooner` start their search at the packed mark (a saturated calendar
    was searched from the start by each of its bookings every 2 s: a 3,000-wait fleet spent
    three quarters of its time there); at a steady rate, a twin that forgets the mark before
    every step (a search of the whole calendar) books and moves every call to the same times.
    (A rate climbing back after a cut may open a free time between calls packed at the old
    spacing before it has doubled, which the mark then skips: the calls go a little later,
    never closer together.)"""
    clock = FakeTime()
    marked, whole = RateLimiter(10, clock=clock), RateLimiter(10, clock=clock)
    held: list[tuple[Booking, Booking]] = []
    for op, x, urgent in steps:
        whole._packed_until = -math.inf
        if op == "reserve":
            pair = (
                marked.reserve(clock.now + x, urgent=urgent),
                whole.reserve(clock.now + x, urgent=urgent),
            )
            assert pair[0] is not None
            assert pair[1] is not None
            held.append((pair[0], pair[1]))
            assert marked.at(pair[0]) == whole.at(pair[1])
        elif held and op == "sooner":
            one, two = held[int(x * 10) % len(held)]
            due = clock.now + (x / 2 if urgent else 0.0)
            assert marked.sooner(one, due) == whole.sooner(two, due)
        elif held and op == "release":
            one, two = held.pop(int(x * 10) % len(held))
            marked.release(one)
            whole.release(two)
        elif held and op == "claim":
            one, two = held.pop(0)
            clock.now = max(clock.now, marked.at(one))
            assert marked.claim(one) == whole.claim(two)
        clock.now += x / 10
        assert [marked.at(one) for one, _ in held] == [whole.at(two) for _, two in held]


def test_a_sooner_search_that_starts_past_the_mark_leaves_the_free_times_before_it() -> None:
    """At 10/s: a call at 1000, one at 1002 moved to 1001 (asked for then); a call wanted
    at 1000.5 still gets 1000.5, the free time the search from 1001 never looked at."""
    clock = FakeTime()
    limiter = RateLimiter(10, clock=clock)
    first, later = limiter.reserve(1000.0), limiter.reserve(1002.0)
    assert first is not None
    assert later is not None
    assert limiter.sooner(later, 1001.0) == 1001.0
    between = limiter.reserve(1000.5)
    assert between is not None
    assert limiter.at(between) == 1000.5


def test_a_booking_moved_later_takes_a_sooner_time_given_back_since() -> None:
    """Five calls at 1/s; the first four given back: the fifth, asked again, goes at once."""
    clock = FakeTime()
    limiter = RateLimiter(1, clock=clock)
    early = [limiter.reserve(1000.0) for _ in range(4)]
    late = limiter.reserve(1000.0)
    assert late is not None
    assert limiter.at(late) == 1004.0
    # Nothing was given back yet: the booking keeps its time.
    assert limiter.sooner(late, 1000.0) == 1004.0
    for booking in early:
        assert booking is not None
        limiter.release(booking)
    assert limiter.sooner(late, 1000.0) == 1000.0
    assert limiter.at(late) == 1000.0
    # The old time is free again: a call asked for then gets it.
    again = limiter.reserve(1004.0)
    assert again is not None
    assert limiter.at(again) == 1004.0


def test_fit_skips_booked_times_closer_than_the_spacing() -> None:
    """The earliest time at least one spacing from every booking, from the given start."""
    booked = [(t, Booking()) for t in (0.0, 1.0, 1.5, 3.0)]
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
    clock.now += 0.5  # the rate climbs back 0.8/s a second (0.5 per 10/s of budget): 8.4/s
    limiter.throttled(granted_at=clock.now)  # sent after the decrease: it counts
    assert limiter.rate == pytest.approx(4.2)


def test_the_rate_never_falls_below_the_floor() -> None:
    """However many throttles, the fleet still polls at min_rps."""
    clock = FakeTime()
    limiter = RateLimiter(10, min_rps=0.5, clock=clock)
    for _ in range(20):
        clock.now += 1
        limiter.throttled(granted_at=clock.now)
    assert limiter.rate == pytest.approx(0.5, rel=1e-3)


def test_the_rate_climbs_back_in_time_whether_or_not_calls_are_made() -> None:
    """After a cut from 10/s to 5/s the rate is 5 + 0.5/s per second: 6 two seconds on, 10 at
    ten seconds, never more; no call needs to get through for it."""
    settings = AimdSettings(max_rps=10)
    cut = throttled(settings, BudgetState.start(settings), 100.0, 100.0)
    assert (cut.rate, cut.decreased_at, cut.last_good) == (5.0, 100.0, 10.0)
    assert rate_at(settings, cut, 100.0) == 5.0
    assert rate_at(settings, cut, 102.0) == 6.0
    assert rate_at(settings, cut, 110.0) == 10.0
    assert rate_at(settings, cut, 1000.0) == 10.0
    # A success changes nothing of the climb: the rate is time's, not the calls'.
    assert rate_at(settings, succeeded(settings, cut, 101.0), 102.0) == 6.0


def test_a_storm_ends_with_the_rate_one_cut_below_the_last_good_rate_not_at_the_floor() -> None:
    """Five cuts in a row with nothing through take 10/s to the floor; the first call through
    after them starts again at 5/s (one cut below 10), and the climb goes on from there."""
    settings = AimdSettings(max_rps=10, min_rps=0.2)
    state = BudgetState.start(settings)
    for _ in range(5):
        state = throttled(settings, state, 100.0, 100.0)
    assert state.cuts == 5
    assert state.last_good == 10.0
    assert rate_at(settings, state, 100.0) == 0.3125
    after = succeeded(settings, state, 106.0)
    assert (after.rate, after.decreased_at, after.cuts) == (5.0, 106.0, 0)
    assert rate_at(settings, after, 108.0) == 6.0
    # One cut, then a call through: no storm, the climb is not moved.
    once = throttled(settings, BudgetState.start(settings), 100.0, 100.0)
    assert succeeded(settings, once, 101.0).rate == 5.0


def test_the_floor_of_one_call_per_retry_max_holds_for_a_wait_alone_only() -> None:
    """With at most one call booked ahead the floor is 1/spacing_cap; with more, min_rps."""
    settings = AimdSettings(max_rps=10, min_rps=0.2)
    assert settings.floor(0.1, pending=0) == 10
    assert settings.floor(0.1, pending=1) == 10
    assert settings.floor(0.1, pending=2) == 0.2
    assert settings.floor(0.5) == 2
    assert settings.floor(None, pending=0) == 0.2
    assert settings.floor(0.01) == 10  # never above the ceiling
    busy = throttled(settings, BudgetState(rate=10.0), 1.0, 1.0, spacing_cap=0.1, pending=5)
    alone = throttled(settings, BudgetState(rate=10.0), 1.0, 1.0, spacing_cap=0.1, pending=1)
    assert (busy.rate, busy.not_before) == (5.0, 1.2)
    assert (alone.rate, alone.not_before) == (10.0, 1.1)
    # Down to the floor and never up: a budget already below it stays where it is.
    assert throttled(settings, BudgetState(rate=4.0), 1.0, 1.0, 0.1, pending=0).rate == 4.0


def test_a_busy_budget_comes_down_below_one_call_per_retry_max() -> None:
    """Calls booked ahead: throttles with a 100 ms retry_max halve 10/s down to its share."""
    clock = FakeTime()
    limiter = RateLimiter(10, clock=clock)
    for _ in range(20):
        limiter.reserve(clock.now + 5)  # other waits' calls, booked ahead
    rates = []
    for _ in range(4):
        clock.now += 1
        limiter.throttled(granted_at=clock.now, spacing_cap=0.1)
        rates.append(limiter.rate)
    # Each second between the cuts the rate climbs 0.5/s: 10, 5.5, 3.25, 2.125 before them.
    assert rates == [5, 2.75, 1.625, 1.0625]


def test_once_the_rate_doubles_a_booking_fits_between_calls_booked_at_the_old_spacing() -> None:
    """Calls respaced at 2/s, then the rate back at 4/s: a new call goes in a gap, not last."""
    clock = FakeTime()
    limiter = RateLimiter(4, clock=clock)
    booked = [limiter.reserve(clock.now + 10) for _ in range(4)]
    limiter.throttled(granted_at=clock.now)
    assert [limiter.at(b) - 1010 for b in booked if b is not None] == [0, 0.5, 1.0, 1.5]
    last = limiter.reserve(clock.now + 10)
    assert last is not None
    assert limiter.at(last) == 1012.0
    clock.now += 10  # the climb back: 2/s + 0.2/s a second (0.5 per 10/s of budget)
    assert limiter.rate == pytest.approx(4)
    gap = limiter.reserve(clock.now)
    assert gap is not None
    assert limiter.at(gap) == pytest.approx(1010.25)


@given(
    rates=st.tuples(st.floats(1, 20), st.floats(1, 20)),
    events=st.lists(
        st.tuples(st.sampled_from(["success", "throttle"]), st.floats(0, 2)), max_size=200
    ),
)
def test_two_budgets_fed_the_same_throttles_and_successes_only_get_closer(
    rates: tuple[float, float], events: list[tuple[str, float]]
) -> None:
    """AIMD favours no one: the gap between two rates never grows past where it started.

    Two processes on one account see the account's answers at the same
    moments; whatever they are, the faster one never pulls away.
    """
    settings = AimdSettings(max_rps=20, min_rps=1)
    states = [BudgetState(rate=r, decreased_at=0.0, last_good=r) for r in rates]
    first = abs(rates[0] - rates[1])
    now = 0.0
    for kind, dt in events:
        now += dt
        if kind == "success":
            states = [succeeded(settings, s, now) for s in states]
        else:
            states = [throttled(settings, s, now, now, 0.1, pending=10) for s in states]
        after = abs(rate_at(settings, states[0], now) - rate_at(settings, states[1], now))
        assert after <= first + 1e-9  # climbing, cut, or starting again after a storm


def test_lowering_max_rps_caps_the_current_rate() -> None:
    """Setting the budget below the current rate takes effect at once."""
    limiter = RateLimiter(20, clock=FakeTime())
    limiter.max_rps = 5
    assert (limiter.max_rps, limiter.rate) == (5, 5)


def test_raising_max_rps_of_a_budget_never_cut_takes_effect_at_once() -> None:
    """A budget made at the default 10/s, then set to 40/s (`budget_for(client, 40)` after
    an earlier wait made it): 40/s now, not 10/s until a throttle that may never come. One
    that was cut climbs back to the new ceiling in time."""
    clock = FakeTime()
    limiter = RateLimiter(10, clock=clock)
    limiter.max_rps = 40
    assert limiter.rate == 40
    limiter.throttled(clock.now)
    assert limiter.rate == 20
    clock.now += 60.0
    assert limiter.rate == 40


@pytest.mark.parametrize(
    "kwargs",
    [
        {"max_rps": 0},
        {"max_rps": math.inf},
        {"min_rps": 0},
        {"decrease": 1},
        {"increase": -1},
        {"others_throttled": 0.6},
        {"others_throttled": -0.1},
    ],
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
    assert throttled(settings, lowered, 1.0, 1.0).rate == 1
    assert rate_at(settings, lowered, 1e9) == 3


def test_other_clients_share_excuses_as_many_throttles_as_chance_gives_it_and_no_more() -> None:
    """Told 20 %, up to 20 % of the stretch's calls plus two binomial deviations is excused."""
    told = AimdSettings(max_rps=40, others_throttled=0.2)
    assert [excused(told, 1, 1), excused(told, 2, 2)] == [True, False]
    assert [excused(told, 20, 7), excused(told, 20, 8)] == [True, False]
    assert [excused(told, 200, 51), excused(told, 200, 52)] == [True, False]
    assert not excused(AimdSettings(max_rps=40), 200, 1)  # not told: no throttle is excused


@given(share=st.floats(0.0, 0.5), calls=st.integers(5, 10_000))
def test_a_stretch_of_throttles_only_is_never_excused_past_four_calls(
    share: float, calls: int
) -> None:
    """A storm or the budget's own overload cuts whatever share other clients are told to
    have: five throttles in a row are never within it."""
    assert not excused(AimdSettings(others_throttled=share), calls, calls)


def test_a_budget_told_of_other_clients_throttles_keeps_its_rate_through_their_share() -> None:
    """Told 20 %, a 40/s budget keeps 40/s through one throttle in five calls, and a run of
    throttles beyond that share still halves it; not told, the first throttle halves it."""
    told = AimdSettings(max_rps=40, others_throttled=0.2)
    state = BudgetState.start(told)
    for i in range(50):
        now = i * 0.025
        if i % 5 == 4:
            state = throttled(told, state, now, now + 0.01)
        else:
            state = succeeded(told, state, now + 0.01)
        assert rate_at(told, state, now + 0.01) == 40
    assert (state.calls, state.throttles) == (50, 10)
    for i in range(50, 60):
        state = throttled(told, state, i * 0.025, i * 0.025 + 0.01)
    assert rate_at(told, state, 1.5) < 40
    plain = AimdSettings(max_rps=40)
    assert throttled(plain, BudgetState.start(plain), 0.0, 0.01).rate == 20


def test_budget_for_sets_other_clients_share_on_the_accounts_budgets() -> None:
    """``others_throttled`` is set, as ``max_rps`` is, on the account's budget and on those
    made after it; left out, it stays as it was."""
    url = "http://127.0.0.1:9"
    one = budget_for(keep(make_client(url)), others_throttled=0.1)
    assert one.others_throttled == 0.1
    assert budget_for(keep(make_client(url)), 5).others_throttled == 0.1
    assert budget_for(keep(make_client(url, region_name="eu-west-1"))).others_throttled == 0.1
    budget_for(keep(make_client(url)), others_throttled=0.0)
    assert one.others_throttled == 0.0


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


def test_a_client_keeps_its_accounts_budget_when_its_temporary_credentials_are_refreshed() -> None:
    """An assumed role's credentials get a new access key id at each refresh; the client stays
    on its account's budget (each refresh made it a new budget, and a new fleet and call pool
    that were never dropped), and its key stays its account's for other clients too."""
    keys = itertools.count()

    def fetch() -> dict[str, str]:
        key = next(keys)
        expiry = datetime.now(UTC) + timedelta(seconds=3600 if key else 0)  # the first expired
        return {
            "access_key": f"ASIAEXAMPLE{key:09d}",
            "secret_key": "secret",
            "token": "token",
            "expiry_time": expiry.isoformat(),
        }

    credentials = RefreshableCredentials.create_from_metadata(fetch(), fetch, "assume-role")
    session = botocore.session.get_session()
    session._credentials = credentials
    url = "http://127.0.0.1:9"
    client = keep(session.create_client("datazone", endpoint_url=url, region_name="us-east-1"))
    before, key = budget_for(client), account_key(client)
    assert credentials.access_key == "ASIAEXAMPLE000000001"  # reading it refreshed them
    assert budget_for(client) is before
    assert account_key(client) == key


def test_clients_whose_credentials_name_one_account_share_its_budget_whatever_their_keys() -> None:
    """Two sessions of one assumed role hold different temporary keys of one account: one
    budget (a budget each, as two accounts); another account's credentials get their own."""
    url = "http://127.0.0.1:9"

    def client(key: str, account: str) -> Any:
        session = botocore.session.get_session()
        session._credentials = Credentials(key, "secret", "token", account_id=account)
        return keep(session.create_client("datazone", endpoint_url=url, region_name="us-east-1"))

    one = budget_for(client("ASIAONE", "111122223333"))
    assert budget_for(client("ASIATWO", "111122223333")) is one
    assert budget_for(client("ASIAONE", "444455556666")) is not one


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


def share_one_account(
    budgets: int, account_rps: float, seconds: float, retry_max: float
) -> tuple[list[int], int, list[Said]]:
    """Busy budgets of 10/s (30 waits each, always wanting a call) on one account.

    Each call leaves at its booked time and reaches the account up to 20 ms
    later (seeded); the account answers as the simulator's throttle does (a
    token bucket holding one second of calls); a throttled wait books its
    retry ``retry_max`` later. Returns each budget's calls that got through,
    the throttled calls of all, and what each budget's reports logged.
    """
    rng = random.Random(0)
    clock = FakeTime()
    limiters = [RateLimiter(10, clock=clock) for _ in range(budgets)]
    loggers = [Said() for _ in range(budgets)]
    waits: list[tuple[int, Booking | None]] = [
        (k, limiters[k].reserve(clock.now)) for k in range(budgets) for _ in range(30)
    ]
    tokens, filled_at = account_rps, clock.now
    through, refused = [0] * budgets, 0
    end = clock.now + seconds
    while clock.now < end:
        i = min(
            range(len(waits)),
            key=lambda w: math.inf if (b := waits[w][1]) is None else limiters[waits[w][0]].at(b),
        )
        k, booking = waits[i]
        assert booking is not None
        clock.now = limiters[k].at(booking)
        arrives = clock.now + rng.uniform(0, 0.02)
        tokens = min(account_rps, tokens + max(arrives - filled_at, 0) * account_rps)
        filled_at = max(filled_at, arrives)
        if tokens >= 1:
            tokens -= 1
            through[k] += 1
            limiters[k].report(clock.now, None, retry_max, loggers[k])
            waits[i] = (k, limiters[k].reserve(clock.now))
        else:
            refused += 1
            limiters[k].report(clock.now, FaultKind.THROTTLE, retry_max, loggers[k])
            waits[i] = (k, limiters[k].reserve(clock.now + retry_max))
    return through, refused, loggers


@pytest.mark.parametrize("retry_max", [20.0, 0.1])
def test_busy_budgets_on_one_account_share_it_with_few_throttles(retry_max: float) -> None:
    """Four budgets of 10/s on a 20/s account for 4 min: the account used, under 5 % refused,
    and each budget at least half of an even share.

    With a 100 ms retry_max the old floor (one call per retry_max for the
    whole budget) held the first budget at 10/s: 57 % of calls refused, and
    the last budget got 1 % of the calls.
    """
    through, refused, _ = share_one_account(4, 20.0, 240.0, retry_max)
    total = sum(through)
    assert total >= 0.9 * 20 * 240
    assert refused / (total + refused) < 0.05
    assert min(through) >= 0.5 * total / 4


def test_busy_budgets_that_overcommit_one_account_each_say_they_are_held_down() -> None:
    """Four budgets of 10/s on a 20/s account: each logs one ``budget_held_down`` in 4 min,
    under its ``max_rps`` (the sum of theirs is twice the account's); one budget alone on
    the account, never held down, logs none."""
    _, _, loggers = share_one_account(4, 20.0, 240.0, 20.0)
    for logger in loggers:
        assert [event for event, _ in logger.said] == ["budget_held_down"]
        assert logger.said[0][1]["rate"] < 10
    _, _, (alone,) = share_one_account(1, 20.0, 240.0, 20.0)
    assert alone.said == []


def test_looking_for_a_sooner_time_for_an_urgent_booking_moves_no_other_booking() -> None:
    """`sooner` that finds nothing better leaves every other booking where it was."""
    clock = FakeTime(now=0.0)
    limiter = RateLimiter(10, clock=clock)
    ordinary = [limiter.reserve(0.0) for _ in range(5)]
    urgent = limiter.reserve(0.0, urgent=True)
    assert urgent is not None
    before = [limiter.at(b) for b in ordinary if b is not None]
    at = limiter.at(urgent)
    assert limiter.sooner(urgent, 0.0) == at == limiter.at(urgent)
    assert [limiter.at(b) for b in ordinary if b is not None] == before


def test_a_booking_moves_to_a_free_time_before_it_when_one_is_given_back() -> None:
    """Calls given back leave a hole; `sooner` takes the booking into it."""
    clock = FakeTime(now=0.0)
    limiter = RateLimiter(10, clock=clock)
    first = [limiter.reserve(0.0) for _ in range(5)]
    late = limiter.reserve(0.0)
    assert late is not None
    assert limiter.at(late) == pytest.approx(0.5)
    for booking in first[2:]:
        assert booking is not None
        limiter.release(booking)
    assert limiter.sooner(late, 0.0) == pytest.approx(0.2)


def test_a_booking_pushed_well_past_its_time_takes_a_slot_given_back_while_it_sleeps() -> None:
    """`until_booked`: pushed from 0 to 5 s, it looks again after 2 s and takes the freed 2 s."""
    clock = FakeTime(now=0.0)
    limiter = RateLimiter(1, clock=clock)
    early = [limiter.reserve(0.0) for _ in range(5)]  # at 0, 1, 2, 3, 4
    pushed = limiter.reserve(0.0)
    assert pushed is not None
    assert limiter.at(pushed) == 5.0

    async def sleep(seconds: float) -> None:
        clock.sleep(seconds)
        for booking in early[2:]:  # given back meanwhile: their waits ended
            if booking is not None:
                limiter.release(booking)

    went = asyncio.run(until_booked(limiter, pushed, asked=0.0, clock=clock, sleep=sleep))
    assert (went, clock.now) == (2.0, 2.0)
    assert clock.sleeps == [2.0]


def test_the_next_look_doubles_behind_a_packed_calendar_up_to_four_rechecks_else_resets() -> None:
    """Packed: 1 -> 2 -> 4 -> 8 -> 8 s for a 2 s recheck; anything else: back to 2 s."""
    looks = [1.0]
    for _ in range(4):
        looks.append(next_look(looks[-1], 2.0, packed=True))
    assert looks == [1.0, 2.0, 4.0, 8.0, 8.0]
    assert next_look(8.0, 2.0, packed=False) == 2.0


def test_a_booking_behind_a_packed_calendar_looks_for_a_sooner_time_less_and_less_often() -> None:
    """`until_booked` at 1/s behind 30 calls booked back to back: it looks again after 2, 4,
    then every 8 s, not every 2 s (a saturated budget's thousands of bookings woke every
    2 s each: most of a 2,000-wait process's CPU), and goes at its time."""
    clock = FakeTime(now=0.0)
    limiter = RateLimiter(1, clock=clock)
    for _ in range(30):
        limiter.reserve(0.0)
    pushed = limiter.reserve(0.0)
    assert pushed is not None
    went = asyncio.run(
        until_booked(limiter, pushed, asked=0.0, clock=clock, sleep=clock.async_sleep)
    )
    assert went == 30.0
    assert clock.sleeps == [2.0, 4.0, 8.0, 8.0, 8.0]


def test_calls_whose_times_passed_while_the_loop_was_held_go_out_spaced_not_together() -> None:
    """Five calls booked 0.2 s apart, the loop held up 1.5 s: they go 0.2 s apart from then on.

    Sent together, they would be the burst the calendar is there to prevent
    (a server allowing 5/s with a one-second bucket would take them only if
    its bucket were full).
    """
    clock = VirtualClock(100.0)
    limiter = RateLimiter(5, clock=clock)
    bookings = [limiter.reserve(100.0) for _ in range(5)]
    later = limiter.reserve(101.9)  # an ordinary call booked for after the hold-up
    assert [limiter.at(b) if b else None for b in bookings] == pytest.approx(
        [100, 100.2, 100.4, 100.6, 100.8]
    )
    clock.now = 101.5  # the loop was held up: every one of those times has passed
    went: list[float] = []
    granted: dict[Booking, float | None] = {}

    async def call(booking: Booking | None) -> None:
        assert booking is not None
        asked = limiter.at(booking)
        granted[booking] = await until_booked(
            limiter, booking, asked=asked, clock=clock, sleep=asyncio.sleep
        )
        went.append(clock())

    async def all_of_them() -> None:
        await asyncio.gather(*(call(b) for b in [*bookings, later]))

    run_virtual(all_of_them(), clock)
    assert went == pytest.approx([101.5, 101.7, 101.9, 102.1, 102.3, 102.5])
    # The late ones were booked again, the later one moved behind them: their
    # times are when their calls went (what a throttle of theirs is dated by).
    assert [granted[b] for b in [*bookings[1:], later] if b] == pytest.approx(went[1:])


def test_a_booking_whose_waiter_is_cancelled_is_given_back() -> None:
    """A watcher stopped while it waits for its turn (`until_booked` cancelled): its slot
    is free for the next call, and the calendar holds no ticket of it (it kept both)."""
    clock = VirtualClock(0.0)
    limiter = RateLimiter(1, clock=clock)
    first = limiter.reserve(0.0)  # at 0
    waiting = limiter.reserve(0.0)  # at 1
    assert first is not None
    assert waiting is not None

    async def cancelled() -> None:
        task = asyncio.create_task(
            until_booked(limiter, waiting, asked=0.0, clock=clock, sleep=asyncio.sleep)
        )
        await asyncio.sleep(0.5)
        task.cancel()
        with pytest.raises(asyncio.CancelledError):
            await task

    run_virtual(cancelled(), clock)
    after = limiter.reserve(clock())
    assert after is not None
    assert limiter.at(after) == 1.0  # the cancelled one's slot
    with pytest.raises(KeyError):
        limiter.at(waiting)


def steady(cut_at: list[float], *, calls: int = 40, throttles: int = 4, rate: float = 2.0) -> Tally:
    """A stretch from 0 of ``calls`` calls at ``rate``, the first ``throttles`` throttled,
    those at ``cut_at`` cutting the rate."""
    tally = Tally(start=0.0)
    for i in range(calls):
        now = cut_at[i] if i < len(cut_at) else TALLY_S * i / calls
        tally = tallied(tally, now, rate, throttled=i < throttles, cut=i < len(cut_at))
    return tally


def test_a_stretch_cut_in_three_of_its_quarters_says_the_budget_is_held_down() -> None:
    """Cuts at 5, 20 and 50 s (quarters 0, 1 and 3), 4 of 40 calls throttled, all at 2/s:
    held down at exactly 2/s and a tenth throttled, once the stretch is a minute long."""
    tally = steady([5.0, 20.0, 50.0])
    assert tally.cut_quarters == 0b1011
    assert held_down(tally, TALLY_S, -math.inf) == HeldDown(rate=2.0, throttled=0.1)
    assert held_down(tally, TALLY_S - 1, -math.inf) is None  # not a minute yet


@pytest.mark.parametrize(
    ("why", "tally", "advised_at"),
    [
        ("one storm: cuts in two quarters", steady([5.0, 6.0, 20.0]), -math.inf),
        ("too few calls to judge", steady([5.0, 20.0, 50.0], calls=19), -math.inf),
        ("a storm's share throttled", steady([5.0, 20.0, 50.0], throttles=20), -math.inf),
        ("said less than ADVISE_EVERY ago", steady([5.0, 20.0, 50.0]), TALLY_S - ADVISE_EVERY + 1),
    ],
)
def test_a_stretch_that_is_not_held_down_all_along_says_nothing(
    why: str, tally: Tally, advised_at: float
) -> None:
    """Each way short of "held down" is None."""
    assert held_down(tally, TALLY_S, advised_at) is None, why


class Said:
    """A logger that keeps its warnings."""

    def __init__(self) -> None:
        self.said: list[tuple[str, dict[str, Any]]] = []

    def warning(self, event: str, **fields: Any) -> None:
        self.said.append((event, fields))


def test_a_budget_held_down_says_so_once_on_the_logger_it_is_given() -> None:
    """A budget cut by every tenth call for two minutes logs one warning on the logger its
    report names (ADVISE_EVERY keeps the second minute quiet); a healthy one logs none."""
    for others in (0.1, 0.0):
        clock = FakeTime()
        limiter = RateLimiter(10, clock=clock)
        logger = Said()
        said = logger.said

        n, start = 0, clock.now
        while clock.now < start + 2 * TALLY_S:
            booking = limiter.reserve(clock.now)
            assert booking is not None
            clock.now = max(clock.now, limiter.at(booking))
            granted = limiter.claim(booking)
            if granted is None:
                continue
            n += 1
            kind = FaultKind.THROTTLE if others and n % round(1 / others) == 0 else None
            limiter.report(granted, kind, 20.0, logger)
        if others:
            assert [event for event, _ in said] == ["budget_held_down"]
            fields = said[0][1]
            assert fields["max_rps"] == 10
            assert fields["others_throttled"] == 0
            assert fields["rate"] < 7
            assert 0.05 < fields["throttled"] < 0.2
        else:
            assert said == []
