"""The async wait on one run: the same core as the blocking call, on an event loop.

boto3 is blocking, so each call runs in the small shared thread pool of
``poller._runtime``: thousands of waits can sleep on the event loop at once
while only a few requests are in flight.
"""

from __future__ import annotations

import asyncio
import functools

from poller._datazone import JobRunClient, validate_ids
from poller._engine import Relay, engine_seams, joins_engine, run_async
from poller._history import fetch_job_run_learning
from poller._model import WaitResult, carrying_result
from poller._policy import PollPolicy
from poller._runtime import (
    REAL,
    UNSET,
    ClientSettings,
    Seams,
    Unset,
    async_drive,
    resolve_client,
    resolve_policy,
)
from poller._session import OnChange, OnStep, WaitSession, raise_if_error

__all__ = ["async_wait_for_job_run", "async_wait_result"]


async def async_wait_result(
    domain_id: str,
    job_run_id: str,
    *,
    timeout: float | Unset | None = UNSET,
    policy: PollPolicy | None = None,
    client: JobRunClient | ClientSettings | None = None,
    on_change: OnChange | None = None,
    on_step: OnStep | None = None,
    seams: Seams | None = None,
) -> WaitResult:
    """Like ``async_wait_for_job_run``, but wait timeouts and errors come back as results.

    Cancelling the task logs the ``finished`` event with outcome
    ``interrupted`` and the last status, then lets the cancellation through.
    """
    seams = seams or REAL
    with carrying_result(domain_id, job_run_id):  # an error before any call has a result too
        validate_ids(domain_id, job_run_id)
        policy = resolve_policy(policy, timeout)
        # Built (once per configuration) in a thread: never on the caller's loop.
        built = (
            client
            if client is not None and not isinstance(client, ClientSettings)
            else await asyncio.to_thread(resolve_client, client, shared=True)
        )
    if joins_engine(seams):
        # One budget per account for every wait of the process; callbacks on this loop.
        relay = Relay(asyncio.get_running_loop())
        session = WaitSession(
            domain_id,
            job_run_id,
            policy,
            seams=engine_seams(seams),
            on_change=relay.wrap(on_change),
            on_step=relay.wrap(on_step),
        )
        step = await run_async(
            lambda engine: engine.fleet(built).drive(session, built),
            relay=relay,
            on_cancel=session.result,
        )
        return session.result(step)
    call = functools.partial(fetch_job_run_learning, built, policy, domain_id, job_run_id)
    session = WaitSession(
        domain_id, job_run_id, policy, seams=seams, on_change=on_change, on_step=on_step
    )
    try:
        step = await async_drive(
            session, call, seams.async_sleep or asyncio.sleep, pool=seams.executor
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
    client: JobRunClient | ClientSettings | None = None,
    on_change: OnChange | None = None,
    seams: Seams | None = None,
) -> WaitResult:
    """Wait until the run finishes, without blocking the event loop; as ``wait_for_job_run``."""
    return raise_if_error(
        await async_wait_result(
            domain_id,
            job_run_id,
            timeout=timeout,
            policy=policy,
            client=client,
            on_change=on_change,
            seams=seams,
        )
    )
