"""What the command line prints, and where: results on stdout, messages on stderr.

stdout carries results only, one JSON document per run (or a short text
summary); it is the one stream that matters, so a stdout that is closed or
whose reader went away ends the command (``StdoutGone``, exit 141). stderr
carries logs, one-line messages and the live line; a stderr that is closed or
broken is silently given up, never the reason a result is lost.
"""

from __future__ import annotations

import functools
import json
import os
import threading
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, TextIO

from poller.cli._live import format_elapsed, paint, use_color
from poller.log import redact

if TYPE_CHECKING:
    from poller._model import WaitResult
    from poller.cli._live import LiveLine

__all__ = ["LogLines", "Output", "StdoutGone", "TolerantStream", "make_output", "render_text"]


class StdoutGone(Exception):
    """stdout is closed, its reader went away, or it cannot be written: results are lost.

    Its message says which, for ``poller: error: <message>: the results are lost``.
    """

    @classmethod
    def from_error(cls, exc: BaseException) -> StdoutGone:
        """What a failed write of stdout means for the person: a broken pipe, a full disk..."""
        if isinstance(exc, BrokenPipeError | ConnectionResetError) or not isinstance(exc, OSError):
            return cls("stdout is closed (a broken pipe)")
        return cls(f"stdout cannot be written: {exc.strerror or exc}")


class TolerantStream:
    """A text stream that gives up quietly when it breaks: stderr, for logs and messages.

    ``None`` (Python's stderr when the process started with it closed) is a
    stream that is already broken. ``isatty`` answers whether colour is wanted.
    """

    def __init__(self, stream: TextIO | None, color: bool = False) -> None:
        self._stream = stream
        self._color = color

    @property
    def alive(self) -> bool:
        return self._stream is not None

    @property
    def raw(self) -> TextIO | None:
        """The stream underneath, None once it broke."""
        return self._stream

    def write(self, text: str) -> int:
        if self._stream is not None:
            try:
                self._stream.write(text)
            except (OSError, ValueError):
                self._stream = None
        return len(text)

    def flush(self) -> None:
        if self._stream is not None:
            try:
                self._stream.flush()
            except (OSError, ValueError):
                self._stream = None

    def isatty(self) -> bool:
        return self._color


def is_terminal(stream: TextIO | None) -> bool:
    try:
        return stream is not None and stream.isatty()
    except (OSError, ValueError):
        return False


@dataclass(slots=True)
class Output:
    """Where results and messages go, and how they look."""

    fmt: str  # "json" | "text"
    quiet: bool
    stdout: TextIO | None
    stderr: TolerantStream
    color: bool  # colour on stdout
    err_color: bool  # colour on stderr (the live line, console logs)
    live: LiveLine | None = None
    # One writer per stream: results hold the stdout lock, messages and logs the
    # stderr one, so a stderr nobody reads never holds up a result.
    _out_lock: threading.Lock = field(default_factory=threading.Lock)
    _err_lock: threading.Lock = field(default_factory=threading.Lock)

    def result(self, result: WaitResult, *, finished: bool = True) -> None:
        """Print one result document on stdout (StdoutGone if it cannot be)."""
        self.results([(result, finished)])

    def results(
        self,
        results: Sequence[tuple[WaitResult, bool] | str],
        *,
        chunk: int = 500,
        printed: Callable[[int], object] | None = None,
    ) -> None:
        """Print result documents on stdout, ``chunk`` to a write; ``printed(n)`` after each.

        ``(result, finished)``: a result not ``finished`` (`status` of a run still
        going) has no outcome yet; a str is a document already rendered
        (``document``). StdoutGone if stdout cannot take them.
        """
        gone: list[BaseException] = []

        def write(text: str) -> None:
            if self.stdout is None:
                gone.append(StdoutGone("stdout is closed (a broken pipe)"))
                return
            try:
                self.stdout.write(text)
                self.stdout.flush()
            except (OSError, ValueError) as exc:
                gone.append(StdoutGone.from_error(exc))

        for start in range(0, len(results), chunk):
            text = "".join(
                (item if isinstance(item, str) else self.document(*item)) + "\n"
                for item in results[start : start + chunk]
            )
            self._emit(functools.partial(write, text), self._out_lock)
            if gone:
                self.stdout = None
                raise gone[0]
            if printed is not None:
                printed(min(start + chunk, len(results)))

    def document(self, result: WaitResult, finished: bool = True) -> str:
        """The result document as printed: JSON, or the text summary."""
        from poller._session import result_document  # noqa: PLC0415  (loaded by the wait)

        document = result_document(result, running=not finished)  # as `finished` logs it
        text = (
            json.dumps(document, ensure_ascii=False)
            if self.fmt == "json"
            else render_text(document, color=self.color)
        )
        return redact(text)

    def note(self, message: str) -> None:
        """A one-line message for the person on stderr; silent with --quiet."""
        if not self.quiet:
            self.error(message)

    def error(self, message: str) -> None:
        """A one-line message on stderr, even with --quiet."""

        def write() -> None:
            self.stderr.write(redact(message) + "\n")
            self.stderr.flush()

        self._emit(write, self._err_lock)

    def freeze(self, timeout: float = 0.1) -> None:
        """Let no more results be written, once a write in progress (up to ``timeout``) is done.

        For the very end of the process (the hard stop after a signal): the lock is
        never given back. ``last_word`` may still say one line on stderr.
        """
        self._out_lock.acquire(timeout=timeout)

    def last_word(self, message: str) -> None:
        """One line on stderr, at the very end: never blocking on a stderr nobody reads."""
        stream = self.stderr.raw
        try:
            fd = stream.fileno() if stream is not None else -1
            os.set_blocking(fd, False)
            os.write(fd, (redact(message) + "\n").encode("utf-8", "replace"))
        except (AttributeError, OSError, ValueError):
            pass

    def log_stream(self) -> LogLines:
        """The stream the logs are written to: each whole line goes to stderr as one write."""
        return LogLines(self)

    def _emit(self, write: Any, lock: threading.Lock) -> None:
        # The one way onto either stream: whole lines, under the stream's one lock, above
        # the live line if there is one, so no event and message ever share a line.
        with lock:
            if self.live is not None:
                self.live.above(write)
            else:
                write()


