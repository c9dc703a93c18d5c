"""A real botocore DataZone client aimed at a local test endpoint.

Shared by `Simulator.client` and the misbehaving servers of ``_faulty``, so
every test endpoint hands out the same production-shaped client.
"""

from __future__ import annotations

import inspect
from typing import Any

import botocore.session
from botocore.config import Config

__all__ = ["CLIENT_DEFAULTS", "make_client"]

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
