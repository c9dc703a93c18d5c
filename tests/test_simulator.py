"""The DataZone simulator, driven by real boto3 clients over real HTTP."""

from __future__ import annotations

import datetime as dt
import json
import os
import re
import select
import signal
import subprocess
import sys
import threading
import urllib.error
import urllib.request
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import boto3
import botocore.config
import botocore.exceptions
import pytest
from botocore.exceptions import ClientError
from helpers import DOMAIN, POLLER, SECRET, FakeTime, keep, make_client

from poller.testing import Fault, Lineage, RequestRecord, RunScript, Simulator

WALL0 = 1_800_000_000.0  # a fixed epoch, so reported timestamps are exact


@pytest.fixture
def sim() -> Iterator[Simulator]:
    """A simulator on the real clock (conftest's `client` is aimed at it)."""
    with Simulator() as s:
        yield s


def get(client: Any, run_id: str = "run-1", domain: str = DOMAIN) -> dict[str, Any]:
    out: dict[str, Any] = client.get_job_run(domainIdentifier=domain, identifier=run_id)
    return out


def error_of(excinfo: pytest.ExceptionInfo[ClientError]) -> tuple[str, int]:
    response: Any = excinfo.value.response
    return response["Error"]["Code"], response["ResponseMetadata"]["HTTPStatusCode"]


# -- statuses and timelines ----------------------------------------------------


def test_statuses_are_answered_in_order_then_the_last_repeats(sim: Simulator, client: Any) -> None:
    """Each call consumes the next scripted status; past the end the last one sticks."""
    sim.add_run(DOMAIN, "run-1", RunScript(statuses=["SCHEDULED", "IN_PROGRESS", "SUCCESS"]))
    seen = [get(client)["status"] for _ in range(5)]
    assert seen == ["SCHEDULED", "IN_PROGRESS", "SUCCESS", "SUCCESS", "SUCCESS"]
    assert sim.calls("run-1") == 5


def test_response_carries_the_run_identity() -> None:
    """GetJobRun returns the ids, job type, run mode and creator given to add_run."""
    with Simulator(wall=lambda: WALL0) as sim:
        sim.add_run(
            DOMAIN,
            "run-1",
            RunScript(statuses=["SCHEDULED"]),
            job_id="job-9",
            run_mode="SCHEDULED",
            created_by="alice",
        )
        out = get(keep(sim.client()))
    assert {k: out[k] for k in ("domainId", "id", "jobId", "jobType", "runMode", "createdBy")} == {
        "domainId": DOMAIN,
        "id": "run-1",
        "jobId": "job-9",
        "jobType": "LINEAGE",
        "runMode": "SCHEDULED",
        "createdBy": "alice",
    }
    assert out["createdAt"].timestamp() == WALL0
    assert "startTime" not in out
    assert "endTime" not in out


def test_timeline_follows_the_injected_clock() -> None:
    """A timeline script answers the status whose time has come on the simulator's clock."""
    clock = FakeTime(100.0)
    with Simulator(clock=clock) as sim:
        sim.add_run(
            DOMAIN,
            "run-1",
            RunScript(timeline=[(0, "SCHEDULED"), (5, "IN_PROGRESS"), (60, "SUCCESS")]),
        )
        client = keep(sim.client())
        seen = []
        for t in (0, 4.9, 5, 59, 60, 1000):
            clock.now = 100 + t
            seen.append(get(client)["status"])
    assert seen == ["SCHEDULED", "SCHEDULED", "IN_PROGRESS", "IN_PROGRESS", "SUCCESS", "SUCCESS"]


def test_timeline_timestamps_are_created_at_plus_offsets() -> None:
    """With a timeline, startTime and endTime are exact: createdAt plus the entry's offset."""
    clock = FakeTime(100.0)
    with Simulator(clock=clock, wall=lambda: WALL0 + 999) as sim:
        sim.add_run(
            DOMAIN,
            "run-1",
            RunScript(timeline=[(0, "SCHEDULED"), (5, "IN_PROGRESS"), (60, "FAILED")]),
            created_at=WALL0,
        )
        client = keep(sim.client())
        clock.now += 61
        out = get(client)
    assert out["createdAt"].timestamp() == WALL0
    assert out["startTime"].timestamp() == WALL0 + 5
    assert out["endTime"].timestamp() == WALL0 + 60


def test_statuses_timestamps_are_when_first_observed() -> None:
    """With statuses, startTime/endTime are the wall times of the first such answers."""
    wall = FakeTime(WALL0)
    with Simulator(wall=wall) as sim:
        sim.add_run(DOMAIN, "run-1", RunScript(statuses=["SCHEDULED", "IN_PROGRESS", "SUCCESS"]))
        client = keep(sim.client())
        get(client)
        wall.now = WALL0 + 10
        get(client)
        wall.now = WALL0 + 30
        get(client)
        wall.now = WALL0 + 50
        out = get(client)
    assert out["startTime"].timestamp() == WALL0 + 10
    assert out["endTime"].timestamp() == WALL0 + 30


def test_unknown_status_passes_through(sim: Simulator, client: Any) -> None:
    """The simulator never validates statuses, so clients meet ones their model lacks."""
    sim.add_run(DOMAIN, "run-1", RunScript(statuses=["WEIRD_NEW_STATUS"]))
    assert get(client)["status"] == "WEIRD_NEW_STATUS"


