"""What several test modules share: constants, fake time, clients, the console script.

Tests import these from here (``from helpers import DOMAIN``), never from
``conftest`` (which holds only fixtures) or from another test module: pytest
imports each of those once under its own name, and a second import under
another name would make a second, different copy of every class in it.
"""

from __future__ import annotations

import asyncio
import bisect
import logging
import os
import pty
import re
import socket
import subprocess
import sys
import threading
from collections.abc import Iterator, MutableMapping, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, TypeVar

import structlog
from structlog.testing import capture_logs

from poller import PollPolicy, WaitResult, wait_for_job_run
from poller._waiter import wait_result
from poller.aio import async_wait_for_job_run, async_wait_result
from poller.testing import Lineage, Seams

# The client `Simulator.client()` builds, for an endpoint that has no Simulator
# object in this process: a child process's simulator, a dead port.
from poller.testing._client import make_client

__all__ = [
    "ANSI",
    "CLEAR",
    "DOMAIN",
    "FAST",
    "LINEAGE",
    "POLLER",
    "QUIET",
    "RESULT_KEYS",
    "ROOT",
    "SECRET",
    "TERMINAL",
    "FakeTime",
    "Wait",
    "capture_every_log",
    "child_env",
    "close_kept",
    "closed_port",
    "keep",
    "make_client",
    "run_on_pty",
]

ROOT = Path(__file__).resolve().parent.parent
DOMAIN = "dzd_abc123"
# Distinctive, so a test can prove it never reaches a log line.
SECRET = "sEcReT-never-logged-0123456789"
TERMINAL = ["SUCCESS", "PARTIALLY_SUCCEEDED", "FAILED", "ABORTED", "TIMED_OUT", "CANCELED"]
LINEAGE = Lineage(total_queries_processed=42, num_queries_failed=2, error_messages=("bad SQL",))
# Real-time waits that finish in a fraction of a second.
FAST = PollPolicy(interval=0.01, max_interval=0.02, retry_initial=0.01, retry_max=0.02)
# A logger that drops everything: for waits whose log is not what is tested.
QUIET = structlog.wrap_logger(
    structlog.PrintLogger(), wrapper_class=structlog.make_filtering_bound_logger(logging.CRITICAL)
)
#: The result document's keys, in docs/design.md's order.
RESULT_KEYS = [
    "domain_id", "job_run_id", "job_id", "job_type", "run_mode", "status", "outcome",
    "error_message", "created_by", "created_at", "start_time", "end_time", "duration_s",
    "lineage", "polls", "throttled", "errors_retried", "waited_s", "problem",
]  # fmt: skip
#: The console script of this environment.
POLLER = Path(sys.executable).parent / "poller"
#: What the live status line writes before each redraw, and a colour code.
CLEAR = "\r\x1b[2K"
ANSI = re.compile(r"\x1b\[[0-9;]*m")


@dataclass
class FakeTime:
    """A monotonic clock that moves only when the code under test sleeps.

    Pass ``clock`` (or the object itself) as the clock, ``sleep`` or
    ``async_sleep`` as the sleep; ``sleeps`` records every delay asked for.
    """

    now: float = 1000.0
    sleeps: list[float] = field(default_factory=list)

    def clock(self) -> float:
        return self.now

    __call__ = clock

    def sleep(self, seconds: float) -> None:
        self.sleeps.append(seconds)
        self.now += seconds

    async def async_sleep(self, seconds: float) -> None:
        """`sleep`, still yielding to the event loop as a real async sleep does."""
        self.sleep(seconds)
        await asyncio.sleep(0)


