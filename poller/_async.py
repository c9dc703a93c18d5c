"""The async wait on one run: the same core as the blocking call, on an event loop.

boto3 is blocking, so each call runs in the small shared thread pool of
``poller._runtime``: thousands of waits can sleep on the event loop at once
while only a few requests are in flight.
"""

from __future__ import annotations

import asyncio
import functools
import random
from concurrent.futures import Executor
from typing import Any

from poller._datazone import JobRunClient, validate_ids
from poller._history import fetch_job_run_learning
from poller._model import WaitResult
from poller._policy import PollPolicy
from poller._runtime import (
    UNSET,
    AsyncSleep,
    Unset,
    async_drive,
    resolve_policy,
    shared_client,
    shared_executor,
)
from poller._session import Clock, OnChange, OnStep, WaitSession, raise_if_error

__all__ = ["async_wait_for_job_run", "async_wait_result"]


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
        client = shared_client(region_name or None, profile_name or None, endpoint_url or None)
    pool = executor if executor is not None else shared_executor()
    call = functools.partial(fetch_job_run_learning, client, policy, domain_id, job_run_id)
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
        step = await async_drive(session, call, sleep or asyncio.sleep, pool=pool)
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
