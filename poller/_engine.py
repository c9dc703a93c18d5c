"""One engine per process: every wait books its calls on its account's budget, with the others.

DataZone throttles per account, so waits that each poll politely still add
up: a triggerer's thousand triggers, or sixty threads each calling
``wait_for_job_run``, used to make seven times the calls of one fan-out, most
of them throttled. So every wait of a process with real time (the blocking
wait from any thread, a read, the async wait on any event loop, a fan-out,
the CLI, each Airflow trigger) runs here: as a task on one event loop, in a
daemon thread started on first use, in the `Fleet` of its client's account.

- A `Fleet` is one account's waits on one loop: they book every call on the
  account's `RateLimiter` (`_limiter.budget_for`), the runs of one job are
  looked at together by one ListJobRuns (`_Watch`), which the job's
  watchers follow too (`Follower`), and a job's history is looked up once.
  Waits join and leave at any time, each with its own policy, deadline,
  callbacks and cancellation.
- Each wait is an ordinary `WaitSession` driven by `async_drive`: the
  cadence, backoff, grace and deadline rules are the core's, unchanged. The
  one difference is when a call may be made: each wait books its calls on
  the calendar as soon as the core names the delay; what its turn does is
  decided by `_turn.on_event` (a pure state machine) and carried out by `_Turns`.
- A caller submits its wait and waits for it: a thread blocks on it (its
  ``cancel`` event, looked at by one ticker for the whole engine, cancels
  it); an async caller awaits it from its own loop (cancelling the caller
  cancels it). The task runs in a copy of the caller's contextvars
  (OpenTelemetry spans, structlog's bound context). Callbacks run where the
  caller is: a blocking caller's in its own thread, an async caller's on its
  own loop; never on the engine's thread, so a slow callback holds up no
  other wait.
- Waits with injected time (a fake clock, a ``sleep``) or their own
  executor cannot share the real-time engine: they run a private `Fleet`
  (`own_fleet`, or a fan-out's, as one given its own ``limiter`` does) on a
  loop of their time (`_vloop`): the same code (docs/design.md, "Own time").
- What others do stays theirs: each account's fleet has its own call pool, an
  async caller's loop closed under its wait stops it, and a job's failed
  listing is dropped (the waits there then make their own calls).

The engine and its loop live in `_home`: ``poller.testing.reset()`` closes
them, and a forked child starts without them.
"""

from __future__ import annotations

import asyncio
import collections
import contextlib
import contextvars
import functools
import math
import threading
import time
from collections.abc import Callable, Coroutine
from concurrent.futures import Executor, Future
from dataclasses import dataclass, replace
from typing import Any, Generic, TypeVar

from poller import _home, log
from poller._announce import more_pages
from poller._datazone import JobRunClient, classify, fetch_job_run
from poller._history import failed as history_failed
from poller._history import learn, learned_from_listing, list_runs, shared_cache, wants_history
from poller._limiter import (
    AccountKey,
    Booking,
    RateLimiter,
    account_key,
    budget_for,
    sleep_or,
    until_booked,
)
from poller._listing import (
    LISTING_PAGES,
    LISTING_TRIES,
    AfterFailure,
    Reading,
    after_failure,
    answer_by,
    lookup_by,
    read_next_page,
    reading,
    worth_a_watch,
)
from poller._model import JobRun
from poller._policy import FaultKind, Step
from poller._runtime import (
    CALL_GRACE,
    CALL_WORKERS,
    CANCEL_POLL,
    AsyncSleep,
    Clock,
    Seams,
    TurnExpired,
    account_pool,
    async_drive,
    shared_executor,
)
from poller._session import WaitSession
from poller._turn import (
    LOST,
    NO_ROOM,
    UNLISTED,
    Action,
    Ask,
    Begin,
    Book,
    Booked,
    Call,
    Event,
    Expire,
    Granted,
    Listed,
    Paced,
    Phase,
    Take,
    Turn,
    WaitBooked,
    WaitUntil,
    Woke,
    on_event,
    reads_own,
)
from poller._turn import ended as turn_ended
from poller._turn import joined as turn_joined
from poller._turn import left as turn_left
from poller._turn import started as turn_started

__all__ = [
    "LISTING_BOUND",
    "LISTING_PAGES",
    "LISTING_STOPPED",
    "LISTING_TRIES",
    "Engine",
    "FinishedRuns",
    "Fleet",
    "Follower",
    "Pages",
    "Relay",
    "RunRef",
    "Stream",
    "engine",
    "engine_seams",
    "finished_runs",
    "hand_over",
    "joins_engine",
    "own_fleet",
    "run_async",
    "run_blocking",
]

_T = TypeVar("_T")

#: A run to wait on: ``(domain_id, job_run_id)``.
RunRef = tuple[str, str]

#: A job's runs went back to their own calls: its listing failed.
LISTING_STOPPED = "job_listing_stopped"
# A job listing still unanswered after this long (seconds) has failed.
LISTING_BOUND = 10.0

_MASK = (1 << 64) - 1


class Stream:
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