def test_error_message_only_for_unsuccessful_statuses(sim: Simulator, client: Any) -> None:
    """error.message appears with FAILED and friends, never with SUCCESS or while running."""
    sim.add_run(
        DOMAIN, "run-1", RunScript(statuses=["IN_PROGRESS", "FAILED"], error_message="boom")
    )
    sim.add_run(DOMAIN, "run-2", RunScript(statuses=["SUCCESS"], error_message="boom"))
    assert "error" not in get(client)
    assert get(client)["error"] == {"message": "boom"}
    assert "error" not in get(client, "run-2")


def test_add_run_again_replaces_the_script(sim: Simulator, client: Any) -> None:
    """Re-adding the same ids starts the new script from its first item."""
    sim.add_run(DOMAIN, "run-1", RunScript(statuses=["SCHEDULED", "IN_PROGRESS"]))
    get(client)
    sim.add_run(DOMAIN, "run-1", RunScript(statuses=["CANCELED"]))
    assert get(client)["status"] == "CANCELED"


# -- faults ----------------------------------------------------------------------


@pytest.mark.parametrize(
    ("fault", "code", "http_status"),
    [
        (Fault.throttle(), "ThrottlingException", 429),
        (Fault.internal(), "InternalServerException", 500),
        (Fault.error("AccessDeniedException", 403), "AccessDeniedException", 403),
        (Fault.error("UnauthorizedException", 401), "UnauthorizedException", 401),
        (Fault.error("ValidationException", 400), "ValidationException", 400),
        (Fault.error("ResourceNotFoundException", 404), "ResourceNotFoundException", 404),
        (Fault.error("ExpiredTokenException", 403), "ExpiredTokenException", 403),
    ],
)
def test_aws_faults_surface_as_client_errors(
    sim: Simulator, client: Any, fault: Fault, code: str, http_status: int
) -> None:
    """An AWS-style fault reaches botocore as ClientError with the x-amzn-ErrorType code."""
    sim.add_run(DOMAIN, "run-1", RunScript(statuses=[fault, "SUCCESS"]))
    with pytest.raises(ClientError) as excinfo:
        get(client)
    assert error_of(excinfo) == (code, http_status)
    assert excinfo.value.response["Error"]["Message"]
    assert get(client)["status"] == "SUCCESS"


def test_faults_do_not_change_the_status(sim: Simulator, client: Any) -> None:
    """A fault consumes its own script item only; the status script resumes after it."""
    sim.add_run(DOMAIN, "run-1", RunScript(statuses=["IN_PROGRESS", Fault.throttle(), "SUCCESS"]))
    assert get(client)["status"] == "IN_PROGRESS"
    with pytest.raises(ClientError):
        get(client)
    assert get(client)["status"] == "SUCCESS"


def test_http_fault_is_a_raw_error_page(sim: Simulator, client: Any) -> None:
    """A proxy's HTML 502 has no AWS error type: botocore reports the HTTP status as code."""
    sim.add_run(DOMAIN, "run-1", RunScript(statuses=[Fault.http(502), "SUCCESS"]))
    with pytest.raises(ClientError) as excinfo:
        get(client)
    assert error_of(excinfo) == ("502", 502)
    assert "x-amzn-errortype" not in excinfo.value.response["ResponseMetadata"]["HTTPHeaders"]


def test_reset_closes_the_connection(sim: Simulator, client: Any) -> None:
    """A reset fault drops the connection unanswered; botocore raises ConnectionClosedError."""
    sim.add_run(DOMAIN, "run-1", RunScript(statuses=["IN_PROGRESS", Fault.reset(), "SUCCESS"]))
    get(client)  # the pooled connection is open, as in a real polling loop
    with pytest.raises(botocore.exceptions.ConnectionClosedError):
        get(client)
    assert get(client)["status"] == "SUCCESS"
    assert sim.requests[1].status_code is None
    assert sim.requests[1].fault == "reset"


def test_malformed_body_parses_to_no_status(sim: Simulator, client: Any) -> None:
    """A 200 whose body is not JSON gives a response dict without a status."""
    sim.add_run(DOMAIN, "run-1", RunScript(statuses=[Fault.malformed(), "SUCCESS"]))
    out = get(client)
    assert "status" not in out
    assert out["ResponseMetadata"]["HTTPStatusCode"] == 200


def test_delay_trips_the_client_read_timeout(sim: Simulator) -> None:
    """A delay longer than the client's read timeout raises ReadTimeoutError."""
    client = keep(sim.client(read_timeout=0.2))
    sim.add_run(DOMAIN, "run-1", RunScript(statuses=[Fault.delay(1.0), "SUCCESS"]))
    with pytest.raises(botocore.exceptions.ReadTimeoutError):
        get(client)
    assert get(client)["status"] == "SUCCESS"


def test_delay_answers_the_current_status_without_advancing(sim: Simulator, client: Any) -> None:
    """A short delay still answers (the current status) and leaves the next status in place."""
    sim.add_run(DOMAIN, "run-1", RunScript(statuses=["IN_PROGRESS", Fault.delay(0.01), "SUCCESS"]))
    assert [get(client)["status"] for _ in range(3)] == ["IN_PROGRESS", "IN_PROGRESS", "SUCCESS"]


