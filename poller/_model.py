"""Values: run statuses, a parsed GetJobRun response, lineage statistics, the result of a wait."""

from __future__ import annotations

import enum
from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

__all__ = [
    "AccessDeniedError",
    "InvalidRequestError",
    "JobRun",
    "JobRunFailedError",
    "JobRunNotFoundError",
    "JobRunStatus",
    "LineageStats",
    "Outcome",
    "PollerError",
    "Problem",
    "ServiceUnavailableError",
    "WaitCancelledError",
    "WaitResult",
    "WaitTimeoutError",
    "carrying_result",
    "describe_lineage",
]


# The errors live with the values they carry (the last JobRun, the WaitResult), so the
# two never import each other; `poller.errors` is their public home and their name.


class PollerError(Exception):
    """Base of every error poller raises.

    ``job_run`` is the last JobRun seen before the error, when there was one;
    ``result`` is the result of the wait that ended with this error, so callers
    can still report polls and throttles: a `WaitResult` built with an error
    links itself here, the one place the two are joined.
    """

    def __init__(
        self, message: str, *, job_run: JobRun | None = None, result: WaitResult | None = None
    ) -> None:
        super().__init__(message)
        self.message = message
        self.job_run = job_run
        self.result = result

    def __str__(self) -> str:
        return self.message


class WaitTimeoutError(PollerError):
    """The wait's deadline passed before the run reached a terminal status."""


class JobRunNotFoundError(PollerError):
    """The run was still not found after the not-found grace period."""


class AccessDeniedError(PollerError):
    """The caller may not read the run: denied, unauthorized, or no usable credentials."""


class InvalidRequestError(PollerError):
    """The request is malformed: bad IDs, a bad setting, or a ValidationException."""


class ServiceUnavailableError(PollerError):
    """Transient faults (5xx, resets, timeouts, garbled bodies) did not clear."""


class JobRunFailedError(PollerError):
    """The run finished without succeeding (raised by ``WaitResult.raise_for_status``)."""


class WaitCancelledError(PollerError):
    """The caller stopped the wait; the run itself was not touched."""


for _error in (
    PollerError,
    WaitTimeoutError,
    JobRunNotFoundError,
    AccessDeniedError,
    InvalidRequestError,
    ServiceUnavailableError,
    JobRunFailedError,
    WaitCancelledError,
):
    _error.__module__ = "poller.errors"


class Outcome(enum.StrEnum):
    """How a wait ended, as the result document spells it."""

    SUCCEEDED = "succeeded"
    PARTIALLY_SUCCEEDED = "partially_succeeded"
    FAILED = "failed"
    WAIT_TIMEOUT = "wait_timeout"
    ERROR = "error"
    INTERRUPTED = "interrupted"


class JobRunStatus(enum.StrEnum):
    """The statuses GetJobRun documents; a StrEnum, so it compares equal to the raw string."""

    SCHEDULED = "SCHEDULED"
    IN_PROGRESS = "IN_PROGRESS"
    SUCCESS = "SUCCESS"
    PARTIALLY_SUCCEEDED = "PARTIALLY_SUCCEEDED"
    FAILED = "FAILED"
    ABORTED = "ABORTED"
    TIMED_OUT = "TIMED_OUT"
    CANCELED = "CANCELED"

    @property
    def is_terminal(self) -> bool:
        """True once the run can no longer change."""
        return self not in (JobRunStatus.SCHEDULED, JobRunStatus.IN_PROGRESS)

    @property
    def outcome(self) -> Outcome | None:
        """The outcome a wait ending on this status has; None while the run is not finished."""
        return _OUTCOMES.get(self)

    @classmethod
    def parse(cls, raw: str) -> JobRunStatus | str:
        """The member for a known status; an unknown one is kept as the raw string."""
        return _BY_VALUE.get(raw, raw)


