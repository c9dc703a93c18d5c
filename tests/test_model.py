"""Values: status mapping, response parsing and the result document."""

from __future__ import annotations

import json
from datetime import UTC, datetime, timedelta, timezone

import pytest
from helpers import RESULT_KEYS

from poller import JobRunFailedError, JobRunStatus, LineageStats, Outcome, WaitResult
from poller._model import JobRun, MalformedResponseError
from poller.errors import InvalidRequestError, WaitTimeoutError

LINEAGE_KEYS = [
    "total_queries_processed",
    "num_queries_failed",
    "num_queries_succeeded",
    "failure_rate",
    "query_start_time",
    "query_end_time",
    "query_duration_s",
    "error_messages",
]
T0 = datetime(2026, 11, 24, 10, 0, 0, tzinfo=UTC)


def response(**overrides: object) -> dict[str, object]:
    """A GetJobRun response as botocore returns it (timestamps in a non-UTC zone)."""
    plus_one = timezone(timedelta(hours=1))
    base: dict[str, object] = {
        "domainId": "dzd_abc123",
        "id": "run-42",
        "jobId": "job-1",
        "jobType": "LINEAGE",
        "runMode": "ON_DEMAND",
        "status": "SUCCESS",
        "createdBy": "user",
        "createdAt": T0.astimezone(plus_one),
        "startTime": (T0 + timedelta(seconds=5)).astimezone(plus_one),
        "endTime": (T0 + timedelta(seconds=65)).astimezone(plus_one),
        "details": {
            "lineageRunDetails": {
                "sqlQueryRunDetails": {
                    "queryStartTime": T0 + timedelta(seconds=10),
                    "queryEndTime": T0 + timedelta(seconds=60),
                    "totalQueriesProcessed": 42,
                    "numQueriesFailed": 2,
                    "errorMessages": ["syntax error near FROM"],
                }
            }
        },
        "ResponseMetadata": {"HTTPStatusCode": 200},
    }
    base.update(overrides)
    return base


def test_terminal_statuses_and_their_outcomes() -> None:
    """Six statuses are terminal; FAILED, ABORTED, TIMED_OUT and CANCELED all mean failed."""
    assert {s for s in JobRunStatus if s.is_terminal} == {
        JobRunStatus.SUCCESS,
        JobRunStatus.PARTIALLY_SUCCEEDED,
        JobRunStatus.FAILED,
        JobRunStatus.ABORTED,
        JobRunStatus.TIMED_OUT,
        JobRunStatus.CANCELED,
    }
    assert JobRunStatus.SUCCESS.outcome is Outcome.SUCCEEDED
    assert JobRunStatus.PARTIALLY_SUCCEEDED.outcome is Outcome.PARTIALLY_SUCCEEDED
    assert {JobRunStatus(s).outcome for s in ("FAILED", "ABORTED", "TIMED_OUT", "CANCELED")} == {
        Outcome.FAILED
    }
    assert JobRunStatus.IN_PROGRESS.outcome is None


def test_parse_full_response_with_utc_timestamps() -> None:
    """Every field is read, and timestamps become aware UTC datetimes."""
    run = JobRun.from_response(response())
    assert run.status is JobRunStatus.SUCCESS
    assert run.created_at == T0
    assert run.created_at.tzinfo is UTC
    assert run.duration_s == 60.0
    assert run.lineage == LineageStats(
        total_queries_processed=42,
        num_queries_failed=2,
        query_start_time=T0 + timedelta(seconds=10),
        query_end_time=T0 + timedelta(seconds=60),
        error_messages=("syntax error near FROM",),
    )


def test_unknown_status_and_unknown_details_are_kept() -> None:
    """A new status stays a raw string and a new details member gives lineage None."""
    run = JobRun.from_response(
        response(status="QUEUED_FOR_LATER", details={"SDK_UNKNOWN_MEMBER": {"name": "x"}})
    )
    assert run.status == "QUEUED_FOR_LATER"
    assert not run.is_terminal
    assert run.lineage is None


