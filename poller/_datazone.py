"""The DataZone edge: the only module that touches boto3 and botocore.

It builds clients, validates IDs before any call, makes the call, and turns
every failure into a CallFault whose kind tells the core what to do with it.
"""

from __future__ import annotations

import gzip
import json
import os
import re
import ssl
import traceback
from collections.abc import Iterator
from datetime import UTC, datetime
from typing import TYPE_CHECKING, Any, Protocol, cast
from urllib.parse import urlsplit

import botocore.exceptions as bce
import botocore.handlers
import botocore.loaders
import botocore.session
import botocore.utils
from botocore.config import Config
from botocore.parsers import ResponseParserError

from poller import _otel
from poller._model import JobRun, MalformedResponseError
from poller._policy import CallFault, FaultKind
from poller.errors import InvalidRequestError
from poller.log import redact

if TYPE_CHECKING:
    from mypy_boto3_datazone import DataZoneClient

__all__ = [
    "JobRunClient",
    "build_client",
    "classify",
    "client_config",
    "fetch_job_run",
    "list_job_runs",
    "validate_ids",
]

# The patterns of the API's own model: checking them first turns a typo into
# a clear error with no call, instead of a ValidationException after one.
_DOMAIN_ID = re.compile(r"dzd[-_][a-zA-Z0-9_-]{1,36}")
_RUN_ID = re.compile(r"[a-zA-Z0-9_-]{1,36}")


class JobRunClient(Protocol):
    """What poller needs of a client: a boto3 DataZone client, or anything shaped like one."""

    def get_job_run(self, *, domainIdentifier: str, identifier: str) -> Any: ...


def shown_id(value: object, limit: int = 60) -> str:
    """An ID as an error message quotes it: its repr, cut short if it is long (a pasted file)."""
    text = repr(value)
    if len(text) <= limit:
        return text
    return f"{text[: limit - 5]}...{text[-1]} ({len(str(value)):,} characters)"


def validate_ids(domain_id: object, job_run_id: object) -> None:
    """Raise InvalidRequestError unless both IDs match the API's patterns."""
    if not isinstance(domain_id, str) or not _DOMAIN_ID.fullmatch(domain_id):
        raise InvalidRequestError(
            f"invalid domain identifier {shown_id(domain_id)}: expected 'dzd_' or 'dzd-' "
            "followed by 1 to 36 letters, digits, '-' or '_'"
        )
    if not isinstance(job_run_id, str) or not _RUN_ID.fullmatch(job_run_id):
        raise InvalidRequestError(
            f"invalid job run identifier {shown_id(job_run_id)}: expected 1 to 36 letters, "
            "digits, '-' or '_'"
        )


def client_config(
    *,
    connect_timeout: float = 5.0,
    read_timeout: float = 10.0,
    max_pool_connections: int = 10,
    base: Config | None = None,
) -> Config:
    """The botocore Config of poller's own calls (docs/design.md, semantics 7).

    Connect and read timeouts bound each call; botocore's own retries are off,
    so the backoff is owned and logged in one place. Settings a caller gave in
    ``base`` (an Airflow connection's, say) win over these defaults, except
    the retries, which stay off; ``poller`` is added to its ``user_agent_extra``.
    """
    config = Config(
        connect_timeout=connect_timeout,
        read_timeout=read_timeout,
        max_pool_connections=max_pool_connections,
    )
    agent = "poller"
    if base is not None:
        config = config.merge(base)
        extra = getattr(base, "user_agent_extra", None)
        if extra and "poller" not in extra.split():
            agent = f"{extra} poller"
        elif extra:
            agent = extra
    return config.merge(
        Config(retries={"total_max_attempts": 1, "mode": "standard"}, user_agent_extra=agent)
    )


def _check_endpoint(url: str, setting: str) -> None:
    """Raise InvalidRequestError unless ``url`` is an http(s) URL with a host and a valid port."""
    try:
        parts = urlsplit(url)
    except ValueError:  # an unbalanced "[" of an IPv6 address
        parts = urlsplit("")
    try:
        port = parts.port  # a ValueError unless a number from 0 to 65535
    except ValueError:
        port = -1
    if parts.scheme.lower() not in ("http", "https"):
        why = "it must start with http:// or https://"
    elif not parts.hostname:
        why = "it names no host"
    elif port is not None and not 1 <= port <= 65535:
        why = "its port must be a number from 1 to 65535"
    else:
        return
    raise InvalidRequestError(f"invalid {setting} {redact(url)!r}: {why}")


