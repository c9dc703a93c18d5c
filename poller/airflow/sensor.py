"""DataZoneJobRunSensor: wait for a DataZone job run in poke, reschedule or deferrable mode."""

from __future__ import annotations

import random
import re
import time
import warnings
from collections.abc import Mapping, Sequence
from dataclasses import replace
from datetime import timedelta
from typing import TYPE_CHECKING, Any, NoReturn

import airflow
from airflow.sdk import BaseSensorOperator, PokeReturnValue, conf
from airflow.sdk.exceptions import (
    AirflowException,
    AirflowFailException,
    AirflowSensorTimeout,
    AirflowSkipException,
)
from airflow.triggers.base import StartTriggerArgs

from poller._model import Outcome, WaitResult
from poller._policy import PollPolicy
from poller.airflow._client import DEFAULT_CONN_ID, ClientSpec, client_for
from poller.airflow.trigger import (
    EVENT_STATUSES,
    DataZoneJobRunTrigger,
    ending,
    failure_message,
    policy_kwargs,
)
from poller.errors import ServiceUnavailableError
from poller.poke import JobRunPoker, PokeState, Verdict

if TYPE_CHECKING:
    from airflow.sdk import Context

__all__ = ["DataZoneJobRunSensor"]

# The keys of the result document, to check an event against.
_DOCUMENT_KEYS = frozenset(WaitResult("dzd_x", "x", Outcome.ERROR).to_dict())
# The shortest cadence a deferred wait is given, whatever poke_interval says.
_MIN_INTERVAL = 0.01
# A poke or reschedule sensor's first poke waits a random part of its
# poke_interval, up to this: sensors that start in the same second, each in
# its own process and outside any shared budget, then do not all call
# DataZone in that second, and keep their spread in the pokes that follow.
FIRST_POKE_SPREAD_S = 10.0
# Airflow's own deferral timeout is the sensor's timeout plus this: a backstop
# for a triggerer that is down, which never races the trigger's own deadline.
BACKSTOP_GRACE_S = 60.0
_TRIGGER_PATH = f"{DataZoneJobRunTrigger.__module__}.{DataZoneJobRunTrigger.__qualname__}"
# Since Airflow 3.3 the triggerer renders the templated fields of a task that
# starts there; before, a template would reach the trigger unrendered.
TRIGGERER_RENDERS_TEMPLATES = tuple(map(int, re.findall(r"\d+", airflow.__version__)[:2])) >= (3, 3)
_JINJA = ("{{", "{%", "{#")


