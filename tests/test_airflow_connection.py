"""The sensor and trigger through Airflow AWS connections, read by the real Amazon provider."""

from __future__ import annotations

# Sets AIRFLOW_HOME and the database before anything imports Airflow.
import _airflow_home  # noqa: F401

# isort: split

import asyncio
import json
import sys
import threading
import time
from collections.abc import Iterator
from typing import Any

import pytest
from airflow.sdk.exceptions import AirflowFailException, TaskDeferred
from helpers import FAST

import poller._runtime
from poller import PollPolicy, ServiceUnavailableError
from poller.airflow import DataZoneJobRunSensor, DataZoneJobRunTrigger
from poller.airflow import _client as clients
from poller.airflow._client import ClientSpec, aclient_for, client_for
from poller.testing import Fault, RunScript, Simulator

DOMAIN = "dzd_conn"
KEY_ID = "AKIDFROMCONNECTION"
CONTEXT: Any = {}
_counter = iter(range(1_000_000))


@pytest.fixture(scope="module")
def sim() -> Iterator[Simulator]:
    """One simulator for the module; no client cached from another module's tests."""
    clients.clear()
    poller._runtime.shared_client.cache_clear()
    with Simulator() as simulator:
        yield simulator
    clients.clear()


def connection(monkeypatch: pytest.MonkeyPatch, conn_id: str, **fields: Any) -> str:
    """Define ``conn_id`` as a deployment does: an AIRFLOW_CONN_* variable holding JSON."""
    monkeypatch.setenv(
        f"AIRFLOW_CONN_{conn_id.upper()}", json.dumps({"conn_type": "aws", **fields})
    )
    return conn_id


def sim_connection(monkeypatch: pytest.MonkeyPatch, sim: Simulator, **extra: Any) -> str:
    """A connection with its own keys, a region and the simulator as its endpoint."""
    extra = {"region_name": "eu-west-1", "endpoint_url": sim.endpoint_url, **extra}
    return connection(
        monkeypatch,
        "dz_sim",
        login=KEY_ID,
        password="conn-secret",
        extra={k: v for k, v in extra.items() if v is not None},
    )


def new_run(sim: Simulator, *statuses: str | Fault) -> str:
    run_id = f"run-{next(_counter)}"
    sim.add_run(DOMAIN, run_id, RunScript(statuses=list(statuses)))
    return run_id


def sensor(run_id: str, **kwargs: Any) -> DataZoneJobRunSensor:
    kwargs.setdefault("policy", FAST)
    kwargs.setdefault("poke_interval", 0.05)
    kwargs.setdefault("deferrable", False)
    return DataZoneJobRunSensor(
        task_id=f"w_{next(_counter)}", domain_id=DOMAIN, job_run_id=run_id, **kwargs
    )


def keys_seen(sim: Simulator, run_id: str) -> set[str | None]:
    """The access-key IDs of the requests the simulator got for this run."""
    return {r.access_key_id for r in sim.requests if r.run_id == run_id}


def run_trigger(trigger: DataZoneJobRunTrigger) -> dict[str, Any]:
    async def one() -> dict[str, Any]:
        [event] = [event async for event in trigger.run()]
        return event.payload

    return asyncio.run(one())