def build_client(
    *,
    region_name: str | None = None,
    profile_name: str | None = None,
    endpoint_url: str | None = None,
    connect_timeout: float = 5.0,
    read_timeout: float = 10.0,
    max_pool_connections: int = 10,
) -> DataZoneClient:
    """A DataZone client with botocore's own retries off: poller owns and logs the backoff.

    A bad endpoint URL (not http or https, no host, a port out of range) is an
    InvalidRequestError here, before any call, whether it was passed or comes
    from the environment or the AWS config.
    """
    if endpoint_url:
        _check_endpoint(endpoint_url, "endpoint_url")
    config = client_config(
        connect_timeout=connect_timeout,
        read_timeout=read_timeout,
        max_pool_connections=max_pool_connections,
    )
    try:
        session = _session(profile_name or None)
        client = session.create_client(
            "datazone",
            # AWS_REGION first, as the AWS CLI v2 and the other SDKs have it;
            # botocore itself reads only AWS_DEFAULT_REGION and the profile.
            region_name=region_name or os.environ.get("AWS_REGION") or None,
            endpoint_url=endpoint_url or None,
            config=config,
        )
    except bce.ProfileNotFound as exc:
        raise InvalidRequestError(_no_profile(exc.kwargs.get("profile"))) from exc
    except bce.NoRegionError as exc:
        raise InvalidRequestError(
            "no AWS region configured: set AWS_REGION (e.g. export AWS_REGION=us-east-1) or "
            "the profile's region; on the command line --region, POLLER_AWS_REGION or [aws] "
            "region in the config file; in Python ClientSettings(region_name=...)"
        ) from exc
    except (bce.BotoCoreError, ValueError) as exc:
        raise InvalidRequestError(f"cannot create a DataZone client: {redact(str(exc))}") from exc
    if not endpoint_url:
        # botocore found one itself: AWS_ENDPOINT_URL_DATAZONE, AWS_ENDPOINT_URL
        # or the AWS config's endpoint_url (else the service's own, which passes).
        _check_endpoint(
            client.meta.endpoint_url,
            "endpoint URL (from AWS_ENDPOINT_URL_DATAZONE, AWS_ENDPOINT_URL or the AWS config)",
        )
        _check_region(session, client.meta.region_name, client.meta.endpoint_url)
    return cast("DataZoneClient", client)


def _check_region(session: botocore.session.Session, region: str, endpoint_url: str) -> None:
    """A region no AWS partition has (a typo: us-esat-1) is bad input, found before any call.

    Its endpoint would not resolve, and a wait would retry that as a network
    fault for minutes. Only for AWS's own endpoints: behind an endpoint
    override (a simulator, a proxy) the region only signs the requests. A
    known region that cannot be reached stays a fault, retried.
    """
    try:
        resolver: Any = getattr(session, "_get_internal_component")("endpoint_resolver")  # noqa: B009
        partitions = resolver._endpoint_data["partitions"]
        known = {name for partition in partitions for name in partition["regions"]}
        suffixes = {
            str(partition[key])
            for partition in partitions
            for key in ("dnsSuffix", "dualStackDnsSuffix")
            if key in partition
        } | {"api.aws"}
    except (AttributeError, KeyError, TypeError, bce.BotoCoreError):
        return  # botocore keeps its endpoint data elsewhere: no check rather than a wrong one
    host = urlsplit(endpoint_url).hostname or ""
    if region in known or not any(host.endswith("." + suffix) for suffix in suffixes):
        return
    import difflib  # noqa: PLC0415

    close = difflib.get_close_matches(region, sorted(known), n=3, cutoff=0.8)
    close.sort(key=lambda name: sorted(name) != sorted(region))  # a transposition first
    hint = f"did you mean {' or '.join(close[:2])}? " if close else ""
    raise InvalidRequestError(
        f"unknown AWS region {region!r}: no AWS partition has it ({hint}a region newer than "
        f"this botocore, {botocore.__version__}, needs a newer botocore)"
    )