_BY_VALUE: dict[str, JobRunStatus] = {s.value: s for s in JobRunStatus}
_OUTCOMES = {
    JobRunStatus.SUCCESS: Outcome.SUCCEEDED,
    JobRunStatus.PARTIALLY_SUCCEEDED: Outcome.PARTIALLY_SUCCEEDED,
    JobRunStatus.FAILED: Outcome.FAILED,
    JobRunStatus.ABORTED: Outcome.FAILED,
    JobRunStatus.TIMED_OUT: Outcome.FAILED,
    JobRunStatus.CANCELED: Outcome.FAILED,
}


class MalformedResponseError(ValueError):
    """A GetJobRun response lacks what every response must have."""


def _utc(value: object) -> datetime | None:
    # botocore hands timestamps over as aware datetimes (tzlocal by default);
    # normalise to UTC so equality and the ISO output do not depend on the host.
    if isinstance(value, datetime):
        return value.astimezone(UTC) if value.tzinfo else value.replace(tzinfo=UTC)
    if isinstance(value, int | float) and not isinstance(value, bool):
        return datetime.fromtimestamp(value, UTC)
    return None


def _int(value: object) -> int | None:
    return value if isinstance(value, int) and not isinstance(value, bool) else None


def _seconds(start: datetime | None, end: datetime | None) -> float | None:
    # An end before its start cannot be true: no duration rather than a negative one.
    if start is None or end is None or end < start:
        return None
    return round((end - start).total_seconds(), 3)


def _iso(value: datetime | None) -> str | None:
    if value is None:
        return None
    text = value.astimezone(UTC).isoformat()
    return text.replace("+00:00", "Z")


@dataclass(frozen=True, slots=True)
class LineageStats:
    """SQL-query statistics of a lineage run (``lineageRunDetails.sqlQueryRunDetails``).

    Counts that cannot be true (a negative one, more failed than processed) are
    not passed on: both counts become None, and ``inconsistency`` says what the
    service reported, so the wait can log it.
    """

    total_queries_processed: int | None = None
    num_queries_failed: int | None = None
    query_start_time: datetime | None = None
    query_end_time: datetime | None = None
    error_messages: tuple[str, ...] = ()
    inconsistency: str | None = field(default=None, init=False)

    def __post_init__(self) -> None:
        total, failed = self.total_queries_processed, self.num_queries_failed
        counts = [
            f"{name} {value}"
            for name, value in (("totalQueriesProcessed", total), ("numQueriesFailed", failed))
            if value is not None and value < 0
        ]
        if not counts and total is not None and failed is not None and failed > total:
            counts.append(f"numQueriesFailed {failed} of totalQueriesProcessed {total}")
        if counts:
            object.__setattr__(self, "total_queries_processed", None)
            object.__setattr__(self, "num_queries_failed", None)
        start, end = self.query_start_time, self.query_end_time
        if start is not None and end is not None and end < start:
            counts.append(f"queryEndTime {_iso(end)} before queryStartTime {_iso(start)}")
        if counts:
            object.__setattr__(self, "inconsistency", "; ".join(counts))

    @classmethod
    def from_details(cls, details: object) -> LineageStats | None:
        """Stats from a ``details`` union; None when absent or of a member we do not know."""
        if not isinstance(details, Mapping):
            return None
        lineage = details.get("lineageRunDetails")
        sql = lineage.get("sqlQueryRunDetails") if isinstance(lineage, Mapping) else None
        if not isinstance(sql, Mapping):
            return None
        messages = sql.get("errorMessages")
        return cls(
            total_queries_processed=_int(sql.get("totalQueriesProcessed")),
            num_queries_failed=_int(sql.get("numQueriesFailed")),
            query_start_time=_utc(sql.get("queryStartTime")),
            query_end_time=_utc(sql.get("queryEndTime")),
            error_messages=tuple(str(m) for m in messages) if isinstance(messages, list) else (),
        )

    @property
    def num_queries_succeeded(self) -> int | None:
        """Processed minus failed, when both are known."""
        if self.total_queries_processed is None or self.num_queries_failed is None:
            return None
        return self.total_queries_processed - self.num_queries_failed

    @property
    def failure_rate(self) -> float | None:
        """Failed over processed, to four places; None when nothing was processed."""
        if not self.total_queries_processed or self.num_queries_failed is None:
            return None
        return round(self.num_queries_failed / self.total_queries_processed, 4)

    @property
    def query_duration_s(self) -> float | None:
        """Seconds from the first query's start to the last one's end."""
        return _seconds(self.query_start_time, self.query_end_time)

    def to_dict(self) -> dict[str, Any]:
        """The ``lineage`` member of the result document."""
        return {
            "total_queries_processed": self.total_queries_processed,
            "num_queries_failed": self.num_queries_failed,
            "num_queries_succeeded": self.num_queries_succeeded,
            "failure_rate": self.failure_rate,
            "query_start_time": _iso(self.query_start_time),
            "query_end_time": _iso(self.query_end_time),
            "query_duration_s": self.query_duration_s,
            "error_messages": list(self.error_messages),
        }


