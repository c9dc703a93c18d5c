"""The README's Python examples run as written against the simulator."""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any

from poller import PollPolicy, wait_for_job_run

README = Path(__file__).parent.parent / "README.md"


def python_blocks() -> list[str]:
    return re.findall(r"```python\n(.*?)```", README.read_text(), flags=re.DOTALL)


def test_the_real_example_runs() -> None:
    """The example that waits on a simulated run with a throttle succeeds as it claims."""
    block = next(b for b in python_blocks() if "cancel=threading.Event()" in b)
    exec(compile(block, "README.md", "exec"), {})


def test_the_simulator_example_runs() -> None:
    """The offline-testing example holds with a pipeline that waits through poller."""
    block = next(b for b in python_blocks() if "run_my_pipeline" in b)

    def run_my_pipeline(client: Any) -> None:
        fast = PollPolicy(interval=0.01, retry_initial=0.01)
        wait_for_job_run("dzd_abc123", "run-1", client=client, policy=fast)

    exec(compile(block, "README.md", "exec"), {"run_my_pipeline": run_my_pipeline})
