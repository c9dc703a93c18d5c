"""The async driver of a job watcher: lists, reads and announces as `_announce` decides.

Three front doors share it: ``poller.aio.watch_job_runs``, ``poller watch``
and the Airflow ``DataZoneJobRunWatcher``. It has two halves, so that several
watchers of one job can share the first (an Airflow shared stream):

- `JobWatch`: one job's listings through one client. It asks for a listing
  when `_announce.next_listing` says a run can have ended, yields each
  `Listing`, and reads a listed run (`JobWatch.read`: one GetJobRun, shared
  by every watcher that asks for the same run). Its first listing reads every
  page; the next ones read back to the runs it last saw going
  (`_announce.reach`). The listings themselves are the engine's: the job's
  one `_engine._Watch` in its account's fleet makes them, for this watch and
  for the process's waits on runs of the job alike (`_engine.Follower`), so
  a job is listed once for all of them; each listing made for the waits is
  one more look for the watch, at no cost.
- `announce`: one watcher's announcements from a stream of listings: the runs
  `_announce.due` names, read and handed out one at a time, its `Ledger`
  updated and saved before each is handed out (the `Store`: Airflow's
  asset_state_store, or memory). A run listed finished that GetJobRun still
  reads going stays due, and the job is listed again after ``look``.

Every read books a turn on the process's request budget through `Budget`,
the one place that touches it; the listings book theirs in the fleet. Failed
calls and listings are retried as the core's policy says (`_policy.fail`:
jittered backoff, throttles retried for good, ``max_errors`` transient
faults in a row end the watch; each retry logged);
a denied or invalid call ends the watch with its PollerError at once, since
no retry can fix it.
"""

from __future__ import annotations

import asyncio
import collections
import functools
import math
import random
import time
from collections.abc import AsyncGenerator, AsyncIterator, Awaitable, Callable, Iterable
from concurrent.futures import Executor
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any, Protocol, TypeVar

from poller import log
from poller._announce import (
    LONGEST,
    LOOK,
    Cadence,
    Ledger,
    due,
    end_of,
    next_listing,
    outlook,
    parse_statuses,
    reach,
    reached,
)
from poller._announce import settle as settle_ledger
from poller._datazone import classify, fetch_job_run
from poller._engine import Fleet, Follower, Pages, engine, finished_runs
from poller._limiter import RateLimiter, account_key, budget_for, until_booked
from poller._model import JobRun, WaitResult
from poller._policy import CallFault, FaultKind, Jitter, PollPolicy, WaitState, fail
from poller._runtime import AsyncSleep, Clock, account_pool, resolve_client
from poller.errors import InvalidRequestError, JobRunNotFoundError

__all__ = [
    "LISTING_PAGES",
    "Budget",
    "JobWatch",
    "Listing",
    "MemoryStore",
    "Store",
    "announce",
    "as_epoch",
    "watch_job_runs",
]

_T = TypeVar("_T")

#: Log events of a watch.
WATCH_LISTED = "watch_listed"
WATCH_RETRYING = "watch_retrying"
WATCH_ANNOUNCED = "watch_announced"
WATCH_SKIPPED = "watch_skipped"

#: The most pages one listing reads.
LISTING_PAGES = 10
# Runs whose GetJobRun answer is kept for the other watchers of the job.
_READS_KEPT = 256


def as_epoch(when: datetime | float | None, wall: Clock) -> float:
    """``since`` as epoch seconds: a datetime (naive = UTC), epoch seconds, or now for None."""
    if when is None:
        return wall()
    if isinstance(when, datetime):
        return (when if when.tzinfo is not None else when.replace(tzinfo=UTC)).timestamp()
    if isinstance(when, bool) or not isinstance(when, int | float) or not math.isfinite(when):
        raise InvalidRequestError(f"since must be a datetime or epoch seconds, not {when!r}")
    return float(when)


