"""The wait against the simulator, over real HTTP with real botocore clients.

A test taking the `wait` fixture runs twice, through the blocking and through the
async front door (see `helpers.Wait`); the others are the blocking wait's own, as
test_aio.py holds the async one's.
"""

from __future__ import annotations

import asyncio
import threading
import warnings
from typing import Any

import pytest
from freezegun import freeze_time
from helpers import (
    DOMAIN,
    LINEAGE,
    SECRET,
    TERMINAL,
    FakeTime,
    Wait,
    capture_every_log,
    closed_port,
    keep,
    make_client,
)
from structlog.testing import capture_logs

from poller import (
    AccessDeniedError,
    ClientSettings,
    InvalidRequestError,
    JobRunNotFoundError,
    JobRunStatus,
    Outcome,
    PollPolicy,
    ServiceUnavailableError,
    WaitCancelledError,
    WaitTimeoutError,
    get_job_run,
    wait_for_job_run,
)
from poller._waiter import wait_result
from poller.testing import Fault, Lineage, RunScript, Seams, Simulator, VirtualClock, run_virtual

# -- through both front doors ----------------------------------------------------


def test_a_sleep_of_its_own_that_returns_at_once_moves_the_waits_time_once_per_gap() -> None:
    """``Seams(sleep=...)`` with no clock, a sleep that returns at once (a test's): the wait
    runs its cadence on the time its sleeps say, one sleep per gap between looks. (On a
    loop of real time whose sleep did not move it, it called the sleep in a busy loop
    until two real seconds had passed, for every gap.)"""
    sleeps: list[float] = []
    with Simulator() as sim:
        sim.add_run(DOMAIN, "run-1", RunScript(statuses=["IN_PROGRESS"] * 3 + ["SUCCESS"]))
        result = wait_for_job_run(
            DOMAIN,
            "run-1",
            client=keep(sim.client()),
            policy=PollPolicy(timeout=60, multiplier=1, jitter=0, history=False),
            seams=Seams(sleep=sleeps.append),
        )
    assert result.outcome is Outcome.SUCCEEDED
    assert result.polls == 4
    # One sleep a gap, 2 s less the real time its call took (this clock is real time too).
    assert sleeps == pytest.approx([2.0, 2.0, 2.0], abs=0.05)
    assert result.waited_s == pytest.approx(6.0, abs=0.2)


@pytest.mark.parametrize("status", TERMINAL)
@pytest.mark.parametrize("lineage", [LINEAGE, None], ids=["lineage", "no-lineage"])
def test_every_terminal_status(
    sim: Simulator,
    client: Any,
    wait: Wait,
    fake_time: FakeTime,
    status: str,
    lineage: Lineage | None,
) -> None:
    """Each terminal status ends the wait with its outcome, lineage parsed when present."""
    sim.add_run(
        DOMAIN,
        "run-1",
        RunScript(statuses=["SCHEDULED", "IN_PROGRESS", status], lineage=lineage),
    )
    result = wait(client)
    assert result.job_run.status == status
    assert result.outcome is JobRunStatus(status).outcome
    assert result.polls == sim.calls("run-1") == 3
    # SCHEDULED->IN_PROGRESS restarts the cadence: a look 2 s after each.
    polls = [r.t for r in sim.requests if r.operation == "GetJobRun"]
    assert polls == [1000.0, 1002.0, 1004.0]
    # The job's history is looked up at the budget's next free time, 0.1 s after the
    # first answer, while the wait sleeps: the time moves to it, then to the next look.
    assert [r.t for r in sim.requests if r.operation == "ListJobRuns"] == [1000.1]
    assert fake_time.sleeps == [0.1, 1.9, 2.0]
    doc = result.to_dict()
    if lineage is None:
        assert doc["lineage"] is None
    else:
        assert doc["lineage"]["total_queries_processed"] == 42
        assert doc["lineage"]["num_queries_succeeded"] == 40
        assert doc["lineage"]["failure_rate"] == 0.0476
        assert doc["lineage"]["error_messages"] == ["bad SQL"]


def test_an_already_finished_run_costs_one_call(
    sim: Simulator, client: Any, wait: Wait, fake_time: FakeTime
) -> None:
    """The first call happens at once; a finished run needs no second."""
    sim.add_run(DOMAIN, "run-1", RunScript(statuses=["SUCCESS"]))
    result = wait(client)
    assert (result.polls, sim.calls("run-1"), fake_time.sleeps) == (1, 1, [])


