"""A local HTTP server that answers DataZone's GetJobRun and ListJobRuns like the real service.

Every answer is decided in `Simulator._answer`, under one lock, at the moment a
request arrives; the request handler only reads the request, sleeps when the
script asks for latency, and writes the answer. Sleeps happen outside the lock,
so a slow run never holds up the others.
"""

from __future__ import annotations

import base64
import binascii
import contextlib
import datetime as dt
import json
import os
import random
import re
import shutil
import socket
import ssl
import sys
import tempfile
import threading
import time
import uuid
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any, Self, TextIO, cast
from urllib.parse import parse_qs, unquote, urlsplit

from poller.testing._client import LocalEndpoint
from poller.testing._script import (
    ERROR_MESSAGE_STATUSES,
    TERMINAL_STATUSES,
    Fault,
    Lineage,
    RunScript,
)
from poller.testing._tls import make_self_signed

__all__ = ["RequestRecord", "Simulator"]

_DOMAIN_RE = re.compile(r"dzd[-_][a-zA-Z0-9_-]{1,36}")
_ID_RE = re.compile(r"[a-zA-Z0-9_-]{1,36}")
# Only the shape of a SigV4 Authorization header is checked, never the signature.
_CREDENTIAL_RE = re.compile(r"Credential=[^/,\s]+/\d{8}/[^/,\s]+/([^/,\s]+)/aws4_request")
# The access key ID is the first field of the credential scope; the signature is never read.
_ACCESS_KEY_RE = re.compile(r"Credential=([^/,\s]+)/")
_DEFAULT_PAGE_SIZE = 50
_MAX_PAGE_SIZE = 50
# How often serve_forever looks for a shutdown request: it bounds how long stop() takes.
_POLL_INTERVAL = 0.02


@dataclass(frozen=True, slots=True)
class RequestRecord:
    """One request the simulator saw, in arrival order.

    ``status_code`` is None when the connection was closed without an answer
    (`Fault.reset`). ``error_type`` is the ``x-amzn-ErrorType`` sent, if any.
    ``answered_status`` is the job-run status in the answer, if any.
    ``fault`` says what made the answer a fault: a `Fault` kind ("throttle",
    "http", "reset", ...), "throttle_rate" for a random throttle, "max_rps"
    for the server-wide rate limit, "storm" (`Simulator.storm`) or "background"
    (`Simulator.throttle_others`); None otherwise. ``method`` and ``path``
    are the request line's; ``access_key_id`` is the key ID of the SigV4
    ``Authorization`` header (the signature and secret are never kept).
    """

    t: float
    operation: str
    domain_id: str | None
    run_id: str | None
    status_code: int | None
    error_type: str | None
    answered_status: str | None
    job_id: str | None = None
    fault: str | None = None
    method: str | None = None
    path: str | None = None
    access_key_id: str | None = None

    def to_log_json(self, wall: float) -> dict[str, Any]:
        """The request-log line for this record, answered at epoch seconds ``wall``.

        ``answer`` is the run status answered, else the AWS error code, else
        None (an HTTP error page, a malformed body, a reset: ``fault`` says which).
        """
        time_ = dt.datetime.fromtimestamp(wall, dt.UTC).isoformat(timespec="milliseconds")
        return {
            "time": time_.replace("+00:00", "Z"),
            "method": self.method,
            "path": self.path,
            "operation": None if self.operation == "Unknown" else self.operation,
            "access_key_id": self.access_key_id,
            "status": self.status_code,
            "answer": self.answered_status or self.error_type,
            "fault": self.fault,
        }


@dataclass(slots=True)
class RunState:
    domain_id: str
    run_id: str
    job_id: str
    job_type: str
    run_mode: str
    created_by: str
    script: RunScript
    added: float
    created_at: float
    visible_at: float
    seq: int
    cursor: int = 0
    last_status: str | None = None
    start_wall: float | None = None
    end_wall: float | None = None
    end_clock: float | None = None


@dataclass(frozen=True, slots=True)
class _Reply:
    status: int | None  # None: close the connection without answering
    body: bytes = b""
    content_type: str = "application/json"
    error_type: str | None = None
    delay: float = 0.0
    answered_status: str | None = None
    fault: str | None = None


@dataclass(frozen=True, slots=True)
class _Route:
    operation: str
    domain_id: str | None = None
    ident: str | None = None
    query: Mapping[str, list[str]] = field(default_factory=dict)


def _aws_error(status: int, code: str, message: str, *, fault: str | None = None) -> _Reply:
    body = json.dumps({"message": message}).encode()
    return _Reply(status, body, error_type=code, fault=fault)


def _fault_reply(f: Fault) -> _Reply:
    if f.kind == "reset":
        return _Reply(None, fault=f.kind)
    if f.kind in ("http", "malformed"):
        # surrogateescape gives back the raw bytes of Fault.malformed(b"...").
        body = f.body.encode("utf-8", "surrogateescape")
        return _Reply(f.status, body, f.content_type, fault=f.kind)
    assert f.code is not None  # throttle, internal and error always carry one
    return _aws_error(f.status, f.code, f.message, fault=f.kind)


def _validation_error(member: str, value: str, pattern: str) -> _Reply:
    return _aws_error(
        400,
        "ValidationException",
        f"1 validation error detected: Value '{value}' at '{member}' failed to satisfy "
        f"constraint: Member must satisfy regular expression pattern: {pattern}",
    )


