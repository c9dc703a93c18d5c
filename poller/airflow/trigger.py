"""DataZoneJobRunTrigger: the deferred half of the sensor, polling with poller's async core."""

from __future__ import annotations

import asyncio
import importlib
import math
import threading
import time
from collections.abc import AsyncIterator, Mapping
from concurrent.futures import Future
from dataclasses import asdict, dataclass
from typing import TYPE_CHECKING, Any

from airflow.triggers.base import (
    BaseTrigger,
    TaskFailedEvent,
    TaskSkippedEvent,
    TaskSuccessEvent,
    TriggerEvent,
)

from poller import _home
from poller._model import JobRun, Outcome, WaitResult
from poller._policy import PollPolicy
from poller.airflow._client import DEFAULT_CONN_ID, ClientSpec, aclient_for
from poller.errors import InvalidRequestError, PollerError

if TYPE_CHECKING:
    from pydantic import JsonValue

    from poller.poke import Verdict

# The triggerer imports this module on its event loop thread, so it imports
# nothing that loads botocore (~0.1 s, more on a busy machine: enough for
# "async thread was blocked"); `_load_core` does, in a worker thread.
_CORE = ("poller._async", "poller.poke")
#: The Airflow setting (``[poller] max_rps``, or ``AIRFLOW__POLLER__MAX_RPS``) that sets a
#: triggerer's request budget: GetJobRun and ListJobRuns calls a second for every trigger
#: of the process on one account. Unset: poller's default (10/s).
MAX_RPS_SETTING = ("poller", "max_rps")
#: The share of calls other clients of the account get throttled (``[poller]
#: others_throttled``, 0 to 0.5): that many throttles keep the budget's rate. Unset: 0.
OTHERS_THROTTLED_SETTING = ("poller", "others_throttled")
#: Each budget setting: what its value is (its range is the CLI's `[wait]` key's).
_BUDGET_SETTINGS = {
    MAX_RPS_SETTING: "a number of calls a second",
    OTHERS_THROTTLED_SETTING: "a share between 0 and 0.5",
}


# Where the process keeps what `_load_core` read (`poller.testing.reset` forgets it).


def _load_core() -> dict[str, float]:
    """Import the core (botocore with it) and read the triggerer's budget settings (those
    set, as `budget_for`'s keyword arguments); in a worker thread."""
    for name in _CORE:
        importlib.import_module(name)
    from airflow.configuration import conf  # noqa: PLC0415

    from poller._config import RANGES  # noqa: PLC0415

    settings = {}
    for (section, key), what in _BUDGET_SETTINGS.items():
        low, high, _ = RANGES["wait", key]
        value = conf.get(section, key, fallback=None)
        if value is None or not str(value).strip():
            continue
        try:
            number = float(value)
        except ValueError:
            number = math.nan
        if not low <= number <= high:
            raise InvalidRequestError(
                f"[{section}] {key} (AIRFLOW__{section.upper()}__{key.upper()}) must be {what}, "
                f"not {value!r}"
            )
        settings[key] = number
    return settings


__all__ = [
    "EVENT_STATUSES",
    "MAX_RPS_SETTING",
    "DataZoneJobRunTrigger",
    "Ending",
    "ending",
    "event_payload",
    "failure_message",
    "policy_kwargs",
    "timeout_message",
    "triggerer_budget",
]

# success: the run succeeded; failure: it ended without succeeding; error:
# the trigger could not tell how it ended (deadline, denied, not found, ...).
EVENT_STATUSES = ("success", "failure", "error")


def policy_kwargs(policy: PollPolicy) -> dict[str, Any]:
    """A policy as the primitives a trigger can be serialized with; the deadline travels apart."""
    fields = asdict(policy)
    del fields["timeout"]
    return fields


def event_payload(document: Mapping[str, Any], *, allow_partial: bool) -> dict[str, Any]:
    """The one event a trigger fires: verdict, last status, a message and the result document."""
    from poller.poke import PokeState, judge  # noqa: PLC0415  (see _load_core)

    verdict = judge(document, allow_partial=allow_partial)
    if verdict.state is PokeState.DONE:
        status = "success"
        message = (
            f"job run {document['job_run_id']} in domain {document['domain_id']} "
            f"ended {document['status']}"
        )
    else:
        ended = document["outcome"] in (Outcome.FAILED, Outcome.PARTIALLY_SUCCEEDED)
        status = "failure" if ended else "error"
        message = verdict.reason or str(document["outcome"])
    return {
        "status": status,
        "job_run_status": verdict.status,
        "message": message,
        "result": dict(document),
    }


