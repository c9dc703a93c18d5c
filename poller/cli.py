"""The ``poller`` command line: ``wait``, ``status`` and ``demo``.

stdout carries results only (one JSON document per run, or a short text
summary); stderr carries logs, one-line errors and, on a terminal, a live
status line. Exit codes follow docs/design.md's table. No error reaches the user as
a traceback.

Start-up time matters (a CI step may call ``poller wait`` many times), so
this module imports only click and the standard library at the top; boto3,
structlog and the rest are imported by the commands that need them.
"""

from __future__ import annotations

import json
import os
import shlex
import signal
import sys
import threading
from collections.abc import Callable, Iterator, Mapping, MutableMapping, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import TYPE_CHECKING, Any, TextIO

import click

from poller._config import DURATION_HELP, ConfigError, Settings, load_settings

if TYPE_CHECKING:
    from poller._model import WaitResult
    from poller._progress import LiveLine

__all__ = ["EXIT_CODES", "cli", "exit_code", "main"]

# code -> meaning; the --help text and the README table are generated from this.
EXIT_CODES: Mapping[int, str] = {
    0: "SUCCESS (or PARTIALLY_SUCCEEDED with --allow-partial)",
    1: "the run ended FAILED, ABORTED, TIMED_OUT or CANCELED",
    2: "usage error or bad input: unknown flag, malformed ID, bad duration, "
    "invalid config, ValidationException",
    3: "PARTIALLY_SUCCEEDED without --allow-partial",
    4: "the wait's deadline passed before the run finished",
    5: "the status could not be read: not found, access denied, no credentials, "
    "transient faults did not clear",
    130: "interrupted by SIGINT (130) or SIGTERM (143); the last state is still printed",
}
# `poller status` reports a status rather than judging it.
STATUS_EXIT_CODES: Mapping[int, str] = {
    0: "the status was read, whatever it is (use `poller wait --timeout 0` for an exit code "
    "that follows the run's status)",
    2: EXIT_CODES[2],
    4: "throttling did not let a call through before the timeout",
    5: EXIT_CODES[5],
    130: EXIT_CODES[130],
}
EXIT_USAGE = 2
EXIT_UNREADABLE = 5
_SIGNAL_EXIT = {signal.SIGINT: 130, signal.SIGTERM: 143}


def _exit_help(codes: Mapping[int, str]) -> str:
    import textwrap  # noqa: PLC0415

    rows = (
        textwrap.fill(text, 86, initial_indent=f"  {code:<4} ", subsequent_indent=" " * 7)
        for code, text in codes.items()
    )
    return "\b\nExit codes:\n" + "\n".join(rows)


_EXIT_HELP = _exit_help(EXIT_CODES)


def _epilog(*examples: str) -> str:
    lines = "\n".join(f"  $ {example}" for example in examples)
    return f"\b\nExample:\n{lines}\n\n{_EXIT_HELP}"


def _prog_name() -> str:
    # `python -m poller` runs __main__.py, whose argv[0] is a path to it.
    main_module = sys.modules.get("__main__")
    if getattr(main_module, "__package__", None) == "poller":
        return "python -m poller"
    return "poller"


# ---------------------------------------------------------------------------
# Exit codes


def exit_code(result: WaitResult, *, allow_partial: bool, signum: int | None = None) -> int:
    """The exit code of one run's result, as docs/design.md's table says."""
    from poller.errors import InvalidRequestError, WaitTimeoutError  # noqa: PLC0415

    outcome = str(result.outcome)
    if outcome == "succeeded":
        return 0
    if outcome == "partially_succeeded":
        return 0 if allow_partial else 3
    if outcome == "failed":
        return 1
    if outcome == "interrupted":
        return _SIGNAL_EXIT.get(signal.Signals(signum), 130) if signum else 130
    if outcome == "wait_timeout" or isinstance(result.error, WaitTimeoutError):
        return 4
    if isinstance(result.error, InvalidRequestError):
        return EXIT_USAGE
    return EXIT_UNREADABLE


def combined_exit_code(codes: Sequence[int]) -> int:
    """Several runs: an interruption wins, otherwise the highest code."""
    for special in (143, 130):
        if special in codes:
            return special
    return max(codes, default=0)


# ---------------------------------------------------------------------------
# Errors that end the command before any wait


class UsageProblem(Exception):
    """Bad input found before any AWS call: one line on stderr, nothing on stdout, exit 2."""


# ---------------------------------------------------------------------------
# Output


