"""The CLI's many-run and latest-run flags, in-process against a real-clock simulator."""

from __future__ import annotations

import io
import json
import os
import shlex
import threading
import time
from pathlib import Path
from typing import Any

import pytest
from helpers import keep

import poller._limiter as limiter
from poller._config import load_settings
from poller.cli import main
from poller.cli._commands import read_run_ids
from poller.testing import RunScript, Simulator

DOMAIN = "dzd_cli_fan"


def documents(out: str) -> list[dict[str, Any]]:
    return [json.loads(line) for line in out.splitlines()]


def wait(sim: Simulator, *args: str) -> int:
    return main(["wait", "--domain-identifier", DOMAIN, "-q", "--interval", "0.05",
                 "--endpoint-url", sim.endpoint_url, *args])  # fmt: skip


def test_from_file_skips_blanks_and_duplicates_and_reports_bad_ids(
    real_sim: Simulator, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """Blank lines, comments and repeats are dropped; a bad ID gets an error line, exit 2."""
    real_sim.add_run(DOMAIN, "run-1", RunScript(statuses=["IN_PROGRESS", "SUCCESS"]))
    real_sim.add_run(DOMAIN, "run-2", RunScript(statuses=["FAILED"]))
    runs = tmp_path / "runs.txt"
    runs.write_text("run-1\n\n   \n# tonight's import\nrun-2\nrun-1\nbad id!\n  run-2  \n")
    code = wait(real_sim, "--from-file", str(runs))
    docs = {d["job_run_id"]: d for d in documents(capsys.readouterr().out)}
    assert set(docs) == {"run-1", "run-2", "bad id!"}
    assert docs["run-1"]["outcome"] == "succeeded"
    assert docs["run-2"]["outcome"] == "failed"
    assert docs["bad id!"]["outcome"] == "error"
    assert docs["bad id!"]["problem"]["type"] == "InvalidRequestError"
    assert code == 1  # the most severe: a failed run, before the bad input (2)
    assert real_sim.calls("run-1") == 2


def test_a_line_that_is_not_utf8_is_one_error_result_not_a_rejected_file(
    real_sim: Simulator, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """Undecodable bytes on one line: that line is an error document, the others are waited on."""
    real_sim.add_run(DOMAIN, "run-1", RunScript(statuses=["SUCCESS"]))
    real_sim.add_run(DOMAIN, "run-2", RunScript(statuses=["SUCCESS"]))
    runs = tmp_path / "runs.txt"
    runs.write_bytes(b"run-1\n\xff\xfe-run\nrun-2\n")
    code = wait(real_sim, "--from-file", str(runs))
    docs = {d["job_run_id"]: d for d in documents(capsys.readouterr().out)}
    assert set(docs) == {"run-1", "run-2", "\ufffd\ufffd-run"}
    assert docs["run-1"]["outcome"] == docs["run-2"]["outcome"] == "succeeded"
    assert docs["\ufffd\ufffd-run"]["problem"]["type"] == "InvalidRequestError"
    assert code == 2


@pytest.mark.parametrize("text", [b"", b"# only a comment\n\n", b"bad id!\n\xff\n"])
def test_a_file_with_no_valid_run_id_is_a_usage_error(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], text: bytes
) -> None:
    """Nothing to wait on in the file: exit 2, one line on stderr, nothing on stdout."""
    runs = tmp_path / "runs.txt"
    runs.write_bytes(text)
    code = main(["wait", "--domain-identifier", DOMAIN, "--from-file", str(runs)])
    out, err = capsys.readouterr()
    assert (code, out) == (2, "")
    assert "no valid run ID" in err
    assert len(err.strip().splitlines()) == 1


def test_a_file_whose_only_line_is_malformed_names_the_line_and_why(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """No valid ID: the message names the first malformed line and what is wrong with it."""
    runs = tmp_path / "runs.txt"
    runs.write_text("# tonight's runs\nrun 1\n")
    code = main(["wait", "--domain-identifier", DOMAIN, "--from-file", str(runs)])
    out, err = capsys.readouterr()
    assert (code, out) == (2, "")
    assert err == (
        f"poller: error: --from-file {runs}: no valid run ID in it (line 2: invalid job run "
        "identifier 'run 1': expected 1 to 36 letters, digits, '-' or '_')\n"
    )


def test_a_comment_after_a_run_id_is_skipped_like_a_comment_line(
    real_sim: Simulator, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """`run-1  # tonight's import`: the ID is waited on, the comment ignored."""
    real_sim.add_run(DOMAIN, "run-1", RunScript(statuses=["SUCCESS"]))
    runs = tmp_path / "runs.txt"
    runs.write_text("run-1  # tonight's import\n")
    assert wait(real_sim, "--from-file", str(runs)) == 0
    (doc,) = documents(capsys.readouterr().out)
    assert (doc["job_run_id"], doc["outcome"]) == ("run-1", "succeeded")


def test_from_file_streams_its_lines(monkeypatch: pytest.MonkeyPatch) -> None:
    """`--from-file -` yields each ID as its line arrives, before the input ends."""
    read_end, write_end = os.pipe()
    with open(read_end, encoding="utf-8") as stdin:
        monkeypatch.setattr("sys.stdin", stdin)
        ids = read_run_ids("-", DOMAIN)
        with open(write_end, "w") as feed:
            feed.write("run-1\n")
            feed.flush()
            first: list[str] = []
            reader = threading.Thread(target=lambda: first.append(next(ids)), daemon=True)
            reader.start()
            reader.join(timeout=10)
            assert first == ["run-1"]  # the input is still open: nothing waited for its end
            feed.write("run-2\n")
        assert list(ids) == ["run-2"]


def test_from_file_dash_reads_stdin(
    real_sim: Simulator, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    """`--from-file -` takes the run IDs from standard input, combined with --identifier."""
    for run_id in ("a", "b", "c"):
        real_sim.add_run(DOMAIN, run_id, RunScript(statuses=["SUCCESS"]))
    monkeypatch.setattr("sys.stdin", io.StringIO("a\nb\n"))
    assert wait(real_sim, "--identifier", "c", "--from-file", "-") == 0
    assert {d["job_run_id"] for d in documents(capsys.readouterr().out)} == {"a", "b", "c"}


def test_an_unreadable_file_is_a_usage_error(capsys: pytest.CaptureFixture[str]) -> None:
    """A missing --from-file is exit 2 with one line on stderr and nothing on stdout."""
    code = main(["wait", "--domain-identifier", DOMAIN, "--from-file", "/nonexistent/runs"])
    out, err = capsys.readouterr()
    assert (code, out) == (2, "")
    assert "cannot read" in err


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["--latest"], "need --job-identifier"),
        (["--job-identifier", "job-1"], "needs --latest or --since"),
        (["--job-identifier", "job-1", "--identifier", "r"], "cannot be combined"),
        (["--job-identifier", "job-1", "--since", "yesterday"], "not a timestamp"),
        (["--job-identifier", "bad job", "--latest"], "invalid job identifier"),
        ([], "give the runs"),
        (["--identifier", "r", "--max-rps", "0"], "--max-rps"),
    ],
)
def test_inconsistent_flags_are_usage_errors(
    args: list[str], message: str, capsys: pytest.CaptureFixture[str]
) -> None:
    """Each way of naming runs wrongly is exit 2, a one-line reason, nothing on stdout."""
    code = main(["wait", "--domain-identifier", DOMAIN, *args])
    out, err = capsys.readouterr()
    assert (code, out) == (2, "")
    assert message in err


def test_latest_waits_on_the_jobs_newest_run(
    real_sim: Simulator, capsys: pytest.CaptureFixture[str]
) -> None:
    """--job-identifier JOB --latest finds the newest run with ListJobRuns and waits on it."""
    now = time.time()
    for i in range(60):
        script = RunScript(statuses=["SUCCESS"])
        real_sim.add_run(DOMAIN, f"old-{i}", script, job_id="job-1", created_at=now - 3600 + i)
    real_sim.add_run(DOMAIN, "new", RunScript(statuses=["IN_PROGRESS", "FAILED"]), job_id="job-1")
    code = wait(real_sim, "--job-identifier", "job-1", "--latest")
    (doc,) = documents(capsys.readouterr().out)
    assert (code, doc["job_run_id"], doc["outcome"]) == (1, "new", "failed")


def test_since_waits_on_the_run_started_after_it(
    real_sim: Simulator, capsys: pytest.CaptureFixture[str]
) -> None:
    """--since picks the first run created at or after the timestamp, not the newest."""
    base = 1_800_000_000.0
    for i, run_id in enumerate(["before", "mine", "later"]):
        script = RunScript(statuses=["SUCCESS"])
        real_sim.add_run(DOMAIN, run_id, script, job_id="job-1", created_at=base + 60 * i)
    code = wait(real_sim, "--job-identifier", "job-1", "--since", "2027-01-15T08:01:00Z")
    (doc,) = documents(capsys.readouterr().out)
    assert (code, doc["job_run_id"]) == (0, "mine")


def test_no_run_found_is_reported_with_exit_5(
    real_sim: Simulator, capsys: pytest.CaptureFixture[str]
) -> None:
    """A job with no matching run yields an error document (no run ID) and exit 5."""
    code = wait(real_sim, "--job-identifier", "job-9", "--latest", "--not-found-grace", "0.2")
    (doc,) = documents(capsys.readouterr().out)
    assert code == 5
    assert doc["problem"]["type"] == "JobRunNotFoundError"
    assert doc["job_run_id"] == ""


def test_no_run_since_a_future_time_names_the_job_not_an_empty_run_id(
    real_sim: Simulator, capsys: pytest.CaptureFixture[str]
) -> None:
    """`--since <future>` finds nothing: the message names the job it looked in."""
    code = main(
        ["wait", "--domain-identifier", DOMAIN, "--endpoint-url", real_sim.endpoint_url,
         "--job-identifier", "job-9", "--since", "2999-01-01T00:00:00Z",
         "--not-found-grace", "0.2", "--log-format", "json"]
    )  # fmt: skip
    err = capsys.readouterr().err
    assert code == 5
    assert "poller: job job-9: JobRunNotFoundError: no run created since 2999-01-01" in err
    assert "poller: :" not in err


def test_max_rps_flag_sets_the_process_budget(
    real_sim: Simulator, capsys: pytest.CaptureFixture[str]
) -> None:
    """--max-rps becomes the budget every wait of the process shares."""
    real_sim.add_run(DOMAIN, "r", RunScript(statuses=["SUCCESS"]))
    assert wait(real_sim, "--identifier", "r", "--max-rps", "7") == 0
    assert limiter.budget_for(keep(real_sim.client())).max_rps == 7


def test_the_budget_flags_set_the_process_budget_for_a_latest_wait_too(
    real_sim: Simulator, capsys: pytest.CaptureFixture[str]
) -> None:
    """--max-rps and --others-throttled set the account's budget whatever the wait: a
    --latest wait left --max-rps unread (its budget stayed at 10/s)."""
    real_sim.add_run(DOMAIN, "new", RunScript(statuses=["SUCCESS"]), job_id="job-1")
    flags = ("--max-rps", "7", "--others-throttled", "0.2")
    assert wait(real_sim, "--job-identifier", "job-1", "--latest", *flags) == 0
    budget = limiter.budget_for(keep(real_sim.client()))
    assert (budget.max_rps, budget.others_throttled) == (7, 0.2)


def test_a_watch_books_on_the_budget_the_settings_set(
    real_sim: Simulator, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    """`poller watch` takes `[wait] max_rps` and `others_throttled` as `poller wait` does (it
    booked on poller's default budget whatever they said)."""
    monkeypatch.setenv("POLLER_WAIT_MAX_RPS", "7")
    monkeypatch.setenv("POLLER_WAIT_OTHERS_THROTTLED", "0.2")
    real_sim.add_scheduled_runs(DOMAIN, "job-1", [(0.0, 0.1, "SUCCESS")])
    code = main(["watch", "--domain-identifier", DOMAIN, "--job-identifier", "job-1",
                 "--count", "1", "--since", "0", "--interval", "0.2",
                 "--endpoint-url", real_sim.endpoint_url])  # fmt: skip
    assert code == 0, capsys.readouterr().err
    budget = limiter.budget_for(keep(real_sim.client()))
    assert (budget.max_rps, budget.others_throttled) == (7, 0.2)


@pytest.mark.parametrize("share", ["0.7", "-0.1", "lots"])
def test_an_others_throttled_share_out_of_range_is_bad_input(
    real_sim: Simulator, capsys: pytest.CaptureFixture[str], share: str
) -> None:
    """--others-throttled takes a share from 0 to 0.5: anything else is exit 2, no call."""
    assert wait(real_sim, "--identifier", "r", "--others-throttled", share) == 2
    assert "poller: error: --others-throttled: " in capsys.readouterr().err
    assert real_sim.requests == []


def test_max_rps_config_key_defaults_to_the_limiters_default() -> None:
    """wait.max_rps ships as DEFAULT_MAX_RPS and can be set from the environment."""
    assert load_settings(environ={}).max_rps == limiter.DEFAULT_MAX_RPS
    assert load_settings(environ={"POLLER_WAIT_MAX_RPS": "2.5"}).max_rps == 2.5
    assert load_settings(environ={}).others_throttled == 0.0
    assert load_settings(environ={"POLLER_WAIT_OTHERS_THROTTLED": "0.1"}).others_throttled == 0.1


@pytest.mark.parametrize("timeout", ["0", "0.5s"])
def test_latest_that_times_out_reports_the_run_it_found_and_a_resume_line_that_works(
    real_sim: Simulator, capsys: pytest.CaptureFixture[str], timeout: str
) -> None:
    """A --latest wait ending before its run: the run, its last status, and a working resume."""
    real_sim.add_run(DOMAIN, "going", RunScript(statuses=["IN_PROGRESS"]), job_id="job-r")
    code = main(
        ["wait", "--domain-identifier", DOMAIN, "--endpoint-url", real_sim.endpoint_url,
         "--log-format", "json", "--job-identifier", "job-r", "--latest", "--timeout", timeout]
    )  # fmt: skip
    out, err = capsys.readouterr()
    (doc,) = documents(out)
    assert (code, doc["job_run_id"], doc["status"], doc["outcome"]) == (
        4, "going", "IN_PROGRESS", "wait_timeout",
    )  # fmt: skip
    (resume,) = [line for line in err.splitlines() if line.startswith("To keep waiting: ")]
    args = shlex.split(resume.removeprefix("To keep waiting: "))
    assert args[0] == "poller"
    assert args[-2:] == ["--identifier", "going"]
    assert "--latest" not in args
    assert main(args[1:]) == 4  # the same run, waited on again, still going
    (again,) = documents(capsys.readouterr().out)
    assert (again["job_run_id"], again["status"]) == ("going", "IN_PROGRESS")


def test_latest_with_since_is_a_usage_error_with_no_call(
    real_sim: Simulator, capsys: pytest.CaptureFixture[str]
) -> None:
    """--latest and --since name different runs: exit 2, one line, no ListJobRuns."""
    code = wait(real_sim, "--job-identifier", "job-1", "--latest", "--since", "2026-01-01")
    out, err = capsys.readouterr()
    assert (code, out) == (2, "")
    assert "--latest and --since cannot be combined" in err
    assert len(err.strip().splitlines()) == 1
    assert real_sim.requests == []


def test_a_search_that_finds_no_run_reports_its_listings_and_time(
    real_sim: Simulator, capsys: pytest.CaptureFixture[str]
) -> None:
    """`--since <future>` lists until the not-found grace ends: the document counts it all."""
    started = time.monotonic()
    code = wait(
        real_sim, "--job-identifier", "job-9", "--since", "2999-01-01T00:00:00Z",
        "--not-found-grace", "1s",
    )  # fmt: skip
    took = time.monotonic() - started
    (doc,) = documents(capsys.readouterr().out)
    listings = sum(r.operation == "ListJobRuns" for r in real_sim.requests)
    assert code == 5
    assert doc["problem"]["type"] == "JobRunNotFoundError"
    assert listings >= 2
    assert doc["polls"] == listings
    assert doc["errors_retried"] == listings - 1
    assert 1.0 <= doc["waited_s"] <= took


def test_a_very_long_id_is_cut_short_in_the_error_line(
    real_sim: Simulator, capsys: pytest.CaptureFixture[str]
) -> None:
    """A 10,000-character ID: exit 2, and the line quotes its start and its length, not all."""
    code = wait(real_sim, "--identifier", "x" * 10_000)
    err = capsys.readouterr().err
    assert code == 2
    assert len(err) < 300
    assert "(10,000 characters)" in err


def test_every_error_line_has_one_prefix_whichever_command(
    capsys: pytest.CaptureFixture[str],
) -> None:
    """click's errors and poller's own start `poller: error:` in wait, status and watch alike."""
    for args in (
        ["wait", "--bogus"],
        ["status", "--domain-identifier", DOMAIN],
        ["watch", "--domain-identifier", DOMAIN, "--job-identifier", "j", "--count", "0"],
        ["wait", "--domain-identifier", DOMAIN, "--identifier", "r", "--timeout", "soon"],
    ):
        assert main(args) == 2
        (line,) = capsys.readouterr().err.splitlines()
        assert line.startswith("poller: error: "), line


def test_a_run_not_found_suggests_what_to_check(
    real_sim: Simulator, capsys: pytest.CaptureFixture[str]
) -> None:
    """Not found after the grace: the line says to check the run ID, the domain and the region."""
    code = main(
        ["wait", "--domain-identifier", DOMAIN, "--endpoint-url", real_sim.endpoint_url,
         "--identifier", "run-nope", "--not-found-grace", "0", "--log-format", "json"]
    )  # fmt: skip
    notes = [line for line in capsys.readouterr().err.splitlines() if line.startswith("poller:")]
    assert code == 5
    assert notes[-1].endswith("(check the run ID, the domain and the region)")


def test_a_timeout_in_exponent_form_is_a_number_as_max_rps_is(
    real_sim: Simulator, capsys: pytest.CaptureFixture[str]
) -> None:
    """`--timeout 1e3` is 1000 seconds, as `--max-rps 1e3` is 1000 calls a second."""
    real_sim.add_run(DOMAIN, "r", RunScript(statuses=["SUCCESS"]))
    assert wait(real_sim, "--identifier", "r", "--timeout", "1e3", "--max-rps", "1e3") == 0
