"""Waiting on many runs at once under one shared request budget.

Each run is an ordinary wait: a `WaitSession` driven by `async_drive`, so the
cadence, backoff, grace and deadline rules are the core's, unchanged. The one
difference is when a call may be made: each wait books its calls on the
shared `RateLimiter`'s calendar (`_Turns`). It books its next call as soon as
the core names the delay, at the earliest free time at or after it, so the
run due soonest goes first, no run starves, and the `sleep_s` it logs is the
real wait. A run the calendar cannot fit in before its deadline ends then,
saying so. Every answer is fed back to the limiter: a throttle lowers the
shared rate, a call that got through raises it.

With history (``_history``), a run inside its quiet window is given a delay
to the window's end by the core, so its next call is booked there: behind
every run due sooner, which is how runs that may have ended are polled first.
A job's history lookup (one ListJobRuns) is booked on the same calendar, in
the background: no wait blocks on it, each picks the history up next time.

The blocking `wait_for_job_runs` runs the same coroutine on a private event
loop: thousands of waits cost one thread plus the small call pool, not a
thread each.
"""

from __future__ import annotations

import asyncio
import collections
import functools
import math
import random
import threading
from collections.abc import Callable, Iterable
from concurrent.futures import Executor
from dataclasses import replace
from typing import Any

from poller import log
from poller._datazone import JobRunClient, classify, fetch_job_run, validate_ids
from poller._history import failed as history_failed
from poller._history import learn, learned_from_listing, list_runs, shared_cache, wants_history
from poller._limiter import Booking, RateLimiter, shared_limiter
from poller._model import JobRun, JobRunStatus, WaitResult
from poller._policy import CallFault, FaultKind, PollPolicy
from poller._runtime import (
    BOOKING_GRACE,
    CALL_GRACE,
    CALL_WORKERS,
    CANCEL_POLL,
    REAL,
    UNSET,
    AsyncSleep,
    ClientSettings,
    Clock,
    Seams,
    TurnExpired,
    Unset,
    async_drive,
    off_any_running_loop,
    resolve_client,
    resolve_policy,
    shared_executor,
)
from poller._session import OnChange, OnStep, WaitSession
from poller.errors import InvalidRequestError

__all__ = ["OnResult", "RunRef", "StepHooks", "async_wait_for_job_runs", "wait_for_job_runs"]

#: A run to wait on: ``(domain_id, job_run_id)``.
RunRef = tuple[str, str]
#: Called with each run's result as soon as its wait ends.
OnResult = Callable[[WaitResult], object]
#: Given a run, the ``on_step`` hook of its wait (or None): a progress display per run.
StepHooks = Callable[[RunRef], OnStep | None]

# Debug level: the per-run events already tell the story; these sum a fleet up.
FANOUT_STARTED = "fanout_started"
FANOUT_FINISHED = "fanout_finished"
#: A job's runs went back to their own calls: its listing failed.
LISTING_STOPPED = "job_listing_stopped"


# Waits started but not yet answered once, at most (see `_Fleet.run_all`).
STARTING = 1000
# Why a run's wait ended without the call it wanted.
UNREACHED = "the request budget did not reach it before the deadline"
# A job listing still unanswered after this long (seconds) has failed.
LISTING_BOUND = 10.0
# The most ListJobRuns pages (of 50 runs) one listing of a job reads.
LISTING_PAGES = 10
# A job's listing throttled or failing this many times in a row ends its watch.
LISTING_TRIES = 3
_RETRIED = (FaultKind.THROTTLE, FaultKind.TRANSIENT)
# A listing booked this much later than wanted looks for an earlier time this often (s).
_RECHECK = 2.0


_MASK = (1 << 64) - 1


class _Stream:
    """One wait's jitter: SplitMix64, reproducible from its seed, in a few dozen bytes.

    A ``random.Random`` costs ~2.5 KB (its Mersenne Twister state): 250 MB
    for a fleet of 100,000 runs, for the one ``uniform`` the core asks of it.
    """

    __slots__ = ("_state",)

    def __init__(self, seed: int) -> None:
        self._state = seed & _MASK

    def uniform(self, a: float, b: float) -> float:
        self._state = z = (self._state + 0x9E3779B97F4A7C15) & _MASK
        z = ((z ^ (z >> 30)) * 0xBF58476D1CE4E5B9) & _MASK
        z = ((z ^ (z >> 27)) * 0x94D049BB133111EB) & _MASK
        return a + (b - a) * (((z ^ (z >> 31)) >> 11) * 2.0**-53)