@dataclass(slots=True)
class Output:
    """Where results and messages go, and how they look."""

    fmt: str  # "json" | "text"
    quiet: bool
    stdout: TextIO
    stderr: TextIO
    color: bool  # colour on stdout
    err_color: bool  # colour on stderr (the live line, console logs)
    live: LiveLine | None = None

    def result(self, result: WaitResult, *, finished: bool = True) -> None:
        """Print one result document on stdout, above the live line if there is one."""
        document = result.to_dict()
        if not finished:
            document["outcome"] = None  # `status` of a running run: no outcome yet
        text = (
            json.dumps(document, ensure_ascii=False)
            if self.fmt == "json"
            else render_text(document, color=self.color)
        )
        self._emit(self.stdout, text)

    def note(self, message: str) -> None:
        """A one-line message for the person on stderr; silent with --quiet."""
        if not self.quiet:
            self._emit(self.stderr, message)

    def _emit(self, stream: TextIO, text: str) -> None:
        def write() -> None:
            stream.write(text + "\n")
            stream.flush()

        if self.live is not None:
            self.live.above(write)
        else:
            write()


def _seconds_text(value: object) -> str:
    if not isinstance(value, int | float):
        return "?"
    from poller._progress import format_elapsed  # noqa: PLC0415

    return f"{value:.1f}s" if value < 60 else format_elapsed(value)


def render_text(doc: Mapping[str, Any], *, color: bool = False) -> str:
    """A short summary of a result document for a person."""
    from poller._progress import paint  # noqa: PLC0415

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
    else:
        word = {"wait_timeout": "WAIT TIMEOUT", "interrupted": "INTERRUPTED"}.get(outcome, "ERROR")
        head = paint(word, "FAILED" if word == "ERROR" else "PARTIALLY_SUCCEEDED", color)
        seen = f"last status {status}" if status else "no status seen"
        lines.append(f"{head}  {run_id} ({seen})")
        problem = doc.get("problem") or {}
        if problem:
            lines.append(f"  {problem.get('type')}: {problem.get('message')}")
    lineage = doc.get("lineage")
    if lineage:
        total, failed = lineage.get("total_queries_processed"), lineage.get("num_queries_failed")
        rate = lineage.get("failure_rate")
        summary = f"  lineage: {total if total is not None else '?'} queries processed"
        summary += f", {failed if failed is not None else '?'} failed"
        if rate is not None:
            summary += f" ({rate * 100:.2f}%)"
        lines.append(summary)
        messages = list(lineage.get("error_messages") or [])
        for message in messages[:3]:
            lines.append(f"    - {message}")
        if len(messages) > 3:
            lines.append(f"    (+{len(messages) - 3} more)")
    polls = doc.get("polls") or 0
    cost = f"  waited {_seconds_text(doc.get('waited_s'))}, {polls} call{'s' * (polls != 1)}"
    if doc.get("throttled"):
        cost += f", {doc['throttled']} throttled"
    if doc.get("errors_retried"):
        cost += f", {doc['errors_retried']} retried"
    lines.append(cost)
    return "\n".join(lines)


# ---------------------------------------------------------------------------
# Signals


@dataclass(slots=True)
class _Interrupt:
    cancel: threading.Event = field(default_factory=threading.Event)
    signum: int | None = None


@contextmanager
def _stop_on_signals() -> Iterator[_Interrupt]:
    """SIGINT and SIGTERM stop the wait (never the run); the handlers are put back after."""
    interrupt = _Interrupt()

    def handler(signum: int, _frame: object) -> None:
        if interrupt.signum is None:
            interrupt.signum = signum
        interrupt.cancel.set()

    if threading.current_thread() is not threading.main_thread():
        yield interrupt  # only the main thread may install handlers (an embedding host's job)
        return
    previous = {sig: signal.signal(sig, handler) for sig in _SIGNAL_EXIT}
    try:
        yield interrupt
    finally:
        for sig, old in previous.items():
            signal.signal(sig, old)


# ---------------------------------------------------------------------------
# The wait itself, shared by `wait`, `status` and `demo`


@dataclass(slots=True)
class Plan:
    """One invocation's waits, resolved from flags, config and environment."""

    domain_id: str
    run_ids: list[str]
    settings: Settings
    output: Output
    once: bool = False  # `status`: read once instead of waiting
    resume: Callable[[Sequence[str]], str] | None = None  # the command that resumes a wait
    # Latest-run mode: wait on this job's newest run (or the first created since `since`).
    job_id: str | None = None
    since: datetime | None = None