def test_stop_does_not_wait_for_a_sleeping_answer() -> None:
    """Stopping interrupts latency sleeps, so a suite never waits on a slow scripted run."""
    sim = Simulator().start()
    try:
        client = keep(sim.client(read_timeout=0.1))
        sim.add_run(DOMAIN, "run-1", RunScript(statuses=["SUCCESS"], latency=30))
        with pytest.raises(botocore.exceptions.ReadTimeoutError):
            get(client)
        stopper = threading.Thread(target=sim.stop, daemon=True)
        stopper.start()
        stopper.join(timeout=5)  # a hang guard, not a timing claim
        assert not stopper.is_alive()
    finally:
        sim.stop()


# -- details ---------------------------------------------------------------------


def test_lineage_parses_to_the_botocore_shape() -> None:
    """Lineage stats appear once terminal, with query times as datetimes."""
    wall = [WALL0]
    with Simulator(wall=lambda: wall[0]) as sim:
        lineage = Lineage(total_queries_processed=10, num_queries_failed=1, error_messages=["e1"])
        sim.add_run(
            DOMAIN, "run-1", RunScript(statuses=["IN_PROGRESS", "SUCCESS"], lineage=lineage)
        )
        client = keep(sim.client())
        running = get(client)
        wall[0] = WALL0 + 100  # it ends 100 s after it was created
        done = get(client)
    assert "details" not in running
    sql = done["details"]["lineageRunDetails"]["sqlQueryRunDetails"]
    assert sql["totalQueriesProcessed"] == 10
    assert sql["numQueriesFailed"] == 1
    assert sql["errorMessages"] == ["e1"]
    assert isinstance(sql["queryStartTime"], dt.datetime)
    assert sql["queryStartTime"].timestamp() == WALL0 + 5
    assert sql["queryEndTime"].timestamp() == WALL0 + 55


def test_lineage_while_running_and_omitted_members(sim: Simulator, client: Any) -> None:
    """while_running shows lineage during IN_PROGRESS; None members are left out."""
    lineage = Lineage(num_queries_failed=None, query_end_offset=None, while_running=True)
    sim.add_run(DOMAIN, "run-1", RunScript(statuses=["SCHEDULED", "IN_PROGRESS"], lineage=lineage))
    assert "details" not in get(client)
    sql = get(client)["details"]["lineageRunDetails"]["sqlQueryRunDetails"]
    assert set(sql) == {"queryStartTime", "totalQueriesProcessed", "errorMessages"}


def test_unknown_details_member_is_sdk_unknown(sim: Simulator, client: Any) -> None:
    """A details member botocore does not know surfaces as SDK_UNKNOWN_MEMBER."""
    sim.add_run(DOMAIN, "run-1", RunScript(statuses=["SUCCESS"], unknown_details=True))
    assert get(client)["details"] == {"SDK_UNKNOWN_MEMBER": {"name": "someFutureRunDetails"}}


# -- visibility, validation, throttling ------------------------------------------


def test_visible_after_answers_not_found_first() -> None:
    """A just-added run is ResourceNotFound until visible_after has passed on the clock."""
    clock = FakeTime(100.0)
    with Simulator(clock=clock) as sim:
        sim.add_run(DOMAIN, "run-1", RunScript(statuses=["SCHEDULED"]), visible_after=2.0)
        client = keep(sim.client())
        with pytest.raises(ClientError) as excinfo:
            get(client)
        assert error_of(excinfo) == ("ResourceNotFoundException", 404)
        clock.now += 2.0
        assert get(client)["status"] == "SCHEDULED"


def test_unknown_run_is_not_found(client: Any) -> None:
    """A run never added is 404 ResourceNotFoundException."""
    with pytest.raises(ClientError) as excinfo:
        get(client, "nope")
    assert error_of(excinfo) == ("ResourceNotFoundException", 404)


@pytest.mark.parametrize(
    ("domain", "run_id", "member"),
    [
        ("abc123", "run-1", "domainIdentifier"),
        (DOMAIN, "run.1", "identifier"),
        (DOMAIN, "x" * 37, "identifier"),
    ],
)
def test_malformed_ids_are_validation_errors(
    client: Any, domain: str, run_id: str, member: str
) -> None:
    """IDs that do not match DataZone's patterns get 400 ValidationException naming the member."""
    with pytest.raises(ClientError) as excinfo:
        get(client, run_id, domain)
    assert error_of(excinfo) == ("ValidationException", 400)
    assert member in excinfo.value.response["Error"]["Message"]


def pattern_of(run_script: RunScript, seed: int, n: int = 30) -> list[bool]:
    with Simulator(seed=seed) as sim:
        sim.add_run(DOMAIN, "run-1", run_script)
        client = keep(sim.client())
        throttled = []
        for _ in range(n):
            try:
                get(client)
                throttled.append(False)
            except ClientError as e:
                throttled.append(e.response["Error"]["Code"] == "ThrottlingException")
        return throttled


def test_throttle_rate_is_deterministic_for_a_seed() -> None:
    """The same seed throttles the same calls; a throttle consumes no script item."""
    script = RunScript(statuses=["SCHEDULED", "SUCCESS"], throttle_rate=0.5)
    first = pattern_of(script, seed=7)
    assert first == pattern_of(script, seed=7)
    assert 0 < sum(first) < len(first)
    assert first != pattern_of(script, seed=8)


