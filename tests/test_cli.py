"""The real `poller` console script, in a subprocess, against the simulator over real HTTP."""

from __future__ import annotations

import itertools
import json
import os
import re
import shlex
import signal
import subprocess
import sys
import time
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
from helpers import ANSI, CLEAR, POLLER, RESULT_KEYS, child_env, run_on_pty

from poller._datazone import build_client
from poller.testing import Fault, Lineage, RunScript, Simulator

DOMAIN = "dzd_cli"
_ids = itertools.count()


@pytest.fixture(scope="module")
def live_sim() -> Iterator[Simulator]:
    """One real-clock simulator for the module; each test adds runs with fresh IDs."""
    with Simulator() as simulator:
        yield simulator


@pytest.fixture
def add(live_sim: Simulator) -> Any:
    """Add a run with a fresh ID to the shared simulator and return that ID."""

    def add_run(*statuses: str | Fault, **script: Any) -> str:
        run_id = f"run-{next(_ids)}-{os.getpid()}"
        script = {"statuses": list(statuses), **script} if statuses else script
        live_sim.add_run(DOMAIN, run_id, RunScript(**script), job_id="job-1")
        return run_id

    return add_run


@dataclass
class Ran:
    code: int
    stdout: str
    stderr: str

    def document(self) -> dict[str, Any]:
        """stdout parsed as exactly one JSON document."""
        return json.loads(self.stdout)  # type: ignore[no-any-return]

    def documents(self) -> list[dict[str, Any]]:
        """stdout parsed as JSON Lines."""
        return [json.loads(line) for line in self.stdout.splitlines()]

    def events(self) -> list[dict[str, Any]]:
        """stderr parsed as JSON log lines."""
        return [json.loads(line) for line in self.stderr.splitlines() if line.startswith("{")]


