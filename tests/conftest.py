"""Shared fixtures: a simulator per test, a real boto3 client for it, and fake time."""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass, field
from typing import Any

import boto3
import pytest
import structlog
from botocore.config import Config
from hypothesis import settings

import poller._limiter as limiter
from poller._history import shared_cache
from poller.testing import Simulator

# A loaded CI machine must not turn a slow example into a failure: the
# properties are about values, not speed (speed lives in benchmarks/).
settings.register_profile("poller", deadline=None)
settings.load_profile("poller")

DOMAIN = "dzd_abc123"
# Distinctive, so a test can prove it never reaches a log line.
SECRET = "sEcReT-never-logged-0123456789"


@dataclass
class FakeTime:
    """A monotonic clock that moves only when the code under test sleeps."""

    now: float = 1000.0
    sleeps: list[float] = field(default_factory=list)

    def clock(self) -> float:
        return self.now

    def sleep(self, seconds: float) -> None:
        self.sleeps.append(seconds)
        self.now += seconds


@pytest.fixture(autouse=True)
def dummy_aws_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    """Dummy credentials and a region, so no test can reach a real account or the host's."""
    monkeypatch.setenv("AWS_ACCESS_KEY_ID", "testing")
    monkeypatch.setenv("AWS_SECRET_ACCESS_KEY", "testing")
    monkeypatch.setenv("AWS_DEFAULT_REGION", "us-east-1")
    monkeypatch.setenv("AWS_EC2_METADATA_DISABLED", "true")
    for name in (
        "AWS_PROFILE",
        "AWS_SESSION_TOKEN",
        "AWS_ENDPOINT_URL",
        "AWS_ENDPOINT_URL_DATAZONE",
    ):
        monkeypatch.delenv(name, raising=False)


@pytest.fixture(autouse=True)
def fresh_budget_and_logging() -> Iterator[None]:
    """Each test starts with a new process-wide budget and history cache; logging is put back."""
    saved = structlog.get_config()
    limiter._shared = None
    shared_cache().clear()
    yield
    limiter._shared = None
    shared_cache().clear()
    structlog.configure(**saved)


@pytest.fixture
def fake_time() -> FakeTime:
    return FakeTime()


@pytest.fixture
def sim(fake_time: FakeTime) -> Iterator[Simulator]:
    """A simulator whose timelines and visibility follow the test's fake clock."""
    with Simulator(clock=fake_time.clock) as simulator:
        yield simulator


def make_client(endpoint_url: str, **config: Any) -> Any:
    """A real boto3 DataZone client for the simulator, botocore retries off."""
    return boto3.client(
        "datazone",
        region_name="us-east-1",
        endpoint_url=endpoint_url,
        aws_access_key_id="AKIDTESTING",
        aws_secret_access_key=SECRET,
        config=Config(retries={"total_max_attempts": 1}, **config),
    )


@pytest.fixture
def client(sim: Simulator) -> Any:
    return make_client(sim.endpoint_url, read_timeout=2, connect_timeout=2)