def test_max_rps_throttles_requests_over_the_limit() -> None:
    """The server-wide token bucket allows max_rps per second of the clock and 429s the rest."""
    clock = FakeTime(100.0)
    with Simulator(clock=clock, max_rps=2) as sim:
        sim.add_run(DOMAIN, "run-1", RunScript(statuses=["IN_PROGRESS"]))
        client = keep(sim.client())

        def outcome() -> str:
            try:
                return str(get(client)["status"])
            except ClientError as e:
                return str(e.response["Error"]["Code"])

        burst = [outcome() for _ in range(3)]
        clock.now += 0.5  # refills one token
        later = [outcome() for _ in range(2)]
    assert burst == ["IN_PROGRESS", "IN_PROGRESS", "ThrottlingException"]
    assert later == ["IN_PROGRESS", "ThrottlingException"]
    assert [r.fault for r in sim.requests].count("max_rps") == 2


# -- ListJobRuns -----------------------------------------------------------------


def add_five_runs(sim: Simulator) -> None:
    for i in range(5):
        status = "SUCCESS" if i % 2 == 0 else "FAILED"
        sim.add_run(DOMAIN, f"run-{i}", RunScript(statuses=[status]), created_at=WALL0 + i)
    sim.add_run(DOMAIN, "other", RunScript(statuses=["SUCCESS"]), job_id="job-2")


def list_all(client: Any, **kwargs: Any) -> tuple[list[str], int]:
    paginator = client.get_paginator("list_job_runs")
    pages = list(paginator.paginate(domainIdentifier=DOMAIN, jobIdentifier="job-1", **kwargs))
    return [item["runId"] for page in pages for item in page["items"]], len(pages)


def test_list_job_runs_pages_newest_first_by_default(sim: Simulator, client: Any) -> None:
    """Five runs at maxResults=2 come back on three pages, newest first, only job-1's."""
    add_five_runs(sim)
    ids, pages = list_all(client, PaginationConfig={"PageSize": 2})
    assert ids == ["run-4", "run-3", "run-2", "run-1", "run-0"]
    assert pages == 3


def test_list_job_runs_ascending_with_status_filter(sim: Simulator, client: Any) -> None:
    """sortOrder=ASCENDING and a status filter combine across pages."""
    add_five_runs(sim)
    ids, _ = list_all(
        client, sortOrder="ASCENDING", status="SUCCESS", PaginationConfig={"PageSize": 2}
    )
    assert ids == ["run-0", "run-2", "run-4"]


def test_list_job_runs_summary_and_current_status(sim: Simulator, client: Any) -> None:
    """A listing is a look: it shows and takes a script's next status, as GetJobRun does."""
    sim.add_run(
        DOMAIN,
        "run-1",
        RunScript(statuses=["SCHEDULED", "IN_PROGRESS", Fault.throttle(), "SUCCESS"]),
    )
    first = client.list_job_runs(domainIdentifier=DOMAIN, jobIdentifier="job-1")["items"]
    assert get(client)["status"] == "IN_PROGRESS"
    # A fault ahead is left for the GetJobRun it scripts; the listing shows the last status.
    second = client.list_job_runs(domainIdentifier=DOMAIN, jobIdentifier="job-1")["items"]
    assert first[0]["status"] == "SCHEDULED"
    assert second[0]["status"] == "IN_PROGRESS"
    assert set(second[0]) >= {"domainId", "jobId", "jobType", "runId", "runMode", "createdAt"}
    with pytest.raises(ClientError, match="Throttling"):
        get(client)
    third = client.list_job_runs(domainIdentifier=DOMAIN, jobIdentifier="job-1")["items"]
    assert third[0]["status"] == "SUCCESS"
    assert get(client)["status"] == "SUCCESS"  # past the end, the last status sticks


def test_list_job_runs_unknown_job_and_bad_token(sim: Simulator, client: Any) -> None:
    """An unknown job lists nothing; a forged nextToken is a ValidationException."""
    out = client.list_job_runs(domainIdentifier=DOMAIN, jobIdentifier="no-such-job")
    assert out["items"] == []
    assert "nextToken" not in out
    with pytest.raises(ClientError) as excinfo:
        client.list_job_runs(domainIdentifier=DOMAIN, jobIdentifier="job-1", nextToken="garbage")
    assert error_of(excinfo) == ("ValidationException", 400)


# -- protocol and bookkeeping ----------------------------------------------------


def test_unsigned_request_is_rejected(sim: Simulator) -> None:
    """A request without SigV4 gets 403 MissingAuthenticationTokenException, like AWS."""
    sim.add_run(DOMAIN, "run-1", RunScript(statuses=["SUCCESS"]))
    url = f"{sim.endpoint_url}/v2/domains/{DOMAIN}/jobRuns/run-1"
    with pytest.raises(urllib.error.HTTPError) as excinfo:
        urllib.request.urlopen(url, timeout=5)
    assert excinfo.value.code == 403
    assert excinfo.value.headers["x-amzn-ErrorType"] == "MissingAuthenticationTokenException"
    with excinfo.value as response:  # an HTTPError holds the connection open
        assert json.loads(response.read())["message"] == "Missing Authentication Token"


