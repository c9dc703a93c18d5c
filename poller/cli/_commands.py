"""The click declarations of ``wait``, ``status`` and ``demo``, and the entry point.

Flags that set a config key are declared once, as ``Setting``s, and
``with_settings`` adds them and the options every waiting command shares;
the command receives the resolved ``Settings`` and its ``Output``. A new
setting flag is one ``Setting(...)`` line.

Start-up time matters (a CI step may call ``poller wait`` many times), so
this module imports only click and the standard library at the top, plus
the CLI's own light modules; boto3, structlog and the rest are imported by
the commands that need them; the rest of the CLI package (running the
waits, printing) is imported when a command runs, not for ``--help``.
"""

from __future__ import annotations

import errno
import functools
import io
import os
import shlex
import sys
import textwrap
from collections.abc import Callable, Iterable, Iterator, Mapping, Sequence
from contextlib import contextmanager, nullcontext
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import TYPE_CHECKING, Any

import click

from poller._config import DURATION_HELP, ConfigError, Settings, load_settings, parse_duration
from poller.cli._exit import STATUS_MEANINGS, WAIT_MEANINGS, ExitCode, leave, severity_text
from poller.cli._watch import watch_command

if TYPE_CHECKING:
    from poller.cli._render import Output

__all__ = ["Setting", "UsageProblem", "cli", "main", "parse_since", "read_run_ids"]


#: `poller status` reads once: throttling gets this long to let a call through, not an hour.
STATUS_TIMEOUT = "30s"


class UsageProblem(Exception):
    """Bad input found before any AWS call: one line on stderr, nothing on stdout, exit 2."""


@dataclass(frozen=True, slots=True)
class Invocation:
    """What main() was called with: the arguments, and whether this is the program itself."""

    argv: Sequence[str]
    program: bool


# ---------------------------------------------------------------------------
# Help text


def _exit_help(codes: Mapping[ExitCode, str]) -> str:
    rows = (
        textwrap.fill(text, 86, initial_indent=f"  {code:<4} ", subsequent_indent=" " * 7)
        for code, text in codes.items()
    )
    several = f"\n\nSeveral runs exit with the most severe: {severity_text()}."
    return "\b\nExit codes:\n" + "\n".join(rows) + (several if codes is WAIT_MEANINGS else "")


def _epilog(*examples: str, codes: Mapping[ExitCode, str] = WAIT_MEANINGS) -> str:
    lines = "\n".join(f"  $ {example}" for example in examples)
    return f"\b\nExample:\n{lines}\n\n{_exit_help(codes)}"


def _prog_name() -> str:
    # `python -m poller` runs __main__.py, whose argv[0] is a path to it.
    main_module = sys.modules.get("__main__")
    if getattr(main_module, "__package__", None) == "poller":
        return "python -m poller"
    return "poller"


# ---------------------------------------------------------------------------
# The options


@dataclass(frozen=True, slots=True)
class Setting:
    """A flag that sets a config key; its value is checked by _config, naming the flag."""

    flag: str  # "--timeout", or "--allow-partial/--no-allow-partial" for a boolean
    key: tuple[str, str]  # the config key it overrides, as in _config.KEYS
    help: str
    metavar: str = "D"
    choices: tuple[str, ...] = ()

    @property
    def name(self) -> str:
        return self.flag.split("/", 1)[0]

    @property
    def dest(self) -> str:
        return "_".join(self.key)

    def option(self) -> Callable[[Any], Any]:
        if "/" in self.flag:
            return click.option(self.flag, self.dest, default=None, help=self.help)
        if self.choices:
            kind = click.Choice(self.choices)
            return click.option(self.flag, self.dest, type=kind, default=None, help=self.help)
        metavar = self.metavar
        return click.option(self.flag, self.dest, metavar=metavar, default=None, help=self.help)

    def raw(self, value: object) -> object:
        return str(value).lower() if isinstance(value, bool) else value