# What a job's listing tells a wait it did not show (or could not be made).
_UNLISTED = object()
# A listing may lag the run's own answers: one that shows a run SCHEDULED
# again after it was seen started is not believed.
_BACK = JobRunStatus.SCHEDULED
# How long after its deadline a wait waits for the listing that gives its last look.
_LATE = BOOKING_GRACE + CALL_GRACE


class _Turns:
    """One wait's calls in the shared budget: the next call is booked when its delay is known.

    Booking when the core names the delay (``pace``), not when it is due,
    gives the wait the real time until its call (logged as ``sleep_s``), and
    tells at once when the budget cannot reach the run before its deadline.

    A wait whose job is watched (`_Watch`) books no call of its own while the
    watch has other runs too: it asks the watch for a look by then, and takes
    the run as the job's listing shows it (``news``). A listing that shows it
    finished gets it one urgent GetJobRun, for the whole run and its lineage.
    """

    __slots__ = (
        "_asked",
        "_booked_at",
        "_booking",
        "_due",
        "_fleet",
        "_news",
        "_session",
        "_starting",
        "alone",
        "granted_at",
        "read",
        "watch",
    )

    def __init__(self, fleet: _Fleet) -> None:
        self._fleet = fleet
        self._session: WaitSession | None = None
        self._booking: Booking | None = None  # the next call, once booked
        self.granted_at = -math.inf  # the booked time of the call going out now
        self._starting = True  # holds a place in the fleet's start window
        self.watch: _Watch | None = None  # its job's watch, once its run was listed
        self.alone = False  # a watch did not show it: it makes its own calls from then on
        self.read = False  # counted among its job's readers (`_Fleet.discovered`)
        # Set by a listing that shows this wait's run while it waits for its turn.
        self._news: asyncio.Future[object] | None = None
        self._due = -math.inf  # when the look asked of the watch is due
        # When the booked call was asked for, and the time it got then.
        self._asked = self._booked_at = -math.inf

    def attach(self, session: WaitSession) -> None:
        self._session = session

    @property
    def _deadline(self) -> float | None:
        assert self._session is not None
        return self._session.state.deadline

    def _book(self, due: float, *, urgent: bool = False) -> Booking | None:
        deadline = self._deadline
        # The last poll is due at the deadline itself (and timeout=0 checks
        # once): a call booked a moment after it still goes, and its answer
        # is waited for within CALL_GRACE as in every loop.
        latest = None if deadline is None else deadline + BOOKING_GRACE
        self._booking = booking = self._fleet.limiter.reserve(due, latest, urgent=urgent)
        if booking is not None:
            self._asked, self._booked_at = due, booking.at
        return booking

    def pace(self, delay: float) -> float:
        """The core asked for ``delay``: book the look, return the real delay until it."""
        self.started()
        now = self._fleet.clock()
        due = now + delay
        run = self._session.state.last if self._session is not None else None
        if run is not None:
            self._fleet.discovered(self, run)
        watch = self.watch
        if watch is not None and watch.active:
            # No call of its own: the look comes from the listing (`turn` waits for it).
            self._news = asyncio.get_running_loop().create_future()
            self._due = due
            return max(watch.need(due) - now, 0.0)
        booking = self._book(due)
        # Unreachable: no sleep, the turn that follows ends the wait.
        return 0.0 if booking is None else max(booking.at - now, 0.0)

    def asked(self) -> float | None:
        """When this wait wants the look it asked its watch for; None if it is not waiting."""
        if self._booking is None and self._news is not None and not self._news.done():
            return self._due
        return None

    def listed(self, run: JobRun) -> None:
        """The job's listing shows this wait's run: the wait takes it, if it is waiting."""
        if self._news is not None and not self._news.done():
            self._news.set_result(run)

    def unlisted(self) -> None:
        """The watch will not show this wait's run: it books its own calls again."""
        self.watch = None
        self.alone = True
        if self._news is not None and not self._news.done():
            self._news.set_result(_UNLISTED)

    async def turn(self) -> JobRun | None:
        """Wait for the booked call (None) or the run as its job's listing shows it.

        Raises TurnExpired when the budget cannot make the call in time.
        """
        fleet = self._fleet
        first = self._booking is None and self._news is None
        if self._news is None and fleet.policy.history:
            # A listing of its job may show the run before the call it waits for.
            self._news = asyncio.get_running_loop().create_future()
        if first and self._book(fleet.clock()) is None:
            raise TurnExpired(UNREACHED)
        while True:
            news = self._news
            try:
                await self._until(news)
            except asyncio.CancelledError:
                self.release()
                raise
            booking = self._booking  # as `_until` left it: maybe sooner
            if news is not None and news.done():
                self._news = None
                got = news.result()
                if isinstance(got, JobRun):
                    if booking is not None:
                        fleet.limiter.release(booking)
                        self._booking = None
                    if not got.is_terminal:
                        return self._believed(got)
                    # Finished: read it whole (and its lineage) before anything else;
                    # at the deadline, when no call fits any more, as the listing shows it.
                    if self._book(fleet.clock(), urgent=True) is None:
                        return got
                elif booking is None and self._book(self._due) is None:
                    raise TurnExpired(UNREACHED)
                continue
            if booking is None:
                # No listing answered by the deadline (and the grace a call's answer
                # gets): one call of its own, if one still fits, or the wait ends.
                self._news = None
                if self._book(fleet.clock()) is None:
                    raise TurnExpired(UNREACHED)
                continue
            self._news = None  # an answer to the call about to go out is newer
            self._booking = None
            if booking.lost:
                fleet.limiter.release(booking)
                raise TurnExpired(UNREACHED)
            self.granted_at = booking.at
            return None

    async def _until(self, news: asyncio.Future[object] | None) -> None:
        """Until the booked time (which a throttle may move), news, or without a booking the
        deadline; whichever comes first. A booking moved well past the time it was made
        for looks for a sooner free time now and then."""
        fleet = self._fleet
        deadline = self._deadline
        while True:
            booking = self._booking
            if news is not None and news.done():
                return
            if booking is not None:
                now = fleet.clock()
                moved = booking.at > max(self._booked_at, now) + _RECHECK
                if moved:  # a lost one too: a time before its latest may be free again
                    booking = self._booking = fleet.limiter.sooner(booking, self._asked)
                if booking.lost or (delay := booking.at - now) <= 0:
                    return
                if moved:
                    delay = min(delay, _RECHECK)
            elif deadline is not None and (delay := deadline + _LATE - fleet.clock()) <= 0:
                return
            if news is None:
                await fleet.sleep(delay)
                continue
            if booking is None and deadline is None:
                await news
                return
            sleeper = asyncio.ensure_future(fleet.sleep(delay))
            try:
                await asyncio.wait((sleeper, news), return_when=asyncio.FIRST_COMPLETED)
            finally:
                sleeper.cancel()

    def _believed(self, run: JobRun) -> JobRun:
        # A listing may lag the run's own answers: it does not take a run back.
        last = self._session.state.last if self._session is not None else None
        if last is not None and run.status == _BACK and last.status != _BACK:
            return last
        return run

    def started(self) -> None:
        """The wait had its first answer (or ended): its place in the start window is free."""
        if self._starting:
            self._starting = False
            self._fleet.starting.release()
            self._fleet.unseen -= 1

    def release(self) -> None:
        """The wait ended (or was cancelled) with a call still booked: give the time back."""
        if self._booking is not None:
            self._fleet.limiter.release(self._booking)
            self._booking = None
        self._news = None


