"""Running a command's waits: one worker thread, results printed as they come, signals.

The main thread only prints. The waits run on one worker thread (the fan-out
runs all of them on its own event loop), so a signal is handled at once even
while a call is stuck on a silent or trickling server. After the first
SIGINT, SIGTERM or SIGHUP the waits are cancelled and given ``GRACE`` seconds
to report ``interrupted``; a run that has not reported by then is reported
from the last state its wait showed. The results since the signal are printed
together, a chunk to a write (runs whose waits showed nothing share one
rendered document), and the program leaves at once (``os._exit``), without
waiting for a call still in flight: no CI runner's SIGKILL ever finds it
still there. A second signal cuts the grace short. Should the second after
the signal end before every result is printed, stderr says how many were not
and the exit code is 141 (results lost), never the signal's.
"""

from __future__ import annotations

import os
import queue
import re
import signal
import threading
import time
from collections.abc import Callable, Iterator, Mapping, MutableMapping, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, field
from datetime import datetime
from typing import TYPE_CHECKING, Any

from poller._config import Settings
from poller.cli._exit import ExitCode, combined, for_result, for_signal, for_status, leave
from poller.cli._render import Output, StdoutGone, is_terminal

if TYPE_CHECKING:
    from poller._model import JobRun, WaitResult
    from poller._policy import Step, WaitState
    from poller.cli._live import LiveLine

__all__ = ["GRACE", "Plan", "execute"]

#: How long the waits have, after a signal, to report ``interrupted`` themselves.
GRACE = 0.3
#: After the first signal the program is gone within this, whatever is stuck.
_HARD_STOP = 0.9
#: After a second signal.
_HARD_STOP_AGAIN = 0.1
_TICK = 0.05
_SIGNALS = (signal.SIGINT, signal.SIGTERM, signal.SIGHUP)


@dataclass(slots=True)
class Plan:
    """One invocation's waits, resolved from flags, config and environment."""

    domain_id: str
    run_ids: Sequence[str]
    settings: Settings
    output: Output
    once: bool = False  # `status`: read once instead of waiting
    resume: Callable[[Sequence[str]], str] | None = None  # the command that resumes a wait
    # Latest-run mode: wait on this job's newest run (or the first created since `since`).
    job_id: str | None = None
    since: datetime | None = None
    # The `poller` process itself (not main() called by a test or a host): after
    # a signal or a lost stdout it leaves with os._exit.
    program: bool = False


# ---------------------------------------------------------------------------
# Signals


@dataclass(slots=True)
class _Stop:
    """The first signal's number, when it came, and the deadline of the grace."""

    program: bool
    cancel: threading.Event = field(default_factory=threading.Event)
    signum: int | None = None
    grace_ends: float | None = None
    # Said by the hard stop before the process ends: the exit code instead of the
    # signal's when it cuts results off (None: nothing was cut off).
    last_words: Callable[[], ExitCode | None] | None = None

    def on_signal(self, signum: int, _frame: object = None) -> None:
        now = time.monotonic()
        if self.signum is None:
            self.signum = signum
            self.grace_ends = now + GRACE
            self.cancel.set()
            self._hard_stop(_HARD_STOP)
        else:  # a second signal: no more grace
            self.grace_ends = now
            self._hard_stop(_HARD_STOP_AGAIN)

    def _hard_stop(self, after: float) -> None:
        if not self.program:
            return
        code = for_signal(self.signum)

        def stop() -> None:
            time.sleep(after)
            cut = self.last_words() if self.last_words is not None else None
            leave(code if cut is None else cut)

        threading.Thread(target=stop, name="poller-hard-stop", daemon=True).start()

    def grace_over(self) -> bool:
        return self.grace_ends is not None and time.monotonic() >= self.grace_ends


@contextmanager
def _stop_on_signals(program: bool) -> Iterator[_Stop]:
    """SIGINT, SIGTERM and SIGHUP stop the wait (never the run); the handlers are put back."""
    stop = _Stop(program)
    if threading.current_thread() is not threading.main_thread():
        yield stop  # only the main thread may install handlers (an embedding host's job)
        return
    previous = {sig: signal.signal(sig, stop.on_signal) for sig in _SIGNALS}
    try:
        yield stop
    finally:
        for sig, old in previous.items():
            signal.signal(sig, old)


