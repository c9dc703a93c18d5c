"""The runtime every loop shares: argument defaults, the drive loop, the call pool and clients.

The blocking wait, the async wait, the fan-out, the latest-run search, the
poke and the Airflow trigger all build on this one layer, so none of them has
to import another's internals.
"""

from __future__ import annotations

import asyncio
import collections
import contextvars
import enum
import functools
import hashlib
import itertools
import math
import os
import queue
import random
import threading
import time
from collections.abc import Awaitable, Callable, Hashable
from concurrent.futures import Executor, Future, ThreadPoolExecutor
from dataclasses import dataclass
from typing import Any, Protocol, TypeVar

from poller import _home, _otel
from poller._datazone import JobRunClient, build_client
from poller._model import JobRun
from poller._policy import CallFault, FaultKind, PollPolicy, Step

__all__ = [
    "BOOKING_GRACE",
    "CALL_GRACE",
    "CALL_WORKERS",
    "CANCEL_POLL",
    "REAL",
    "UNSET",
    "AsyncSleep",
    "CallPool",
    "ClientSettings",
    "Clock",
    "Driven",
    "Seams",
    "Sleep",
    "SleptClock",
    "TurnExpired",
    "Unset",
    "account_pool",
    "async_call",
    "async_drive",
    "interruptible",
    "off_any_running_loop",
    "resolve_client",
    "resolve_policy",
    "shared_client",
    "shared_executor",
]

Clock = Callable[[], float]
Sleep = Callable[[float], object]
AsyncSleep = Callable[[float], Awaitable[object]]

_T = TypeVar("_T")


class Unset(enum.Enum):
    """The type of UNSET: an argument that was not given."""

    UNSET = enum.auto()


# `timeout=None` already means "no deadline", so "not given" needs its own value.
UNSET = Unset.UNSET


def resolve_policy(policy: PollPolicy | None, timeout: float | Unset | None) -> PollPolicy:
    """The policy to use: the given one (or the defaults), with ``timeout`` if one was passed."""
    policy = policy if policy is not None else PollPolicy()
    return policy if timeout is UNSET else policy.with_timeout(timeout)


@dataclass(frozen=True, slots=True)
class ClientSettings:
    """How poller builds its DataZone client when it is not given one.

    None (every field's default) leaves a setting to the usual AWS resolution:
    environment variables, the AWS config file, the instance's metadata.
    """

    region_name: str | None = None
    profile_name: str | None = None
    endpoint_url: str | None = None
    connect_timeout: float = 5.0
    read_timeout: float = 10.0

    def build(self, *, max_pool_connections: int = 10) -> JobRunClient:
        """A new client for these settings (botocore retries off)."""
        return build_client(
            region_name=self.region_name or None,
            profile_name=self.profile_name or None,
            endpoint_url=self.endpoint_url or None,
            connect_timeout=self.connect_timeout,
            read_timeout=self.read_timeout,
            max_pool_connections=max_pool_connections,
        )


class SleptClock:
    """The time of a wait given a sleep but no clock: real time, plus what its sleeps skipped.

    A wait on its own time runs on a loop of that time (`_vloop`), which
    moves from timer to timer by calling the wait's sleep. A sleep that
    returns at once (a test's ``lambda _: None``) leaves real time where it
    was: this clock then moves as far as the sleep was asked to (`slept`), so
    the wait, its budget and its loop read one time that does move; a real
    sleep moves it as real time does.
    """

    __slots__ = ("skipped",)

    def __init__(self) -> None:
        self.skipped = 0.0

    def __call__(self) -> float:
        return time.monotonic() + self.skipped

    def slept(self, seconds: float, since: float) -> None:
        """A sleep of ``seconds`` began when this clock read ``since``: catch up on what
        it skipped."""
        behind = since + seconds - self()
        if behind > 0:
            self.skipped += behind


@dataclass(frozen=True, slots=True)
class Seams:
    """What a wait takes from its surroundings, replaceable by a test (None: the real one).

    ``clock`` reads seconds (``time.monotonic``); ``wall`` reads epoch
    seconds (``time.time``), once per wait, to date a run's ``startTime`` on
    ``clock``; ``sleep`` is the blocking loops' sleep and ``async_sleep`` the
    async loops'; ``rng`` draws the jitter; ``executor`` runs the blocking
    calls (the shared pool); ``logger`` gets the events (poller's structlog
    logger).
    """

    clock: Clock | None = None
    wall: Clock | None = None
    sleep: Sleep | None = None
    async_sleep: AsyncSleep | None = None
    rng: random.Random | None = None
    executor: Executor | None = None
    logger: Any = None

    def __post_init__(self) -> None:
        if self.clock is None and (self.sleep is not None or self.async_sleep is not None):
            # A sleep of its own and no clock: the time its sleeps say (`SleptClock`).
            object.__setattr__(self, "clock", SleptClock())