class Budget:
    """Every call a watch makes books its turn here: its account's budget (`budget_for`).

    The one place a watch touches the budget, so the budget can change home
    without the watch knowing.
    """

    def __init__(
        self, client: object, limiter: RateLimiter | None = None, clock: Clock | None = None
    ) -> None:
        if limiter is None:
            # The account's budget, shared with every wait of the process on that account;
            # one on an injected clock cannot be the process's (real-clock) one.
            limiter = budget_for(client) if clock is None else RateLimiter(clock=clock)
        self.limiter = limiter
        self.clock: Clock = limiter.clock

    async def turn(self, sleep: AsyncSleep) -> float:
        """Wait for a free turn (booked now); returns the time it was granted."""
        booking = self.limiter.reserve(self.clock())
        assert booking is not None  # no latest: a booking is always made
        granted = await until_booked(
            self.limiter, booking, asked=self.limiter.at(booking), clock=self.clock, sleep=sleep
        )
        assert granted is not None  # no latest, no news: it always comes
        return granted

    def report(
        self, granted_at: float, kind: FaultKind | None, backoff_cap: float, logger: Any
    ) -> None:
        """How the call granted at ``granted_at`` went: a throttle slows the budget (which
        may say on ``logger`` that it is held down)."""
        self.limiter.report(granted_at, kind, backoff_cap, logger)


@dataclass(frozen=True, slots=True)
class Listing:
    """One listing of the job's newest runs: what it showed, when, and whether it is complete.

    ``complete``: every run that can matter is on the pages read (see
    `_announce.more_pages`). ``watch`` reads the runs it shows.
    """

    runs: tuple[JobRun, ...]
    listed_at: float
    complete: bool
    watch: JobWatch = field(repr=False, compare=False)
    # Saves to make once what was announced from this listing is stored for good
    # (an Airflow shared stream in ack mode): `announce(..., deferred=True)`.
    on_stored: list[Callable[[], Awaitable[None]]] = field(
        default_factory=list, repr=False, compare=False
    )

    async def stored(self) -> None:
        """What was announced from this listing is stored for good: make the saves it waits for."""
        saves, self.on_stored[:] = list(self.on_stored), []
        for save in saves:
            await save()


