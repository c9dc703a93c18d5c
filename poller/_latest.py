"""Waiting on a job's latest run, or on the run created after a given time.

ListJobRuns finds the run (paginated, newest first); from then on it is an
ordinary wait on that run. Finding it follows the core's rules too: the same
`fail` schedule retries throttles and transient faults, and "no such run yet"
is a not-found fault, tolerated for ``not_found_grace`` (a run you have just
started may take a moment to be listed) and fatal after that. The whole
search-then-wait shares one deadline.
"""

from __future__ import annotations

import asyncio
import functools
import random
import re
import threading
import time
from collections.abc import Callable
from dataclasses import replace
from datetime import UTC, datetime
from typing import Any, Protocol

from poller import log
from poller._async import async_wait_result
from poller._datazone import list_job_runs, shown_id, validate_ids
from poller._engine import joins_engine
from poller._limiter import budget_for
from poller._model import JobRun, Outcome, WaitResult, carrying_result
from poller._policy import CallFault, FaultKind, PollPolicy, Step, WaitState, expire, fail
from poller._runtime import (
    REAL,
    UNSET,
    ClientSettings,
    Seams,
    Unset,
    async_drive,
    off_any_running_loop,
    resolve_client,
    resolve_policy,
)
from poller._session import OnChange, log_retry, raise_if_error, result_document
from poller._vloop import on_own_time
from poller._waiter import wait_result
from poller.errors import InvalidRequestError, PollerError, WaitCancelledError

__all__ = [
    "JobRunLister",
    "async_latest_result",
    "async_wait_for_latest_job_run",
    "find_job_run",
    "latest_result",
    "validate_job_ids",
    "wait_for_latest_job_run",
]

# DataZone's jobIdentifier pattern, the same as a run's.
_JOB_ID = re.compile(r"[a-zA-Z0-9_-]{1,36}")
RUN_FOUND = "run_found"
FINDING_RUN = "finding_run"


class JobRunLister(Protocol):
    """What latest-run mode needs of a client: ListJobRuns and GetJobRun."""

    def list_job_runs(self, **kwargs: Any) -> Any: ...

    def get_job_run(self, *, domainIdentifier: str, identifier: str) -> Any: ...


def _as_utc(since: datetime | float | None) -> datetime | None:
    if since is None or isinstance(since, datetime):
        # A naive time is taken as UTC, as DataZone reports every timestamp.
        return since if since is None or since.tzinfo else since.replace(tzinfo=UTC)
    return datetime.fromtimestamp(since, UTC)


_EPOCH = datetime.fromtimestamp(0, UTC)


def _created(run: JobRun) -> datetime:
    return run.created_at or _EPOCH


def find_job_run(
    client: JobRunLister, domain_id: str, job_id: str, *, since: datetime | float | None = None
) -> JobRun:
    """One search: the job's newest run, or with ``since`` the first one created at or after it.

    Returns the run as its ListJobRuns summary describes it: the wait that
    follows reads it in full with its first poll, at once, so reading it here
    too would be a call spent twice. Raises a CallFault: NOT_FOUND when no run
    matches yet, else the classified failure of a call.
    """
    after = _as_utc(since)
    chosen: JobRun | None = None
    token: str | None = None
    while True:
        # A summary that cannot be read is no candidate, not a failed search.
        runs, token = list_job_runs(client, domain_id, job_id, next_token=token)
        if after is None:
            # Newest first is asked for; taking the newest of the page as
            # well keeps the answer right if the service's order is looser.
            chosen = max(runs, key=_created) if runs else None
            break
        newer = [r for r in runs if r.created_at is not None and r.created_at >= after]
        for run in newer:
            # The earliest run after `since` is the one started then; a
            # later one is somebody else's.
            if chosen is None or _created(run) <= _created(chosen):
                chosen = run
        # Newest first: once a page reaches back past `since`, no later page can match.
        if not token or len(newer) < len(runs):
            break
    if chosen is None:
        what = "no run" if after is None else f"no run created since {after.isoformat()}"
        raise CallFault(
            FaultKind.NOT_FOUND,
            "ResourceNotFoundException",
            f"{what} of job {job_id} in domain {domain_id}",
        )
    return chosen


def _on_budget(
    lister: Any, policy: PollPolicy, seams: Seams, find: Callable[[], JobRun]
) -> Callable[[], JobRun]:
    """``find`` booked on the budget of the lister's account, as every call of a wait is.

    On real time only (where the wait that follows joins the engine); the
    search makes a call or a few, so its turn is waited for in the call's own
    thread, within the call's bound like the call itself.
    """
    if not joins_engine(seams):
        return find
    limiter = budget_for(lister)

    def booked() -> JobRun:
        booking = limiter.reserve(limiter.clock())
        assert booking is not None  # no latest: always booked
        # As `until_booked`, in this thread: a late turn right after another call
        # is moved a spacing on (`RateLimiter.claim`), not sent with it.
        while True:
            delay = limiter.at(booking) - limiter.clock()
            if delay <= 0 and (granted := limiter.claim(booking)) is not None:
                break
            time.sleep(max(delay, 0.0))
        try:
            run = find()
        except CallFault as fault:
            limiter.report(granted, fault.kind, policy.retry_max)
            raise
        limiter.report(granted, None, policy.retry_max)
        return run

    return booked