def _route(method: str, raw_path: str) -> _Route:
    parts = urlsplit(raw_path)
    segs = [unquote(s) for s in parts.path.split("/")]
    if method == "GET" and len(segs) >= 5 and segs[:3] == ["", "v2", "domains"]:
        query = parse_qs(parts.query, keep_blank_values=True)
        if len(segs) == 6 and segs[4] == "jobRuns":
            return _Route("GetJobRun", segs[3], segs[5], query)
        if len(segs) == 7 and segs[4] == "jobs" and segs[6] == "runs":
            return _Route("ListJobRuns", segs[3], segs[5], query)
    return _Route("Unknown")


def _check_auth(authorization: str | None) -> _Reply | None:
    """Reject what the real endpoint rejects before any service code runs: unsigned requests."""
    if not authorization or not authorization.startswith("AWS4-HMAC-SHA256"):
        return _aws_error(
            403, "MissingAuthenticationTokenException", "Missing Authentication Token"
        )
    m = _CREDENTIAL_RE.search(authorization)
    if m is None:
        return _aws_error(
            403,
            "IncompleteSignatureException",
            "Authorization header requires a 'Credential' parameter.",
        )
    if m.group(1) != "datazone":
        return _aws_error(
            403,
            "InvalidSignatureException",
            "Credential should be scoped to correct service: 'datazone'.",
        )
    return None


