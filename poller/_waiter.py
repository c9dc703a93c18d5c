"""The blocking loop: wait_for_job_run and get_job_run."""

from __future__ import annotations

import random
import threading
from typing import Any

from poller._datazone import JobRunClient, fetch_job_run, validate_ids
from poller._history import fetch_job_run_learning
from poller._model import JobRun, WaitResult
from poller._policy import PollPolicy
from poller._runtime import (
    UNSET,
    Sleep,
    Unset,
    drive,
    interruptible,
    resolve_client,
    resolve_policy,
)
from poller._session import Clock, OnChange, OnStep, WaitSession, raise_if_error

__all__ = ["get_job_run", "wait_for_job_run", "wait_result"]


def wait_result(
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
    cancel: threading.Event | None = None,
    clock: Clock | None = None,
    sleep: Sleep | None = None,
    rng: random.Random | None = None,
    logger: Any = None,
) -> WaitResult:
    """Like wait_for_job_run, but a wait that cannot tell how the run ended is a result too.

    Its outcome is ``wait_timeout``, ``error`` or ``interrupted`` and its
    ``error`` holds what wait_for_job_run would have raised; bad IDs and a
    client that cannot be built still raise, since no wait took place.
    """
    validate_ids(domain_id, job_run_id)
    policy = resolve_policy(policy, timeout)
    client = resolve_client(client, region_name, profile_name, endpoint_url)
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
    step = drive(
        session,
        lambda: fetch_job_run_learning(client, policy, domain_id, job_run_id),
        interruptible(sleep, cancel),
        cancelled=cancel.is_set if cancel is not None else lambda: False,
    )
    return session.result(step)


def wait_for_job_run(
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
    cancel: threading.Event | None = None,
    clock: Clock | None = None,
    sleep: Sleep | None = None,
    rng: random.Random | None = None,
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
            region_name=region_name,
            profile_name=profile_name,
            endpoint_url=endpoint_url,
            on_change=on_change,
            cancel=cancel,
            clock=clock,
            sleep=sleep,
            rng=rng,
        )
    )


def get_job_run(
    domain_id: str,
    job_run_id: str,
    *,
    policy: PollPolicy | None = None,
    client: JobRunClient | None = None,
    region_name: str | None = None,
    profile_name: str | None = None,
    endpoint_url: str | None = None,
    clock: Clock | None = None,
    sleep: Sleep | None = None,
) -> JobRun:
    """Read the run's current state once, whatever it is.

    Throttles and transient faults are retried as in a wait, within the
    policy's timeout; errors are those of wait_for_job_run.
    """
    validate_ids(domain_id, job_run_id)
    policy = resolve_policy(policy, UNSET)
    client = resolve_client(client, region_name, profile_name, endpoint_url)
    session = WaitSession(domain_id, job_run_id, policy, clock=clock)
    step = drive(
        session,
        lambda: fetch_job_run(client, domain_id, job_run_id),
        interruptible(sleep, None),
        first_answer=True,
    )
    if step.error is not None:
        raise_if_error(session.result(step))
    assert session.state.last is not None, "a read that ended well saw a run"
    return session.state.last


def read_result(
    domain_id: str,
    job_run_id: str,
    *,
    policy: PollPolicy | None = None,
    client: JobRunClient | None = None,
    on_step: OnStep | None = None,
    cancel: threading.Event | None = None,
) -> WaitResult:
    """get_job_run's one read (throttles and faults retried) as a result: ``poller status``.

    A finished run gets its outcome; a run still going gets ``wait_timeout``
    with no ``error`` (a wait with no time left), which ``status`` shows as null.
    """
    from poller._model import Outcome  # noqa: PLC0415  (kept local: an edit at the end only)
    from poller._policy import Step  # noqa: PLC0415

    validate_ids(domain_id, job_run_id)
    policy = resolve_policy(policy, UNSET)
    client = resolve_client(client, None, None, None)
    session = WaitSession(domain_id, job_run_id, policy, on_step=on_step)
    step = drive(
        session,
        lambda: fetch_job_run(client, domain_id, job_run_id),
        interruptible(None, cancel),
        cancelled=cancel.is_set if cancel is not None else lambda: False,
        first_answer=True,
    )
    return session.result(step if step.done else Step(outcome=Outcome.WAIT_TIMEOUT))
