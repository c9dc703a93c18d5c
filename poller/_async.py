"""The async wait on one run: the same core as the blocking call, on an event loop.

boto3 is blocking, so each call runs in the small shared thread pool of
``poller._runtime``: thousands of waits can sleep on the event loop at once
while only a few requests are in flight.
"""

from __future__ import annotations

import asyncio

from poller._datazone import JobRunClient, validate_ids
from poller._engine import Relay, engine_seams, joins_engine, own_fleet, run_async
from poller._model import WaitResult, carrying_result
from poller._policy import PollPolicy, Step
from poller._runtime import (
    REAL,
    UNSET,
    ClientSettings,
    Seams,
    Unset,
    resolve_client,
    resolve_policy,
)
from poller._session import OnChange, OnStep, WaitSession, raise_if_error
from poller._vloop import async_on_own_time

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
    # Its own time or executor: the engine's code in a private fleet, on a loop of that
    # time (docs/design.md, "Own time"); callbacks on this loop.
    relay = Relay(asyncio.get_running_loop())
    session = WaitSession(
        domain_id,
        job_run_id,
        policy,
        seams=seams,
        on_change=relay.wrap(on_change) if seams.async_sleep else on_change,
        on_step=relay.wrap(on_step) if seams.async_sleep else on_step,
    )

    async def alone() -> Step:
        fleet = own_fleet(built, seams)
        try:
            return await fleet.drive(session, built)
        finally:
            await fleet.close()

    step = await async_on_own_time(alone, seams, on_cancel=session.result, relay=relay)
    if relay.error is not None:
        raise relay.error
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