@dataclass(frozen=True, slots=True)
class JobRun:
    """One GetJobRun response, parsed; unknown statuses and details are kept, not rejected."""

    domain_id: str
    id: str
    status: JobRunStatus | str
    job_id: str | None = None
    job_type: str | None = None
    run_mode: str | None = None
    error_message: str | None = None
    created_by: str | None = None
    created_at: datetime | None = None
    start_time: datetime | None = None
    end_time: datetime | None = None
    lineage: LineageStats | None = None

    def __post_init__(self) -> None:
        # A known status given as a plain string becomes the member, so
        # JobRun(status="SUCCESS") is terminal like a parsed response.
        object.__setattr__(self, "status", JobRunStatus.parse(str(self.status)))

    @classmethod
    def from_response(cls, response: Mapping[str, Any]) -> JobRun:
        """Parse botocore's GetJobRun output; raise MalformedResponseError if it is not one."""
        domain_id, run_id, status = (response.get(k) for k in ("domainId", "id", "status"))
        if not (isinstance(domain_id, str) and isinstance(run_id, str) and isinstance(status, str)):
            # A 200 whose body is not the expected JSON parses to a dict
            # without these; the caller treats that as a transient fault.
            raise MalformedResponseError("GetJobRun response lacks domainId, id or status")
        error = response.get("error")
        message = error.get("message") if isinstance(error, Mapping) else None

        def text(key: str) -> str | None:
            value = response.get(key)
            return value if isinstance(value, str) else None

        return cls(
            domain_id=domain_id,
            id=run_id,
            status=status,
            job_id=text("jobId"),
            job_type=text("jobType"),
            run_mode=text("runMode"),
            error_message=message if isinstance(message, str) else None,
            created_by=text("createdBy"),
            created_at=_utc(response.get("createdAt")),
            start_time=_utc(response.get("startTime")),
            end_time=_utc(response.get("endTime")),
            lineage=LineageStats.from_details(response.get("details")),
        )

    @classmethod
    def from_summary(cls, domain_id: str, item: Any) -> JobRun | None:
        """One ``items`` entry of a ListJobRuns page; None for a summary that cannot be read."""
        try:
            # The item's own domain, if it names one: a listing's item is used only
            # for the run, job and domain it names.
            return cls.from_response({"domainId": domain_id, **item, "id": item.get("runId")})
        except (ValueError, AttributeError, TypeError):
            return None

    @property
    def outcome(self) -> Outcome | None:
        """The outcome this status ends a wait with; None while running or unknown."""
        return self.status.outcome if isinstance(self.status, JobRunStatus) else None

    @property
    def is_terminal(self) -> bool:
        """True once the run has finished; an unknown status counts as still running."""
        return self.outcome is not None

    @property
    def duration_s(self) -> float | None:
        """Seconds from start to end, once both are known."""
        return _seconds(self.start_time, self.end_time)


@dataclass(frozen=True, slots=True)
class Problem:
    """Why a wait ended without a terminal status: the error's class name and message."""

    type: str
    message: str

    @classmethod
    def from_error(cls, error: BaseException) -> Problem:
        """The problem an error describes."""
        return cls(type(error).__name__, str(error))