class _Turns:
    """One wait in its fleet: carries out what its turn's state machine (`_turn`) decides.

    The decisions are `_turn.on_event`'s, on the frozen `Turn` in ``state``;
    this class only does what each action says (books on the account's
    budget, waits for the booked time or its job's listing, hands the call or
    the listed run to the core) and feeds back what happened. It books the
    next call when the core names the delay (``pace``), not when it is due:
    the wait knows the real time until its call (logged as ``sleep_s``), and
    at once when the budget cannot reach the run before its deadline. A
    wait whose job is watched (`_Watch`) books no call of its own while the
    watch has other runs too: it asks the watch for a look, and takes the
    run as the listing shows it. ``once`` (a read: one answer, no listing, no
    history) is fixed for its life.
    """

    __slots__ = (
        "_booking",
        "_fleet",
        "_news",
        "_window",
        "client",
        "granted_at",
        "once",
        "reads",
        "session",
        "since",
        "state",
        "watch",
    )

    def __init__(
        self,
        fleet: Fleet,
        session: WaitSession,
        client: JobRunClient,
        window: asyncio.Semaphore | None = None,
        *,
        once: bool = False,
    ) -> None:
        self._fleet = fleet
        self.session = session
        self.client = client
        self.once = once
        self.state = Turn(deadline=session.state.deadline)
        self._window = window  # a fan-out's start window, freed at the first answer
        self._booking: Booking | None = None  # the call booked, while the state holds one
        self.granted_at = -math.inf  # the booked time of the call going out now
        self.watch: _Watch | None = None  # its job's watch, while WATCHED
        self.reads: tuple[str, str] | None = None  # the job it counts among the readers of
        self.since = fleet.clock()  # when it joined the fleet
        # What a job's listing says of this wait's run, while the turn listens for it.
        self._news: asyncio.Future[Event] | None = None

    @property
    def phase(self) -> Phase:
        return self.state.phase

    def _on(self, event: Event) -> Action:
        """Feed ``event`` to the state machine; give back what the new state no longer holds."""
        self.state, action = on_event(self.state, event, self._fleet.clock())
        if not self.state.listening:
            self._news = None
        if self._booking is not None and not self.state.holds_booking:
            self._fleet.limiter.release(self._booking)
            self._booking = None
        return action

    def _book(self, book: Book) -> Action:
        self.release_booking()
        limiter = self._fleet.limiter
        self._booking = booking = limiter.reserve(book.due, book.latest, urgent=book.urgent)
        return self._on(NO_ROOM if booking is None else Booked(limiter.at(booking)))

    def _watched(self) -> bool:
        return self.watch is not None and self.watch.active

    def _listing_by(self) -> float:
        return math.inf if self.watch is None else self.watch.answer_by()

    def pace(self, delay: float) -> float:
        """The core asked for ``delay``: book the look, return the real delay until it."""
        self.started()
        now = self._fleet.clock()
        run = self.session.state.last
        if run is not None and not self.once:
            self._fleet.discovered(self, run)
        action = self._on(Paced(now + delay, watched=self._watched()))
        if isinstance(action, Book):
            action = self._book(action)
        if isinstance(action, Ask):
            assert self.watch is not None
            return max(self.watch.need(action.due) - now, 0.0)
        if self._booking is not None:
            return max(self._fleet.limiter.at(self._booking) - now, 0.0)
        return 0.0  # unreachable before the deadline: the turn that follows says what next

    def asked(self) -> float | None:
        """When this wait wants the look it asked its watch for; None if it is not waiting."""
        due = self.state.asking
        if due is None or self._news is None or self._news.done():
            return None
        return due

    def joined(self, watch: _Watch) -> bool:
        """Join ``watch`` if the wait may (not a read, in no watch yet, not dropped by one);
        shown by a listing, it is as good as a first answer."""
        state = turn_joined(self.state, once=self.once)
        if state is None:
            return False
        self.moved(state)
        self.watch = watch
        return True

    def listed(self, what: Reading, run: JobRun) -> None:
        """The job's listing shows this wait's run (`_listing.reading`): the wait takes it,
        if it is listening."""
        if self._news is not None and not self._news.done():
            self._news.set_result(Listed(what, run, self.session.state.last))

    def unlisted(self) -> None:
        """The watch will not show this wait's run: it books its own calls again."""
        self.watch = None
        self.moved(turn_left(self.state))
        if self._news is not None and not self._news.done():
            self._news.set_result(UNLISTED)

    async def turn(self) -> JobRun | None:
        """Until the wait's call may go (None), or the run as its job's listing shows it.

        Carries out `_turn.on_event`'s actions until one ends the turn; the
        deadline, not a booking, ends the wait: then it raises TurnExpired.
        """
        listenable = self.session.policy.history and not self.once
        action = self._on(Begin(listenable, self._watched(), self._listing_by()))
        try:
            while True:
                match action:
                    case Book():
                        action = self._book(action)
                    case WaitBooked():
                        action = self._on(await self._until_booked(action))
                    case WaitUntil():
                        action = self._on(await self._until(action))
                    case Call():
                        return None
                    case Take(run=run):
                        return run
                    case Expire(why=why):
                        raise TurnExpired(why)
                    case Ask():  # pragma: no cover - only `Paced` asks
                        raise AssertionError("a turn never asks its watch")
        except asyncio.CancelledError:
            self.release()
            raise

    def _listen(self, listen: bool) -> asyncio.Future[Event] | None:
        if listen and self._news is None:
            self._news = asyncio.get_running_loop().create_future()
        return self._news if listen else None

    def _heard(self, news: asyncio.Future[Event]) -> Event:
        self._news = None
        return news.result()

    async def _until_booked(self, action: WaitBooked) -> Event:
        """Until the booked time (`until_booked`: it may move), or the listing's news."""
        fleet = self._fleet
        booking = self._booking
        assert booking is not None, "a turn that holds a booking has one"
        news = self._listen(action.listen)
        granted = await until_booked(
            fleet.limiter,
            booking,
            asked=action.asked,
            clock=fleet.clock,
            sleep=fleet.sleep,
            news=news,
            recheck=action.recheck,
        )
        if granted is not None:
            self._booking = None  # it goes: not given back
            self.granted_at = granted
            return Granted()
        if news is not None and news.done():
            return self._heard(news)
        return LOST

    async def _until(self, action: WaitUntil) -> Event:
        """Until ``action.until``, or the listing's news."""
        fleet = self._fleet
        news = self._listen(action.listen)
        delay = action.until - fleet.clock()
        if delay > 0:
            if math.isinf(delay):
                assert news is not None, "an endless wait always listens"
                await news
            elif news is None:
                await fleet.sleep(delay)
            else:
                await sleep_or(news, delay, fleet.sleep)
        if news is not None and news.done():
            return self._heard(news)
        return Woke(self._listing_by())

    def moved(self, state: Turn) -> None:
        """The wait's phase changed (`_turn`): one that leaves UNREAD frees its place among
        the fleet's unread waits and in the start window."""
        if self.state.phase is Phase.UNREAD and state.phase is not Phase.UNREAD:
            self._fleet.unseen -= 1
            if self._window is not None:
                self._window.release()
        self.state = state

    def started(self) -> None:
        """The wait had its first answer."""
        self.moved(turn_started(self.state))

    def release_booking(self) -> None:
        if self._booking is not None:
            self._fleet.limiter.release(self._booking)
            self._booking = None

    def release(self) -> None:
        """The wait ended (or was cancelled) with a call still booked: give the time back."""
        self.release_booking()
        self._news = None

    def done(self) -> None:
        """The wait ended: give back what it holds, leave its watch."""
        self.release()
        self.moved(turn_ended(self.state))
        if self.reads is not None:
            self._fleet.unread(self.reads)
            self.reads = None
        if self.watch is not None:
            self.watch.leave(self)