@dataclass(frozen=True, slots=True)
class Ending:
    """How a wait's result document ends the task, wherever it ends (worker or triggerer).

    ``state``: ``success``; ``failed`` (no retry can help: a failed run, an
    error such as denied access); ``retry`` (transient faults that did not
    clear: a later try may get through); ``timeout`` (the sensor's deadline
    passed before the run was seen to end). ``message`` is the one line a
    person reads, the same on either side.
    """

    state: str
    document: dict[str, Any]
    message: str


def failure_message(verdict: Verdict, aws_conn_id: str | None) -> str:
    """Why a failed verdict fails the task; denied access says where the credentials came from."""
    reason = verdict.reason or "the job run cannot be waited on"
    problem = (verdict.document or {}).get("problem") or {}
    # Connection problems found building the client already say where from.
    named = ("Airflow connection", "default credential chain")
    if problem.get("type") == "AccessDeniedError" and not any(n in reason for n in named):
        source = (
            f"the Airflow connection {aws_conn_id!r}"
            if aws_conn_id
            else "boto3's default credential chain"
        )
        reason += f" (the credentials come from {source}: check them, and their IAM policy)"
    return reason


def timeout_message(
    job_run_id: str, timeout: float | None, waited: object, reason: str | None
) -> str:
    """The sensor's timeout, said the same way by the worker and by the triggerer."""
    text = f"Sensor has timed out: DataZone job run {job_run_id} did not finish"
    if timeout is not None:
        text += f" within the timeout of {timeout} s"
    if isinstance(waited, int | float):
        text += f" (waited {waited:.1f} s)"
    return f"{text}: {reason}" if reason else text


def ending(
    document: Mapping[str, Any],
    *,
    allow_partial: bool,
    timed_out: bool,
    timeout: float | None,
    aws_conn_id: str | None,
) -> Ending:
    """The one rule by which a deferred wait's document ends the task.

    ``timed_out``: the sensor's deadline has passed. A wait that read no
    status before it reports that it could not read one, as a poke would;
    after the deadline that is the timeout, as in poke mode.
    """
    from poller.poke import PokeState, judge  # noqa: PLC0415  (see _load_core)

    doc = dict(document)
    verdict = judge(doc, allow_partial=allow_partial)
    if verdict.state is PokeState.WAITING or (verdict.retryable and timed_out):
        message = timeout_message(doc["job_run_id"], timeout, doc.get("waited_s"), verdict.reason)
        return Ending("timeout", doc, message)
    if verdict.state is PokeState.DONE:
        return Ending("success", doc, f"DataZone job run {doc['job_run_id']} ended {doc['status']}")
    if verdict.retryable:
        return Ending("retry", doc, verdict.reason or "DataZone did not answer")
    return Ending("failed", doc, failure_message(verdict, aws_conn_id))


async def triggerer_budget() -> dict[str, float]:
    """The triggerer's budget settings (`[poller] max_rps` and ``others_throttled``, those
    set), the core loaded: read once per process, in a worker thread; a trigger and an asset
    watcher both await it, and give it to `budget_for`.

    A thousand triggers starting together await the same one hop, instead of
    queueing a thousand on the loop's default executor.
    """
    future = _PREPARED.get()
    return await asyncio.wrap_future(future)


def _prepare() -> Future[dict[str, float]]:
    future: Future[dict[str, float]] = Future()

    def run() -> None:
        try:
            future.set_result(_load_core())
        except BaseException as error:  # handed to every trigger that awaits it
            future.set_exception(error)

    threading.Thread(target=run, name="poller-airflow-prepare", daemon=True).start()
    return future


_PREPARED = _home.Slot("airflow.triggerer_budget", _prepare)


