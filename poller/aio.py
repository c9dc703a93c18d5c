"""The async loop: the same core as the blocking call, for event loops and Airflow triggers.

boto3 is blocking, so each call runs in a small shared thread pool: thousands
of waits can sleep on the event loop at once while only a few requests are in
flight, and the threads stay few however many waits there are.
"""

from __future__ import annotations

import asyncio
import functools
import importlib
import random
from collections.abc import Awaitable, Callable
from concurrent.futures import Executor, ThreadPoolExecutor
from typing import TYPE_CHECKING, Any

from poller.datazone import JobRunClient, build_client, fetch_job_run, validate_ids
from poller.model import JobRun, WaitResult
from poller.policy import CallFault, PollPolicy, Step
from poller.session import Clock, OnChange, OnStep, WaitSession, raise_if_error
from poller.waiter import UNSET, Driven, Unset, resolve_policy

if TYPE_CHECKING:
    from poller.fanout import async_wait_for_job_runs
    from poller.latest import async_wait_for_latest_job_run

__all__ = [
    "CALL_WORKERS",
    "async_wait_for_job_run",
    "async_wait_for_job_runs",
    "async_wait_for_latest_job_run",
    "async_wait_result",
    "shared_executor",
]

AsyncSleep = Callable[[float], Awaitable[object]]

# Requests in flight at once from one process; each GetJobRun takes
# milliseconds, so a few threads serve thousands of sleeping waits.
CALL_WORKERS = 8


@functools.cache
def shared_executor() -> Executor:
    """The process-wide pool the blocking boto3 calls run in."""
    return ThreadPoolExecutor(max_workers=CALL_WORKERS, thread_name_prefix="poller-call")


@functools.cache
def _shared_client(
    region_name: str | None, profile_name: str | None, endpoint_url: str | None
) -> JobRunClient:
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
    """Poll until the core says stop: the async twin of ``waiter.drive``."""
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


async def async_wait_result(
    domain_id: str,
    job_run_id: str,
    *,
    timeout: float | Unset | None = UNSET,
    policy: PollPolicy | None = None,
    client: JobRunClient | None = None,
    region_name: str | None = None,
    profile_name: str | None = None,
    endpoint_url: str | None = None,
    on_change: OnChange | None = None,
    on_step: OnStep | None = None,
    clock: Clock | None = None,
    sleep: AsyncSleep | None = None,
    rng: random.Random | None = None,
    executor: Executor | None = None,
    logger: Any = None,
) -> WaitResult:
    """Like ``async_wait_for_job_run``, but wait timeouts and errors come back as results.

    Cancelling the task logs the ``finished`` event with outcome
    ``interrupted`` and the last status, then lets the cancellation through.
    """
    validate_ids(domain_id, job_run_id)
    policy = resolve_policy(policy, timeout)
    if client is None:
        client = _shared_client(region_name or None, profile_name or None, endpoint_url or None)
    pool = executor if executor is not None else shared_executor()
    loop = asyncio.get_running_loop()
    call = functools.partial(fetch_job_run, client, domain_id, job_run_id)
    session = WaitSession(
        domain_id,
        job_run_id,
        policy,
        clock=clock,
        rng=rng,
        on_change=on_change,
        on_step=on_step,
        logger=logger,
    )
    try:
        step = await async_drive(
            session, lambda: loop.run_in_executor(pool, call), sleep or asyncio.sleep
        )
    except asyncio.CancelledError:
        session.result(session.interrupted())
        raise
    return session.result(step)


async def async_wait_for_job_run(
    domain_id: str,
    job_run_id: str,
    *,
    timeout: float | Unset | None = UNSET,
    policy: PollPolicy | None = None,
    client: JobRunClient | None = None,
    region_name: str | None = None,
    profile_name: str | None = None,
    endpoint_url: str | None = None,
    on_change: OnChange | None = None,
    clock: Clock | None = None,
    sleep: AsyncSleep | None = None,
    rng: random.Random | None = None,
    executor: Executor | None = None,
) -> WaitResult:
    """Wait until the run finishes, without blocking the event loop; as ``wait_for_job_run``."""
    return raise_if_error(
        await async_wait_result(
            domain_id,
            job_run_id,
            timeout=timeout,
            policy=policy,
            client=client,
            region_name=region_name,
            profile_name=profile_name,
            endpoint_url=endpoint_url,
            on_change=on_change,
            clock=clock,
            sleep=sleep,
            rng=rng,
            executor=executor,
        )
    )


# The many-run and latest-run twins live in modules that build on this one;
# resolving them on first access keeps `from poller.aio import ...` working
# for them without an import cycle.
_LAZY = {
    "async_wait_for_job_runs": "poller.fanout",
    "async_wait_for_latest_job_run": "poller.latest",
}


def __getattr__(name: str) -> Any:
    module = _LAZY.get(name)
    if module is None:
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
    return getattr(importlib.import_module(module), name)