class _Watch:
    """A job's live runs in one fleet, looked at together: one ListJobRuns shows them all.

    Created when a wait first reads a run of the job while other waits of
    the fleet have not read theirs yet: the first listing (urgent, ahead of
    ordinary calls) may show many of them at once. From then on its runs
    ask it for their looks (`need`), and one listing is booked at the
    earliest time any of them wants: a look for every run of the job at the
    cost of one call. A run the listing does not show goes back to its own
    calls. A listing throttled or failing is tried again, up to LISTING_TRIES
    times in a row; then, or when denied, the watch ends (its runs go back to
    their own calls) with one `job_listing_stopped` event.

    Job watchers of the job (`Follower`: `poller._watching.JobWatch`) ride on
    the same listing: each asks for its next one, is handed every listing made
    (or the error it failed with) and retries on its own policy, and the pages
    are read as deep as the deepest of them needs. Its runs going back to
    their own calls does not end a watch that watchers still follow.
    """

    __slots__ = (
        "_booking",
        "_failures",
        "_fleet",
        "_paging",
        "_sent_at",
        "_task",
        "_wanted",
        "claimed",
        "client",
        "followers",
        "key",
        "members",
        "retry_max",
        "stopped",
    )

    def __init__(
        self,
        fleet: Fleet,
        key: tuple[str, str],
        client: JobRunClient,
        retry_max: float,
        *,
        claimed: bool = False,
        list_now: bool = True,
    ) -> None:
        self._fleet = fleet
        self.key = key
        self.client = client  # the listings' client: any of the account's will do
        self.retry_max = retry_max  # the floor its throttles keep
        self.claimed = claimed  # this watch's first listing is the job's history lookup
        self.members: set[_Turns] = set()
        self.followers: set[Follower] = set()
        self.stopped = False
        self._booking: Booking | None = None
        self._task: asyncio.Task[None] | None = None
        self._wanted = -math.inf  # when the booked listing was wanted
        self._failures = 0  # listings failed in a row
        self._paging = False  # reading the pages after the first
        self._sent_at: float | None = None  # when the page call now out went out
        if list_now:
            self._book(fleet.clock(), urgent=True)

    @property
    def active(self) -> bool:
        """True while a listing would show more than one run of the fleet, or is made anyway
        for a job watcher."""
        return not self.stopped and (
            len(self.members) > 1 or (bool(self.members) and bool(self.followers))
        )

    def join(self, turns: _Turns) -> None:
        """A wait of this job joins (its own answer or a listing said it is one)."""
        if not self.stopped and turns.joined(self):
            self.members.add(turns)

    def leave(self, turns: _Turns) -> None:
        """The wait ended, or the listing does not show it; the last to end ends the watch
        (one the listing did not show keeps it: listing the job again would not help)."""
        self.members.discard(turns)
        ended = turns.phase is Phase.DONE
        turns.unlisted()
        if ended:
            self._end_if_idle()

    def follow(self, follower: Follower) -> None:
        """A job watcher follows the job's listings from now on."""
        self.followers.add(follower)
        follower.watch = self

    def unfollow(self, follower: Follower) -> None:
        """The watcher stopped: the last to go, with no wait left, ends the watch."""
        self.followers.discard(follower)
        follower.watch = None
        self._end_if_idle()

    def _end_if_idle(self) -> None:
        if not self.members and not self.followers and not self.stopped:
            self.stopped = True
            self._cancel()
            self._give_back()
            self._fleet.retire(self)

    def ask(self, follower: Follower, due: float, floor: float, seen: int) -> None:
        """A watcher that has taken ``seen`` listings wants the next at ``due``, read back to
        runs created at ``floor``; an ask made before the newest listing reached it is stale."""
        if self.stopped or follower not in self.followers or seen < follower.told:
            return
        follower.floor = floor
        follower.asked = due if follower.asked is None else min(follower.asked, due)
        self.need(due)

    def tell(self, news: Pages | Exception) -> None:
        """Hand every follower the listing just made, or the error it failed with."""
        for follower in list(self.followers):
            follower.asked = None
            follower.told += 1
            if not follower.give(news):
                self.unfollow(follower)  # its loop is closed: nobody reads it

    def _deeper(self, page: list[JobRun]) -> bool:
        """Whether a follower needs the pages past ``page`` (`_announce.more_pages`)."""
        return any(more_pages(page, follower.floor) for follower in self.followers)

    def answer_by(self) -> float:
        """When the listing its runs wait for is late (`_listing.answer_by`)."""
        booking = self._booking
        booked_at = self._fleet.limiter.at(booking) if booking is not None else None
        return answer_by(sent_at=self._sent_at, booked_at=booked_at)

    def need(self, due: float, *, urgent: bool = False) -> float:
        """A run wants a look at ``due`` (``urgent``: ahead of the ordinary bookings): when
        the listing that gives it will be made."""
        if self._task is not None and (self._booking is None or self._paging):
            return self._fleet.clock()  # one is out: its answer is newer than the ask
        # The first listing was booked urgent, as early as it can be: it stays.
        limiter = self._fleet.limiter
        booking = self._booking
        if booking is None or (limiter.at(booking) > due and not booking.urgent):
            self._book(due, urgent=urgent)
        assert self._booking is not None
        return limiter.at(self._booking)

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

    async def _until_booked(self) -> float:
        """Sleep until the listing's booked time (`until_booked`; it may move); the time its
        call goes at."""
        fleet = self._fleet
        booking = self._booking
        assert booking is not None
        granted = await until_booked(
            fleet.limiter, booking, asked=self._wanted, clock=fleet.clock, sleep=fleet.sleep
        )
        assert granted is not None  # no latest, no news: it always comes
        return granted

    async def _list(self) -> None:
        try:
            urgent = self._booking is not None and self._booking.urgent
            granted = await self._until_booked()
        except asyncio.CancelledError:
            # Re-booked: `_cancel` gave the booking back, and the claim goes on with the
            # new listing. Stopped (the fleet ends): both are given back here.
            if self._task is asyncio.current_task():
                self._give_back()
            raise
        self._booking = None
        try:
            read = await self._read(granted, urgent=urgent)
        except asyncio.CancelledError:
            if self._task is asyncio.current_task():
                self._give_back()  # a next page's booking, and the claim
            raise
        except Exception as exc:
            self._broke(exc)
            return
        finally:
            self._paging = False
            if self._task is asyncio.current_task():
                self._task = None
        if read is not None:
            try:
                self._use(*read)
            except Exception as exc:
                self._broke(exc)

    def _broke(self, exc: Exception) -> None:
        """A bug in what the pages are used for, never a failed listing (`_page` covers
        the call alone): the runs go back to their own calls, the watchers are handed it;
        the bug is logged as itself."""
        self._give_back()
        self.tell(exc)
        self.stop(f"a bug in poller: {exc!r}", bug=exc)

    async def _read(self, granted: float, *, urgent: bool) -> tuple[Pages, set[_Turns]] | None:
        """The listing's pages, each shown to the fleet, and the waits they showed; None if a
        call failed (handled)."""
        fleet = self._fleet
        runs: list[JobRun] = []
        shown: set[_Turns] = set()
        token: str | None = None
        more: list[JobRun] = []
        sent_at = fleet.clock()  # the first page's call goes now
        for page in range(LISTING_PAGES):
            if page:
                # The next page is one more call, booked like the first; runs
                # asking for a look meanwhile get this listing's pages.
                self._paging = True
                self._booking = fleet.limiter.reserve(fleet.clock(), urgent=urgent)
                granted = await self._until_booked()
                self._booking = None
            answer = await self._page(granted, token, urgent=urgent)
            if answer is None:
                return None  # failed: handled (tried again, or the watch stopped)
            more, token = answer
            runs += more
            page_shown = fleet.show(self, more)
            shown |= page_shown
            # Older runs of the job are worth another call only if this page
            # showed several waits of the fleet, or a watcher needs them.
            if not read_next_page(
                page=page, more=token is not None, shown=len(page_shown), deeper=self._deeper(more)
            ):
                break
        return Pages(tuple(runs), tuple(more), token is not None, page + 1, sent_at), shown

    def _use(self, pages: Pages, shown: set[_Turns]) -> None:
        """The listing was read: learn the job's history from it if claimed, send the
        runs it did not show back to their own calls, hand it to the followers, book the
        next one if asked."""
        fleet = self._fleet
        domain_id, job_id = self.key
        self._failures = 0
        if self.claimed:
            self.claimed = False
            if not learned_from_listing(domain_id, job_id, pages.runs, pages.more):
                # Too few successes here: ask for them alone.
                fleet.learn(self.client, domain_id, job_id, None, self.retry_max)
        for turns in self.members - shown:
            self.leave(turns)  # not on the pages read: it makes its own calls
        self.tell(pages)
        # Runs that asked for their next look while the pages were read wait for it.
        asked = [due for turns in self.members if (due := turns.asked()) is not None]
        if asked and self._task is None:
            self._book(min(asked))

    def _give_back(self) -> None:
        if self._booking is not None:
            self._fleet.limiter.release(self._booking)
            self._booking = None
        if self.claimed:
            self.claimed = False
            shared_cache().release(self.key)

    async def _page(
        self, granted: float, token: str | None, *, urgent: bool
    ) -> tuple[list[JobRun], str | None] | None:
        """One ListJobRuns page at its booked time, reported to the budget; None if it failed.

        Only the call is covered: a bug in what the page is then used for is
        raised as itself, never taken for a failed listing.
        """
        fleet = self._fleet
        domain_id, job_id = self.key
        self._sent_at = fleet.clock()
        try:
            async with asyncio.timeout(LISTING_BOUND), fleet.slots:
                answer = await asyncio.get_running_loop().run_in_executor(
                    fleet.executor, list_runs, self.client, domain_id, job_id, None, token
                )
        except asyncio.CancelledError:
            raise
        except Exception as exc:  # a listing's failure is the watch's, never a wait's
            self._failed(exc, granted, urgent=urgent)
            return None
        finally:
            self._sent_at = None
        fleet.report(granted, None, self.retry_max)
        return answer

    def _failed(self, exc: Exception, granted: float, *, urgent: bool) -> None:
        fault = classify(exc)
        learned = history_failed(exc)
        self.tell(exc)  # each watcher retries on its own policy, or ends
        if fault is not None:
            fleet = self._fleet
            fleet.report(granted, fault.kind, self.retry_max)
            self._failures += 1
            if after_failure(fault.kind, self._failures) is AfterFailure.AGAIN:
                if self.members:
                    # Again at the budget's next free time (after a throttle, later), as urgent.
                    self._book(fleet.clock(), urgent=urgent)
                return
        # Else, as for a fault `classify` does not know (a client poller did not build):
        # not counted for or against the rate; the runs go back to their own calls.
        if self.claimed:
            self.claimed = False
            shared_cache().put(self.key, learned)
        self.stop(learned.reason or "ListJobRuns failed")

    def stop(self, reason: str, *, bug: Exception | None = None) -> None:
        """No more listings for this job: its runs go back to their own calls.

        ``bug``: a bug in poller stopped it, logged as an error with its traceback.
        """
        if self.stopped:
            return
        members = list(self.members)
        if self.followers and bug is None:
            # Watchers still follow the job (each ends on its own policy): only its runs
            # go back to their own calls, and later waits of the job may join again.
            self._failures = 0
            self._fleet.unlisted[self.key] = self._fleet.clock()
        else:
            self.stopped = True
            self._cancel()
            self._fleet.retire(self, failed=True)
            for follower in list(self.followers):
                self.unfollow(follower)
        for turns in members:
            self.leave(turns)
        if not members and not self.stopped:
            return  # no run went back: nothing to tell
        domain_id, job_id = self.key
        logger = self._fleet.logger
        if bug is None:
            logger.info(LISTING_STOPPED, domain_id=domain_id, job_id=job_id, reason=reason)
        else:
            logger.error(
                LISTING_STOPPED, domain_id=domain_id, job_id=job_id, reason=reason, exc_info=bug
            )


