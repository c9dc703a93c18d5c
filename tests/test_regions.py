"""A region no AWS partition has is bad input, found before any call; a known one is not."""

from __future__ import annotations

import subprocess
import time

import pytest
from helpers import POLLER, child_env

from poller import ClientSettings, InvalidRequestError, ServiceUnavailableError, wait_for_job_run
from poller._datazone import build_client
from poller.testing import RunScript, Simulator


def test_a_typoed_region_is_refused_at_once_naming_it_and_the_likely_one() -> None:
    """`us-esat-1` with AWS's own endpoint: InvalidRequestError naming it, no retrying."""
    with pytest.raises(InvalidRequestError) as caught:
        wait_for_job_run("dzd_abc123", "run-1", client=ClientSettings(region_name="us-esat-1"))
    message = str(caught.value)
    assert "unknown AWS region 'us-esat-1'" in message
    assert "did you mean us-east-1" in message
    assert caught.value.result is not None
    assert caught.value.result.polls == 0


def test_the_cli_answers_a_typoed_region_within_seconds_with_exit_2() -> None:
    """`poller wait --region us-esat-1` with no endpoint override: exit 2, one line, no wait."""
    env = child_env(None)
    started = time.monotonic()
    done = subprocess.run(
        [str(POLLER), "wait", "--domain-identifier", "dzd_abc123", "--identifier", "run-1",
         "--region", "us-esat-1"],
        env=env, capture_output=True, text=True, timeout=60, check=False,
    )  # fmt: skip
    assert done.returncode == 2
    assert time.monotonic() - started < 10
    assert done.stdout == ""
    (line,) = done.stderr.splitlines()
    assert line.startswith("poller: error: unknown AWS region 'us-esat-1': no AWS partition has")
    assert "did you mean us-east-1" in line


def test_behind_an_endpoint_override_any_region_only_signs(real_sim: Simulator) -> None:
    """With the simulator as the endpoint, a region AWS has not got is no error: it only signs."""
    real_sim.add_run("dzd_abc123", "run-1", RunScript(statuses=["SUCCESS"]))
    client = build_client(region_name="local-test-1", endpoint_url=real_sim.endpoint_url)
    result = wait_for_job_run("dzd_abc123", "run-1", client=client)
    assert result.outcome == "succeeded"


def test_a_known_region_passes_the_check_and_its_faults_are_retried(real_sim: Simulator) -> None:
    """A region AWS has builds a client for AWS's endpoint; unreachable, a wait ends as a fault."""
    client = build_client(region_name="eu-west-1")  # no call is made
    assert client.meta.endpoint_url.startswith("https://datazone.eu-west-1.")
    dead = build_client(region_name="eu-west-1", endpoint_url="http://127.0.0.1:9")
    with pytest.raises(ServiceUnavailableError):
        wait_for_job_run("dzd_abc123", "run-1", client=dead, timeout=0.5)
