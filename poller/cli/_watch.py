"""``poller watch``: one result document per finished run of a job, as they end.

The watch runs on one worker thread (its own event loop, the shared watch
driver `poller._watching`); the main thread prints each announcement as it
comes and handles SIGINT, SIGTERM and SIGHUP at once. It ends when ``--count``
runs were announced, at ``--timeout``, on a signal, or on an error no retry
can fix (denied, invalid, the job not found), with `poller wait`'s exit codes.

Only click and the CLI's light modules are imported here: ``poller --help``
stays light.
"""

from __future__ import annotations

import queue
import signal
import threading
import time
from collections.abc import Callable
from datetime import datetime
from typing import TYPE_CHECKING, Any

import click

from poller._config import DURATION_HELP, Settings, parse_duration
from poller.cli._exit import WAIT_MEANINGS, ExitCode, combined, for_result, for_signal, leave

if TYPE_CHECKING:
    from poller._model import WaitResult
    from poller.cli._live import LiveLine
    from poller.cli._render import Output

__all__ = ["END_STATES", "WATCH_MEANINGS", "watch_command"]

#: The end states a watch announces unless --status says which.
END_STATES = ("SUCCESS", "PARTIALLY_SUCCEEDED", "FAILED", "ABORTED", "TIMED_OUT", "CANCELED")

#: The exit codes of `poller watch`: `poller wait`'s, over every run announced.
WATCH_MEANINGS = {
    ExitCode.SUCCEEDED: "--count runs were announced and every one ended SUCCESS (or "
    "PARTIALLY_SUCCEEDED with allow_partial)",
    ExitCode.FAILED: "a run announced ended FAILED, ABORTED, TIMED_OUT or CANCELED, also "
    "when --timeout then passed",
    ExitCode.USAGE: WAIT_MEANINGS[ExitCode.USAGE],
    ExitCode.PARTIAL: "a run announced ended PARTIALLY_SUCCEEDED, without allow_partial",
    ExitCode.WAIT_TIMEOUT: "--timeout passed before --count runs were announced (always, "
    "without --count) and no run announced failed",
    ExitCode.UNREADABLE: "the job could not be watched: access denied, no credentials, "
    "the job not found, max_errors transient faults in a row",
    ExitCode.SIGHUP: "interrupted by SIGHUP",
    ExitCode.SIGINT: "interrupted by SIGINT (Ctrl-C)",
    ExitCode.STDOUT_CLOSED: WAIT_MEANINGS[ExitCode.STDOUT_CLOSED],
    ExitCode.SIGTERM: "interrupted by SIGTERM",
}

_SIGNALS = (signal.SIGINT, signal.SIGTERM, signal.SIGHUP)
_TICK = 0.05
# After a signal the program is gone within this, whatever is stuck.
_HARD_STOP = 0.9


def _duration(flag: str) -> Callable[[click.Context, click.Parameter, Any], float | None]:
    def convert(_: click.Context, __: click.Parameter, value: Any) -> float | None:
        if value is None:
            return None
        try:
            return parse_duration(value, allow_none=True)
        except ValueError as exc:
            raise click.BadParameter(str(exc), param_hint=flag) from None

    return convert


def watch_command(
    with_settings: Callable[..., Callable[[Callable[..., Any]], Callable[..., Any]]],
    domain_option: Callable[[Any], Any],
    parse_since: Callable[[str], datetime],
    epilog: Callable[..., str],
) -> click.Command:
    """The ``watch`` command, built with the shared options of ``poller.cli._commands``."""

    @click.command(
        name="watch",
        epilog=epilog(
            "poller watch --domain-identifier dzd_abc123 --job-identifier job-7",
            "poller watch --domain-identifier dzd_abc123 --job-identifier job-7 --status FAILED "
            "--count 1 --timeout 12h",
            codes=WATCH_MEANINGS,
        ),
    )
    @domain_option
    @click.option(
        "--job-identifier", required=True, metavar="JOB", help="The job whose runs to watch."
    )
    @click.option(
        "--since",
        metavar="TIMESTAMP",
        default=None,
        help="Announce runs that ended at or after TIMESTAMP (ISO 8601, e.g. "
        "2026-11-24T10:00:00Z, or epoch seconds) [default: now].",
    )
    @click.option(
        "--status",
        "statuses",
        multiple=True,
        type=click.Choice(END_STATES, case_sensitive=False),
        help="Announce runs that end with this status; repeat for several [default: all six].",
    )
    @click.option(
        "--count",
        type=click.IntRange(min=1),
        default=None,
        metavar="N",
        help="Stop after N runs were announced [default: never].",
    )
    @click.option(
        "--timeout",
        metavar="D",
        default=None,
        callback=_duration("--timeout"),
        help=f"Stop after D: {DURATION_HELP} [default: none].",
    )
    @click.option(
        "--interval",
        metavar="D",
        default="25s",
        callback=_duration("--interval"),
        help="Between two looks at the job while one of its runs may be ending; the job's "
        "history says when that is [25s].",
    )
    @with_settings()
    def watch(
        domain_identifier: str,
        job_identifier: str,
        since: str | None,
        statuses: tuple[str, ...],
        count: int | None,
        timeout: float | None,
        interval: float | None,
        settings: Settings,
        output: Output,
    ) -> int:
        """Print a result document for each run of a job that finishes, as it finishes.

        Runs that ended before --since (default: now) are not announced; each
        one that ends after is, once, with its lineage. The watch lists the
        job's runs (ListJobRuns) only when one can have ended, by the job's
        history, and reads each run it announces once (GetJobRun).
        """
        from poller._latest import validate_job_ids  # noqa: PLC0415

        validate_job_ids(domain_identifier, job_identifier)
        if interval is None or interval <= 0:
            raise click.BadParameter("must be a positive duration", param_hint="--interval")
        when = parse_since(since) if since is not None else None
        plan = _Plan(
            domain_identifier,
            job_identifier,
            when,
            tuple(sorted({s.upper() for s in statuses})) or END_STATES,
            count,
            timeout,
            interval,
            settings,
            output,
            _program(),
        )
        return _execute(plan)

    return watch


