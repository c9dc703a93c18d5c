"""Servers that misbehave below the service: trickled, silent, garbled and redirected answers.

Each is a context manager like `Simulator` (``start``/``stop``,
``endpoint_url``, ``client()``), bound to a free loopback port and serving
each connection in a daemon thread. They speak just enough HTTP/1.1 to be a
botocore ``endpoint_url``: they read a request's head (and body, by
``Content-Length``) and then misbehave, whatever the request was. ``stop``
shuts every open connection down, so it returns promptly even while a client
waits on a trickle or on silence.
"""

from __future__ import annotations

import contextlib
import http
import json
import socket
import threading
import time
import uuid
from typing import Any, BinaryIO, Self

from poller.testing._client import LocalEndpoint
from poller.testing._script import Lineage, RunScript
from poller.testing._simulator import RunState, apply_overrides, job_run_json

__all__ = [
    "GarbledServer",
    "RedirectServer",
    "SilentServer",
    "TrickleServer",
    "job_run_body",
]

# How often the accept loop looks for stop(): it bounds how long stop() takes.
_POLL_INTERVAL = 0.02
# How long stop() waits for connection threads once their sockets are shut down.
_JOIN_TIMEOUT = 0.5
_MAX_HEAD_LINES = 200
_TOTAL_QUERIES = "details.lineageRunDetails.sqlQueryRunDetails.totalQueriesProcessed"


def job_run_body(
    domain_id: str = "dzd_abc123",
    run_id: str = "run-1",
    status: str = "SUCCESS",
    *,
    created_at: float = 1_800_000_000.0,
    **overrides: Any,
) -> dict[str, Any]:
    """A GetJobRun response body as the simulator answers it, with members overridden.

    It has the ids, ``jobId`` ``job-1``, LINEAGE/ON_DEMAND, the timestamps
    (``startTime`` 1 s and, for a terminal status, ``endTime`` 60 s after
    ``created_at``) and, once terminal, the default `Lineage` details.
    ``overrides`` are applied as by `Fault.override`: keys are JobRun members
    or dotted paths, so pass nested ones with ``**{"a.b": value}``.
    """
    run = RunState(
        domain_id=domain_id,
        run_id=run_id,
        job_id="job-1",
        job_type="LINEAGE",
        run_mode="ON_DEMAND",
        created_by="user",
        script=RunScript(statuses=[status], lineage=Lineage()),
        added=0.0,
        created_at=created_at,
        visible_at=0.0,
        seq=0,
    )
    if status != "SCHEDULED":
        run.start_wall = created_at + 1.0
    body = job_run_json(run, status)
    if "details" in body:
        run.end_wall = created_at + 60.0
        body = job_run_json(run, status)
    return apply_overrides(body, overrides)


def _read_head(rfile: BinaryIO) -> str | None:
    """Read one request's head and body; its request line, or None once the peer is gone."""
    request_line = ""
    while not request_line:  # RFC 9112 lets a client send blank lines first
        line = rfile.readline(65537)
        if not line:
            return None
        request_line = line.decode("latin-1").strip()
    length = 0
    for _ in range(_MAX_HEAD_LINES):
        line = rfile.readline(65537)
        if not line:
            return None
        if line in (b"\r\n", b"\n"):
            break
        name, _, value = line.decode("latin-1").partition(":")
        if name.strip().lower() == "content-length":
            with contextlib.suppress(ValueError):
                length = int(value.strip())
    if length > 0 and len(rfile.read(length)) < length:
        return None
    return request_line


def _head(status: int, headers: dict[str, str]) -> bytes:
    try:
        phrase = http.HTTPStatus(status).phrase
    except ValueError:
        phrase = "Unknown"
    lines = [f"HTTP/1.1 {status} {phrase}"]
    lines += [f"{k}: {v}" for k, v in {**headers, "x-amzn-RequestId": str(uuid.uuid4())}.items()]
    return ("\r\n".join(lines) + "\r\n\r\n").encode("latin-1")


