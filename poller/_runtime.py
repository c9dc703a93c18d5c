"""The runtime every loop shares: argument defaults, the drive loops, the call pool and clients.

The blocking wait, the async wait, the fan-out, the latest-run search, the
poke and the Airflow trigger all build on this one layer, so none of them has
to import another's internals.
"""

from __future__ import annotations

import asyncio
import enum
import functools
import threading
import time
from collections.abc import Awaitable, Callable
from concurrent.futures import Executor, ThreadPoolExecutor
from typing import Protocol, TypeVar

from poller._datazone import JobRunClient, build_client
from poller._model import JobRun
from poller._policy import CallFault, PollPolicy, Step

__all__ = [
    "CALL_WORKERS",
    "UNSET",
    "AsyncSleep",
    "Driven",
    "Sleep",
    "Unset",
    "async_drive",
    "drive",
    "interruptible",
    "off_any_running_loop",
    "resolve_client",
    "resolve_policy",
    "shared_client",
    "shared_executor",
]

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


def resolve_client(
    client: JobRunClient | None,
    region_name: str | None,
    profile_name: str | None,
    endpoint_url: str | None,
) -> JobRunClient:
    """The caller's client as it is, or one poller builds (botocore retries off)."""
    if client is not None:
        return client
    return build_client(
        region_name=region_name, profile_name=profile_name, endpoint_url=endpoint_url
    )


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

    def seen(self, run: JobRun) -> Step: ...

    def failed(self, fault: CallFault) -> Step: ...

    def interrupted(self) -> Step: ...


def drive(
    session: Driven,
    fetch: Callable[[], JobRun],
    sleep: Callable[[float], bool],
    *,
    cancelled: Callable[[], bool] = lambda: False,
    first_answer: bool = False,
) -> Step:
    """Poll until the core says stop (or, with ``first_answer``, until a call succeeds).

    ``sleep`` returns True when the wait was cancelled meanwhile.
    """
    while True:
        if cancelled():
            return session.interrupted()
        try:
            step = session.seen(fetch())
            if first_answer:
                return step
        except CallFault as fault:
            step = session.failed(fault)
        if step.done:
            return step
        if sleep(step.delay):
            return session.interrupted()


# Requests in flight at once from one process; each GetJobRun takes
# milliseconds, so a few threads serve thousands of sleeping waits.
CALL_WORKERS = 8


@functools.cache
def shared_executor() -> Executor:
    """The process-wide pool the blocking boto3 calls run in."""
    return ThreadPoolExecutor(max_workers=CALL_WORKERS, thread_name_prefix="poller-call")


@functools.cache
def shared_client(
    region_name: str | None, profile_name: str | None, endpoint_url: str | None
) -> JobRunClient:
    """The process-wide client for one configuration, sized to the call pool."""
    # boto3 clients are thread-safe once built; one per configuration keeps
    # thousands of waits from building thousands of clients.
    return build_client(
        region_name=region_name,
        profile_name=profile_name,
        endpoint_url=endpoint_url,
        max_pool_connections=CALL_WORKERS,
    )


async def async_drive(
    session: Driven,
    fetch: Callable[[], Awaitable[JobRun]],
    sleep: AsyncSleep,
    *,
    first_answer: bool = False,
) -> Step:
    """Poll until the core says stop: the async twin of ``drive``."""
    while True:
        try:
            step = session.seen(await fetch())
            if first_answer:
                return step
        except CallFault as fault:
            step = session.failed(fault)
        if step.done:
            return step
        await sleep(step.delay)


def off_any_running_loop(run: Callable[[], _T]) -> _T:
    """``run()`` here, or in a helper thread when this thread already runs an event loop."""
    try:
        asyncio.get_running_loop()
    except RuntimeError:
        return run()
    # asyncio.run refuses to nest; a blocking call from async code (a
    # notebook, say) still works, blocking that loop as it says it will.
    with ThreadPoolExecutor(max_workers=1, thread_name_prefix="poller-fanout") as pool:
        return pool.submit(run).result()