@dataclass(frozen=True, slots=True)
class Pages:
    """One listing of a job as its followers are handed it: every run on the pages read,
    the last page, whether pages remain past it, how many were read, and when the first
    page's call went out (the fleet's clock)."""

    runs: tuple[JobRun, ...]
    last: tuple[JobRun, ...]
    more: bool
    pages: int
    sent_at: float


class Follower:
    """A job watcher's seat at its job's `_Watch`, from any event loop.

    Made on the watcher's loop: ``fleet`` is called on the fleet's loop
    (``fleet_loop``) to find the fleet it follows in. `ask` crosses to the
    fleet's loop, and every listing the watch makes (`Pages`, or the error it
    failed with) crosses back to `next`; both thread-safe, as the engine's
    loop is another thread's. A watcher that has not taken the last one
    when the next comes gets the newer only: a listing is a snapshot, so a
    slow watcher holds one, not all that were made meanwhile.
    """

    def __init__(
        self,
        fleet_loop: asyncio.AbstractEventLoop,
        fleet: Callable[[], Fleet],
        key: tuple[str, str],
        client: JobRunClient,
        retry_max: float,
    ) -> None:
        self.key = key
        self.client = client
        self.retry_max = retry_max
        # The fleet's side, on its loop: the watch, the floor and the standing ask.
        self.watch: _Watch | None = None
        self.floor = -math.inf
        self.asked: float | None = None
        self.told = 0  # listings (and failures) handed to it
        self._loop = asyncio.get_running_loop()
        self._fleet_loop = fleet_loop
        # The watcher's side: the newest listing not taken yet, and its number.
        self._news: tuple[int, Pages | Exception] | None = None
        self._came = asyncio.Event()
        fleet_loop.call_soon_threadsafe(self._follow, fleet)

    def ask(self, due: float, floor: float, seen: int) -> None:
        """The next listing at ``due`` (the fleet's clock), back to runs created at ``floor``;
        ``seen``: how many listings the watcher has taken so far."""
        self._fleet_loop.call_soon_threadsafe(self._ask, due, floor, seen)

    async def next(self) -> tuple[int, Pages | Exception]:
        """The newest listing of the job not taken yet (or the error it failed with), and how
        many have been made for this follower up to it."""
        await self._came.wait()
        self._came.clear()
        assert self._news is not None
        news, self._news = self._news, None
        return news

    def close(self) -> None:
        """Stop following (a closed fleet's loop has nothing left to stop)."""
        with contextlib.suppress(RuntimeError):
            self._fleet_loop.call_soon_threadsafe(self._unfollow)

    def give(self, news: Pages | Exception) -> bool:
        """On the fleet's loop: hand ``news`` over; False if the watcher's loop is closed."""
        try:
            self._loop.call_soon_threadsafe(self._came_in, self.told, news)
        except RuntimeError:
            return False
        return True

    def _came_in(self, number: int, news: Pages | Exception) -> None:
        self._news = (number, news)
        self._came.set()

    def _follow(self, fleet: Callable[[], Fleet]) -> None:
        fleet().follow(self)

    def _ask(self, due: float, floor: float, seen: int) -> None:
        if self.watch is not None:
            self.watch.ask(self, due, floor, seen)

    def _unfollow(self) -> None:
        if self.watch is not None:
            self.watch.unfollow(self)