def poller(
    *args: str, sim: Simulator | None = None, env: dict[str, str] | None = None, **extra: str
) -> Ran:
    """Run the console script to its end; no run may ever print a traceback."""
    done = subprocess.run(
        [str(POLLER), *args],
        env=env if env is not None else child_env(sim.endpoint_url if sim else None, **extra),
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert "Traceback" not in done.stderr
    assert "Traceback" not in done.stdout
    return Ran(done.returncode, done.stdout, done.stderr)


def wait(run_id: str, *args: str, sim: Simulator, **extra: str) -> Ran:
    return poller(
        "wait", "--domain-identifier", DOMAIN, "--identifier", run_id, *args, sim=sim, **extra
    )


# -- outcomes and exit codes ------------------------------------------------


def test_success_prints_one_document_and_exits_0(live_sim: Simulator, add: Any) -> None:
    """A run that succeeds: exit 0, stdout is exactly the result document, stderr JSON logs."""
    run_id = add("SCHEDULED", Fault.throttle(), "IN_PROGRESS", "SUCCESS", lineage=Lineage())
    ran = wait(run_id, sim=live_sim)
    assert ran.code == 0
    doc = ran.document()
    assert list(doc) == RESULT_KEYS
    assert (doc["status"], doc["outcome"], doc["polls"], doc["throttled"]) == (
        "SUCCESS", "succeeded", 4, 1,
    )  # fmt: skip
    assert doc["lineage"]["failure_rate"] == 0.0476
    events = [e["event"] for e in ran.events()]
    assert events[0] == "wait_started"
    assert events[-1] == "finished"
    assert "throttled" in events
    assert "status_changed" in events


@pytest.mark.parametrize(
    ("status", "flags", "code", "outcome"),
    [
        ("FAILED", (), 1, "failed"),
        ("CANCELED", (), 1, "failed"),
        ("PARTIALLY_SUCCEEDED", (), 3, "partially_succeeded"),
        ("PARTIALLY_SUCCEEDED", ("--allow-partial",), 0, "partially_succeeded"),
    ],
)
def test_terminal_statuses_map_to_their_exit_codes(
    live_sim: Simulator, add: Any, status: str, flags: Sequence[str], code: int, outcome: str
) -> None:
    """Failed runs exit 1, a partial success 3, or 0 with --allow-partial."""
    run_id = add("IN_PROGRESS", status, error_message="2 of 42 queries failed")
    ran = wait(run_id, *flags, sim=live_sim)
    assert ran.code == code
    assert ran.document()["outcome"] == outcome


def test_allow_partial_from_the_environment(live_sim: Simulator, add: Any) -> None:
    """POLLER_WAIT_ALLOW_PARTIAL=true has the effect of the flag."""
    run_id = add("PARTIALLY_SUCCEEDED")
    assert wait(run_id, sim=live_sim, POLLER_WAIT_ALLOW_PARTIAL="true").code == 0


@pytest.mark.parametrize(("flags", "lookups"), [((), 1), (("--no-history",), 0)])
def test_no_history_makes_no_list_job_runs_call(
    live_sim: Simulator, flags: Sequence[str], lookups: int
) -> None:
    """--no-history waits without asking for the job's past runs; by default it asks once."""
    job_id = f"job-history-{next(_ids)}-{os.getpid()}"
    run_id = f"run-{next(_ids)}-{os.getpid()}"
    script = RunScript(statuses=["IN_PROGRESS", "IN_PROGRESS", "SUCCESS"])
    live_sim.add_run(DOMAIN, run_id, script, job_id=job_id)
    ran = wait(run_id, "--interval", "0.1", *flags, sim=live_sim)
    assert ran.code == 0
    listed = [r for r in live_sim.requests if r.operation == "ListJobRuns" and r.job_id == job_id]
    assert len(listed) == lookups


def test_wait_timeout_exits_4_and_says_how_to_resume(live_sim: Simulator, add: Any) -> None:
    """--timeout 0 checks once; stderr gives the exact command that resumes the wait."""
    run_id = add("IN_PROGRESS", "SUCCESS")
    ran = wait(run_id, "--timeout", "0", "--region", "us-east-1", sim=live_sim)
    assert ran.code == 4
    doc = ran.document()
    assert (doc["outcome"], doc["status"], doc["polls"]) == ("wait_timeout", "IN_PROGRESS", 1)
    assert doc["problem"]["type"] == "WaitTimeoutError"
    (hint,) = [line for line in ran.stderr.splitlines() if "To keep waiting:" in line]
    command = shlex.split(hint.split("To keep waiting: ", 1)[1])
    assert command == [
        "poller", "wait", "--domain-identifier", DOMAIN, "--timeout", "0",
        "--region", "us-east-1", "--identifier", run_id,
    ]  # fmt: skip
    resumed = poller(*command[1:], sim=live_sim)  # the run has finished meanwhile
    assert (resumed.code, resumed.document()["status"]) == (0, "SUCCESS")


def test_no_deadline_waits_until_the_end(live_sim: Simulator, add: Any) -> None:
    """--timeout none has no deadline: the wait ends when the run does."""
    run_id = add("SCHEDULED", "IN_PROGRESS", "IN_PROGRESS", "SUCCESS")
    ran = wait(run_id, "--timeout", "none", sim=live_sim)
    assert ran.code == 0
    assert ran.events()[0]["timeout_s"] is None


@pytest.mark.parametrize(
    ("statuses", "extra", "problem"),
    [
        ((), {}, "JobRunNotFoundError"),  # no such run
        ((Fault.error("AccessDeniedException", 403), "SUCCESS"), {}, "AccessDeniedError"),
        (
            (Fault.internal(), Fault.http(502), Fault.reset(), "SUCCESS"),
            {"POLLER_RETRY_MAX_ERRORS": "3"},
            "ServiceUnavailableError",
        ),
    ],
    ids=["not-found", "access-denied", "transient-faults"],
)
def test_unreadable_status_exits_5_with_a_document(
    live_sim: Simulator, add: Any, statuses: Sequence[Any], extra: dict[str, str], problem: str
) -> None:
    """Not found, denied, and faults that do not clear: exit 5, outcome error, status null."""
    run_id = add(*statuses) if statuses else "run-that-does-not-exist"
    ran = wait(run_id, "--not-found-grace", "0", sim=live_sim, **extra)
    assert ran.code == 5
    doc = ran.document()
    assert (doc["outcome"], doc["status"], doc["problem"]["type"]) == ("error", None, problem)
    assert f"poller: {run_id}: {problem}" in ran.stderr


def test_validation_exception_exits_2(live_sim: Simulator, add: Any) -> None:
    """A ValidationException from the service is bad input: exit 2, with the document."""
    run_id = add(Fault.error("ValidationException", 400, "identifier is not valid"), "SUCCESS")
    ran = wait(run_id, sim=live_sim)
    assert ran.code == 2
    assert ran.document()["problem"]["type"] == "InvalidRequestError"


def test_missing_credentials_exit_5_with_a_clear_message(live_sim: Simulator, add: Any) -> None:
    """No credentials anywhere: one clear line, exit 5, and the document still printed."""
    run_id = add("SUCCESS")
    env = child_env(live_sim.endpoint_url)
    del env["AWS_ACCESS_KEY_ID"], env["AWS_SECRET_ACCESS_KEY"]
    ran = poller("wait", "--domain-identifier", DOMAIN, "--identifier", run_id, env=env)
    assert ran.code == 5
    assert ran.document()["problem"]["type"] == "AccessDeniedError"
    assert "no usable AWS credentials" in ran.stderr
    assert live_sim.calls(run_id) == 0


def test_a_missing_region_is_bad_input_for_every_run_and_the_command_ends(
    live_sim: Simulator, add: Any
) -> None:
    """No region anywhere, two runs: exit 2 at once, one line naming a fix that works, no call."""
    first, second = add("SUCCESS"), add("SUCCESS")
    env = child_env(live_sim.endpoint_url)
    del env["AWS_DEFAULT_REGION"]
    args = ["wait", "--domain-identifier", DOMAIN, "--identifier", first, "--identifier", second]
    ran = poller(*args, env=env)
    assert ran.code == 2
    assert ran.stdout == ""
    assert "no AWS region configured" in ran.stderr
    assert "AWS_REGION" in ran.stderr
    assert live_sim.calls(first) == live_sim.calls(second) == 0
    # The fix the message names works.
    assert poller(*args, env={**env, "AWS_REGION": "us-east-1"}).code == 0


def test_aws_region_is_honoured_as_the_aws_cli_does(
    live_sim: Simulator, add: Any, monkeypatch: pytest.MonkeyPatch
) -> None:
    """AWS_REGION alone is a region, and it wins over AWS_DEFAULT_REGION, as for AWS CLI v2."""
    run_id = add("SUCCESS")
    env = child_env(live_sim.endpoint_url, AWS_REGION="eu-west-1")
    del env["AWS_DEFAULT_REGION"]
    assert poller("wait", "--domain-identifier", DOMAIN, "--identifier", run_id, env=env).code == 0
    monkeypatch.setenv("AWS_REGION", "eu-west-1")  # AWS_DEFAULT_REGION is us-east-1 here
    client = build_client(endpoint_url=live_sim.endpoint_url)
    assert client.meta.region_name == "eu-west-1"  # the region its calls are signed for
    client.close()


def test_an_unknown_profile_is_bad_input_naming_the_profiles_there_are(
    live_sim: Simulator, add: Any, tmp_path: Path
) -> None:
    """--profile no-such-profile with two runs: exit 2 before any call, the known ones named."""
    first, second = add("SUCCESS"), add("SUCCESS")
    config = tmp_path / "config"
    config.write_text("[profile etl]\nregion = eu-west-1\n")
    env = child_env(live_sim.endpoint_url, AWS_CONFIG_FILE=str(config))
    ran = poller(
        "wait", "--domain-identifier", DOMAIN, "--identifier", first, "--identifier", second,
        "--profile", "no-such-profile", env=env,
    )  # fmt: skip
    assert ran.code == 2
    assert ran.stdout == ""
    assert "'no-such-profile' not found" in ran.stderr
    assert "it has: etl" in ran.stderr
    assert live_sim.calls(first) == live_sim.calls(second) == 0


# -- bad input --------------------------------------------------------------


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["--domain-identifier", "abc123", "--identifier", "r"], "invalid domain identifier"),
        (["--domain-identifier", DOMAIN, "--identifier", "run/../x"], "invalid job run identifier"),
        (["--domain-identifier", DOMAIN, "--identifier", "r", "--timeout", "-5s"], "negative"),
        (["--domain-identifier", DOMAIN, "--identifier", "r", "--interval", "soon"], "--interval"),
        (["--domain-identifier", DOMAIN, "--identifier", "r", "--output", "xml"], "'xml'"),
        (["--domain-identifier", DOMAIN, "--identifier", "r", "--config", "/nonexistent.toml"],
         "cannot read config file /nonexistent.toml"),
        (["--domain-identifier", DOMAIN, "--identifier", "r", "--frobnicate"], "--frobnicate"),
        (["--identifier", "r"], "Missing option '--domain-identifier'"),
        (["--domain-identifier", DOMAIN, "--identifier", "r", "--interval", "1m",
          "--max-interval", "10s"], "max_interval must not be smaller than interval"),
    ],
)  # fmt: skip
def test_bad_input_is_one_line_exit_2_and_no_call(
    live_sim: Simulator, args: list[str], message: str
) -> None:
    """Malformed IDs, bad durations or output, unreadable config: one line, exit 2, no stdout."""
    before = len(live_sim.requests)
    ran = poller("wait", *args, sim=live_sim)
    assert ran.code == 2
    assert ran.stdout == ""
    assert len(ran.stderr.strip().splitlines()) == 1
    assert message in ran.stderr
    assert len(live_sim.requests) == before