def test_request_signed_for_another_service_is_rejected(sim: Simulator) -> None:
    """A SigV4 header whose credential scope is not datazone is refused."""
    sim.add_run(DOMAIN, "run-1", RunScript(statuses=["SUCCESS"]))
    auth = (
        "AWS4-HMAC-SHA256 Credential=testing/20260101/us-east-1/s3/aws4_request, "
        "SignedHeaders=host, Signature=abc"
    )
    req = urllib.request.Request(
        f"{sim.endpoint_url}/v2/domains/{DOMAIN}/jobRuns/run-1", headers={"Authorization": auth}
    )
    with pytest.raises(urllib.error.HTTPError) as excinfo:
        urllib.request.urlopen(req, timeout=5)
    assert excinfo.value.code == 403
    assert excinfo.value.headers["x-amzn-ErrorType"] == "InvalidSignatureException"
    excinfo.value.close()


def test_requests_are_recorded_in_order(sim: Simulator, client: Any) -> None:
    """sim.requests keeps every request with its outcome; calls() counts a run's GetJobRuns."""
    sim.add_run(DOMAIN, "run-1", RunScript(statuses=["IN_PROGRESS", Fault.internal(), "SUCCESS"]))
    get(client)
    with pytest.raises(ClientError):
        get(client)
    client.list_job_runs(domainIdentifier=DOMAIN, jobIdentifier="job-1")
    records = sim.requests
    assert all(isinstance(r, RequestRecord) for r in records)
    assert [(r.operation, r.status_code, r.error_type, r.answered_status) for r in records] == [
        ("GetJobRun", 200, None, "IN_PROGRESS"),
        ("GetJobRun", 500, "InternalServerException", None),
        ("ListJobRuns", 200, None, None),
    ]
    assert records[0].run_id == "run-1"
    assert records[2].job_id == "job-1"
    assert records[0].t <= records[1].t <= records[2].t
    assert sim.calls("run-1") == 2
    assert sim.calls("run-1", domain_id="dzd_other") == 0


def test_end_time_for_statuses_and_timeline() -> None:
    """end_time is the clock time the run first became terminal, for both script kinds."""
    clock = FakeTime(100.0)
    with Simulator(clock=clock) as sim:
        sim.add_run(DOMAIN, "run-s", RunScript(statuses=["IN_PROGRESS", "SUCCESS"]))
        sim.add_run(DOMAIN, "run-t", RunScript(timeline=[(0, "IN_PROGRESS"), (30, "FAILED")]))
        client = keep(sim.client())
        clock.now = 110
        get(client, "run-s")
        assert sim.end_time("run-s") is None
        clock.now = 120
        get(client, "run-s")
        clock.now = 150
        get(client, "run-s")
        assert sim.end_time("run-s") == 120
        assert sim.end_time("run-t") == 130  # added at 100, terminal at offset 30, never polled