class _Watch:
    """A job's live runs in one fan-out, looked at together: one ListJobRuns shows them all.

    Created when a wait first reads a run of the job while other waits of
    the fan-out have not read theirs yet: the first listing (urgent, ahead of
    ordinary calls) may show many of them at once. From then on its runs
    ask it for their looks (`need`), and one listing is booked at the
    earliest time any of them wants: a look for every run of the job at the
    cost of one call. A run the listing does not show goes back to its own
    calls. A listing throttled or failing is tried again, up to LISTING_TRIES
    times in a row; then, or when denied, the watch ends (its runs go back to
    their own calls) with one `job_listing_stopped` event.
    """

    __slots__ = (
        "_booking",
        "_failures",
        "_fleet",
        "_paging",
        "_task",
        "_wanted",
        "claimed",
        "key",
        "members",
        "stopped",
    )

    def __init__(self, fleet: _Fleet, key: tuple[str, str], *, claimed: bool) -> None:
        self._fleet = fleet
        self.key = key
        self.claimed = claimed  # this watch's first listing is the job's history lookup
        self.members: set[_Turns] = set()
        self.stopped = False
        self._booking: Booking | None = None
        self._task: asyncio.Task[None] | None = None
        self._wanted = -math.inf  # when the booked listing was wanted
        self._failures = 0  # listings failed in a row
        self._paging = False  # reading the pages after the first
        self._book(fleet.clock(), urgent=True)

    @property
    def active(self) -> bool:
        """True while a listing would show more than one run of the fan-out."""
        return not self.stopped and len(self.members) > 1

    def join(self, turns: _Turns) -> None:
        """A wait of this job joins (its own answer or a listing said it is one)."""
        if not self.stopped and turns.watch is None and not turns.alone:
            turns.watch = self
            self.members.add(turns)

    def leave(self, turns: _Turns) -> None:
        """The wait ended, or the listing does not show it."""
        self.members.discard(turns)
        turns.unlisted()

    def need(self, due: float) -> float:
        """A run wants a look at ``due``: when the listing that gives it will be made."""
        if self._task is not None and (self._booking is None or self._paging):
            return self._fleet.clock()  # one is out: its answer is newer than the ask
        # The first listing was booked urgent, as early as it can be: it stays.
        if self._booking is None or (self._booking.at > due and not self._booking.urgent):
            self._book(due)
        assert self._booking is not None
        return self._booking.at

    def _book(self, due: float, *, urgent: bool = False) -> None:
        fleet = self._fleet
        self._cancel()
        self._wanted = due
        self._booking = booking = fleet.limiter.reserve(due, urgent=urgent)
        assert booking is not None  # no latest: always booked
        self._task = task = asyncio.create_task(self._list())
        fleet.learning.add(task)
        task.add_done_callback(fleet.learning.discard)

    def _cancel(self) -> None:
        # The booking is given back here: a task cancelled before it ran cannot.
        if self._booking is not None:
            self._fleet.limiter.release(self._booking)
            self._booking = None
        if self._task is not None and self._task is not asyncio.current_task():
            self._task.cancel()
        self._task = None

    async def _until_booked(self) -> Booking:
        """Sleep until the listing's booked time; a booking moved well past when it was
        wanted (by a throttle's respacing, or urgent calls) looks for an earlier free time
        now and then, as calls booked before it are given back."""
        fleet = self._fleet
        booking = self._booking
        assert booking is not None
        while (delay := booking.at - (now := fleet.clock())) > 0:
            if booking.at > max(self._wanted, now) + _RECHECK:
                booking = self._booking = fleet.limiter.sooner(booking, self._wanted)
                delay = min(booking.at - now, _RECHECK)
            await fleet.sleep(delay)
        return booking

    async def _list(self) -> None:
        fleet = self._fleet
        domain_id, job_id = self.key
        try:
            booking = await self._until_booked()
        except asyncio.CancelledError:
            # Re-booked or stopped: `_cancel` gave the booking back; else it is still ours.
            if self._task is asyncio.current_task() and self._booking is not None:
                fleet.limiter.release(self._booking)
            raise
        self._booking = None
        runs: list[JobRun] = []
        shown: set[_Turns] = set()
        token: str | None = None
        try:
            for page in range(LISTING_PAGES):
                if page:
                    # The next page is one more call, booked like the first; runs
                    # asking for a look meanwhile get this listing's pages.
                    self._paging = True
                    self._booking = fleet.limiter.reserve(fleet.clock(), urgent=booking.urgent)
                    booking = await self._until_booked()
                    self._booking = None
                async with asyncio.timeout(LISTING_BOUND), fleet.slots:
                    more, token = await asyncio.get_running_loop().run_in_executor(
                        fleet.executor, list_runs, fleet.client, domain_id, job_id, None, token
                    )
                fleet.report(booking.at, None)
                runs += more
                page_shown = fleet.show(self, more)
                shown |= page_shown
                # Older runs of the job are worth another call only if this page
                # showed several waits of the fan-out.
                if token is None or len(page_shown) < 2:
                    break
        except asyncio.CancelledError:
            if self._task is asyncio.current_task() and self._booking is not None:
                fleet.limiter.release(self._booking)  # a next page's
            if self.claimed:
                shared_cache().release(self.key)
            raise
        except Exception as exc:  # a listing's failure is the watch's, never a wait's
            fault = classify(exc)
            kind = fault.kind if fault is not None else None
            fleet.report(booking.at, kind)
            self._failures += 1
            if kind in _RETRIED and self._failures < LISTING_TRIES:
                # Again at the budget's next free time (after a throttle, later), as urgent.
                self._book(fleet.clock(), urgent=booking.urgent)
                return
            if self.claimed:
                self.claimed = False
                shared_cache().put(self.key, history_failed(exc))
            self.stop(history_failed(exc).reason or "ListJobRuns failed")
            return
        finally:
            self._paging = False
            if self._task is asyncio.current_task():
                self._task = None
        self._failures = 0
        if self.claimed:
            self.claimed = False
            if not learned_from_listing(domain_id, job_id, runs, token is not None):
                fleet.learn(domain_id, job_id)  # too few successes here: ask for them alone
        for turns in self.members - shown:
            self.leave(turns)  # not on the pages read: it makes its own calls
        # Runs that asked for their next look while the pages were read wait for it.
        asked = [due for turns in self.members if (due := turns.asked()) is not None]
        if asked and self._task is None:
            self._book(min(asked))

    def stop(self, reason: str) -> None:
        """No more listings for this job: its runs go back to their own calls."""
        if self.stopped:
            return
        self.stopped = True
        self._cancel()
        for turns in list(self.members):
            self.leave(turns)
        self._fleet.logger.info(
            LISTING_STOPPED, domain_id=self.key[0], job_id=self.key[1], reason=reason
        )