def test_throttle_storm_ends_in_success(
    sim: Simulator, client: Any, wait: Wait, fake_time: FakeTime
) -> None:
    """Forty throttles in a row are retried with backoff and all counted; the wait succeeds."""
    storm = [Fault.throttle()] * 40
    sim.add_run(DOMAIN, "run-1", RunScript(statuses=["IN_PROGRESS", *storm, "SUCCESS"]))
    result = wait(client)
    assert result.outcome is Outcome.SUCCEEDED
    assert (result.throttled, result.polls, sim.calls("run-1")) == (40, 42, 42)
    # The job's history is looked up 0.1 s after the first answer (the budget's next free
    # time), while the wait sleeps to its first look; then the backoff.
    assert fake_time.sleeps[:2] == [0.1, 1.9]
    assert fake_time.sleeps[2:8] == [1, 2, 4, 8, 16, 20]


@pytest.mark.parametrize(
    "fault",
    [
        Fault.internal(),
        Fault.http(502),
        Fault.http(503, body="Service Unavailable", content_type="text/plain"),
        Fault.reset(),
        Fault.malformed(),
        Fault.malformed(body='{"unexpected": "shape"}'),
    ],
    ids=["500", "502-html", "503-text", "reset", "not-json", "wrong-json"],
)
def test_each_transient_fault_is_retried(
    sim: Simulator, client: Any, wait: Wait, fault: Fault
) -> None:
    """A 5xx, a proxy page, a dropped connection or a garbled body is retried once, then success."""
    sim.add_run(DOMAIN, "run-1", RunScript(statuses=["IN_PROGRESS", fault, "SUCCESS"]))
    result = wait(client)
    assert result.outcome is Outcome.SUCCEEDED
    assert (result.errors_retried, result.polls) == (1, 3)


def test_read_timeout_is_transient(sim: Simulator, wait: Wait) -> None:
    """A slow answer past the client's read timeout is retried like any transient fault."""
    client = keep(sim.client(read_timeout=0.2))
    sim.add_run(DOMAIN, "run-1", RunScript(statuses=[Fault.delay(1.0), "SUCCESS"]))
    result = wait(client)
    assert (result.outcome, result.errors_retried) == (Outcome.SUCCEEDED, 1)


@pytest.mark.parametrize("max_errors", [3, 4])
def test_max_errors_consecutive_faults_end_the_wait(
    sim: Simulator, client: Any, wait: Wait, max_errors: int
) -> None:
    """The max_errors-th fault in a row ends the wait with ServiceUnavailableError."""
    sim.add_run(DOMAIN, "run-1", RunScript(statuses=["IN_PROGRESS", *[Fault.internal()] * 20]))
    with pytest.raises(ServiceUnavailableError, match=f"{max_errors} transient faults") as info:
        wait(client, policy=PollPolicy(jitter=0, max_errors=max_errors))
    assert sim.calls("run-1") == max_errors + 1
    assert info.value.job_run is not None
    assert info.value.job_run.status is JobRunStatus.IN_PROGRESS
    assert info.value.result is not None
    assert info.value.result.to_dict()["problem"]["type"] == "ServiceUnavailableError"


def test_connection_refused_is_transient(wait: Wait) -> None:
    """Nothing listening is retried up to max_errors, then ServiceUnavailableError."""
    client = keep(make_client(f"http://127.0.0.1:{closed_port()}", connect_timeout=0.5))
    with pytest.raises(ServiceUnavailableError, match="EndpointConnectionError"):
        wait(client, policy=PollPolicy(jitter=0, max_errors=3))


@pytest.mark.parametrize(
    ("code", "status", "error"),
    [
        ("AccessDeniedException", 403, AccessDeniedError),
        ("UnauthorizedException", 401, AccessDeniedError),
        ("ExpiredTokenException", 403, AccessDeniedError),
        ("ValidationException", 400, InvalidRequestError),
    ],
)
def test_fatal_errors_end_the_wait_at_once(
    sim: Simulator,
    client: Any,
    wait: Wait,
    fake_time: FakeTime,
    code: str,
    status: int,
    error: type[Exception],
) -> None:
    """Denied, unauthorized, expired or invalid: one call, no retry, the right error class."""
    sim.add_run(DOMAIN, "run-1", RunScript(statuses=[Fault.error(code, status, "nope"), "SUCCESS"]))
    with pytest.raises(error, match="nope"):
        wait(client)
    assert sim.calls("run-1") == 1
    assert fake_time.sleeps == []