_WAIT_SETTINGS = (
    Setting(
        "--max-rps",
        ("wait", "max_rps"),
        "GetJobRun calls a second for all the runs together; lowered on throttling [10].",
        metavar="N",
    ),
    Setting(
        "--others-throttled",
        ("wait", "others_throttled"),
        "Share of calls other clients get throttled; that many throttles keep the rate [0].",
        metavar="SHARE",
    ),
    Setting(
        "--timeout",
        ("wait", "timeout"),
        f"Give up waiting after D: {DURATION_HELP}; 0 checks once, none never gives up "
        "[default: 1h].",
    ),
    Setting("--interval", ("wait", "interval"), "First delay between checks [2s]."),
    Setting("--max-interval", ("wait", "max_interval"), "Longest delay between checks [30s]."),
    Setting(
        "--not-found-grace",
        ("wait", "not_found_grace"),
        "How long a run may be not found yet after the wait starts [10s].",
    ),
    Setting(
        "--allow-partial/--no-allow-partial",
        ("wait", "allow_partial"),
        "Treat PARTIALLY_SUCCEEDED as success (exit 0, not 3).",
    ),
    Setting(
        "--history/--no-history",
        ("wait", "history"),
        "Learn from the job's past runs when to look (one ListJobRuns per job) [on].",
    ),
)
# Shared by every command that calls DataZone.
_AWS_SETTINGS = (
    Setting("--region", ("aws", "region"), "AWS region.", metavar="R"),
    Setting("--profile", ("aws", "profile"), "AWS named profile.", metavar="P"),
    Setting(
        "--endpoint-url",
        ("aws", "endpoint_url"),
        "Endpoint override, e.g. the simulator's (also AWS_ENDPOINT_URL_DATAZONE).",
        metavar="URL",
    ),
    Setting(
        "--log-format",
        ("log", "format"),
        "Logs on stderr [default: auto: console on a terminal, else json].",
        choices=("auto", "json", "console"),
    ),
)
_OUTPUT_OPTION = click.option(
    "--output",
    type=click.Choice(["json", "text"]),
    default=None,
    help="Result format on stdout [default: text on a terminal, else json].",
)
_DOMAIN_OPTION = click.option(
    "--domain-identifier",
    required=True,
    metavar="DZD",
    help="The DataZone domain, e.g. dzd_abc123.",
)


def with_settings(*own: Setting) -> Callable[[Callable[..., Any]], Callable[..., Any]]:
    """Add the command's own setting flags and the shared options; pass ``settings``, ``output``.

    Shared: --output, --config, --region, --profile, --endpoint-url,
    --log-format and --quiet, as `wait` and `status` both take them.
    """
    specs = (*own, *_AWS_SETTINGS)

    def decorate(command: Callable[..., Any]) -> Callable[..., Any]:
        @functools.wraps(command)
        def run(**params: Any) -> Any:
            from poller.cli._render import make_output  # noqa: PLC0415

            flags = {spec.key: (spec.name, spec.raw(params.pop(spec.dest))) for spec in specs}
            settings = load_settings(config_file=params.pop("config_file"), flags=flags)
            output = make_output(params.pop("output"), params.pop("quiet"), sys.stdout, sys.stderr)
            return command(settings=settings, output=output, **params)

        options = [
            *(spec.option() for spec in own),
            _OUTPUT_OPTION,
            click.option(
                "--config",
                "config_file",
                metavar="FILE",
                default=None,
                help="TOML settings file (also POLLER_CONFIG); keys in docs/cli.md.",
            ),
            *(spec.option() for spec in _AWS_SETTINGS),
            click.option("--quiet", "-q", is_flag=True, help="Print only the result: no logs."),
        ]
        for option in reversed(options):
            run = option(run)
        return run

    return decorate


# ---------------------------------------------------------------------------
# The commands


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