def _configure_logging(plan: Plan, stream: TextIO) -> None:
    from poller.log import configure_logging  # noqa: PLC0415

    settings = plan.settings
    fmt = settings.log_format
    if fmt == "auto":
        fmt = "console" if plan.output.stderr.isatty() else "json"
    level = "critical" if plan.output.quiet else settings.log_level
    configure_logging(fmt, level, stream)
    if plan.output.live is not None:
        # A person at a terminal sees the result right below; the `finished`
        # event would print the same document again as one very long line.
        import structlog  # noqa: PLC0415

        processors = structlog.get_config()["processors"]
        structlog.configure(processors=[_drop_finished, *processors])


def _drop_finished(_: object, __: str, event: MutableMapping[str, Any]) -> Mapping[str, Any]:
    import structlog  # noqa: PLC0415

    if event.get("event") == "finished":
        raise structlog.DropEvent
    return event


class _ColorAware:
    """stderr as the log renderer sees it: a terminal only if colour is allowed."""

    def __init__(self, stream: TextIO, color: bool) -> None:
        self._stream = stream
        self._color = color

    def write(self, text: str) -> int:
        return self._stream.write(text)

    def flush(self) -> None:
        self._stream.flush()

    def isatty(self) -> bool:
        return self._color


def _error_result(domain_id: str, run_id: str, error: BaseException) -> WaitResult:
    from poller._model import WaitResult  # noqa: PLC0415
    from poller.errors import PollerError  # noqa: PLC0415

    if not isinstance(error, PollerError):
        # A bug, not a verdict on the run: still one line and a document, no traceback.
        error = PollerError(f"internal error: {type(error).__name__}: {error}")
    return WaitResult.from_error(domain_id, run_id, error)


def _wait_one(
    plan: Plan, run_id: str, client: Any, interrupt: _Interrupt, live: LiveLine | None
) -> WaitResult:
    from poller._waiter import wait_result  # noqa: PLC0415

    settings = plan.settings
    policy = settings.policy()
    if plan.once:
        return _read_once(plan, run_id, client, interrupt, live)
    return wait_result(
        plan.domain_id,
        run_id,
        policy=policy,
        client=client,
        on_step=live.on_step(run_id) if live is not None else None,
        cancel=interrupt.cancel,
    )


def _read_once(
    plan: Plan, run_id: str, client: Any, interrupt: _Interrupt, live: LiveLine | None
) -> WaitResult:
    """`poller status`: one successful read (throttles retried), whatever the status."""
    import time  # noqa: PLC0415

    from poller._datazone import fetch_job_run  # noqa: PLC0415
    from poller._model import Outcome, WaitResult  # noqa: PLC0415
    from poller._runtime import drive  # noqa: PLC0415
    from poller._session import WaitSession  # noqa: PLC0415

    session = WaitSession(
        plan.domain_id,
        run_id,
        plan.settings.policy(),
        clock=time.monotonic,
        on_step=live.on_step(run_id) if live is not None else None,
    )
    step = drive(
        session,
        lambda: fetch_job_run(client, plan.domain_id, run_id),
        interrupt.cancel.wait,
        cancelled=interrupt.cancel.is_set,
        first_answer=True,
    )
    if step.done:
        return session.result(step)
    # Still running: report what was read. The outcome field only has words
    # for a finished wait, so `status` prints null there (see _document).
    state = session.state
    return WaitResult(
        domain_id=plan.domain_id,
        job_run_id=run_id,
        outcome=Outcome.SUCCEEDED,  # placeholder, replaced by null on output
        job_run=state.last,
        polls=state.polls,
        throttled=state.throttled,
        errors_retried=state.errors_retried,
        waited_s=session.elapsed,
    )


