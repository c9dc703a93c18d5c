"""Logging: the names of the events a wait emits, where they go, and redaction.

A library writes nothing to stdout unless the application asks. Until
structlog is configured (by ``configure_logging``, by the application, or by
a host such as Airflow), poller's events go to the stdlib logger ``poller``,
so the application's handlers, Airflow's task log and pytest's caplog see
them; with no handler at all, stdlib logging prints warnings and worse on
stderr and drops the rest. structlog is imported only when an event is logged
(``import poller`` and ``poller --help`` stay light).
"""

from __future__ import annotations

import re
import sys
from collections.abc import Mapping, MutableMapping
from typing import Any, Final, TextIO

__all__ = [
    "EVENTS",
    "FINISHED",
    "HEARTBEAT",
    "LINEAGE_INCONSISTENT",
    "LOGGER_NAME",
    "RETRYING",
    "STATUS_CHANGED",
    "THROTTLED",
    "WAIT_STARTED",
    "configure_logging",
    "get_logger",
    "redact",
]

WAIT_STARTED: Final = "wait_started"
STATUS_CHANGED: Final = "status_changed"
THROTTLED: Final = "throttled"
RETRYING: Final = "retrying"
HEARTBEAT: Final = "heartbeat"
FINISHED: Final = "finished"
# A warning: lineage counts that cannot be true were reported as null.
LINEAGE_INCONSISTENT: Final = "lineage_inconsistent"
#: The stdlib logger poller's events go to while structlog is not configured.
LOGGER_NAME: Final = "poller"

#: Every event poller logs, with when it is logged and its fields besides ``domain_id`` and
#: ``job_run_id``. tests/test_log_events.py keeps it equal to the events the code emits and
#: generates the lists in docs/python-api.md, docs/cli.md and docs/design.md from it.
EVENTS: Final[Mapping[str, str]] = {
    WAIT_STARTED: "a wait began: `timeout_s`",
    STATUS_CHANGED: "the run was first seen, or its status changed: `from`, `to`, `elapsed_s`",
    THROTTLED: "a call was throttled; the next one in `sleep_s`: `error_type`, `attempt`, "
    "`sleep_s`",
    RETRYING: "a call failed with a transient fault or an early not-found; retried in "
    "`sleep_s`: `error_type`, `attempt`, `sleep_s`",
    HEARTBEAT: "a minute went by without news: `status`, `elapsed_s`, `polls`",
    "history": "what the job's past runs taught: `job_id`, `runs`, `p50_s`, `quiet_s`, `late_s`",
    "history_unavailable": "the job's past runs cannot shape the cadence (fewer than 5, "
    "ListJobRuns denied or failing), so the plain one is used: `job_id`, `reason`",
    "finding_run": "`--latest` / `--since` began looking for the job's run: `job_id`, `timeout_s`",
    "run_found": "the run it found: `job_id`, `job_run_id`, `status`",
    "job_listing_stopped": "a fan-out stopped listing a job's runs (denied, failing three "
    "times in a row, or, logged as an error, a bug in poller); they are read one by one: "
    "`job_id`, `reason`",
    "budget_held_down": "an account's budget was cut by throttles all through a minute (not "
    "one storm), so it kept well under `max_rps`: other clients of the account get them "
    "(declare their share: `others_throttled`) or other processes share it (give each its "
    "share of `max_rps`); at most every 10 minutes: `rate`, `max_rps`, `throttled`, "
    "`others_throttled`",
    "fanout_started": "a fan-out began: `runs`, `waits`, `max_rps`",
    "fanout_finished": "a fan-out ended: `runs`, `rate`, a count per outcome",
    "watch_listed": "a job watcher listed its job: `job_id`, `runs`, `running`, `quiet_s`, "
    "`next_in_s`",
    "watch_announced": "a job watcher announced a finished run: `job_id`, `job_run_id`, `status`",
    "watch_retrying": "a job watcher's call was throttled or failed and is retried: `job_id`, "
    "`operation`, `error_type`, `error`, `attempt`, `sleep_s`",
    "watch_skipped": "a run listed finished that GetJobRun does not find is not announced: "
    "`job_id`, `job_run_id`, `why`",
    LINEAGE_INCONSISTENT: "lineage counts that cannot be true were reported as null: `reported`",
    FINISHED: "the wait ended: its fields are exactly the result document",
}

