"""structlog setup and the names of the events a wait emits."""

from __future__ import annotations

import logging
import sys
from collections.abc import Mapping, MutableMapping
from typing import Any, Final, TextIO

import structlog

__all__ = [
    "FINISHED",
    "HEARTBEAT",
    "LINEAGE_INCONSISTENT",
    "RETRYING",
    "STATUS_CHANGED",
    "THROTTLED",
    "WAIT_STARTED",
    "configure_logging",
    "get_logger",
]

WAIT_STARTED: Final = "wait_started"
STATUS_CHANGED: Final = "status_changed"
THROTTLED: Final = "throttled"
RETRYING: Final = "retrying"
HEARTBEAT: Final = "heartbeat"
FINISHED: Final = "finished"
# A warning: lineage counts that cannot be true were reported as null.
LINEAGE_INCONSISTENT: Final = "lineage_inconsistent"

# Events say what happened to the run, never how the call was signed: no
# credentials or headers are ever bound, and this drops them should a caller
# bind them by mistake.
_SECRET_KEYS = frozenset(
    {"authorization", "aws_secret_access_key", "aws_session_token", "x-amz-security-token"}
)


def _drop_secrets(_: Any, __: str, event: MutableMapping[str, Any]) -> Mapping[str, Any]:
    return {k: v for k, v in event.items() if k.lower() not in _SECRET_KEYS}


def get_logger(**bound: Any) -> Any:
    """poller's logger; a library only logs, the application decides where to."""
    return structlog.get_logger("poller", **bound)


def configure_logging(fmt: str = "auto", level: str = "info", stream: TextIO | None = None) -> None:
    """Send poller's events to ``stream`` (stderr) as JSON lines, or readable on a terminal."""
    out = stream if stream is not None else sys.stderr
    if fmt == "auto":
        fmt = "console" if out.isatty() else "json"
    renderer: Any = (
        structlog.processors.JSONRenderer()
        if fmt == "json"
        else structlog.dev.ConsoleRenderer(colors=out.isatty())
    )
    structlog.configure(
        processors=[
            structlog.contextvars.merge_contextvars,
            structlog.processors.add_log_level,
            structlog.processors.TimeStamper(fmt="iso", utc=True),
            _drop_secrets,
            renderer,
        ],
        wrapper_class=structlog.make_filtering_bound_logger(
            logging.getLevelNamesMapping()[level.upper()]
        ),
        logger_factory=structlog.PrintLoggerFactory(out),
        cache_logger_on_first_use=False,
    )