def execute(plan: Plan) -> int:
    """Wait on the runs of ``plan`` concurrently; print each result as it comes; the exit code."""
    import queue  # noqa: PLC0415

    out = plan.output
    settings = plan.settings
    settings.policy()  # inconsistent settings are a usage error, found before any call
    live: LiveLine | None = None
    if not out.quiet and out.stderr.isatty() and os.environ.get("TERM") != "dumb":
        from poller._progress import LiveLine  # noqa: PLC0415

        live = LiveLine(out.stderr, plan.run_ids, color=out.err_color)
        out.live = live
    log_stream = live.log_stream() if live else _ColorAware(out.stderr, out.err_color)
    _configure_logging(plan, log_stream)  # type: ignore[arg-type]

    from poller._datazone import build_client  # noqa: PLC0415
    from poller.errors import InvalidRequestError, PollerError  # noqa: PLC0415

    try:
        client: Any = build_client(
            region_name=settings.region or None,
            profile_name=settings.profile or None,
            endpoint_url=settings.endpoint_url or None,
            connect_timeout=settings.connect_timeout,
            read_timeout=settings.read_timeout,
            # Several runs share one fan-out whose calls go through a few workers.
            max_pool_connections=10,
        )
        client_error: PollerError | None = None
    except InvalidRequestError:
        raise
    except PollerError as exc:  # no region, unknown profile: the status cannot be read
        client, client_error = None, exc

    results: queue.Queue[tuple[str, WaitResult]] = queue.Queue()
    codes: list[int] = []
    timed_out: list[str] = []
    expected = 1 if plan.job_id is not None else len(plan.run_ids)
    with _stop_on_signals() as interrupt:

        def work(run_id: str) -> None:
            try:
                if client_error is not None:
                    raise client_error
                result = _wait_one(plan, run_id, client, interrupt, live)
            except BaseException as exc:  # every run yields a document, whatever happened
                result = _error_result(plan.domain_id, run_id, exc)
            results.put((run_id, result))

        if live is not None:
            live.start()
        if plan.job_id is not None:
            threads = [_latest_thread(plan, client, client_error, interrupt, results)]
        elif not plan.once:
            threads = [_fleet_thread(plan, client, client_error, interrupt, live, results)]
        else:
            threads = [
                threading.Thread(
                    target=work, args=(run_id,), name=f"poller-wait-{run_id}", daemon=True
                )
                for run_id in plan.run_ids
            ]
        for thread in threads:
            thread.start()
        try:
            for _ in range(expected):
                run_id, result = results.get()
                if live is not None:
                    live.finished(run_id)
                    if len(plan.run_ids) == 1:
                        live.close()
                code = exit_code(
                    result, allow_partial=settings.allow_partial, signum=interrupt.signum
                )
                if plan.once and code in (0, 1, 3):
                    code = 0  # `status` read the status: that is its success
                codes.append(code)
                _report(plan, result, code, timed_out)
        finally:
            if live is not None:
                live.close()
    if timed_out and plan.resume is not None:
        out.note(f"To keep waiting: {plan.resume(timed_out)}")
    return combined_exit_code(codes)


def _fleet_thread(
    plan: Plan,
    client: Any,
    client_error: BaseException | None,
    interrupt: _Interrupt,
    live: LiveLine | None,
    results: Any,
) -> threading.Thread:
    """All the runs of ``plan`` on one fan-out, under the process's request budget."""

    def fleet() -> None:
        reported: set[str] = set()

        def on_result(result: WaitResult) -> None:
            reported.add(result.job_run_id)
            results.put((result.job_run_id, result))

        try:
            if client_error is not None:
                raise client_error
            from poller._fanout import wait_for_job_runs  # noqa: PLC0415

            wait_for_job_runs(
                [(plan.domain_id, run_id) for run_id in plan.run_ids],
                policy=plan.settings.policy(),
                client=client,
                max_rps=plan.settings.max_rps,
                on_result=on_result,
                on_step=(lambda ref: live.on_step(ref[1])) if live is not None else None,
                cancel=interrupt.cancel,
            )
        except BaseException as exc:  # every run yields a document, whatever happened
            for run_id in plan.run_ids:
                if run_id not in reported:
                    results.put((run_id, _error_result(plan.domain_id, run_id, exc)))

    return threading.Thread(target=fleet, name="poller-fanout", daemon=True)


def _latest_thread(
    plan: Plan,
    client: Any,
    client_error: BaseException | None,
    interrupt: _Interrupt,
    results: Any,
) -> threading.Thread:
    """Find the job's latest run (or the one created since a time) and wait on it."""
    assert plan.job_id is not None

    def latest() -> None:
        from poller._model import Outcome, WaitResult  # noqa: PLC0415
        from poller.errors import PollerError, WaitCancelledError  # noqa: PLC0415

        try:
            if client_error is not None:
                raise client_error
            from poller._latest import wait_for_latest_job_run  # noqa: PLC0415

            result = wait_for_latest_job_run(
                plan.domain_id,
                str(plan.job_id),
                since=plan.since,
                policy=plan.settings.policy(),
                client=client,
                cancel=interrupt.cancel,
            )
        except PollerError as exc:
            # Ended before a run was found, the document has no run ID to show.
            result = exc.result or (
                WaitResult(plan.domain_id, "", Outcome.INTERRUPTED, error=exc)
                if isinstance(exc, WaitCancelledError)
                else _error_result(plan.domain_id, "", exc)
            )
        except BaseException as exc:
            result = _error_result(plan.domain_id, "", exc)
        results.put((result.job_run_id, result))

    return threading.Thread(target=latest, name="poller-latest", daemon=True)


