"""The shared request budget: a calendar of call times whose spacing adapts to throttling (AIMD).

DataZone throttles per account, not per wait, so a thousand waits that each
poll "politely" still add up to a thousand times the rate. Every fan-out wait
in a process books its GetJobRun calls with one `RateLimiter`: at most
``rate`` calls a second, spaced evenly (no two booked calls are closer than
``1 / rate`` seconds, so there is no burst and no one-second window ever sees
more than the budget).

A wait books its next call when it knows when it wants it: `reserve` returns
the earliest free time at or after then, and that booking is kept. So the
wait knows, and logs, the real time until its next call, queueing included;
and the waits due soonest go first, whatever order they asked in. When the
time comes, `claim` lets the call go unless it is late and another call has
just gone (a held-up loop wakes every booking whose time passed): then it is
booked again a spacing on, so bookings never go out together as a burst.

The rate adapts like TCP's congestion window. A ThrottlingException halves
it (multiplicative decrease; once per burst) and keeps the next booking a
full new spacing away; the rate then climbs back in time (`rate_at`:
``increase`` calls/s a second for each 10 calls/s of budget), up to
``max_rps``, whether or not calls are made: a budget that grew only with its
calls made few calls at a low rate and stayed low. A fleet whose budget is set
above the service's real limit therefore converges to that limit instead of
hammering it, and several processes sharing one account converge to even
shares of it (the decrease takes more from a higher rate, the climb adds the
same to each). A storm (cuts in a row with no call through between them)
takes the rate to its floor; the first call through starts it again one cut
below the rate calls last got through at (`succeeded`), not from the floor.

Throttles other clients of the account cause (a share of every call, whatever
this budget's rate) look, from one process, exactly like its own overload, and
cut it just the same: a steady share keeps the rate far below ``max_rps``. A
user who knows that share says so (``others_throttled``): throttles within it
(`excused`) then cut nothing, and a run of them beyond it still does. A
budget held down by throttles all along says so once in a while
(`held_down`, ``budget_held_down``): the user knows whose they are.

The decrease stops at a floor: ``min_rps``, or ``1 / spacing_cap`` when the
throttled wait passes one (its `retry_max`) and is alone (at most one call
booked ahead): the budget never spaces a lone wait's calls further apart than
that wait's own backoff would, so it is paced by its backoff, exactly as
outside a fan-out. A busy budget has no such floor: one call per `retry_max`
for the whole process would keep several busy processes above the account's
limit however many runs share each (four at ``retry_max`` 100 ms: 40 calls/s).

The rate arithmetic is pure functions of a frozen `BudgetState`;
`RateLimiter` adds the calendar, a clock (injectable) and a lock, so one
limiter can be shared by several event loops and threads.
"""

from __future__ import annotations

import asyncio
import bisect
import functools
import math
import threading
import time
import weakref
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass, replace
from typing import Any

from poller import _home, _otel, log
from poller._policy import FaultKind
from poller._session import Clock
from poller.errors import InvalidRequestError

__all__ = [
    "ADVISE_EVERY",
    "BUDGET_HELD_DOWN",
    "DEFAULT_MAX_RPS",
    "RECHECK",
    "TALLY_S",
    "AccountKey",
    "AimdSettings",
    "Booking",
    "BudgetState",
    "Budgets",
    "HeldDown",
    "RateLimiter",
    "Slot",
    "Tally",
    "account_key",
    "budget_for",
    "budgets",
    "excused",
    "fit",
    "fit_urgent",
    "held_down",
    "next_look",
    "raised",
    "rate_at",
    "respace",
    "sleep_or",
    "succeeded",
    "tallied",
    "throttled",
    "until_booked",
]

#: The default budget, in GetJobRun calls a second for the whole process.
#: DataZone does not publish its GetJobRun quota; 10/s is below the steady
#: rate AWS control-plane read APIs commonly allow per account, leaves room for
#: the console and other tools sharing the account's quota, and still polls
#: 300 runs every 30 s. AIMD only ever lowers it when the service says so.
DEFAULT_MAX_RPS = 10.0
#: The warning a budget held down by throttles all along logs (`held_down`).
BUDGET_HELD_DOWN = "budget_held_down"
_MIN_RPS = 0.2
_DECREASE = 0.5
_INCREASE = 0.5
# `others_throttled` excuses a stretch's throttles up to this many standard deviations
# above the expected share (a binomial's), so chance alone seldom cuts the rate.
_EXCUSE_Z = 2.0
# A stretch's counts are halved past this many calls: the share is of the recent calls.
_STRETCH = 200
# Booked times this far in the past are forgotten in batches, not one by one.
_PRUNE_BATCH = 64