# ---------------------------------------------------------------------------
# What each wait last showed, to report a wait that cannot report itself


class _Tracker:
    """The last state of every wait (and the run --latest found), fed by the hooks."""

    def __init__(self, live: LiveLine | None) -> None:
        self._live = live
        self.states: dict[str, WaitState] = {}
        self.found: JobRun | None = None

    def on_step(self, run_id: str) -> Callable[[WaitState, Step], None]:
        draw = self._live.on_step(run_id) if self._live is not None else None

        def hook(state: WaitState, step: Step) -> None:
            self.states[run_id] = state
            if draw is not None:
                draw(state, step)

        return hook

    def on_change(self, run: JobRun) -> None:
        self.found = run
        if self._live is not None:
            self._live.changed(run)

    def knows(self, run_id: str) -> bool:
        """Whether the wait on ``run_id`` showed anything: a step, or the run it found."""
        return run_id in self.states or (self.found is not None and self.found.id == run_id)

    def interrupted(self, domain_id: str, run_ids: Sequence[str]) -> list[WaitResult]:
        """The ``interrupted`` results of waits stopped before they could say so themselves."""
        from poller._model import Outcome, WaitResult  # noqa: PLC0415
        from poller.errors import WaitCancelledError  # noqa: PLC0415

        now = time.monotonic()
        results = []
        for run_id in run_ids:
            state = self.states.get(run_id)
            last = state.last if state is not None else None
            if last is None and self.found is not None and self.found.id == run_id:
                last = self.found
            error = WaitCancelledError(
                "the wait was stopped by a signal; the job run itself was not touched",
                job_run=last,
            )
            results.append(
                WaitResult(
                    domain_id=domain_id,
                    job_run_id=run_id,
                    outcome=Outcome.INTERRUPTED,
                    job_run=last,
                    polls=state.polls if state else 0,
                    throttled=state.throttled if state else 0,
                    errors_retried=state.errors_retried if state else 0,
                    waited_s=now - state.started if state else 0.0,
                    error=error,
                )
            )
        return results


# ---------------------------------------------------------------------------
# The waits


def _error_result(domain_id: str, run_id: str, error: BaseException) -> WaitResult:
    """The ``error`` result of run ``run_id`` for an error that ended the waits (not one wait).

    One error may end every wait of the invocation: each run gets a result
    of its own, naming it, with a copy of the error (an error holds one result).
    """
    import copy  # noqa: PLC0415

    from poller._model import Outcome, WaitResult  # noqa: PLC0415
    from poller.errors import PollerError, WaitCancelledError  # noqa: PLC0415

    if isinstance(error, PollerError) and error.result is not None:
        if error.result.job_run_id == run_id:
            return error.result
        error = copy.copy(error)
        error.result = None
    if isinstance(error, WaitCancelledError):
        return WaitResult(domain_id, run_id, Outcome.INTERRUPTED, error=error)
    if not isinstance(error, PollerError):
        # A bug, not a verdict on the run: still one line and a document, no traceback.
        error = PollerError(f"internal error: {type(error).__name__}: {error}")
    return WaitResult.from_error(domain_id, run_id, error)


Put = Callable[["WaitResult"], None]


def _waits(plan: Plan, client: Any, stop: _Stop, tracker: _Tracker, put: Put) -> None:
    """Every wait of ``plan``, on this (worker) thread; each result goes to ``put``."""
    policy = plan.settings.policy()
    plan.settings.budget(client)  # the account's, for every kind of wait below
    if plan.job_id is not None:
        from poller._latest import latest_result  # noqa: PLC0415

        put(
            latest_result(
                plan.domain_id,
                plan.job_id,
                since=plan.since,
                policy=policy,
                client=client,
                on_change=tracker.on_change,
                cancel=stop.cancel,
            )
        )
    elif plan.once:
        from poller._waiter import read_result  # noqa: PLC0415

        (run_id,) = plan.run_ids
        put(
            read_result(
                plan.domain_id,
                run_id,
                policy=policy,
                client=client,
                on_step=tracker.on_step(run_id),
                cancel=stop.cancel,
            )
        )
    else:
        from poller._fanout import wait_for_job_runs  # noqa: PLC0415

        wait_for_job_runs(
            ((plan.domain_id, run_id) for run_id in plan.run_ids),
            policy=policy,
            client=client,
            on_result=put,
            on_step=lambda ref: tracker.on_step(ref[1]),
            cancel=stop.cancel,
        )


