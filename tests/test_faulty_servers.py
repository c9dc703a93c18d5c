"""The misbehaving servers of poller.testing, met by real botocore clients.

Each test pins what botocore does today with one misbehaviour, exception class
included, so the poller's edge knows what it has to classify.
"""

from __future__ import annotations

import json
import shutil
import socket
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import botocore.config
import botocore.exceptions
import botocore.session
import pytest
from botocore.exceptions import ClientError
from helpers import DOMAIN, keep, make_client

from poller.testing import (
    GarbledServer,
    RedirectServer,
    RunScript,
    SilentServer,
    Simulator,
    TrickleServer,
    _tls,
    job_run_body,
)


def get(client: Any) -> dict[str, Any]:
    out: dict[str, Any] = client.get_job_run(domainIdentifier=DOMAIN, identifier="run-1")
    return out


class Call:
    """One GetJobRun in a background thread, so a test can watch it hang."""

    def __init__(self, client: Any) -> None:
        self.result: dict[str, Any] | None = None
        self.error: BaseException | None = None
        self.thread = threading.Thread(target=self._run, args=(client,), daemon=True)
        self.thread.start()

    def _run(self, client: Any) -> None:
        try:
            self.result = get(client)
        except BaseException as e:  # the test inspects whatever it was
            self.error = e


def timed_stop(server: Any) -> float:
    started = time.monotonic()
    server.stop()
    return time.monotonic() - started


# -- slow and silent -------------------------------------------------------------


def test_trickle_keeps_a_one_second_read_timeout_client_waiting_past_it() -> None:
    """A byte every 0.3 s defeats read_timeout=1: the call still waits after 2.5 s."""
    server = TrickleServer(interval=0.3).start()
    try:
        call = Call(keep(server.client(read_timeout=1)))
        call.thread.join(2.5)
        assert call.thread.is_alive(), call.error
        assert server.requests == [f"GET /v2/domains/{DOMAIN}/jobRuns/run-1 HTTP/1.1"]
        assert timed_stop(server) < 1.0
    finally:
        server.stop()
    call.thread.join(5)  # a hang guard, not a timing claim
    assert not call.thread.is_alive()
    # Cut short of its Content-Length, the body is taken as it is: no exception,
    # but a truncated JSON parses to an answer without a status.
    assert call.error is None
    assert call.result is not None
    assert call.result["ResponseMetadata"]["HTTPStatusCode"] == 200
    assert "status" not in call.result


def test_trickle_with_a_body_completes_after_its_last_byte() -> None:
    """A given body is trickled with its own length, so the answer does complete."""
    with TrickleServer(interval=0.05, body=b'{"status": "IN_PROGRESS"}') as server:
        assert get(keep(server.client(read_timeout=1)))["status"] == "IN_PROGRESS"


def test_silent_server_never_answers_so_read_timeout_fires() -> None:
    """The request is read but never answered: botocore raises ReadTimeoutError."""
    with SilentServer() as server:
        client = keep(server.client(read_timeout=0.3))
        with pytest.raises(botocore.exceptions.ReadTimeoutError):
            get(client)
        assert len(server.requests) == 1


def test_silent_server_keeps_a_client_without_read_timeout_waiting() -> None:
    """With a long read_timeout the call is still waiting after 1 s, until stop()."""
    server = SilentServer().start()
    try:
        call = Call(keep(server.client(read_timeout=60)))
        call.thread.join(1.0)
        assert call.thread.is_alive(), call.error
        assert timed_stop(server) < 1.0
    finally:
        server.stop()
    call.thread.join(5)
    assert isinstance(call.error, botocore.exceptions.ConnectionClosedError)


def test_stop_is_prompt_with_many_connections_open() -> None:
    """stop() returns in under a second with trickled and silent connections held open."""
    trickle, silent = TrickleServer(interval=0.2).start(), SilentServer().start()
    calls = [Call(keep(s.client(read_timeout=60))) for s in (trickle, silent, trickle, silent)]
    time.sleep(0.3)
    assert all(c.thread.is_alive() for c in calls)
    assert timed_stop(trickle) < 1.0
    assert timed_stop(silent) < 1.0
    for c in calls:
        c.thread.join(5)
        assert not c.thread.is_alive()


# -- garbled bodies --------------------------------------------------------------


def test_invalid_utf8_body_raises_unicode_decode_error() -> None:
    """A body that is not UTF-8 escapes botocore's parser as a bare UnicodeDecodeError."""
    with GarbledServer.invalid_utf8() as server, pytest.raises(UnicodeDecodeError):
        get(keep(server.client()))


def test_bad_created_at_raises_value_error() -> None:
    """createdAt "yesterday" fails botocore's timestamp parser with a bare ValueError."""
    expected = pytest.raises(ValueError, match='Invalid timestamp "yesterday"')
    with GarbledServer.bad_timestamp() as server, expected as excinfo:
        get(keep(server.client()))
    assert type(excinfo.value) is ValueError  # not a botocore exception


def test_bad_total_queries_raises_value_error() -> None:
    """totalQueriesProcessed "ten" fails botocore's int() with a bare ValueError."""
    expected = pytest.raises(ValueError, match="invalid literal for int")
    with GarbledServer.bad_integer() as server, expected as excinfo:
        get(keep(server.client()))
    assert type(excinfo.value) is ValueError


def test_html_page_with_200_parses_to_an_empty_answer() -> None:
    """A 200 HTML page is no error to botocore: the response has no status at all."""
    with GarbledServer.html() as server:
        out = get(keep(server.client()))
    assert out["ResponseMetadata"]["HTTPStatusCode"] == 200
    assert set(out) == {"ResponseMetadata"}