def _program() -> bool:
    obj = click.get_current_context().find_root().obj
    return bool(getattr(obj, "program", False))


class _Plan:
    def __init__(
        self,
        domain_id: str,
        job_id: str,
        since: datetime | None,
        statuses: tuple[str, ...],
        count: int | None,
        timeout: float | None,
        interval: float,
        settings: Settings,
        output: Output,
        program: bool,
    ) -> None:
        self.domain_id = domain_id
        self.job_id = job_id
        self.since = since
        self.statuses = statuses
        self.count = count
        self.timeout = timeout
        self.interval = interval
        self.settings = settings
        self.output = output
        self.program = program

    @property
    def what(self) -> str:
        ends = "any end" if self.statuses == END_STATES else "/".join(self.statuses)
        return f"job {self.job_id} in domain {self.domain_id} ({ends})"


_END = object()


def _execute(plan: _Plan) -> int:
    from poller.cli._render import StdoutGone  # noqa: PLC0415  (keeps --help light)

    out = plan.output
    if out.stdout is None:
        out.error("poller: error: stdout is closed: there is nowhere to print the results")
        return ExitCode.STDOUT_CLOSED
    live = _live_line(plan)
    _configure_logging(plan, live)
    items: queue.Queue[Any] = queue.Queue()
    stop = threading.Event()
    signals: list[int] = []
    work = threading.Thread(
        target=_work, args=(plan, items, stop), name="poller-watch", daemon=True
    )

    def on_signal(signum: int, _frame: object = None) -> None:
        signals.append(signum)
        stop.set()
        if plan.program:

            def hard_stop() -> None:
                time.sleep(_HARD_STOP)
                leave(for_signal(signals[0]))

            threading.Thread(target=hard_stop, daemon=True).start()

    main = threading.current_thread() is threading.main_thread()
    previous = {sig: signal.signal(sig, on_signal) for sig in _SIGNALS} if main else {}
    codes: list[ExitCode] = []
    ends = None if plan.timeout is None else time.monotonic() + plan.timeout
    try:
        if live is not None:
            live.start()
        work.start()
        code = _report(plan, items, stop, signals, codes, ends, live)
    except StdoutGone as gone:
        out.error(f"poller: error: {gone}: the results are lost")
        code = ExitCode.STDOUT_CLOSED
    finally:
        stop.set()
        if live is not None:
            live.close()
        for sig, old in previous.items():
            signal.signal(sig, old)
    if plan.program and (signals or code is ExitCode.STDOUT_CLOSED):
        leave(code)  # a call may still be out: do not wait for it
    return code


def _report(
    plan: _Plan,
    items: queue.Queue[Any],
    stop: threading.Event,
    signals: list[int],
    codes: list[ExitCode],
    ends: float | None,
    live: Any,
) -> ExitCode:
    out = plan.output
    allow = plan.settings.allow_partial
    while True:
        if signals:
            out.note(f"poller: watch of {plan.what} interrupted; {len(codes)} run(s) announced")
            return combined([*codes, for_signal(signals[0])])
        if ends is not None and time.monotonic() >= ends:
            out.note(f"poller: watch of {plan.what}: --timeout passed; {len(codes)} announced")
            return combined([*codes, ExitCode.WAIT_TIMEOUT])
        try:
            item = items.get(timeout=_TICK)
        except queue.Empty:
            continue
        if isinstance(item, BaseException):
            if signals:
                continue  # reported as the interruption it is
            return _failed(plan, item)
        result: WaitResult = item
        codes.append(for_result(result, allow_partial=allow))
        if live is not None:
            live.announce(result.job_run_id, str(result.job_run.status if result.job_run else ""))
        out.result(result)
        if plan.count is not None and len(codes) >= plan.count:
            return combined(codes)