def test_an_airflow_conn_variable_brings_its_keys_and_endpoint_to_every_mode(
    sim: Simulator, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The connection's key ID and endpoint reach the simulator from a poke and from the trigger."""
    conn_id = sim_connection(monkeypatch, sim)
    poked = new_run(sim, "SUCCESS")
    assert sensor(poked, aws_conn_id=conn_id).poke(CONTEXT).is_done
    deferred = new_run(sim, "IN_PROGRESS", "IN_PROGRESS", "SUCCESS")
    s = sensor(deferred, aws_conn_id=conn_id, deferrable=True)
    with pytest.raises(TaskDeferred) as info:
        s.execute(CONTEXT)
    assert info.value.trigger.serialize()[1]["aws_conn_id"] == conn_id
    assert run_trigger(info.value.trigger)["status"] == "success"
    assert keys_seen(sim, poked) == keys_seen(sim, deferred) == {KEY_ID}
    assert sim.calls(deferred) == 3


def test_a_service_specific_endpoint_wins_over_the_connections_global_one(
    sim: Simulator, monkeypatch: pytest.MonkeyPatch
) -> None:
    """service_config.datazone.endpoint_url is DataZone's endpoint, as for any provider hook."""
    conn_id = sim_connection(
        monkeypatch,
        sim,
        endpoint_url="http://127.0.0.1:9",  # nothing listens there
        service_config={"datazone": {"endpoint_url": sim.endpoint_url}},
    )
    run_id = new_run(sim, "SUCCESS")
    assert sensor(run_id, aws_conn_id=conn_id).poke(CONTEXT).is_done
    assert keys_seen(sim, run_id) == {KEY_ID}


def test_a_connection_without_a_region_fails_the_task_naming_the_fix(
    sim: Simulator, monkeypatch: pytest.MonkeyPatch
) -> None:
    """No region anywhere fails without retry (AirflowFailException), saying where to set one."""
    monkeypatch.delenv("AWS_DEFAULT_REGION")
    conn_id = sim_connection(monkeypatch, sim, region_name=None)
    run_id = new_run(sim, "SUCCESS")
    with pytest.raises(AirflowFailException, match=r'no AWS region.*"region_name" in the extra'):
        sensor(run_id, aws_conn_id=conn_id).poke(CONTEXT)
    payload = run_trigger(DataZoneJobRunTrigger(DOMAIN, run_id, aws_conn_id=conn_id))
    assert payload["status"] == "error"
    # The Python API and the CLI call no region bad input too: one classification.
    assert payload["result"]["problem"]["type"] == "InvalidRequestError"
    assert "region_name" in payload["message"]
    assert sim.calls(run_id) == 0


def test_an_unknown_connection_fails_the_task_instead_of_using_other_credentials(
    sim: Simulator, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A misspelt aws_conn_id fails, naming it, rather than reading whatever the host has."""
    # The host's own chain would reach the simulator: the sensor must not use it.
    monkeypatch.setenv("AWS_ENDPOINT_URL_DATAZONE", sim.endpoint_url)
    run_id = new_run(sim, "SUCCESS")
    with pytest.raises(AirflowFailException, match="'dz_missing' does not exist"):
        sensor(run_id, aws_conn_id="dz_missing").poke(CONTEXT)
    payload = run_trigger(DataZoneJobRunTrigger(DOMAIN, run_id, aws_conn_id="dz_missing"))
    assert payload["result"]["problem"]["type"] == "InvalidRequestError"
    assert sim.calls(run_id) == 0


def test_a_missing_aws_default_uses_the_default_chain_as_the_provider_does(
    sim: Simulator, monkeypatch: pytest.MonkeyPatch
) -> None:
    """aws_conn_id="aws_default" with no such connection falls back to boto3's chain."""
    monkeypatch.setenv("AWS_ENDPOINT_URL_DATAZONE", sim.endpoint_url)
    monkeypatch.delenv("AIRFLOW_CONN_AWS_DEFAULT", raising=False)
    run_id = new_run(sim, "SUCCESS")
    assert sensor(run_id).poke(CONTEXT).is_done  # aws_conn_id defaults to aws_default
    assert keys_seen(sim, run_id) == {"testing"}  # the environment's key


def test_rejected_credentials_fail_the_task_naming_the_connection(
    sim: Simulator, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Keys DataZone rejects fail without retry; the message names the connection holding them."""
    conn_id = sim_connection(monkeypatch, sim)
    invalid = Fault.error("UnrecognizedClientException", 403, "The security token is invalid.")
    run_id = new_run(sim, invalid, "SUCCESS")
    with pytest.raises(AirflowFailException) as info:
        sensor(run_id, aws_conn_id=conn_id).poke(CONTEXT)
    assert "The security token is invalid." in str(info.value)
    assert f"the Airflow connection {conn_id!r}" in str(info.value)


def test_botocore_config_timeouts_are_kept_and_botocore_retries_stay_off(
    sim: Simulator, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A user's botocore_config sets the timeouts; its retries do not turn botocore's on."""
    conn_id = sim_connection(monkeypatch, sim)
    spec = ClientSpec(
        conn_id,
        botocore_config={
            "read_timeout": 1.5,
            "connect_timeout": 2.5,
            "retries": {"max_attempts": 9},
        },
    )
    config = client_for(spec).meta.config  # type: ignore[attr-defined]
    assert (config.read_timeout, config.connect_timeout) == (1.5, 2.5)
    assert config.retries["total_max_attempts"] == 1
    default = client_for(ClientSpec(conn_id)).meta.config  # type: ignore[attr-defined]
    assert (default.read_timeout, default.connect_timeout) == (10.0, 5.0)
    # And the retries really are off: three 500s in a row are three calls, one per poller try.
    run_id = new_run(sim, Fault.internal(), Fault.internal(), Fault.internal(), "SUCCESS")
    policy = PollPolicy(interval=0.01, retry_initial=0.01, retry_max=0.01, max_errors=3)
    s = sensor(run_id, aws_conn_id=conn_id, botocore_config=dict(spec.botocore_config or {}))
    s.policy, s.poke_interval = policy, 10
    with pytest.raises(ServiceUnavailableError):
        s.poke(CONTEXT)
    assert sim.calls(run_id) == 3


def test_verify_takes_a_ca_bundle_for_an_https_endpoint(monkeypatch: pytest.MonkeyPatch) -> None:
    """verify= reaches the client: the simulator's own CA makes its HTTPS endpoint trusted."""
    with Simulator(tls=True) as tls:
        tls.add_run(DOMAIN, "run-tls", RunScript(statuses=["SUCCESS"]))
        conn_id = sim_connection(monkeypatch, tls)
        assert sensor("run-tls", aws_conn_id=conn_id, verify=tls.ca_file).poke(CONTEXT).is_done
        assert {r.access_key_id for r in tls.requests} == {KEY_ID}


def test_concurrent_triggers_on_one_connection_share_one_client_built_off_the_loop(
    sim: Simulator, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Fifty triggers awaiting one connection cause one build, in a worker thread, then share it."""
    conn_id = sim_connection(monkeypatch, sim, region_name="ap-south-1")  # a key no test built
    builds: list[str] = []
    real_build = clients._build

    def counting_build(spec: ClientSpec) -> Any:
        builds.append(threading.current_thread().name)
        time.sleep(0.2)  # a slow connection look-up: every trigger arrives meanwhile
        return real_build(spec)

    monkeypatch.setattr(clients, "_build", counting_build)
    run_ids = [new_run(sim, "IN_PROGRESS", "SUCCESS") for _ in range(50)]

    async def all_of_them() -> tuple[list[dict[str, Any]], str]:
        loop_thread = threading.current_thread().name
        triggers = [
            DataZoneJobRunTrigger(
                DOMAIN, run_id, aws_conn_id=conn_id, deadline=time.time() + 60, policy=FAST_FIELDS
            )
            for run_id in run_ids
        ]
        payloads = await asyncio.gather(*(t.wait() for t in triggers))
        return payloads, loop_thread

    payloads, loop_thread = asyncio.run(all_of_them())
    assert [p["status"] for p in payloads] == ["success"] * 50
    assert len(builds) == 1
    assert builds[0] != loop_thread
    assert builds[0].startswith("poller-client")
    # The sensor's (blocking) path gets that very client.
    assert client_for(ClientSpec(conn_id)) is asyncio.run(aclient_for(ClientSpec(conn_id)))
    assert len(builds) == 1


def test_a_changed_connection_variable_gets_a_new_client(
    sim: Simulator, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The cache key covers the connection's variable: new keys are used, not the cached client."""
    conn_id = sim_connection(monkeypatch, sim)
    first = client_for(ClientSpec(conn_id))
    assert client_for(ClientSpec(conn_id)) is first
    connection(
        monkeypatch,
        conn_id,
        login="AKIDROTATED",
        password="s2",
        extra={"region_name": "eu-west-1", "endpoint_url": sim.endpoint_url},
    )
    run_id = new_run(sim, "SUCCESS")
    assert sensor(run_id, aws_conn_id=conn_id).poke(CONTEXT).is_done
    assert keys_seen(sim, run_id) == {"AKIDROTATED"}


def test_a_failed_build_is_not_kept_so_a_fixed_connection_is_used(
    sim: Simulator, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A build that failed (say, a connection not yet in the database) is tried again next time."""
    conn_id = sim_connection(monkeypatch, sim, region_name="sa-east-1")
    real_build, attempts = clients._build, []

    def flaky_build(spec: ClientSpec) -> Any:
        attempts.append(spec)
        if len(attempts) == 1:
            raise clients.InvalidRequestError("the Airflow connection does not exist yet")
        return real_build(spec)

    monkeypatch.setattr(clients, "_build", flaky_build)
    with pytest.raises(clients.InvalidRequestError):
        client_for(ClientSpec(conn_id))
    assert client_for(ClientSpec(conn_id)) is client_for(ClientSpec(conn_id))
    assert len(attempts) == 2


FAST_FIELDS = {
    "interval": 0.01,
    "max_interval": 0.02,
    "retry_initial": 0.01,
    "retry_max": 0.02,
    "jitter": 0,
}


CREDENTIAL_PROCESS = """
import datetime, json, pathlib, sys
counter = pathlib.Path(sys.argv[1])
n = int(counter.read_text() or 0) + 1 if counter.exists() else 1
counter.write_text(str(n))
expires = datetime.datetime.now(datetime.UTC) + datetime.timedelta(seconds=60)
print(json.dumps({"Version": 1, "AccessKeyId": f"AKIDREFRESHED{n}", "SecretAccessKey": "s",
                  "SessionToken": "t", "Expiration": expires.isoformat()}))
"""


def test_refreshable_credentials_go_on_refreshing_in_the_shared_client(
    sim: Simulator, monkeypatch: pytest.MonkeyPatch, tmp_path: Any
) -> None:
    """Credentials that expire (here a credential_process profile) are renewed, not frozen."""
    script = tmp_path / "creds.py"
    script.write_text(CREDENTIAL_PROCESS)
    config = tmp_path / "config"
    config.write_text(
        f"[profile expiring]\ncredential_process = {sys.executable} {script} {tmp_path / 'n'}\n"
    )
    monkeypatch.setenv("AWS_CONFIG_FILE", str(config))
    for name in ("AWS_ACCESS_KEY_ID", "AWS_SECRET_ACCESS_KEY"):
        monkeypatch.delenv(name)
    conn_id = connection(
        monkeypatch,
        "dz_profile",
        extra={
            "profile_name": "expiring",
            "region_name": "eu-west-1",
            "endpoint_url": sim.endpoint_url,
        },
    )
    run_id = new_run(sim, "IN_PROGRESS", "IN_PROGRESS", "SUCCESS")
    s = sensor(run_id, aws_conn_id=conn_id)
    assert [s.poke(CONTEXT).is_done for _ in range(3)] == [False, False, True]
    keys = [r.access_key_id for r in sim.requests if r.run_id == run_id]
    # Within botocore's refresh window every call renews them: three calls, three keys.
    assert len(set(keys)) == 3
    assert all(str(k).startswith("AKIDREFRESHED") for k in keys)
