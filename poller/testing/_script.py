"""The values that script what the simulator answers: RunScript, Fault, Lineage.

They are plain frozen data with no I/O, so a test can build, compare and reuse
them freely; the server in ``_simulator`` is the only thing that interprets them.
"""

from __future__ import annotations

import http
import itertools
import json
import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

__all__ = [
    "ERROR_MESSAGE_STATUSES",
    "TERMINAL_STATUSES",
    "Fault",
    "Lineage",
    "RunScript",
]

#: Statuses after which DataZone never changes a run again.
TERMINAL_STATUSES = frozenset(
    {"SUCCESS", "PARTIALLY_SUCCEEDED", "FAILED", "ABORTED", "TIMED_OUT", "CANCELED"}
)
#: Statuses for which the service fills ``error.message``.
ERROR_MESSAGE_STATUSES = TERMINAL_STATUSES - {"SUCCESS"}

_FAULT_KINDS = (
    "throttle",
    "internal",
    "http",
    "error",
    "reset",
    "malformed",
    "delay",
    "override",
)


def _take(d: Mapping[str, Any], key: str, kind: type | tuple[type, ...], default: Any) -> Any:
    """Read an optional key of a scenario dict, rejecting wrong JSON types by name."""
    if key not in d:
        return default
    value = d[key]
    kinds = kind if isinstance(kind, tuple) else (kind,)
    # bool is an int subclass, but a JSON `true` where a number belongs is a typo, not 1.
    if not isinstance(value, kinds) or (isinstance(value, bool) and bool not in kinds):
        expected = " or ".join("null" if k is type(None) else k.__name__ for k in kinds)
        raise ValueError(f"{key!r} must be {expected}, got {value!r}")
    return value


def _reject_unknown(d: Mapping[str, Any], allowed: set[str], what: str) -> None:
    unknown = sorted(set(d) - allowed)
    if unknown:
        raise ValueError(f"unknown key(s) in {what}: {', '.join(unknown)}")


def _require_mapping(d: object, what: str) -> Mapping[str, Any]:
    if not isinstance(d, Mapping):
        raise ValueError(f"{what} must be an object, got {d!r}")
    return d


#: Every status GetJobRun documents.
KNOWN_STATUSES = frozenset({"SCHEDULED", "IN_PROGRESS", *TERMINAL_STATUSES})


def _check_status(status: str) -> None:
    """A scenario's status must be one DataZone has: a misspelled one would never end a wait."""
    if status in KNOWN_STATUSES:
        return
    import difflib  # noqa: PLC0415

    close = difflib.get_close_matches(status.upper(), sorted(KNOWN_STATUSES), n=1)
    hint = f" (did you mean {close[0]}?)" if close else ""
    raise ValueError(
        f"unknown status {status!r}{hint}: GetJobRun answers one of "
        f'{", ".join(sorted(KNOWN_STATUSES))}; set "unknown_statuses": true to serve a '
        "status DataZone may add"
    )


