"""The exit codes of the command line: one IntEnum, its meanings, how results map to it,
and ``leave``, which ends the process with one.

The ``--help`` epilogs and the table in docs/cli.md are generated from
``WAIT_MEANINGS`` and ``STATUS_MEANINGS``; tests/test_cli_docs.py keeps docs/cli.md in step.
"""

from __future__ import annotations

import enum
import os
import sys
import threading
from collections.abc import Iterable, Mapping
from typing import TYPE_CHECKING

# Light (the values module: the standard library only), loaded by the settings anyway;
# at the top, since for_result runs once per result, tens of thousands of times after
# a signal.
from poller.errors import InvalidRequestError, WaitTimeoutError

if TYPE_CHECKING:
    from poller._model import WaitResult

__all__ = [
    "SEVERITY",
    "STATUS_MEANINGS",
    "WAIT_MEANINGS",
    "ExitCode",
    "combined",
    "for_result",
    "for_signal",
    "for_status",
    "leave",
    "severity_text",
]


class ExitCode(enum.IntEnum):
    """What ``poller`` exits with; above 128 the shell's convention, 128 + the signal."""

    SUCCEEDED = 0
    FAILED = 1
    USAGE = 2
    PARTIAL = 3
    WAIT_TIMEOUT = 4
    UNREADABLE = 5
    SIGHUP = 129
    SIGINT = 130
    STDOUT_CLOSED = 141  # results lost, as a shell reports a process killed by SIGPIPE
    SIGTERM = 143


WAIT_MEANINGS: Mapping[ExitCode, str] = {
    ExitCode.SUCCEEDED: "SUCCESS (or PARTIALLY_SUCCEEDED with --allow-partial)",
    ExitCode.FAILED: "the run ended FAILED, ABORTED, TIMED_OUT or CANCELED",
    ExitCode.USAGE: "usage error or bad input: unknown flag, malformed ID, bad duration, "
    "invalid config, bad endpoint, ValidationException",
    ExitCode.PARTIAL: "PARTIALLY_SUCCEEDED without --allow-partial",
    ExitCode.WAIT_TIMEOUT: "the wait's deadline passed before the run finished",
    ExitCode.UNREADABLE: "the status could not be read: not found, access denied, "
    "no credentials, transient faults did not clear, or no status was read before the "
    "deadline",
    ExitCode.SIGHUP: "interrupted by SIGHUP; the last state is still printed",
    ExitCode.SIGINT: "interrupted by SIGINT (Ctrl-C); the last state is still printed",
    ExitCode.STDOUT_CLOSED: "not every result could be delivered: stdout was closed or its "
    "reader went away (a broken pipe), it could not be written (no space left on the device, "
    "an I/O error; stderr says which), or the second after a signal ended before all were "
    "printed (stderr says how many)",
    ExitCode.SIGTERM: "interrupted by SIGTERM; the last state is still printed",
}
# `poller status` reports a status rather than judging it.
STATUS_MEANINGS: Mapping[ExitCode, str] = {
    ExitCode.SUCCEEDED: "the status was read, whatever it is (use `poller wait --timeout 0` "
    "for an exit code that follows the run's status)",
    ExitCode.USAGE: WAIT_MEANINGS[ExitCode.USAGE],
    ExitCode.UNREADABLE: "the status could not be read: not found, access denied, no "
    "credentials, or throttling and faults let no call through before --timeout",
    **{
        code: WAIT_MEANINGS[code]
        for code in (
            ExitCode.SIGHUP,
            ExitCode.SIGINT,
            ExitCode.STDOUT_CLOSED,
            ExitCode.SIGTERM,
        )
    },
}
#: Several runs exit with the most severe of their codes, in this order, most severe first:
#: an interruption always shows; then a run known to have failed; then a wait that can never
#: tell (bad input), one that could not tell this time (unreadable), one that may yet see
#: the run end (a wait timeout); a partial success; a success.
SEVERITY: tuple[ExitCode, ...] = (
    ExitCode.SIGTERM,
    ExitCode.SIGHUP,
    ExitCode.SIGINT,
    ExitCode.FAILED,
    ExitCode.USAGE,
    ExitCode.UNREADABLE,
    ExitCode.WAIT_TIMEOUT,
    ExitCode.PARTIAL,
    ExitCode.SUCCEEDED,
)
_SIGNALS = {2: ExitCode.SIGINT, 15: ExitCode.SIGTERM, 1: ExitCode.SIGHUP}


def for_signal(signum: int | None) -> ExitCode:
    """The code of a wait stopped by ``signum`` (SIGINT's when no signal is known)."""
    return _SIGNALS.get(int(signum), ExitCode.SIGINT) if signum else ExitCode.SIGINT


def for_result(result: WaitResult, *, allow_partial: bool, signum: int | None = None) -> ExitCode:
    """The exit code of one run's result, as the table says."""
    outcome = str(result.outcome)
    if outcome == "succeeded":
        return ExitCode.SUCCEEDED
    if outcome == "partially_succeeded":
        return ExitCode.SUCCEEDED if allow_partial else ExitCode.PARTIAL
    if outcome == "failed":
        return ExitCode.FAILED
    if outcome == "interrupted":
        return for_signal(signum)
    if outcome == "wait_timeout" or isinstance(result.error, WaitTimeoutError):
        return ExitCode.WAIT_TIMEOUT
    if isinstance(result.error, InvalidRequestError):
        return ExitCode.USAGE
    return ExitCode.UNREADABLE


def for_status(code: ExitCode) -> ExitCode:
    """`poller status` read the status, whatever it is: that is its success."""
    if code in (ExitCode.FAILED, ExitCode.PARTIAL):
        return ExitCode.SUCCEEDED
    return code


def combined(codes: Iterable[ExitCode]) -> ExitCode:
    """Several runs: the most severe of their codes (``SEVERITY``)."""
    seen = set(codes)
    return next((code for code in SEVERITY if code in seen), ExitCode.SUCCEEDED)


def severity_text() -> str:
    """``SEVERITY`` for a person: ``143, 129, 130 > 1 > 2 > ...``."""
    signals = ", ".join(str(int(code)) for code in SEVERITY if code > 128)
    return " > ".join([signals, *(str(int(code)) for code in SEVERITY if code < 128)])


def leave(code: int) -> None:
    """Flush what was printed and end the process now, worker threads or not.

    The flush gets a moment, not for ever: a stream nobody reads (a full pipe)
    must not keep the process alive.
    """

    def flush() -> None:
        for stream in (sys.stdout, sys.stderr):
            try:
                if stream is not None:
                    stream.flush()
            except (OSError, ValueError, RuntimeError):
                pass

    flushing = threading.Thread(target=flush, name="poller-leave", daemon=True)
    flushing.start()
    flushing.join(_FLUSH_FOR)
    os._exit(int(code))


#: How long ``leave`` waits for the streams to take what is buffered.
_FLUSH_FOR = 0.2