def test_invalid_config_file_names_file_and_key(live_sim: Simulator, tmp_path: Path) -> None:
    """A config file with a bad value: exit 2, the message names the file and the key."""
    config = tmp_path / "poller.toml"
    config.write_text('[wait]\ntimeout = "forever"\n')
    ran = poller(
        "wait", "--domain-identifier", DOMAIN, "--identifier", "r", sim=live_sim,
        POLLER_CONFIG=str(config),
    )  # fmt: skip
    assert ran.code == 2
    assert f"{config}: [wait] timeout: not a duration: 'forever'" in ran.stderr
    assert ran.stdout == ""


# -- configuration reaches the wait -----------------------------------------


def test_config_precedence_end_to_end(live_sim: Simulator, add: Any, tmp_path: Path) -> None:
    """The wait's deadline comes from the file, then the environment, then the flag."""
    config = tmp_path / "poller.toml"
    config.write_text('[wait]\ntimeout = "5m"\n')
    run_id = add("SUCCESS")

    def timeout_used(*flags: str, **env: str) -> float:
        ran = wait(run_id, "--config", str(config), *flags, sim=live_sim, **env)
        assert ran.code == 0
        return float(ran.events()[0]["timeout_s"])

    assert timeout_used() == 300.0
    assert timeout_used(POLLER_WAIT_TIMEOUT="10m") == 600.0
    assert timeout_used("--timeout", "90", POLLER_WAIT_TIMEOUT="10m") == 90.0