# Events say what happened to the run, never how the call was signed: no
# credentials or headers are ever bound, and this drops them should a caller
# bind them by mistake.
_SECRET_KEYS = frozenset(
    {"authorization", "aws_secret_access_key", "aws_session_token", "x-amz-security-token"}
)
# The userinfo of a URL (scheme://user:password@host): up to the last "@"
# before the path, so an unescaped "@" in a password does not leak its tail.
_USERINFO = re.compile(r"(?P<scheme>\b[A-Za-z][A-Za-z0-9+.\-]*://)[^/?#\s\"'\\]*@")
# A URL's query string, which may carry a token (a presigned URL, a proxy's key).
_QUERY = re.compile(r"(?P<path>\b[a-zA-Z][a-zA-Z0-9+.-]*://[^?#\s\"'<>]*)\?[^#\s\"'<>]*")


def redact(text: str) -> str:
    """``text`` with the userinfo and the query of every URL in it replaced by ``***``.

    ``https://user:pass@host:8443/x?token=1`` becomes ``https://***@host:8443/x?***``.
    The one redaction poller applies to what it shows: log events, error
    messages, CLI hints and result documents. Text without a URL is returned
    as it is, and nothing here raises.
    """
    if "://" not in text:
        return text
    return _QUERY.sub(r"\g<path>?***", _USERINFO.sub(r"\g<scheme>***@", text))


def _redacted(value: Any) -> Any:
    if isinstance(value, str):
        return redact(value)
    if isinstance(value, Mapping):
        return {k: _redacted(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [_redacted(v) for v in value]
    return value


def _scrub(_: Any, __: str, event: MutableMapping[str, Any]) -> Mapping[str, Any]:
    return {k: _redacted(v) for k, v in event.items() if k.lower() not in _SECRET_KEYS}


def _to_stdlib(_: Any, __: str, event: MutableMapping[str, Any]) -> Any:
    # The message is the event's name and its fields as JSON, so a plain
    # handler shows everything; the fields are also on the record as `poller`.
    import json  # noqa: PLC0415

    fields = {k: v for k, v in event.items() if k != "event"}
    message = f"{event.get('event')} {json.dumps(fields, default=str, ensure_ascii=False)}"
    return (message,), {"extra": {"poller": dict(event)}}


def get_logger(**bound: Any) -> Any:
    """poller's logger: structlog's configuration once there is one, else stdlib logging."""
    import logging  # noqa: PLC0415

    import structlog  # noqa: PLC0415

    if structlog.is_configured():
        return structlog.get_logger(LOGGER_NAME, **bound)
    return structlog.wrap_logger(
        logging.getLogger(LOGGER_NAME),
        processors=[structlog.contextvars.merge_contextvars, _scrub, _to_stdlib],
        wrapper_class=structlog.stdlib.BoundLogger,
        **bound,
    )


def configure_logging(fmt: str = "auto", level: str = "info", stream: TextIO | None = None) -> None:
    """Send poller's events to ``stream`` (stderr) as JSON lines, or readable on a terminal.

    This configures structlog for the whole process: an application's choice.
    """
    import logging  # noqa: PLC0415

    import structlog  # noqa: PLC0415

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
            _scrub,
            renderer,
        ],
        wrapper_class=structlog.make_filtering_bound_logger(
            logging.getLevelNamesMapping()[level.upper()]
        ),
        logger_factory=structlog.PrintLoggerFactory(out),
        cache_logger_on_first_use=False,
    )