async def _booked(delay: float) -> None:
    """A fan-out wait's sleep between looks: none here, its turn waits for the booked time."""


def _refs(runs: Iterable[RunRef]) -> list[RunRef]:
    refs = []
    for i, ref in enumerate(runs):
        if isinstance(ref, str | bytes) or not isinstance(ref, Iterable):
            raise TypeError(f"runs[{i}] must be a (domain_id, job_run_id) pair, not {ref!r}")
        pair = tuple(ref)
        if len(pair) != 2:
            raise TypeError(f"runs[{i}] must be a (domain_id, job_run_id) pair, not {ref!r}")
        refs.append((pair[0], pair[1]))
    return refs


def _resolve_limiter(
    limiter: RateLimiter | None, max_rps: float | None, clock: Clock | None
) -> RateLimiter:
    if limiter is not None:
        if max_rps is not None:
            limiter.max_rps = max_rps
        return limiter
    if clock is not None:
        # The shared limiter runs on the real clock; a budget measured on an
        # injected clock cannot be shared with it, so it gets its own.
        return RateLimiter(
            max_rps if max_rps is not None else shared_limiter().max_rps, clock=clock
        )
    return shared_limiter(max_rps)


def _not_waited(ref: RunRef, error: InvalidRequestError, logger: Any) -> WaitResult:
    result = WaitResult.from_error(*ref, error)
    logger.info(log.FINISHED, **result.to_dict())
    return result