@pytest.mark.parametrize("body", [{}, {"message": "not json"}, {"domainId": "dzd_a", "id": "r"}])
def test_response_without_the_required_members_is_malformed(body: dict[str, object]) -> None:
    """What botocore makes of a non-JSON 200 body is rejected, not half-parsed."""
    with pytest.raises(MalformedResponseError):
        JobRun.from_response(body)


def test_lineage_derived_numbers() -> None:
    """Succeeded count, failure rate to four places and query duration are derived."""
    stats = LineageStats(42, 2, T0, T0 + timedelta(seconds=50))
    assert (stats.num_queries_succeeded, stats.failure_rate, stats.query_duration_s) == (
        40,
        0.0476,
        50.0,
    )
    assert LineageStats(0, 0).failure_rate is None
    assert LineageStats(None, 3).num_queries_succeeded is None


def test_to_dict_is_the_result_document() -> None:
    """Keys, order and values exactly as docs/design.md's result document."""
    result = WaitResult(
        domain_id="dzd_abc123",
        job_run_id="run-42",
        outcome=Outcome.SUCCEEDED,
        job_run=JobRun.from_response(response()),
        polls=5,
        throttled=2,
        errors_retried=1,
        waited_s=12.3456,
    )
    doc = result.to_dict()
    assert list(doc) == RESULT_KEYS
    assert list(doc["lineage"]) == LINEAGE_KEYS
    assert doc == {
        "domain_id": "dzd_abc123",
        "job_run_id": "run-42",
        "job_id": "job-1",
        "job_type": "LINEAGE",
        "run_mode": "ON_DEMAND",
        "status": "SUCCESS",
        "outcome": "succeeded",
        "error_message": None,
        "created_by": "user",
        "created_at": "2026-11-24T10:00:00Z",
        "start_time": "2026-11-24T10:00:05Z",
        "end_time": "2026-11-24T10:01:05Z",
        "duration_s": 60.0,
        "lineage": {
            "total_queries_processed": 42,
            "num_queries_failed": 2,
            "num_queries_succeeded": 40,
            "failure_rate": 0.0476,
            "query_start_time": "2026-11-24T10:00:10Z",
            "query_end_time": "2026-11-24T10:01:00Z",
            "query_duration_s": 50.0,
            "error_messages": ["syntax error near FROM"],
        },
        "polls": 5,
        "throttled": 2,
        "errors_retried": 1,
        "waited_s": 12.346,
        "problem": None,
    }
    assert json.loads(json.dumps(doc)) == doc


def test_to_dict_of_a_wait_that_never_saw_the_run() -> None:
    """Status and run fields are null, and the problem names the error class."""
    error = WaitTimeoutError("deadline passed")
    doc = WaitResult("dzd_a", "r1", Outcome.WAIT_TIMEOUT, error=error).to_dict()
    assert list(doc) == RESULT_KEYS
    assert (doc["status"], doc["lineage"], doc["created_at"]) == (None, None, None)
    assert doc["problem"] == {"type": "WaitTimeoutError", "message": "deadline passed"}


@pytest.mark.parametrize("status", ["FAILED", "ABORTED", "TIMED_OUT", "CANCELED"])
def test_raise_for_status_on_a_failed_run(status: str) -> None:
    """A failed run raises JobRunFailedError carrying the run and the run's message."""
    run = JobRun.from_response(response(status=status, error={"message": "boom"}))
    result = WaitResult("dzd_abc123", "run-42", Outcome.FAILED, job_run=run)
    with pytest.raises(JobRunFailedError, match=f"ended {status}: boom") as info:
        result.raise_for_status()
    assert info.value.job_run is run
    assert info.value.result is result


def test_raise_for_status_partial_follows_allow_partial() -> None:
    """PARTIALLY_SUCCEEDED fails by default and passes with allow_partial."""
    run = JobRun.from_response(response(status="PARTIALLY_SUCCEEDED"))
    result = WaitResult("dzd_abc123", "run-42", Outcome.PARTIALLY_SUCCEEDED, job_run=run)
    assert result.raise_for_status(allow_partial=True) is result
    with pytest.raises(JobRunFailedError):
        result.raise_for_status()