class _FaultyServer(LocalEndpoint):
    """A loopback TCP server handing each connection to `_serve_connection` in a thread."""

    _name = "faulty"

    def __init__(self, *, host: str = "127.0.0.1", port: int = 0) -> None:
        self._host = host
        self._port = port
        self._listener: socket.socket | None = None
        self._accept_thread: threading.Thread | None = None
        self._stopping = threading.Event()
        self._lock = threading.Lock()
        self._connections: dict[socket.socket, threading.Thread] = {}
        self._requests: list[str] = []

    def start(self) -> Self:
        """Bind and serve in daemon threads; a no-op if already running."""
        if self._listener is not None:
            return self
        self._stopping.clear()
        listener = socket.create_server((self._host, self._port))
        listener.settimeout(_POLL_INTERVAL)
        self._listener = listener
        self._accept_thread = threading.Thread(
            target=self._accept_loop,
            args=(listener,),
            name=f"poller-{self._name}-{listener.getsockname()[1]}",
            daemon=True,
        )
        self._accept_thread.start()
        return self

    def stop(self) -> None:
        """Stop accepting and shut every open connection down; prompt, and safe to call twice."""
        listener, accept_thread = self._listener, self._accept_thread
        if listener is None:
            return
        self._stopping.set()  # wakes trickles and silences
        if accept_thread is not None:
            accept_thread.join()
        listener.close()
        with self._lock:
            connections = dict(self._connections)
        for conn in connections:
            with contextlib.suppress(OSError):  # already closed by the peer
                conn.shutdown(socket.SHUT_RDWR)
        deadline = time.monotonic() + _JOIN_TIMEOUT
        for thread in connections.values():
            thread.join(max(0.0, deadline - time.monotonic()))
        self._listener = self._accept_thread = None

    def _bound(self) -> tuple[Any, ...] | None:
        return None if self._listener is None else tuple(self._listener.getsockname())

    @property
    def requests(self) -> list[str]:
        """The request lines read so far (``GET /v2/domains/... HTTP/1.1``), a copy."""
        with self._lock:
            return list(self._requests)

    def _accept_loop(self, listener: socket.socket) -> None:
        while not self._stopping.is_set():
            try:
                conn, _ = listener.accept()
            except TimeoutError:
                continue
            except OSError:
                return
            conn.settimeout(None)
            conn.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
            thread = threading.Thread(
                target=self._run_connection, args=(conn,), name=self._name, daemon=True
            )
            with self._lock:
                self._connections[conn] = thread
            thread.start()

    def _run_connection(self, conn: socket.socket) -> None:
        try:
            with conn.makefile("rb") as rfile:
                self._serve_connection(conn, rfile)
        except OSError:
            pass  # the client hung up, or stop() shut the socket down
        finally:
            with self._lock:
                self._connections.pop(conn, None)
            conn.close()

    def _next_request(self, rfile: BinaryIO) -> bool:
        """Read the next request and note it; False once the peer or stop() closed it."""
        line = _read_head(rfile)
        if line is None or self._stopping.is_set():
            return False
        with self._lock:
            self._requests.append(line)
        return True

    def _serve_connection(self, conn: socket.socket, rfile: BinaryIO) -> None:
        raise NotImplementedError


class TrickleServer(_FaultyServer):
    """Answers 200 with a huge ``Content-Length``, then one body byte every ``interval`` seconds.

    Each byte resets botocore's per-read ``read_timeout``, so a client never
    times out on its own: only a total deadline of the caller's stops the
    wait. ``body=None`` trickles a valid GetJobRun JSON (`job_run_body`)
    followed by blanks, announced as 1 GB so it never ends; a ``body`` given
    is trickled with its own length, so the answer completes after
    ``len(body) * interval`` seconds.
    """

    _name = "trickle"

    def __init__(
        self,
        interval: float = 0.5,
        body: bytes | None = None,
        *,
        host: str = "127.0.0.1",
        port: int = 0,
    ) -> None:
        if interval <= 0:
            raise ValueError("interval must be positive")
        super().__init__(host=host, port=port)
        self.interval = interval
        self.body = body

    def _serve_connection(self, conn: socket.socket, rfile: BinaryIO) -> None:
        while self._next_request(rfile):
            if self.body is None:
                content = json.dumps(job_run_body()).encode()
                length = 1_000_000_000
            else:
                content, length = self.body, len(self.body)
            headers = {"Content-Type": "application/json", "Content-Length": str(length)}
            conn.sendall(_head(200, headers))
            for i in range(length):
                if self._stopping.wait(self.interval):
                    return
                conn.sendall(content[i : i + 1] if i < len(content) else b" ")