class FinishedRuns:
    """The answers (lineage included) of the runs the process last read finished, by account.

    A finished run's answer never changes: a job watcher takes the one a wait
    of the process just read (its last GetJobRun, for the lineage), rather
    than read the run again. Kept in `_home` (`finished_runs`); thread-safe.
    """

    def __init__(self, size: int = 1024) -> None:
        self._size = size
        self._runs: collections.OrderedDict[tuple[AccountKey, str, str], JobRun] = (
            collections.OrderedDict()
        )
        self._lock = threading.Lock()

    def put(self, account: AccountKey, run: JobRun) -> None:
        """``run`` was read finished through a client of ``account``."""
        if run.is_terminal:
            with self._lock:
                self._runs[(account, run.domain_id, run.id)] = run
                while len(self._runs) > self._size:
                    self._runs.popitem(last=False)

    def get(self, account: AccountKey, domain_id: str, run_id: str) -> JobRun | None:
        """The run as last read finished, if it was."""
        with self._lock:
            return self._runs.get((account, domain_id, run_id))


_FINISHED = _home.Slot("finished_runs", FinishedRuns)


def finished_runs() -> FinishedRuns:
    """The process's `FinishedRuns`."""
    return _FINISHED.get()


async def _booked(delay: float) -> None:
    """A fleet wait's sleep between looks: none here, its turn waits for the booked time."""