class Simulator(LocalEndpoint):
    """A local DataZone endpoint for GetJobRun and ListJobRuns, scripted per run.

    ``clock`` (monotonic seconds) drives timelines, ``visible_after`` and the
    ``max_rps`` token bucket; inject a fake one to move time in tests. ``wall``
    gives the epoch seconds reported as createdAt/startTime/endTime. ``seed``
    seeds the one random generator, used for ``throttle_rate``. ``max_rps``
    limits all requests together (token bucket holding one second of requests,
    at least one): a request over it gets 429 ThrottlingException.

    Requests are checked in this order: SigV4 ``Authorization`` header present
    and scoped to ``datazone`` (else 403), ``max_rps`` (429), ID patterns (400
    ValidationException), then the run's script.

    Run timestamps: ``createdAt`` is the wall time of `add_run` (or its
    ``created_at``). With a ``statuses`` script, ``startTime`` is the wall time
    of the first answer with a status other than SCHEDULED and ``endTime`` that
    of the first terminal answer. With a ``timeline``, both are ``createdAt``
    plus the offset of the first such entry, once the clock has reached it.

    ListJobRuns lists the visible runs registered for that domain and job, with
    the clock's status for a timeline. A listing is a look like a GetJobRun:
    a statuses script's run is listed with the script's next status, which it
    takes (a fault item ahead is left for the GetJobRun it scripts; the run is
    listed with its last status then, as it is past the script's end). It
    sorts by createdAt, newest first unless ``sortOrder=ASCENDING`` (DataZone
    does not document a default), filters on ``status``, pages with an opaque
    ``nextToken`` (``maxResults`` 1..50, default 50), and answers an empty list
    for a job it does not know, rather than ResourceNotFoundException.
    `add_history` seeds a job's finished past runs of given durations;
    `fail_list_job_runs` answers a job's next ListJobRuns calls with faults;
    `slow_list_job_runs` makes a job's listings answer late, and
    `add_list_item` slips a foreign item into a job's listing (a server that
    misbehaves).

    ``log_file``: append one JSON line per request to this file, flushed at
    once so it can be tailed: ``time`` (ISO-8601 UTC, by ``wall``), ``method``,
    ``path``, ``operation`` (GetJobRun, ListJobRuns or null), ``access_key_id``
    (from the SigV4 header; never the signature), ``status`` (HTTP, null for a
    dropped connection), ``answer`` (run status or error code) and ``fault``.
    See `RequestRecord.to_log_json`. The file is opened by `start`.

    ``tls=True`` serves HTTPS with a self-signed certificate made by `start`
    (valid for 127.0.0.1 and localhost) and removed by `stop`. A client with
    botocore's default verification then fails with SSLError; one built with
    ``verify=sim.ca_file`` trusts it. `client` does that by default.
    """

    _what = "simulator"

    def __init__(
        self,
        *,
        clock: Callable[[], float] = time.monotonic,
        wall: Callable[[], float] = time.time,
        seed: int = 0,
        max_rps: float | None = None,
        host: str = "127.0.0.1",
        port: int = 0,
        log_file: str | os.PathLike[str] | None = None,
        tls: bool = False,
    ) -> None:
        if max_rps is not None and max_rps <= 0:
            raise ValueError("max_rps must be positive or None")
        self._clock = clock
        self._wall = wall
        self._rng = random.Random(seed)
        self._max_rps = max_rps
        self._bucket_capacity = max(max_rps or 0.0, 1.0)
        self._bucket_tokens = self._bucket_capacity
        self._bucket_at: float | None = None
        self._host = host
        self._port = port
        self._lock = threading.Lock()
        self._runs: dict[tuple[str, str], RunState] = {}
        self._list_faults: dict[tuple[str, str], list[Fault]] = {}
        self._list_delays: dict[tuple[str, str], float] = {}
        self._list_extras: dict[tuple[str, str], list[dict[str, Any]]] = {}
        self._storms: list[tuple[float, float]] = []
        self._background = 0.0
        self._page_sizes: dict[tuple[str, str], int] = {}
        self._list_lags: dict[tuple[str, str], float] = {}
        self._read_lags: dict[tuple[str, str], float] = {}
        self._seq = 0
        self._records: list[RequestRecord] = []
        self._server: _Server | None = None
        self._thread: threading.Thread | None = None
        self._stopping = threading.Event()
        self._connections: set[socket.socket] = set()
        self._log_path = log_file
        self._log: TextIO | None = None  # open while running
        self._tls = tls
        self._tls_dir: Path | None = None  # holds the certificate while running

    # -- lifecycle ---------------------------------------------------------

    def start(self) -> Self:
        """Bind and serve in a daemon thread; a no-op if already running."""
        if self._server is not None:
            return self
        self._stopping.clear()
        server = _Server((self._host, self._port), _Handler)
        server.simulator = self
        try:
            if self._tls:
                server.tls = self._make_tls_context()
            if self._log_path is not None:
                self._log = open(self._log_path, "a", encoding="utf-8")  # noqa: SIM115
        except BaseException:
            server.server_close()
            self._remove_tls_dir()
            raise
        self._server = server
        self._thread = threading.Thread(
            target=server.serve_forever,
            kwargs={"poll_interval": _POLL_INTERVAL},
            name=f"poller-simulator-{server.server_address[1]}",
            daemon=True,
        )
        self._thread.start()
        return self

    def stop(self) -> None:
        """Stop serving and drop open keep-alive connections; safe to call twice."""
        server, thread = self._server, self._thread
        if server is None:
            return
        self._stopping.set()  # wakes handlers sleeping on latency or a delay fault
        server.shutdown()
        server.server_close()
        with self._lock:
            connections = list(self._connections)
        for conn in connections:
            with contextlib.suppress(OSError):  # already closed by the peer
                conn.shutdown(socket.SHUT_RDWR)
        if thread is not None:
            thread.join()
        with self._lock:
            log, self._log = self._log, None
        if log is not None:
            log.close()
        self._remove_tls_dir()
        self._server = self._thread = None

    def _make_tls_context(self) -> ssl.SSLContext:
        self._tls_dir = Path(tempfile.mkdtemp(prefix="poller-simulator-tls-"))
        cert, key = make_self_signed(self._tls_dir)
        context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
        context.load_cert_chain(cert, key)
        return context

    def _remove_tls_dir(self) -> None:
        if self._tls_dir is not None:
            shutil.rmtree(self._tls_dir, ignore_errors=True)
            self._tls_dir = None

    def client(self, **kwargs: Any) -> Any:
        """A real botocore DataZone client for this simulator, botocore retries off.

        Region ``us-east-1``, keys ``testing``/``testing``, and
        ``Config(retries={"total_max_attempts": 1, "mode": "standard"})``.
        Keyword arguments override: ``create_client`` parameters such as
        ``verify`` or ``aws_access_key_id`` directly, anything else (such as
        ``read_timeout=1``) as a `botocore.config.Config` option. The caller
        closes it (``client.close()``) to drop its pooled connections. With
        ``tls=True`` it trusts `ca_file` unless given ``verify``.
        """
        if self._tls:
            kwargs.setdefault("verify", self.ca_file)
        return super().client(**kwargs)

    def environ(self) -> dict[str, str]:
        """The environment of a client built elsewhere (``poller wait``, boto3) for this simulator.

        The endpoint, and what every AWS client needs besides: a region and
        keys, dummy ones (the simulator reads no signature). With ``tls=True``
        add ``AWS_CA_BUNDLE=sim.ca_file``.
        """
        return {
            "AWS_ENDPOINT_URL_DATAZONE": self.endpoint_url,
            "AWS_REGION": "us-east-1",
            "AWS_ACCESS_KEY_ID": "testing",
            "AWS_SECRET_ACCESS_KEY": "testing",
        }

    def _bound(self) -> tuple[Any, ...] | None:
        return None if self._server is None else tuple(self._server.server_address)

    @property
    def _scheme(self) -> str:
        return "https" if self._tls else "http"

    @property
    def ca_file(self) -> str:
        """With ``tls=True``, the PEM certificate to trust: ``verify=sim.ca_file``.

        It exists while the simulator runs; a new one is made at each `start`.
        """
        if self._tls_dir is None:
            raise RuntimeError("no certificate: the simulator runs without tls or is stopped")
        return str(self._tls_dir / "cert.pem")

    # -- scripting ---------------------------------------------------------

    def add_run(
        self,
        domain_id: str,
        run_id: str,
        script: RunScript,
        *,
        job_id: str = "job-1",
        job_type: str = "LINEAGE",
        run_mode: str = "ON_DEMAND",
        created_by: str = "user",
        visible_after: float = 0.0,
        created_at: float | None = None,
    ) -> None:
        """Register a run (or replace one with the same ids, starting its script afresh).

        For ``visible_after`` seconds by the clock, GetJobRun answers 404
        ResourceNotFoundException and ListJobRuns leaves the run out, as for a
        run DataZone has just created.
        """
        if not isinstance(script, RunScript):
            raise TypeError(f"script must be a RunScript, got {type(script).__name__}")
        if visible_after < 0:
            raise ValueError("visible_after cannot be negative")
        now = self._clock()
        with self._lock:
            self._seq += 1
            self._runs[(domain_id, run_id)] = RunState(
                domain_id=domain_id,
                run_id=run_id,
                job_id=job_id,
                job_type=job_type,
                run_mode=run_mode,
                created_by=created_by,
                script=script,
                added=now,
                created_at=self._wall() if created_at is None else created_at,
                visible_at=now + visible_after,
                seq=self._seq,
            )

    def add_history(
        self,
        domain_id: str,
        job_id: str,
        durations: Sequence[float],
        *,
        status: str = "SUCCESS",
        gap: float = 60.0,
        job_type: str = "LINEAGE",
    ) -> list[str]:
        """Register finished past runs of a job, one per duration (seconds, start to end).

        The runs end before now by the wall clock, newest first in the order
        given, ``gap`` seconds apart; each is created and started at once and
        ends with ``status``. ListJobRuns lists them as any other run, so a
        client can learn the job's durations from them. Returns their run IDs
        (``<job_id>-past-<n>``, cut to the 36 characters an ID may have).
        """
        if any(not (d >= 0) for d in durations):
            raise ValueError("durations must be >= 0 seconds")
        now, wall = self._clock(), self._wall()
        ids = []
        end = wall - gap
        with self._lock:
            for n, duration in enumerate(durations):
                suffix = f"-past-{n}"
                run_id = job_id[: 36 - len(suffix)] + suffix
                start = end - duration
                self._seq += 1
                self._runs[(domain_id, run_id)] = RunState(
                    domain_id=domain_id,
                    run_id=run_id,
                    job_id=job_id,
                    job_type=job_type,
                    run_mode="ON_DEMAND",
                    created_by="user",
                    script=RunScript(statuses=[status]),
                    added=now,
                    created_at=start,
                    visible_at=now,
                    seq=self._seq,
                    last_status=status,
                    start_wall=start,
                    end_wall=end,
                )
                ids.append(run_id)
                end = start - gap
        return ids

    def add_scheduled_runs(
        self,
        domain_id: str,
        job_id: str,
        runs: Sequence[tuple[float, float, str]],
        *,
        job_type: str = "LINEAGE",
        lineage: Lineage | None = None,
        run_mode: str = "SCHEDULED",
    ) -> list[str]:
        """Register the runs of a job that runs on a schedule: ``(start, duration, status)`` each.

        A run appears ``start`` seconds from now by the clock (negative: in the
        past), created and started then (``createdAt`` = ``startTime``), is
        IN_PROGRESS for ``duration`` seconds and then ends with ``status``:
        GetJobRun and ListJobRuns show it as it goes, with no call needed to
        move it on. Before ``start`` it does not exist (404, not listed). Returns
        the run IDs (``<job_id>-s<n>``, cut to 36 characters), in the order given.
        """
        if any(not (d >= 0) for _, d, _ in runs):
            raise ValueError("durations must be >= 0 seconds")
        if any(status not in TERMINAL_STATUSES for _, _, status in runs):
            raise ValueError(f"every run must end with one of {sorted(TERMINAL_STATUSES)}")
        now, wall = self._clock(), self._wall()
        ids = []
        with self._lock:
            for start, duration, status in runs:
                self._seq += 1
                suffix = f"-s{self._seq}"
                run_id = job_id[: 36 - len(suffix)] + suffix
                script = RunScript(
                    timeline=[(0.0, "IN_PROGRESS"), (float(duration), status)], lineage=lineage
                )
                self._runs[(domain_id, run_id)] = RunState(
                    domain_id=domain_id,
                    run_id=run_id,
                    job_id=job_id,
                    job_type=job_type,
                    run_mode=run_mode,
                    created_by="scheduler",
                    script=script,
                    added=now + start,
                    created_at=wall + start,
                    visible_at=now + start,
                    seq=self._seq,
                )
                ids.append(run_id)
        return ids

    def fail_list_job_runs(self, domain_id: str, job_id: str, *faults: Fault) -> None:
        """Answer the job's next ListJobRuns calls with these faults, one per call, in order.

        After them, ListJobRuns answers normally again. Faults that answer a
        status (``delay``, ``override``) have no meaning for a list.
        """
        for f in faults:
            if not isinstance(f, Fault) or f.kind in ("delay", "override"):
                raise ValueError(f"ListJobRuns can be failed with an error fault, not {f!r}")
        with self._lock:
            self._list_faults.setdefault((domain_id, job_id), []).extend(faults)

    def slow_list_job_runs(self, domain_id: str, job_id: str, seconds: float) -> None:
        """Answer every later ListJobRuns of the job ``seconds`` late (its runs as of the call)."""
        with self._lock:
            self._list_delays[(domain_id, job_id)] = seconds

    def storm(self, start: float, end: float) -> None:
        """Throttle every request that arrives while the clock is in ``[start, end)``.

        A throttle storm: the account's limit was spent by others for a while,
        then the server is healthy again. Answered before ``max_rps``; recorded
        with fault "storm".
        """
        if not end > start:
            raise ValueError("a storm must end after it starts")
        with self._lock:
            self._storms.append((start, end))

    def throttle_others(self, rate: float) -> None:
        """Throttle this share of every later request at random (seeded), whoever asks.

        What other clients of the account do to poller's calls: a steady
        share of them throttled, however few poller makes. Recorded with fault
        "background".
        """
        if not 0.0 <= rate <= 1.0:
            raise ValueError("'rate' must be between 0 and 1")
        with self._lock:
            self._background = rate

    def add_list_item(self, domain_id: str, job_id: str, item: Mapping[str, Any]) -> None:
        """Put ``item`` (a JobRunSummary, maybe of another run, job or domain) first in every
        later first page of the job's ListJobRuns: a server that lists what it should not."""
        with self._lock:
            self._list_extras.setdefault((domain_id, job_id), []).append(dict(item))

    def page_list_job_runs(self, domain_id: str, job_id: str, size: int) -> None:
        """Answer the job's later ListJobRuns with at most ``size`` runs a page, whatever
        ``maxResults`` asks (it is a maximum): a listing that takes several pages."""
        if not 1 <= size <= _MAX_PAGE_SIZE:
            raise ValueError(f"size must be between 1 and {_MAX_PAGE_SIZE}")
        with self._lock:
            self._page_sizes[(domain_id, job_id)] = size

    def lag_run(
        self, domain_id: str, run_id: str, *, listing: float = 0.0, reading: float = 0.0
    ) -> None:
        """Show a timeline run as it was ``listing`` seconds ago in ListJobRuns and ``reading``
        seconds ago in GetJobRun: a service whose two views are eventually consistent.

        A run that ended at t is listed running until t + ``listing``, then finished with
        its true ``endTime`` (a late end); with ``reading`` > 0, GetJobRun says it is
        running after a listing shows it finished (a listing that runs ahead).
        """
        if listing < 0 or reading < 0:
            raise ValueError("a lag cannot be negative")
        with self._lock:
            self._list_lags[(domain_id, run_id)] = listing
            self._read_lags[(domain_id, run_id)] = reading

    def load_scenario(self, scenario: Mapping[str, Any]) -> None:
        """Register the runs of a scenario: ``{"runs": [{"domain_id": ..., "run_id": ..., ...}]}``.

        Each run takes `add_run`'s keyword names (``job_id``, ``visible_after``,
        ...) next to the `RunScript.from_dict` keys. Raises ValueError, naming
        the run, on anything it cannot use; nothing is registered then.
        """
        if not isinstance(scenario, Mapping) or not isinstance(scenario.get("runs"), list):
            raise ValueError('a scenario must be an object with a "runs" list')
        unknown = sorted(set(scenario) - {"runs"})
        if unknown:
            raise ValueError(f"unknown key(s) in scenario: {', '.join(unknown)}")
        strings = ("job_id", "job_type", "run_mode", "created_by")
        numbers = ("visible_after", "created_at")
        parsed: list[tuple[str, str, RunScript, dict[str, Any]]] = []
        for i, run in enumerate(scenario["runs"]):
            where = f"runs[{i}]"
            try:
                if not isinstance(run, Mapping):
                    raise ValueError("must be an object")
                domain_id, run_id = run.get("domain_id"), run.get("run_id")
                if not isinstance(domain_id, str) or not isinstance(run_id, str):
                    raise ValueError("needs string 'domain_id' and 'run_id'")
                kwargs: dict[str, Any] = {}
                for key in strings:
                    if key in run:
                        if not isinstance(run[key], str):
                            raise ValueError(f"{key!r} must be a string")
                        kwargs[key] = run[key]
                for key in numbers:
                    if key in run:
                        value = run[key]
                        if isinstance(value, bool) or not isinstance(value, int | float):
                            raise ValueError(f"{key!r} must be a number")
                        kwargs[key] = float(value)
                own = {"domain_id", "run_id", *strings, *numbers}
                script = RunScript.from_dict({k: v for k, v in run.items() if k not in own})
            except ValueError as e:
                named = run.get("run_id") if isinstance(run, Mapping) else None
                who = f"{where} ({named})" if isinstance(named, str) else where
                raise ValueError(f"{who}: {e}") from None
            parsed.append((domain_id, run_id, script, kwargs))
        for domain_id, run_id, script, kwargs in parsed:
            self.add_run(domain_id, run_id, script, **kwargs)

    # -- observation -------------------------------------------------------

    @property
    def requests(self) -> list[RequestRecord]:
        """Every request seen so far, in arrival order (a copy)."""
        with self._lock:
            return list(self._records)

    def calls(self, run_id: str, *, domain_id: str | None = None) -> int:
        """How many GetJobRun requests named this run, faulted and rejected ones included."""
        with self._lock:
            return sum(
                1
                for r in self._records
                if r.operation == "GetJobRun"
                and r.run_id == run_id
                and (domain_id is None or r.domain_id == domain_id)
            )

    def end_time(self, run_id: str, *, domain_id: str | None = None) -> float | None:
        """The clock time at which the run became terminal, or None if it has not yet.

        For a timeline it is the time of the first terminal entry (exact, whether
        polled or not); for a statuses script, the first call answered with a
        terminal status.
        """
        now = self._clock()
        with self._lock:
            found = [
                r
                for (d, rid), r in self._runs.items()
                if rid == run_id and (domain_id is None or d == domain_id)
            ]
            if not found:
                raise KeyError(f"no run {run_id!r} was added")
            if len(found) > 1:
                raise ValueError(f"run {run_id!r} exists in several domains; pass domain_id")
            run = found[0]
            if run.script.timeline is not None:
                _, _, end_offset = _timeline_state(run.script.timeline, now - run.added)
                return None if end_offset is None else run.added + end_offset
            return run.end_clock

    # -- the service -------------------------------------------------------

    def _answer(self, method: str, raw_path: str, authorization: str | None) -> _Reply:
        """Decide the answer to one request, record it and log it."""
        route = _route(method, raw_path)
        now, wall = self._clock(), self._wall()
        key = _ACCESS_KEY_RE.search(authorization or "")
        with self._lock:
            reply = self._decide(route, authorization, now, wall)
            run_id = route.ident if route.operation == "GetJobRun" else None
            job_id = route.ident if route.operation == "ListJobRuns" else None
            record = RequestRecord(
                t=now,
                operation=route.operation,
                domain_id=route.domain_id,
                run_id=run_id,
                status_code=reply.status,
                error_type=reply.error_type,
                answered_status=reply.answered_status,
                job_id=job_id,
                fault=reply.fault,
                method=method,
                path=raw_path,
                access_key_id=None if key is None else key.group(1),
            )
            self._records.append(record)
            if self._log is not None:
                with contextlib.suppress(OSError):  # a full disk must not break the answers
                    self._log.write(json.dumps(record.to_log_json(wall)) + "\n")
                    self._log.flush()
        return reply

    def _decide(self, route: _Route, authorization: str | None, now: float, wall: float) -> _Reply:
        rejected = _check_auth(authorization)
        if rejected is not None:
            return rejected
        if any(start <= now < end for start, end in self._storms):
            return _aws_error(429, "ThrottlingException", "Rate exceeded", fault="storm")
        if self._background > 0 and self._rng.random() < self._background:
            return _aws_error(429, "ThrottlingException", "Rate exceeded", fault="background")
        if not self._take_token(now):
            return _aws_error(429, "ThrottlingException", "Rate exceeded", fault="max_rps")
        if route.operation == "Unknown":
            return _aws_error(404, "UnknownOperationException", "Unknown operation")
        assert route.domain_id is not None
        assert route.ident is not None
        if not _DOMAIN_RE.fullmatch(route.domain_id):
            return _validation_error("domainIdentifier", route.domain_id, _DOMAIN_RE.pattern)
        member = "identifier" if route.operation == "GetJobRun" else "jobIdentifier"
        if not _ID_RE.fullmatch(route.ident):
            return _validation_error(member, route.ident, _ID_RE.pattern)
        if route.operation == "ListJobRuns":
            queued = self._list_faults.get((route.domain_id, route.ident))
            if queued:
                return _fault_reply(queued.pop(0))
            delay = self._list_delays.get((route.domain_id, route.ident), 0.0)
            return _with_delay(self._list_job_runs(route, now, wall), delay)
        return self._get_job_run(route.domain_id, route.ident, now, wall)

    def _take_token(self, now: float) -> bool:
        if self._max_rps is None:
            return True
        if self._bucket_at is not None:
            refill = (now - self._bucket_at) * self._max_rps
            self._bucket_tokens = min(self._bucket_capacity, self._bucket_tokens + refill)
        self._bucket_at = now
        if self._bucket_tokens >= 1.0:
            self._bucket_tokens -= 1.0
            return True
        return False

    def _get_job_run(self, domain_id: str, run_id: str, now: float, wall: float) -> _Reply:
        run = self._runs.get((domain_id, run_id))
        if run is None or now < run.visible_at:
            reply = _aws_error(
                404, "ResourceNotFoundException", f"Job run {run_id} not found in {domain_id}"
            )
            return reply if run is None else _with_delay(reply, run.script.latency)
        script = run.script
        if script.throttle_rate > 0 and self._rng.random() < script.throttle_rate:
            return _with_delay(
                _aws_error(429, "ThrottlingException", "Rate exceeded", fault="throttle_rate"),
                script.latency,
            )
        delay, fault, overrides = script.latency, None, None
        if script.statuses is not None:
            if run.cursor < len(script.statuses):
                item = script.statuses[run.cursor]
                run.cursor += 1
                if isinstance(item, Fault):
                    if item.kind not in ("delay", "override"):
                        return _with_delay(_fault_reply(item), delay)
                    if item.kind == "delay":
                        delay += item.seconds
                    else:
                        overrides = json.loads(item.body)
                    fault = item.kind
                    # RunScript allows these only next to a status.
                    status = cast(str, _current_status(run))
                else:
                    status = item
            else:
                current = _current_status(run)
                if current is None:  # faults alone: the last one answers every call
                    last = script.statuses[-1]
                    assert isinstance(last, Fault)
                    return _with_delay(_fault_reply(last), delay)
                status = current
            _observe(run, status, now, wall)
        else:
            assert script.timeline is not None
            status = _timeline_status(run, now - self._read_lags.get((domain_id, run_id), 0.0))
        out = job_run_json(run, status)
        if overrides is not None:
            out = apply_overrides(out, overrides)
        body = json.dumps(out).encode()
        return _Reply(200, body, delay=delay, answered_status=status, fault=fault)

    def _list_job_runs(self, route: _Route, now: float, wall: float) -> _Reply:
        assert route.domain_id is not None
        assert route.ident is not None
        q = route.query
        sort_order = q.get("sortOrder", ["DESCENDING"])[-1]
        if sort_order not in ("ASCENDING", "DESCENDING"):
            return _aws_error(
                400,
                "ValidationException",
                f"1 validation error detected: Value '{sort_order}' at 'sortOrder' failed to "
                "satisfy constraint: Member must satisfy enum value set: [ASCENDING, DESCENDING]",
            )
        raw_max = q.get("maxResults", [str(_DEFAULT_PAGE_SIZE)])[-1]
        try:
            max_results = int(raw_max)
        except ValueError:
            max_results = 0
        if not 1 <= max_results <= _MAX_PAGE_SIZE:
            return _aws_error(
                400,
                "ValidationException",
                f"1 validation error detected: Value '{raw_max}' at 'maxResults' failed to "
                f"satisfy constraint: Member must be between 1 and {_MAX_PAGE_SIZE}",
            )
        status_filter = q["status"][-1] if "status" in q else None
        # The token remembers the query it belongs to, so it cannot be replayed on another.
        fingerprint = f"{route.domain_id}|{route.ident}|{status_filter}|{sort_order}"
        after: tuple[float, int] | None = None
        if "nextToken" in q:
            after = _decode_token(q["nextToken"][-1], fingerprint)
            if after is None:
                return _aws_error(400, "ValidationException", "The nextToken is invalid.")
        descending = sort_order == "DESCENDING"
        rows: list[tuple[tuple[float, int], RunState, str]] = []
        for run in self._runs.values():
            if (run.domain_id, run.job_id) != (route.domain_id, route.ident):
                continue
            if now < run.visible_at:
                continue
            lag = self._list_lags.get((run.domain_id, run.run_id), 0.0)
            status = _peek_status(run, now - lag)
            if status is None or (status_filter is not None and status != status_filter):
                continue
            key = (run.created_at, run.seq)
            if after is not None and (key >= after if descending else key <= after):
                continue
            rows.append((key, run, status))
        rows.sort(key=lambda row: row[0], reverse=descending)
        max_results = min(max_results, self._page_sizes.get((route.domain_id, route.ident), 50))
        page = rows[:max_results]
        for _, run, status in page:
            if _next_scripted(run) == status:
                # A listing is a look too: a statuses script moves on as for a GetJobRun.
                run.cursor += 1
                _observe(run, status, now, wall)
        out: dict[str, Any] = {"items": [_summary_json(run, status) for _, run, status in page]}
        if after is None:
            out["items"][:0] = self._list_extras.get((route.domain_id, route.ident), [])
        if len(rows) > max_results:
            out["nextToken"] = _encode_token(page[-1][0], fingerprint)
        return _Reply(200, json.dumps(out).encode())