#: No seams replaced: every one real.
REAL = Seams()


def wall_of(seams: Seams) -> Clock:
    """The wall clock a wait reads: its seam, else the process's (``reset(seams=...)``)."""
    wall: Clock = seams.wall or _home.WALL.peek() or time.time
    return wall


def resolve_client(
    client: JobRunClient | ClientSettings | None, *, shared: bool = False
) -> JobRunClient:
    """The caller's client as it is, or one built from the settings (botocore retries off).

    ``shared``: the process-wide client for the settings (see ``shared_client``)
    rather than a new one.
    """
    if client is None:
        client = ClientSettings()
    if not isinstance(client, ClientSettings):
        return client
    return shared_client(client) if shared else client.build()


def interruptible(sleep: Sleep | None, cancel: threading.Event | None) -> Callable[[float], bool]:
    """A sleep that returns True as soon as ``cancel`` is set."""
    if sleep is None and cancel is not None:
        return cancel.wait
    # Looked up at call time, not bound as a default, so freezegun can patch it.
    sleep = sleep if sleep is not None else time.sleep
    if cancel is None:

        def plain(seconds: float) -> bool:
            sleep(seconds)
            return False

        return plain
    # An injected sleep (a test's) keeps control of time; look at the event after it.
    return lambda seconds: bool(sleep(seconds)) or cancel.is_set()


class Driven(Protocol):
    """What the loops drive: a WaitSession, or anything that answers like one."""

    def seen(self, run: JobRun, *, polled: bool = True) -> Step: ...

    def failed(self, fault: CallFault) -> Step: ...

    def interrupted(self) -> Step: ...

    def time_left(self) -> float: ...

    def expired(self, why: str) -> Step: ...


# A call still out this long after the deadline is given up: long enough for
# the last poll (or the one poll of timeout=0, or a short poke's, on a slow
# network) to be answered, short enough that every wait ends within a second
# of its deadline (a fan-out's last call may start BOOKING_GRACE after it).
CALL_GRACE = 0.6
BOOKING_GRACE = 0.1
# How often a blocking wait's cancel event is looked at (while a call is out too).
CANCEL_POLL = 0.05


def _unanswered() -> CallFault:
    return CallFault(
        FaultKind.DEADLINE, "CallTimeout", "the last call had not been answered by then"
    )


def _call_bound(session: Driven) -> float:
    left = session.time_left()
    return left + CALL_GRACE if math.isfinite(left) else math.inf


class TurnExpired(Exception):
    """Raised by a ``turn``: the deadline comes before the call could be made; says why."""


async def async_call(
    session: Driven,
    pool: Executor,
    fetch: Callable[[], _T],
    slots: asyncio.Semaphore | None = None,
) -> _T:
    """``fetch()`` in ``pool``, given up (CallFault DEADLINE) when the wait's deadline passes.

    With ``slots``, the call first waits for one (within the same bound): a
    fleet queues its calls here, a few bytes each, instead of as pool work.
    """
    loop = asyncio.get_running_loop()
    bound = _call_bound(session)
    try:
        # On timeout, or when this task is cancelled, the call's future is
        # cancelled: the pool then replaces the worker it leaves behind.
        async with asyncio.timeout(bound if math.isfinite(bound) else None):
            if slots is None:
                return await loop.run_in_executor(pool, fetch)
            async with slots:
                return await loop.run_in_executor(pool, fetch)
    except TimeoutError:
        raise _unanswered() from None


async def async_drive(
    session: Driven,
    fetch: Callable[[], JobRun],
    sleep: AsyncSleep,
    *,
    pool: Executor | None = None,
    turn: Callable[[], Awaitable[JobRun | None]] | None = None,
    slots: asyncio.Semaphore | None = None,
    first_answer: bool = False,
) -> Step:
    """Poll until the core says stop (or, with ``first_answer``, until a call is answered).

    ``turn`` is awaited before each call (a fan-out waits for the shared
    budget there); it raises TurnExpired when the deadline comes first. It
    may instead return the run as another call showed it (a fan-out's shared
    ListJobRuns): that look is fed to the core in place of this wait's call.
    """
    pool = pool if pool is not None else shared_executor()
    while True:
        try:
            listed = await turn() if turn is not None else None
            if listed is not None:
                step = session.seen(listed, polled=False)
            else:
                step = session.seen(await async_call(session, pool, fetch, slots))
            if first_answer:
                return step
        except CallFault as fault:
            step = session.failed(fault)
        except TurnExpired as expired:
            step = session.expired(str(expired))
        if step.done:
            return step
        await sleep(step.delay)


