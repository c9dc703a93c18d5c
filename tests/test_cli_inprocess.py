"""The command line in-process (click's runner, or main() with captured streams): fast checks."""

from __future__ import annotations

import json
import signal
import subprocess
import sys
from typing import Any

import pytest
from click.testing import CliRunner

from poller._model import JobRun, Outcome, WaitResult
from poller.cli import ExitCode, cli, main
from poller.cli._exit import WAIT_MEANINGS, combined, for_result
from poller.cli._render import render_text
from poller.cli._run import _error_result
from poller.errors import (
    AccessDeniedError,
    InvalidRequestError,
    ServiceUnavailableError,
    WaitCancelledError,
    WaitTimeoutError,
)
from poller.testing import Lineage, RunScript, Simulator

DOMAIN = "dzd_inproc"


@pytest.mark.parametrize("command", [[], ["wait"], ["status"], ["demo"]])
def test_help_shows_exit_codes_and_an_example(command: list[str]) -> None:
    """--help on every command lists the exit codes and shows an example."""
    result = CliRunner().invoke(cli, [*command, "--help"])
    assert result.exit_code == 0
    assert "Exit codes:" in result.output
    assert "Example:" in result.output
    assert "$ poller" in result.output


def test_no_command_prints_help_and_exits_2(capsys: pytest.CaptureFixture[str]) -> None:
    """`poller` alone shows the help on stderr and exits 2, with nothing on stdout."""
    assert main([]) == 2
    out, err = capsys.readouterr()
    assert out == ""
    assert "Commands:" in err


def result(outcome: Outcome, status: str | None = None, error: Any = None) -> WaitResult:
    run = JobRun(domain_id=DOMAIN, id="r", status=status) if status else None
    return WaitResult(DOMAIN, "r", outcome, job_run=run, error=error)


@pytest.mark.parametrize(
    ("res", "allow_partial", "signum", "code"),
    [
        (result(Outcome.SUCCEEDED, "SUCCESS"), False, None, 0),
        (result(Outcome.FAILED, "ABORTED"), False, None, 1),
        (result(Outcome.FAILED, "TIMED_OUT"), False, None, 1),
        (result(Outcome.PARTIALLY_SUCCEEDED, "PARTIALLY_SUCCEEDED"), False, None, 3),
        (result(Outcome.PARTIALLY_SUCCEEDED, "PARTIALLY_SUCCEEDED"), True, None, 0),
        (result(Outcome.WAIT_TIMEOUT, "IN_PROGRESS", WaitTimeoutError("late")), False, None, 4),
        (result(Outcome.ERROR, None, AccessDeniedError("no")), False, None, 5),
        (result(Outcome.ERROR, None, ServiceUnavailableError("5xx")), False, None, 5),
        (result(Outcome.ERROR, None, InvalidRequestError("bad")), False, None, 2),
        (result(Outcome.INTERRUPTED, None, WaitCancelledError("x")), False, signal.SIGINT, 130),
        (result(Outcome.INTERRUPTED, None, WaitCancelledError("x")), False, signal.SIGTERM, 143),
    ],
)
def test_exit_code_table(res: WaitResult, allow_partial: bool, signum: Any, code: int) -> None:
    """Each outcome maps to the code of docs/design.md's table."""
    assert for_result(res, allow_partial=allow_partial, signum=signum) == code
    assert ExitCode(code) in WAIT_MEANINGS


def test_a_failed_run_beats_a_partial_one() -> None:
    """Several runs exit with the most severe outcome, not the highest number."""
    assert combined(map(ExitCode, [0, 3, 1])) == 1
    assert combined(map(ExitCode, [3, 1])) == 1
    assert combined(map(ExitCode, [4, 1, 5, 2])) == 1
    assert combined(map(ExitCode, [4, 5, 2])) == 2
    assert combined(map(ExitCode, [4, 5, 3])) == 5
    assert combined(map(ExitCode, [3, 4, 0])) == 4
    assert combined(map(ExitCode, [0, 3])) == 3
    assert combined(map(ExitCode, [5, 130, 0])) == 130
    assert combined(map(ExitCode, [143, 1])) == 143
    assert combined(map(ExitCode, [129, 5])) == 129
    assert combined([]) == 0


def test_one_error_that_ends_every_wait_gives_each_run_its_own_result() -> None:
    """An error shared by every run (no client, a bug) yields one result per run, naming it."""
    shared = AccessDeniedError("no way in")
    first, second = (_error_result(DOMAIN, run_id, shared) for run_id in ("a", "b"))
    assert (first.job_run_id, second.job_run_id) == ("a", "b")
    assert first.error is not None
    assert second.error is not None
    assert (first.error.result, second.error.result) == (first, second)
    assert str(second.error) == "no way in"
    assert _error_result(DOMAIN, "a", shared) is first  # a's own result, as it was