# -- several runs -----------------------------------------------------------


def logged_document(ran: Ran) -> dict[str, Any]:
    """The `finished` event's result document: the event without the log's own fields."""
    (event,) = [e for e in ran.events() if e["event"] == "finished"]
    return {k: v for k, v in event.items() if k not in ("event", "level", "timestamp")}


def test_status_of_a_running_run_logs_exactly_the_document_it_prints(
    live_sim: Simulator, add: Any
) -> None:
    """A run still going: outcome null on stdout and in the `finished` event alike."""
    run_id = add("IN_PROGRESS")
    ran = poller("status", "--domain-identifier", DOMAIN, "--identifier", run_id, sim=live_sim)
    assert ran.code == 0
    assert ran.document()["outcome"] is None
    assert logged_document(ran) == ran.document()


def test_status_with_timeout_0_that_read_the_status_exits_0_with_outcome_null(
    live_sim: Simulator, add: Any
) -> None:
    """`status --timeout 0` reads the run once: a status read is exit 0, never 4."""
    run_id = add("IN_PROGRESS")
    ran = poller(
        "status", "--domain-identifier", DOMAIN, "--identifier", run_id, "--timeout", "0",
        sim=live_sim,
    )  # fmt: skip
    doc = ran.document()
    assert (ran.code, doc["status"], doc["outcome"], doc["problem"]) == (
        0, "IN_PROGRESS", None, None,
    )  # fmt: skip
    assert logged_document(ran) == doc


