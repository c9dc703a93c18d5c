"""The live status line a person sees on a terminal while the CLI waits.

One line on stderr, redrawn in place (carriage return + clear line) as calls
come back and once or twice a second so the clocks tick: run ID, status,
elapsed time, polls, throttles and the time to the next check. Log lines and
results are written *above* it (the line is cleared, the text written, the
line drawn again), and it is cleared for good before the results are printed.
Nothing here runs unless stderr is a terminal.
"""

from __future__ import annotations

import os
import shutil
import threading
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, TextIO

if TYPE_CHECKING:
    from poller._model import JobRun
    from poller._policy import Step, WaitState

__all__ = ["CLEAR_LINE", "LiveLine", "RunProgress", "format_elapsed", "paint", "use_color"]

# Return to column 0, then erase the whole line (ECMA-48 EL 2).
CLEAR_LINE = "\r\x1b[2K"

_BOLD, _DIM, _RESET = "\x1b[1m", "\x1b[2m", "\x1b[0m"
_STATUS_COLORS = {
    "SCHEDULED": "\x1b[36m",  # cyan
    "IN_PROGRESS": "\x1b[34m",  # blue
    "SUCCESS": "\x1b[32m",  # green
    "PARTIALLY_SUCCEEDED": "\x1b[33m",  # yellow
}
_RED = "\x1b[31m"
# Up to this many runs the line is redrawn on every step, beyond it by the ticker only.
_DRAW_EACH_STEP_UP_TO = 50


def use_color(stream: TextIO, environ: os._Environ[str] | dict[str, str] | None = None) -> bool:
    """Colour only on a terminal, and never when NO_COLOR is set (https://no-color.org)."""
    env = os.environ if environ is None else environ
    if env.get("NO_COLOR"):
        return False
    try:
        return stream.isatty() and env.get("TERM") != "dumb"
    except (AttributeError, ValueError):  # a closed or stand-in stream
        return False


def paint(text: str, status: str | None, color: bool) -> str:
    """``text`` in the colour of ``status`` (red for the failed ones), when colour is on."""
    if not color or status is None:
        return text
    code = _STATUS_COLORS.get(status, _RED if status in _FAILED else _BOLD)
    return f"{code}{text}{_RESET}"


_FAILED = frozenset({"FAILED", "ABORTED", "TIMED_OUT", "CANCELED"})


def format_elapsed(seconds: float) -> str:
    """``42s``, ``3m05s``, ``1h02m03s``: short and steady in width."""
    whole = max(int(seconds), 0)
    hours, rest = divmod(whole, 3600)
    minutes, secs = divmod(rest, 60)
    if hours:
        return f"{hours}h{minutes:02d}m{secs:02d}s"
    if minutes:
        return f"{minutes}m{secs:02d}s"
    return f"{secs}s"


@dataclass(slots=True)
class RunProgress:
    """What the line shows of one run; updated by its wait's ``on_step``."""

    run_id: str
    status: str | None = None
    polls: int = 0
    throttled: int = 0
    next_at: float | None = None  # monotonic time of the next call
    backing_off: bool = False  # the last call failed: the next one is a retry
    done: bool = False