def test_a_fatal_error_raises_and_the_result_variant_returns_it(
    sim: Simulator, client: Any, wait: Wait
) -> None:
    """A denied call raises AccessDeniedError; the result variant returns it as outcome error."""
    denied = RunScript(statuses=[Fault.error("AccessDeniedException", 403), "SUCCESS"])
    sim.add_run(DOMAIN, "run-1", denied)
    sim.add_run(DOMAIN, "run-2", denied)
    with pytest.raises(AccessDeniedError):
        wait(client)
    result = wait.result(client, "run-2")
    assert result.outcome is Outcome.ERROR
    assert result.to_dict()["problem"]["type"] == "AccessDeniedError"


def test_missing_credentials_are_access_denied(
    sim: Simulator, wait: Wait, monkeypatch: pytest.MonkeyPatch, tmp_path: Any
) -> None:
    """With no credentials anywhere, the wait fails at once with a clear message and no call."""
    for name in ("AWS_ACCESS_KEY_ID", "AWS_SECRET_ACCESS_KEY", "AWS_SESSION_TOKEN", "AWS_PROFILE"):
        monkeypatch.delenv(name, raising=False)
    monkeypatch.setenv("AWS_SHARED_CREDENTIALS_FILE", str(tmp_path / "none"))
    monkeypatch.setenv("AWS_CONFIG_FILE", str(tmp_path / "none"))
    monkeypatch.setenv("AWS_EC2_METADATA_DISABLED", "true")
    with pytest.raises(AccessDeniedError, match="credentials"):
        wait(ClientSettings(region_name="us-east-1", endpoint_url=sim.endpoint_url))
    assert sim.requests == []


def test_missing_region_is_a_clear_error(
    wait: Wait, monkeypatch: pytest.MonkeyPatch, tmp_path: Any
) -> None:
    """With no region configured, building the client is bad input that says how to give one."""
    for name in ("AWS_REGION", "AWS_DEFAULT_REGION", "AWS_PROFILE"):
        monkeypatch.delenv(name, raising=False)
    monkeypatch.setenv("AWS_CONFIG_FILE", str(tmp_path / "none"))
    with pytest.raises(InvalidRequestError, match=r"no AWS region.*AWS_REGION"):
        wait(None)


def test_not_found_within_grace_then_visible(
    sim: Simulator, client: Any, wait: Wait, fake_time: FakeTime
) -> None:
    """A run that becomes visible 5 s after the wait starts is waited on normally."""
    sim.add_run(DOMAIN, "run-1", RunScript(statuses=["SUCCESS"]), visible_after=5)
    result = wait(client)
    assert result.outcome is Outcome.SUCCEEDED
    assert fake_time.sleeps == [1, 2, 4]  # 404 at 0, 1, 3 s; found at 7 s
    assert result.errors_retried == 3


def test_not_found_after_grace_is_fatal(
    sim: Simulator, client: Any, wait: Wait, fake_time: FakeTime
) -> None:
    """A run still missing when the grace period ends raises JobRunNotFoundError."""
    with pytest.raises(JobRunNotFoundError):
        wait(client, "never-created", policy=PollPolicy(jitter=0, not_found_grace=10))
    assert fake_time.now - 1000.0 == pytest.approx(10)
    assert sim.calls("never-created") == 5  # at 0, 1, 3, 7 and 10 s


def test_deadline_carries_the_last_status_and_polls_at_the_deadline(
    sim: Simulator, client: Any, wait: Wait
) -> None:
    """WaitTimeoutError holds the last run seen, and the last request lands on the deadline."""
    sim.add_run(DOMAIN, "run-1", RunScript(statuses=["IN_PROGRESS"]))
    with pytest.raises(WaitTimeoutError) as info:
        wait(client, timeout=60)
    assert info.value.job_run is not None
    assert info.value.job_run.status is JobRunStatus.IN_PROGRESS
    assert sim.requests[-1].t == pytest.approx(1000.0 + 60)
    assert info.value.result is not None
    assert info.value.result.outcome is Outcome.WAIT_TIMEOUT