def _invocation() -> Invocation:
    obj = click.get_current_context().find_root().obj
    return obj if isinstance(obj, Invocation) else Invocation(sys.argv[1:], program=False)


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
@with_settings(*_WAIT_SETTINGS)
def wait(
    domain_identifier: str,
    identifiers: tuple[str, ...],
    from_file: str | None,
    job_identifier: str | None,
    latest: bool,
    since: str | None,
    settings: Settings,
    output: Output,
) -> int:
    """Wait until job runs finish; print their result documents on stdout.

    Several --identifier are waited on concurrently; each result is printed as
    its run finishes, and the exit code is the most severe of theirs. SIGINT,
    SIGTERM and SIGHUP stop the wait (never the run) and still print the last
    state.
    """
    from poller.cli._run import Plan, execute  # noqa: PLC0415

    invocation = _invocation()
    if job_identifier is not None:
        if identifiers or from_file is not None:
            raise UsageProblem("--job-identifier cannot be combined with --identifier/--from-file")
        if not latest and since is None:
            raise UsageProblem("--job-identifier needs --latest or --since TIMESTAMP")
        if latest and since is not None:
            raise UsageProblem(
                "--latest and --since cannot be combined: --latest waits on the job's newest "
                "run, --since on the first one created at or after TIMESTAMP"
            )
        from poller._latest import validate_job_ids  # noqa: PLC0415

        when = parse_since(since) if since is not None else None
        validate_job_ids(domain_identifier, job_identifier)
        run_ids: list[str] = []
    else:
        if latest or since is not None:
            raise UsageProblem("--latest and --since need --job-identifier JOB")
        if not identifiers and from_file is None:
            raise UsageProblem(
                "give the runs: --identifier RUN, --from-file FILE or --job-identifier JOB"
            )
        when = None
        run_ids = _validated(domain_identifier, identifiers)
        if from_file is not None:
            # Malformed IDs in a file are reported as results; the others are still waited on.
            unique = dict.fromkeys(run_ids)
            unique.update(dict.fromkeys(read_run_ids(from_file, domain_identifier)))
            run_ids = list(unique)
    plan = Plan(
        domain_id=domain_identifier,
        run_ids=run_ids,
        settings=settings,
        output=output,
        resume=_resume_command(invocation.argv),
        job_id=job_identifier,
        since=when,
        program=invocation.program,
    )
    return execute(plan)


@cli.command(
    epilog=_epilog(
        "poller status --domain-identifier dzd_abc123 --identifier run-42", codes=STATUS_MEANINGS
    )
)
@_DOMAIN_OPTION
@click.option("--identifier", required=True, metavar="RUN", help="The job run.")
@click.option(
    "--timeout",
    "timeout",
    metavar="D",
    default=STATUS_TIMEOUT,
    show_default=True,
    help=f"Give up reading after D (throttles and faults are retried until then): "
    f"{DURATION_HELP}; none never gives up. Not the wait's [wait] timeout.",
)
@with_settings()
def status(
    domain_identifier: str, identifier: str, timeout: str, settings: Settings, output: Output
) -> int:
    """Read a job run's status once and print its result document.

    The document's outcome is null while the run has not finished.
    """
    import dataclasses  # noqa: PLC0415

    from poller.cli._run import Plan, execute  # noqa: PLC0415

    try:
        seconds = parse_duration(timeout, allow_none=True)
    except ValueError as exc:
        raise UsageProblem(f"--timeout: {exc}") from None
    plan = Plan(
        domain_id=domain_identifier,
        run_ids=_validated(domain_identifier, [identifier]),
        settings=dataclasses.replace(settings, timeout=seconds),
        output=output,
        once=True,
        program=_invocation().program,
    )
    return execute(plan)


