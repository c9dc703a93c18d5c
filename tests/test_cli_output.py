"""A `poller` process in a broken environment: closed or broken streams, a terminal, secrets.

Real processes throughout: the streams are closed by a shell (`2>&-`, `>&-`) or by
the reader going away, the terminal is a pseudo-terminal.
"""

from __future__ import annotations

import json
import logging
import os
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import structlog
from helpers import ANSI, CLEAR, DOMAIN, POLLER, child_env, run_on_pty

from poller import PollPolicy
from poller.testing import Fault, RunScript, Simulator

ARGS = ["wait", "--domain-identifier", DOMAIN, "--identifier"]


@pytest.fixture
def sim() -> Iterator[Simulator]:
    with Simulator() as simulator:
        yield simulator


def in_shell(redirect: str, args: list[str], sim: Simulator, **kwargs: Any) -> Any:
    """Run poller under ``sh`` with ``redirect`` (e.g. ``2>&-``) applied to it."""
    return subprocess.run(
        ["sh", "-c", f'exec "$0" "$@" {redirect}', str(POLLER), *args],
        env=child_env(sim.endpoint_url),
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
        **kwargs,
    )


# -- stderr never decides the result -----------------------------------------


@pytest.mark.parametrize("quiet", [[], ["--quiet"]])
def test_a_closed_stderr_still_gives_the_result_and_its_exit_code(
    sim: Simulator, quiet: list[str]
) -> None:
    """`2>&-`, with or without --quiet: the document on stdout, exit 0 for a success."""
    sim.add_run(DOMAIN, "run-e", RunScript(statuses=["IN_PROGRESS", "SUCCESS"]))
    done = in_shell("2>&-", [*ARGS, "run-e", *quiet], sim)
    assert done.returncode == 0
    assert json.loads(done.stdout)["outcome"] == "succeeded"