class _Fleet:
    """The waits of one fan-out call: their shared settings and how to stop them."""

    def __init__(
        self,
        *,
        policy: PollPolicy,
        client: JobRunClient,
        limiter: RateLimiter,
        seams: Seams,
        on_change: OnChange | None,
        on_result: OnResult | None,
        on_step: StepHooks | None,
    ) -> None:
        self.policy = policy
        self.client = client
        self.limiter = limiter
        # Calls handed to the pool at once; the rest wait their turn here.
        self.slots = asyncio.Semaphore(2 * CALL_WORKERS)
        # Every wait's seams: the limiter's clock unless one was given.
        self.clock: Clock = seams.clock or limiter.clock
        self.seams = replace(seams, clock=self.clock)
        self.sleep: AsyncSleep = seams.async_sleep or asyncio.sleep
        self.executor: Executor = seams.executor or shared_executor()
        self.on_change = on_change
        self.on_result = on_result
        self.on_step = on_step
        # Set when the caller stops the whole fan-out: cancelled waits then
        # end with an `interrupted` result instead of propagating.
        self.stopping = False
        self.started = self.clock()
        self.starting = asyncio.Semaphore(STARTING)
        self.live: set[asyncio.Task[None]] = set()
        self.results: dict[RunRef, WaitResult] = {}
        # History lookups and job listings in flight or booked.
        self.learning: set[asyncio.Task[None]] = set()
        self.logger = seams.logger if seams.logger is not None else log.get_logger()
        # The live waits, so a job's listing finds the runs it shows.
        self.waits: dict[RunRef, _Turns] = {}
        self.watches: dict[tuple[str, str], _Watch] = {}
        # Waits that have not had a first answer yet: a listing may show them.
        self.unseen = 0
        # How many waits read a run of each job by their own call.
        self.readers: collections.Counter[tuple[str, str]] = collections.Counter()

    def fetch(self, ref: RunRef, turns: _Turns) -> JobRun:
        """One call for ``ref`` at its granted time, reported to the budget; in a worker thread."""
        try:
            run = fetch_job_run(self.client, *ref)
        except CallFault as fault:
            # Denied or not found still means the rate was accepted.
            self.report(turns.granted_at, fault.kind)
            raise
        self.report(turns.granted_at, None)
        return run

    def report(self, granted_at: float, kind: FaultKind | None) -> None:
        """Tell the budget how the call booked at ``granted_at`` went (``kind``: its fault)."""
        if kind is FaultKind.THROTTLE:
            self.limiter.throttled(granted_at, self.policy.retry_max)
        elif kind is not FaultKind.TRANSIENT:
            self.limiter.succeeded()

    def learn(self, domain_id: str, job_id: str) -> None:
        """Look the job's history up in the background, on the shared calendar."""
        task = asyncio.create_task(self._lookup(domain_id, job_id))
        self.learning.add(task)
        task.add_done_callback(self.learning.discard)

    async def _lookup(self, domain_id: str, job_id: str) -> None:
        key = (domain_id, job_id)
        deadline = None if self.policy.timeout is None else self.started + self.policy.timeout
        booking = self.limiter.reserve(self.clock(), deadline)
        if booking is None:
            shared_cache().release(key)  # the budget cannot fit it before every wait ends
            return
        try:
            while not booking.lost and (delay := booking.at - self.clock()) > 0:
                await self.sleep(delay)
            if booking.lost:
                self.limiter.release(booking)
                shared_cache().release(key)
                return
            async with self.slots:
                learned = await asyncio.get_running_loop().run_in_executor(
                    self.executor, learn, self.client, domain_id, job_id
                )
        except asyncio.CancelledError:
            self.limiter.release(booking)
            shared_cache().release(key)
            raise
        self.report(booking.at, learned.fault)

    def discovered(self, turns: _Turns, run: JobRun) -> None:
        """A wait read its run: watch its job, or look its history up, or join its watch.

        A job is watched while waits of the fan-out have not read their runs
        yet (a listing may show them) and the listing is worth its call: it
        is the job's history lookup too, or a second run of the job was read
        still going. A finished run costs one GetJobRun and nothing else.
        """
        if run.is_terminal or not run.job_id or not self.policy.history:
            return
        key = (run.domain_id, run.job_id)
        watch = self.watches.get(key)
        if watch is None:
            if not turns.read:
                turns.read = True
                self.readers[key] += 1
            claimed = wants_history(self.policy, run)
            if self.unseen > 0 and (claimed or self.readers[key] > 1):
                watch = self.watches[key] = _Watch(self, key, claimed=claimed)
            elif claimed:
                self.learn(*key)
        if watch is not None:
            watch.join(turns)

    def show(self, watch: _Watch, runs: list[JobRun]) -> set[_Turns]:
        """A page of the watch's job came back: each live wait it shows takes its run.

        Returns the waits it showed.
        """
        shown = set()
        for run in runs:
            turns = self.waits.get((run.domain_id, run.id))
            if turns is None:
                continue
            watch.join(turns)
            if turns.watch is watch:
                shown.add(turns)
                turns.listed(run)
        return shown

    async def wait_one(self, ref: RunRef, rng: _Stream) -> None:
        """Wait on one run; its result goes to ``results`` (and ``on_result``)."""
        turns = _Turns(self)
        session = WaitSession(
            *ref,
            self.policy,
            seams=self.seams,
            jitter=rng,
            on_change=self.on_change,
            on_step=self.on_step(ref) if self.on_step is not None else None,
            pace=turns.pace,
            started=self.started,
        )
        turns.attach(session)
        self.waits[ref] = turns
        try:
            if self.stopping:
                raise asyncio.CancelledError
            step = await async_drive(
                session,
                functools.partial(self.fetch, ref, turns),
                _booked,
                pool=self.executor,
                turn=turns.turn,
                slots=self.slots,
            )
        except asyncio.CancelledError:
            turns.release()
            result = session.result(session.interrupted())
            if not self.stopping:
                raise
        else:
            result = session.result(step)
        finally:
            turns.started()
            del self.waits[ref]
            if turns.watch is not None:
                turns.watch.leave(turns)
        self._ended(ref, result)

    async def run_all(self, todo: dict[RunRef, _Stream]) -> None:
        """Start the waits in input order, a window at a time; return when all have ended.

        A wait is started only when fewer than ``STARTING`` others are still
        before their first answer: 100,000 runs do not hold 100,000 coroutines,
        timers and queued calls at once. Every wait's deadline still runs from
        ``started``, the fan-out's start.
        """
        self.unseen = len(todo)
        for ref, rng in todo.items():
            if not self.stopping:
                await self.starting.acquire()
            task = asyncio.create_task(self.wait_one(ref, rng))
            self.live.add(task)
            task.add_done_callback(self.live.discard)
        while self.live:
            ended = await asyncio.gather(*self.live, return_exceptions=True)
            for outcome in ended:
                if isinstance(outcome, BaseException) and not isinstance(
                    outcome, asyncio.CancelledError
                ):
                    raise outcome  # a bug, not a fault: the caller's finally stops the rest
        for ref in todo:
            if ref not in self.results:
                # Stopped before its coroutine first ran: it still gets its result.
                self._interrupted(ref)

    def _interrupted(self, ref: RunRef) -> None:
        session = WaitSession(*ref, self.policy, seams=self.seams)
        self._ended(ref, session.result(session.interrupted()))

    def _ended(self, ref: RunRef, result: WaitResult) -> None:
        self.results[ref] = result
        if self.on_result is not None:
            self.on_result(result)

    def stop(self) -> None:
        """End every wait with an ``interrupted`` result, those not started yet included."""
        self.stopping = True
        for task in list(self.live):
            task.cancel()