@dataclass(frozen=True, slots=True)
class Fault:
    """One scripted bad answer to a GetJobRun call. Build it with a constructor.

    A fault in ``RunScript.statuses`` answers the call that reaches it and does
    not change the run's status.
    """

    kind: str
    status: int = 0
    code: str | None = None
    message: str = ""
    body: str = ""
    content_type: str = "application/json"
    seconds: float = 0.0

    def __post_init__(self) -> None:
        if self.kind not in _FAULT_KINDS:
            raise ValueError(f"unknown fault kind {self.kind!r}; expected one of {_FAULT_KINDS}")
        if self.seconds < 0:
            raise ValueError("a delay cannot be negative")

    @classmethod
    def throttle(cls, message: str = "Rate exceeded") -> Fault:
        """429 ThrottlingException, what DataZone answers over its request rate."""
        return cls("throttle", 429, "ThrottlingException", message)

    @classmethod
    def internal(
        cls, message: str = "An internal error occurred. Please try again later."
    ) -> Fault:
        """500 InternalServerException."""
        return cls("internal", 500, "InternalServerException", message)

    @classmethod
    def http(cls, status: int, body: str | None = None, content_type: str = "text/html") -> Fault:
        """A raw error page with no ``x-amzn-ErrorType``, as a proxy or load balancer answers.

        The default body is an nginx-style page naming ``status``.
        """
        if body is None:
            try:
                phrase = http.HTTPStatus(status).phrase
            except ValueError:
                phrase = "Error"
            title = f"{status} {phrase}"
            body = (
                f"<html><head><title>{title}</title></head><body>"
                f"<center><h1>{title}</h1></center></body></html>"
            )
        return cls("http", status, None, "", body, content_type)

    @classmethod
    def error(cls, code: str, status: int, message: str | None = None) -> Fault:
        """Any AWS-style error: ``x-amzn-ErrorType: code`` and a JSON ``message``."""
        return cls("error", status, code, message or f"{code} (simulated by poller.testing)")

    @classmethod
    def reset(cls) -> Fault:
        """Close the TCP connection without answering."""
        return cls("reset")

    @classmethod
    def malformed(cls, body: str | bytes = "this is not json") -> Fault:
        """200 whose body is not the JSON the model expects.

        ``bytes`` are sent as they are, invalid UTF-8 included (``b"\\xff\\xfe{"``);
        they are kept as a str with lone surrogates (``errors="surrogateescape"``),
        which is also how a scenario file spells raw bytes (``"\\udcff"`` is 0xff).
        """
        if isinstance(body, bytes):
            body = body.decode("utf-8", "surrogateescape")
        return cls("malformed", 200, None, "", body, "application/json")

    @classmethod
    def override(cls, fields: Mapping[str, Any]) -> Fault:
        """Answer the current status, with these JobRun members replaced by bad values.

        Keys are dotted paths into the GetJobRun JSON, created as needed:
        ``{"createdAt": "yesterday"}`` or
        ``{"details.lineageRunDetails.sqlQueryRunDetails.totalQueriesProcessed": "ten"}``.
        Values are any JSON (None sends ``null``). The rest of the answer is
        the run's normal one, ids and timestamps included.
        """
        fields = _require_mapping(fields, "override 'fields'")
        if not fields or not all(isinstance(k, str) and k for k in fields):
            raise ValueError("override 'fields' must be a non-empty object with string keys")
        try:
            body = json.dumps(dict(fields), sort_keys=True)
        except (TypeError, ValueError) as e:
            raise ValueError(f"override 'fields' must be JSON values: {e}") from None
        return cls("override", body=body)

    @classmethod
    def delay(cls, seconds: float) -> Fault:
        """Answer the current status, but only after ``seconds`` (to trip read timeouts)."""
        return cls("delay", seconds=seconds)

    @classmethod
    def from_dict(cls, d: Mapping[str, Any]) -> Fault:
        """Parse a scenario fault such as ``{"fault": "http", "status": 502}``."""
        d = _require_mapping(d, "a fault")
        kind = d.get("fault")
        if kind == "throttle":
            _reject_unknown(d, {"fault", "message"}, "a throttle fault")
            return cls.throttle(_take(d, "message", str, "Rate exceeded"))
        if kind == "internal":
            _reject_unknown(d, {"fault", "message"}, "an internal fault")
            message = _take(d, "message", str, None)
            return cls.internal(message) if message else cls.internal()
        if kind == "http":
            _reject_unknown(d, {"fault", "status", "body", "content_type"}, "an http fault")
            if "status" not in d:
                raise ValueError("an http fault needs 'status'")
            return cls.http(
                _take(d, "status", int, None),
                _take(d, "body", str, None),
                _take(d, "content_type", str, "text/html"),
            )
        if kind == "error":
            _reject_unknown(d, {"fault", "code", "status", "message"}, "an error fault")
            if "code" not in d or "status" not in d:
                raise ValueError("an error fault needs 'code' and 'status'")
            return cls.error(
                _take(d, "code", str, None),
                _take(d, "status", int, None),
                _take(d, "message", str, None),
            )
        if kind == "reset":
            _reject_unknown(d, {"fault"}, "a reset fault")
            return cls.reset()
        if kind == "malformed":
            _reject_unknown(d, {"fault", "body"}, "a malformed fault")
            return cls.malformed(_take(d, "body", str, "this is not json"))
        if kind == "delay":
            _reject_unknown(d, {"fault", "seconds"}, "a delay fault")
            if "seconds" not in d:
                raise ValueError("a delay fault needs 'seconds'")
            return cls.delay(float(_take(d, "seconds", (int, float), None)))
        if kind == "override":
            _reject_unknown(d, {"fault", "fields"}, "an override fault")
            if "fields" not in d:
                raise ValueError("an override fault needs 'fields'")
            return cls.override(_take(d, "fields", dict, None))
        raise ValueError(f"unknown fault {kind!r}; expected one of {', '.join(_FAULT_KINDS)}")