def _no_profile(name: object) -> str:
    """The message for a profile the AWS config does not have, naming the ones it has."""
    try:
        known = sorted(botocore.session.Session().available_profiles)
    except (bce.BotoCoreError, OSError):
        known = []
    where = os.environ.get("AWS_CONFIG_FILE") or "~/.aws/config"
    have = f"it has: {', '.join(known)}" if known else "it has none"
    return (
        f"AWS profile {name!r} not found in {where} ({have}): name one it has (--profile, "
        "AWS_PROFILE) or leave the profile unset"
    )


# ---------------------------------------------------------------------------
# Building a client for DataZone alone, without botocore's work for every service
#
# A botocore session builds the very client boto3's would (boto3 only adds
# resources, which poller does not use), and skips importing boto3 and
# s3transfer. Three more savings, for a client that only ever speaks to
# DataZone (benchmarks/bench_cli_startup.py; ~20% of a bare boto3 script):
# botocore's JSON data (the 1.1 MB DataZone model, the 1.3 MB endpoints.json)
# is parsed into plain dicts rather than OrderedDicts, about half the time;
# the DataZone folder is looked up alone, where botocore lists every one of
# ~450 services' folders to see that DataZone is among them; and only the
# built-in event handlers that can fire for DataZone are registered.


class _JSONFileLoader(botocore.loaders.JSONFileLoader):
    """botocore's model loader, parsing into plain dicts (ordered too, and twice as fast)."""

    def load_file(self, file_path: str) -> Any:
        for ext, opener in ((".json", open), (".json.gz", gzip.open)):
            if os.path.isfile(file_path + ext):
                with opener(file_path + ext, "rb") as f:
                    return json.loads(f.read().decode("utf-8"))
        return None


class _DataZoneLoader(botocore.loaders.Loader):
    """botocore's data loader, for a session that builds DataZone clients only."""

    FILE_LOADER_CLASS = _JSONFileLoader

    def list_available_services(self, type_name: str) -> list[str]:
        # Asked before every model is loaded, to tell an unknown service apart.
        try:
            self.list_api_versions("datazone", type_name)
        except bce.DataNotFoundError:
            return super().list_available_services(type_name)
        return ["datazone"]


def _for_datazone(event_name: str) -> bool:
    """Whether a handler registered for ``event_name`` can fire for a DataZone client."""
    parts = event_name.split(".")
    return len(parts) < 2 or parts[1] in ("*", "datazone")


def _session(profile_name: str | None) -> botocore.session.Session:
    """A botocore session with only the built-in handlers DataZone calls can fire."""
    handlers = [spec for spec in botocore.handlers.BUILTIN_HANDLERS if _for_datazone(spec[0])]
    if any(len(spec) != 2 for spec in handlers):
        # A handler that must run first or last: botocore registers it as it should.
        session = botocore.session.Session(profile=profile_name)
    else:
        session = botocore.session.Session(profile=profile_name, include_builtin_handlers=False)
        for event_name, handler in handlers:
            session.register(event_name, handler)
    # One loader per session, as botocore has it: the resolver of each fills
    # defaults into the endpoint data it loaded, so two sessions (threads)
    # must not share them.
    data_path = session.get_config_variable("data_path")
    paths = data_path.split(os.pathsep) if data_path else []
    session.register_component("data_loader", _DataZoneLoader(extra_search_paths=paths))
    parsers = session.get_component("response_parser_factory")
    parsers.set_parser_defaults(timestamp_parser=utc_timestamp)
    return session


def utc_timestamp(value: object) -> datetime:
    """A response's timestamp as botocore reads it, but epoch seconds straight to UTC.

    DataZone sends epoch seconds; botocore's own parser makes each a datetime in
    the local zone through dateutil (a fifth of the CPU of reading a listing of
    ten runs), which `JobRun` then turns into UTC. Anything else (a string, an
    epoch the platform cannot convert) goes to botocore's parser, as before.
    """
    if isinstance(value, int | float) and not isinstance(value, bool):
        try:
            return datetime.fromtimestamp(value, UTC)
        except (OverflowError, OSError, ValueError):
            pass
    # Typed for strings, botocore's parser takes what a response holds (numbers too).
    parsed: datetime = botocore.utils.parse_timestamp(cast(str, value))
    return parsed


