"""The DataZone clients of the sensor and trigger: built once per connection, shared per process.

A triggerer runs hundreds of triggers in one process and one event loop. Each
building its own hook, boto3 session and client costs ~14 MB and ~0.13 s of
CPU on the loop thread; instead, every sensor and trigger of a process that
names the same connection settings (`ClientSpec`) shares one client, built
once in a worker thread (`client_for`, `aclient_for`): concurrent triggers for
the same settings await the same build. The client keeps the session the
Amazon provider made for the connection, so refreshable credentials (an
assumed role) go on refreshing.

The key also holds a digest of the ``AWS_*`` variables and of the
connection's ``AIRFLOW_CONN_*`` variable, so a changed environment gets a new
client; a connection edited in the metadata database is read again by a new
process (a restarted triggerer or a new task run).

Connection problems (no region, a connection that does not exist, incomplete
credentials, the provider missing) raise a PollerError that names the fix, so
the sensor fails the task instead of Airflow retrying a botocore traceback.
"""

from __future__ import annotations

import asyncio
import hashlib
import json
import os
import threading
from collections.abc import Callable, Mapping
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from poller import _home
from poller.errors import AccessDeniedError, InvalidRequestError

if TYPE_CHECKING:
    from poller._datazone import JobRunClient

# botocore, and the runtime that loads it, are imported where a client is
# built, in a worker thread: importing this module on a triggerer's event
# loop must not cost the ~0.1 s botocore takes to load.

__all__ = ["DEFAULT_CONN_ID", "ClientSpec", "aclient_for", "clear", "client_for"]

# The provider's default connection: like every AWS operator, a missing one
# means boto3's default credential chain (instance role, environment).
DEFAULT_CONN_ID = "aws_default"


@dataclass(frozen=True)
class ClientSpec:
    """What picks a client: the provider's four AWS parameters, as a user passes them."""

    aws_conn_id: str | None = DEFAULT_CONN_ID
    region_name: str | None = None
    verify: bool | str | None = None
    botocore_config: Mapping[str, Any] | None = field(default=None, hash=False)

    def key(self) -> tuple[Any, ...]:
        """The cache key: these settings, plus the environment that can change what they mean."""
        config = json.dumps(dict(self.botocore_config or {}), sort_keys=True, default=repr)
        env_names = [n for n in os.environ if n.startswith("AWS_")]
        if self.aws_conn_id:
            env_names.append(f"AIRFLOW_CONN_{self.aws_conn_id.upper()}")
        digest = hashlib.sha256()
        for name in sorted(env_names):
            digest.update(f"{name}={os.environ.get(name)}\0".encode())
        return (self.aws_conn_id, self.region_name, self.verify, config, digest.hexdigest())


class _Clients:
    """The process's clients by key, and the threads that build them (kept in `poller._home`,
    so `poller.testing.reset` closes them and a forked child starts without the parent's)."""

    def __init__(self) -> None:
        self.lock = threading.Lock()
        self.futures: dict[tuple[Any, ...], Future[JobRunClient]] = {}
        # Builds only: look-ups and model loading stay off the event loop and off the
        # call pool, so a slow connection look-up never delays another run's poll.
        self.builder = ThreadPoolExecutor(max_workers=2, thread_name_prefix="poller-client")

    def close(self) -> None:
        self.builder.shutdown(wait=False)


_STATE = _home.Slot("airflow.clients", _Clients)


def _state() -> _Clients:
    return _STATE.get()


def _claim(spec: ClientSpec) -> tuple[Future[JobRunClient], Callable[[], None] | None]:
    """The shared future for ``spec``, and the build to run when the caller is the first."""
    key = spec.key()
    state = _state()
    lock, futures = state.lock, state.futures
    with lock:
        future = futures.get(key)
        if future is not None:
            return future, None
        future = Future()
        # Running from the start: one waiter's cancellation cannot cancel the
        # build that the others are waiting for.
        future.set_running_or_notify_cancel()
        futures[key] = future

    def build() -> None:
        try:
            future.set_result(_build(spec))
        except BaseException as error:
            # A failed build is not kept: the connection may be fixed meanwhile.
            with lock:
                if futures.get(key) is future:
                    del futures[key]
            future.set_exception(error)

    return future, build


def client_for(spec: ClientSpec) -> JobRunClient:
    """The process's client for ``spec``, built in this thread if nobody built it yet."""
    future, build = _claim(spec)
    if build is not None:
        build()
    return future.result()


async def aclient_for(spec: ClientSpec) -> JobRunClient:
    """``client_for`` for the event loop: the build runs in a worker thread, once per key."""
    future, build = _claim(spec)
    if build is not None:
        _state().builder.submit(build)
    return await asyncio.wrap_future(future)


def clear() -> None:
    """Forget every client (tests; a process that changed its connections)."""
    state = _state()
    with state.lock:
        state.futures.clear()


def _build(spec: ClientSpec) -> JobRunClient:
    """A DataZone client from the connection through the provider's hook; blocking."""
    import botocore.exceptions as bce  # noqa: PLC0415  (see the imports)

    from poller._datazone import client_config  # noqa: PLC0415
    from poller._runtime import CALL_WORKERS  # noqa: PLC0415

    try:
        from airflow.providers.amazon.aws.hooks.base_aws import (  # noqa: PLC0415
            AwsBaseHook,
        )
    except ImportError as exc:
        raise InvalidRequestError(
            "poller.airflow reads AWS connections with apache-airflow-providers-amazon, "
            "which is not installed: pip install 'poller[airflow]'"
        ) from exc
    conn = spec.aws_conn_id
    where = f"Airflow connection {conn!r}" if conn else "boto3's default credential chain"
    hook = AwsBaseHook(
        aws_conn_id=conn,
        client_type="datazone",
        region_name=spec.region_name,
        verify=spec.verify,
        config=dict(spec.botocore_config) if spec.botocore_config else None,
    )
    try:
        if conn and conn != DEFAULT_CONN_ID:
            # The hook would fall back to boto3's default chain, and a typo
            # would end up reading whatever credentials the host has.
            hook.get_connection(conn)
        client: JobRunClient = hook.get_client_type(
            region_name=hook.region_name,
            # The pool is sized to the call threads that share the client.
            config=client_config(base=hook.config, max_pool_connections=CALL_WORKERS),
        )
    except bce.NoRegionError as exc:
        fix = f'set "region_name" in the extra of {where}, ' if conn else "set AWS_DEFAULT_REGION, "
        # Bad input, as the Python API and the CLI classify no region: not a denial.
        raise InvalidRequestError(
            f"no AWS region for DataZone from {where}: {fix}or pass region_name= to the sensor"
        ) from exc
    except (bce.NoCredentialsError, bce.PartialCredentialsError, bce.ProfileNotFound) as exc:
        raise AccessDeniedError(
            f"no usable AWS credentials from {where}: {exc}; check its login/password "
            "(access key ID and secret), role_arn or profile_name"
        ) from exc
    except Exception as exc:
        if type(exc).__name__ == "AirflowNotFoundException":
            raise InvalidRequestError(
                f"the Airflow connection {conn!r} does not exist: create it (for example "
                f"AIRFLOW_CONN_{str(conn).upper()}), fix aws_conn_id, or pass aws_conn_id=None "
                "for boto3's default credential chain"
            ) from exc
        raise InvalidRequestError(
            f"cannot create a DataZone client from {where}: {type(exc).__name__}: {exc}"
        ) from exc
    return client