class LiveLine:
    """The status line of one CLI invocation; every method is thread-safe."""

    def __init__(
        self,
        stream: TextIO,
        run_ids: Sequence[str],
        *,
        color: bool,
        clock: Callable[[], float] = time.monotonic,
        refresh: float = 0.5,
        looking: str = "looking for the run",
    ) -> None:
        self._stream = stream
        self._color = color
        self._clock = clock
        self._refresh = refresh
        self._lock = threading.RLock()
        self._runs = {run_id: RunProgress(run_id) for run_id in run_ids}
        # Shown while no run is known yet (--latest: the run is still being looked for).
        self._looking = looking
        self._started = clock()
        self._shown = False  # is a status line on the screen now?
        self._closed = False
        self._stop = threading.Event()
        self._ticker: threading.Thread | None = None

    # -- feeding it -------------------------------------------------------

    def on_step(self, run_id: str) -> Callable[[WaitState, Step], None]:
        """The ``on_step`` hook for the wait on ``run_id``."""

        def hook(state: WaitState, step: Step) -> None:
            with self._lock:
                run = self._run(run_id)
                run.polls = state.polls
                run.throttled = state.throttled
                if state.last is not None:
                    run.status = str(state.last.status)
                run.done = step.done
                run.next_at = None if step.done else self._clock() + step.delay
                # A failed call leaves `last` as it was but bumps the retry count.
                run.backing_off = state.retry_attempt > 0
                self._news()

        return hook

    def finished(self, run_id: str) -> None:
        """The wait on ``run_id`` is over, whatever the reason."""
        with self._lock:
            run = self._run(run_id)
            run.done = True
            run.next_at = None
            self._news()

    def changed(self, run: JobRun) -> None:
        """An ``on_change`` hook: ``run`` was seen with a new status (the run may be new here)."""
        with self._lock:
            self._run(run.id).status = str(run.status)
            self._news()

    def _news(self) -> None:
        # Drawing sums over every run: with a fleet, once per step would cost
        # O(runs) per call, O(runs²) in all, so the ticker alone redraws it.
        if len(self._runs) <= _DRAW_EACH_STEP_UP_TO:
            self._draw()

    def _run(self, run_id: str) -> RunProgress:
        # A run may become known only as it is found (--latest), so none is assumed.
        progress = self._runs.get(run_id)
        if progress is None:
            progress = self._runs[run_id] = RunProgress(run_id)
        return progress

    # -- showing it -------------------------------------------------------

    def start(self) -> LiveLine:
        """Draw the line and keep its clocks ticking until ``close``."""
        with self._lock:
            self._draw()
        self._ticker = threading.Thread(target=self._tick, name="poller-live-line", daemon=True)
        self._ticker.start()
        return self

    def _tick(self) -> None:
        while not self._stop.wait(self._refresh):
            with self._lock:
                self._draw()

    def close(self) -> None:
        """Stop redrawing and erase the line, so what follows starts on a clean line."""
        self._stop.set()
        if self._ticker is not None and self._ticker is not threading.current_thread():
            self._ticker.join()
        with self._lock:
            self._erase()
            self._closed = True
            self._flush()

    def above(self, emit: Callable[[], object]) -> None:
        """Run ``emit`` (which prints something) with the line out of the way, then redraw it."""
        with self._lock:
            self._erase()
            self._flush()
            emit()
            self._draw()

    # -- drawing ----------------------------------------------------------

    def _compose(self, *, color: bool) -> str:
        runs = list(self._runs.values())
        now = self._clock()
        elapsed = format_elapsed(now - self._started)
        polls = sum(r.polls for r in runs)
        throttled = sum(r.throttled for r in runs)
        if not runs:
            head = self._looking
        elif len(runs) == 1:
            run = runs[0]
            status = run.status or "waiting for the first answer"
            head = f"{run.run_id}  {paint(status, run.status, color)}"
        else:
            done = sum(r.done for r in runs)
            counts: dict[str, int] = {}
            for r in runs:
                counts[r.status or "?"] = counts.get(r.status or "?", 0) + 1
            tally = ", ".join(f"{paint(s, s, color)} {n}" for s, n in sorted(counts.items()))
            head = f"{done}/{len(runs)} runs done ({tally})"
        parts = [head, elapsed, f"{polls} poll{'s' * (polls != 1)}"]
        if throttled:
            parts.append(f"{throttled} throttled")
        pending = [r.next_at for r in runs if not r.done and r.next_at is not None]
        if pending:
            wait = max(min(pending) - now, 0.0)
            backing_off = any(r.backing_off for r in runs if not r.done)
            what = "retry" if backing_off else "next check"
            parts.append(f"{what} in {wait:.0f}s" if wait >= 1 else f"{what} in {wait:.1f}s")
        line = " · ".join(parts)
        return f"{_DIM}waiting{_RESET} {line}" if color else f"waiting {line}"

    def _draw(self) -> None:
        if self._closed:
            return
        # A line wider than the terminal wraps, and "\r" then redraws only its
        # last row: keep it one column short of the width.
        width = self._columns() - 1
        plain = self._compose(color=False)
        line = self._compose(color=self._color) if len(plain) <= width else plain[:width]
        self._write(CLEAR_LINE + line)
        self._shown = True
        self._flush()

    def _columns(self) -> int:
        # The line is on stderr, which may be a terminal while stdout is a pipe.
        try:
            columns = os.get_terminal_size(self._stream.fileno()).columns
        except (AttributeError, OSError, ValueError):
            columns = shutil.get_terminal_size().columns
        return columns if columns > 10 else 80  # a pty nobody sized reports 0

    def _erase(self) -> None:
        if self._shown:
            self._write(CLEAR_LINE)
            self._shown = False

    def _write(self, text: str) -> None:
        try:
            self._stream.write(text)
        except (OSError, ValueError):  # the terminal went away: nothing left to show
            self._closed = True

    def _flush(self) -> None:
        try:
            self._stream.flush()
        except (OSError, ValueError):
            self._closed = True