def _report(plan: Plan, result: WaitResult, code: int, timed_out: list[str]) -> None:
    out = plan.output
    running = result.error is None and result.job_run and not result.job_run.is_terminal
    out.result(result, finished=not (plan.once and running))
    error = result.error
    if code == 4 and not plan.once:
        timed_out.append(result.job_run_id)
        out.note(f"poller: {result.job_run_id}: {error}")
    elif error is not None and str(result.outcome) == "error":
        out.note(f"poller: {result.job_run_id}: {type(error).__name__}: {error}")
    elif str(result.outcome) == "interrupted":
        seen = result.job_run.status if result.job_run else "none seen"
        out.note(
            f"poller: {result.job_run_id}: wait interrupted (last status: {seen}); "
            "the job run itself was not touched"
        )


# ---------------------------------------------------------------------------
# Building a plan from the command line


def _output(fmt: str | None, quiet: bool) -> Output:
    from poller._progress import use_color  # noqa: PLC0415

    stdout, stderr = sys.stdout, sys.stderr
    if fmt is None:
        fmt = "text" if stdout.isatty() else "json"
    return Output(
        fmt=fmt,
        quiet=quiet,
        stdout=stdout,
        stderr=stderr,
        color=use_color(stdout),
        err_color=use_color(stderr),
    )


def _settings(config_file: str | None, flags: Mapping[tuple[str, str], tuple[str, object]]) -> Any:
    return load_settings(config_file=config_file, flags=flags)


def _validate_ids(domain_id: str, run_ids: Sequence[str]) -> list[str]:
    from poller._datazone import validate_ids  # noqa: PLC0415

    unique = list(dict.fromkeys(run_ids))  # the same run twice is one wait
    for run_id in unique:
        validate_ids(domain_id, run_id)
    return unique


_RUN_SOURCES = ("--identifier", "--from-file", "--job-identifier", "--since")


def _resume_command(argv: Sequence[str]) -> Callable[[Sequence[str]], str]:
    """The command that waits again on the runs that timed out, with the same other flags."""

    def build(run_ids: Sequence[str]) -> str:
        kept: list[str] = []
        skip = False
        for arg in argv:
            if skip:
                skip = False
                continue
            name = arg.split("=", 1)[0]
            if name in _RUN_SOURCES or name == "--latest":
                # The resumed wait names the runs that timed out, nothing else.
                skip = name in _RUN_SOURCES and "=" not in arg
                continue
            kept.append(arg)
        for run_id in run_ids:
            kept += ["--identifier", run_id]
        return " ".join([_prog_name(), *(shlex.quote(a) for a in kept)])

    return build


_DURATION = click.STRING
_OUTPUT = click.Choice(["json", "text"])


_DOMAIN_OPTION = click.option(
    "--domain-identifier",
    required=True,
    metavar="DZD",
    help="The DataZone domain, e.g. dzd_abc123.",
)


def _common_options(f: Callable[..., Any]) -> Callable[..., Any]:
    options = [
        click.option(
            "--output",
            type=_OUTPUT,
            default=None,
            help="Result format on stdout [default: text on a terminal, else json].",
        ),
        click.option(
            "--config",
            "config_file",
            metavar="FILE",
            default=None,
            help="TOML settings file (also POLLER_CONFIG); see the README.",
        ),
        click.option("--region", metavar="R", default=None, help="AWS region."),
        click.option("--profile", metavar="P", default=None, help="AWS named profile."),
        click.option(
            "--endpoint-url",
            metavar="URL",
            default=None,
            help="Endpoint override, e.g. the simulator's (also AWS_ENDPOINT_URL_DATAZONE).",
        ),
        click.option(
            "--log-format",
            type=click.Choice(["auto", "json", "console"]),
            default=None,
            help="Logs on stderr [default: auto: console on a terminal, else json].",
        ),
        click.option("--quiet", "-q", is_flag=True, help="Print only the result: no logs."),
    ]
    for option in reversed(options):
        f = option(f)
    return f


def _aws_flags(
    region: str | None, profile: str | None, endpoint_url: str | None, log_format: str | None
) -> dict[tuple[str, str], tuple[str, object]]:
    return {
        ("aws", "region"): ("--region", region),
        ("aws", "profile"): ("--profile", profile),
        ("aws", "endpoint_url"): ("--endpoint-url", endpoint_url),
        ("log", "format"): ("--log-format", log_format),
    }