def apply_overrides(body: Mapping[str, Any], overrides: Mapping[str, Any]) -> dict[str, Any]:
    """A copy of ``body`` with each dotted-path key of ``overrides`` set to its value.

    ``{"a.b": 1}`` sets ``body["a"]["b"]``, creating ``body["a"]`` if missing
    (or replacing it if it is not an object). The input is not modified.
    """
    out: dict[str, Any] = json.loads(json.dumps(body))
    for dotted, value in overrides.items():
        *parents, last = dotted.split(".")
        node = out
        for name in parents:
            child = node.get(name)
            if not isinstance(child, dict):
                child = node[name] = {}
            node = child
        node[last] = value
    return out


def _with_delay(reply: _Reply, delay: float) -> _Reply:
    if delay <= 0:
        return reply
    return _Reply(
        reply.status,
        reply.body,
        reply.content_type,
        reply.error_type,
        delay,
        reply.answered_status,
        reply.fault,
    )


def _encode_token(key: tuple[float, int], fingerprint: str) -> str:
    raw = json.dumps([fingerprint, key[0], key[1]]).encode()
    return base64.urlsafe_b64encode(raw).decode()


def _decode_token(token: str, fingerprint: str) -> tuple[float, int] | None:
    try:
        value = json.loads(base64.urlsafe_b64decode(token.encode()))
    except (binascii.Error, ValueError, UnicodeDecodeError):
        return None
    ok = (
        isinstance(value, list)
        and len(value) == 3
        and value[0] == fingerprint
        and isinstance(value[1], int | float)
        and isinstance(value[2], int)
    )
    return (float(value[1]), int(value[2])) if ok else None


