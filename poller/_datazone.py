"""The DataZone edge: the only module that touches boto3 and botocore.

It builds clients, validates IDs before any call, makes the call, and turns
every failure into a CallFault whose kind tells the core what to do with it.
"""

from __future__ import annotations

import re
from typing import TYPE_CHECKING, Any, Protocol, cast

import botocore.exceptions as bce
import botocore.session
from botocore.config import Config
from botocore.parsers import ResponseParserError

from poller._model import JobRun, MalformedResponseError
from poller._policy import CallFault, FaultKind
from poller.errors import AccessDeniedError, InvalidRequestError

if TYPE_CHECKING:
    from mypy_boto3_datazone import DataZoneClient

__all__ = [
    "JobRunClient",
    "build_client",
    "classify",
    "fetch_job_run",
    "validate_ids",
]

# The patterns of the API's own model: checking them first turns a typo into
# a clear error with no call, instead of a ValidationException after one.
_DOMAIN_ID = re.compile(r"dzd[-_][a-zA-Z0-9_-]{1,36}")
_RUN_ID = re.compile(r"[a-zA-Z0-9_-]{1,36}")


class JobRunClient(Protocol):
    """What poller needs of a client: a boto3 DataZone client, or anything shaped like one."""

    def get_job_run(self, *, domainIdentifier: str, identifier: str) -> Any: ...


def validate_ids(domain_id: object, job_run_id: object) -> None:
    """Raise InvalidRequestError unless both IDs match the API's patterns."""
    if not isinstance(domain_id, str) or not _DOMAIN_ID.fullmatch(domain_id):
        raise InvalidRequestError(
            f"invalid domain identifier {domain_id!r}: expected 'dzd_' or 'dzd-' followed by "
            "1 to 36 letters, digits, '-' or '_'"
        )
    if not isinstance(job_run_id, str) or not _RUN_ID.fullmatch(job_run_id):
        raise InvalidRequestError(
            f"invalid job run identifier {job_run_id!r}: expected 1 to 36 letters, digits, "
            "'-' or '_'"
        )


def build_client(
    *,
    region_name: str | None = None,
    profile_name: str | None = None,
    endpoint_url: str | None = None,
    connect_timeout: float = 5.0,
    read_timeout: float = 10.0,
    max_pool_connections: int = 10,
) -> DataZoneClient:
    """A DataZone client with botocore's own retries off: poller owns and logs the backoff."""
    config = Config(
        retries={"total_max_attempts": 1, "mode": "standard"},
        connect_timeout=connect_timeout,
        read_timeout=read_timeout,
        max_pool_connections=max_pool_connections,
        user_agent_extra="poller",
    )
    try:
        # A botocore session builds the very client boto3's would (boto3 only
        # adds resources, which poller does not use), and skips importing
        # boto3 and s3transfer: ~90 ms of every `poller wait` start-up.
        session = botocore.session.Session(profile=profile_name or None)
        client = session.create_client(
            "datazone",
            region_name=region_name or None,
            endpoint_url=endpoint_url or None,
            config=config,
        )
        return cast("DataZoneClient", client)
    except bce.ProfileNotFound as exc:
        raise AccessDeniedError(f"AWS profile not found: {exc.kwargs.get('profile')}") from exc
    except bce.NoRegionError as exc:
        raise AccessDeniedError(
            "no AWS region configured: pass a region (--region, region_name=) or set AWS_REGION"
        ) from exc
    except (bce.BotoCoreError, ValueError) as exc:
        raise InvalidRequestError(f"cannot create a DataZone client: {exc}") from exc


def fetch_job_run(client: JobRunClient, domain_id: str, job_run_id: str) -> JobRun:
    """One GetJobRun call, parsed; any failure is raised as a classified CallFault."""
    try:
        response = client.get_job_run(domainIdentifier=domain_id, identifier=job_run_id)
        return JobRun.from_response(response)
    except Exception as exc:
        fault = classify(exc)
        if fault is None:
            raise
        raise fault from exc


_THROTTLE_CODES = frozenset(
    {
        "ThrottlingException",
        "Throttling",
        "TooManyRequestsException",
        "RequestLimitExceeded",
        "RequestThrottled",
        "SlowDown",
    }
)
_DENIED_CODES = frozenset(
    {
        "AccessDeniedException",
        "AccessDenied",
        "UnauthorizedException",
        "ExpiredToken",
        "ExpiredTokenException",
        "InvalidClientTokenId",
        "UnrecognizedClientException",
        "InvalidSignatureException",
        "SignatureDoesNotMatch",
        "MissingAuthenticationTokenException",
        "IncompleteSignature",
        "RequestExpired",
    }
)
_CREDENTIAL_ERRORS = (
    bce.NoCredentialsError,
    bce.PartialCredentialsError,
    bce.CredentialRetrievalError,
    bce.TokenRetrievalError,
    bce.SSOError,
    bce.NoRegionError,
    bce.ProfileNotFound,
)
_TRANSIENT_ERRORS = (
    bce.ConnectionError,  # refused, connect timeout, proxy and TLS failures
    bce.HTTPClientError,  # reset, closed, read timeout
    ResponseParserError,
    bce.IncompleteReadError,
    bce.ChecksumError,
    MalformedResponseError,
    ConnectionError,
    TimeoutError,
)


def classify(exc: BaseException) -> CallFault | None:
    """What a failed call means: throttle, transient, not found, denied, invalid; None for a bug."""
    if isinstance(exc, CallFault):
        return exc
    if isinstance(exc, bce.ClientError):
        error = exc.response.get("Error", {})
        code = str(error.get("Code") or "")
        message = str(error.get("Message") or "") or str(exc)
        status = int(exc.response.get("ResponseMetadata", {}).get("HTTPStatusCode") or 0)
        if code in _THROTTLE_CODES or status == 429:
            kind = FaultKind.THROTTLE
        elif code == "ResourceNotFoundException" or status == 404:
            kind = FaultKind.NOT_FOUND
        elif code in _DENIED_CODES or status in (401, 403):
            kind = FaultKind.DENIED
        elif status >= 500 or code in ("InternalServerException", "ServiceUnavailable"):
            # Includes a proxy's 502/503/504 HTML page, which has no AWS error code.
            kind = FaultKind.TRANSIENT
        else:
            kind = FaultKind.INVALID
        return CallFault(kind, code or f"HTTP {status}", message)
    name = type(exc).__name__
    if isinstance(exc, _CREDENTIAL_ERRORS):
        return CallFault(FaultKind.DENIED, name, f"no usable AWS credentials: {exc}")
    if isinstance(exc, _TRANSIENT_ERRORS):
        return CallFault(FaultKind.TRANSIENT, name, str(exc) or name)
    if isinstance(exc, bce.BotoCoreError):
        # Parameter validation, endpoint resolution and the like: retrying
        # cannot help, and the text says what to fix.
        return CallFault(FaultKind.INVALID, name, str(exc))
    # Not botocore's: a bug, which should surface as itself, not be retried.
    return None