def _build_client(plan: Plan) -> Any:
    """The invocation's client; a bad endpoint, no region or an unknown profile is bad input.

    Those raise InvalidRequestError here, before any wait: one line, exit 2.
    """
    from poller._runtime import ClientSettings  # noqa: PLC0415

    settings = plan.settings
    return ClientSettings(
        region_name=settings.region or None,
        profile_name=settings.profile or None,
        endpoint_url=settings.endpoint_url or None,
        connect_timeout=settings.connect_timeout,
        read_timeout=settings.read_timeout,
    ).build(max_pool_connections=10)  # a fan-out's calls go through a few workers


# ---------------------------------------------------------------------------
# Logging for the CLI


def _configure_logging(plan: Plan, live: LiveLine | None) -> None:
    from poller.log import configure_logging  # noqa: PLC0415

    out = plan.output
    # Whole lines, through the output's one lock (above the live line, if any); stderr as
    # a TolerantStream underneath: logs never break a wait, whatever became of it.
    stream: Any = out.log_stream()
    fmt = plan.settings.log_format
    if fmt == "auto":
        fmt = "console" if is_terminal(out.stderr.raw) else "json"
    level = "critical" if out.quiet else plan.settings.log_level
    configure_logging(fmt, level, stream)
    if live is not None:
        # A person at a terminal sees the result right below; the `finished`
        # event would print the same document again as one very long line.
        import structlog  # noqa: PLC0415

        processors = structlog.get_config()["processors"]
        structlog.configure(processors=[_drop_finished, *processors])


def _quiet_logs() -> None:
    """No more log events: the waits still stopping must not slow the printing of results."""
    import logging  # noqa: PLC0415

    import structlog  # noqa: PLC0415

    structlog.configure(wrapper_class=structlog.make_filtering_bound_logger(logging.CRITICAL))


def _drop_finished(_: object, __: str, event: MutableMapping[str, Any]) -> Mapping[str, Any]:
    import structlog  # noqa: PLC0415

    if event.get("event") == "finished":
        raise structlog.DropEvent
    return event


def _live_line(plan: Plan) -> LiveLine | None:
    out = plan.output
    stream = out.stderr.raw
    if out.quiet or stream is None or not is_terminal(stream) or os.environ.get("TERM") == "dumb":
        return None
    from poller.cli._live import LiveLine  # noqa: PLC0415

    looking = f"looking for the latest run of job {plan.job_id}" if plan.job_id else "waiting"
    return LiveLine(stream, plan.run_ids, color=out.err_color, looking=looking)


# ---------------------------------------------------------------------------
# Execution