class _Group(click.Group):
    """Lists the commands in the order they are defined, not alphabetically."""

    def list_commands(self, ctx: click.Context) -> list[str]:
        return list(self.commands)


@click.group(
    cls=_Group,
    context_settings={"help_option_names": ["-h", "--help"], "max_content_width": 100},
    epilog=_epilog(
        "poller wait --domain-identifier dzd_abc123 --identifier run-42 --timeout 30m",
        "poller demo",
    ),
)
@click.version_option(package_name="poller", message="%(prog)s %(version)s")
def cli() -> None:
    """Wait for Amazon DataZone job runs, with honest exit codes and a JSON result."""


@cli.command(
    epilog=_epilog(
        "poller wait --domain-identifier dzd_abc123 --identifier run-42 --timeout 30m",
        "poller wait --domain-identifier dzd_abc123 --identifier run-1 --identifier run-2 "
        "--output json | jq .outcome",
    )
)
@_DOMAIN_OPTION
@click.option(
    "--identifier",
    "identifiers",
    multiple=True,
    metavar="RUN",
    help="The job run; repeat to wait on several at once (JSON Lines, one per run).",
)
@click.option(
    "--from-file",
    "from_file",
    metavar="FILE",
    default=None,
    help="Also wait on the run IDs in FILE, one a line ('-' for stdin); blank lines and "
    "#-comments are skipped, a malformed ID is reported and the others still waited on.",
)
@click.option(
    "--job-identifier",
    metavar="JOB",
    default=None,
    help="Wait on a run of this job instead: with --latest its newest run, with --since "
    "the first one created at or after a time.",
)
@click.option("--latest", is_flag=True, help="With --job-identifier: the job's newest run.")
@click.option(
    "--since",
    metavar="TIMESTAMP",
    default=None,
    help="With --job-identifier: the first run created at or after TIMESTAMP (ISO 8601, "
    "e.g. 2026-11-24T10:00:00Z, or epoch seconds), e.g. the run you just started.",
)
@click.option(
    "--max-rps",
    metavar="N",
    default=None,
    help="GetJobRun calls a second for all the runs together; lowered on throttling [10].",
)
@click.option(
    "--timeout",
    type=_DURATION,
    metavar="D",
    help=f"Give up waiting after D: {DURATION_HELP}; 0 checks once, none never gives up "
    "[default: 1h].",
)
@click.option("--interval", type=_DURATION, metavar="D", help="First delay between checks [2s].")
@click.option(
    "--max-interval", type=_DURATION, metavar="D", help="Longest delay between checks [30s]."
)
@click.option(
    "--not-found-grace",
    type=_DURATION,
    metavar="D",
    help="How long a run may be not found yet after the wait starts [10s].",
)
@click.option(
    "--allow-partial/--no-allow-partial",
    default=None,
    help="Treat PARTIALLY_SUCCEEDED as success (exit 0, not 3).",
)
@_common_options
def wait(
    domain_identifier: str,
    identifiers: tuple[str, ...],
    from_file: str | None,
    job_identifier: str | None,
    latest: bool,
    since: str | None,
    max_rps: str | None,
    timeout: str | None,
    interval: str | None,
    max_interval: str | None,
    not_found_grace: str | None,
    allow_partial: bool | None,
    output: str | None,
    config_file: str | None,
    region: str | None,
    profile: str | None,
    endpoint_url: str | None,
    log_format: str | None,
    quiet: bool,
) -> int:
    """Wait until job runs finish; print their result documents on stdout.

    Several --identifier are waited on concurrently; each result is printed as
    its run finishes, and the exit code is the highest of theirs. SIGINT and
    SIGTERM stop the wait (never the run) and still print the last state.
    """
    flags = {
        ("wait", "timeout"): ("--timeout", timeout),
        ("wait", "interval"): ("--interval", interval),
        ("wait", "max_interval"): ("--max-interval", max_interval),
        ("wait", "not_found_grace"): ("--not-found-grace", not_found_grace),
        ("wait", "max_rps"): ("--max-rps", max_rps),
        ("wait", "allow_partial"): (
            "--allow-partial",
            None if allow_partial is None else str(allow_partial),
        ),
        **_aws_flags(region, profile, endpoint_url, log_format),
    }
    settings = _settings(config_file, flags)
    if job_identifier is not None:
        if identifiers or from_file is not None:
            raise UsageProblem("--job-identifier cannot be combined with --identifier/--from-file")
        if not latest and since is None:
            raise UsageProblem("--job-identifier needs --latest or --since TIMESTAMP")
        run_ids: list[str] = []
    else:
        if latest or since is not None:
            raise UsageProblem("--latest and --since need --job-identifier JOB")
        if not identifiers and from_file is None:
            raise UsageProblem(
                "give the runs: --identifier RUN, --from-file FILE or --job-identifier JOB"
            )
        run_ids = _validate_ids(domain_identifier, identifiers)
        if from_file is not None:
            # Malformed IDs in a file are reported as results; the others are still waited on.
            run_ids = list(dict.fromkeys([*run_ids, *read_run_ids(from_file)]))
    plan = Plan(
        domain_id=domain_identifier,
        run_ids=run_ids,
        settings=settings,
        output=_output(output, quiet),
        resume=_resume_command(click.get_current_context().obj or sys.argv[1:]),
        job_id=job_identifier,
        since=parse_since(since) if since is not None else None,
    )
    if job_identifier is not None:
        from poller._latest import validate_job_ids  # noqa: PLC0415

        validate_job_ids(domain_identifier, job_identifier)
    return execute(plan)