def test_text_summary_reads_well() -> None:
    """The text output gives status, duration, lineage with failure rate and first errors."""
    doc = {
        "job_run_id": "run-1", "job_id": "job-1", "job_type": "LINEAGE", "status": "FAILED",
        "outcome": "failed", "duration_s": 75.0, "error_message": "3 queries failed",
        "lineage": {"total_queries_processed": 10, "num_queries_failed": 3, "failure_rate": 0.3,
                    "error_messages": ["e1", "e2", "e3", "e4"]},
        "polls": 3, "throttled": 1, "errors_retried": 0, "waited_s": 80.2, "problem": None,
    }  # fmt: skip
    text = render_text(doc)
    assert text.splitlines()[0] == "FAILED  run-1 (job job-1, LINEAGE)"
    assert "ran for 1m15s" in text
    assert "error: 3 queries failed" in text
    assert "lineage: 10 SQL queries processed, 3 failed (30.00%); first error: e1 (+3 more)" in text
    assert "waited 1m20s, 3 calls, 1 throttled" in text
    assert "\x1b[" not in text
    assert render_text(doc, color=True).startswith("\x1b[31mFAILED")


def test_text_summary_of_a_run_read_without_waiting_says_so() -> None:
    """A watch's announcement (read once, no waiting) is not "waited 0.0s, 1 call"."""
    doc = {
        "job_run_id": "run-1", "status": "SUCCESS", "outcome": "succeeded",
        "polls": 1, "throttled": 0, "errors_retried": 0, "waited_s": 0.0, "problem": None,
    }  # fmt: skip
    text = render_text(doc)
    assert text.splitlines()[-1] == "  read with 1 call"
    assert "waited" not in text


def test_text_summary_of_an_error() -> None:
    """An error outcome says no status was seen and why."""
    doc = {
        "job_run_id": "run-1", "status": None, "outcome": "error", "lineage": None, "polls": 1,
        "waited_s": 0.1, "problem": {"type": "AccessDeniedError", "message": "denied"},
    }  # fmt: skip
    lines = render_text(doc).splitlines()
    assert lines[0] == "ERROR  run-1 (no status seen)"
    assert lines[1] == "  AccessDeniedError: denied"


def test_quiet_prints_only_the_result(
    real_sim: Simulator, capsys: pytest.CaptureFixture[str]
) -> None:
    """--quiet: the result on stdout, nothing at all on stderr."""
    real_sim.add_run(DOMAIN, "run-q", RunScript(statuses=["SUCCESS"], lineage=Lineage()))
    code = main(["wait", "--domain-identifier", DOMAIN, "--identifier", "run-q", "--quiet",
                 "--endpoint-url", real_sim.endpoint_url])  # fmt: skip
    out, err = capsys.readouterr()
    assert code == 0
    assert json.loads(out)["lineage"]["num_queries_succeeded"] == 40
    assert err == ""


def test_text_output_on_request(real_sim: Simulator, capsys: pytest.CaptureFixture[str]) -> None:
    """--output text prints the summary even when stdout is not a terminal, uncoloured."""
    real_sim.add_run(DOMAIN, "run-t", RunScript(statuses=["FAILED"], error_message="boom"))
    code = main(["wait", "--domain-identifier", DOMAIN, "--identifier", "run-t", "--output",
                 "text", "--endpoint-url", real_sim.endpoint_url])  # fmt: skip
    out, err = capsys.readouterr()
    assert code == 1
    assert out.startswith("FAILED  run-t")
    assert "error: boom" in out
    assert json.loads(err.splitlines()[0])["event"] == "wait_started"


def test_console_log_format_on_request(
    real_sim: Simulator, capsys: pytest.CaptureFixture[str]
) -> None:
    """--log-format console gives readable, uncoloured log lines even off a terminal."""
    real_sim.add_run(DOMAIN, "run-c", RunScript(statuses=["SUCCESS"]))
    main(["wait", "--domain-identifier", DOMAIN, "--identifier", "run-c", "--log-format",
          "console", "--endpoint-url", real_sim.endpoint_url])  # fmt: skip
    err = capsys.readouterr().err
    assert "status_changed" in err
    assert "{" not in err.splitlines()[0]
    assert "\x1b[" not in err