async def _fan_out(
    runs: Iterable[RunRef],
    *,
    timeout: float | Unset | None,
    policy: PollPolicy | None,
    client: JobRunClient | ClientSettings | None,
    max_rps: float | None,
    limiter: RateLimiter | None,
    on_result: OnResult | None,
    on_change: OnChange | None,
    on_step: StepHooks | None,
    cancel: threading.Event | None,
    seams: Seams | None,
) -> list[WaitResult]:
    refs = _refs(runs)
    policy = resolve_policy(policy, timeout)
    seams = seams or REAL
    budget = _resolve_limiter(limiter, max_rps, seams.clock)
    logger = seams.logger if seams.logger is not None else log.get_logger()
    seams = replace(seams, logger=logger)
    rng = seams.rng if seams.rng is not None else random.Random()
    done: dict[RunRef, WaitResult] = {}
    todo: dict[RunRef, _Stream] = {}
    for ref in refs:
        if ref in done or ref in todo:
            continue  # the same run twice is waited on once, reported at each place
        try:
            validate_ids(*ref)
        except InvalidRequestError as error:
            done[ref] = _not_waited(ref, error, logger)
            if on_result is not None:
                on_result(done[ref])
        else:
            # Each wait gets its own generator, seeded in input order, so one
            # rng gives a reproducible fleet whatever order the calls end in.
            todo[ref] = _Stream(rng.getrandbits(64))
    logger.debug(FANOUT_STARTED, runs=len(refs), waits=len(todo), max_rps=budget.max_rps)
    if todo:
        fleet = _Fleet(
            policy=policy,
            client=resolve_client(client, shared=True),
            limiter=budget,
            seams=seams,
            on_change=on_change,
            on_result=on_result,
            on_step=on_step,
        )
        watcher = None
        if cancel is not None:
            watcher = asyncio.create_task(_stop_on(cancel, fleet))
        try:
            await fleet.run_all(todo)
        finally:
            # One wait that raised (a bug, not a fault) or an outer cancel
            # stops the rest, each logging its last state as it goes.
            for task in fleet.live:
                task.cancel()
            await asyncio.gather(*fleet.live, return_exceptions=True)
            if watcher is not None:
                watcher.cancel()
            for lookup in fleet.learning:
                lookup.cancel()
            await asyncio.gather(*fleet.learning, return_exceptions=True)
        done.update(fleet.results)
    outcomes = collections.Counter(str(result.outcome) for result in done.values())
    logger.debug(FANOUT_FINISHED, runs=len(refs), rate=round(budget.rate, 3), **outcomes)
    return [done[ref] for ref in refs]