def test_unknown_status_and_details_do_not_crash(sim: Simulator, client: Any, wait: Wait) -> None:
    """A status and a details member botocore does not know are tolerated end to end."""
    sim.add_run(
        DOMAIN,
        "run-1",
        RunScript(statuses=["BRAND_NEW_STATUS", "SUCCESS"], unknown_details=True),
    )
    changes: list[str] = []
    result = wait(client, on_change=lambda run: changes.append(str(run.status)))
    assert changes == ["BRAND_NEW_STATUS", "SUCCESS"]
    assert (result.outcome, result.job_run.lineage) == (Outcome.SUCCEEDED, None)


def test_bad_ids_are_rejected_before_any_call(sim: Simulator, client: Any, wait: Wait) -> None:
    """IDs that cannot match the API's patterns fail with no request made."""
    for domain, run_id in [("abc", "run-1"), (DOMAIN, "bad id!"), (DOMAIN, "x" * 37)]:
        with pytest.raises(InvalidRequestError):
            wait(client, run_id, domain=domain)
    assert sim.requests == []


def test_finished_event_carries_the_result_document(
    sim: Simulator, client: Any, wait: Wait
) -> None:
    """The log's `finished` event is the result document; events follow docs/design.md's names."""
    sim.add_run(
        DOMAIN,
        "run-1",
        RunScript(statuses=["SCHEDULED", Fault.throttle(), Fault.internal(), "SUCCESS"]),
    )
    with capture_every_log() as events:
        result = wait(client)
    names = [e["event"] for e in events]
    # The job's history is looked up in the background (0.1 s after the first answer) and
    # picked up by the next answer that is not terminal: none here (a throttle, an error,
    # SUCCESS), so no `history_unavailable` is told.
    assert names == [
        "wait_started",
        "status_changed",
        "throttled",
        "retrying",
        "status_changed",
        "finished",
    ]
    assert [r.t for r in sim.requests if r.operation == "ListJobRuns"] == [1000.1]
    finished = {k: v for k, v in events[-1].items() if k not in ("event", "log_level")}
    assert finished == result.to_dict()
    assert events[1]["from"] is None
    assert events[1]["to"] == "SCHEDULED"
    assert events[2]["sleep_s"] == 1.0


def test_no_credentials_in_any_log_line(sim: Simulator, wait: Wait) -> None:
    """Neither the secret key nor a signed header appears in what a wait logs."""
    client = keep(sim.client(aws_access_key_id="AKIDTESTING", aws_secret_access_key=SECRET))
    sim.add_run(DOMAIN, "run-1", RunScript(statuses=[Fault.throttle(), "SUCCESS"]))
    with capture_logs() as events:
        wait(client)
    text = repr(events)
    assert SECRET not in text
    assert "AKIDTESTING" not in text
    assert "Authorization" not in text


def test_heartbeat_while_nothing_changes(sim: Simulator, client: Any, wait: Wait) -> None:
    """A long unchanged wait logs a heartbeat about once a minute, not once per poll."""
    sim.add_run(DOMAIN, "run-1", RunScript(timeline=[(0, "IN_PROGRESS"), (300, "SUCCESS")]))
    with capture_logs() as events:
        result = wait(client)
    beats = [e for e in events if e["event"] == "heartbeat"]
    assert result.polls > len(beats) >= 3
    assert all(b["status"] == "IN_PROGRESS" for b in beats)


def test_poller_built_client_reaches_the_simulator_through_the_environment(
    sim: Simulator, wait: Wait, monkeypatch: pytest.MonkeyPatch
) -> None:
    """AWS_ENDPOINT_URL_DATAZONE redirects the client poller builds; no special hook needed."""
    monkeypatch.setenv("AWS_ENDPOINT_URL_DATAZONE", sim.endpoint_url)
    monkeypatch.setenv("AWS_ACCESS_KEY_ID", "testing")
    monkeypatch.setenv("AWS_SECRET_ACCESS_KEY", "testing")
    sim.add_run(DOMAIN, "run-1", RunScript(statuses=[Fault.throttle(), "SUCCESS"]))
    result = wait(ClientSettings(region_name="us-east-1"))
    assert (result.outcome, result.throttled, sim.calls("run-1")) == (Outcome.SUCCEEDED, 1, 2)


