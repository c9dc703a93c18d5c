"""Every way a wait can end badly: one base class, one subclass per way.

Defined with the values they carry (`poller._model`: the last JobRun seen,
the WaitResult), so the two never import each other; this is their public
home, and the name they go by.
"""

from __future__ import annotations

from poller._model import (
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
    "InvalidRequestError",
    "JobRunFailedError",
    "JobRunNotFoundError",
    "PollerError",
    "ServiceUnavailableError",
    "WaitCancelledError",
    "WaitTimeoutError",
]