def execute(plan: Plan) -> ExitCode:
    """Wait on the runs of ``plan``; print each result as it comes; the exit code."""
    out = plan.output
    plan.settings.policy()  # inconsistent settings are a usage error, found before any call
    if out.stdout is None:
        out.error("poller: error: stdout is closed: there is nowhere to print the results")
        return ExitCode.STDOUT_CLOSED
    live = _live_line(plan)
    out.live = live
    _configure_logging(plan, live)
    client = _build_client(plan)

    results: queue.Queue[WaitResult] = queue.Queue()
    tracker = _Tracker(live)
    expected = 1 if plan.job_id is not None or plan.once else len(plan.run_ids)
    with _stop_on_signals(plan.program) as stop:

        def work() -> None:
            try:
                _waits(plan, client, stop, tracker, results.put)
            except BaseException as exc:  # every run yields a document, whatever happened
                for run_id in report.missing(tracker):
                    results.put(_error_result(plan.domain_id, run_id, exc))

        report = _Report(plan, stop, expected)
        stop.last_words = report.last_words
        if live is not None:
            live.start()
        worker = threading.Thread(target=work, name="poller-waits", daemon=True)
        worker.start()
        try:
            while len(report.done) < expected:
                if stop.grace_over():
                    # What came in is reported; the runs whose waits have not said
                    # so yet are reported from the last state they showed.
                    for _ in range(results.qsize()):
                        report(results.get_nowait())
                    _quiet_logs()  # the waits' own reports of it, which come too late
                    seen: list[str] = []
                    unread: list[str] = []
                    for run_id in report.missing(tracker):
                        (seen if tracker.knows(run_id) else unread).append(run_id)
                    for result in tracker.interrupted(plan.domain_id, seen):
                        report(result)
                    if unread:  # alike but for their IDs: one document, many times
                        (like,) = tracker.interrupted(plan.domain_id, [_SOME_RUN])
                        report.alike(like, unread)
                    break
                try:
                    report(results.get(timeout=_TICK))
                except queue.Empty:
                    if not worker.is_alive() and results.empty():
                        # The waits are over and some run has no result: never wait
                        # for one that cannot come (a bug), report it instead.
                        lost = RuntimeError("the wait ended without a result for this run")
                        for run_id in report.missing(tracker):
                            report(_error_result(plan.domain_id, run_id, lost))
                        break
            report.print_held()
            code = combined(report.codes)
            if report.timed_out and plan.resume is not None:
                out.note(f"To keep waiting: {plan.resume(report.timed_out)}")
        except StdoutGone as gone:
            stop.cancel.set()
            out.error(f"poller: error: {gone}: the results are lost")
            code = ExitCode.STDOUT_CLOSED
        finally:
            if live is not None:
                live.close()
    if plan.program and (stop.signum is not None or code is ExitCode.STDOUT_CLOSED):
        leave(code)  # a call may still be stuck: do not wait for it
    return code


#: After a signal, per-run "wait interrupted" messages up to this many runs; one line beyond.
_NOTES_UP_TO = 10
#: A run ID no run has (too long for one), standing for the ID in a document many runs share.
_SOME_RUN = "poller-cli-run-id-that-no-run-can-have"
_PLAIN_ID = re.compile(r"[A-Za-z0-9_-]+")