@dataclass(frozen=True, slots=True)
class AimdSettings:
    """How the rate adapts: ceiling and floor (calls/s), decrease factor, climb.

    ``decrease``: the share of the rate a cut leaves; ``increase``: how fast
    the rate climbs back after it (calls/s per second for each 10 calls/s of
    ``max_rps``; see `rate_at`). ``others_throttled``: the share of calls the
    account's other clients get throttled (0 to 0.5): throttles up to that
    share of the calls since the last cut do not cut the rate (see `excused`).
    """

    max_rps: float = DEFAULT_MAX_RPS
    # Never stall completely: even a badly throttled fleet polls now and then.
    min_rps: float = _MIN_RPS
    decrease: float = _DECREASE
    increase: float = _INCREASE
    others_throttled: float = 0.0

    def __post_init__(self) -> None:
        problems = []
        if not (math.isfinite(self.max_rps) and self.max_rps > 0):
            problems.append(f"max_rps must be a positive number, not {self.max_rps!r}")
        if not (math.isfinite(self.min_rps) and self.min_rps > 0):
            problems.append(f"min_rps must be a positive number, not {self.min_rps!r}")
        if not (0 < self.decrease < 1):
            problems.append(f"decrease must be between 0 and 1, not {self.decrease!r}")
        if not (math.isfinite(self.increase) and self.increase > 0):
            problems.append(f"increase must be > 0, not {self.increase!r}")
        if not (0 <= self.others_throttled <= 0.5):
            problems.append(
                f"others_throttled must be between 0 and 0.5, not {self.others_throttled!r}"
            )
        if problems:
            raise InvalidRequestError("invalid rate limit: " + "; ".join(problems))

    def floor(self, spacing_cap: float | None = None, pending: int = 0) -> float:
        """The lowest rate AIMD may reach after a throttle; never above the ceiling.

        ``spacing_cap`` (seconds, the throttled wait's longest backoff) raises
        it to one call per ``spacing_cap``, but only while that wait is alone:
        at most one call (its own next one) is ``pending`` on the calendar. A
        busy budget keeps ``min_rps`` as its floor, so it can come down to its
        share of the account, however short its waits' backoff.
        """
        low = self.min_rps
        if spacing_cap is not None and pending <= 1:
            low = max(low, 1.0 / spacing_cap)
        return min(low, self.max_rps)


@dataclass(frozen=True, slots=True)
class BudgetState:
    """The rate, when it was last cut, and the rate to start again from after a storm.

    ``rate`` is the rate the last cut left; `rate_at` gives it at any time: it
    climbs back in time whether or not calls are made (as botocore's adaptive
    mode does), so a budget that can make few calls is not kept low by making few.
    """

    rate: float
    # No call is booked before this: after a throttle, a full new spacing.
    not_before: float = -math.inf
    # Throttles of calls granted before the last decrease say nothing about
    # the new rate; remembering when it happened stops one burst of 429s from
    # cutting the rate once per call that was already in flight.
    decreased_at: float = -math.inf
    # The rate calls got through at before the cuts since the last call that got
    # through: after a storm (cuts in a row, nothing through), the budget starts
    # again from one cut below it.
    last_good: float = math.inf
    # Cuts since a call last got through.
    cuts: int = 0
    # The calls reported since the last cut, and how many of them were throttled
    # (both halved past `_STRETCH` calls): what `others_throttled` excuses.
    calls: int = 0
    throttles: int = 0

    @classmethod
    def start(cls, settings: AimdSettings) -> BudgetState:
        """The budget at its ceiling."""
        return cls(rate=settings.max_rps, last_good=settings.max_rps)


def _climb(settings: AimdSettings) -> float:
    # ``increase`` is per 10 calls/s of budget: a 40/s budget climbs back as fast, in
    # proportion, as a 10/s one.
    return settings.increase * settings.max_rps / DEFAULT_MAX_RPS


def rate_at(settings: AimdSettings, state: BudgetState, now: float) -> float:
    """The rate at ``now``: the last cut's, climbing back by ``increase`` a second up to the
    ceiling; in time, whether or not calls are made."""
    climbed = state.rate + _climb(settings) * max(now - state.decreased_at, 0.0)
    return min(climbed, settings.max_rps) if math.isfinite(climbed) else state.rate


def excused(settings: AimdSettings, calls: int, throttles: int) -> bool:
    """Whether ``throttles`` of ``calls`` are as many as other clients' share explains.

    That share (``others_throttled``) is the user's word: from inside one
    process, other clients' throttles and its own overload look alike (see
    docs/design.md). Excused: at most the share's expected count plus
    `_EXCUSE_Z` standard deviations (a binomial's), so a run of throttles
    beyond it (a storm, this budget's own overload) still cuts. With no share
    set, no throttle is excused.
    """
    share = settings.others_throttled
    if share <= 0:
        return False
    spread = _EXCUSE_Z * math.sqrt(calls * share * (1 - share))
    return throttles <= share * calls + spread


