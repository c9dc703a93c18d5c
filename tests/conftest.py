"""Fixtures only (shared values live in helpers.py): a simulator, a client, fake time, the wait."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import pytest
import structlog
from helpers import FakeTime, Wait, close_kept
from hypothesis import settings

from poller.testing import Simulator, reset

# A loaded CI machine must not turn a slow example into a failure: the
# properties are about values, not speed (speed lives in benchmarks/).
settings.register_profile("poller", deadline=None)
settings.load_profile("poller")


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
    """Each test starts with a new engine, budgets and history cache; logging is put back."""
    saved = structlog.get_config()
    reset()
    yield
    reset()
    structlog.configure(**saved)


@pytest.fixture
def fake_time() -> FakeTime:
    return FakeTime()


@pytest.fixture
def sim(fake_time: FakeTime) -> Iterator[Simulator]:
    """A simulator whose timelines and visibility follow the test's fake clock."""
    with Simulator(clock=fake_time.clock) as simulator:
        yield simulator


@pytest.fixture
def real_sim() -> Iterator[Simulator]:
    """A simulator on the real clock, for code that sleeps for real (the CLI, fan-out)."""
    with Simulator() as simulator:
        yield simulator


@pytest.fixture
def client(sim: Simulator) -> Iterator[Any]:
    """A real botocore client for `sim`, botocore retries off."""
    client = sim.client(read_timeout=2, connect_timeout=2)
    yield client
    client.close()


@pytest.fixture(autouse=True)
def close_kept_clients() -> Iterator[None]:
    """Every client a test gave `helpers.keep` is closed when the test ends."""
    yield
    close_kept()


@pytest.fixture(params=["blocking", "async"])
def wait(request: pytest.FixtureRequest, fake_time: FakeTime) -> Wait:
    """The wait through each front door in turn: a test using it runs once per door."""
    return Wait(request.param, fake_time)