class JobWatch:
    """One job's listings through one client, and the reads of the runs they show.

    ``wall`` gives epoch seconds (the times DataZone reports are compared with
    it). On real time its listings are the engine's, shared with the waits of
    the process on the job's runs; given a ``limiter``, ``clock``, ``sleep``
    or ``executor`` of its own, they are a private fleet's on the caller's
    loop: the same code, on its time.
    """

    def __init__(
        self,
        domain_id: str,
        job_id: str,
        client: Any,
        *,
        cadence: Cadence | None = None,
        policy: PollPolicy | None = None,
        limiter: RateLimiter | None = None,
        clock: Clock | None = None,
        wall: Clock | None = None,
        sleep: AsyncSleep | None = None,
        executor: Executor | None = None,
        logger: Any = None,
        floor: float = math.inf,
        rng: Jitter | None = None,
    ) -> None:
        from poller._latest import validate_job_ids  # noqa: PLC0415

        validate_job_ids(domain_id, job_id)
        self.domain_id = domain_id
        self.job_id = job_id
        self.client = client
        self.cadence = cadence if cadence is not None else Cadence()
        # A watch has no deadline: a throttle is retried for as long as it lasts.
        self.policy = (policy if policy is not None else PollPolicy()).with_timeout(None)
        self.rng: Jitter = rng if rng is not None else random.Random()
        self.budget = Budget(client, limiter, clock)
        # On time or a budget of its own, it cannot share the engine's listings.
        self._own = any(seam is not None for seam in (limiter, clock, sleep, executor))
        self.clock: Clock = self.budget.clock if self._own else engine().clock
        self.wall: Clock = wall if wall is not None else time.time
        self.sleep: AsyncSleep = sleep if sleep is not None else asyncio.sleep
        self.account = account_key(client)
        # The account's pool, as for the waits: a call hung on one account's endpoint
        # holds none of another's workers.
        self.executor: Executor = executor if executor is not None else account_pool(self.account)
        self.logger = logger if logger is not None else log.get_logger()
        # Pages are read back to runs created at this time (the earliest end
        # any watcher of the job announces); `need` lowers it.
        self.floor = floor
        # The last listing stopped at pages older than this (inf: none yet; -inf:
        # it read every page): a watcher that needs older runs needs a new one.
        self._cut = math.inf
        # The creation times of the runs the last complete listing showed going
        # (None: no listing yet); the next listing reads back to them.
        self._going: dict[str, float] | None = None
        # A run listed finished read still going: list by `_soon` (the clock's), with a
        # listing made after `_soon_from`.
        self._soon = math.inf
        self._soon_from = math.inf
        self._follower: Follower | None = None
        self._seen = 0  # listings (and failed ones) made for it, up to the last taken
        self._reads: collections.OrderedDict[str, asyncio.Future[JobRun | None]] = (
            collections.OrderedDict()
        )

    def need(self, since: float) -> None:
        """A watcher announces runs that ended at or after ``since``: list back to it, now
        if the last listing stopped short of it."""
        if since < self.floor:
            self.floor = since
            if since < self._cut:
                self._ask(self.clock())

    def recheck(self) -> None:
        """A run listed finished reads still going (the listing runs ahead of GetJobRun): list
        again after ``look``, whatever the job's history says, until they agree."""
        now = self.clock()
        soon = now + self.cadence.look
        if soon < self._soon:
            self._soon, self._soon_from = soon, now
            self._ask(soon)

    def _ask(self, due: float) -> None:
        if self._follower is not None:
            going = None if self._going is None else self._going.values()
            self._follower.ask(due, reach(self.floor, going), self._seen)

    async def listings(self) -> AsyncGenerator[Listing, None]:
        """The job's listings, forever: the first at once, each next when a run can have ended,
        and every one made meanwhile for the process's waits on the job's runs."""
        key = (self.domain_id, self.job_id)
        retry_max = self.policy.retry_max
        fleet: Fleet | None = None
        if self._own:
            own = fleet = Fleet(
                limiter=self.budget.limiter,
                clock=self.clock,
                sleep=self.sleep,
                executor=self.executor,
                logger=self.logger,
            )
            here = asyncio.get_running_loop()
            follower = Follower(here, lambda: own, key, self.client, retry_max)
        else:
            shared = engine()
            client = self.client
            follower = Follower(shared.loop(), lambda: shared.fleet(client), key, client, retry_max)
        self._follower = follower
        state = WaitState.start(self.policy, self.clock())
        try:
            self._ask(self.clock())
            while True:
                self._seen, news = await follower.next()
                if isinstance(news, Exception):
                    state, delay = self._retry(state, "ListJobRuns", news, classify(news))
                    self._ask(self.clock() + delay)
                    continue
                state = WaitState.start(self.policy, self.clock())
                listing, short = self._take(news)
                view = outlook(listing.runs, listing.listed_at)
                at = next_listing(view, self.cadence)
                self.logger.debug(
                    WATCH_LISTED,
                    domain_id=self.domain_id,
                    job_id=self.job_id,
                    runs=len(listing.runs),
                    running=len(view.running),
                    quiet_s=round(view.quiet, 3),
                    next_in_s=round(at - self.wall(), 3),
                )
                yield listing
                # Timed on the clock from now: a wall clock stepped back meanwhile adds nothing.
                now = self.clock()
                self._ask(now if short else min(now + (at - self.wall()), self._soon))
        finally:
            self._follower = None
            follower.close()
            if fleet is not None:
                await fleet.close()

    def _take(self, pages: Pages) -> tuple[Listing, bool]:
        """The listing as this watch reads it, and whether it stopped short of the pages the
        watch needs (it was made for the waits, or the watch needs older runs since)."""
        going = None if self._going is None else self._going.values()
        floor = reach(self.floor, going)
        if pages.sent_at >= self._soon_from:
            self._soon = self._soon_from = math.inf
        listed_at = self.wall() - (self.clock() - pages.sent_at)
        runs = pages.runs
        complete, self._cut, again = reached(
            more=pages.more, last=pages.last, pages=pages.pages, floor=floor, limit=LISTING_PAGES
        )
        # Incomplete: past the last page read, the runs seen going before are still looked for.
        self._going = _going(runs) if complete else {**(self._going or {}), **_going(runs)}
        return Listing(runs, listed_at, complete, self), again

    async def read(self, run: JobRun) -> JobRun | None:
        """The run as GetJobRun reads it (lineage included); None if it cannot be found.

        One call per run whatever number of watchers ask: the answer of a
        finished run never changes. One still going (the listing ran ahead of
        GetJobRun) is not kept, and the job is listed again soon (`recheck`).
        """
        future = self._reads.get(run.id)
        if future is None:
            future = asyncio.ensure_future(self._read(run.id))
            self._reads[run.id] = future
            while len(self._reads) > _READS_KEPT:
                self._reads.popitem(last=False)
        full = await asyncio.shield(future)
        if full is not None and not full.is_terminal:
            if self._reads.get(run.id) is future:
                del self._reads[run.id]
            self.recheck()
        return full

    async def _read(self, run_id: str) -> JobRun | None:
        finished = finished_runs()

        def known() -> JobRun | None:  # read finished by a wait of the process
            return finished.get(self.account, self.domain_id, run_id)

        try:
            # Not found is retried through the policy's not_found_grace.
            run = await self._call(
                "GetJobRun", fetch_job_run, self.client, self.domain_id, run_id, known=known
            )
        except JobRunNotFoundError:
            pass
        else:
            finished.put(self.account, run)  # for another watcher of the process
            return run
        self._reads.pop(run_id, None)
        self.logger.warning(
            WATCH_SKIPPED,
            domain_id=self.domain_id,
            job_id=self.job_id,
            job_run_id=run_id,
            why="listed finished, but GetJobRun does not find it",
        )
        return None

    async def _call(
        self,
        operation: str,
        fn: Callable[..., _T],
        *args: Any,
        known: Callable[[], _T | None] = lambda: None,
    ) -> _T:
        """One call on the budget, retried as the core's policy says (`_policy.fail`); none if
        ``known`` has the answer, before the call is booked or when its turn comes."""
        loop = asyncio.get_running_loop()
        state = WaitState.start(self.policy, self.clock())
        while True:
            if (answer := known()) is not None:
                return answer
            granted = await self.budget.turn(self.sleep)
            if (answer := known()) is not None:
                return answer  # the turn goes unused: no call, nothing to report
            try:
                result = await loop.run_in_executor(self.executor, fn, *args)
            except Exception as exc:
                fault = classify(exc)
                if fault is not None:
                    self.budget.report(granted, fault.kind, self.policy.retry_max, self.logger)
                state, delay = self._retry(state, operation, exc, fault)
                await self.sleep(delay)
                continue
            self.budget.report(granted, None, self.policy.retry_max, self.logger)
            return result

    def _retry(
        self, state: WaitState, operation: str, exc: Exception, fault: CallFault | None
    ) -> tuple[WaitState, float]:
        """After ``operation`` failed with ``exc``: how long until it is tried again, as the
        core's policy says (`_policy.fail`); raises when no retry can fix it."""
        if fault is None:
            raise exc  # not a fault of the service's: a bug, raised as itself
        state, step = fail(self.policy, state, fault, self.clock(), self.rng)
        if step.error is not None:
            # No retry can fix it (denied, invalid, not found), or too many in a row.
            why = str(step.error)
            if why == fault.message:
                why = f"{fault.error_type}: {why}"
            raise type(step.error)(f"{operation}: {why}") from None
        self.logger.warning(
            WATCH_RETRYING,
            domain_id=self.domain_id,
            job_id=self.job_id,
            operation=operation,
            error_type=fault.error_type,
            error=fault.message,
            attempt=state.retry_attempt,
            sleep_s=round(step.delay, 3),
        )
        return state, step.delay


