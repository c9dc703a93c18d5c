"""Wait for an Amazon DataZone job run to finish: throttle-proof, cheap in calls, with a result.

Names are imported on first use (PEP 562), so ``import poller`` stays light:
botocore, structlog and asyncio load only when a wait needs them.
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    __version__: str
    from poller._fanout import wait_for_job_runs
    from poller._latest import wait_for_latest_job_run
    from poller._limiter import RateLimiter, budget_for
    from poller._model import JobRun, JobRunStatus, LineageStats, Outcome, Problem, WaitResult
    from poller._policy import PollPolicy
    from poller._runtime import ClientSettings
    from poller._waiter import get_job_run, wait_for_job_run
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

__all__ = [
    "AccessDeniedError",
    "ClientSettings",
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
    "budget_for",
    "get_job_run",
    "wait_for_job_run",
    "wait_for_job_runs",
    "wait_for_latest_job_run",
]

# Where each public name lives.
_LAZY = {
    "AccessDeniedError": "poller.errors",
    "InvalidRequestError": "poller.errors",
    "JobRunFailedError": "poller.errors",
    "JobRunNotFoundError": "poller.errors",
    "PollerError": "poller.errors",
    "ServiceUnavailableError": "poller.errors",
    "WaitCancelledError": "poller.errors",
    "WaitTimeoutError": "poller.errors",
    "JobRun": "poller._model",
    "JobRunStatus": "poller._model",
    "LineageStats": "poller._model",
    "Outcome": "poller._model",
    "Problem": "poller._model",
    "WaitResult": "poller._model",
    "PollPolicy": "poller._policy",
    "ClientSettings": "poller._runtime",
    "RateLimiter": "poller._limiter",
    "budget_for": "poller._limiter",
    "get_job_run": "poller._waiter",
    "wait_for_job_run": "poller._waiter",
    "wait_for_job_runs": "poller._fanout",
    "wait_for_latest_job_run": "poller._latest",
}


def __getattr__(name: str) -> Any:
    if name == "__version__":
        # The installed distribution's version, as `poller --version` shows it;
        # looked up on first use, so `import poller` reads no metadata.
        from importlib.metadata import version  # noqa: PLC0415

        globals()[name] = value = version("poller")
        return value
    module = _LAZY.get(name)
    if module is None:
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
    value = getattr(importlib.import_module(module), name)
    globals()[name] = value
    return value


def __dir__() -> list[str]:
    return sorted({*globals(), *__all__, "__version__"})