@cli.command(epilog=_epilog("poller demo", "poller demo --output json | jq .lineage"))
@_OUTPUT_OPTION
def demo(output: str | None) -> int:
    """Wait on a scripted run of the built-in simulator: no AWS account, no network.

    The run goes SCHEDULED, IN_PROGRESS, SUCCESS over a few seconds, is
    throttled a few times on the way and reports lineage statistics; it is
    waited on exactly as `poller wait` waits on a real one.
    """
    import time  # noqa: PLC0415

    from poller.cli._render import make_output  # noqa: PLC0415
    from poller.cli._run import Plan, execute  # noqa: PLC0415
    from poller.testing import Fault, Lineage, RunScript, Simulator  # noqa: PLC0415

    domain_id, run_id = "dzd_demo", "run-demo-1"
    out = make_output(output, False, sys.stdout, sys.stderr)
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
        exports = " ".join(f"{name}={value}" for name, value in sim.environ().items())
        out.note(
            f"poller demo: a DataZone simulator is serving at {sim.endpoint_url}; waiting on "
            f"run {run_id} as `{exports} poller wait --domain-identifier {domain_id} "
            f"--identifier {run_id}` would (any keys do; a region is needed all the same)."
        )
        started = time.monotonic()
        plan = Plan(
            domain_id=domain_id,
            run_ids=[run_id],
            settings=settings,
            output=out,
            program=_invocation().program,
        )
        code = execute(plan)
        out.note(
            f"poller demo: done in {time.monotonic() - started:.1f}s with "
            f"{sim.calls(run_id)} GetJobRun calls; exit code {int(code)}."
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
# Naming the runs


def _validated(domain_id: str, run_ids: Iterable[str]) -> list[str]:
    from poller._datazone import validate_ids  # noqa: PLC0415

    unique = list(dict.fromkeys(run_ids))  # the same run twice is one wait
    for run_id in unique:
        validate_ids(domain_id, run_id)
    return unique


def read_run_ids(path: str, domain_id: str) -> Iterator[str]:
    """The run IDs of a --from-file, streamed: blank lines and #-comments skipped, in order.

    A comment may follow an ID on its line (``run-1  # tonight's``): no run ID
    holds a ``#``. A malformed line is passed on, to be reported as an
    ``error`` result; a line that is not UTF-8 too, with its bad bytes shown
    as U+FFFD. A file with no valid ID at all (the first malformed line named,
    and why), or one that cannot be read, is a UsageProblem.
    """
    from poller._datazone import validate_ids  # noqa: PLC0415
    from poller.errors import InvalidRequestError  # noqa: PLC0415

    valid = 0
    first_bad: str | None = None
    try:
        if path != "-":
            handle: Any = open(path, encoding="utf-8", errors="surrogateescape")  # noqa: SIM115
        elif sys.stdin is None:
            raise UsageProblem("--from-file -: there is no standard input")
        elif _has_fileno(sys.stdin):
            handle = open(  # noqa: SIM115
                sys.stdin.fileno(), encoding="utf-8", errors="surrogateescape", closefd=False
            )
        else:
            handle = nullcontext(sys.stdin)  # a stand-in stream (a test's)
        with handle as lines:
            for number, raw in enumerate(lines, 1):
                line = raw.split("#", 1)[0].strip()
                if not line:
                    continue
                try:
                    validate_ids(domain_id, line)
                    valid += 1
                except InvalidRequestError as exc:
                    line = _printable(line)
                    if first_bad is None:
                        first_bad = f"line {number}: {_printable(str(exc))}"
                yield line
    except OSError as exc:
        raise UsageProblem(f"--from-file {path}: cannot read it: {exc.strerror or exc}") from None
    if not valid:
        why = f" ({first_bad})" if first_bad else " (only blank lines and comments)"
        raise UsageProblem(f"--from-file {path}: no valid run ID in it{why}")


def _printable(line: str) -> str:
    """A line read with surrogateescape, its undecodable bytes as U+FFFD, so JSON can carry it."""
    try:
        line.encode("utf-8")
    except UnicodeEncodeError:
        return line.encode("utf-8", "surrogateescape").decode("utf-8", "replace")
    return line


def _has_fileno(stream: Any) -> bool:
    try:
        stream.fileno()
    except (AttributeError, OSError, ValueError):
        return False
    return True


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


cli.add_command(watch_command(with_settings, _DOMAIN_OPTION, parse_since, _epilog))


# ---------------------------------------------------------------------------
# Entry point


def main(argv: Sequence[str] | None = None) -> int:
    """The console script: run the command line, map every failure to one line and an exit code.

    Called without ``argv`` it is the program: a closed standard stream is
    reopened on /dev/null (so no socket takes its place), and once the
    command is done (or after a signal, or a lost stdout) the process leaves
    at once, with ``os._exit``. With ``argv`` (a test, a host) it only
    returns the code.
    """
    program = argv is None
    if program:
        _reopen_closed_std_fds()
        if sys.stdout is None:  # started with stdout closed (`>&-`)
            sys.stdout = _ClosedStdout()
    args = list(sys.argv[1:] if argv is None else argv)
    code = _main(args, program)
    if program:
        # Everything is printed and flushed: the process ends here. Skipped:
        # the interpreter's teardown, freeing hundreds of modules and
        # botocore's parsed models (about a sixth of a `poller wait` on a
        # finished run), and the wait for any call still in flight.
        leave(code)
    return code


def _main(args: list[str], program: bool) -> int:
    prog = _prog_name()

    def say(message: str, *, one_line: bool = True) -> None:
        from poller.cli._render import TolerantStream  # noqa: PLC0415
        from poller.log import redact  # noqa: PLC0415

        stderr = TolerantStream(sys.stderr)
        stderr.write(redact(" ".join(message.split()) if one_line else message) + "\n")
        stderr.flush()

    try:
        rv = cli.main(
            args=args, prog_name=prog, standalone_mode=False, obj=Invocation(args, program)
        )
    except click.exceptions.NoArgsIsHelpError as exc:
        say(exc.format_message(), one_line=False)
        return ExitCode.USAGE
    except click.ClickException as exc:
        # One prefix for every error line (`poller: error:`); the hint names the command.
        where = exc.ctx.command_path if getattr(exc, "ctx", None) else prog  # type: ignore[attr-defined]
        hint = f" (see '{where} --help')" if isinstance(exc, click.UsageError) else ""
        say(f"{prog}: error: {exc.format_message()}{hint}")
        return ExitCode.USAGE
    except (UsageProblem, ConfigError) as exc:
        say(f"{prog}: error: {exc}")
        return ExitCode.USAGE
    except (click.Abort, KeyboardInterrupt):
        return ExitCode.SIGINT
    except BrokenPipeError:
        _silence_stdout()
        return ExitCode.STDOUT_CLOSED
    except SystemExit:
        # click's answer to a broken pipe while it printed (--help, --version): it
        # pacifies the streams and exits 1. Lost output is 141, as everywhere.
        if type(sys.stdout).__name__ == "_PacifyFlushWrapper":
            _silence_stdout()
            return ExitCode.STDOUT_CLOSED
        raise
    except Exception as exc:
        from poller.errors import InvalidRequestError  # noqa: PLC0415

        if isinstance(exc, InvalidRequestError):
            say(f"{prog}: error: {exc}")
            return ExitCode.USAGE
        say(f"{prog}: internal error: {type(exc).__name__}: {exc}")
        return ExitCode.UNREADABLE
    return int(rv) if isinstance(rv, int) else 0


class _ClosedStdout(io.TextIOBase):
    """stdout when the process started without one: every write is a broken pipe.

    So `--help` and `--version` exit 141 as a wait does (which sees it closed
    before any call: ``closed`` is true).
    """

    @property
    def closed(self) -> bool:
        return True

    def writable(self) -> bool:
        return True

    def write(self, text: str) -> int:
        raise BrokenPipeError(errno.EPIPE, "stdout is closed")


def _reopen_closed_std_fds() -> None:
    for fd in (0, 1, 2):
        try:
            os.fstat(fd)
        except OSError:
            try:
                null = os.open(os.devnull, os.O_RDWR)
                if null != fd:
                    os.dup2(null, fd)
                    os.close(null)
            except OSError:
                pass


def _silence_stdout() -> None:
    # The reader went away (`poller wait ... | head -c0`): stop writing, and
    # stop Python complaining about the unflushable stdout at exit.
    try:
        devnull = os.open(os.devnull, os.O_WRONLY)
        os.dup2(devnull, sys.stdout.fileno())
    except (AttributeError, OSError, ValueError):
        pass