async def _stop_on(cancel: threading.Event, fleet: _Fleet) -> None:
    # Real time on purpose: the event is set by another thread, on no clock of ours.
    while not cancel.is_set():
        await asyncio.sleep(CANCEL_POLL)
    fleet.stop()


async def async_wait_for_job_runs(
    runs: Iterable[RunRef],
    *,
    timeout: float | Unset | None = UNSET,
    policy: PollPolicy | None = None,
    client: JobRunClient | ClientSettings | None = None,
    max_rps: float | None = None,
    limiter: RateLimiter | None = None,
    on_result: OnResult | None = None,
    on_change: OnChange | None = None,
    on_step: StepHooks | None = None,
    seams: Seams | None = None,
) -> list[WaitResult]:
    """Wait on every ``(domain_id, job_run_id)`` in ``runs`` at once; one result each, in order.

    Never raises for a run: one that cannot be waited on (bad IDs, not found,
    denied, deadline passed...) gets a result with that outcome and its
    ``error``, and the others carry on. ``on_result`` is called with each
    result as its wait ends; a run listed twice is waited on once. ``on_step``
    gives each run's wait its own ``on_step`` hook (a progress line per run).

    All calls share ``limiter`` (default: the process-wide one, whose budget
    ``max_rps`` sets). With an injected ``seams.clock`` and no ``limiter``, the
    waits get a private limiter on that clock. Cancelling the task stops
    every wait; each logs its last state as ``interrupted``.
    """
    return await _fan_out(
        runs,
        timeout=timeout,
        policy=policy,
        client=client,
        max_rps=max_rps,
        limiter=limiter,
        on_result=on_result,
        on_change=on_change,
        on_step=on_step,
        cancel=None,
        seams=seams,
    )