@dataclass(frozen=True, slots=True)
class WaitResult:
    """What a wait found, and what it cost; ``to_dict()`` is the result document."""

    domain_id: str
    job_run_id: str
    outcome: Outcome
    job_run: JobRun | None = None
    polls: int = 0
    throttled: int = 0
    errors_retried: int = 0
    waited_s: float = 0.0
    # The error behind a wait_timeout, error or interrupted outcome; not part
    # of equality, so two results describing the same wait compare equal.
    error: PollerError | None = field(default=None, compare=False)

    def __post_init__(self) -> None:
        # The error of a wait carries its result: joined here, wherever a
        # result is built, instead of patched in by each loop afterwards.
        if self.error is not None:
            self.error.result = self

    @classmethod
    def from_error(cls, domain_id: str, job_run_id: str, error: PollerError) -> WaitResult:
        """The result of a wait that could not even start (bad IDs, no client): outcome error."""
        return cls(str(domain_id), str(job_run_id), Outcome.ERROR, error=error)

    @property
    def problem(self) -> Problem | None:
        """The ``problem`` member of the result document."""
        return Problem.from_error(self.error) if self.error is not None else None

    def raise_for_status(self, *, allow_partial: bool = False) -> WaitResult:
        """Return self if the run succeeded; else raise JobRunFailedError or the wait's error."""
        if self.error is not None:
            raise self.error
        if self.outcome is Outcome.SUCCEEDED or (
            allow_partial and self.outcome is Outcome.PARTIALLY_SUCCEEDED
        ):
            return self
        run = self.job_run
        status = run.status if run else None
        reason = f": {run.error_message}" if run and run.error_message else ""
        raise JobRunFailedError(
            f"job run {self.job_run_id} in domain {self.domain_id} ended {status}{reason}",
            job_run=run,
            result=self,
        )

    def to_dict(self) -> dict[str, Any]:
        """The result document of docs/design.md, keys fixed, JSON-ready."""
        run = self.job_run
        problem = self.problem
        return {
            "domain_id": self.domain_id,
            "job_run_id": self.job_run_id,
            "job_id": run.job_id if run else None,
            "job_type": run.job_type if run else None,
            "run_mode": run.run_mode if run else None,
            "status": str(run.status) if run else None,
            "outcome": str(self.outcome),
            "error_message": run.error_message if run else None,
            "created_by": run.created_by if run else None,
            "created_at": _iso(run.created_at) if run else None,
            "start_time": _iso(run.start_time) if run else None,
            "end_time": _iso(run.end_time) if run else None,
            "duration_s": run.duration_s if run else None,
            "lineage": run.lineage.to_dict() if run and run.lineage else None,
            "polls": self.polls,
            "throttled": self.throttled,
            "errors_retried": self.errors_retried,
            "waited_s": round(self.waited_s, 3),
            "problem": {"type": problem.type, "message": problem.message} if problem else None,
        }


@contextmanager
def carrying_result(domain_id: str, job_run_id: str) -> Iterator[None]:
    """A PollerError raised before any call (bad IDs, settings, client) gets its result.

    Every error a wait raises carries the result so far (``error.result``):
    here, an ``error`` outcome with no call made.
    """
    try:
        yield
    except PollerError as error:
        if error.result is None:
            WaitResult.from_error(domain_id, job_run_id, error)  # links itself to the error
        raise


def describe_lineage(lineage: Mapping[str, Any] | None) -> str | None:
    """The lineage statistics of a result document as one sentence; None without any.

    The one text of them: a sensor's failure reason and the CLI's text output both use it.
    """
    if not lineage or lineage.get("total_queries_processed") is None:
        return None
    total = lineage["total_queries_processed"]
    failed = lineage.get("num_queries_failed")
    text = f"{total} SQL queries processed"
    if failed is not None:
        text += f", {failed} failed"
        rate = lineage.get("failure_rate")
        if rate is not None:
            text += f" ({rate:.2%})"
    messages = lineage.get("error_messages") or []
    if messages:
        more = f" (+{len(messages) - 1} more)" if len(messages) > 1 else ""
        text += f"; first error: {messages[0]}{more}"
    return text