def _counted(calls: int, throttles: int) -> tuple[int, int]:
    if calls > _STRETCH:
        return calls // 2, throttles // 2
    return calls, throttles


def throttled(
    settings: AimdSettings,
    state: BudgetState,
    granted_at: float,
    now: float,
    spacing_cap: float | None = None,
    pending: int = 0,
) -> BudgetState:
    """A call made at ``granted_at`` was throttled: cut the rate, down to the floor, unless
    other clients' share excuses it (`excused`).

    Once per burst: a call granted before the last cut says nothing of the rate
    it left. ``pending``: how many calls are booked after ``now``. With at most
    one (the throttled wait alone), the floor is one call per ``spacing_cap``;
    with more, ``min_rps`` (see `AimdSettings.floor`).
    """
    if granted_at < state.decreased_at:
        return state
    calls, throttles = _counted(state.calls + 1, state.throttles + 1)
    if excused(settings, calls, throttles):
        return replace(state, calls=calls, throttles=throttles)
    current = rate_at(settings, state, now)
    # Down to the floor, and never up: a rate already below it stays.
    floor = settings.floor(spacing_cap, pending)
    rate = max(current * settings.decrease, min(current, floor))
    return replace(
        state,
        rate=rate,
        not_before=now + 1.0 / rate,
        decreased_at=now,
        last_good=_last_good(state, current),
        cuts=state.cuts + 1,
        calls=0,
        throttles=0,
    )


def _last_good(state: BudgetState, current: float) -> float:
    """The rate to climb back to after a cut at ``current``.

    In a storm (cuts in a row, nothing through) the one before it stays; else
    ``current``.
    """
    if state.cuts > 0:
        return state.last_good
    return current


def succeeded(settings: AimdSettings, state: BudgetState, now: float) -> BudgetState:
    """A call got through at ``now``: after a storm, the rate starts again one cut below
    the last good rate.

    A storm (cuts in a row with no call through between them) takes the rate
    to its floor; the first call through ends it, and the budget goes on
    from where one ordinary cut would have left it, not from the floor.
    """
    calls, throttles = _counted(state.calls + 1, state.throttles)
    after = replace(state, cuts=0, calls=calls, throttles=throttles)
    if state.cuts < 2:
        return after
    rate = max(
        rate_at(settings, state, now), min(state.last_good, settings.max_rps) * settings.decrease
    )
    return replace(after, rate=rate, decreased_at=now)


#: A budget's calls are tallied over stretches this long (s) for `held_down`.
TALLY_S = 60.0
#: A budget held down is said at most this often (s).
ADVISE_EVERY = 600.0
# Held down: runs of cuts began in three of the stretch's four quarters, at a share of the
# calls below a storm's; judged on this many calls at least.
_HELD_QUARTERS = 3
_STORM_SHARE = 0.5
_TALLY_CALLS = 20


@dataclass(frozen=True, slots=True)
class Tally:
    """A budget's calls since ``start``: how many, how many throttled, in which quarters
    of the stretch a run of cuts began (bits 0 to 3: a throttle cut the rate after a call
    had got through; a storm's cuts in a row count once), and the rate allowed at each
    call, summed: what `held_down` judges."""

    start: float
    calls: int = 0
    throttles: int = 0
    cut_quarters: int = 0
    rate_sum: float = 0.0