def wait_for_job_runs(
    runs: Iterable[RunRef],
    *,
    timeout: float | Unset | None = UNSET,
    policy: PollPolicy | None = None,
    client: JobRunClient | ClientSettings | None = None,
    max_rps: float | None = None,
    limiter: RateLimiter | None = None,
    on_result: OnResult | None = None,
    on_change: OnChange | None = None,
    on_step: StepHooks | None = None,
    cancel: threading.Event | None = None,
    seams: Seams | None = None,
) -> list[WaitResult]:
    """Block until every run in ``runs`` has a result; as `async_wait_for_job_runs`.

    Setting ``cancel`` stops every wait still going: each gets an
    ``interrupted`` result and the list is returned as usual. The waits run
    on a private event loop in this thread (in a helper thread if this one
    already runs a loop); ``on_result`` is called on that thread, and the
    waits sleep with ``seams.async_sleep``.
    """

    def run() -> list[WaitResult]:
        return asyncio.run(
            _fan_out(
                runs,
                timeout=timeout,
                policy=policy,
                client=client,
                max_rps=max_rps,
                limiter=limiter,
                on_result=on_result,
                on_change=on_change,
                on_step=on_step,
                cancel=cancel,
                seams=seams,
            )
        )

    return off_any_running_loop(run)