class SilentServer(_FaultyServer):
    """Accepts the connection and reads the request, then never answers.

    It keeps reading, so the connection's thread ends when the client gives
    up (its read timeout) and closes it.
    """

    _name = "silent"

    def _serve_connection(self, conn: socket.socket, rfile: BinaryIO) -> None:
        while self._next_request(rfile):
            pass


class GarbledServer(_FaultyServer):
    """Answers every request with exactly ``body``, under ``status`` and ``content_type``.

    The constructors build the bodies a client must survive: `invalid_utf8`,
    `bad_timestamp`, `bad_integer` and `html`. Connections stay alive, as
    DataZone's do.
    """

    _name = "garbled"

    def __init__(
        self,
        body: bytes,
        status: int = 200,
        content_type: str = "application/json",
        *,
        host: str = "127.0.0.1",
        port: int = 0,
    ) -> None:
        super().__init__(host=host, port=port)
        self.body = body
        self.status = status
        self.content_type = content_type

    @classmethod
    def invalid_utf8(cls, **kwargs: Any) -> Self:
        """A GetJobRun JSON behind the bytes ``FF FE``, so it is not UTF-8."""
        return cls(b"\xff\xfe" + json.dumps(job_run_body()).encode(), **kwargs)

    @classmethod
    def bad_timestamp(cls, value: Any = "yesterday", **kwargs: Any) -> Self:
        """A valid GetJobRun JSON whose ``createdAt`` is ``value`` (not epoch seconds)."""
        return cls(json.dumps(job_run_body(createdAt=value)).encode(), **kwargs)

    @classmethod
    def bad_integer(cls, value: Any = "ten", **kwargs: Any) -> Self:
        """A valid GetJobRun JSON whose lineage ``totalQueriesProcessed`` is ``value``."""
        body = job_run_body(**{_TOTAL_QUERIES: value})
        return cls(json.dumps(body).encode(), **kwargs)

    @classmethod
    def html(cls, status: int = 200, **kwargs: Any) -> Self:
        """A captive-portal style HTML page, ``text/html``, under ``status``."""
        page = (
            b"<!DOCTYPE html><html><head><title>Sign in</title></head>"
            b"<body><h1>Please sign in to the network</h1></body></html>"
        )
        return cls(page, status, "text/html; charset=utf-8", **kwargs)

    def _serve_connection(self, conn: socket.socket, rfile: BinaryIO) -> None:
        while self._next_request(rfile):
            headers = {"Content-Type": self.content_type, "Content-Length": str(len(self.body))}
            conn.sendall(_head(self.status, headers) + self.body)


class RedirectServer(_FaultyServer):
    """Answers every request with ``status`` (301 by default) and ``Location: location``."""

    _name = "redirect"

    def __init__(
        self,
        location: str,
        status: int = 301,
        *,
        host: str = "127.0.0.1",
        port: int = 0,
    ) -> None:
        super().__init__(host=host, port=port)
        self.location = location
        self.status = status

    def _serve_connection(self, conn: socket.socket, rfile: BinaryIO) -> None:
        body = f'<html><body>Moved to <a href="{self.location}">here</a></body></html>'.encode()
        while self._next_request(rfile):
            headers = {
                "Location": self.location,
                "Content-Type": "text/html",
                "Content-Length": str(len(body)),
            }
            conn.sendall(_head(self.status, headers) + body)