def read_run_ids(path: str) -> list[str]:
    """The run IDs of a --from-file: one a line, blank lines and #-comments skipped, in order."""
    try:
        if path == "-":
            text = sys.stdin.read()
        else:
            with open(path, encoding="utf-8") as handle:
                text = handle.read()
    except (OSError, UnicodeDecodeError) as exc:
        raise UsageProblem(f"--from-file {path}: cannot read it: {exc}") from None
    lines = (line.strip() for line in text.splitlines())
    return [line for line in lines if line and not line.startswith("#")]


def parse_since(text: str) -> datetime:
    """--since: ISO 8601 (a time without an offset is UTC) or epoch seconds."""
    value = text.strip()
    try:
        if value.replace(".", "", 1).isdigit():
            return datetime.fromtimestamp(float(value), UTC)
        when = datetime.fromisoformat(value)
    except (ValueError, OverflowError, OSError):
        raise UsageProblem(
            f"--since: not a timestamp: {text!r} (use ISO 8601, e.g. 2026-11-24T10:00:00Z, "
            "or epoch seconds)"
        ) from None
    return when if when.tzinfo else when.replace(tzinfo=UTC)


@cli.command(
    epilog="\b\nExample:\n  $ poller status --domain-identifier dzd_abc123 --identifier run-42\n\n"
    + _exit_help(STATUS_EXIT_CODES)
)
@_DOMAIN_OPTION
@click.option("--identifier", required=True, metavar="RUN", help="The job run.")
@_common_options
def status(
    domain_identifier: str,
    identifier: str,
    output: str | None,
    config_file: str | None,
    region: str | None,
    profile: str | None,
    endpoint_url: str | None,
    log_format: str | None,
    quiet: bool,
) -> int:
    """Read a job run's status once and print its result document.

    The document's outcome is null while the run has not finished.
    """
    settings = _settings(config_file, _aws_flags(region, profile, endpoint_url, log_format))
    run_ids = _validate_ids(domain_identifier, [identifier])
    plan = Plan(
        domain_id=domain_identifier,
        run_ids=run_ids,
        settings=settings,
        output=_output(output, quiet),
        once=True,
    )
    return execute(plan)