def validate_job_ids(domain_id: str, job_id: str) -> None:
    """Raise InvalidRequestError unless the domain and job IDs match the API's patterns."""
    validate_ids(domain_id, "x")
    if not isinstance(job_id, str) or not _JOB_ID.fullmatch(job_id):
        raise InvalidRequestError(
            f"invalid job identifier {shown_id(job_id)}: expected 1 to 36 letters, digits, "
            "'-' or '_'"
        )


class _Search:
    """Finding the run, under the core's retry rules; driven like a wait by the same loops."""

    def __init__(self, domain_id: str, job_id: str, policy: PollPolicy, seams: Seams) -> None:
        self.policy = policy
        self.clock = seams.clock or time.monotonic
        self.rng = seams.rng or random.Random()
        self.state = WaitState.start(policy, self.clock())
        self.run: JobRun | None = None
        self.domain_id = domain_id
        self._logger = seams.logger if seams.logger is not None else log.get_logger()
        self.log = log.get_logger(domain_id=domain_id, job_id=job_id)
        self.log.info(FINDING_RUN, timeout_s=policy.timeout)

    def seen(self, run: JobRun, *, polled: bool = True) -> Step:
        self.run = run
        self.state = replace(self.state, polls=self.state.polls + 1)
        self.log.info(RUN_FOUND, job_run_id=run.id, status=str(run.status))
        return Step()

    def failed(self, fault: CallFault) -> Step:
        self.state, step = fail(self.policy, self.state, fault, self.clock(), self.rng)
        log_retry(self.log, fault, self.state, step)
        return step

    def time_left(self) -> float:
        return self.state.time_left(self.clock())

    def expired(self, why: str) -> Step:
        return expire(self.state, why)

    def interrupted(self) -> Step:
        error = WaitCancelledError("the wait was cancelled before the run was found")
        return Step(outcome=Outcome.INTERRUPTED, error=error)

    def found(self, step: Step) -> tuple[JobRun, float | None] | WaitResult:
        """The run found and the seconds left of the shared deadline; or the search's result."""
        if step.error is not None or self.run is None:
            error = step.error or PollerError("a search ended with neither a run nor an error")
            result = WaitResult(
                self.domain_id,
                "",
                step.outcome or Outcome.ERROR,
                polls=self.state.polls,
                throttled=self.state.throttled,
                errors_retried=self.state.errors_retried,
                waited_s=self.clock() - self.state.started,
                error=error,
            )
            self._logger.info(log.FINISHED, **result_document(result))
            return result
        if self.state.deadline is None:
            return self.run, None
        return self.run, max(self.state.deadline - self.clock(), 0.0)

    def logger(self, seams: Seams) -> _Held:
        """The logger of the wait that follows: its ``finished`` is held for ``joined``."""
        return _Held(self._logger)

    def joined(self, result: WaitResult, held: _Held) -> WaitResult:
        """The wait's result with the search's calls and time in it, logged as ``finished``.

        One result for the whole search-then-wait, as it has one deadline:
        ``polls``, ``throttled``, ``errors_retried`` and ``waited_s`` count
        the listings and the time spent finding the run too.
        """
        state = self.state
        result = replace(
            result,
            polls=result.polls + state.polls,
            throttled=result.throttled + state.throttled,
            errors_retried=result.errors_retried + state.errors_retried,
            waited_s=self.clock() - state.started,
        )
        held.release(result)
        return result


class _Held:
    """A logger passing every event on but ``finished``, logged once the result is whole."""

    def __init__(self, logger: Any) -> None:
        self._logger = logger
        self._running = False

    def info(self, event: str, **fields: Any) -> Any:
        if event == log.FINISHED:
            self._running = fields.get("outcome") is None
            return None
        return self._logger.info(event, **fields)

    def __getattr__(self, name: str) -> Any:
        return getattr(self._logger, name)

    def release(self, result: WaitResult) -> None:
        self._logger.info(log.FINISHED, **result_document(result, running=self._running))


def _one_stream(seams: Seams | None) -> Seams:
    """The seams with an rng fixed, so the search and the wait share it.

    The clock is left as given: on real time (none given) the search books
    on the account's budget and the wait that follows joins the engine.
    """
    seams = seams or REAL
    return replace(seams, rng=seams.rng or random.Random())