def test_raise_for_status_reraises_the_wait_error() -> None:
    """A result that ended without a terminal status raises the error it carries."""
    error = WaitTimeoutError("late")
    with pytest.raises(WaitTimeoutError):
        WaitResult("dzd_a", "r1", Outcome.WAIT_TIMEOUT, error=error).raise_for_status()


def test_from_error_is_a_result_that_names_its_problem() -> None:
    """A wait that could not start is an error result, linked both ways with its error."""
    error = InvalidRequestError("invalid job run identifier 'bad id!'")
    result = WaitResult.from_error("dzd_a", "bad id!", error)
    assert (result.outcome, result.job_run, error.result) == (Outcome.ERROR, None, result)
    assert result.to_dict()["problem"] == {"type": "InvalidRequestError", "message": str(error)}


@pytest.mark.parametrize(
    ("total", "failed", "reported"),
    [
        (3, 7, "numQueriesFailed 7 of totalQueriesProcessed 3"),
        (-3, 0, "totalQueriesProcessed -3"),
        (42, -2, "numQueriesFailed -2"),
    ],
)
def test_lineage_counts_that_cannot_be_true_are_null(
    total: int, failed: int, reported: str
) -> None:
    """More failed than processed, or a negative count: no count, rate or succeeded is shown."""
    sql = {"totalQueriesProcessed": total, "numQueriesFailed": failed, "errorMessages": ["x"]}
    stats = LineageStats.from_details({"lineageRunDetails": {"sqlQueryRunDetails": sql}})
    assert stats is not None
    doc = stats.to_dict()
    numbers = ["total_queries_processed", "num_queries_failed", "num_queries_succeeded"]
    assert [doc[k] for k in [*numbers, "failure_rate"]] == [None] * 4
    assert doc["error_messages"] == ["x"]
    assert stats.inconsistency == reported


def test_consistent_lineage_counts_have_no_inconsistency() -> None:
    """Edge values that can be true (none failed, all failed, nothing processed) pass through."""
    assert LineageStats(42, 42).failure_rate == 1.0
    assert LineageStats(42, 0).num_queries_succeeded == 42
    assert LineageStats(0, 0).failure_rate is None
    pairs = [(42, 42), (0, 0), (None, 5)]
    assert [LineageStats(t, f).inconsistency for t, f in pairs] == [None] * 3


def test_an_end_before_its_start_gives_no_duration() -> None:
    """A run or query that ends before it starts has a null duration, not a negative one."""
    run = JobRun.from_response(response(endTime=T0))  # before startTime, T0 + 5 s
    assert run.duration_s is None
    stats = LineageStats(42, 2, T0 + timedelta(seconds=9), T0)
    assert stats.query_duration_s is None
    assert stats.total_queries_processed == 42  # the counts are not what is wrong
    assert stats.inconsistency == (
        "queryEndTime 2026-11-24T10:00:00Z before queryStartTime 2026-11-24T10:00:09Z"
    )


def test_a_result_built_with_an_error_is_that_errors_result() -> None:
    """The error of a wait carries its result from the moment the result exists, in one place."""
    error = WaitTimeoutError("the deadline passed")
    result = WaitResult("dzd_x", "run-1", Outcome.WAIT_TIMEOUT, polls=3, error=error)
    assert error.result is result
    with pytest.raises(WaitTimeoutError) as info:
        result.raise_for_status()
    assert info.value.result is result
    assert info.value.result.polls == 3


def test_a_failed_runs_error_carries_the_result_it_was_raised_from() -> None:
    """raise_for_status on a FAILED run raises JobRunFailedError whose result is that result."""
    result = WaitResult(
        "dzd_x", "run-1", Outcome.FAILED, job_run=JobRun("dzd_x", "run-1", "FAILED")
    )
    with pytest.raises(JobRunFailedError) as info:
        result.raise_for_status()
    assert info.value.result is result