def test_duplicate_identifiers_are_waited_on_once(
    real_sim: Simulator, capsys: pytest.CaptureFixture[str]
) -> None:
    """The same run named twice is one wait and one line."""
    real_sim.add_run(DOMAIN, "run-d", RunScript(statuses=["SUCCESS"]))
    main(["wait", "--domain-identifier", DOMAIN, "--identifier", "run-d", "--identifier",
          "run-d", "--endpoint-url", real_sim.endpoint_url, "-q"])  # fmt: skip
    assert len(capsys.readouterr().out.splitlines()) == 1
    assert real_sim.calls("run-d") == 1


def test_status_of_a_finished_run_exits_0(
    real_sim: Simulator, capsys: pytest.CaptureFixture[str]
) -> None:
    """`poller status` exits 0 for any status it read, failed included, with its outcome."""
    real_sim.add_run(DOMAIN, "run-s", RunScript(statuses=["FAILED"]))
    code = main(["status", "--domain-identifier", DOMAIN, "--identifier", "run-s", "-q",
                 "--endpoint-url", real_sim.endpoint_url])  # fmt: skip
    assert code == 0
    assert json.loads(capsys.readouterr().out)["outcome"] == "failed"


def test_a_bad_endpoint_is_bad_input(capsys: pytest.CaptureFixture[str]) -> None:
    """An endpoint URL botocore refuses is exit 2 with one line and nothing on stdout."""
    code = main(["wait", "--domain-identifier", DOMAIN, "--identifier", "r", "--endpoint-url",
                 "not a url"])  # fmt: skip
    out, err = capsys.readouterr()
    assert (code, out) == (2, "")
    assert len(err.strip().splitlines()) == 1
    assert "Traceback" not in err


def test_redact_hides_the_userinfo_of_every_url_and_nothing_else() -> None:
    """One function redacts: user and password go, an '@' in a path or an address stays."""
    from poller.log import redact

    text = 'x http://u:p@ss@h:1/a "https://k@h" https://h/b@c mail a@b.c'
    assert redact(text) == 'x http://***@h:1/a "https://***@h" https://h/b@c mail a@b.c'


def test_help_loads_no_botocore_structlog_asyncio_or_toml_parser() -> None:
    """`poller --help` and `poller wait --help` stay light: nothing heavy is imported."""
    code = (
        "import sys\n"
        "from poller.cli import main\n"
        "for args in (['--help'], ['wait', '--help'], ['status', '--help']):\n"
        "    assert main(args) == 0\n"
        "heavy = {'botocore', 'structlog', 'asyncio', 'tenacity', 'tomllib'} & set(sys.modules)\n"
        "assert not heavy, heavy\n"
    )
    subprocess.run([sys.executable, "-c", code], check=True, capture_output=True, text=True)


def test_the_live_line_learns_a_run_it_was_not_told_about() -> None:
    """--latest starts the line with no run: a run found later is drawn, not a KeyError."""
    import io

    from poller.cli._live import LiveLine

    screen = io.StringIO()
    line = LiveLine(screen, [], color=False, looking="looking for the latest run of job j")
    line.start()
    line.changed(JobRun(domain_id=DOMAIN, id="run-new", status="IN_PROGRESS"))
    line.finished("run-new")
    line.close()
    draws = screen.getvalue().split("\r\x1b[2K")
    assert any(d.startswith("waiting looking for the latest run of job j") for d in draws)
    assert any(d.startswith("waiting run-new  IN_PROGRESS") for d in draws)


def test_text_summary_of_a_run_still_going() -> None:
    """`poller status --output text` on a running run says so, not ERROR."""
    doc = {"job_run_id": "run-1", "status": "IN_PROGRESS", "outcome": None, "polls": 1,
           "waited_s": 0.1, "problem": None}  # fmt: skip
    assert render_text(doc).splitlines()[0] == "IN_PROGRESS  run-1 (still running)"


@pytest.mark.parametrize(("runs", "draws"), [(1, 200), (5_000, 0)])
def test_a_fleet_leaves_redrawing_the_live_line_to_its_ticker(runs: int, draws: int) -> None:
    """One run is redrawn on every step; 5,000 runs are not (each draw sums them all)."""
    import io

    from poller._policy import PollPolicy, Step, WaitState
    from poller.cli._live import CLEAR_LINE, LiveLine

    screen = io.StringIO()
    run_ids = [f"run-{i}" for i in range(runs)]
    line = LiveLine(screen, run_ids, color=False)  # not started: no ticker
    state = WaitState.start(PollPolicy(), 0.0)
    for i in range(200):
        line.on_step(run_ids[i % runs])(state, Step(delay=1.0))
    assert screen.getvalue().count(CLEAR_LINE) == draws