class LogLines:
    """A text stream for structlog: it keeps a line until it is whole, then emits it at once.

    A logger writes an event and its newline in two writes; a message written
    between them (from another thread) would land on the event's line.
    """

    def __init__(self, output: Output) -> None:
        self._output = output
        self._partial = ""
        self._lock = threading.Lock()

    def write(self, text: str) -> int:
        with self._lock:
            head, newline, self._partial = (self._partial + text).rpartition("\n")
            if newline:
                self._output._emit(lambda: self._emit(head + newline), self._output._err_lock)
        return len(text)

    def _emit(self, lines: str) -> None:
        self._output.stderr.write(lines)
        self._output.stderr.flush()

    def flush(self) -> None:
        """Lines are flushed as they are emitted."""

    def isatty(self) -> bool:
        return self._output.err_color


def make_output(
    fmt: str | None, quiet: bool, stdout: TextIO | None, stderr: TextIO | None
) -> Output:
    """The output of one invocation: the format defaults to text on a terminal, else JSON."""
    if stdout is not None and getattr(stdout, "closed", False):
        stdout = None  # the process started with it closed: nowhere to print
    if fmt is None:
        fmt = "text" if is_terminal(stdout) else "json"
    err_color = stderr is not None and use_color(stderr)
    return Output(
        fmt=fmt,
        quiet=quiet,
        stdout=stdout,
        stderr=TolerantStream(stderr, err_color),
        color=stdout is not None and use_color(stdout),
        err_color=err_color,
    )


def _seconds_text(value: object) -> str:
    if not isinstance(value, int | float):
        return "?"
    return f"{value:.1f}s" if value < 60 else format_elapsed(value)


def render_text(doc: Mapping[str, Any], *, color: bool = False) -> str:
    """A short summary of a result document for a person."""
    status = doc.get("status")
    outcome = str(doc.get("outcome"))
    run_id = doc.get("job_run_id")
    lines: list[str] = []
    if outcome in ("succeeded", "partially_succeeded", "failed"):
        head = paint(str(status), str(status), color)
        what = [doc.get("job_id") and f"job {doc['job_id']}", doc.get("job_type")]
        about = ", ".join(str(w) for w in what if w)
        lines.append(f"{head}  {run_id}" + (f" ({about})" if about else ""))
        if doc.get("duration_s") is not None:
            lines.append(f"  ran for {_seconds_text(doc['duration_s'])}")
        if doc.get("error_message"):
            lines.append(f"  error: {doc['error_message']}")
    elif outcome == "None":
        lines.append(f"{paint(str(status), str(status), color)}  {run_id} (still running)")
    else:
        word = {"wait_timeout": "WAIT TIMEOUT", "interrupted": "INTERRUPTED"}.get(outcome, "ERROR")
        head = paint(word, "FAILED" if word == "ERROR" else "PARTIALLY_SUCCEEDED", color)
        seen = f"last status {status}" if status else "no status seen"
        lines.append(f"{head}  {run_id} ({seen})")
        problem = doc.get("problem") or {}
        if problem:
            lines.append(f"  {problem.get('type')}: {problem.get('message')}")
    from poller._model import describe_lineage  # noqa: PLC0415  (loaded by the wait already)

    lineage = describe_lineage(doc.get("lineage"))
    if lineage:
        lines.append(f"  lineage: {lineage}")
    polls = doc.get("polls") or 0
    calls = f"{polls} call{'s' * (polls != 1)}"
    # A watch reads a run it announces once, with no waiting: say so, not "waited 0.0s".
    waited = doc.get("waited_s")
    cost = f"  waited {_seconds_text(waited)}, {calls}" if waited else f"  read with {calls}"
    if doc.get("throttled"):
        cost += f", {doc['throttled']} throttled"
    if doc.get("errors_retried"):
        cost += f", {doc['errors_retried']} retried"
    lines.append(cost)
    return "\n".join(lines)