@dataclass(frozen=True, slots=True)
class Lineage:
    """The ``lineageRunDetails.sqlQueryRunDetails`` a run reports.

    Query times are the run's ``created_at`` plus the offsets, at the latest
    the run's end. A member set to None is left out of the JSON, as the
    service does with members it lacks.
    The real service sends at most 10 error messages; the simulator sends what
    it is given, so clients can be tested against more.
    """

    total_queries_processed: int | None = 42
    num_queries_failed: int | None = 2
    error_messages: Sequence[str] = ("Query 7 failed: Table 'sales.orders_tmp' not found",)
    query_start_offset: float | None = 5.0
    query_end_offset: float | None = 55.0
    while_running: bool = False

    def __post_init__(self) -> None:
        if isinstance(self.error_messages, str):
            raise ValueError("error_messages must be a sequence of strings, not a string")
        # A tuple keeps the frozen value hashable and safe from later mutation.
        object.__setattr__(self, "error_messages", tuple(self.error_messages))

    def to_json(self, created_at: float, ended_at: float | None = None) -> dict[str, Any]:
        """The ``sqlQueryRunDetails`` JSON object for a run created at ``created_at``.

        The queries of a run that ended at ``ended_at`` ended by then too: the
        query times are kept at or before it.
        """
        last = math.inf if ended_at is None else ended_at
        out: dict[str, Any] = {}
        if self.query_start_offset is not None:
            out["queryStartTime"] = min(created_at + self.query_start_offset, last)
        if self.query_end_offset is not None:
            out["queryEndTime"] = min(created_at + self.query_end_offset, last)
        if self.total_queries_processed is not None:
            out["totalQueriesProcessed"] = self.total_queries_processed
        if self.num_queries_failed is not None:
            out["numQueriesFailed"] = self.num_queries_failed
        out["errorMessages"] = list(self.error_messages)
        return out

    @classmethod
    def from_dict(cls, d: Mapping[str, Any]) -> Lineage:
        """Parse the ``"lineage"`` object of a scenario file (keys are the field names)."""
        d = _require_mapping(d, "'lineage'")
        defaults = cls()
        _reject_unknown(
            d,
            {
                "total_queries_processed",
                "num_queries_failed",
                "error_messages",
                "query_start_offset",
                "query_end_offset",
                "while_running",
            },
            "'lineage'",
        )
        messages = _take(d, "error_messages", list, list(defaults.error_messages))
        if not all(isinstance(m, str) for m in messages):
            raise ValueError("'error_messages' must be a list of strings")
        num = (int, float, type(None))
        return cls(
            total_queries_processed=_take(
                d, "total_queries_processed", (int, type(None)), defaults.total_queries_processed
            ),
            num_queries_failed=_take(
                d, "num_queries_failed", (int, type(None)), defaults.num_queries_failed
            ),
            error_messages=tuple(messages),
            query_start_offset=_take(d, "query_start_offset", num, defaults.query_start_offset),
            query_end_offset=_take(d, "query_end_offset", num, defaults.query_end_offset),
            while_running=_take(d, "while_running", bool, False),
        )


