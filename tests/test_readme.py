"""Every Python example in README.md and docs/*.md runs as written, as on a fresh machine.

The convention: a ```python block runs unless the line just before its opening
fence is ``<!-- not-run: why -->`` (a DAG file, a call that needs an AWS
account, a fragment that uses names it does not define). Each runnable block
runs alone in a fresh interpreter, from the repository root, with no AWS
setting or credential in its environment and an empty home directory, so it
can only reach the simulator (``poller.testing``). It passes when it exits 0:
the block's own ``assert`` lines are its checks.
"""

from __future__ import annotations

import json
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
from _docs import NOT_RUN, PAGES, ROOT, Block, blocks, fresh_environment, run_example

# An example that imports the Airflow extra runs in tests/test_docs_airflow.py, which
# `make test` runs where Airflow is installed (.ci/pythons).
RUNNABLE = [
    block for page in PAGES for block in blocks(page) if block.runs and not block.needs_airflow
]


@pytest.mark.parametrize("block", RUNNABLE, ids=[block.name for block in RUNNABLE])
def test_every_unmarked_python_example_runs(block: Block, tmp_path: Path) -> None:
    """The example exits 0 in a clean interpreter that has no AWS account to reach."""
    run_example(block, tmp_path)


def test_each_front_door_and_docs_page_with_examples_has_one_that_runs() -> None:
    """The README and the Python API and testing pages each hold a runnable example."""
    pages = {block.page.relative_to(ROOT).as_posix() for block in RUNNABLE}
    assert {"README.md", "docs/python-api.md", "docs/testing.md"} <= pages


def test_every_not_run_marker_gives_a_reason_and_stands_before_a_python_block() -> None:
    """A marker is never stray: each one is followed by the python block it excuses."""
    excused = {
        (block.page, block.line - 1)
        for page in PAGES
        for block in blocks(page)
        if block.language == "python" and NOT_RUN.fullmatch(block.before.strip())
    }
    for page in PAGES:
        for number, line in enumerate(page.read_text(encoding="utf-8").splitlines(), 1):
            if "not-run" in line:
                assert (page, number) in excused, f"{page.name}:{number}: {line.strip()}"


def test_the_python_api_example_prints_what_its_comments_say(tmp_path: Path) -> None:
    """The first example needs an account, so it is not run; its `print` lines still must be true.

    Each ``print(...)  # shown`` line of it is run on a real result (the simulator's) and
    must print exactly what its comment shows.
    """
    page = ROOT / "docs" / "python-api.md"
    example = next(block for block in blocks(page) if block.language == "python")
    claims = [
        line.split("  # ", 1)
        for line in example.code.splitlines()
        if line.startswith("print(result.job_run.status")
    ]
    assert claims, "the example prints the status and the outcome"
    checks = "\n".join(f"print({code.strip()[6:-1]}, sep=' ')" for code, _ in claims)
    script = (
        "from poller import wait_for_job_run\n"
        "from poller.testing import RunScript, Simulator\n"
        "with Simulator() as sim:\n"
        "    sim.add_run('dzd_abc123', 'run-42', RunScript(statuses=['SUCCESS']))\n"
        "    result = wait_for_job_run('dzd_abc123', 'run-42', client=sim.client())\n"
        f"{checks}\n"
    )
    done = subprocess.run(
        [sys.executable, "-c", script], cwd=ROOT, env=fresh_environment(tmp_path),
        capture_output=True, text=True, timeout=120, check=False,
    )  # fmt: skip
    assert done.returncode == 0, done.stderr
    assert done.stdout.splitlines() == [shown.strip() for _, shown in claims]


def _first_wait_shell(n: int) -> str:
    """The README's first-own-wait shell ``n``: the block after ``<!-- first-wait: shell n -->``."""
    (block,) = [
        block
        for block in blocks(ROOT / "README.md")
        if block.before.strip() == f"<!-- first-wait: shell {n} -->"
    ]
    assert block.language == "sh"
    return block.code


def test_the_readme_s_first_own_wait_works_as_written_in_two_shells(tmp_path: Path) -> None:
    """Shell 1 serves the default simulator; shell 2's commands, as written, wait: exit 0.

    Both run from a directory holding the clone's `.venv` (as a newcomer's clone does),
    with no AWS setting at all: the simulator's `--env-file` is the only setup.
    """
    (tmp_path / ".venv").symlink_to(ROOT / ".venv")
    env = fresh_environment(tmp_path)
    server = subprocess.Popen(
        ["sh", "-c", f"exec {_first_wait_shell(1)}"],
        cwd=tmp_path, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
    )  # fmt: skip
    try:
        assert server.stdout is not None
        assert server.stdout.readline().startswith("http://127.0.0.1:")  # serving
        started = time.monotonic()
        done = subprocess.run(
            ["sh", "-c", _first_wait_shell(2)],
            cwd=tmp_path, env=env, capture_output=True, text=True, timeout=120, check=False,
        )  # fmt: skip
        took = time.monotonic() - started
    finally:
        server.send_signal(signal.SIGINT)  # Ctrl-C
        server.communicate(timeout=10)
    assert done.returncode == 0, done.stderr
    document = json.loads(done.stdout)
    assert (document["domain_id"], document["job_run_id"]) == ("dzd_abc123", "run-42")
    assert (document["status"], document["outcome"]) == ("SUCCESS", "succeeded")
    assert took < 60
    assert not (tmp_path / "simulator.env").exists()  # removed with the simulator