class DataZoneJobRunTrigger(BaseTrigger):
    """Waits in the triggerer for a DataZone job run to finish; fires exactly one event.

    Every argument is a primitive, so ``serialize()`` round-trips through the
    metadata database. ``deadline`` is wall-clock epoch seconds (the sensor's
    start plus its ``timeout``, so the deadline means the same in every mode),
    or None: then ``timeout`` seconds from the trigger's start, as when the
    task starts in the triggerer (``start_from_trigger``) and no worker saw
    it start; ``timeout`` alone also names the timeout in its message.
    ``policy`` holds ``PollPolicy`` fields bar ``timeout``.
    The event is never an exception: a wait that cannot tell how the run ended
    fires an ``error`` event carrying the last status seen and the reason.

    ``end_from_trigger=True`` ends the task here instead of resuming it on a
    worker: ``TaskSuccessEvent`` or ``TaskFailedEvent`` (``TaskSkippedEvent``
    with ``soft_fail``, where the sensor would skip) with the result document
    as XCom ``return_value``, by the rule the sensor applies (`ending`), its
    message in the task's log.
    """

    def __init__(
        self,
        domain_id: str,
        job_run_id: str,
        *,
        aws_conn_id: str | None = DEFAULT_CONN_ID,
        region_name: str | None = None,
        verify: bool | str | None = None,
        botocore_config: Mapping[str, Any] | None = None,
        allow_partial: bool = False,
        deadline: float | None = None,
        policy: Mapping[str, Any] | None = None,
        timeout: float | None = None,
        end_from_trigger: bool = False,
        soft_fail: bool = False,
    ) -> None:
        super().__init__()  # type: ignore[no-untyped-call]  # Airflow leaves it untyped
        self.domain_id = domain_id
        self.job_run_id = job_run_id
        self.aws_conn_id = aws_conn_id
        self.region_name = region_name
        self.verify = verify
        self.botocore_config = dict(botocore_config) if botocore_config is not None else None
        self.allow_partial = allow_partial
        self.deadline = deadline
        self.policy = dict(policy) if policy is not None else policy_kwargs(PollPolicy())
        self.timeout = timeout
        self.end_from_trigger = end_from_trigger
        self.soft_fail = soft_fail

    def serialize(self) -> tuple[str, dict[str, Any]]:
        """The class path and the primitive keyword arguments that rebuild this trigger."""
        return (
            f"{type(self).__module__}.{type(self).__qualname__}",
            {
                "domain_id": self.domain_id,
                "job_run_id": self.job_run_id,
                "aws_conn_id": self.aws_conn_id,
                "region_name": self.region_name,
                "verify": self.verify,
                "botocore_config": self.botocore_config,
                "allow_partial": self.allow_partial,
                "deadline": self.deadline,
                "policy": dict(self.policy),
                "timeout": self.timeout,
                "end_from_trigger": self.end_from_trigger,
                "soft_fail": self.soft_fail,
            },
        )

    async def run(self) -> AsyncIterator[TriggerEvent]:
        """Wait with the async core, then fire the one event: to resume the task, or to end it."""
        payload = await self.wait()
        if not self.end_from_trigger:
            yield TriggerEvent(payload)
            return
        deadline = payload["deadline"]
        end = ending(
            payload["result"],
            allow_partial=self.allow_partial,
            timed_out=deadline is not None and time.time() >= deadline,
            timeout=self.timeout,
            aws_conn_id=self.aws_conn_id,
        )
        xcoms: dict[str, JsonValue] = {"return_value": end.document}
        if end.state == "success":
            self.log.info("%s", end.message)
            yield TaskSuccessEvent(xcoms=xcoms)
        elif self.soft_fail and end.state != "retry":
            self.log.warning("Skipping due to soft_fail: %s", end.message)
            yield TaskSkippedEvent(xcoms=xcoms)
        else:
            # The line a worker would have raised, in the task's log.
            self.log.error("%s", end.message)
            yield TaskFailedEvent(xcoms=xcoms)

    async def wait(self) -> dict[str, Any]:
        """The event payload; task cancellation passes through, nothing else is raised."""
        if self.deadline is None and self.timeout is not None:
            # Started in the triggerer: the clock starts with the trigger.
            self.deadline = time.time() + self.timeout
        try:
            result = await self._wait(await triggerer_budget())
        except PollerError as error:  # bad IDs or settings, a client that cannot be built
            result = WaitResult.from_error(self.domain_id, self.job_run_id, error)
        except Exception as error:
            # Whatever went wrong, the sensor is told why rather than the
            # triggerer logging a traceback the task never sees.
            self.log.exception("waiting for the DataZone job run failed")
            unexpected = PollerError(f"{type(error).__name__}: {error}")
            result = WaitResult.from_error(self.domain_id, self.job_run_id, unexpected)
        payload = event_payload(result.to_dict(), allow_partial=self.allow_partial)
        # The sensor resumed by the event judges the timeout by this deadline.
        payload["deadline"] = self.deadline
        self.log.info("DataZone job run wait ended: %s", payload["message"])
        return payload

    async def _wait(self, budget: dict[str, float]) -> WaitResult:
        from poller._async import async_wait_result  # noqa: PLC0415  (see _load_core)
        from poller._limiter import budget_for  # noqa: PLC0415

        timeout = None if self.deadline is None else max(self.deadline - time.time(), 0.0)
        policy = PollPolicy(**{**self.policy, "timeout": timeout})
        # One client per connection settings per triggerer, built (connection
        # look-up included) in a worker thread, never on the event loop.
        spec = ClientSpec(self.aws_conn_id, self.region_name, self.verify, self.botocore_config)
        client = await aclient_for(spec)
        # Every trigger of the triggerer joins poller's engine: one budget per
        # account for all of them, set by `[poller] max_rps` (docs/airflow.md).
        budget_for(client, **budget)
        return await async_wait_result(
            self.domain_id,
            self.job_run_id,
            policy=policy,
            client=client,
            on_change=self._changed,
        )

    def _changed(self, run: JobRun) -> None:
        self.log.info(
            "DataZone job run %s in domain %s is %s", run.id, run.domain_id, str(run.status)
        )