@dataclass(frozen=True, slots=True)
class RunScript:
    """What GetJobRun answers for one run. Give exactly one of ``statuses`` or ``timeline``.

    ``statuses``: each GetJobRun call consumes the next item. A string is the
    status to answer (any string: the simulator does not validate statuses); a
    `Fault` answers that call with the fault. Past the end, the last status is
    answered forever; a list of faults alone (a run every call of which is
    throttled, denied, ...) answers its last fault forever, and ListJobRuns
    leaves the run out, as it has no status to show.

    ``timeline``: ``[(0, "SCHEDULED"), (5, "IN_PROGRESS"), (60, "SUCCESS")]``,
    seconds since ``add_run`` by the simulator's clock; the status is that of
    the last entry whose time has come. The first entry must be at 0 and times
    must not decrease.

    ``throttle_rate`` throttles each call with that probability (seeded) before
    the script is consulted, so a throttled call consumes nothing. ``latency``
    is slept before every answer for the run. ``lineage`` is reported once the
    status is terminal (or while IN_PROGRESS too, if ``lineage.while_running``).
    ``unknown_details`` makes ``details`` a member botocore does not know, in
    every answer. ``error_message`` is ``error.message`` for the statuses that
    carry one (PARTIALLY_SUCCEEDED, FAILED, ABORTED, TIMED_OUT, CANCELED).
    """

    statuses: Sequence[str | Fault] | None = None
    timeline: Sequence[tuple[float, str]] | None = None
    throttle_rate: float = 0.0
    latency: float = 0.0
    lineage: Lineage | None = None
    unknown_details: bool = False
    error_message: str | None = None

    def __post_init__(self) -> None:
        if (self.statuses is None) == (self.timeline is None):
            raise ValueError("give exactly one of 'statuses' or 'timeline'")
        if self.statuses is not None:
            if isinstance(self.statuses, str):
                raise ValueError("'statuses' must be a sequence, not a string")
            items = tuple(self.statuses)
            for item in items:
                if not isinstance(item, str | Fault):
                    raise ValueError(f"'statuses' items must be str or Fault, got {item!r}")
            if not items:
                raise ValueError("'statuses' must not be empty")
            if not any(isinstance(item, str) for item in items) and any(
                item.kind in ("delay", "override") for item in items if isinstance(item, Fault)
            ):
                raise ValueError(
                    "'statuses' holds no status, and a delay or override fault answers the "
                    'run\'s status: add the status, e.g. [{"fault": "delay", "seconds": 5}, '
                    '"IN_PROGRESS"]'
                )
            object.__setattr__(self, "statuses", items)
        if self.timeline is not None:
            entries = tuple((float(t), s) for t, s in self.timeline)
            if not entries:
                raise ValueError("'timeline' must not be empty")
            if entries[0][0] != 0:
                raise ValueError("the first 'timeline' entry must be at time 0")
            for (t0, _), (t1, _) in itertools.pairwise(entries):
                if t1 < t0:
                    raise ValueError("'timeline' times must not decrease")
            for _, status in entries:
                if not isinstance(status, str):
                    raise ValueError(f"'timeline' statuses must be strings, got {status!r}")
            object.__setattr__(self, "timeline", entries)
        if not 0.0 <= self.throttle_rate <= 1.0:
            raise ValueError("'throttle_rate' must be between 0 and 1")
        if self.latency < 0:
            raise ValueError("'latency' cannot be negative")
        if self.unknown_details and self.lineage is not None:
            raise ValueError("'unknown_details' replaces 'details'; do not combine it with lineage")

    @classmethod
    def from_dict(cls, d: Mapping[str, Any]) -> RunScript:
        """Parse a scenario's run script: the keys are the field names.

        Faults inside ``statuses`` are objects such as ``{"fault": "throttle"}``
        (see `Fault.from_dict`); ``timeline`` is a list of ``[seconds, status]``.
        """
        d = _require_mapping(d, "a run script")
        _reject_unknown(
            d,
            {
                "statuses",
                "timeline",
                "throttle_rate",
                "latency",
                "lineage",
                "unknown_details",
                "error_message",
                "unknown_statuses",
            },
            "a run script",
        )
        statuses: list[str | Fault] | None = None
        if "statuses" in d:
            raw = _take(d, "statuses", list, None)
            statuses = [s if isinstance(s, str) else Fault.from_dict(s) for s in raw]
        timeline: list[tuple[float, str]] | None = None
        if "timeline" in d:
            timeline = []
            for entry in _take(d, "timeline", list, None):
                ok = (
                    isinstance(entry, list | tuple)
                    and len(entry) == 2
                    and isinstance(entry[0], int | float)
                    and not isinstance(entry[0], bool)
                    and isinstance(entry[1], str)
                )
                if not ok:
                    raise ValueError(f"'timeline' entries must be [seconds, status], got {entry!r}")
                timeline.append((float(entry[0]), entry[1]))
        unknown_statuses = _take(d, "unknown_statuses", bool, False)
        lineage = d.get("lineage")
        script = cls(
            statuses=statuses,
            timeline=timeline,
            throttle_rate=float(_take(d, "throttle_rate", (int, float), 0.0)),
            latency=float(_take(d, "latency", (int, float), 0.0)),
            lineage=None if lineage is None else Lineage.from_dict(lineage),
            unknown_details=_take(d, "unknown_details", bool, False),
            error_message=_take(d, "error_message", (str, type(None)), None),
        )
        if not unknown_statuses:
            for status in [*(s for s in script.statuses or () if isinstance(s, str)),
                           *(s for _, s in script.timeline or ())]:  # fmt: skip
                _check_status(status)
        return script