def test_html_page_with_503_is_a_client_error_coded_503() -> None:
    """A 503 HTML page has no x-amzn-ErrorType: ClientError with the status as code."""
    with GarbledServer.html(503) as server, pytest.raises(ClientError) as excinfo:
        get(keep(server.client()))
    assert excinfo.value.response["Error"]["Code"] == "503"
    assert "Please sign in" in excinfo.value.response["Error"]["Message"]


def test_garbled_server_sends_exactly_its_bytes_on_a_kept_alive_connection() -> None:
    """Every request gets the same bytes, over one pooled connection."""
    body = job_run_body(status="IN_PROGRESS")
    with GarbledServer(json.dumps(body).encode()) as server:
        client = keep(server.client())
        assert [get(client)["status"] for _ in range(3)] == ["IN_PROGRESS"] * 3
        assert len(server.requests) == 3


def test_job_run_body_has_the_simulator_shape_and_dotted_overrides() -> None:
    """job_run_body is the simulator's GetJobRun JSON; dotted keys reach nested members."""
    body = job_run_body(DOMAIN, "run-9", "FAILED", **{"details.lineageRunDetails.x": 1})
    assert body["id"] == "run-9"
    assert body["status"] == "FAILED"
    assert body["endTime"] == body["createdAt"] + 60
    assert body["details"]["lineageRunDetails"]["x"] == 1
    assert body["details"]["lineageRunDetails"]["sqlQueryRunDetails"]["totalQueriesProcessed"]
    assert "endTime" not in job_run_body(status="IN_PROGRESS")


# -- redirects -------------------------------------------------------------------


def test_redirect_is_not_followed_and_is_a_client_error_coded_301() -> None:
    """botocore does not follow a 301 for DataZone: ClientError with code "301"."""
    with Simulator() as sim, RedirectServer(sim.endpoint_url) as server:
        sim.add_run(DOMAIN, "run-1", RunScript(statuses=["SUCCESS"]))
        with pytest.raises(ClientError) as excinfo:
            get(keep(server.client()))
        assert sim.requests == []  # the target never saw the request
        target = sim.endpoint_url
    assert excinfo.value.response["Error"]["Code"] == "301"
    assert excinfo.value.response["ResponseMetadata"]["HTTPHeaders"]["location"] == target


def test_temporary_redirect_is_a_client_error_coded_307() -> None:
    """A 307 is no different: ClientError with code "307"."""
    with RedirectServer("http://127.0.0.1:1/", 307) as server, pytest.raises(ClientError) as e:
        get(keep(server.client()))
    assert e.value.response["Error"]["Code"] == "307"


# -- TLS -------------------------------------------------------------------------


@pytest.fixture
def tls_sim() -> Iterator[Simulator]:
    with Simulator(tls=True) as sim:
        sim.add_run(DOMAIN, "run-1", RunScript(statuses=["SUCCESS"]))
        yield sim


def test_tls_simulator_fails_default_verification_with_ssl_error(tls_sim: Simulator) -> None:
    """A self-signed certificate fails botocore's default verification: SSLError."""
    assert tls_sim.endpoint_url.startswith("https://127.0.0.1:")
    with pytest.raises(botocore.exceptions.SSLError, match="CERTIFICATE_VERIFY_FAILED"):
        get(keep(tls_sim.client(verify=None)))
    assert tls_sim.requests == []


def test_tls_simulator_answers_a_client_trusting_its_ca_file(tls_sim: Simulator) -> None:
    """verify=sim.ca_file trusts the certificate (and Simulator.client() does it by default)."""
    assert get(keep(tls_sim.client(verify=tls_sim.ca_file)))["status"] == "SUCCESS"
    assert get(keep(tls_sim.client()))["status"] == "SUCCESS"
    assert [r.status_code for r in tls_sim.requests] == [200, 200]


def test_tls_plain_http_client_is_dropped_without_an_answer(tls_sim: Simulator) -> None:
    """Plain HTTP to the TLS port fails the handshake: botocore sees the connection closed."""
    plain = tls_sim.endpoint_url.replace("https://", "http://")
    client = keep(make_client(plain))
    with pytest.raises(botocore.exceptions.ConnectionClosedError):
        get(client)


def test_tls_stop_is_prompt_with_a_stalled_handshake(tls_sim: Simulator) -> None:
    """A TCP client that never starts the handshake does not hold stop() up."""
    with socket.create_connection(tls_sim.address, timeout=5) as raw:
        time.sleep(0.1)  # the handler thread is now waiting for a ClientHello
        assert timed_stop(tls_sim) < 1.0
        assert raw.recv(1) == b""  # the server side shut the connection down


def test_tls_ca_file_exists_only_while_running() -> None:
    """ca_file names a PEM certificate while running, and is gone after stop()."""
    sim = Simulator(tls=True)
    with pytest.raises(RuntimeError):
        _ = sim.ca_file
    with sim:
        path = Path(sim.ca_file)
        assert path.read_text().startswith("-----BEGIN CERTIFICATE-----")
    assert not path.exists()
    with Simulator() as plain, pytest.raises(RuntimeError):
        _ = plain.ca_file


@pytest.mark.skipif(shutil.which("openssl") is None, reason="needs the openssl command")
def test_tls_falls_back_to_the_openssl_command(monkeypatch: pytest.MonkeyPatch) -> None:
    """Without the cryptography package the certificate comes from openssl, and works."""

    def no_cryptography(*_: Any) -> None:
        raise ImportError("cryptography")

    monkeypatch.setattr(_tls, "_with_cryptography", no_cryptography)
    with Simulator(tls=True) as sim:
        sim.add_run(DOMAIN, "run-1", RunScript(statuses=["SUCCESS"]))
        assert get(keep(sim.client()))["status"] == "SUCCESS"