def _current_status(run: RunState) -> str | None:
    """The status last answered, or the next one the script holds; None for faults alone."""
    if run.last_status is not None:
        return run.last_status
    assert run.script.statuses is not None
    return next((s for s in run.script.statuses[run.cursor :] if isinstance(s, str)), None)


def _next_scripted(run: RunState) -> str | None:
    """The status a statuses script answers next, if the next item is one (not a fault)."""
    statuses = run.script.statuses
    if statuses is None or run.cursor >= len(statuses):
        return None
    item = statuses[run.cursor]
    return item if isinstance(item, str) else None


def _peek_status(run: RunState, now: float) -> str | None:
    """The status a listing shows: the timeline's now; a script's next status, else its last.

    None for a script of faults alone: the run has no status to list.
    """
    if run.script.timeline is not None:
        return _timeline_status(run, now)
    return _next_scripted(run) or _current_status(run)


def _observe(run: RunState, status: str, now: float, wall: float) -> None:
    run.last_status = status
    if status != "SCHEDULED" and run.start_wall is None:
        run.start_wall = wall
    if status in TERMINAL_STATUSES and run.end_wall is None:
        run.end_wall = wall
        run.end_clock = now


def _timeline_state(
    timeline: Sequence[tuple[float, str]], elapsed: float
) -> tuple[str, float | None, float | None]:
    """(status, start offset, end offset) of a timeline ``elapsed`` seconds in."""
    status = timeline[0][1]
    start: float | None = None
    end: float | None = None
    for offset, entry in timeline:
        if offset > elapsed:
            break
        status = entry
        if entry != "SCHEDULED" and start is None:
            start = offset
        if entry in TERMINAL_STATUSES and end is None:
            end = offset
    return status, start, end


