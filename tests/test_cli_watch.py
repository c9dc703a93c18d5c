"""`poller watch` as a real process against the simulator: JSON lines as runs end, exit codes."""

from __future__ import annotations

import json
import signal
import subprocess
import time
from collections.abc import Iterator

import pytest
from helpers import ANSI, DOMAIN, LINEAGE, POLLER, child_env, run_on_pty

from poller.testing import Fault, SilentServer, Simulator

JOB = "job-cli"
WATCH = ["watch", "--domain-identifier", DOMAIN, "--job-identifier", JOB, "--interval", "50ms"]


@pytest.fixture
def sim() -> Iterator[Simulator]:
    with Simulator() as simulator:
        yield simulator


def poller(sim: Simulator, *args: str, timeout: float = 60) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [str(POLLER), *WATCH, *args],
        env=child_env(sim.endpoint_url),
        check=False,
        capture_output=True,
        text=True,
        timeout=timeout,
    )


def test_each_run_that_ends_is_one_json_line_and_the_exit_code_is_wait_s(sim: Simulator) -> None:
    """A run that ended before the watch is not announced; the next two are, in order, with
    lineage; one FAILED makes the exit code 1."""
    sim.add_scheduled_runs(DOMAIN, JOB, [(-60, 30, "SUCCESS")])
    since = str(time.time())  # a process may take a while to start: the runs end after this
    ids = sim.add_scheduled_runs(
        DOMAIN, JOB, [(0.5, 0.3, "SUCCESS"), (1.0, 0.4, "FAILED")], lineage=LINEAGE
    )
    done = poller(sim, "--count", "2", "--timeout", "30s", "--since", since)
    lines = [json.loads(line) for line in done.stdout.splitlines()]
    assert [(d["job_run_id"], d["status"]) for d in lines] == [
        (ids[0], "SUCCESS"),
        (ids[1], "FAILED"),
    ]
    assert all(d["lineage"]["total_queries_processed"] == 42 for d in lines)
    assert done.returncode == 1, done.stderr
    assert "Traceback" not in done.stderr


def test_status_chooses_what_is_announced(sim: Simulator) -> None:
    """--status FAILED: the successful run is passed over; all succeeded: exit 0 for it alone."""
    since = str(time.time())
    ids = sim.add_scheduled_runs(DOMAIN, JOB, [(0.3, 0.2, "SUCCESS"), (0.6, 0.2, "FAILED")])
    done = poller(sim, "--status", "FAILED", "--count", "1", "--timeout", "30s", "--since", since)
    assert [json.loads(line)["job_run_id"] for line in done.stdout.splitlines()] == ids[1:]
    assert done.returncode == 1


def test_the_timeout_before_count_runs_is_exit_4(sim: Simulator) -> None:
    """No run ends: stdout stays empty, stderr says so in a line, exit 4."""
    done = poller(sim, "--timeout", "0.5s")
    assert (done.returncode, done.stdout) == (4, "")
    assert "--timeout passed" in done.stderr


def test_a_watch_without_count_that_announced_a_failed_run_exits_1_at_the_timeout(
    sim: Simulator,
) -> None:
    """No --count: the FAILED run is printed, --timeout ends the watch, and the exit code is
    1 (a run failed outranks the timeout's 4); with only a success it is 4."""
    since = str(time.time())
    ids = sim.add_scheduled_runs(DOMAIN, JOB, [(0.3, 0.2, "FAILED")])
    done = poller(sim, "--timeout", "3s", "--since", since)
    assert [json.loads(line)["job_run_id"] for line in done.stdout.splitlines()] == ids
    assert done.returncode == 1, done.stderr
    assert "--timeout passed; 1 announced" in done.stderr
    ok = poller(sim, "--timeout", "1s", "--status", "SUCCESS", "--since", since)
    assert (ok.returncode, ok.stdout) == (4, "")


def test_denied_access_is_one_line_and_exit_5(sim: Simulator) -> None:
    """AccessDenied on the listing: one clear line naming the job, exit 5, one call."""
    sim.fail_list_job_runs(DOMAIN, JOB, Fault.error("AccessDeniedException", 403, "no list"))
    done = poller(sim, "--timeout", "30s")
    assert done.returncode == 5
    assert f"watch of job {JOB} in domain {DOMAIN}" in done.stderr
    assert "AccessDeniedException: no list" in done.stderr
    assert "Traceback" not in done.stderr
    assert len(sim.requests) == 1


@pytest.mark.parametrize(
    "args", [["--status", "RUNNING"], ["--count", "0"], ["--since", "yesterday"]]
)
def test_bad_flags_are_usage_errors(sim: Simulator, args: list[str]) -> None:
    """A status that is no end state, a count of 0, a since that is no time: exit 2, no call."""
    done = poller(sim, *args)
    assert done.returncode == 2
    assert sim.requests == []


def test_sigterm_ends_the_watch_within_a_second_with_143() -> None:
    """SIGTERM while a listing call is stuck on a silent server: gone at once, exit 143."""
    with SilentServer() as server:
        child = subprocess.Popen(
            [str(POLLER), *WATCH],
            env=child_env(server.endpoint_url, POLLER_AWS_READ_TIMEOUT="30s"),
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
        )
        deadline = time.monotonic() + 30
        while not server.requests and time.monotonic() < deadline:
            time.sleep(0.02)
        assert server.requests
        sent = time.monotonic()
        child.send_signal(signal.SIGTERM)
        out, err = child.communicate(timeout=10)
        took = time.monotonic() - sent
    assert child.returncode == 143
    assert took < 2.0  # the requirement is 1 s; the rest is room for a loaded machine
    assert out == ""
    assert "Traceback" not in err


def test_the_live_line_on_a_terminal_shows_what_is_watched(sim: Simulator) -> None:
    """On a terminal, stderr shows the job, the domain and the statuses being watched."""
    since = str(time.time())
    sim.add_scheduled_runs(DOMAIN, JOB, [(0.3, 0.2, "SUCCESS")])
    code, terminal, out = run_on_pty(
        [*WATCH, "--count", "1", "--timeout", "30s", "--status", "SUCCESS", "--since", since],
        child_env(sim.endpoint_url),
        stdout_too=False,
    )
    assert code == 0
    plain = ANSI.sub("", terminal)
    assert f"watching job {JOB} in domain {DOMAIN} (SUCCESS)" in plain
    assert json.loads(out)["status"] == "SUCCESS"