def test_concurrent_clients_share_one_keep_alive_server(sim: Simulator) -> None:
    """Many threads polling through pooled connections all get answers and are all counted."""
    sim.add_run(DOMAIN, "run-1", RunScript(statuses=["IN_PROGRESS"]))
    client = keep(sim.client(max_pool_connections=4))
    errors: list[BaseException] = []

    def poll() -> None:
        try:
            for _ in range(15):
                assert get(client)["status"] == "IN_PROGRESS"
        except BaseException as e:  # reported by the main thread
            errors.append(e)

    threads = [threading.Thread(target=poll) for _ in range(8)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert errors == []
    assert sim.calls("run-1") == 120


def test_binds_loopback_on_an_ephemeral_port(sim: Simulator) -> None:
    """By default the server listens on 127.0.0.1 only, on a port the OS picked."""
    host, port = sim.address
    assert host == "127.0.0.1"
    assert port > 0
    assert sim.endpoint_url == f"http://127.0.0.1:{port}"


def test_endpoint_env_var_redirects_default_clients(
    sim: Simulator, monkeypatch: pytest.MonkeyPatch
) -> None:
    """AWS_ENDPOINT_URL_DATAZONE points a plain boto3 client at the simulator, no hook needed."""
    monkeypatch.setenv("AWS_ENDPOINT_URL_DATAZONE", sim.endpoint_url)
    monkeypatch.setenv("AWS_ACCESS_KEY_ID", "testing")
    monkeypatch.setenv("AWS_SECRET_ACCESS_KEY", "testing")
    sim.add_run(DOMAIN, "run-1", RunScript(statuses=["SUCCESS"]))
    client = keep(boto3.client("datazone", region_name="us-east-1"))
    assert get(client)["status"] == "SUCCESS"


# -- scenario parsing ------------------------------------------------------------


def test_run_script_from_dict_parses_faults_and_lineage() -> None:
    """from_dict turns a scenario's JSON into the same values the Python API builds."""
    script = RunScript.from_dict(
        {
            "statuses": [
                "SCHEDULED",
                {"fault": "throttle"},
                {"fault": "internal"},
                {"fault": "http", "status": 502},
                {"fault": "reset"},
                {"fault": "malformed"},
                {"fault": "error", "code": "AccessDeniedException", "status": 403},
                {"fault": "delay", "seconds": 0.5},
                "SUCCESS",
            ],
            "throttle_rate": 0.1,
            "lineage": {"total_queries_processed": 7, "error_messages": []},
        }
    )
    assert script == RunScript(
        statuses=[
            "SCHEDULED",
            Fault.throttle(),
            Fault.internal(),
            Fault.http(502),
            Fault.reset(),
            Fault.malformed(),
            Fault.error("AccessDeniedException", 403),
            Fault.delay(0.5),
            "SUCCESS",
        ],
        throttle_rate=0.1,
        lineage=Lineage(total_queries_processed=7, error_messages=()),
    )
    timeline = RunScript.from_dict({"timeline": [[0, "SCHEDULED"], [5, "SUCCESS"]]})
    assert timeline.timeline == ((0.0, "SCHEDULED"), (5.0, "SUCCESS"))


@pytest.mark.parametrize(
    ("data", "message"),
    [
        ({}, "exactly one of"),
        ({"statuses": ["SUCCESS"], "timeline": [[0, "SUCCESS"]]}, "exactly one of"),
        ({"statuses": [{"fault": "explode"}]}, "unknown fault 'explode'"),
        ({"statuses": [{"fault": "http"}, "SUCCESS"]}, "needs 'status'"),
        ({"statuses": []}, "must not be empty"),
        ({"statuses": [{"fault": "delay", "seconds": 1}]}, "holds no status"),
        ({"statuses": ["SUCCESS"], "throttle_rate": 2}, "between 0 and 1"),
        ({"statuses": ["SUCCESS"], "latency": "slow"}, "'latency' must be"),
        ({"statuses": ["SUCCESS"], "colour": "blue"}, "unknown key(s) in a run script: colour"),
        ({"timeline": [[5, "SUCCESS"]]}, "at time 0"),
        ({"timeline": [[0, "A"], [9, "B"], [3, "C"]]}, "must not decrease"),
        ({"timeline": [["soon", "SUCCESS"]]}, "[seconds, status]"),
    ],
)
def test_from_dict_rejects_bad_input_clearly(data: dict[str, Any], message: str) -> None:
    """Bad scenario input is a ValueError that says what is wrong."""
    with pytest.raises(ValueError, match=re.escape(message)):
        RunScript.from_dict(data)


def test_a_runs_queries_end_at_or_before_the_run_does(client: Any, sim: Simulator) -> None:
    """A run that ends 2 s after it was created cannot report queries ending at 55 s."""
    sim.add_run(DOMAIN, "run-1", RunScript(statuses=["IN_PROGRESS", "SUCCESS"], lineage=Lineage()))
    get(client)
    answer = get(client)
    sql = answer["details"]["lineageRunDetails"]["sqlQueryRunDetails"]
    assert sql["queryStartTime"] <= sql["queryEndTime"] <= answer["endTime"]


def test_a_script_of_faults_alone_answers_its_last_fault_for_ever(
    sim: Simulator, client: Any
) -> None:
    """A run every call of which is denied is a scenario of one fault; no listing shows it."""
    sim.load_scenario(
        {
            "runs": [
                {
                    "domain_id": DOMAIN,
                    "run_id": "run-1",
                    "job_id": "job-9",
                    "statuses": [
                        {"fault": "throttle"},
                        {"fault": "error", "code": "AccessDeniedException", "status": 403},
                    ],
                }
            ]
        }
    )
    codes = []
    for _ in range(4):
        with pytest.raises(ClientError) as excinfo:
            get(client)
        codes.append(error_of(excinfo))
    assert codes == [("ThrottlingException", 429)] + [("AccessDeniedException", 403)] * 3
    listed = client.list_job_runs(domainIdentifier=DOMAIN, jobIdentifier="job-9")
    assert listed["items"] == []


def test_load_scenario_registers_runs_and_names_bad_ones(sim: Simulator, client: Any) -> None:
    """load_scenario takes add_run's keywords per run, and errors name the run at fault."""
    sim.load_scenario(
        {
            "runs": [
                {"domain_id": DOMAIN, "run_id": "run-1", "job_id": "job-7", "statuses": ["FAILED"]},
            ]
        }
    )
    assert get(client)["jobId"] == "job-7"
    with pytest.raises(ValueError, match=r"runs\[1\]: needs string 'domain_id'"):
        sim.load_scenario(
            {"runs": [{"domain_id": DOMAIN, "run_id": "a", "statuses": ["SUCCESS"]}, {}]}
        )
    assert sim.calls("a") == 0
    with pytest.raises(ClientError):
        get(client, "a")  # nothing of a rejected scenario is registered


@contextmanager
def served(*args: str) -> Iterator[tuple[subprocess.Popen[str], str]]:
    """``python -m poller.testing *args`` and the URL it printed; killed at the end if still up."""
    proc = subprocess.Popen(
        [sys.executable, "-m", "poller.testing", *args],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        env={**os.environ, "PYTHONUNBUFFERED": "1"},
    )
    try:
        assert proc.stdout is not None
        yield proc, proc.stdout.readline().strip()
    finally:
        if proc.poll() is None:
            proc.kill()


def test_command_line_serves_a_scenario_and_stops_on_ctrl_c(tmp_path: Path) -> None:
    """python -m poller.testing prints its URL, serves the scenario, and exits 0 on SIGINT."""
    scenario = tmp_path / "scenario.json"
    run = {"domain_id": DOMAIN, "run_id": "run-1", "statuses": ["SUCCESS"]}
    scenario.write_text(json.dumps({"runs": [run]}))
    with served("--scenario", str(scenario)) as (proc, url):
        assert url.startswith("http://127.0.0.1:")
        assert get(keep(make_client(url)))["status"] == "SUCCESS"
        proc.send_signal(signal.SIGINT)
        _, stderr = proc.communicate(timeout=5)
    assert proc.returncode == 0
    assert "Traceback" not in stderr


def test_command_line_prints_the_lines_a_client_in_another_shell_needs(tmp_path: Path) -> None:
    """The export line on stderr is all `poller wait` needs: no AWS set-up of its own."""
    with served() as (proc, url):
        assert proc.stderr is not None
        printed = b""  # on stderr before the URL; nothing comes after it
        while select.select([proc.stderr], [], [], 2)[0]:
            chunk = os.read(proc.stderr.fileno(), 65536)
            if not chunk:
                break
            printed += chunk
        lines = printed.decode().splitlines()
        exports = next((line for line in lines if line.strip().startswith("export ")), "")
        names = dict(word.split("=", 1) for word in exports.split()[1:])
        assert names["AWS_ENDPOINT_URL_DATAZONE"] == url
        env = {k: v for k, v in os.environ.items() if not k.startswith(("AWS_", "POLLER_"))}
        env.update(names, AWS_CONFIG_FILE=os.devnull, AWS_SHARED_CREDENTIALS_FILE=os.devnull)
        done = subprocess.run(
            [POLLER, "status", "--domain-identifier", "dzd_abc123", "--identifier", "run-42"],
            env=env, capture_output=True, text=True, timeout=30, check=False,
        )  # fmt: skip
        proc.send_signal(signal.SIGTERM)
        proc.communicate(timeout=5)
    assert done.returncode == 0, done.stderr
    assert json.loads(done.stdout)["status"] in ("SCHEDULED", "IN_PROGRESS")


def test_command_line_rejects_a_bad_scenario(tmp_path: Path) -> None:
    """A scenario the simulator cannot use exits 2 with the reason on stderr."""
    scenario = tmp_path / "scenario.json"
    scenario.write_text(json.dumps({"runs": [{"domain_id": DOMAIN, "run_id": "r"}]}))
    proc = subprocess.run(
        [sys.executable, "-m", "poller.testing", "--scenario", str(scenario)],
        capture_output=True,
        text=True,
        timeout=10,
        check=False,
    )
    assert proc.returncode == 2
    assert "runs[0] (r): give exactly one of 'statuses' or 'timeline'" in proc.stderr
    assert proc.stdout == ""


@pytest.mark.parametrize("key", ["statuses", "timeline"])
def test_a_misspelled_status_is_refused_at_load_naming_the_run_and_the_value(
    sim: Simulator, key: str
) -> None:
    """ "SUCESS" would never end a wait: the scenario is refused, naming run and value."""
    script = ["IN_PROGRESS", "SUCESS"] if key == "statuses" else [[0, "IN_PROGRESS"], [5, "SUCESS"]]
    run = {"domain_id": DOMAIN, "run_id": "run-typo", key: script}
    with pytest.raises(ValueError, match=r"runs\[0\] \(run-typo\): unknown status 'SUCESS' "
                       r"\(did you mean SUCCESS\?\)"):  # fmt: skip
        sim.load_scenario({"runs": [run]})
    assert "run-typo" not in str(sim.requests)
    # A status DataZone may add is still servable, when the scenario says so.
    sim.load_scenario({"runs": [{**run, "unknown_statuses": True}]})


def test_command_line_names_the_file_of_a_scenario_that_is_not_json(tmp_path: Path) -> None:
    """A JSON syntax error: exit 2, naming the file and where in it the JSON broke."""
    scenario = tmp_path / "scenario.json"
    text = '{"runs": [\n  {"domain_id": "dzd_x",}\n]}'
    scenario.write_text(text)
    proc = subprocess.run(
        [sys.executable, "-m", "poller.testing", "--scenario", str(scenario)],
        capture_output=True, text=True, timeout=10, check=False,
    )  # fmt: skip
    # json's own words and column, which differ between Python versions (3.13 names the
    # trailing comma).
    with pytest.raises(json.JSONDecodeError) as bad:
        json.loads(text)
    assert bad.value.lineno == 2
    assert proc.returncode == 2
    assert proc.stderr.splitlines() == [
        f"python -m poller.testing: error: --scenario {scenario}: not valid JSON at line 2, "
        f"column {bad.value.colno}: {bad.value.msg}"
    ]


def test_client_method_gives_a_retry_free_client_with_overrides(sim: Simulator) -> None:
    """Simulator.client() is a real client aimed at the simulator; kwargs override its config."""
    sim.add_run(DOMAIN, "run-1", RunScript(statuses=[Fault.throttle(), "SUCCESS"]))
    client = keep(sim.client(read_timeout=3, region_name="eu-west-1"))
    assert client.meta.config.read_timeout == 3
    assert client.meta.region_name == "eu-west-1"
    with pytest.raises(ClientError):
        get(client)  # no botocore retry hides the throttle
    assert get(client)["status"] == "SUCCESS"
    assert sim.calls("run-1") == 2


def test_command_line_log_has_one_json_line_per_request_and_no_secret(tmp_path: Path) -> None:
    """--log FILE gets a flushed JSON line per request, with the key ID but no secret."""
    scenario, log = tmp_path / "scenario.json", tmp_path / "requests.log"
    run = {"domain_id": DOMAIN, "run_id": "run-1", "statuses": [{"fault": "throttle"}, "SUCCESS"]}
    scenario.write_text(json.dumps({"runs": [run]}))
    with served("--scenario", str(scenario), "--log", str(log)) as (proc, url):
        client = keep(
            make_client(url, aws_access_key_id="AKIDLOGTEST", aws_secret_access_key=SECRET)
        )
        with pytest.raises(ClientError):
            get(client)
        assert get(client)["status"] == "SUCCESS"
        client.list_job_runs(domainIdentifier=DOMAIN, jobIdentifier="job-1")
        # Flushed per line: readable while the simulator still runs.
        assert len(log.read_text().splitlines()) == 3
        proc.send_signal(signal.SIGTERM)
        _, stderr = proc.communicate(timeout=5)
    assert proc.returncode == 0, stderr
    text = log.read_text()
    assert SECRET not in text
    assert "Signature" not in text
    lines = [json.loads(line) for line in text.splitlines()]
    assert [(x["method"], x["operation"], x["status"], x["answer"]) for x in lines] == [
        ("GET", "GetJobRun", 429, "ThrottlingException"),
        ("GET", "GetJobRun", 200, "SUCCESS"),
        ("GET", "ListJobRuns", 200, None),
    ]
    assert lines[0]["path"] == f"/v2/domains/{DOMAIN}/jobRuns/run-1"
    assert {x["access_key_id"] for x in lines} == {"AKIDLOGTEST"}
    when = dt.datetime.fromisoformat(lines[0]["time"])
    assert when.utcoffset() == dt.timedelta(0)
    assert abs((dt.datetime.now(dt.UTC) - when).total_seconds()) < 60


def test_log_file_on_the_class_records_unsigned_requests_too(tmp_path: Path) -> None:
    """Simulator(log_file=...) logs a rejected unsigned request with a null key ID."""
    log = tmp_path / "requests.log"
    with Simulator(log_file=log) as sim:
        with pytest.raises(urllib.error.HTTPError):
            urllib.request.urlopen(f"{sim.endpoint_url}/v2/domains/{DOMAIN}/jobRuns/r", timeout=5)
        assert sim.requests[0].access_key_id is None
    (line,) = [json.loads(x) for x in log.read_text().splitlines()]
    assert line["access_key_id"] is None
    assert (line["status"], line["answer"]) == (403, "MissingAuthenticationTokenException")


TOTAL_QUERIES = "details.lineageRunDetails.sqlQueryRunDetails.totalQueriesProcessed"


def test_override_fault_garbles_one_answer_with_the_run_ids_kept(sim: Simulator) -> None:
    """Fault.override sends the run's real answer with bad members: botocore raises ValueError."""
    script = RunScript(
        statuses=[
            "IN_PROGRESS",
            Fault.override({"createdAt": "yesterday"}),
            Fault.override({TOTAL_QUERIES: "ten"}),
            Fault.override({"status": None}),
            "SUCCESS",
        ],
        lineage=Lineage(while_running=True),
    )
    sim.add_run(DOMAIN, "run-1", script)
    client = keep(sim.client())
    assert get(client)["status"] == "IN_PROGRESS"
    with pytest.raises(ValueError, match='Invalid timestamp "yesterday"'):
        get(client)
    with pytest.raises(ValueError, match="invalid literal for int"):
        get(client)
    out = get(client)
    assert "status" not in out  # a JSON null member parses as absent
    assert out["id"] == "run-1"
    assert get(client)["status"] == "SUCCESS"
    assert [r.fault for r in sim.requests] == [None, "override", "override", "override", None]
    assert [r.answered_status for r in sim.requests][1:4] == ["IN_PROGRESS"] * 3


def test_malformed_fault_sends_raw_bytes_invalid_utf8_included(sim: Simulator) -> None:
    """Fault.malformed(bytes) sends them as they are: invalid UTF-8 is a UnicodeDecodeError."""
    sim.add_run(DOMAIN, "run-1", RunScript(statuses=[Fault.malformed(b'\xff\xfe{"a"'), "SUCCESS"]))
    client = keep(sim.client())
    with pytest.raises(UnicodeDecodeError):
        get(client)
    assert get(client)["status"] == "SUCCESS"


def test_override_fault_from_a_scenario_and_its_bad_input() -> None:
    """A scenario spells it {"fault": "override", "fields": {...}}; bad fields are named."""
    parsed = Fault.from_dict({"fault": "override", "fields": {"createdAt": "yesterday"}})
    assert parsed == Fault.override({"createdAt": "yesterday"})
    with pytest.raises(ValueError, match="needs 'fields'"):
        Fault.from_dict({"fault": "override"})
    with pytest.raises(ValueError, match="non-empty"):
        Fault.override({})
    raw = Fault.from_dict({"fault": "malformed", "body": "\udcff{"})
    assert raw == Fault.malformed(b"\xff{")


def test_command_line_tls_prints_the_ca_file_to_trust() -> None:
    """--tls serves HTTPS; the CA path on stderr is what a client passes as verify=."""
    with served("--tls") as (proc, url):
        assert proc.stderr is not None
        assert url.startswith("https://127.0.0.1:")
        lines = [proc.stderr.readline(), proc.stderr.readline()]
        (ca_line,) = [line for line in lines if line.startswith("CA certificate")]
        ca_file = ca_line.rsplit(": ", 1)[1].strip()
        client = keep(make_client(url, verify=ca_file))
        assert get(client, "run-42", "dzd_abc123")["status"] == "SCHEDULED"
        proc.send_signal(signal.SIGTERM)
        proc.communicate(timeout=5)
    assert proc.returncode == 0
    assert not Path(ca_file).exists()  # removed on stop