def _timeline_status(run: RunState, now: float) -> str:
    assert run.script.timeline is not None
    status, start, end = _timeline_state(run.script.timeline, now - run.added)
    run.start_wall = None if start is None else run.created_at + start
    run.end_wall = None if end is None else run.created_at + end
    run.end_clock = None if end is None else run.added + end
    return status


def _common_json(run: RunState, status: str) -> dict[str, Any]:
    out: dict[str, Any] = {
        "domainId": run.domain_id,
        "jobId": run.job_id,
        "jobType": run.job_type,
        "runMode": run.run_mode,
        "status": status,
        "createdBy": run.created_by,
        "createdAt": run.created_at,
    }
    if run.start_wall is not None:
        out["startTime"] = run.start_wall
    if run.end_wall is not None:
        out["endTime"] = run.end_wall
    if run.script.error_message is not None and status in ERROR_MESSAGE_STATUSES:
        out["error"] = {"message": run.script.error_message}
    return out


def _summary_json(run: RunState, status: str) -> dict[str, Any]:
    return {"runId": run.run_id, **_common_json(run, status)}


def job_run_json(run: RunState, status: str) -> dict[str, Any]:
    out = {"id": run.run_id, **_common_json(run, status)}
    script = run.script
    if script.unknown_details:
        out["details"] = {"someFutureRunDetails": {"x": 1}}
    elif script.lineage is not None and (
        status in TERMINAL_STATUSES or (script.lineage.while_running and status == "IN_PROGRESS")
    ):
        sql = script.lineage.to_json(run.created_at, run.end_wall)
        out["details"] = {"lineageRunDetails": {"sqlQueryRunDetails": sql}}
    return out


