"""The blocking loop: wait_for_job_run, get_job_run, and the one read both share."""

from __future__ import annotations

import threading

from poller._datazone import JobRunClient, validate_ids
from poller._engine import Relay, engine_seams, joins_engine, own_fleet, run_blocking
from poller._model import JobRun, Outcome, WaitResult, carrying_result
from poller._policy import PollPolicy, Step
from poller._runtime import (
    REAL,
    UNSET,
    ClientSettings,
    Seams,
    Unset,
    off_any_running_loop,
    resolve_client,
    resolve_policy,
)
from poller._session import OnChange, OnStep, WaitSession, raise_if_error
from poller._vloop import on_own_time

__all__ = ["get_job_run", "read_once", "read_result", "wait_for_job_run", "wait_result"]


def _start(
    domain_id: str,
    job_run_id: str,
    timeout: float | Unset | None,
    policy: PollPolicy | None,
    client: JobRunClient | ClientSettings | None,
    seams: Seams,
    on_change: OnChange | None = None,
    on_step: OnStep | None = None,
) -> tuple[WaitSession, JobRunClient, Relay | None]:
    """The checked arguments of one wait or read: its session (just started), client, relay.

    A wait that joins the engine gets the engine's clock, and a relay that
    brings its callbacks back to this thread.
    """
    with carrying_result(domain_id, job_run_id):  # an error before any call has a result too
        validate_ids(domain_id, job_run_id)
        policy = resolve_policy(policy, timeout)
        built = resolve_client(client, shared=True)
    relay = None
    if joins_engine(seams):
        relay = Relay()
        seams = engine_seams(seams)
        on_change, on_step = relay.wrap(on_change), relay.wrap(on_step)
    session = WaitSession(
        domain_id, job_run_id, policy, seams=seams, on_change=on_change, on_step=on_step
    )
    return session, built, relay


def _drive(
    session: WaitSession,
    client: JobRunClient,
    cancel: threading.Event | None,
    seams: Seams,
    *,
    first_answer: bool = False,
    relay: Relay | None = None,
) -> Step:
    if joins_engine(seams):
        # One budget per account for every wait of the process (docs/design.md, "The engine").
        return run_blocking(
            lambda engine: engine.fleet(client).drive(session, client, first_answer=first_answer),
            relay=relay,
            cancel=cancel,
        )

    # Its own time or executor: the engine's code in a private fleet, on a loop of that
    # time (docs/design.md, "Own time").
    async def alone() -> Step:
        fleet = own_fleet(client, seams)
        try:
            return await fleet.drive(session, client, first_answer=first_answer)
        finally:
            await fleet.close()

    return off_any_running_loop(lambda: on_own_time(alone, seams, cancel))


def read_once(
    session: WaitSession,
    client: JobRunClient,
    *,
    cancel: threading.Event | None = None,
    seams: Seams = REAL,
    relay: Relay | None = None,
) -> Step:
    """Read the session's run once, throttles and faults retried within its policy's timeout.

    The one read behind get_job_run, ``poller status`` and a sensor's poke.
    ``relay``: the one the session's callbacks were wrapped with (`_start`).
    """
    return _drive(session, client, cancel, seams, first_answer=True, relay=relay)


def wait_result(
    domain_id: str,
    job_run_id: str,
    *,
    timeout: float | Unset | None = UNSET,
    policy: PollPolicy | None = None,
    client: JobRunClient | ClientSettings | None = None,
    on_change: OnChange | None = None,
    on_step: OnStep | None = None,
    cancel: threading.Event | None = None,
    seams: Seams | None = None,
) -> WaitResult:
    """Like wait_for_job_run, but a wait that cannot tell how the run ended is a result too.

    Its outcome is ``wait_timeout``, ``error`` or ``interrupted`` and its
    ``error`` holds what wait_for_job_run would have raised; bad IDs and a
    client that cannot be built still raise, since no wait took place.
    """
    seams = seams or REAL
    session, built, relay = _start(
        domain_id, job_run_id, timeout, policy, client, seams, on_change, on_step
    )
    return session.result(_drive(session, built, cancel, seams, relay=relay))


def wait_for_job_run(
    domain_id: str,
    job_run_id: str,
    *,
    timeout: float | Unset | None = UNSET,
    policy: PollPolicy | None = None,
    client: JobRunClient | ClientSettings | None = None,
    on_change: OnChange | None = None,
    cancel: threading.Event | None = None,
    seams: Seams | None = None,
) -> WaitResult:
    """Wait until the run reaches a terminal status and return what was found.

    Returns for every terminal status, failures included (see
    ``WaitResult.raise_for_status``). Raises a PollerError only when it cannot
    tell how the run ended: WaitTimeoutError, JobRunNotFoundError,
    AccessDeniedError, InvalidRequestError, ServiceUnavailableError or
    WaitCancelledError (``cancel`` was set). ``timeout`` (seconds, None for no
    deadline) overrides the policy's.
    """
    return raise_if_error(
        wait_result(
            domain_id,
            job_run_id,
            timeout=timeout,
            policy=policy,
            client=client,
            on_change=on_change,
            cancel=cancel,
            seams=seams,
        )
    )


def get_job_run(
    domain_id: str,
    job_run_id: str,
    *,
    policy: PollPolicy | None = None,
    client: JobRunClient | ClientSettings | None = None,
    seams: Seams | None = None,
) -> JobRun:
    """Read the run's current state once, whatever it is.

    Throttles and transient faults are retried as in a wait, within the
    policy's timeout; errors are those of wait_for_job_run.
    """
    seams = seams or REAL
    session, built, relay = _start(domain_id, job_run_id, UNSET, policy, client, seams)
    step = read_once(session, built, seams=seams, relay=relay)
    if step.error is not None:
        raise_if_error(session.result(step))
    assert session.state.last is not None, "a read that ended well saw a run"
    session.close()  # otel: a read ends its span without a result
    return session.state.last


def read_result(
    domain_id: str,
    job_run_id: str,
    *,
    policy: PollPolicy | None = None,
    client: JobRunClient | ClientSettings | None = None,
    on_step: OnStep | None = None,
    cancel: threading.Event | None = None,
    seams: Seams | None = None,
) -> WaitResult:
    """get_job_run's one read (throttles and faults retried) as a result: ``poller status``.

    A finished run gets its outcome; a run still going gets ``wait_timeout``
    with no ``error`` (a wait with no time left), which ``status`` shows as null.
    """
    seams = seams or REAL
    session, built, relay = _start(
        domain_id, job_run_id, UNSET, policy, client, seams, on_step=on_step
    )
    step = read_once(session, built, cancel=cancel, seams=seams, relay=relay)
    # A read that saw the run still going reports it so, even when the answer came
    # back after the deadline (`poller status --timeout 0`): the status was read.
    running = not step.done or (
        step.outcome is Outcome.WAIT_TIMEOUT and session.state.last is not None
    )
    return session.result(Step(outcome=Outcome.WAIT_TIMEOUT) if running else step, running=running)
