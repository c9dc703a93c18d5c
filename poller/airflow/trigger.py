"""DataZoneJobRunTrigger: the deferred half of the sensor, polling with poller's async core."""

from __future__ import annotations

import asyncio
import importlib
import threading
import time
from collections.abc import AsyncIterator, Mapping
from concurrent.futures import Future
from dataclasses import asdict
from typing import Any

from airflow.triggers.base import BaseTrigger, TriggerEvent

from poller import _home
from poller._model import JobRun, Outcome, WaitResult
from poller._policy import PollPolicy
from poller.airflow._client import DEFAULT_CONN_ID, ClientSpec, aclient_for
from poller.errors import InvalidRequestError, PollerError

# The triggerer imports this module on its event loop thread, so it imports
# nothing that loads botocore (~0.1 s, more on a busy machine: enough for
# "async thread was blocked"); `_load_core` does, in a worker thread.
_CORE = ("poller._async", "poller.poke")
#: The Airflow setting (``[poller] max_rps``, or ``AIRFLOW__POLLER__MAX_RPS``) that sets a
#: triggerer's request budget: GetJobRun and ListJobRuns calls a second for every trigger
#: of the process on one account. Unset: poller's default (10/s).
MAX_RPS_SETTING = ("poller", "max_rps")


# Where the process keeps what `_load_core` read (`poller.testing.reset` forgets it).
_PREPARED = "airflow.triggerer_max_rps"


def _load_core() -> float | None:
    """Import the core (botocore with it) and read the triggerer's budget; in a worker thread."""
    for name in _CORE:
        importlib.import_module(name)
    from airflow.configuration import conf  # noqa: PLC0415

    section, key = MAX_RPS_SETTING
    value = conf.get(section, key, fallback=None)
    if value is None or not str(value).strip():
        return None
    try:
        return float(value)
    except ValueError:
        raise InvalidRequestError(
            f"[{section}] {key} (AIRFLOW__{section.upper()}__{key.upper()}) must be a number "
            f"of calls a second, not {value!r}"
        ) from None


__all__ = [
    "EVENT_STATUSES",
    "MAX_RPS_SETTING",
    "DataZoneJobRunTrigger",
    "event_payload",
    "policy_kwargs",
    "triggerer_max_rps",
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


async def triggerer_max_rps() -> float | None:
    """The triggerer's budget (`[poller] max_rps`; None: unset), the core loaded: read once
    per process, in a worker thread; a trigger and an asset watcher both await it.

    A thousand triggers starting together await the same one hop, instead of
    queueing a thousand on the loop's default executor.
    """
    future: Future[float | None] = _home.get(_PREPARED, _prepare)
    return await asyncio.wrap_future(future)


def _prepare() -> Future[float | None]:
    future: Future[float | None] = Future()

    def run() -> None:
        try:
            future.set_result(_load_core())
        except BaseException as error:  # handed to every trigger that awaits it
            future.set_exception(error)

    threading.Thread(target=run, name="poller-airflow-prepare", daemon=True).start()
    return future


class DataZoneJobRunTrigger(BaseTrigger):
    """Waits in the triggerer for a DataZone job run to finish; fires exactly one event.

    Every argument is a primitive, so ``serialize()`` round-trips through the
    metadata database. ``deadline`` is wall-clock epoch seconds (the sensor's
    start plus its ``timeout``, so the deadline means the same in every mode),
    or None for none; ``policy`` holds ``PollPolicy`` fields bar ``timeout``.
    The event is never an exception: a wait that cannot tell how the run ended
    fires an ``error`` event carrying the last status seen and the reason.
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
            },
        )

    async def run(self) -> AsyncIterator[TriggerEvent]:
        """Wait with the async core, then fire the one event."""
        yield TriggerEvent(await self.wait())

    async def wait(self) -> dict[str, Any]:
        """The event payload; task cancellation passes through, nothing else is raised."""
        try:
            result = await self._wait(await triggerer_max_rps())
        except PollerError as error:  # bad IDs or settings, a client that cannot be built
            result = WaitResult.from_error(self.domain_id, self.job_run_id, error)
        except Exception as error:
            # Whatever went wrong, the sensor is told why rather than the
            # triggerer logging a traceback the task never sees.
            self.log.exception("waiting for the DataZone job run failed")
            unexpected = PollerError(f"{type(error).__name__}: {error}")
            result = WaitResult.from_error(self.domain_id, self.job_run_id, unexpected)
        payload = event_payload(result.to_dict(), allow_partial=self.allow_partial)
        self.log.info("DataZone job run wait ended: %s", payload["message"])
        return payload

    async def _wait(self, max_rps: float | None) -> WaitResult:
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
        budget_for(client, max_rps)
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