class DataZoneJobRunSensor(BaseSensorOperator):
    """Wait for an Amazon DataZone job run to finish; its XCom is poller's result document.

    :param domain_id: the domain, ``dzd_...`` (templated).
    :param job_run_id: the job run (templated).
    :param aws_conn_id: the Airflow AWS connection (templated), read by
        apache-airflow-providers-amazon as every AWS operator reads it; None
        uses boto3's default credential chain. A missing ``aws_default``
        falls back to that chain, as in the provider; any other missing
        connection fails the task.
    :param region_name: AWS region (templated); overrides the connection's.
    :param verify: TLS verification (templated): False, or a CA bundle path;
        None takes the connection's.
    :param botocore_config: botocore ``Config`` arguments, as a dict; its
        timeouts and pool size are used, but botocore's retries stay off
        (poller retries, with its own backoff).
    :param allow_partial: treat PARTIALLY_SUCCEEDED as success.
    :param deferrable: wait in the triggerer from the start (the worker makes
        no call); defaults to ``[operators] default_deferrable``.
    :param policy: poller's retry and cadence settings; ``timeout`` in it is
        ignored (the sensor's ``timeout`` is the deadline in every mode).
    :param start_from_trigger: start the task in the triggerer, no worker run
        to defer it (implies ``deferrable``); the triggerer renders the
        templated fields (Airflow >= 3.3; on older Airflow a templated sensor
        warns once and starts on a worker).
    :param end_from_trigger: end the task in the triggerer, no worker run to
        resume it (implies ``deferrable``): success or failure, with the
        result document as XCom, by the rules below; ``execute_complete``,
        on-worker listeners and worker-side work are skipped (docs/airflow.md).

    ``poke_interval``, ``timeout``, ``mode`` and ``soft_fail`` are Airflow's.
    ``poke_interval`` is also the longest a poke spends retrying throttles and
    transient faults, and the longest a deferred wait goes without looking.
    A run that ends FAILED, ABORTED, TIMED_OUT or CANCELED (or
    PARTIALLY_SUCCEEDED without ``allow_partial``) fails the task with no
    retry, naming the run's error and its lineage statistics; transient faults
    that do not clear fail it with retries allowed; ``soft_fail`` skips the
    task in the same situations whatever the mode: a failed run, an error no
    retry can fix, and the timeout. Whenever the sensor ends with a result
    document, failed or not, it is the task's XCom ``return_value``.
    """

    # The provider's aws_template_fields("domain_id", "job_run_id").
    template_fields: Sequence[str] = (
        "aws_conn_id",
        "domain_id",
        "job_run_id",
        "region_name",
        "verify",
    )
    ui_color = "#e6f1f2"

    def __init__(
        self,
        *,
        domain_id: str,
        job_run_id: str,
        aws_conn_id: str | None = DEFAULT_CONN_ID,
        region_name: str | None = None,
        verify: bool | str | None = None,
        botocore_config: dict[str, Any] | None = None,
        allow_partial: bool = False,
        deferrable: bool | None = None,
        policy: PollPolicy | None = None,
        start_from_trigger: bool = False,
        end_from_trigger: bool = False,
        **kwargs: Any,
    ) -> None:
        super().__init__(**kwargs)
        self.domain_id = domain_id
        self.job_run_id = job_run_id
        self.aws_conn_id = aws_conn_id
        self.region_name = region_name
        self.verify = verify
        self.botocore_config = botocore_config
        self.allow_partial = allow_partial
        in_triggerer = start_from_trigger or end_from_trigger
        if in_triggerer and deferrable is False:
            raise ValueError(
                f"DataZoneJobRunSensor {self.task_id!r}: start_from_trigger and end_from_trigger "
                "wait in the triggerer, so they cannot go with deferrable=False"
            )
        # Read when the sensor is built, not when this module is imported, so
        # the setting in force for the DAG is the one used.
        self.deferrable = (
            in_triggerer or conf.getboolean("operators", "default_deferrable", fallback=False)
            if deferrable is None
            else deferrable
        )
        self.policy = policy if policy is not None else PollPolicy()
        self.end_from_trigger = end_from_trigger
        self.start_from_trigger = start_from_trigger and self._triggerer_can_start()
        if self.start_from_trigger:
            # The scheduler hands the task straight to the triggerer with
            # these; the triggerer renders the templated ones in place.
            self.start_trigger_args = StartTriggerArgs(
                trigger_cls=_TRIGGER_PATH,
                trigger_kwargs=self._trigger_kwargs(deadline=None),
                next_method="execute_complete",
                next_kwargs=None,
                timeout=self._backstop(),
            )
        self._poker: JobRunPoker | None = None

    def _triggerer_can_start(self) -> bool:
        templated = [
            name
            for name in self.template_fields
            if isinstance(value := getattr(self, name), str) and any(j in value for j in _JINJA)
        ]
        if templated and not TRIGGERER_RENDERS_TEMPLATES:
            warnings.warn(
                f"DataZoneJobRunSensor {self.task_id!r}: start_from_trigger with templated "
                f"{', '.join(templated)} needs Airflow >= 3.3 (this is {airflow.__version__}); "
                "the task starts on a worker and defers from there",
                UserWarning,
                stacklevel=3,
            )
            return False
        return True

    def _trigger_kwargs(self, *, deadline: float | None) -> dict[str, Any]:
        """The trigger's keyword arguments: the same whether a worker or the scheduler defers."""
        return {
            "domain_id": self.domain_id,
            "job_run_id": self.job_run_id,
            "aws_conn_id": self.aws_conn_id,
            "region_name": self.region_name,
            "verify": self.verify,
            "botocore_config": self.botocore_config,
            "allow_partial": self.allow_partial,
            "deadline": deadline,
            "policy": policy_kwargs(self._deferred_policy()),
            "timeout": self.timeout,
            "end_from_trigger": self.end_from_trigger,
            "soft_fail": self.soft_fail,
        }

    def _backstop(self) -> timedelta:
        return timedelta(seconds=self.timeout + BACKSTOP_GRACE_S)

    # -- poke and reschedule mode -------------------------------------------

    def poke(self, context: Context) -> PokeReturnValue:
        """Look at the run once; done with the result document, not yet, or raise why not."""
        delay = self.first_poke_delay(context)
        if delay > 0:
            self.log.info("First look at DataZone job run %s in %.1f s", self.job_run_id, delay)
            time.sleep(delay)
        return self._conclude(context, self._get_poker(context).poke())

    def first_poke_delay(self, context: Context) -> float:
        """Seconds the first poke of a try waits, at random; 0 for every later poke."""
        if self._poker is not None or context.get("task_reschedule_count", 0) > 0:
            return 0.0
        return random.uniform(0.0, min(self.poke_interval, FIRST_POKE_SPREAD_S))

    def _get_poker(self, context: Context) -> JobRunPoker:
        # Holds the client and the last status seen (for the logs) between
        # pokes; the verdict is built afresh each time.
        if self._poker is None:
            # The connection settings, as templated, pick the process's shared client.
            spec = ClientSpec(self.aws_conn_id, self.region_name, self.verify, self.botocore_config)
            rescheduled = self.reschedule and context.get("task_reschedule_count", 0) > 0
            self._poker = JobRunPoker(
                self.domain_id,
                self.job_run_id,
                budget=min(self.poke_interval, self.timeout),
                allow_partial=self.allow_partial,
                policy=self.policy,
                connect=lambda: client_for(spec),
                # A rescheduled poke is a new sensor in a new process: an
                # earlier one of this try already logged the start, and the
                # wait (its not-found grace) began with it.
                resumed=rescheduled,
                started=_first_poke(context) if rescheduled else None,
            )
        return self._poker

    def _conclude(self, context: Context, verdict: Verdict) -> PokeReturnValue:
        if verdict.state is PokeState.DONE:
            self.log.info("DataZone job run %s ended %s", self.job_run_id, verdict.status)
            return PokeReturnValue(is_done=True, xcom_value=verdict.document)
        if verdict.state is PokeState.FAILED:
            # Downstream tasks and callbacks read why from XCom, not from a
            # traceback: the document goes where a success's would.
            self._push(context, verdict.document)
            if verdict.retryable:
                # Not an Airflow exception: the task's retries may get through.
                raise ServiceUnavailableError(verdict.reason or "DataZone did not answer")
            raise AirflowFailException(failure_message(verdict, self.aws_conn_id))
        self.log.info(
            "DataZone job run %s is %s%s",
            self.job_run_id,
            verdict.status or "not seen yet",
            f" ({verdict.reason})" if verdict.reason else "",
        )
        return PokeReturnValue(is_done=False)

    @staticmethod
    def _push(context: Context, document: Mapping[str, Any] | None) -> None:
        ti = context.get("ti")
        if ti is not None and document is not None:
            ti.xcom_push(key="return_value", value=dict(document))

    # -- deferrable mode ------------------------------------------------------

    def execute(self, context: Context) -> Any:
        """Poke or reschedule as Airflow does; deferrable: hand the whole wait to the trigger.

        The worker makes no call: a run's first look books on the triggerer's
        budget with every other trigger's (and may come from its job's
        listing), so many sensors starting together do not each spend a call
        of their own outside it. A run already finished costs one deferral.
        """
        if self.deferrable:
            deadline = time.time() + self.timeout
            self.defer(
                trigger=DataZoneJobRunTrigger(**self._trigger_kwargs(deadline=deadline)),
                method_name="execute_complete",
                kwargs={"deadline": deadline},
                # Airflow's own deadline is a backstop for a triggerer that is
                # down: the trigger's ends first and reports the last status.
                timeout=self._backstop(),
            )
        return super().execute(context)

    def _deferred_policy(self) -> PollPolicy:
        cap = max(self.poke_interval, _MIN_INTERVAL)
        interval = min(self.policy.interval, cap)
        max_interval = max(interval, min(self.policy.max_interval, cap))
        return replace(self.policy, interval=interval, max_interval=max_interval)

    def execute_complete(
        self,
        context: Context,
        event: Mapping[str, Any] | None = None,
        deadline: float | None = None,
    ) -> Any:
        """Check the trigger's event; return the result document, as poke mode does, or raise."""
        document = self._validated(event)
        if deadline is None and isinstance(event, Mapping):
            # Started in the triggerer: the trigger's clock is the deadline.
            deadline = event.get("deadline")
        end = ending(
            document,
            allow_partial=self.allow_partial,
            timed_out=deadline is not None and time.time() >= deadline,
            timeout=self.timeout,
            aws_conn_id=self.aws_conn_id,
        )
        try:
            if end.state == "success":
                self.log.info("%s", end.message)
                return end.document
            # Downstream tasks and callbacks read why from XCom, as in poke mode.
            self._push(context, end.document)
            if end.state == "timeout":
                raise AirflowSensorTimeout(end.message)
            if end.state == "retry":
                # Not an Airflow exception: the task's retries may get through.
                raise ServiceUnavailableError(end.message)
            raise AirflowFailException(end.message)
        except Exception as error:
            self._end(error)

    def _validated(self, event: Mapping[str, Any] | None) -> dict[str, Any]:
        problem = None
        document = event.get("result") if isinstance(event, Mapping) else None
        if not isinstance(event, Mapping) or not isinstance(document, Mapping):
            problem = "it is not a mapping with a result document"
        elif event.get("status") not in EVENT_STATUSES:
            problem = f"unknown status {event.get('status')!r}"
        elif set(document) != _DOCUMENT_KEYS:
            problem = f"the result document has keys {sorted(document)}"
        elif (document["domain_id"], document["job_run_id"]) != (self.domain_id, self.job_run_id):
            problem = f"it is about {document['domain_id']}/{document['job_run_id']}"
        elif document["outcome"] not in set(Outcome):
            problem = f"unknown outcome {document['outcome']!r}"
        if problem is not None:
            raise AirflowException(f"invalid event from DataZoneJobRunTrigger: {problem}")
        assert isinstance(document, Mapping)
        return dict(document)

    def _end(self, error: BaseException) -> NoReturn:
        # Poke mode's rules (BaseSensorOperator.execute), applied where the
        # deferrable path leaves Airflow's loop, so soft_fail skips the same
        # situations in every mode.
        if isinstance(error, AirflowSkipException):
            raise error
        if self.soft_fail and isinstance(error, AirflowFailException | AirflowSensorTimeout):
            raise AirflowSkipException(f"Skipping due to soft_fail: {error}") from error
        if getattr(self, "never_fail", False) and isinstance(error, Exception):
            raise AirflowSkipException(f"Skipping due to never_fail: {error}") from error
        raise error


def _first_poke(context: Context) -> float | None:
    """When this try's first poke began, from Airflow's reschedule records (epoch seconds)."""
    ti = context.get("ti")
    first = ti.get_first_reschedule_date(context) if ti is not None else None
    return first.timestamp() if first is not None else None