def latest_result(
    domain_id: str,
    job_id: str,
    *,
    since: datetime | float | None = None,
    timeout: float | Unset | None = UNSET,
    policy: PollPolicy | None = None,
    client: JobRunLister | ClientSettings | None = None,
    on_change: OnChange | None = None,
    cancel: threading.Event | None = None,
    seams: Seams | None = None,
) -> WaitResult:
    """Like `wait_for_latest_job_run`, but a wait that cannot tell how the run ended is a result.

    Its ``job_run_id`` is the run found (``""`` if none was) and ``job_run``
    the last state seen of it; bad arguments still raise, with a result.
    """
    with carrying_result(domain_id, ""):
        validate_job_ids(domain_id, job_id)
        policy = resolve_policy(policy, timeout)
        seams = _one_stream(seams)
        lister: Any = resolve_client(client, shared=True)
    search = _Search(domain_id, job_id, policy, seams)
    find = _on_budget(
        lister,
        policy,
        seams,
        functools.partial(find_job_run, lister, domain_id, job_id, since=since),
    )

    async def searched() -> Step:
        try:
            return await async_drive(
                search, find, asyncio.sleep, pool=seams.executor, first_answer=True
            )
        except asyncio.CancelledError:
            return search.interrupted()  # `cancel` was set

    # On a loop of the search's own time (`_vloop`), a plain one on real time.
    found = search.found(off_any_running_loop(lambda: on_own_time(searched, seams, cancel)))
    if isinstance(found, WaitResult):
        return found
    run, time_left = found
    held = search.logger(seams)
    result = wait_result(
        domain_id,
        run.id,
        timeout=time_left,
        policy=policy,
        client=lister,
        on_change=on_change,
        cancel=cancel,
        seams=replace(seams, logger=held),
    )
    return search.joined(result, held)


def wait_for_latest_job_run(
    domain_id: str,
    job_id: str,
    *,
    since: datetime | float | None = None,
    timeout: float | Unset | None = UNSET,
    policy: PollPolicy | None = None,
    client: JobRunLister | ClientSettings | None = None,
    on_change: OnChange | None = None,
    cancel: threading.Event | None = None,
    seams: Seams | None = None,
) -> WaitResult:
    """Find the job's latest run (or, with ``since``, the first created at or after it) and wait.

    ``since`` is an aware datetime (a naive one is UTC) or epoch seconds: pass
    the time you started the run to wait for that run. A run that is not
    listed yet is looked for again until ``not_found_grace`` has passed, then
    JobRunNotFoundError. Otherwise as ``wait_for_job_run``, with one deadline
    for the search and the wait; the result's ``polls`` and ``waited_s``
    count the search's listings and time as well.
    """
    return raise_if_error(
        latest_result(
            domain_id,
            job_id,
            since=since,
            timeout=timeout,
            policy=policy,
            client=client,
            on_change=on_change,
            cancel=cancel,
            seams=seams,
        )
    )


async def async_latest_result(
    domain_id: str,
    job_id: str,
    *,
    since: datetime | float | None = None,
    timeout: float | Unset | None = UNSET,
    policy: PollPolicy | None = None,
    client: JobRunLister | ClientSettings | None = None,
    on_change: OnChange | None = None,
    seams: Seams | None = None,
) -> WaitResult:
    """The async twin of `latest_result`."""
    with carrying_result(domain_id, ""):
        validate_job_ids(domain_id, job_id)
        policy = resolve_policy(policy, timeout)
        seams = _one_stream(seams)
        lister: Any = resolve_client(client, shared=True)
    search = _Search(domain_id, job_id, policy, seams)
    find = _on_budget(
        lister,
        policy,
        seams,
        functools.partial(find_job_run, lister, domain_id, job_id, since=since),
    )
    found = search.found(
        await async_drive(
            search,
            find,
            seams.async_sleep or asyncio.sleep,
            pool=seams.executor,
            first_answer=True,
        )
    )
    if isinstance(found, WaitResult):
        return found
    run, time_left = found
    held = search.logger(seams)
    result = await async_wait_result(
        domain_id,
        run.id,
        timeout=time_left,
        policy=policy,
        client=lister,
        on_change=on_change,
        seams=replace(seams, logger=held),
    )
    return search.joined(result, held)


async def async_wait_for_latest_job_run(
    domain_id: str,
    job_id: str,
    *,
    since: datetime | float | None = None,
    timeout: float | Unset | None = UNSET,
    policy: PollPolicy | None = None,
    client: JobRunLister | ClientSettings | None = None,
    on_change: OnChange | None = None,
    seams: Seams | None = None,
) -> WaitResult:
    """The async twin of `wait_for_latest_job_run`; cancel the task to stop it."""
    return raise_if_error(
        await async_latest_result(
            domain_id,
            job_id,
            since=since,
            timeout=timeout,
            policy=policy,
            client=client,
            on_change=on_change,
            seams=seams,
        )
    )