def test_status_gives_up_at_its_own_short_deadline_with_the_unreadable_code(
    live_sim: Simulator, add: Any
) -> None:
    """Every call throttled: `status --timeout 1s` ends near 1 s, exit 5 (no status read)."""
    run_id = add(Fault.throttle())
    started = time.monotonic()
    ran = poller(
        "status", "--domain-identifier", DOMAIN, "--identifier", run_id, "--timeout", "1s",
        sim=live_sim, POLLER_WAIT_TIMEOUT="1h",
    )  # fmt: skip
    assert time.monotonic() - started < 10
    assert ran.code == 5
    doc = ran.document()
    assert (doc["status"], doc["outcome"]) == (None, "error")
    assert doc["problem"]["type"] == "ServiceUnavailableError"
    assert doc["throttled"] >= 2
    assert logged_document(ran) == doc
    assert "[default: 30s]" in poller("status", "--help").stdout


def test_log_values_are_rounded_and_the_timeout_message_says_each_thing_once(
    live_sim: Simulator, add: Any
) -> None:
    """--latest starts the wait with what is left of the deadline: shown to the millisecond."""
    run_id = add("IN_PROGRESS")  # the newest run of job-1
    ran = poller(
        "wait", "--domain-identifier", DOMAIN, "--job-identifier", "job-1", "--latest",
        "--timeout", "1s", sim=live_sim,
    )  # fmt: skip
    assert ran.code == 4
    (started,) = [e for e in ran.events() if e["event"] == "wait_started"]
    assert started["job_run_id"] == run_id
    assert 0 < started["timeout_s"] <= 1
    assert round(started["timeout_s"], 3) == started["timeout_s"]
    message = ran.document()["problem"]["message"]
    assert (
        message
        == "the wait's deadline passed before the run finished (the run was still IN_PROGRESS)"
    )
    assert message.count("IN_PROGRESS") == 1


def test_several_runs_print_json_lines_as_each_finishes(live_sim: Simulator, add: Any) -> None:
    """Runs are waited on concurrently; one line per run, in finishing order; worst outcome."""
    slow = add(*["IN_PROGRESS"] * 6, "FAILED")
    fast = add("SUCCESS")
    partial = add("IN_PROGRESS", "PARTIALLY_SUCCEEDED")
    ran = poller(
        "wait", "--domain-identifier", DOMAIN, "--identifier", slow, "--identifier", fast,
        "--identifier", partial, sim=live_sim,
    )  # fmt: skip
    assert ran.code == 1  # a failed run beats a partial one
    docs = ran.documents()
    assert [d["job_run_id"] for d in docs] == [fast, partial, slow]
    assert [d["outcome"] for d in docs] == ["succeeded", "partially_succeeded", "failed"]


def test_every_stderr_line_is_one_event_or_one_message_with_300_runs_timing_out(
    live_sim: Simulator, add: Any, tmp_path: Path
) -> None:
    """300 runs time out together: events and messages never share a line, none is empty."""
    runs = tmp_path / "runs.txt"
    runs.write_text("".join(f"{add('IN_PROGRESS')}\n" for _ in range(300)))
    ran = poller(
        "wait", "--domain-identifier", DOMAIN, "--from-file", str(runs), "--timeout", "1s",
        "--max-rps", "2000", sim=live_sim,
    )  # fmt: skip
    assert ran.code == 4
    assert len(ran.documents()) == 300
    messages = events = 0
    for line in ran.stderr.splitlines():
        if line.startswith(("poller: ", "To keep waiting: ")):
            assert "{" not in line, line  # no event glued to a message
            messages += 1
        else:
            assert isinstance(json.loads(line), dict), line  # exactly one event
            events += 1
    assert messages == 301  # one per run timed out, and how to resume
    assert events >= 600  # wait_started and finished, at least, for each run