class Fleet:
    """One account's waits on one event loop: one budget, one listing per job, one history.

    Waits join (`drive`) and leave at any time; each keeps its own session
    (policy, deadline, callbacks) and client. What they share: ``limiter``
    (the account's budget), the job watches, the history lookups and the
    slots that queue calls for the pool.
    """

    def __init__(
        self,
        *,
        limiter: RateLimiter,
        clock: Clock | None = None,
        sleep: AsyncSleep | None = None,
        executor: Executor | None = None,
        logger: Any = None,
    ) -> None:
        self.limiter = limiter
        # Calls handed to the pool at once; the rest wait their turn here.
        self.slots = asyncio.Semaphore(2 * CALL_WORKERS)
        self.clock: Clock = clock or limiter.clock
        self.sleep: AsyncSleep = sleep or asyncio.sleep
        self.executor: Executor = executor or shared_executor()
        self._logger = logger
        # History lookups and job listings in flight or booked.
        self.learning: set[asyncio.Task[None]] = set()
        # The live waits, so a job's listing finds the runs it shows.
        self.waits: dict[RunRef, list[_Turns]] = {}
        self.watches: dict[tuple[str, str], _Watch] = {}
        # When each job's last listing stopped (denied, failing): the waits that were
        # there then do not list it again; a wait that came later may.
        self.unlisted: dict[tuple[str, str], float] = {}
        # Waits that have not had a first answer yet: a listing may show them.
        self.unseen = 0
        # How many waits read a run of each job by their own call.
        self.readers: collections.Counter[tuple[str, str]] = collections.Counter()

    @property
    def logger(self) -> Any:
        return self._logger if self._logger is not None else log.get_logger()

    def fetch(self, client: JobRunClient, ref: RunRef, turns: _Turns) -> JobRun:
        """One call for ``ref`` at its granted time, reported to the budget; in a worker thread."""
        retry_max = turns.session.policy.retry_max
        try:
            run = fetch_job_run(client, *ref)
        except Exception as exc:
            fault = classify(exc)
            # Denied or not found still means the rate was accepted.
            self.report(turns.granted_at, fault.kind if fault is not None else None, retry_max)
            raise
        self.report(turns.granted_at, None, retry_max)
        if run.is_terminal:
            finished_runs().put(account_key(client), run)  # for a watcher of its job
        return run

    def report(self, granted_at: float, kind: FaultKind | None, retry_max: float) -> None:
        """Tell the budget how the call booked at ``granted_at`` went (``kind``: its fault)."""
        self.limiter.report(granted_at, kind, retry_max, self.logger)

    def learn(
        self,
        client: JobRunClient,
        domain_id: str,
        job_id: str,
        deadline: float | None,
        retry_max: float,
    ) -> None:
        """Look the job's history up in the background, on the shared calendar."""
        task = asyncio.create_task(self._lookup(client, domain_id, job_id, deadline, retry_max))
        self.learning.add(task)
        task.add_done_callback(self.learning.discard)

    async def _lookup(
        self,
        client: JobRunClient,
        domain_id: str,
        job_id: str,
        deadline: float | None,
        retry_max: float,
    ) -> None:
        key = (domain_id, job_id)
        now = self.clock()
        booking = self.limiter.reserve(now, lookup_by(now, deadline))  # polls before extras
        if booking is None:
            shared_cache().release(key)  # the budget cannot fit it soon enough
            return
        try:
            granted = await until_booked(
                self.limiter,
                booking,
                asked=self.limiter.at(booking),
                clock=self.clock,
                sleep=self.sleep,
            )
            if granted is None:  # lost
                self.limiter.release(booking)
                shared_cache().release(key)
                return
            async with self.slots:
                learned = await asyncio.get_running_loop().run_in_executor(
                    self.executor, learn, client, domain_id, job_id
                )
        except asyncio.CancelledError:
            self.limiter.release(booking)
            shared_cache().release(key)
            raise
        self.report(granted, learned.fault, retry_max)

    def discovered(self, turns: _Turns, run: JobRun) -> None:
        """A wait read its run: watch its job, or look its history up, or join its watch.

        A job is watched while waits of the fleet have not read their runs
        yet (a listing may show them) and the listing is worth its call: it
        is the job's history lookup too, or a second run of the job was read
        still going. A finished run costs one GetJobRun and nothing else.
        """
        policy = turns.session.policy
        if run.is_terminal or not run.job_id or not policy.history or turns.phase is Phase.ALONE:
            return  # a wait its job's listing let go makes its own calls to the end
        key = (run.domain_id, run.job_id)
        watch = self.watches.get(key)
        if watch is None:
            if turns.phase is Phase.STARTED:
                turns.moved(reads_own(turns.state))
                turns.reads = key
                self.readers[key] += 1
            if turns.since <= self.unlisted.get(key, -math.inf):
                return  # there when the job's listing failed: no listing, no lookup for it
            claimed = wants_history(policy, run)
            if worth_a_watch(
                history_claimed=claimed, unread=self.unseen, readers=self.readers[key]
            ):
                self.unlisted.pop(key, None)
                watch = self.watches[key] = _Watch(
                    self, key, turns.client, policy.retry_max, claimed=claimed
                )
            elif claimed:
                self.learn(turns.client, *key, turns.session.state.deadline, policy.retry_max)
        if watch is not None:
            if watch.followers and not watch.members:
                # The first wait of a watcher's watch: as a new watch's first listing, its
                # next is the job's history lookup, and lists now for the waits not read
                # yet that its page may show, ahead of their first calls.
                watch.claimed = watch.claimed or wants_history(policy, run)
                if self.unseen:
                    watch.need(self.clock(), urgent=True)
            watch.join(turns)

    def follow(self, follower: Follower) -> None:
        """A job watcher follows its job's listing: the one its waits here ride on, if any."""
        watch = self.watches.get(follower.key)
        if watch is None:
            watch = self.watches[follower.key] = _Watch(
                self, follower.key, follower.client, follower.retry_max, list_now=False
            )
        watch.follow(follower)

    def unread(self, key: tuple[str, str]) -> None:
        """A wait that read a run of the job ``key`` by its own call ended."""
        self.readers[key] -= 1
        if self.readers[key] <= 0:
            del self.readers[key]

    def retire(self, watch: _Watch, *, failed: bool = False) -> None:
        """``watch`` stopped (``failed``) or has no member left: the job's next wait may list
        it anew; after a failure, only a wait that came after it."""
        if self.watches.get(watch.key) is watch:
            del self.watches[watch.key]
        if failed:
            self.unlisted[watch.key] = self.clock()

    def show(self, watch: _Watch, runs: list[JobRun]) -> set[_Turns]:
        """A page of the watch's job came back: each live wait it shows takes its run.

        Returns the waits it showed.
        """
        shown = set()
        for run in runs:
            for turns in self.waits.get((run.domain_id, run.id), ()):
                what = reading(watch.key, run, turns.session.state.last)
                if what is Reading.IGNORE:
                    continue  # an item for another job or domain says nothing of this run
                watch.join(turns)
                if turns.watch is watch:
                    shown.add(turns)
                    turns.listed(what, run)
        return shown

    async def drive(
        self,
        session: WaitSession,
        client: JobRunClient,
        *,
        window: asyncio.Semaphore | None = None,
        counted: bool = False,
        first_answer: bool = False,
    ) -> Step:
        """Wait on the session's run in this fleet until the core says stop; its last step.

        ``first_answer``: a read (get_job_run, a status, a poke), which ends
        at its first answer, learns nothing and is shown by no listing.
        ``counted``: the caller (a fan-out) already counted it among the
        waits before their first answer. Cancelling ends it ``interrupted``.
        """
        ref = (session.domain_id, session.job_run_id)
        # A read takes no listing's word for its one answer, and learns nothing.
        turns = _Turns(self, session, client, window, once=first_answer)
        if not counted:
            self.unseen += 1
        session.paced(turns.pace)
        if not first_answer:
            self.waits.setdefault(ref, []).append(turns)
        try:
            return await async_drive(
                session,
                functools.partial(self.fetch, client, ref, turns),
                _booked,
                pool=self.executor,
                turn=turns.turn,
                slots=self.slots,
                first_answer=first_answer,
            )
        except asyncio.CancelledError:
            return session.interrupted()
        finally:
            session.paced(None)
            turns.done()
            others = self.waits.get(ref)
            if others is not None and turns in others:
                others.remove(turns)
                if not others:
                    del self.waits[ref]

    async def close(self) -> None:
        """Stop the fleet's listings and lookups (its waits have ended)."""
        for task in list(self.learning):
            task.cancel()
        await asyncio.gather(*self.learning, return_exceptions=True)


