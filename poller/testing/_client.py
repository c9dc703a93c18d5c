"""A local test endpoint's common face, and the real botocore client aimed at it.

Shared by `Simulator` and the misbehaving servers of ``_faulty``: each is used
with ``with``, tells its address and URL, and hands out the same
production-shaped client.
"""

from __future__ import annotations

import inspect
from types import TracebackType
from typing import Any, Self

import botocore.session
from botocore.config import Config

__all__ = ["CLIENT_DEFAULTS", "LocalEndpoint", "make_client"]

#: What a test client gets unless overridden: a fixed region and dummy keys.
CLIENT_DEFAULTS: dict[str, Any] = {
    "region_name": "us-east-1",
    "aws_access_key_id": "testing",
    "aws_secret_access_key": "testing",
}
# botocore's own retries off, so a test sees every answer the server gives.
_NO_RETRIES = Config(retries={"total_max_attempts": 1, "mode": "standard"})


def _create_client_params() -> frozenset[str]:
    params = inspect.signature(botocore.session.Session.create_client).parameters
    return frozenset(params) - {"self", "service_name"}


def make_client(endpoint_url: str, **kwargs: Any) -> Any:
    """A botocore ``datazone`` client for ``endpoint_url``, retries off.

    Keyword arguments that ``create_client`` takes (``region_name``, ``verify``,
    ``aws_access_key_id``, ``config``, ...) are passed to it, overriding the
    defaults; any other (``read_timeout``, ``connect_timeout``, ``retries``,
    ...) is a `botocore.config.Config` option. A ``config`` given is merged
    over the defaults, and loose options over both.
    """
    create = _create_client_params()
    options = {k: v for k, v in kwargs.items() if k not in create}
    args = {**CLIENT_DEFAULTS, **{k: v for k, v in kwargs.items() if k in create}}
    config = _NO_RETRIES
    if args.get("config") is not None:
        config = config.merge(args["config"])
    if options:
        config = config.merge(Config(**options))
    args["config"] = config
    args["endpoint_url"] = endpoint_url
    return botocore.session.get_session().create_client("datazone", **args)


class LocalEndpoint:
    """What every local server of ``poller.testing`` shares: ``with``, its address, a client."""

    #: What the server is called in the error raised while it is not running.
    _what = "server"

    def start(self) -> Self:
        raise NotImplementedError

    def stop(self) -> None:
        raise NotImplementedError

    def _bound(self) -> tuple[Any, ...] | None:
        """The bound socket's address, None while not running."""
        raise NotImplementedError

    @property
    def _scheme(self) -> str:
        return "http"

    def __enter__(self) -> Self:
        return self.start()

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.stop()

    @property
    def address(self) -> tuple[str, int]:
        """The (host, port) the server socket is bound to."""
        bound = self._bound()
        if bound is None:
            raise RuntimeError(f"the {self._what} is not running; call start() or use `with`")
        return str(bound[0]), int(bound[1])

    @property
    def endpoint_url(self) -> str:
        """``http://127.0.0.1:PORT`` (``https://`` over TLS): pass it as ``endpoint_url``."""
        host, port = self.address
        return f"{self._scheme}://{host}:{port}"

    def client(self, **kwargs: Any) -> Any:
        """A botocore DataZone client for this endpoint (see `make_client` for ``kwargs``)."""
        return make_client(self.endpoint_url, **kwargs)
