"""Poke once: the framework-neutral base of a sensor.

A scheduler that re-runs a check on its own clock (Airflow's reschedule mode,
Dagster sensors, Prefect) needs one question answered, with no memory between
calls but what to log: is the run done with this result, not done yet, or
failed for this reason? `JobRunPoker.poke` answers it with one look at the run, absorbing
throttles and transient faults with the core's backoff inside a budget, so a
poke never outlives its interval. It drives the same core as every other wait
(`_runtime.async_drive` over a `WaitSession`, in a `Fleet`); `judge` turns a
result document into the answer, so a document that came back from elsewhere (an Airflow trigger's
event) is judged by the same rules.
"""

from __future__ import annotations

import enum
from collections.abc import Callable, Mapping
from dataclasses import dataclass, replace
from typing import Any

from poller._datazone import JobRunClient, validate_ids
from poller._engine import engine_seams, joins_engine
from poller._model import JobRun, Outcome, WaitResult, describe_lineage
from poller._policy import PollPolicy, Step
from poller._runtime import REAL, ClientSettings, Seams, resolve_client, wall_of
from poller._session import WaitSession
from poller._waiter import read_once
from poller.errors import PollerError, ServiceUnavailableError

__all__ = ["JobRunPoker", "PokeState", "Verdict", "describe_lineage", "judge"]

# The outcomes after which the run will not be looked at again.
_FINAL = frozenset({Outcome.SUCCEEDED, Outcome.PARTIALLY_SUCCEEDED, Outcome.FAILED, Outcome.ERROR})
# Transient faults that did not clear may clear on a later attempt; every
# other error (denied, invalid, not found) will not, whoever retries.
_RETRYABLE_PROBLEMS = frozenset({"ServiceUnavailableError"})


class PokeState(enum.StrEnum):
    """The three answers to a poke."""

    DONE = "done"  # the run succeeded (or partially, when that is allowed)
    WAITING = "waiting"  # not finished yet, or its status could not be read in time
    FAILED = "failed"  # the run failed, or it cannot be waited on


@dataclass(frozen=True, slots=True)
class Verdict:
    """The answer to a poke.

    ``document`` is the result document (``WaitResult.to_dict()``) once the
    run is done or failed, None while a poke found it still running;
    ``status`` is the last status seen, if any. ``reason`` says, for a person,
    why the run failed or why a poke could not tell; ``retryable`` marks a
    failure that a later attempt may not repeat (transient faults that did
    not clear), so a scheduler may spend a retry on it.
    """

    state: PokeState
    document: dict[str, Any] | None = None
    status: str | None = None
    reason: str | None = None
    retryable: bool = False

    @property
    def done(self) -> bool:
        """True when the run succeeded and ``document`` is the result to hand on."""
        return self.state is PokeState.DONE

    @property
    def failed(self) -> bool:
        """True when waiting longer cannot help."""
        return self.state is PokeState.FAILED


def _failure_reason(doc: Mapping[str, Any], allow_partial: bool) -> str:
    text = f"job run {doc['job_run_id']} in domain {doc['domain_id']} ended {doc['status']}"
    if doc.get("error_message"):
        text += f": {doc['error_message']}"
    if doc["outcome"] == Outcome.PARTIALLY_SUCCEEDED and not allow_partial:
        text += " (allow_partial is off)"
    lineage = describe_lineage(doc.get("lineage"))
    return f"{text}; lineage: {lineage}" if lineage else text


def judge(document: Mapping[str, Any], *, allow_partial: bool = False) -> Verdict:
    """The verdict a result document carries; the one rule every sensor path applies.

    A ``wait_timeout`` or ``interrupted`` document means the run was not seen
    to finish: the answer is WAITING, and whoever owns the overall deadline
    decides whether that deadline has passed.
    """
    doc = dict(document)
    outcome = Outcome(doc["outcome"])
    status = doc.get("status")
    problem = doc.get("problem") or {}
    if outcome is Outcome.SUCCEEDED or (outcome is Outcome.PARTIALLY_SUCCEEDED and allow_partial):
        return Verdict(PokeState.DONE, doc, status)
    if outcome in (Outcome.FAILED, Outcome.PARTIALLY_SUCCEEDED):
        return Verdict(PokeState.FAILED, doc, status, _failure_reason(doc, allow_partial))
    message = f"{problem.get('type', 'error')}: {problem.get('message', '')}".rstrip(": ")
    if outcome is Outcome.ERROR:
        retryable = problem.get("type") in _RETRYABLE_PROBLEMS
        return Verdict(PokeState.FAILED, doc, status, message, retryable=retryable)
    return Verdict(PokeState.WAITING, doc, status, message)


