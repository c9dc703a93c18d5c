"""The DataZone edge against bad answers and bad endpoints, through real botocore clients.

Every server here is real (the simulator, or one of the misbehaving servers of
poller.testing) and every client a real botocore client, so what is classified
is exactly what botocore raises.
"""

from __future__ import annotations

import json
import subprocess
from collections.abc import Iterator
from datetime import UTC
from typing import Any

import botocore.session
import pytest
from botocore.config import Config
from botocore.exceptions import ClientError
from helpers import DOMAIN, POLLER, child_env, closed_port, keep
from structlog.testing import capture_logs

from poller import (
    InvalidRequestError,
    PollerError,
    PollPolicy,
    ServiceUnavailableError,
    wait_for_job_run,
)
from poller._datazone import build_client, classify, client_config, fetch_job_run, list_job_runs
from poller._policy import CallFault, FaultKind
from poller.log import redact
from poller.testing import (
    Fault,
    GarbledServer,
    Lineage,
    RedirectServer,
    RunScript,
    Simulator,
    job_run_body,
)

RUN = "run-1"
# Fast retries, and few of them: each test sees the whole retry budget used up.
FAST = PollPolicy(
    interval=0.01, max_interval=0.02, retry_initial=0.01, retry_max=0.02, max_errors=3
)
PASSWORD = "pAsSwOrD-never-shown"


def failed_wait(client: Any, policy: PollPolicy = FAST) -> PollerError:
    """The error a wait on RUN with ``client`` ends with (it must end with one)."""
    with pytest.raises(PollerError) as info:
        wait_for_job_run(DOMAIN, RUN, client=client, policy=policy, timeout=30)
    return info.value