class Relay:
    """Where a wait's callbacks run: on the caller's side, never on the engine's thread.

    A blocking caller runs them in its own thread (`pump`); an async caller
    on its own loop. The first one that raises stops the wait (``stop``),
    and the caller raises it.
    """

    def __init__(self, loop: asyncio.AbstractEventLoop | None = None) -> None:
        self._loop = loop
        self._queue: collections.deque[tuple[Callable[..., object], tuple[Any, ...]] | None]
        self._queue = collections.deque()
        self._ready = threading.Condition(threading.Lock())
        self.error: BaseException | None = None
        self.stop: Callable[[], None] = lambda: None

    def wrap(self, fn: Callable[..., object] | None) -> Callable[..., object] | None:
        """``fn``, to be called on the caller's side (None stays None)."""
        if fn is None:
            return None
        callback = fn

        def relayed(*args: Any) -> None:
            if self._loop is not None:
                # A caller's loop closed under a wait it stopped awaiting hears no more.
                with contextlib.suppress(RuntimeError):
                    self._loop.call_soon_threadsafe(self._call, callback, args)
            else:
                with self._ready:
                    self._queue.append((callback, args))
                    self._ready.notify()

        return relayed

    def _call(self, fn: Callable[..., object], args: tuple[Any, ...]) -> None:
        if self.error is not None:
            return
        try:
            fn(*args)
        except BaseException as exc:
            self.error = exc
            self.stop()

    def done(self) -> None:
        """The wait ended: a blocking caller's `pump` returns after the callbacks before it."""
        with self._ready:
            self._queue.append(None)
            self._ready.notify()

    def pump(self) -> None:
        """Run the callbacks in this thread as they come, until the wait ends."""
        while True:
            with self._ready:
                while not self._queue:
                    self._ready.wait()
                item = self._queue.popleft()
            if item is None:
                return
            self._call(*item)


class Engine:
    """The process's waits: one event loop in a daemon thread, one `Fleet` per account."""

    def __init__(self, clock: Clock | None = None, sleep: AsyncSleep | None = None) -> None:
        self.clock: Clock = clock or time.monotonic
        self.sleep: AsyncSleep | None = sleep
        self._lock = threading.Lock()
        self._loop: asyncio.AbstractEventLoop | None = None
        self._thread: threading.Thread | None = None
        self._fleets: dict[AccountKey, Fleet] = {}
        # Cancel events of blocking callers, and async callers' loops (a loop closed under
        # a wait it no longer awaits stops it), looked at by one ticker (`_tick`).
        self._stops: dict[threading.Event | asyncio.AbstractEventLoop, set[asyncio.Task[Any]]] = {}
        self._ticker: asyncio.Task[None] | None = None
        self._closed = False

    @property
    def thread(self) -> threading.Thread | None:
        """The engine's thread, once started."""
        return self._thread

    def loop(self) -> asyncio.AbstractEventLoop:
        """The engine's loop, started on first use."""
        with self._lock:
            if self._closed:
                raise RuntimeError("the engine was closed")
            if self._loop is None:
                loop = asyncio.new_event_loop()
                thread = threading.Thread(
                    target=self._run, args=(loop,), name="poller-engine", daemon=True
                )
                self._loop, self._thread = loop, thread
                thread.start()
            return self._loop

    @staticmethod
    def _run(loop: asyncio.AbstractEventLoop) -> None:
        asyncio.set_event_loop(loop)
        try:
            loop.run_forever()
            tasks = asyncio.all_tasks(loop)
            for task in tasks:
                task.cancel()
            loop.run_until_complete(asyncio.gather(*tasks, return_exceptions=True))
        finally:
            loop.close()

    def fleet(self, client: JobRunClient) -> Fleet:
        """The fleet of ``client``'s account (on the engine's loop only)."""
        key = account_key(client)
        fleet = self._fleets.get(key)
        if fleet is None:
            # The account's call pool: calls stuck on one account's endpoint never take
            # another account's workers (the pool replaces a stuck worker only when its
            # wait gives the call up).
            fleet = self._fleets[key] = Fleet(
                limiter=budget_for(client),
                clock=self.clock,
                sleep=self.sleep,
                executor=account_pool(key),
            )
        return fleet

    def submit(
        self,
        make: Callable[[Engine], Coroutine[Any, Any, _T]],
        *,
        cancel: threading.Event | asyncio.AbstractEventLoop | None = None,
    ) -> Submitted[_T]:
        """Run ``make(self)`` as a task on the engine's loop, in a copy of this context.

        ``cancel`` set (an event), or closed (the caller's loop), cancels the task
        (looked at every CANCEL_POLL).
        """
        loop = self.loop()
        submitted: Submitted[_T] = Submitted(self, loop)
        context = contextvars.copy_context()
        loop.call_soon_threadsafe(self._start, make, submitted, cancel, context, context=context)
        return submitted

    def _start(
        self,
        make: Callable[[Engine], Coroutine[Any, Any, _T]],
        submitted: Submitted[_T],
        cancel: threading.Event | asyncio.AbstractEventLoop | None,
        context: contextvars.Context,
    ) -> None:
        future = submitted.future
        if not future.set_running_or_notify_cancel():
            return
        task = asyncio.get_running_loop().create_task(make(self), context=context)
        submitted.task = task
        if submitted.stopped:
            task.cancel()

        def settle(done: asyncio.Task[_T]) -> None:
            if cancel is not None:
                self._unwatch(cancel, done)
            if done.cancelled():
                future.set_exception(asyncio.CancelledError())
            elif (error := done.exception()) is not None:
                future.set_exception(error)
            else:
                future.set_result(done.result())

        task.add_done_callback(settle)
        if cancel is not None:
            self._stops.setdefault(cancel, set()).add(task)
            if self._ticker is None:
                self._ticker = asyncio.get_running_loop().create_task(self._tick())

    def _unwatch(
        self, cancel: threading.Event | asyncio.AbstractEventLoop, task: asyncio.Task[Any]
    ) -> None:
        tasks = self._stops.get(cancel)
        if tasks is not None:
            tasks.discard(task)
            if not tasks:
                del self._stops[cancel]

    async def _tick(self) -> None:
        # Real time on purpose: the events are set by other threads, on no clock of ours.
        try:
            while self._stops:
                await asyncio.sleep(CANCEL_POLL)
                for event, tasks in list(self._stops.items()):
                    gone = (
                        event.is_set() if isinstance(event, threading.Event) else event.is_closed()
                    )
                    if gone:
                        del self._stops[event]
                        for task in tasks:
                            task.cancel()
        finally:
            self._ticker = None

    def close(self) -> None:
        """Cancel every wait and stop the loop's thread (`_home.reset`)."""
        with self._lock:
            self._closed = True
            loop, thread = self._loop, self._thread
        if loop is None or thread is None:
            return
        if thread is threading.current_thread():
            loop.stop()
            return
        try:
            loop.call_soon_threadsafe(self._stop, loop)
        except RuntimeError:
            return  # closed already
        thread.join(timeout=2.0)

    def _stop(self, loop: asyncio.AbstractEventLoop) -> None:
        # A job watcher following a listing here is told, rather than left waiting for good.
        closed = RuntimeError("poller's engine was closed (poller.testing.reset)")
        for fleet in self._fleets.values():
            for watch in list(fleet.watches.values()):
                watch.tell(closed)
        loop.stop()