class JobRunPoker:
    """Answers "is the run done?" with one bounded look; remembers only what it last saw.

    ``budget`` (seconds) bounds each poke: throttles and transient faults are
    retried with the policy's backoff only while it lasts, and a poke whose
    budget ran out before any answer came back says WAITING, so the next poke
    tries again. Pass the scheduler's poke interval. The client is built once
    (or taken as given, or made by ``connect`` on the first poke: a PollerError
    it raises fails that poke as bad IDs do) and reused by every poke.

    The only memory between pokes is what to log (``wait_started`` on the
    first poke only, ``status_changed`` only when a poke sees a status other
    than the previous poke's) and when the wait began: a run the domain does
    not have fails the poke once ``not_found_grace`` has passed since the
    first poke, as it ends one long wait, however short each poke's budget.
    ``resumed=True`` says an earlier poke of the same wait ran in another
    process (a rescheduled Airflow task), whose status is unknown: this
    poker then logs no ``wait_started``, and no change until it has seen a
    status itself; pass ``started`` (epoch seconds) when that first poke was.
    """

    def __init__(
        self,
        domain_id: str,
        job_run_id: str,
        *,
        budget: float = 60.0,
        allow_partial: bool = False,
        policy: PollPolicy | None = None,
        client: JobRunClient | ClientSettings | None = None,
        connect: Callable[[], JobRunClient] | None = None,
        resumed: bool = False,
        started: float | None = None,
        seams: Seams | None = None,
    ) -> None:
        self.domain_id = domain_id
        self.job_run_id = job_run_id
        self.allow_partial = allow_partial
        self.policy = (policy if policy is not None else PollPolicy()).with_timeout(max(budget, 0))
        self._client = client
        self._connect = connect
        self._resumed = resumed
        self._started = started
        self._last: JobRun | None = None
        self._seams = seams or REAL

    @property
    def client(self) -> JobRunClient:
        """The client every poke uses, built on first use."""
        if self._client is None and self._connect is not None:
            self._client = self._connect()
        self._client = resolve_client(self._client)
        return self._client

    def poke(self) -> Verdict:
        """Look at the run once (retrying throttles within the budget) and say what it means."""
        try:
            validate_ids(self.domain_id, self.job_run_id)
            client = self.client
        except PollerError as error:  # bad IDs, no region, a profile that does not exist
            return judge(
                WaitResult.from_error(self.domain_id, self.job_run_id, error).to_dict(),
                allow_partial=self.allow_partial,
            )
        # A poke's read joins the process's engine (its clock) unless its time is a test's.
        seams = engine_seams(self._seams) if joins_engine(self._seams) else self._seams
        session = WaitSession(
            self.domain_id,
            self.job_run_id,
            self._policy_now(),
            seams=seams,
            resumed=self._resumed,
            last_seen=self._last,
        )
        # Every later poke of this poker goes on with the same wait.
        self._resumed = True
        step = read_once(session, client, seams=self._seams)
        if session.state.last is not None:
            self._last = session.state.last
        if step.outcome in _FINAL and not self._budget_spent(session, step):
            return judge(session.result(step).to_dict(), allow_partial=self.allow_partial)
        # Still running, or the budget ran out on throttles or faults: not an
        # end, only "ask again later"; the result document waits for the end.
        session.close()  # its span, if traced, ends with this poke
        last: JobRun | None = session.state.last
        reason = str(step.error) if step.error is not None else None
        return Verdict(PokeState.WAITING, status=str(last.status) if last else None, reason=reason)

    def _policy_now(self) -> PollPolicy:
        # Each poke is a new session: its not-found grace is what is left of
        # the wait's, or a run that never appears would be "not seen yet"
        # for ever to pokes shorter than the grace.
        now = wall_of(self._seams)()
        if self._started is None:
            self._started = now
        left = self.policy.not_found_grace - max(now - self._started, 0.0)
        return replace(self.policy, not_found_grace=max(left, 0.0))

    def _budget_spent(self, session: WaitSession, step: Step) -> bool:
        # The core ends a wait whose deadline passes before any status was
        # read as "could not read the status". A poke's deadline is only its
        # budget, not the wait's: the next poke tries again, as after a
        # throttled poke that did read one. Faults that reach max_errors
        # before the budget is spent still fail the poke.
        timeout = self.policy.timeout
        return (
            isinstance(step.error, ServiceUnavailableError)
            and timeout is not None
            and session.elapsed >= timeout
        )