def test_several_runs_one_unreadable(live_sim: Simulator, add: Any) -> None:
    """A run that cannot be read yields its own error line; the others still finish."""
    ok = add("SUCCESS")
    missing = "run-that-does-not-exist"
    ran = poller(
        "wait", "--domain-identifier", DOMAIN, "--identifier", ok, "--identifier", missing,
        "--not-found-grace", "0", sim=live_sim,
    )  # fmt: skip
    assert ran.code == 5
    outcomes = {d["job_run_id"]: d["outcome"] for d in ran.documents()}
    assert outcomes == {ok: "succeeded", missing: "error"}


# -- signals ----------------------------------------------------------------


@pytest.mark.parametrize(("signum", "code"), [(signal.SIGINT, 130), (signal.SIGTERM, 143)])
def test_a_signal_stops_the_wait_and_prints_the_last_state(
    live_sim: Simulator, add: Any, signum: int, code: int
) -> None:
    """SIGINT/SIGTERM: exit 130/143, outcome interrupted, the last status seen, no traceback."""
    run_id = add("IN_PROGRESS")
    child = subprocess.Popen(
        [str(POLLER), "wait", "--domain-identifier", DOMAIN, "--identifier", run_id],
        env=child_env(live_sim.endpoint_url),
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    deadline = time.monotonic() + 20
    while live_sim.calls(run_id) < 2 and time.monotonic() < deadline:
        time.sleep(0.02)
    child.send_signal(signum)
    out, err = child.communicate(timeout=20)
    assert child.returncode == code
    assert "Traceback" not in err
    doc = json.loads(out)
    assert (doc["outcome"], doc["status"]) == ("interrupted", "IN_PROGRESS")
    assert doc["problem"]["type"] == "WaitCancelledError"
    assert "not touched" in err


# -- status, python -m, demo -------------------------------------------------


def test_status_reads_once_and_reports_a_running_run(live_sim: Simulator, add: Any) -> None:
    """`poller status` on a running run: one call, outcome null, exit 0."""
    run_id = add("IN_PROGRESS", "SUCCESS")
    ran = poller("status", "--domain-identifier", DOMAIN, "--identifier", run_id, sim=live_sim)
    assert ran.code == 0
    doc = ran.document()
    assert (doc["status"], doc["outcome"], doc["polls"]) == ("IN_PROGRESS", None, 1)
    assert list(doc) == RESULT_KEYS
    assert live_sim.calls(run_id) == 1


def test_python_dash_m_is_the_same_command(live_sim: Simulator, add: Any) -> None:
    """`python -m poller wait` behaves like the console script."""
    run_id = add("FAILED")
    done = subprocess.run(
        [sys.executable, "-m", "poller", "wait", "--domain-identifier", DOMAIN,
         "--identifier", run_id],
        env=child_env(live_sim.endpoint_url), capture_output=True, text=True, check=False,
    )  # fmt: skip
    assert done.returncode == 1
    assert json.loads(done.stdout)["status"] == "FAILED"


def test_the_command_the_demo_names_works_against_a_simulator_with_no_aws_setup(
    live_sim: Simulator, add: Any
) -> None:
    """The demo's "as `... poller wait ...` would" is a command that works as it is printed."""
    env = child_env(None)
    ran = poller("demo", "--output", "json", env=env)
    hint = ran.stderr.splitlines()[0]
    command = shlex.split(hint.split("`")[1])
    names = [word.split("=", 1) for word in itertools.takewhile(lambda w: "=" in w, command)]
    args = command[len(names) :]
    assert args[:2] == ["poller", "wait"]
    run_id = add("SUCCESS")
    bare = {k: v for k, v in child_env(None).items() if not k.startswith("AWS_")}
    bare["AWS_CONFIG_FILE"] = bare["AWS_SHARED_CREDENTIALS_FILE"] = os.devnull
    bare.update(dict(names))
    bare["AWS_ENDPOINT_URL_DATAZONE"] = live_sim.endpoint_url  # the demo's simulator is gone
    args = [run_id if arg == "run-demo-1" else arg for arg in args[1:]]
    args = [DOMAIN if arg == "dzd_demo" else arg for arg in args]
    assert poller(*args, env=bare).code == 0


def test_the_demo_transcript_in_the_docs_is_what_the_demo_prints() -> None:
    """docs/cli.md's `poller demo` session: the same first line and the same events, in order."""
    from _docs import ROOT, blocks

    (shown,) = [
        b.code for b in blocks(ROOT / "docs" / "cli.md") if b.code.startswith("$ poller demo\n")
    ]
    lines = shown.splitlines()[1:]
    port = re.compile(r"127\.0\.0\.1:\d+")
    ran = poller("demo", "--output", "json", env=child_env(None))
    assert port.sub("PORT", lines[0]) == port.sub("PORT", ran.stderr.splitlines()[0])
    documented = [line.split()[3] for line in lines if line[:4].isdigit()]  # time [level] event
    printed = [e["event"] for e in ran.events() if e["event"] != "finished"]  # a terminal: no
    assert documented == printed  # `finished` line, the result is printed right below


def test_demo_runs_offline_and_prints_the_result() -> None:
    """`poller demo` waits on the simulator's scripted run: throttles, lineage, exit 0."""
    env = child_env(None)
    env.pop("AWS_ACCESS_KEY_ID")  # the demo needs no credentials of the caller's
    ran = poller("demo", "--output", "json", env=env)
    assert ran.code == 0
    doc = ran.document()
    assert (doc["status"], doc["outcome"]) == ("SUCCESS", "succeeded")
    assert doc["throttled"] >= 2
    assert doc["lineage"]["total_queries_processed"] == 42
    events = [e["event"] for e in ran.events()]
    assert events.count("status_changed") == 3


# -- on a terminal ----------------------------------------------------------


def test_live_status_line_redraws_in_place_and_is_cleared(live_sim: Simulator, add: Any) -> None:
    """On a terminal stderr, the status line is redrawn in place and erased before the end."""
    run_id = add(*["IN_PROGRESS"] * 5, Fault.throttle(), "SUCCESS")
    env = child_env(
        live_sim.endpoint_url,
        POLLER_WAIT_INTERVAL="300ms",
        POLLER_WAIT_MAX_INTERVAL="300ms",
        POLLER_RETRY_INITIAL="300ms",
        POLLER_RETRY_MAX="300ms",
    )
    code, tty, out = run_on_pty(
        ["wait", "--domain-identifier", DOMAIN, "--identifier", run_id], env, stdout_too=False
    )
    assert code == 0
    assert json.loads(out)["status"] == "SUCCESS"  # stdout a pipe: JSON, untouched by the line
    assert "Traceback" not in tty
    draws = [ANSI.sub("", d) for d in tty.split(CLEAR)]
    lines = [d for d in draws if d.startswith("waiting ")]
    assert any(f"{run_id}  IN_PROGRESS" in d and "next check in" in d for d in lines)
    assert any("throttled" in d for d in lines)
    assert all("\n" not in d for d in lines)  # redrawn in place, never scrolled
    # The last thing on the terminal is the erase, not a stale status line.
    assert tty.endswith(CLEAR)
    assert "\x1b[" in tty.replace(CLEAR, "")  # coloured: a terminal, NO_COLOR unset


def test_text_result_on_a_terminal_follows_a_cleared_line(live_sim: Simulator, add: Any) -> None:
    """With stdout on the terminal too: text output, after the line is erased; NO_COLOR honoured."""
    run_id = add("IN_PROGRESS", "PARTIALLY_SUCCEEDED", lineage=Lineage(), error_message="2 failed")
    env = child_env(live_sim.endpoint_url, NO_COLOR="1")
    code, tty, _ = run_on_pty(
        ["wait", "--domain-identifier", DOMAIN, "--identifier", run_id], env, stdout_too=True
    )
    assert code == 3
    assert "\x1b[" not in tty.replace(CLEAR, "")  # no colour at all
    result = tty.rsplit(CLEAR, 1)[1]
    assert result.startswith(f"PARTIALLY_SUCCEEDED  {run_id}")
    assert "lineage: 42 SQL queries processed, 2 failed (4.76%); first error: " in result
    assert "waiting " not in result