class Submitted(Generic[_T]):
    """A task submitted to the engine: its result as a concurrent future, and how to stop it."""

    def __init__(self, engine: Engine, loop: asyncio.AbstractEventLoop) -> None:
        self.future: Future[_T] = Future()
        self.task: asyncio.Task[_T] | None = None
        self.stopped = False
        self._loop = loop

    def stop(self) -> None:
        """Cancel the task, from any thread; it ends ``interrupted``."""
        # A closed loop raises: its tasks were cancelled with it.
        with contextlib.suppress(RuntimeError):
            self._loop.call_soon_threadsafe(self._stop)

    def _stop(self) -> None:
        self.stopped = True
        if self.task is not None:
            self.task.cancel()


_ENGINE = _home.Slot("engine", lambda: Engine(_home.CLOCK.peek(), _home.ASYNC_SLEEP.peek()))


def engine() -> Engine:
    """The process's engine (kept in `_home`; on its ``clock``/``async_sleep``, real by default)."""
    return _ENGINE.get()


def own_fleet(client: JobRunClient, seams: Seams) -> Fleet:
    """A private fleet for one wait on its own time or executor: the engine's code, alone.

    Run on a loop of that time (`_vloop`). On real time (its own executor
    only) it books on the account's budget; on a clock or sleep of its own,
    on a budget of its own at the account's rate, measured on that clock
    (``time.monotonic`` as it is now: freezegun's, under freezegun).
    """
    if seams.clock is None and seams.sleep is None and seams.async_sleep is None:
        return Fleet(limiter=budget_for(client), executor=seams.executor, logger=seams.logger)
    clock = seams.clock or time.monotonic
    limiter = RateLimiter(budget_for(client).max_rps, clock=clock)
    return Fleet(limiter=limiter, clock=clock, executor=seams.executor, logger=seams.logger)


def joins_engine(seams: Seams) -> bool:
    """True when a wait with these seams runs on the process's engine.

    A wait on its own time (a clock or a sleep of a test's) or its own
    executor runs a private fleet where it is called; so does a wait started
    on the engine's own thread, which could not block on it.
    """
    if seams.clock is not None or seams.sleep is not None or seams.async_sleep is not None:
        return False
    if seams.executor is not None:
        return False
    running = _ENGINE.peek()
    return running is None or running.thread is not threading.current_thread()


def engine_seams(seams: Seams) -> Seams:
    """The seams of a session that joins the engine: its clock is the engine's."""
    return replace(seams, clock=engine().clock)


def run_blocking(
    make: Callable[[Engine], Coroutine[Any, Any, _T]],
    *,
    relay: Relay | None = None,
    cancel: threading.Event | None = None,
) -> _T:
    """Run ``make(engine)`` on the engine and block until it ends.

    The callbacks ``relay`` wrapped (a `Relay()` made by the caller) run in
    this thread; ``cancel`` set cancels the task (its coroutine turns that
    into ``interrupted``). A KeyboardInterrupt here stops the task too, and
    is raised; so is the first exception a callback raised.
    """
    relay = relay if relay is not None else Relay()
    submitted = engine().submit(make, cancel=cancel)
    relay.stop = submitted.stop
    submitted.future.add_done_callback(lambda _: relay.done())
    try:
        relay.pump()
        result = submitted.future.result()
    except BaseException:
        submitted.stop()
        raise
    if relay.error is not None:
        raise relay.error
    return result


async def hand_over(
    done: Future[_T], on_cancel: Callable[[_T], object] | None, bound: float | None = None
) -> None:
    """An async caller was cancelled and its wait told to stop: wait (up to ``bound``) for
    the wait to end (``interrupted``) and give its value to ``on_cancel``; the caller
    then lets its cancellation go on."""
    try:
        async with asyncio.timeout(bound):
            ended = await asyncio.shield(asyncio.wrap_future(done))
    except BaseException:
        return
    if on_cancel is not None:
        on_cancel(ended)


async def run_async(
    make: Callable[[Engine], Coroutine[Any, Any, _T]],
    *,
    relay: Relay | None = None,
    on_cancel: Callable[[_T], object] | None = None,
) -> _T:
    """Run ``make(engine)`` on the engine and await it from this loop.

    The callbacks ``relay`` wrapped (a ``Relay(loop)`` of this loop) run on
    this loop. Cancelling the caller stops the task; once it has ended (its
    coroutine reports ``interrupted``), its value goes to ``on_cancel`` and
    the cancellation goes on.
    """
    loop = asyncio.get_running_loop()
    relay = relay if relay is not None else Relay(loop)
    # This loop closed under the wait (its thread gave up on it) stops the wait.
    submitted = engine().submit(make, cancel=loop)
    relay.stop = submitted.stop
    try:
        result = await asyncio.wrap_future(submitted.future)
    except asyncio.CancelledError:
        submitted.stop()
        await hand_over(submitted.future, on_cancel, CALL_GRACE + 1.0)
        raise
    if relay.error is not None:
        raise relay.error
    return result