class _Report:
    """Prints each result with its message, and keeps the exit codes.

    After a signal the results are held, and printed together (``print_held``),
    a chunk to a write, once the waits are done or their grace is over: every
    document fits in the second a signal allows, however many runs there are.
    """

    def __init__(self, plan: Plan, stop: _Stop, expected: int) -> None:
        self._plan = plan
        self._stop = stop
        self._expected = expected
        # Since the signal: the documents to print (a result, or one already rendered)
        # and what to say of each (a result, or the ID of a run whose wait showed nothing).
        self._held: list[tuple[WaitResult, bool] | str] = []
        self._held_notes: list[tuple[WaitResult | str, ExitCode]] = []
        self.printed = 0
        self.done: set[str] = set()
        self.codes: list[ExitCode] = []
        self.timed_out: list[str] = []

    def missing(self, tracker: _Tracker) -> list[str]:
        if self._plan.job_id is not None:
            return [tracker.found.id if tracker.found is not None else ""]
        return [run_id for run_id in self._plan.run_ids if run_id not in self.done]

    def __call__(self, result: WaitResult) -> None:
        plan = self._plan
        if result.job_run_id in self.done and plan.job_id is None:
            return  # reported already (from the tracker, as the grace ran out)
        self.done.add(result.job_run_id)
        code = for_result(
            result, allow_partial=plan.settings.allow_partial, signum=self._stop.signum
        )
        running = result.error is None and result.job_run and not result.job_run.is_terminal
        if plan.once:
            code = ExitCode.SUCCEEDED if running else for_status(code)
        self.codes.append(code)
        finished = not (plan.once and running)
        if self._stop.signum is not None:
            self._held.append((result, finished))
            self._held_notes.append((result, code))
            return
        out = plan.output
        if out.live is not None:
            out.live.finished(result.job_run_id)
            if len(plan.run_ids) <= 1:
                out.live.close()
        out.result(result, finished=finished)
        self.printed += 1
        self._note(result, code)

    def alike(self, like: WaitResult, run_ids: Sequence[str]) -> None:
        """Runs whose results are ``like``'s but for their IDs, rendered once (after a signal)."""
        import json  # noqa: PLC0415

        code = for_result(like, allow_partial=False, signum=self._stop.signum)
        head, some, tail = self._plan.output.document(like, finished=True).partition(_SOME_RUN)
        assert some, "the document names its run"
        text = self._plan.output.fmt == "text"
        for run_id in run_ids:
            # A valid run ID needs no escaping in JSON; the IDs of malformed lines do.
            plain = text or _PLAIN_ID.fullmatch(run_id)
            shown = run_id if plain else json.dumps(run_id, ensure_ascii=False)[1:-1]
            self._held.append(f"{head}{shown}{tail}")
        self._held_notes += [(run_id, code) for run_id in run_ids]
        self.done.update(run_ids)
        self.codes.append(code)

    def print_held(self) -> None:
        """Print the results held since the signal: documents first, then their messages."""
        if not self._held:
            return
        out = self._plan.output
        if out.live is not None:
            out.live.close()
        base = self.printed
        out.results(self._held, printed=lambda n: setattr(self, "printed", base + n))
        interrupted = sum(
            isinstance(what, str) or str(what.outcome) == "interrupted"
            for what, _ in self._held_notes
        )
        for what, code in self._held_notes:
            if isinstance(what, str):
                if interrupted <= _NOTES_UP_TO:
                    self._interrupted_note(what, None)
            elif interrupted <= _NOTES_UP_TO or str(what.outcome) != "interrupted":
                self._note(what, code)
        if interrupted > _NOTES_UP_TO:
            out.note(
                f"poller: {interrupted} waits interrupted (each document has the last "
                "status seen); the job runs themselves were not touched"
            )
        self._held, self._held_notes = [], []

    def last_words(self) -> ExitCode | None:
        """Said by the hard stop: how many results it cuts off, if any, and the code for it."""
        out = self._plan.output
        out.freeze()  # a chunk being written is written whole, and counted
        missing = self._expected - self.printed
        if missing <= 0:
            return None
        out.last_word(
            f"poller: {missing} of {self._expected} results were not printed: the process "
            f"ends within a second of a signal (exit {int(ExitCode.STDOUT_CLOSED)})"
        )
        return ExitCode.STDOUT_CLOSED

    def _note(self, result: WaitResult, code: ExitCode) -> None:
        plan, out = self._plan, self._plan.output
        error = result.error
        outcome = str(result.outcome)
        if code is ExitCode.WAIT_TIMEOUT and not plan.once:
            self.timed_out.append(result.job_run_id)
            out.note(f"poller: {self._who(result.job_run_id)}: {error}")
        elif error is not None and outcome == "error":
            hint = ""
            if type(error).__name__ == "JobRunNotFoundError":
                hint = f" (check {self._what_to_check()}, the domain and the region)"
            who = self._who(result.job_run_id)
            out.note(f"poller: {who}: {type(error).__name__}: {error}{hint}")
        elif outcome == "interrupted":
            self._interrupted_note(result.job_run_id, result.job_run)

    def _interrupted_note(self, run_id: str, last: JobRun | None) -> None:
        seen = last.status if last is not None else "none seen"
        self._plan.output.note(
            f"poller: {self._who(run_id)}: wait interrupted (last status: {seen}); "
            "the job run itself was not touched"
        )

    def _what_to_check(self) -> str:
        return "the job ID" if self._plan.job_id is not None else "the run ID"

    def _who(self, run_id: str) -> str:
        """What a message names: the run, or the job whose run was not found (--latest)."""
        return run_id or f"job {self._plan.job_id}"
