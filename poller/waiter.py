"""The blocking loop: wait_for_job_run and get_job_run."""

from __future__ import annotations

import enum
import random
import threading
import time
from collections.abc import Callable
from typing import Any, Protocol

from poller.datazone import JobRunClient, build_client, fetch_job_run, validate_ids
from poller.model import JobRun, WaitResult
from poller.policy import CallFault, PollPolicy, Step
from poller.session import Clock, OnChange, OnStep, WaitSession, raise_if_error

__all__ = ["UNSET", "Unset", "get_job_run", "wait_for_job_run", "wait_result"]

Sleep = Callable[[float], object]


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
        lambda: fetch_job_run(client, domain_id, job_run_id),
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