def cli(*args: str, **env: str) -> subprocess.CompletedProcess[str]:
    """`poller wait` on RUN in a subprocess, with dummy credentials and fast retries."""
    child = child_env(None, POLLER_RETRY_MAX="20ms", POLLER_RETRY_MAX_ERRORS="3", **env)
    done = subprocess.run(
        [str(POLLER), "wait", "--domain-identifier", DOMAIN, "--identifier", RUN, *args],
        env=child,
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert "Traceback" not in done.stderr + done.stdout
    return done


# -- garbled bodies (item 10) ----------------------------------------------------

GARBLED = {
    "invalid utf-8": GarbledServer.invalid_utf8,
    "createdAt yesterday": lambda: GarbledServer.bad_timestamp("yesterday"),
    "totalQueriesProcessed ten": lambda: GarbledServer.bad_integer("ten"),
    "a JSON array": lambda: GarbledServer(b"[]"),
    "JSON null": lambda: GarbledServer(b"null"),
    "createdAt 1e300": lambda: GarbledServer.bad_timestamp(1e300),
}


@pytest.mark.parametrize("make", GARBLED.values(), ids=GARBLED.keys())
def test_a_garbled_body_is_retried_and_counted_until_max_errors(make: Any) -> None:
    """Each body botocore's parser chokes on is a transient fault: every call counted."""
    with make() as server:
        error = failed_wait(keep(server.client()))
        calls = len(server.requests)
    assert isinstance(error, ServiceUnavailableError)
    assert "could not be parsed" in str(error)
    assert error.result is not None
    assert (calls, error.result.polls, error.result.errors_retried) == (3, 3, 2)


def test_garbled_answers_between_good_ones_do_not_end_the_wait() -> None:
    """Invalid UTF-8 and a bad timestamp, then SUCCESS: the wait succeeds, both retried."""
    garbled = b"\xff\xfe" + json.dumps(job_run_body()).encode()
    script = RunScript(
        statuses=[Fault.malformed(garbled), Fault.override({"createdAt": "yesterday"}), "SUCCESS"]
    )
    with Simulator() as sim:
        sim.add_run(DOMAIN, RUN, script)
        result = wait_for_job_run(DOMAIN, RUN, client=keep(sim.client()), policy=FAST)
    assert (str(result.outcome), result.polls, result.errors_retried) == ("succeeded", 3, 2)


def test_a_value_error_that_is_not_botocores_still_surfaces_as_itself() -> None:
    """A ValueError raised outside botocore (a bug, here a client's) is not retried away."""

    class BuggyClient:
        calls = 0

        def get_job_run(self, **_: Any) -> Any:
            BuggyClient.calls += 1
            raise ValueError("a bug, not a bad answer")

    with pytest.raises(ValueError, match="a bug"):
        wait_for_job_run(DOMAIN, RUN, client=BuggyClient(), policy=FAST)
    assert BuggyClient.calls == 1


def test_classify_tells_botocores_value_error_from_one_raised_elsewhere() -> None:
    """The same builtin ValueError is a bad answer from botocore's parser, a bug from elsewhere."""
    literal = pytest.raises(ValueError, match="invalid literal")
    with GarbledServer.bad_integer() as server, literal as parsed:
        keep(server.client()).get_job_run(domainIdentifier=DOMAIN, identifier=RUN)
    with pytest.raises(ValueError, match="invalid literal") as elsewhere:
        int("ten")
    assert type(parsed.value) is type(elsewhere.value) is ValueError
    fault = classify(parsed.value)
    assert fault is not None
    assert fault.kind is FaultKind.TRANSIENT
    assert classify(elsewhere.value) is None


def test_a_garbled_body_exits_5_through_the_cli_with_its_polls_counted() -> None:
    """`poller wait` on a garbled server: exit 5, ServiceUnavailableError, 3 polls, 2 retried."""
    with GarbledServer.bad_integer() as server:
        done = cli("--endpoint-url", server.endpoint_url, "--quiet")
    assert done.returncode == 5
    doc = json.loads(done.stdout)
    assert doc["problem"]["type"] == "ServiceUnavailableError"
    assert (doc["polls"], doc["errors_retried"]) == (3, 2)


# -- inconsistent lineage numbers (item 11) --------------------------------------


@pytest.mark.parametrize(
    ("total", "failed"), [(3, 7), (-3, 0), (42, -2)], ids=["more-failed", "neg-total", "neg-failed"]
)
def test_impossible_lineage_counts_are_null_and_logged_once(total: int, failed: int) -> None:
    """Counts that cannot be true come out null, with one lineage_inconsistent warning."""
    lineage = Lineage(total_queries_processed=total, num_queries_failed=failed)
    with Simulator() as sim, capture_logs() as logs:
        sim.add_run(DOMAIN, RUN, RunScript(statuses=["IN_PROGRESS", "SUCCESS"], lineage=lineage))
        doc = wait_for_job_run(DOMAIN, RUN, client=keep(sim.client()), policy=FAST).to_dict()
    numbers = ("total_queries_processed", "num_queries_failed", "num_queries_succeeded")
    assert [doc["lineage"][k] for k in (*numbers, "failure_rate")] == [None] * 4
    assert doc["lineage"]["error_messages"] == list(lineage.error_messages)
    warnings = [e for e in logs if e["event"] == "lineage_inconsistent"]
    assert len(warnings) == 1
    assert warnings[0]["log_level"] == "warning"
    assert str(failed if failed < 0 else total) in warnings[0]["reported"]


def test_consistent_lineage_counts_log_no_warning() -> None:
    """The default lineage (2 of 42 failed) passes through with no warning."""
    with Simulator() as sim, capture_logs() as logs:
        sim.add_run(DOMAIN, RUN, RunScript(statuses=["SUCCESS"], lineage=Lineage()))
        doc = wait_for_job_run(DOMAIN, RUN, client=keep(sim.client()), policy=FAST).to_dict()
    assert doc["lineage"]["failure_rate"] == 0.0476
    assert not [e for e in logs if e["event"] == "lineage_inconsistent"]


# -- bad endpoints (item 13) -----------------------------------------------------


@pytest.mark.parametrize(
    ("url", "why"),
    [
        ("http://127.0.0.1:99999", "port"),
        ("http://127.0.0.1:0", "port"),
        ("http://127.0.0.1:http", "port"),
        ("ftp://127.0.0.1:21", "http:// or https://"),
        ("127.0.0.1:8080", "http:// or https://"),
        ("http:///v2", "no host"),
    ],
)
def test_build_client_rejects_a_bad_endpoint_url_naming_the_setting(url: str, why: str) -> None:
    """A bad endpoint_url is an InvalidRequestError before any call, naming endpoint_url."""
    with pytest.raises(InvalidRequestError, match=f"invalid endpoint_url .*{why}"):
        build_client(endpoint_url=url)


def test_a_bad_endpoint_url_from_the_environment_is_rejected_naming_it(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """AWS_ENDPOINT_URL_DATAZONE=ftp://... is found when the client is built, and named."""
    monkeypatch.setenv("AWS_ENDPOINT_URL_DATAZONE", "ftp://127.0.0.1:21")
    with pytest.raises(InvalidRequestError, match="AWS_ENDPOINT_URL_DATAZONE"):
        build_client()


def test_userinfo_of_a_rejected_endpoint_is_redacted() -> None:
    """The message of a rejected endpoint shows *** where user:password was."""
    with pytest.raises(InvalidRequestError) as info:
        build_client(endpoint_url=f"ftp://admin:{PASSWORD}@127.0.0.1:21")
    assert PASSWORD not in str(info.value)
    assert "ftp://***@127.0.0.1:21" in str(info.value)


@pytest.mark.parametrize(
    ("url", "message"),
    [
        ("http://127.0.0.1:99999", "invalid endpoint_url"),
        (f"ftp://admin:{PASSWORD}@127.0.0.1:21", "invalid endpoint_url"),
    ],
    ids=["port-99999", "ftp"],
)
def test_a_bad_endpoint_url_exits_2_through_the_cli_without_a_call(url: str, message: str) -> None:
    """`poller wait --endpoint-url` with a bad URL: exit 2 at once, credentials not shown."""
    done = cli("--endpoint-url", url, "--timeout", "30")
    assert done.returncode == 2, done.stderr
    assert message in done.stderr
    assert PASSWORD not in done.stdout + done.stderr


def test_a_callers_client_with_a_port_out_of_range_is_a_fatal_invalid_request() -> None:
    """A client built elsewhere with port 99999 fails in botocore's signer: fatal, one call."""
    client = keep(
        botocore.session.get_session().create_client(
            "datazone",
            region_name="us-east-1",
            endpoint_url="http://127.0.0.1:99999",
            config=Config(retries={"total_max_attempts": 1}),
        )
    )
    error = failed_wait(client)
    assert isinstance(error, InvalidRequestError)
    assert "Port out of range" in str(error)
    assert error.result is not None
    assert error.result.polls == 1


def test_a_callers_client_with_an_ftp_endpoint_is_a_fatal_invalid_request() -> None:
    """A client built elsewhere on ftp:// is refused by urllib3: fatal, not retried."""
    client = keep(
        botocore.session.get_session().create_client(
            "datazone",
            region_name="us-east-1",
            endpoint_url="ftp://127.0.0.1:21",
            config=Config(retries={"total_max_attempts": 1}),
        )
    )
    error = failed_wait(client)
    assert isinstance(error, InvalidRequestError)
    assert "scheme ftp" in str(error)
    assert error.result is not None
    assert error.result.polls == 1


@pytest.fixture
def tls_sim() -> Iterator[Simulator]:
    with Simulator(tls=True) as sim:
        sim.add_run(DOMAIN, RUN, RunScript(statuses=["SUCCESS"]))
        yield sim


def test_a_certificate_failure_ends_the_wait_at_once_with_its_message(tls_sim: Simulator) -> None:
    """An untrusted certificate is fatal on the first call, and the message says why."""
    client = keep(build_client(endpoint_url=tls_sim.endpoint_url))
    error = failed_wait(client)
    assert isinstance(error, InvalidRequestError)
    assert "CERTIFICATE_VERIFY_FAILED" in str(error)
    assert tls_sim.endpoint_url in str(error)
    assert "AWS_CA_BUNDLE" in str(error)
    assert error.result is not None
    assert error.result.polls == 1


def test_a_certificate_failure_exits_2_through_the_cli(tls_sim: Simulator) -> None:
    """`poller wait` on an untrusted TLS endpoint: exit 2 after one call, with the reason."""
    done = cli("--endpoint-url", tls_sim.endpoint_url, "--quiet")
    assert done.returncode == 2, done.stderr
    doc = json.loads(done.stdout)
    assert doc["polls"] == 1
    assert "CERTIFICATE_VERIFY_FAILED" in doc["problem"]["message"]


def test_a_trusted_certificate_still_works(
    tls_sim: Simulator, monkeypatch: pytest.MonkeyPatch
) -> None:
    """With AWS_CA_BUNDLE naming the simulator's CA, the same client setup succeeds."""
    monkeypatch.setenv("AWS_CA_BUNDLE", tls_sim.ca_file)
    client = keep(build_client(endpoint_url=tls_sim.endpoint_url))
    assert str(wait_for_job_run(DOMAIN, RUN, client=client, policy=FAST).outcome) == "succeeded"


@pytest.mark.parametrize("status", [301, 307])
def test_a_redirect_is_fatal_and_says_where_it_points_without_credentials(status: int) -> None:
    """A redirect ends the wait at once; the message names the target, userinfo redacted."""
    target = f"https://admin:{PASSWORD}@datazone.elsewhere.example:8443/v2?token={PASSWORD}"
    with RedirectServer(target, status) as server:
        error = failed_wait(keep(server.client()))
    assert isinstance(error, InvalidRequestError)
    message = str(error)
    assert f"HTTP {status}" in message
    assert "https://***@datazone.elsewhere.example:8443/v2" in message
    assert PASSWORD not in message
    assert error.result is not None
    assert error.result.polls == 1


def test_userinfo_in_a_connection_error_message_is_redacted() -> None:
    """botocore quotes the URL it could not reach; poller's message does not keep the password."""
    client = keep(build_client(endpoint_url=f"http://admin:{PASSWORD}@127.0.0.1:{closed_port()}"))
    error = failed_wait(client)
    assert isinstance(error, ServiceUnavailableError)
    assert "http://***@127.0.0.1" in str(error)
    assert PASSWORD not in str(error)


@pytest.mark.parametrize(
    ("text", "shown"),
    [
        ("https://user:pass@host:8443/x?token=1", "https://***@host:8443/x?***"),
        ("http://host/path", "http://host/path"),
        ("see http://u:p@h/a and https://k@h2/b", "see http://***@h/a and https://***@h2/b"),
        ("http://[::1", "http://[::1"),
        ("not a URL at all", "not a URL at all"),
        ("", ""),
    ],
)
def test_redact_hides_userinfo_and_query_and_never_raises(text: str, shown: str) -> None:
    """redact replaces userinfo and query strings by *** in URLs and in text around them."""
    assert redact(text) == shown


# -- one botocore Config (house issue 4) -----------------------------------------


def test_client_config_defaults_turn_botocore_retries_off() -> None:
    """poller's Config: no botocore retries, bounded calls, poller in the user agent."""
    config = client_config()
    assert config.retries == {"total_max_attempts": 1, "mode": "standard"}
    assert (config.connect_timeout, config.read_timeout, config.max_pool_connections) == (
        5.0,
        10.0,
        10,
    )
    assert config.user_agent_extra == "poller"


def test_client_config_honours_a_base_configs_timeouts_but_not_its_retries() -> None:
    """A user's timeouts and user agent win; their retries do not."""
    base = Config(
        read_timeout=99, retries={"max_attempts": 5, "mode": "adaptive"}, user_agent_extra="app"
    )
    config = client_config(connect_timeout=1.0, base=base)
    assert (config.read_timeout, config.connect_timeout) == (99, 1.0)
    assert config.retries == {"total_max_attempts": 1, "mode": "standard"}
    assert config.user_agent_extra == "app poller"
    assert client_config(base=Config(user_agent_extra="poller x")).user_agent_extra == "poller x"


def test_a_client_on_a_retrying_base_config_still_makes_one_call_per_poll() -> None:
    """Built on a base asking for 5 attempts, a 500 reaches poller after exactly one call."""
    with Simulator() as sim:
        sim.add_run(DOMAIN, RUN, RunScript(statuses=[Fault.internal(), "SUCCESS"]))
        client = keep(
            botocore.session.get_session().create_client(
                "datazone",
                region_name="us-east-1",
                endpoint_url=sim.endpoint_url,
                config=client_config(base=Config(retries={"max_attempts": 5})),
            )
        )
        with pytest.raises(ClientError):
            client.get_job_run(domainIdentifier=DOMAIN, identifier=RUN)
        assert sim.calls(RUN) == 1


def test_build_client_uses_client_config() -> None:
    """The clients poller builds carry client_config's settings."""
    client = keep(build_client(endpoint_url="http://127.0.0.1:1", read_timeout=3.0))
    config = client.meta.config
    assert config.retries == {"total_max_attempts": 1, "mode": "standard"}
    assert config.read_timeout == 3.0
    assert "poller" in config.user_agent_extra


def test_fetch_job_run_classifies_a_garbled_answer_as_transient() -> None:
    """One fetch on a garbled server raises a transient CallFault, not the parser's error."""
    with GarbledServer.invalid_utf8() as server, pytest.raises(CallFault) as info:
        fetch_job_run(keep(server.client()), DOMAIN, RUN)
    assert info.value.kind is FaultKind.TRANSIENT
    assert info.value.error_type == "MalformedResponseError"


# -- ListJobRuns at the edge ---------------------------------------------------


def test_list_job_runs_reads_a_jobs_runs_newest_first_page_by_page() -> None:
    """Three runs, pages of two: the two newest and a token, then the oldest and no token."""
    with Simulator() as sim:
        for i in range(3):
            sim.add_run(DOMAIN, f"run-{i}", RunScript(statuses=["SUCCESS"]), job_id="job-1")
            sim.add_run(DOMAIN, f"other-{i}", RunScript(statuses=["SUCCESS"]), job_id="job-2")
        client = sim.client()
        first, token = list_job_runs(client, DOMAIN, "job-1", max_results=2)
        assert token is not None
        rest, last = list_job_runs(client, DOMAIN, "job-1", max_results=2, next_token=token)
    assert [r.id for r in first + rest] == ["run-2", "run-1", "run-0"]
    assert last is None
    assert {r.job_id for r in first + rest} == {"job-1"}


@pytest.mark.parametrize(
    ("fault", "kind"),
    [
        (Fault.throttle(), FaultKind.THROTTLE),
        (Fault.error("AccessDeniedException", 403), FaultKind.DENIED),
        (Fault.internal(), FaultKind.TRANSIENT),
        (Fault.reset(), FaultKind.TRANSIENT),
        (Fault.error("ValidationException", 400), FaultKind.INVALID),
    ],
    ids=["throttled", "denied", "failing", "reset", "invalid"],
)
def test_list_job_runs_raises_every_failure_as_a_call_fault_classified_like_get_job_run(
    fault: Fault, kind: FaultKind
) -> None:
    """No botocore exception from ListJobRuns leaves the edge: a CallFault, classified."""
    with Simulator() as sim:
        sim.add_run(DOMAIN, RUN, RunScript(statuses=["SUCCESS"]), job_id="job-1")
        sim.fail_list_job_runs(DOMAIN, "job-1", fault)
        with pytest.raises(CallFault) as info:
            list_job_runs(sim.client(), DOMAIN, "job-1")
    fault_raised = info.value
    assert fault_raised.kind is kind
    # ...the very fault GetJobRun's classification makes of botocore's exception.
    cause = fault_raised.__cause__
    assert cause is not None
    assert not isinstance(cause, CallFault)
    again = classify(cause)
    assert again is not None
    assert (again.kind, again.error_type, again.message) == (
        kind,
        fault_raised.error_type,
        fault_raised.message,
    )


def test_a_client_without_list_job_runs_is_an_invalid_fault_naming_it() -> None:
    """A client shaped for GetJobRun alone cannot list: an INVALID CallFault, not AttributeError."""

    class GetOnly:
        def get_job_run(self, **kwargs: Any) -> Any:
            raise AssertionError("not called")

    with pytest.raises(CallFault, match=r"GetOnly.*no list_job_runs") as info:
        list_job_runs(GetOnly(), DOMAIN, "job-1")
    assert info.value.kind is FaultKind.INVALID


def test_an_error_the_edge_does_not_know_leaves_list_job_runs_as_itself() -> None:
    """A bug (here a caller's client raising KeyError) is not dressed up as a fault."""

    class Broken:
        def list_job_runs(self, **kwargs: Any) -> Any:
            raise KeyError("bug")

    with pytest.raises(KeyError):
        list_job_runs(Broken(), DOMAIN, "job-1")


def test_a_client_poller_builds_reads_epoch_timestamps_as_utc_at_the_same_instant(
    real_sim: Simulator, monkeypatch: pytest.MonkeyPatch
) -> None:
    """DataZone's epoch seconds become UTC datetimes (botocore's own parser made local ones
    through dateutil, a fifth of a listing's CPU): the same instants, and a user's client,
    left as it is, still reads them botocore's way."""
    monkeypatch.setenv("AWS_ACCESS_KEY_ID", "testing")
    monkeypatch.setenv("AWS_SECRET_ACCESS_KEY", "testing")
    real_sim.add_run(DOMAIN, "r", RunScript(statuses=["SUCCESS"]), job_id="job-1")
    ours = build_client(region_name="us-east-1", endpoint_url=real_sim.endpoint_url)
    theirs = keep(real_sim.client())
    mine = ours.get_job_run(domainIdentifier=DOMAIN, identifier="r")["createdAt"]
    botocores = theirs.get_job_run(domainIdentifier=DOMAIN, identifier="r")["createdAt"]
    assert mine.tzinfo is UTC
    assert botocores.tzinfo is not UTC
    assert mine == botocores