def _failed(plan: _Plan, error: BaseException) -> ExitCode:
    from poller.errors import InvalidRequestError, PollerError  # noqa: PLC0415

    name = type(error).__name__
    message = str(error) if isinstance(error, PollerError) else f"internal error: {error}"
    plan.output.error(f"poller: watch of {plan.what} stopped: {name}: {message}")
    return ExitCode.USAGE if isinstance(error, InvalidRequestError) else ExitCode.UNREADABLE


def _work(plan: _Plan, items: queue.Queue[Any], stop: threading.Event) -> None:
    """The watch, on this worker thread's own event loop; each announcement goes to ``items``."""
    import asyncio  # noqa: PLC0415
    import contextlib  # noqa: PLC0415

    async def main() -> None:
        from poller._runtime import ClientSettings, resolve_client  # noqa: PLC0415
        from poller._watching import watch_job_runs  # noqa: PLC0415

        s = plan.settings
        client = resolve_client(
            ClientSettings(
                region_name=s.region or None,
                profile_name=s.profile or None,
                endpoint_url=s.endpoint_url or None,
                connect_timeout=s.connect_timeout,
                read_timeout=s.read_timeout,
            )
        )
        s.budget(client)  # the account's, as `poller wait` sets it
        stream = watch_job_runs(
            plan.domain_id,
            plan.job_id,
            since=plan.since,
            statuses=plan.statuses,
            client=client,
            interval=plan.interval,
            policy=s.policy(),
        )

        async def stopped() -> None:
            while not stop.is_set():
                await asyncio.sleep(_TICK)

        stopper = asyncio.create_task(stopped())
        try:
            while not stop.is_set():
                step = asyncio.ensure_future(anext(stream, _END))
                await asyncio.wait({step, stopper}, return_when=asyncio.FIRST_COMPLETED)
                if not step.done():
                    step.cancel()
                    with contextlib.suppress(asyncio.CancelledError):
                        await step  # the stream is no longer running: it can be closed
                    return
                item = step.result()
                if item is _END:
                    return
                items.put(item)
        finally:
            stopper.cancel()
            await stream.aclose()

    try:
        asyncio.run(main())
    except BaseException as error:  # every failure is one line, never a traceback
        if not stop.is_set():  # a stop asked for is not a failure
            items.put(error)


def _live_line(plan: _Plan) -> Any:
    """The live line of a watch: what is watched, for how long, and what was announced."""
    import os  # noqa: PLC0415

    from poller.cli._live import LiveLine, format_elapsed, paint  # noqa: PLC0415
    from poller.cli._render import is_terminal  # noqa: PLC0415

    class WatchLine(LiveLine):
        def __init__(self, stream: Any, color: bool) -> None:
            super().__init__(stream, [], color=color)
            self.announced = 0
            self.last: tuple[str, str] | None = None

        def announce(self, run_id: str, status: str) -> None:
            with self._lock:
                self.announced += 1
                self.last = (run_id, status)
                self._draw()

        def _compose(self, *, color: bool) -> str:
            parts = [plan.what, format_elapsed(self._clock() - self._started)]
            parts.append(f"{self.announced} announced")
            if self.last is not None:
                parts.append(f"last {self.last[0]} {paint(self.last[1], self.last[1], color)}")
            line = " · ".join(parts)
            return f"\x1b[2mwatching\x1b[0m {line}" if color else f"watching {line}"

    out = plan.output
    stream = out.stderr.raw
    if out.quiet or stream is None or not is_terminal(stream) or os.environ.get("TERM") == "dumb":
        return None
    line = WatchLine(stream, out.err_color)
    out.live = line
    return line


def _configure_logging(plan: _Plan, live: LiveLine | None) -> None:
    from poller.cli._render import is_terminal  # noqa: PLC0415
    from poller.log import configure_logging  # noqa: PLC0415

    out = plan.output
    stream: Any = out.log_stream()
    fmt = plan.settings.log_format
    if fmt == "auto":
        fmt = "console" if is_terminal(out.stderr.raw) else "json"
    configure_logging(fmt, "critical" if out.quiet else plan.settings.log_level, stream)