# Requests in flight at once from one process; each GetJobRun takes
# milliseconds, so a few threads serve thousands of sleeping waits.
CALL_WORKERS = 8
# Workers left behind on abandoned calls (a server that trickles forever) are
# replaced up to this many at once; beyond it the pool runs short rather than
# growing without end.
MAX_ABANDONED = 64
# A worker with no call for this long ends (a new one starts with the next call):
# a process that has called many accounts keeps no threads for those it no longer calls.
IDLE_EXIT = 120.0


class _Call(Future[Any]):
    """A call's future that tells its pool when it is given up while running."""

    def __init__(self, pool: CallPool) -> None:
        super().__init__()
        self._pool = pool
        self.abandoned = False

    def cancel(self) -> bool:
        if super().cancel():
            return True
        with self._condition:
            running = self.running() and not self.abandoned
            self.abandoned = self.abandoned or running
        if running:
            self._pool._abandoned()
        return False


class CallPool(Executor):
    """A thread pool for blocking calls whose threads never hold up interpreter exit.

    ThreadPoolExecutor's workers are joined at exit, so one call left running
    on a server that never finishes answering would hang the process. These
    are daemon threads; and a call given up while it runs (its future
    cancelled) no longer counts against the pool's ``max_workers``: a new
    worker takes its place, and the old one ends when its call does. A
    worker left without a call for ``idle_exit`` seconds ends.
    """

    def __init__(
        self,
        max_workers: int = CALL_WORKERS,
        thread_name_prefix: str = "poller-call",
        *,
        idle_exit: float = IDLE_EXIT,
    ):
        self._size = max_workers
        self._prefix = thread_name_prefix
        self._idle_exit = idle_exit
        self._work: queue.SimpleQueue[tuple[_Call, Callable[[], Any]] | None] = queue.SimpleQueue()
        self._lock = threading.Lock()
        self._threads = 0
        self._idle = 0
        self._stuck = 0
        self._count = itertools.count()
        self._shutdown = False

    def submit(self, fn: Callable[..., _T], /, *args: Any, **kwargs: Any) -> Future[_T]:
        if self._shutdown:
            raise RuntimeError("cannot schedule new calls after shutdown")
        future = _Call(self)
        # otel: the call runs in the submitter's contextvars, its wait's span current.
        context = _otel.call_context()
        self._work.put((future, functools.partial(context.run, fn, *args, **kwargs)))
        self._grow()
        return future

    def _grow(self) -> None:
        with self._lock:
            if self._idle > 0 or self._threads - min(self._stuck, MAX_ABANDONED) >= self._size:
                return
            self._threads += 1
            self._idle += 1
        name = f"{self._prefix}-{next(self._count)}"
        threading.Thread(target=self._worker, name=name, daemon=True).start()

    def _abandoned(self) -> None:
        with self._lock:
            self._stuck += 1
        self._grow()

    def _worker(self) -> None:
        while True:
            try:
                item = self._work.get(timeout=self._idle_exit)
            except queue.Empty:
                with self._lock:
                    # A call put in meanwhile found this worker idle and started none.
                    if self._work.empty():
                        self._idle -= 1
                        self._threads -= 1
                        return
                continue
            with self._lock:
                self._idle -= 1
            if item is None:
                with self._lock:
                    self._threads -= 1
                return
            future, call = item
            if future.set_running_or_notify_cancel():
                try:
                    result = call()
                except BaseException as exc:  # handed to the caller, as ThreadPoolExecutor does
                    future.set_exception(exc)
                else:
                    future.set_result(result)
            del item, call
            with self._lock:
                if future.abandoned:
                    self._stuck -= 1
                if self._threads - min(self._stuck, MAX_ABANDONED) > self._size:
                    self._threads -= 1  # a replacement took this one's place
                    return
                self._idle += 1

    def close(self) -> None:
        """Let every worker end once its call is done (`_home.reset`)."""
        self.shutdown(wait=False)

    def shutdown(self, wait: bool = True, *, cancel_futures: bool = False) -> None:
        self._shutdown = True
        with self._lock:
            threads = self._threads
        for _ in range(threads):
            self._work.put(None)


_EXECUTOR = _home.Slot("executor", lambda: CallPool(CALL_WORKERS, "poller-call"))


def shared_executor() -> Executor:
    """The process-wide pool of the waits on their own time (a test's clock or sleep), kept
    in `_home`; every other call runs in its account's pool (`account_pool`)."""
    return _EXECUTOR.get()


class _Pools(dict[Hashable, CallPool]):
    """The call pool of each account (kept in `_home`); closed with the home."""

    def __init__(self) -> None:
        super().__init__()
        self.lock = threading.Lock()

    def close(self) -> None:
        for pool in self.values():
            pool.close()


_POOLS = _home.Slot("pools", _Pools)