def _going(runs: Iterable[JobRun]) -> dict[str, float]:
    """The creation times of the listed runs still going (-inf: none known, read every page)."""
    return {
        run.id: run.created_at.timestamp() if run.created_at is not None else -math.inf
        for run in runs
        if not run.is_terminal
    }


class Store(Protocol):
    """Where a watcher keeps its ledger between restarts (Airflow's asset_state_store)."""

    async def load(self) -> object: ...

    async def save(self, value: dict[str, Any]) -> None: ...


class MemoryStore:
    """A store in memory: the ledger lasts as long as the process."""

    def __init__(self, value: object = None) -> None:
        self.value = value

    async def load(self) -> object:
        return self.value

    async def save(self, value: dict[str, Any]) -> None:
        self.value = value


def _result(run: JobRun) -> WaitResult:
    assert run.outcome is not None
    return WaitResult(run.domain_id, run.id, run.outcome, job_run=run, polls=1)


async def start_ledger(store: Store, since: float) -> Ledger:
    """The ledger saved in ``store``, or a new one from ``since`` (saved at once)."""
    ledger = Ledger.from_json(await store.load())
    if ledger is None:
        ledger = Ledger(since)
        await store.save(ledger.to_json())
    return ledger


async def announce(
    listings: AsyncIterator[Listing],
    statuses: frozenset[str],
    store: Store,
    ledger: Ledger,
    logger: Any = None,
    *,
    deferred: bool = False,
) -> AsyncIterator[WaitResult]:
    """One watcher's announcements from a stream of listings: each due run, read, once.

    The ledger is saved before each announcement is handed out (so a watch
    started again on the store right after a ``break`` has it) and whenever
    the mark rises. ``deferred``: instead, once the consumer has stored what
    was announced from a listing for good (`Listing.stored`), the ledger as
    it was after that listing. A run GetJobRun still reads going is not
    settled: it stays due, and a later listing offers it again.
    """
    logger = logger if logger is not None else log.get_logger()
    saved = ledger
    async for listing in listings:
        listing.watch.need(ledger.since)
        for run in due(ledger, listing.runs, statuses, listing.listed_at):
            full = await listing.watch.read(run)
            if full is not None and not full.is_terminal:
                continue  # the listing ran ahead of GetJobRun (the watch lists again soon)
            ledger = ledger.add(run.id, end_of(run, listing.listed_at))
            if not deferred:
                saved = ledger
                await store.save(ledger.to_json())
            if full is not None and str(full.status) in statuses:
                logger.info(
                    WATCH_ANNOUNCED,
                    domain_id=full.domain_id,
                    job_id=full.job_id,
                    job_run_id=full.id,
                    status=str(full.status),
                )
                yield _result(full)
        if listing.complete:
            ledger = settle_ledger(ledger, listing.runs, statuses, listing.listed_at)
        if ledger != saved:
            saved = ledger
            if deferred:
                listing.on_stored.append(functools.partial(store.save, ledger.to_json()))
            else:
                await store.save(ledger.to_json())