def tallied(tally: Tally, now: float, rate: float, *, throttled: bool, cut: bool) -> Tally:
    """``tally`` with one more call, reported at ``now`` with the budget at ``rate``
    (``cut``: a throttle that began a run of cuts)."""
    quarter = min(int(4 * (now - tally.start) // TALLY_S), 3)
    return Tally(
        start=tally.start,
        calls=tally.calls + 1,
        throttles=tally.throttles + throttled,
        cut_quarters=tally.cut_quarters | (1 << quarter if cut else 0),
        rate_sum=tally.rate_sum + rate,
    )


@dataclass(frozen=True, slots=True)
class HeldDown:
    """A budget held down a stretch long: the rate it allowed on average, the share of its
    calls throttled."""

    rate: float
    throttled: float


def held_down(tally: Tally, now: float, advised_at: float) -> HeldDown | None:
    """Whether the stretch tallied, once `TALLY_S` long, shows the budget held down by
    throttles that came all along (None: no, or not yet, or said less than
    `ADVISE_EVERY` ago).

    Held down: runs of cuts began in three of its four quarters (a storm,
    however long, is one run: nothing gets through between its cuts), with
    under half the calls throttled (a storm's share). Each cut
    halves the rate, so a budget cut all along keeps well under ``max_rps``
    (``rate``: what it allowed, on average at its calls). From inside the
    process, other clients' throttles and its own overload look alike (see
    docs/design.md), so this only says the budget is held down: the user knows
    which, and what to set.
    """
    if now - tally.start < TALLY_S or now - advised_at < ADVISE_EVERY:
        return None
    if tally.calls < _TALLY_CALLS or tally.cut_quarters.bit_count() < _HELD_QUARTERS:
        return None
    share = tally.throttles / tally.calls
    if share >= _STORM_SHARE:
        return None
    return HeldDown(rate=tally.rate_sum / tally.calls, throttled=share)


@dataclass(frozen=True, eq=False, slots=True)
class Booking:
    """A call booked with a `RateLimiter`: a ticket that never changes.

    Its time is the calendar's (`RateLimiter.at`): a throttle's respacing or
    an urgent call may move it later, `RateLimiter.sooner` earlier; only the
    calendar moves it, and its owner asks. ``latest``: None, or the time
    after which the call is of no use (`RateLimiter.lost`). An ``urgent``
    booking went ahead of the ordinary ones booked before it.
    """

    latest: float | None = None
    urgent: bool = False


#: A booking at its time on the calendar.
Slot = tuple[float, Booking]


def _time(slot: Slot) -> float:
    return slot[0]


def raised(settings: AimdSettings, state: BudgetState) -> BudgetState:
    """The budget under new ``settings`` (another ``max_rps``): never above the ceiling;
    one never cut is at the ceiling, wherever it now is (it made no calls, or only
    calls that got through); one that was cut climbs back to it in time (`rate_at`)."""
    if state.decreased_at == -math.inf:
        return replace(state, rate=settings.max_rps, last_good=settings.max_rps)
    return replace(state, rate=min(state.rate, settings.max_rps))


def fit(booked: Sequence[Slot], start: float, spacing: float) -> tuple[float, int]:
    """The earliest time at or after ``start`` at least ``spacing`` from every booked time.

    ``booked`` is sorted; returns the time and where it goes in ``booked``.
    """
    i = bisect.bisect_left(booked, start, key=_time)
    t = start
    if i > 0 and booked[i - 1][0] > t - spacing:
        t = booked[i - 1][0] + spacing
    while i < len(booked) and booked[i][0] < t + spacing:
        t = max(t, booked[i][0] + spacing)
        i += 1
    return t, i


def fit_urgent(
    booked: Sequence[Slot], start: float, spacing: float, now: float
) -> tuple[float, int]:
    """The earliest time at or after ``start`` for an urgent call, and where it goes.

    It keeps ``spacing`` from the booking before it, from those due by
    ``now`` (their calls may be going out) and from the urgent ones (which
    keep their order), but takes the place of the first ordinary booking in
    its way: `respace` then moves that one and those after it.
    """
    i = max(
        bisect.bisect_left(booked, start, key=_time), bisect.bisect_right(booked, now, key=_time)
    )
    t = start
    if i > 0 and booked[i - 1][0] > t - spacing:
        t = booked[i - 1][0] + spacing
    while i < len(booked) and booked[i][1].urgent and booked[i][0] < t + spacing:
        t = max(t, booked[i][0] + spacing)
        i += 1
    return t, i


def respace(
    booked: Sequence[Slot], now: float, spacing: float, start: int | None = None
) -> tuple[int, list[Slot]]:
    """The bookings after ``now`` (or from index ``start``), moved later to ``spacing`` apart.

    Returns where the slots it looked at begin in ``booked``, and those slots
    at their new times (moved or not), in order; the calendar puts them in
    place. Nothing is changed here.
    """
    if start is None:
        first, last = bisect.bisect_right(booked, now, key=_time), now
    else:
        first, last = start, booked[start - 1][0] if start > 0 else now
    slots: list[Slot] = []
    for at, booking in booked[first:]:
        if at >= last + spacing:
            if start is not None:
                break  # from an index: the rest was spaced already
            last = at
        else:
            last = last + spacing
        slots.append((last, booking))
    return first, slots


class RateLimiter:
    """A call calendar with AIMD, shared by every wait that is given it; thread-safe.

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
        others_throttled: float = 0.0,
        clock: Clock | None = None,
    ) -> None:
        self._settings = AimdSettings(
            max_rps=float(max_rps),
            min_rps=min_rps,
            decrease=decrease,
            increase=increase,
            others_throttled=float(others_throttled),
        )
        # Looked up per limiter, not bound as a default, so freezegun can patch it.
        self._clock = clock if clock is not None else time.monotonic
        self._lock = threading.Lock()
        self._state = BudgetState.start(self._settings)
        # The calendar: the booked slots in time order, and each held booking's time (a
        # booking leaves it when claimed or given back; slots in the past are pruned).
        self._booked: list[Slot] = []
        self._times: dict[Booking, float] = {}
        # No free time lies between now and this: bookings asked for earlier
        # start looking here, so a thousand waits due at once cost no scan each.
        self._packed_until = -math.inf
        # The lowest rate since the mark was last set aside: the calendar may be
        # spaced that far apart, so once the rate has doubled, free times can
        # lie between bookings before the mark again.
        self._packed_rate = self._state.rate
        # When the last call went (`claim`), and the time of the last late call
        # booked again, which the late calls after it keep behind.
        self._went = -math.inf
        self._slipped = -math.inf
        # The calls of the stretch going on, and when the budget last said it was held down.
        self._tally = Tally(start=self._clock())
        self._advised_at = -math.inf

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
            self._state = raised(self._settings, self._state)

    @property
    def others_throttled(self) -> float:
        """The share of calls other clients get throttled, whose throttles cut no rate."""
        return self._settings.others_throttled

    @others_throttled.setter
    def others_throttled(self, value: float) -> None:
        with self._lock:
            self._settings = replace(self._settings, others_throttled=float(value))

    @property
    def rate(self) -> float:
        """The rate allowed right now, in calls a second."""
        with self._lock:
            return rate_at(self._settings, self._state, self._clock())

    def _spacing(self, now: float) -> float:
        """The spacing between calls at ``now`` (under the lock)."""
        rate = rate_at(self._settings, self._state, now)
        if rate >= 2 * self._packed_rate:
            # A booking now fits between calls booked at the old spacing:
            # the next reserve (or `sooner`) looks from now again.
            self._packed_until = -math.inf
            self._packed_rate = rate
        return 1.0 / rate

    def at(self, booking: Booking) -> float:
        """The time ``booking`` has now (it may have moved since it was made)."""
        return self._times[booking]

    def packed(self, t: float) -> bool:
        """True when no free time lies between the budget's floor and ``t`` (the packed mark)."""
        return t <= self._packed_until

    def lost(self, booking: Booking) -> bool:
        """True when ``booking`` was moved past its ``latest``: that call will not happen."""
        return booking.latest is not None and self._times[booking] > booking.latest

    def _put(self, t: float, booking: Booking, i: int) -> None:
        self._booked.insert(i, (t, booking))
        self._times[booking] = t

    def _index(self, booking: Booking) -> int | None:
        """Where ``booking`` is on the calendar; None if pruned or given back."""
        booked = self._booked
        t = self._times.get(booking)
        if t is None:
            return None
        i = bisect.bisect_left(booked, t, key=_time)
        while i < len(booked) and booked[i][0] == t:
            if booked[i][1] is booking:
                return i
            i += 1
        return None

    def _respace(self, now: float, spacing: float, start: int | None = None) -> None:
        """Move the bookings after ``now`` (or from ``start``) to ``spacing`` apart (`respace`)."""
        first, slots = respace(self._booked, now, spacing, start)
        self._booked[first : first + len(slots)] = slots
        times = self._times
        for t, booking in slots:
            if booking in times:
                times[booking] = t

    def reserve(
        self, due: float, latest: float | None = None, *, urgent: bool = False
    ) -> Booking | None:
        """Book a call at the earliest free time at or after ``due`` (and now).

        With ``latest``, a time later than ``latest`` is not booked: None.
        A throttle may move the booking later (see `lost`). An ``urgent``
        call goes before the ordinary calls booked from then on, moving them
        later: a fan-out's job listing, which looks at many runs at once, and
        the call that reads a run the listing showed finished.
        """
        with self._lock:
            now = self._clock()
            spacing = self._spacing(now)
            booked = self._booked
            stale = bisect.bisect_left(booked, now - spacing, key=_time)
            if stale >= _PRUNE_BATCH:
                del booked[:stale]
            # No call goes before this: now, a throttle's pause, a spacing after the last call.
            floor = max(now, self._state.not_before, self._went + spacing)
            wanted = max(due, floor)
            booking = Booking(latest, urgent)
            if urgent:
                t, i = fit_urgent(booked, wanted, spacing, now)
                if latest is not None and t > latest:
                    return None
                self._put(t, booking, i)
                self._respace(now, spacing, start=i + 1)
                # The ones moved stay packed, but the mark may now fall inside them.
                self._packed_until = min(self._packed_until, t)
                return booking
            start = max(wanted, self._packed_until)
            t, i = fit(booked, start, spacing)
            if latest is not None and t > latest:
                return None
            self._put(t, booking, i)
            if wanted <= max(self._packed_until, floor):
                # The search went from the mark (or the floor) to t through booked times only.
                self._packed_until = t
            return booking

    def sooner(self, booking: Booking, due: float) -> float:
        """Move ``booking`` to a free time before its own (at or after ``due``) if there is
        one; returns its time.

        For a booking moved later than it was made (by a throttle's respacing
        or urgent calls): the calls booked before it may have been given back
        since. Only a free time is taken: no other booking moves, urgent or not.
        The search starts at the packed mark and moves it, as `reserve`'s does:
        a saturated calendar's thousands of bookings each look every `RECHECK`
        seconds, and a search through the calendar each time made a fleet of
        them quadratic.
        """
        with self._lock:
            now = self._clock()
            spacing = self._spacing(now)
            at = self._times[booking]
            floor = max(now, self._state.not_before, self._went + spacing)
            wanted = max(due, floor)
            start = max(wanted, self._packed_until)
            if start >= at:
                return at
            t, _ = fit(self._booked, start, spacing)
            if wanted <= max(self._packed_until, floor):
                self._packed_until = t  # booked times only from the mark (or floor) to t
            if t >= at or (booking.latest is not None and t > booking.latest):
                return at
            i = self._index(booking)
            if i is None:
                return at  # pruned meanwhile: nothing to move
            del self._booked[i]
            self._packed_until = min(self._packed_until, at)
            self._put(t, booking, bisect.bisect_left(self._booked, t, key=_time))
            return t

    def claim(self, booking: Booking) -> float | None:
        """``booking``'s time has come: the time its call goes at (it leaves the calendar's
        bookings), or None if it was moved later.

        Bookings are spaced, but a sleeper held up (a busy event loop, a slow
        thread) wakes late, and every booking whose time passed meanwhile
        would go with it: a burst of the calls the calendar spaced. So a call
        goes only once half a spacing has passed since the last one went; a
        late call that comes sooner is booked again a spacing after that one
        (and after the late calls booked again before it, in the order they
        came), ahead of the ordinary calls booked from then on, which move
        later as for an urgent booking (`fit_urgent`): the calendar slips by
        the hold-up instead of catching up with it.
        """
        with self._lock:
            now = self._clock()
            spacing = self._spacing(now)
            if now >= self._went + spacing / 2:
                self._went = now
                # Its slot stays, for the spacing of the calls after it, until pruned.
                return self._times.pop(booking)
            i = self._index(booking)
            if i is not None:
                del self._booked[i]
            start = max(self._went, self._slipped) + spacing
            start = max(start, self._state.not_before)
            t, i = fit_urgent(self._booked, start, spacing, now)
            self._slipped = t
            self._put(t, booking, i)
            self._respace(now, spacing, start=i + 1)
            self._packed_until = min(self._packed_until, t)
            return None

    def release(self, booking: Booking) -> None:
        """Give back a booking that will not be used (the wait ended before it)."""
        with self._lock:
            i = self._index(booking)
            at = self._times.pop(booking, None)
            if i is not None and at is not None:
                del self._booked[i]
                self._packed_until = min(self._packed_until, at)

    def throttled(self, granted_at: float, spacing_cap: float | None = None) -> None:
        """Report that a call made at its booked time ``granted_at`` (this clock) was throttled.

        ``spacing_cap``: the throttled wait's longest backoff; while that wait
        has the budget to itself (no other call booked ahead), the rate stays
        at or above one call per ``spacing_cap`` seconds.
        """
        with self._lock:
            now = self._clock()
            pending = len(self._booked) - bisect.bisect_right(self._booked, now, key=_time)
            before = rate_at(self._settings, self._state, now)
            self._state = throttled(
                self._settings, self._state, granted_at, now, spacing_cap, pending
            )
            cut = self._state.decreased_at == now
            self._tally = tallied(
                self._tally,
                now,
                rate_at(self._settings, self._state, now),
                throttled=True,
                cut=cut and self._state.cuts == 1,  # the first cut since a call got through
            )
            if cut and self._state.rate < before:
                self._packed_rate = min(self._packed_rate, self._state.rate)
                # The calls booked at the old rate would keep it up for as long
                # as bookings reach ahead: they move to the new spacing now.
                self._respace(now, 1.0 / self._state.rate)

    def succeeded(self) -> None:
        """Report that a call got through."""
        with self._lock:
            now = self._clock()
            self._state = succeeded(self._settings, self._state, now)
            rate = rate_at(self._settings, self._state, now)
            self._tally = tallied(self._tally, now, rate, throttled=False, cut=False)

    def report(
        self, granted_at: float, kind: FaultKind | None, spacing_cap: float, logger: Any = None
    ) -> None:
        """How the call booked at ``granted_at`` went (``kind``: its fault, None if it got
        through): a throttle slows the budget; a transient fault says nothing of the rate;
        anything else (an answer, denied, not found) means the rate was accepted.

        A budget held down a stretch long (`held_down`) says so on ``logger`` (poller's
        if None): one ``budget_held_down`` warning, at most every `ADVISE_EVERY` seconds.
        """
        if kind is FaultKind.THROTTLE:
            self.throttled(granted_at, spacing_cap)
        elif kind is not FaultKind.TRANSIENT:
            self.succeeded()
        with self._lock:
            now = self._clock()
            said = held_down(self._tally, now, self._advised_at)
            if now - self._tally.start >= TALLY_S:
                self._tally = Tally(start=now)
            if said is not None:
                self._advised_at = now
        if said is not None:
            (logger if logger is not None else log.get_logger()).warning(
                BUDGET_HELD_DOWN,
                rate=round(said.rate, 2),
                max_rps=self._settings.max_rps,
                throttled=round(said.throttled, 3),
                others_throttled=self._settings.others_throttled,
            )


#: A booking moved this much past the time it got looks for a sooner free time this often (s),
#: then twice as late each time it finds none, up to this many times as late.
RECHECK = 2.0
_RECHECK_GROWS = 4


def next_look(every: float, recheck: float, *, packed: bool) -> float:
    """How long a booking moved well past its time sleeps before it looks for a sooner free
    time again, after sleeping ``every`` before this look.

    ``packed``: the look found none, the calendar packed up to the booking (no free time
    before it until the calendar loosens): twice as late, up to `_RECHECK_GROWS` times
    ``recheck``, since a saturated calendar's thousands of bookings each woke every
    ``recheck``. Else (it moved sooner, or the calendar may have loosened): ``recheck``.
    """
    return min(2 * every, _RECHECK_GROWS * recheck) if packed else recheck


async def until_booked(
    limiter: RateLimiter,
    booking: Booking,
    *,
    asked: float,
    clock: Clock,
    sleep: Callable[[float], Awaitable[object]],
    news: asyncio.Future[Any] | None = None,
    recheck: float = RECHECK,
) -> float | None:
    """Sleep until ``booking``'s time comes (returns the time its call goes at), it is lost
    or ``news`` is done (None): whichever first.

    The one booking-wait of every wait, listing and history lookup. The time
    may move while it sleeps: later (a throttle's respacing, urgent calls; and
    when it comes, if it comes late right after another call went: see
    `RateLimiter.claim`) or, for a booking more than ``recheck`` past
    ``asked`` (the time it was asked for), sooner: such a booking looks for a
    free time at or after ``asked`` every ``recheck`` seconds
    (`RateLimiter.sooner`), since calls booked before it may have been given back;
    twice as late each time the calendar is packed up to it (`RateLimiter.packed`),
    up to `_RECHECK_GROWS` times ``recheck``.
    Cancelled, it gives the booking back: a waiter that is gone makes no call.
    """
    try:
        return await _until_booked(limiter, booking, asked, clock, sleep, news, recheck)
    except asyncio.CancelledError:
        limiter.release(booking)
        raise


async def _until_booked(
    limiter: RateLimiter,
    booking: Booking,
    asked: float,
    clock: Clock,
    sleep: Callable[[float], Awaitable[object]],
    news: asyncio.Future[Any] | None,
    recheck: float,
) -> float | None:
    every = recheck / 2  # the first look at a packed calendar sleeps `recheck`
    while news is None or not news.done():
        now = clock()
        at = limiter.at(booking)
        moved = at > max(asked, now) + recheck
        if moved:  # a lost one too: a time before its latest may be free again
            sooner = limiter.sooner(booking, asked)
            every = next_look(every, recheck, packed=sooner == at and limiter.packed(at))
            at = sooner
        if limiter.lost(booking):
            return None
        if (delay := at - now) <= 0:
            granted = limiter.claim(booking)
            if granted is not None:
                return granted
            continue  # late, and moved a spacing past the call that just went
        if moved:
            delay = min(delay, every)
        if news is None:
            await sleep(delay)
        else:
            await sleep_or(news, delay, sleep)
    return None


def _wake(woken: asyncio.Future[None], *_: object) -> None:
    if not woken.done():
        woken.set_result(None)


async def sleep_or(
    news: asyncio.Future[Any], delay: float, sleep: Callable[[float], Awaitable[object]]
) -> None:
    """Sleep ``delay`` seconds, or until ``news`` is done: whichever first.

    The one sleep-or-news of a booking-wait and of a turn waiting for its
    job's listing. On the loop's own time (``asyncio.sleep``: real time, or a
    `_vloop` loop of a wait's clock) it is one future and one timer, not a
    sleeper task and `asyncio.wait`: a fleet's idle waits do this once a look.
    """
    loop = asyncio.get_running_loop()
    woken: asyncio.Future[None] = loop.create_future()
    wake = functools.partial(_wake, woken)
    news.add_done_callback(wake)
    if sleep is asyncio.sleep:
        timer: asyncio.Handle | asyncio.Future[object] = loop.call_later(delay, _wake, woken)
    else:  # a sleep of its own (a scaled clock): its own task
        timer = asyncio.ensure_future(sleep(delay))
        timer.add_done_callback(wake)
    try:
        await woken
    finally:
        timer.cancel()
        news.remove_done_callback(wake)


#: What picks an account's budget: (region, endpoint, access key id), or a client of its own.
AccountKey = tuple[object, ...]


def account_key(client: object) -> AccountKey:
    """The throttling domain of ``client``'s calls, as near as poller can tell without a call.

    DataZone throttles per account and region: a boto3 client's region, its
    endpoint and its credentials' account id (botocore knows it for an
    assumed role, or when configured) or else their access key id name that
    (two clients of one account share a key; a role assumed in another
    account gets another). The credentials are read as they stand, never
    loaded nor refreshed for this (that is a call to STS, and this runs on
    the engine's thread too): credentials not loaded yet name themselves.
    What they named when first seen names them for their life: temporary
    credentials get a new key at each refresh, and the client stays on its
    account's budget. A client without those attributes (a user's stand-in)
    is an account of its own.
    """
    meta = getattr(client, "meta", None)
    region = getattr(meta, "region_name", None)
    endpoint = getattr(meta, "endpoint_url", None)
    if region is None and endpoint is None:
        return ("client", id(client))
    credentials = getattr(getattr(client, "_request_signer", None), "_credentials", None)
    return ("account", region, endpoint, _first_key(credentials))


def _read_key(credentials: object) -> str:
    """The credentials' account id if they know it, else their access key id, else (not
    loaded yet) the credentials themselves."""
    # RefreshableCredentials keep the current key in `_access_key` and the account in
    # `_account_id`; reading `access_key` or `account_id` would load or refresh them (a
    # call to STS) on whichever thread asks, the engine's included: never here.
    own = "_access_key" if hasattr(credentials, "_access_key") else "access_key"
    key = getattr(credentials, own, None)
    own = "_account_id" if hasattr(credentials, "_account_id") else "account_id"
    account = getattr(credentials, own, None)
    if isinstance(account, str) and account:
        return account
    return key if isinstance(key, str) and key else f"credentials@{id(credentials):x}"


# What each credentials object named when first seen: temporary credentials (an assumed
# role, an instance profile, a web identity) get a new key at every refresh, and the client
# must stay on its account's budget, fleet and call pool across it.
_FIRST_KEYS = _home.Slot("account_first_keys", weakref.WeakKeyDictionary[object, str])


def _first_key(credentials: object) -> str | None:
    if credentials is None:
        return None
    keys = _FIRST_KEYS.get()
    try:
        if credentials in keys:
            return keys[credentials]
        return keys.setdefault(credentials, _read_key(credentials))
    except TypeError:  # credentials that take no weak reference: as they stand
        return _read_key(credentials)


class Budgets:
    """The process's budgets: one `RateLimiter` per account (kept in `_home`)."""

    def __init__(self, clock: Clock | None = None) -> None:
        self.clock = clock
        self.max_rps = DEFAULT_MAX_RPS  # the ceiling of budgets made from now on
        self.others_throttled = 0.0  # and other clients' share they excuse
        self._lock = threading.Lock()
        self._budgets: dict[AccountKey, RateLimiter] = {}
        # Clients without account attributes are kept, so their id is not reused.
        self._pinned: dict[AccountKey, object] = {}

    def of(
        self, client: object, max_rps: float | None = None, others_throttled: float | None = None
    ) -> RateLimiter:
        key = account_key(client)
        with self._lock:
            if max_rps is not None:
                self.max_rps = max_rps
            if others_throttled is not None:
                self.others_throttled = others_throttled
            limiter = self._budgets.get(key)
            if limiter is None:
                limiter = self._budgets[key] = RateLimiter(
                    self.max_rps, others_throttled=self.others_throttled, clock=self.clock
                )
                if key[0] == "client":
                    self._pinned[key] = client
                region = key[1] if key[0] == "account" else None
                # otel: the poller.budget.rate gauge reads it
                _otel.watch_budget(limiter, region if isinstance(region, str) else None)
            else:
                if max_rps is not None and limiter.max_rps != max_rps:
                    limiter.max_rps = max_rps
                if others_throttled is not None:
                    limiter.others_throttled = others_throttled
            return limiter


_BUDGETS = _home.Slot("budgets", lambda: Budgets(_home.CLOCK.peek()))


def budgets() -> Budgets:
    """The process's budgets, on the engine's clock (`_home`'s ``clock``, real by default)."""
    return _BUDGETS.get()


def budget_for(
    client: object, max_rps: float | None = None, *, others_throttled: float | None = None
) -> RateLimiter:
    """The request budget of ``client``'s account in this process: one per account.

    Every wait that joins the process's engine books its calls here, whatever
    its front door. ``max_rps`` sets that account's budget (the last setting
    wins) and the budget of accounts first seen after it; ``others_throttled``
    (the share of calls other clients of the account get throttled, whose
    throttles then cut no rate) likewise.
    """
    return budgets().of(client, max_rps, others_throttled)