def account_pool(account: Hashable) -> CallPool:
    """The call pool of ``account`` (`_limiter.account_key`), one per account in the process.

    Every call the process makes on the account runs here, whatever made it
    (a wait's GetJobRun, a listing, a watcher's calls): calls hung on one
    account's endpoint never hold the workers another account's calls need.
    """
    pools = _POOLS.get()
    with pools.lock:
        pool = pools.get(account)
        if pool is None:
            pool = pools[account] = CallPool(CALL_WORKERS, "poller-call")
        return pool


# What botocore reads to resolve a client that is not given these explicitly.
_CLIENT_ENV = (
    "AWS_ENDPOINT_URL_DATAZONE",
    "AWS_ENDPOINT_URL",
    "AWS_REGION",
    "AWS_DEFAULT_REGION",
    "AWS_PROFILE",
    "AWS_DEFAULT_PROFILE",
    "AWS_CONFIG_FILE",
    "AWS_SHARED_CREDENTIALS_FILE",
)
# Part of the key only as a digest: a cache key must never hold a secret.
_CREDENTIAL_ENV = (
    "AWS_ACCESS_KEY_ID",
    "AWS_SECRET_ACCESS_KEY",
    "AWS_SESSION_TOKEN",
    "AWS_SECURITY_TOKEN",
)
# Configurations one process uses at once; the least recently used goes first.
CLIENT_CACHE_SIZE = 16


def _client_key(*args: str | None) -> tuple[Any, ...]:
    secrets = "\0".join(os.environ.get(name, "\x01") for name in _CREDENTIAL_ENV)
    digest = hashlib.sha256(secrets.encode("utf-8", "surrogatepass")).hexdigest()
    return (*args, *(os.environ.get(name) for name in _CLIENT_ENV), digest)


class _Clients(collections.OrderedDict[tuple[Any, ...], JobRunClient]):
    """The shared clients by key, least recently used first; closed with the home."""

    def __init__(self) -> None:
        super().__init__()
        # Here, not on `_SharedClients`: a forked child gets a lock no thread holds.
        self.lock = threading.Lock()
        # A lock per configuration being built, so it is built once.
        self.building: dict[tuple[Any, ...], threading.Lock] = {}

    def close(self) -> None:
        for client in list(self.values()):
            close = getattr(client, "close", None)
            if callable(close):
                close()
        self.clear()


_CLIENTS = _home.Slot("clients", _Clients)


class _SharedClients:
    """One client per configuration, the configuration read from the arguments and environment."""

    @property
    def _clients(self) -> _Clients:
        return _CLIENTS.get()

    @property
    def _lock(self) -> threading.Lock:
        return self._clients.lock

    def __call__(self, settings: ClientSettings | None = None) -> JobRunClient:
        """The process-wide client for one configuration, sized to the call pool."""
        settings = settings if settings is not None else ClientSettings()
        key = _client_key(
            settings.region_name or None,
            settings.profile_name or None,
            settings.endpoint_url or None,
            str(settings.connect_timeout),
            str(settings.read_timeout),
        )
        with self._lock:
            client = self._clients.get(key)
            if client is not None:
                self._clients.move_to_end(key)
                return client
            building = self._clients.building.setdefault(key, threading.Lock())
        # boto3 clients are thread-safe once built; one per configuration keeps
        # thousands of waits from building thousands of clients. Built once: the
        # threads that ask meanwhile wait for it (each built its own, 0.6-1 s apiece).
        with building:
            with self._lock:
                client = self._clients.get(key)
            if client is None:
                client = settings.build(max_pool_connections=CALL_WORKERS)
            with self._lock:
                client = self._clients.setdefault(key, client)
                self._clients.move_to_end(key)
                self._clients.building.pop(key, None)
                while len(self._clients) > CLIENT_CACHE_SIZE:
                    self._clients.popitem(last=False)
        return client

    def cache_clear(self) -> None:
        """Forget every client (the next call builds anew)."""
        with self._lock:
            self._clients.clear()


#: The process-wide client for a configuration: ``shared_client(ClientSettings(...))``.
#: Keyed by the arguments and the AWS environment variables that resolve
#: them, so a process whose environment changes gets a client for the new one.
shared_client = _SharedClients()


def off_any_running_loop(run: Callable[[], _T]) -> _T:
    """``run()`` here, or in a helper thread when this thread already runs an event loop."""
    try:
        asyncio.get_running_loop()
    except RuntimeError:
        return run()
    # asyncio.run refuses to nest; a blocking call from async code (a
    # notebook, say) still works, blocking that loop as it says it will.
    with ThreadPoolExecutor(max_workers=1, thread_name_prefix="poller-fanout") as pool:
        # otel: the caller's contextvars (its current span) go with the waits.
        return pool.submit(contextvars.copy_context().run, run).result()