class Wait:
    """One front door of the wait on the test's fake time, blocking or async, called alike."""

    def __init__(self, kind: str, fake_time: FakeTime) -> None:
        self.kind = kind
        self.fake_time = fake_time

    def __call__(
        self, client: Any, run_id: str = "run-1", *, domain: str = DOMAIN, **kwargs: Any
    ) -> WaitResult:
        """`wait_for_job_run` or `async_wait_for_job_run`: raises on a failed wait."""
        return self._run(wait_for_job_run, async_wait_for_job_run, client, domain, run_id, kwargs)

    def result(
        self, client: Any, run_id: str = "run-1", *, domain: str = DOMAIN, **kwargs: Any
    ) -> WaitResult:
        """`wait_result` or `async_wait_result`: the result, whatever the outcome."""
        return self._run(wait_result, async_wait_result, client, domain, run_id, kwargs)

    def _run(
        self,
        blocking: Any,
        asynchronous: Any,
        client: Any,
        domain: str,
        run_id: str,
        kwargs: dict[str, Any],
    ) -> WaitResult:
        kwargs.setdefault("policy", PollPolicy(jitter=0))
        clock = self.fake_time.clock
        if self.kind == "blocking":
            kwargs.setdefault("seams", Seams(clock=clock, sleep=self.fake_time.sleep))
            return blocking(domain, run_id, client=client, **kwargs)
        kwargs.setdefault("seams", Seams(clock=clock, async_sleep=self.fake_time.async_sleep))
        return asyncio.run(asynchronous(domain, run_id, client=client, **kwargs))


@contextmanager
def capture_every_log() -> Iterator[list[MutableMapping[str, Any]]]:
    """structlog's ``capture_logs``, debug events included, whatever a host configured.

    Importing Airflow configures structlog to drop debug events for the whole process.
    """
    saved = structlog.get_config()["wrapper_class"]
    structlog.configure(wrapper_class=structlog.make_filtering_bound_logger(logging.NOTSET))
    try:
        with capture_logs() as events:
            yield events
    finally:
        structlog.configure(wrapper_class=saved)


_C = TypeVar("_C")
_kept: list[Any] = []


def keep(client: _C) -> _C:
    """``client``, closed when the test ends (conftest), so its pooled sockets do not outlive it."""
    _kept.append(client)
    return client


def close_kept() -> None:
    """Close every client `keep` was given."""
    while _kept:
        _kept.pop().close()


def closed_port() -> int:
    """A loopback port nothing listens on (bound, then released)."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def child_env(endpoint_url: str | None, **extra: str) -> dict[str, str]:
    """A `poller` child's environment: dummy credentials, no host AWS config, a fast cadence."""
    env = {
        k: v
        for k, v in os.environ.items()
        if not k.startswith(("AWS_", "POLLER_")) and k not in ("NO_COLOR", "COLUMNS")
    }
    env.update(
        AWS_ACCESS_KEY_ID="testing",
        AWS_SECRET_ACCESS_KEY="testing",
        AWS_DEFAULT_REGION="us-east-1",
        AWS_CONFIG_FILE=os.devnull,
        AWS_SHARED_CREDENTIALS_FILE=os.devnull,
        AWS_EC2_METADATA_DISABLED="true",
        POLLER_WAIT_INTERVAL="50ms",
        POLLER_WAIT_MAX_INTERVAL="100ms",
        POLLER_RETRY_INITIAL="10ms",
        POLLER_RETRY_MAX="50ms",
    )
    if endpoint_url:
        env["AWS_ENDPOINT_URL_DATAZONE"] = endpoint_url
    env.update(extra)
    return env


def run_on_pty(
    args: Sequence[str], env: dict[str, str], *, stdout_too: bool
) -> tuple[int, str, str]:
    """Run `poller` with stderr (and maybe stdout) on a pseudo-terminal; what the terminal got."""
    master, slave = pty.openpty()
    child = subprocess.Popen(
        [str(POLLER), *args],
        env=env,
        stdin=subprocess.DEVNULL,
        stdout=slave if stdout_too else subprocess.PIPE,
        stderr=slave,
    )
    os.close(slave)
    chunks: list[bytes] = []

    def drain() -> None:
        while True:
            try:
                data = os.read(master, 65536)
            except OSError:  # EIO: the child closed its end
                return
            if not data:
                return
            chunks.append(data)

    reader = threading.Thread(target=drain)
    reader.start()
    out = child.stdout.read().decode() if child.stdout else ""
    child.wait(timeout=60)
    reader.join(timeout=10)
    os.close(master)
    return child.returncode, b"".join(chunks).decode(), out


def busiest_second(times: list[float], since: float = -1.0) -> int:
    """The most requests in any window [t, t+1) starting at a request at or after ``since``
    (a microsecond of slack for the float sums of virtual-time stamps)."""
    times = sorted(times)
    return max(
        (bisect.bisect_left(times, t + 1 - 1e-6) - i for i, t in enumerate(times) if t >= since),
        default=0,
    )