async def watch_job_runs(
    domain_id: str,
    job_id: str,
    *,
    since: datetime | float | None = None,
    statuses: Iterable[str] | None = None,
    client: Any = None,
    store: Store | None = None,
    interval: float = LOOK,
    policy: PollPolicy | None = None,
    limiter: RateLimiter | None = None,
    clock: Clock | None = None,
    wall: Clock | None = None,
    sleep: AsyncSleep | None = None,
    logger: Any = None,
) -> AsyncGenerator[WaitResult, None]:
    """Every run of the job that reaches one of ``statuses`` (default: any end state), once.

    Yields each run's result document (`WaitResult`, lineage included) as it
    ends, forever: stop iterating (or cancel the task) to stop. ``since``
    (a datetime, epoch seconds; default now): announce runs that ended at or
    after it. ``store`` keeps what was announced (default: in memory); a
    watch started again on the same store goes on where it stopped, and
    announces the runs that ended meanwhile. ``client``: a boto3 DataZone
    client, a ``ClientSettings`` or None (the default AWS resolution).
    ``interval``: seconds between two looks at the job while one of its runs
    may be ending (its history says when); never more than 10 minutes apart.
    ``policy``: its ``retry_initial``/``retry_max`` pace the retries of
    throttled and failed calls. ``limiter``, ``clock``, ``wall``, ``sleep``
    and ``logger`` replace the budget, the clocks (monotonic, epoch), the
    sleep and the logger, for tests. Raises the PollerError of a call no
    retry can fix (denied, invalid, the job not found).
    """
    wall_clock: Clock = wall if wall is not None else time.time
    chosen = parse_statuses(statuses)
    start = as_epoch(since, wall_clock)
    store = store if store is not None else MemoryStore()
    resolved = await asyncio.to_thread(resolve_client, client, shared=True)
    watch = JobWatch(
        domain_id,
        job_id,
        resolved,
        cadence=Cadence(look=interval, longest=max(interval, LONGEST)),
        policy=policy,
        limiter=limiter,
        clock=clock,
        wall=wall_clock,
        sleep=sleep,
        logger=logger,
    )
    ledger = await start_ledger(store, start)
    watch.need(ledger.since)
    listings = watch.listings()
    try:
        async for result in announce(listings, chosen, store, ledger, logger):
            yield result
    finally:
        await listings.aclose()