def fetch_job_run(client: JobRunClient, domain_id: str, job_run_id: str) -> JobRun:
    """One GetJobRun call, parsed; any failure is raised as a classified CallFault."""
    try:
        response = client.get_job_run(domainIdentifier=domain_id, identifier=job_run_id)
        run = JobRun.from_response(response)
    except Exception as exc:
        fault = classify(exc)
        _otel.called(client, "GetJobRun", fault or exc)  # otel: poller.calls
        if fault is None:
            raise
        raise fault from exc
    _otel.called(client, "GetJobRun", None)  # otel: poller.calls
    return run


#: The most runs one ListJobRuns page holds.
PAGE_SIZE = 50


def list_job_runs(
    client: Any,
    domain_id: str,
    job_id: str,
    *,
    status: str | None = None,
    max_results: int = PAGE_SIZE,
    next_token: str | None = None,
) -> tuple[list[JobRun], str | None]:
    """One ListJobRuns page, newest first: the job's runs (of ``status`` only, if given)
    after ``next_token``'s page, and the next page's token (None on the last page).

    Summaries that cannot be read are left out. Any failure is raised as a
    classified CallFault, as `fetch_job_run` does; a client without
    ``list_job_runs`` (one shaped only for GetJobRun) is an INVALID fault.
    """
    kwargs: dict[str, Any] = {
        "domainIdentifier": domain_id,
        "jobIdentifier": job_id,
        "sortOrder": "DESCENDING",
        "maxResults": max_results,
    }
    if status is not None:
        kwargs["status"] = status
    if next_token is not None:
        kwargs["nextToken"] = next_token
    lister = getattr(client, "list_job_runs", None)
    if lister is None:
        raise CallFault(
            FaultKind.INVALID,
            "UnsupportedOperation",
            f"the client ({type(client).__name__}) has no list_job_runs",
        )
    try:
        page = lister(**kwargs)
        runs = [
            run for item in page.get("items", []) if (run := JobRun.from_summary(domain_id, item))
        ]
    except Exception as exc:
        fault = classify(exc)
        _otel.called(client, "ListJobRuns", fault or exc)  # otel: poller.calls
        if fault is None:
            raise
        raise fault from exc
    _otel.called(client, "ListJobRuns", None)  # otel: poller.calls
    return runs, page.get("nextToken") or None


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
    fault = _classify(exc)
    if fault is not None:
        # Every message may quote a URL (botocore's do): none leaves with its userinfo.
        fault = CallFault(fault.kind, fault.error_type, redact(fault.message))
    return fault


def _classify(exc: BaseException) -> CallFault | None:
    if isinstance(exc, bce.ClientError):
        return _client_error(exc)
    name = type(exc).__name__
    if isinstance(exc, _CREDENTIAL_ERRORS):
        return CallFault(FaultKind.DENIED, name, f"no usable AWS credentials: {exc}")
    certificate = next(_causes(exc, ssl.SSLCertVerificationError), None)
    if certificate is not None:
        # The CA bundle or the endpoint is wrong: retrying cannot fix either.
        url = exc.kwargs.get("endpoint_url") if isinstance(exc, bce.BotoCoreError) else None
        server = f" for {_origin(str(url))}" if url else ""
        return CallFault(
            FaultKind.INVALID,
            "SSLCertVerificationError",
            f"TLS certificate verification failed{server}: {certificate}; if the endpoint is "
            "right, trust its certificate with AWS_CA_BUNDLE (or the client's verify / ca_bundle)",
        )
    if isinstance(exc, bce.HTTPClientError) and isinstance(exc.kwargs.get("error"), ValueError):
        # urllib3 refused the URL itself (an unsupported scheme, a bad host):
        # a bad endpoint setting, not a fault of the network.
        return CallFault(FaultKind.INVALID, name, f"the endpoint URL cannot be used: {exc}")
    if isinstance(exc, _TRANSIENT_ERRORS):
        return CallFault(FaultKind.TRANSIENT, name, str(exc) or name)
    if isinstance(exc, bce.BotoCoreError):
        # Parameter validation, endpoint resolution and the like: retrying
        # cannot help, and the text says what to fix.
        return CallFault(FaultKind.INVALID, name, str(exc))
    where = _raised_in(exc)
    if where == "parser" and isinstance(exc, Exception):
        # botocore's parser raises builtin errors (UnicodeDecodeError,
        # ValueError, TypeError, AttributeError...) on a body it cannot read:
        # a garbled answer, retried like any other bad answer.
        return CallFault(
            FaultKind.TRANSIENT,
            MalformedResponseError.__name__,
            f"the response could not be parsed: {name}: {exc}",
        )
    if where == "botocore" and isinstance(exc, ValueError):
        # botocore (or what it calls) refused an input while building the
        # request, e.g. a caller's client whose endpoint has a port out of range.
        return CallFault(FaultKind.INVALID, name, f"the request could not be made: {exc}")
    # Not botocore's: a bug, which should surface as itself, not be retried.
    return None