def test_poller_built_client_does_not_retry_inside_botocore(sim: Simulator, wait: Wait) -> None:
    """With botocore retries off, one throttle is one request: poller owns the backoff."""
    sim.add_run(DOMAIN, "run-1", RunScript(statuses=[Fault.throttle(), "SUCCESS"]))
    result = wait(ClientSettings(region_name="us-east-1", endpoint_url=sim.endpoint_url))
    assert (result.throttled, sim.calls("run-1")) == (1, 2)


# -- the blocking wait's own -------------------------------------------------------


def test_cancel_event_stops_the_wait_with_the_last_state(sim: Simulator, client: Any) -> None:
    """Setting the event ends the wait with WaitCancelledError carrying the last run."""
    sim.add_run(DOMAIN, "run-1", RunScript(statuses=["IN_PROGRESS"]))
    cancel = threading.Event()
    with pytest.raises(WaitCancelledError) as info:
        wait_for_job_run(
            DOMAIN, "run-1", client=client, cancel=cancel, on_change=lambda _: cancel.set()
        )
    assert info.value.job_run is not None
    assert info.value.result is not None
    assert info.value.result.outcome is Outcome.INTERRUPTED
    assert sim.calls("run-1") == 1


def test_cancel_interrupts_a_real_sleep_promptly(sim: Simulator, client: Any) -> None:
    """A wait sleeping 30 s between polls returns as soon as the event is set."""
    sim.add_run(DOMAIN, "run-1", RunScript(statuses=["IN_PROGRESS"]))
    cancel = threading.Event()
    timer = threading.Timer(0.2, cancel.set)
    timer.start()
    result = wait_result(
        DOMAIN, "run-1", client=client, cancel=cancel, policy=PollPolicy(interval=30, jitter=0)
    )
    assert result.outcome is Outcome.INTERRUPTED
    assert result.waited_s < 5


def test_get_job_run_reads_once_through_throttles(
    sim: Simulator, client: Any, fake_time: FakeTime
) -> None:
    """get_job_run returns the current state, whatever it is, after retrying a throttle."""
    sim.add_run(DOMAIN, "run-1", RunScript(statuses=[Fault.throttle(), "IN_PROGRESS"]))
    run = get_job_run(
        DOMAIN, "run-1", client=client, seams=Seams(clock=fake_time.clock, sleep=fake_time.sleep)
    )
    assert run.status is JobRunStatus.IN_PROGRESS
    assert sim.calls("run-1") == 2


def test_get_job_run_raises_the_fatal_error(sim: Simulator, client: Any) -> None:
    """A denied read raises AccessDeniedError, as a wait would."""
    sim.add_run(
        DOMAIN, "run-1", RunScript(statuses=[Fault.error("AccessDeniedException", 403), "SUCCESS"])
    )
    with pytest.raises(AccessDeniedError):
        get_job_run(DOMAIN, "run-1", client=client)


def test_under_freezegun_with_a_ticking_sleep(sim: Simulator, client: Any) -> None:
    """The default clock follows freezegun, given a sleep that ticks the frozen time."""
    sim.add_run(DOMAIN, "run-1", RunScript(statuses=["IN_PROGRESS", "IN_PROGRESS", "SUCCESS"]))
    with freeze_time("2026-11-24 10:00:00") as frozen:
        result = wait_for_job_run(
            DOMAIN,
            "run-1",
            client=client,
            policy=PollPolicy(jitter=0),
            seams=Seams(sleep=frozen.tick),
        )
    assert result.waited_s == 5.0  # 2 s then 3 s, on the frozen clock


def test_a_virtual_loop_closes_with_its_executor_joined_and_its_time_where_it_was() -> None:
    """`run_virtual` joins the default executor's threads at close in real time, time
    standing still (on Python 3.12+ the join's 300 s timeout lapsed at once on the loop's
    time: the clock jumped 300 s and the threads were left behind with a RuntimeWarning)."""

    async def main() -> int:
        return await asyncio.to_thread(int)

    for _ in range(5):
        clock = VirtualClock()
        with warnings.catch_warnings():
            warnings.simplefilter("error")
            assert run_virtual(main(), clock) == 0
        assert clock.now == 1000.0