class _Server(ThreadingHTTPServer):
    daemon_threads = True
    simulator: Simulator
    tls: ssl.SSLContext | None = None

    def handle_error(self, request: Any, client_address: Any) -> None:
        # A client that hung up (read timeout, reset) is business as usual here;
        # anything else is a simulator bug and keeps the default traceback.
        if isinstance(sys.exc_info()[1], OSError):
            return
        super().handle_error(request, client_address)


class _Handler(BaseHTTPRequestHandler):
    # HTTP/1.1 keeps botocore's pooled connections alive across requests.
    protocol_version = "HTTP/1.1"
    # Headers and body go out in separate writes; Nagle would hold the body back
    # for a delayed ACK (~40 ms) on every keep-alive request.
    disable_nagle_algorithm = True

    def _sim(self) -> Simulator:
        return cast(_Server, self.server).simulator

    def setup(self) -> None:
        sim = self._sim()
        conn = cast(socket.socket, self.request)
        tls = cast(_Server, self.server).tls
        if tls is not None:
            # Wrapped in the connection's own thread, so a slow handshake holds up no
            # other, and registered before it, so stop() can cut a stalled one short.
            conn = tls.wrap_socket(conn, server_side=True, do_handshake_on_connect=False)
            self.request = conn
        with sim._lock:
            sim._connections.add(conn)
        if tls is not None:
            try:
                cast(ssl.SSLSocket, conn).do_handshake()
            except BaseException:
                with sim._lock:
                    sim._connections.discard(conn)
                raise
        super().setup()

    def finish(self) -> None:
        sim = self._sim()
        with sim._lock:
            sim._connections.discard(self.connection)
        with contextlib.suppress(OSError):  # the client may already be gone
            super().finish()

    def log_message(self, format: str, *args: Any) -> None:
        """Silence per-request logging (it would also be the place headers could leak)."""

    def _serve(self) -> None:
        try:
            length = int(self.headers.get("Content-Length") or 0)
        except ValueError:
            self.close_connection = True
            return
        if length:
            self.rfile.read(length)  # keep the connection in step for the next request
        sim = self._sim()
        reply = sim._answer(self.command, self.path, self.headers.get("Authorization"))
        if reply.delay > 0 and sim._stopping.wait(reply.delay):
            self.close_connection = True
            return
        if reply.status is None:
            self.close_connection = True
            return
        try:
            self.send_response(reply.status)
            self.send_header("Content-Type", reply.content_type)
            self.send_header("Content-Length", str(len(reply.body)))
            self.send_header("x-amzn-RequestId", str(uuid.uuid4()))
            if reply.error_type is not None:
                self.send_header("x-amzn-ErrorType", reply.error_type)
            self.end_headers()
            self.wfile.write(reply.body)
        except OSError:
            self.close_connection = True

    do_GET = _serve
    do_POST = _serve
    do_PUT = _serve
    do_DELETE = _serve
    do_PATCH = _serve