def _client_error(exc: bce.ClientError) -> CallFault:
    error = exc.response.get("Error", {})
    code = str(error.get("Code") or "")
    message = str(error.get("Message") or "") or str(exc)
    metadata = exc.response.get("ResponseMetadata", {})
    status = int(metadata.get("HTTPStatusCode") or 0)
    if code in _THROTTLE_CODES or status == 429:
        kind = FaultKind.THROTTLE
    elif code == "ResourceNotFoundException" or status == 404:
        kind = FaultKind.NOT_FOUND
    elif code in _DENIED_CODES or status in (401, 403):
        kind = FaultKind.DENIED
    elif status >= 500 or code in ("InternalServerException", "ServiceUnavailable"):
        # Includes a proxy's 502/503/504 HTML page, which has no AWS error code.
        kind = FaultKind.TRANSIENT
    elif 300 <= status < 400:
        # botocore does not follow redirects, and DataZone never sends one: the
        # endpoint setting points at something else (a moved host, a portal).
        location = metadata.get("HTTPHeaders", {}).get("location")
        to = f" to {location}" if location else ""
        return CallFault(
            FaultKind.INVALID,
            code or f"HTTP {status}",
            f"the endpoint answered with a redirect (HTTP {status}){to}, which poller does "
            "not follow: set the endpoint URL to the DataZone endpoint itself",
        )
    else:
        kind = FaultKind.INVALID
    return CallFault(kind, code or f"HTTP {status}", message)


def _causes(exc: BaseException, kind: type[BaseException]) -> Iterator[BaseException]:
    """The exceptions of type ``kind`` behind ``exc``: causes, contexts, and wrapped errors."""
    seen: set[int] = set()
    todo: list[object] = [exc]
    while todo:
        item = todo.pop()
        if not isinstance(item, BaseException) or id(item) in seen:
            continue
        seen.add(id(item))
        if isinstance(item, kind):
            yield item
        # botocore keeps urllib3's error in kwargs["error"]; urllib3 keeps ssl's in args.
        kwargs = getattr(item, "kwargs", None)
        wrapped = list(kwargs.values()) if isinstance(kwargs, dict) else []
        todo += [item.__cause__, item.__context__, *item.args, *wrapped]


def _raised_in(exc: BaseException) -> str | None:
    """Where below poller's last frame ``exc`` was raised: "parser", "botocore", or None."""
    below: list[str] = []
    for frame, _ in traceback.walk_tb(exc.__traceback__):
        module = str(frame.f_globals.get("__name__", ""))
        if module == "poller" or module.startswith("poller."):
            below = []  # only what poller's own code called counts
        else:
            below.append(module)
    if any(m == "botocore.parsers" for m in below):
        return "parser"
    if any(m == "botocore" or m.startswith("botocore.") for m in below):
        return "botocore"
    return None


def _origin(url: str) -> str:
    """``scheme://host:port`` of a URL, without its userinfo; the URL itself if unparseable."""
    try:
        parts = urlsplit(url)
    except ValueError:
        return redact(url)
    host = parts.netloc.rpartition("@")[2]
    return f"{parts.scheme}://{host}" if parts.scheme and host else redact(url)