@cli.command(epilog=_epilog("poller demo", "poller demo --output json | jq .lineage"))
@click.option(
    "--output",
    type=_OUTPUT,
    default=None,
    help="Result format on stdout [default: text on a terminal, else json].",
)
def demo(output: str | None) -> int:
    """Wait on a scripted run of the built-in simulator: no AWS account, no network.

    The run goes SCHEDULED, IN_PROGRESS, SUCCESS over a few seconds, is
    throttled a few times on the way and reports lineage statistics; it is
    waited on exactly as `poller wait` waits on a real one.
    """
    import time  # noqa: PLC0415

    from poller.testing import Fault, Lineage, RunScript, Simulator  # noqa: PLC0415

    domain_id, run_id = "dzd_demo", "run-demo-1"
    out = _output(output, quiet=False)
    # Per-call script: each string answers one GetJobRun, each Fault one call.
    # With the demo's cadence below, the whole wait takes about eight seconds.
    script = RunScript(
        statuses=[
            "SCHEDULED",
            Fault.throttle(),
            "IN_PROGRESS",
            "IN_PROGRESS",
            Fault.throttle(),
            Fault.throttle(),
            "IN_PROGRESS",
            "SUCCESS",
        ],
        lineage=Lineage(
            query_start_offset=1.0,
            query_end_offset=6.5,
            total_queries_processed=42,
            num_queries_failed=2,
            error_messages=(
                "Query 7 failed: Table 'sales.orders_tmp' not found",
                "Query 31 failed: Column 'region_code' cannot be resolved",
            ),
        ),
    )
    with _demo_environment(), Simulator() as sim:
        sim.add_run(domain_id, run_id, script, job_id="job-lineage-demo")
        flags: dict[tuple[str, str], tuple[str, object]] = {
            ("wait", "timeout"): ("demo", "2m"),
            ("wait", "interval"): ("demo", "1s"),
            ("wait", "max_interval"): ("demo", "2s"),
            ("retry", "initial"): ("demo", "0.5s"),
            ("retry", "max"): ("demo", "2s"),
            ("aws", "region"): ("demo", "us-east-1"),
            ("aws", "endpoint_url"): ("demo", sim.endpoint_url),
        }
        # The demo ignores POLLER_* settings: it must work whatever the shell has.
        settings = load_settings(environ={}, flags=flags)
        out.note(
            f"poller demo: a DataZone simulator is serving at {sim.endpoint_url}; waiting on "
            f"run {run_id} as `poller wait --domain-identifier {domain_id} --identifier {run_id} "
            f"--endpoint-url {sim.endpoint_url}` would."
        )
        started = time.monotonic()
        code = execute(Plan(domain_id=domain_id, run_ids=[run_id], settings=settings, output=out))
        out.note(
            f"poller demo: done in {time.monotonic() - started:.1f}s with "
            f"{sim.calls(run_id)} GetJobRun calls; exit code {code}."
        )
        return code


@contextmanager
def _demo_environment() -> Iterator[None]:
    """Dummy credentials and no AWS config files, so the demo needs no account and no setup."""
    names = {
        "AWS_ACCESS_KEY_ID": "testing",
        "AWS_SECRET_ACCESS_KEY": "testing",
        "AWS_CONFIG_FILE": os.devnull,
        "AWS_SHARED_CREDENTIALS_FILE": os.devnull,
    }
    dropped = ("AWS_PROFILE", "AWS_DEFAULT_PROFILE", "AWS_SESSION_TOKEN")
    saved = {name: os.environ.get(name) for name in (*names, *dropped)}
    os.environ.update(names)
    for name in dropped:
        os.environ.pop(name, None)
    try:
        yield
    finally:
        for name, value in saved.items():
            if value is None:
                os.environ.pop(name, None)
            else:
                os.environ[name] = value


# ---------------------------------------------------------------------------
# Entry point


def main(argv: Sequence[str] | None = None) -> int:
    """The console script: run the command line, map every failure to one line and an exit code."""
    args = list(sys.argv[1:] if argv is None else argv)
    prog = _prog_name()
    try:
        rv = cli.main(args=args, prog_name=prog, standalone_mode=False, obj=args)
    except click.exceptions.NoArgsIsHelpError as exc:
        click.echo(exc.format_message(), err=True)
        return EXIT_USAGE
    except click.ClickException as exc:
        where = exc.ctx.command_path if getattr(exc, "ctx", None) else prog  # type: ignore[attr-defined]
        hint = f" (see '{where} --help')" if isinstance(exc, click.UsageError) else ""
        _stderr(f"{where}: error: {_one_line(exc.format_message())}{hint}")
        return EXIT_USAGE
    except (UsageProblem, ConfigError) as exc:
        _stderr(f"{prog}: error: {_one_line(str(exc))}")
        return EXIT_USAGE
    except click.Abort:
        return 130
    except KeyboardInterrupt:
        return 130
    except BrokenPipeError:
        _silence_stdout()
        return 1
    except Exception as exc:
        from poller.errors import InvalidRequestError  # noqa: PLC0415

        if isinstance(exc, InvalidRequestError):
            _stderr(f"{prog}: error: {_one_line(str(exc))}")
            return EXIT_USAGE
        _stderr(f"{prog}: internal error: {type(exc).__name__}: {_one_line(str(exc))}")
        return EXIT_UNREADABLE
    return rv if isinstance(rv, int) else 0


def _one_line(text: str) -> str:
    return " ".join(text.split())


def _stderr(message: str) -> None:
    try:
        sys.stderr.write(message + "\n")
        sys.stderr.flush()
    except (OSError, ValueError):
        pass


def _silence_stdout() -> None:
    # The reader went away (`poller wait ... | head -c0`): stop writing, and
    # stop Python complaining about the unflushable stdout at exit.
    try:
        devnull = os.open(os.devnull, os.O_WRONLY)
        os.dup2(devnull, sys.stdout.fileno())
    except (OSError, ValueError):
        pass