def test_a_stderr_whose_reader_went_away_still_gives_the_result(sim: Simulator) -> None:
    """stderr a pipe nobody reads any more: the logs are dropped, the result is not."""
    sim.add_run(DOMAIN, "run-p", RunScript(statuses=["IN_PROGRESS", Fault.throttle(), "FAILED"]))
    child = subprocess.Popen(
        [str(POLLER), *ARGS, "run-p"],
        env=child_env(sim.endpoint_url),
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    assert child.stderr is not None
    assert child.stdout is not None
    child.stderr.close()  # the reader is gone before the first log line
    out = child.stdout.read()
    assert child.wait(timeout=60) == 1  # FAILED, as the run did
    assert json.loads(out)["status"] == "FAILED"


# -- stdout closed or broken: a code of its own ------------------------------


def test_a_closed_stdout_exits_141_with_one_line_and_no_call(sim: Simulator) -> None:
    """`>&-`: nowhere for the result, so exit 141 at once, one line on stderr, no traceback."""
    sim.add_run(DOMAIN, "run-c", RunScript(statuses=["SUCCESS"]))
    done = in_shell(">&-", [*ARGS, "run-c"], sim)
    assert done.returncode == 141
    assert "stdout is closed" in done.stderr
    assert "internal error" not in done.stderr
    assert "Traceback" not in done.stderr
    assert sim.calls("run-c") == 0


def test_a_broken_pipe_on_stdout_exits_141_not_a_runs_code(sim: Simulator) -> None:
    """`poller wait ... | true`: the reader left, so exit 141 (never 1, "FAILED"), no traceback."""
    sim.add_run(DOMAIN, "run-b", RunScript(statuses=["IN_PROGRESS", "SUCCESS"]))
    child = subprocess.Popen(
        [str(POLLER), *ARGS, "run-b"],
        env=child_env(sim.endpoint_url),
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    assert child.stdout is not None
    child.stdout.close()  # as `| true` does
    _, err = child.communicate(timeout=60)
    assert child.returncode == 141
    assert "Traceback" not in err
    assert "Exception ignored" not in err
    assert "stdout is closed" in err


def test_a_full_disk_on_stdout_is_said_so_not_called_a_broken_pipe(sim: Simulator) -> None:
    """`> /dev/full`: exit 141 (results lost), and the line says no space was left."""
    sim.add_run(DOMAIN, "run-f", RunScript(statuses=["SUCCESS"]))
    done = in_shell("> /dev/full", [*ARGS, "run-f"], sim)
    assert done.returncode == 141
    (line,) = done.stderr.splitlines()[-1:]
    assert line == (
        "poller: error: stdout cannot be written: No space left on device: the results are lost"
    )
    assert "broken pipe" not in done.stderr
    assert "Traceback" not in done.stderr


@pytest.mark.parametrize("args", [["--help"], ["wait", "--help"], ["--version"]])
def test_help_with_stdout_closed_or_broken_exits_141_as_a_wait_does(
    sim: Simulator, args: list[str]
) -> None:
    """Help that cannot be delivered is lost output: 141, as for results, never 1 or 0."""
    assert in_shell(">&-", args, sim).returncode == 141
    read, write = os.pipe()
    os.close(read)  # the reader is gone before the help is written
    try:
        done = subprocess.run(
            [str(POLLER), *args], stdout=write, stderr=subprocess.PIPE, timeout=60, check=False
        )
    finally:
        os.close(write)
    assert done.returncode == 141
    assert b"Traceback" not in done.stderr


# -- a terminal ----------------------------------------------------------------


def test_latest_on_a_terminal_shows_the_live_line_and_the_result(sim: Simulator) -> None:
    """`--job-identifier J --latest` with stderr on a terminal: the run's result, exit 0."""
    now = time.time()
    sim.add_run(
        DOMAIN, "run-old", RunScript(statuses=["FAILED"]), job_id="job-t", created_at=now - 60
    )
    sim.add_run(DOMAIN, "run-new", RunScript(statuses=["IN_PROGRESS", "SUCCESS"]), job_id="job-t")
    args = ["wait", "--domain-identifier", DOMAIN, "--job-identifier", "job-t", "--latest"]
    code, tty, out = run_on_pty(args, child_env(sim.endpoint_url), stdout_too=False)
    assert code == 0
    assert json.loads(out)["job_run_id"] == "run-new"
    assert "internal error" not in tty
    assert "Traceback" not in tty
    draws = [ANSI.sub("", d) for d in tty.split(CLEAR)]
    assert any(d.startswith("waiting ") for d in draws)
    assert tty.endswith(CLEAR)


# -- secrets -------------------------------------------------------------------


def test_a_password_in_the_endpoint_url_is_never_shown(sim: Simulator) -> None:
    """userinfo in --endpoint-url: absent from the resume hint, the logs and the documents."""
    sim.add_run(DOMAIN, "run-s", RunScript(statuses=["IN_PROGRESS"] * 50))
    url = sim.endpoint_url.replace("http://", "http://alice:s3cret-pw@")
    done = subprocess.run(
        [str(POLLER), *ARGS, "run-s", "--endpoint-url", url, "--timeout", "0.3"],
        env=child_env(None),
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert done.returncode == 4
    assert "To keep waiting" in done.stderr
    assert "***@" in done.stderr  # the hint names the endpoint, without its userinfo
    assert "s3cret-pw" not in done.stderr + done.stdout
    assert "alice" not in done.stderr + done.stdout


def test_a_password_in_an_unreachable_endpoint_is_not_in_the_error(sim: Simulator) -> None:
    """A call that fails names the endpoint in its message: without the password."""
    done = subprocess.run(
        [str(POLLER), *ARGS, "run-x", "--endpoint-url", "http://bob:hunter2@127.0.0.1:9",
         "--timeout", "0.5"],
        env=child_env(None), capture_output=True, text=True, timeout=60, check=False,
    )  # fmt: skip
    assert done.returncode == 5
    assert "127.0.0.1:9" in done.stdout  # the message still says where
    assert "hunter2" not in done.stderr + done.stdout


# -- a library that prints nothing ----------------------------------------------

SCRIPT = """
import sys
from poller import ClientSettings, wait_for_job_run
print("mine")
settings = ClientSettings(endpoint_url=sys.argv[1], region_name="us-east-1")
result = wait_for_job_run("{domain}", "run-lib", client=settings)
print("mine:", result.job_run.status)
"""


def test_a_script_calling_the_library_gets_nothing_of_polls_on_its_stdout(
    sim: Simulator, tmp_path: Path
) -> None:
    """A script that configures no logging sees only its own lines on stdout."""
    sim.add_run(DOMAIN, "run-lib", RunScript(statuses=["SCHEDULED", "IN_PROGRESS", "SUCCESS"]))
    done = subprocess.run(
        [sys.executable, "-c", SCRIPT.format(domain=DOMAIN), sim.endpoint_url],
        env=child_env(None),
        cwd=tmp_path,  # the installed poller, not whatever is in the current directory
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert done.returncode == 0, done.stderr
    assert done.stdout == "mine\nmine: SUCCESS\n"


def test_without_structlog_configured_the_events_reach_stdlib_logging(
    sim: Simulator, caplog: pytest.LogCaptureFixture
) -> None:
    """Unconfigured, poller's events are records of the `poller` logger: caplog sees `finished`."""
    from poller import wait_for_job_run

    sim.add_run(DOMAIN, "run-cap", RunScript(statuses=["IN_PROGRESS", "SUCCESS"]))
    structlog.reset_defaults()  # as in a fresh process (the suite's fixture puts it back)
    caplog.set_level(logging.INFO, logger="poller")
    wait_for_job_run(DOMAIN, "run-cap", client=sim.client(), policy=PollPolicy(interval=0.05))
    finished = [r for r in caplog.records if r.getMessage().startswith("finished ")]
    assert len(finished) == 1
    assert finished[0].name == "poller"
    assert finished[0].poller["outcome"] == "succeeded"  # type: ignore[attr-defined]
    assert json.loads(finished[0].getMessage().split(" ", 1)[1])["status"] == "SUCCESS"
