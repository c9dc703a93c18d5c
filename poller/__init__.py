"""Wait for an Amazon DataZone job run to finish: throttle-proof, cheap in calls, with a result."""

from poller.errors import (
    AccessDeniedError,
    InvalidRequestError,
    JobRunFailedError,
    JobRunNotFoundError,
    PollerError,
    ServiceUnavailableError,
    WaitCancelledError,
    WaitTimeoutError,
)
from poller.fanout import wait_for_job_runs
from poller.latest import wait_for_latest_job_run
from poller.limiter import RateLimiter
from poller.model import JobRun, JobRunStatus, LineageStats, Outcome, Problem, WaitResult
from poller.policy import PollPolicy
from poller.waiter import get_job_run, wait_for_job_run

__all__ = [
    "AccessDeniedError",
    "InvalidRequestError",
    "JobRun",
    "JobRunFailedError",
    "JobRunNotFoundError",
    "JobRunStatus",
    "LineageStats",
    "Outcome",
    "PollPolicy",
    "PollerError",
    "Problem",
    "RateLimiter",
    "ServiceUnavailableError",
    "WaitCancelledError",
    "WaitResult",
    "WaitTimeoutError",
    "get_job_run",
    "wait_for_job_run",
    "wait_for_job_runs",
    "wait_for_latest_job_run",
]
