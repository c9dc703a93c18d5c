"""Every way a wait can end badly: one base class, one subclass per way."""

from __future__ import annotations

from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from poller._model import JobRun, WaitResult

__all__ = [
    "AccessDeniedError",
    "InvalidRequestError",
    "JobRunFailedError",
    "JobRunNotFoundError",
    "PollerError",
    "ServiceUnavailableError",
    "WaitCancelledError",
    "WaitTimeoutError",
]


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
