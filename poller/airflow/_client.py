"""The DataZone client of the sensor and trigger: the Airflow connection when it can be used.

The Amazon provider is heavy and optional: with it installed, ``aws_conn_id``
names an Airflow AWS connection (credentials, role, region, endpoint); without
it, or with ``aws_conn_id=None``, boto3's default chain is used, which also
honours ``AWS_ENDPOINT_URL_DATAZONE``.
"""

from __future__ import annotations

import logging
from typing import Any

from botocore.config import Config

from poller._datazone import JobRunClient

__all__ = ["job_run_client", "provider_installed"]

_log = logging.getLogger(__name__)

# What poller's own clients use (docs/design.md, semantics 7): botocore's retries
# off, so the backoff is owned and logged in one place, and bounded calls.
_POLLER_CONFIG = Config(
    retries={"total_max_attempts": 1, "mode": "standard"},
    connect_timeout=5.0,
    read_timeout=10.0,
    user_agent_extra="poller",
)


def _hook_class() -> Any:
    # Imported when a client is needed, not at module import: the sensor
    # must load, and work, without the provider.
    try:
        from airflow.providers.amazon.aws.hooks.base_aws import (  # noqa: PLC0415
            AwsBaseHook,
        )
    except ImportError:
        return None
    return AwsBaseHook


def provider_installed() -> bool:
    """True when the Amazon provider (and so Airflow AWS connections) can be used."""
    return _hook_class() is not None


def job_run_client(aws_conn_id: str | None, region_name: str | None) -> JobRunClient | None:
    """A client for ``aws_conn_id`` through the provider's hook; None for boto3's default chain.

    Blocking (the hook may look the connection up): call it from a worker
    thread in async code.
    """
    if not aws_conn_id:
        return None
    hook_class = _hook_class()
    if hook_class is None:
        _log.info(
            "apache-airflow-providers-amazon is not installed: ignoring aws_conn_id=%r and "
            "using boto3's default credential chain",
            aws_conn_id,
        )
        return None
    hook = hook_class(aws_conn_id=aws_conn_id, client_type="datazone", region_name=region_name)
    # The connection's own botocore settings are kept; retries and timeouts
    # are poller's, since the backoff would otherwise happen twice.
    config = hook.config.merge(_POLLER_CONFIG)
    client: JobRunClient = hook.get_client_type(region_name=hook.region_name, config=config)
    return client
