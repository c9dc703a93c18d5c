"""OpenTelemetry spans and metrics, when the process uses OpenTelemetry; no-ops otherwise.

poller depends on ``opentelemetry-api`` only (the ``otel`` extra), as
OpenTelemetry asks of libraries: the application picks the SDK and the
exporters and sets the global providers; poller's spans and metrics go
wherever those send them. This module never imports OpenTelemetry itself: a
process that configured a provider has loaded ``opentelemetry.trace`` or
``opentelemetry.metrics`` already, and one that has not pays a dictionary
look-up per wait and nothing more. With the API loaded but no provider set,
spans are non-recording and every hook returns at once.

The hooks (docs/python-api.md, "Observability", lists what they record):

- ``WaitSession`` (``_session.py``): `wait_started` when a wait starts (one
  span, a child of the caller's current span), `WaitSpan.changed` and
  `WaitSpan.retried` at the moments the ``status_changed``, ``throttled`` and
  ``retrying`` log events mark, `wait_finished` when it ends (the span's
  attributes and status; the ``poller.waits`` and ``poller.detection_lag``
  metrics), `WaitSpan.close` when a session ends without a result.
- the DataZone edge (``_datazone.fetch_job_run``, ``_history.list_runs``):
  `called` with each call's answer (``poller.calls``).
- ``CallPool.submit`` (``_runtime.py``): `call_context`, the submitter's
  contextvars with the wait's span current, so a call (and botocore's own
  instrumentation, where installed) runs in its wait's trace.
- ``Budgets.of`` (``_limiter.py``): `watch_budget`, each account's budget,
  whose rate the ``poller.budget.rate`` gauge reads.

`reset` forgets everything (tests); it may also be given providers to use in
place of the global ones.
"""

from __future__ import annotations

import contextlib
import contextvars
import importlib.metadata
import sys
import threading
import time
import weakref
from collections.abc import Iterator
from typing import TYPE_CHECKING, Any

from poller import _home

if TYPE_CHECKING:
    from poller._model import WaitResult
    from poller._policy import CallFault

__all__ = [
    "DETECTION_LAG_BUCKETS",
    "SCOPE",
    "WaitSpan",
    "call_context",
    "called",
    "reset",
    "wait_finished",
    "wait_started",
    "watch_budget",
]

#: The instrumentation scope: the tracer's and the meter's name.
SCOPE = "poller"
#: Seconds from a run's end to the moment poller knew it: sub-second to half an hour.
DETECTION_LAG_BUCKETS = (0.25, 0.5, 1, 2, 5, 10, 20, 30, 60, 120, 300, 600, 1800)
# The outcomes that make a wait's span an error: it could not tell how the
# run ended, or the run did not succeed.
_BAD = frozenset({"failed", "wait_timeout", "error"})
_RPC = {"rpc.system": "aws-api", "rpc.service": "DataZone"}


class _Handles:
    """What the hooks use once OpenTelemetry is loaded: the tracer and the instruments."""

    def __init__(self, tracer_provider: Any = None, meter_provider: Any = None) -> None:
        from opentelemetry import context, metrics, trace  # noqa: PLC0415  (see the module doc)

        self.trace = trace
        self.attach = context.attach
        # Without a provider: proxies, which follow the global provider once one is set.
        try:
            version = importlib.metadata.version("poller")
        except importlib.metadata.PackageNotFoundError:  # run from a source tree
            version = ""
        self.tracer = trace.get_tracer(SCOPE, version, tracer_provider)
        meter = metrics.get_meter(SCOPE, version, meter_provider)
        self.calls = meter.create_counter(
            "poller.calls", "{call}", "DataZone calls made, by operation and answer"
        )
        self.waits = meter.create_counter("poller.waits", "{wait}", "Waits finished, by outcome")
        self.lag = meter.create_histogram(
            "poller.detection_lag",
            "s",
            "From a run's end (its endTime) to the moment poller knew it had ended",
            explicit_bucket_boundaries_advisory=DETECTION_LAG_BUCKETS,
        )
        meter.create_observable_gauge(
            "poller.budget.rate",
            [_rates],
            "{call}/s",
            "The calls a second an account's request budget in this process allows right now",
        )
        self.observation = metrics.Observation


_handles: _Handles | None = None
_given: tuple[Any, Any] | None = None  # providers passed to `reset`
_lock = threading.Lock()
# The span of the wait in progress in this context: its calls run under it.
_current: contextvars.ContextVar[WaitSpan | None] = contextvars.ContextVar(
    "poller_wait_span", default=None
)
# Every account's budget, as the gauge reads them (weak: a forgotten budget drops out).
_budgets: list[tuple[weakref.ref[Any], dict[str, str]]] = []


def _forget_in_child() -> None:
    # A forked child (Airflow's task and trigger processes) may set providers
    # of its own: its handles are looked up again, from them.
    global _handles  # noqa: PLW0603
    _handles = None


_home.in_child(_forget_in_child)


def _get() -> _Handles | None:
    handles = _handles
    if handles is not None or (
        _given is None
        and "opentelemetry.trace" not in sys.modules
        and "opentelemetry.metrics" not in sys.modules
    ):
        return handles
    return _load()


def _load() -> _Handles | None:
    global _handles  # noqa: PLW0603 - the handles are process-wide, like the providers
    with _lock:
        if _handles is None:
            try:
                _handles = _Handles(*(_given or (None, None)))
            except ImportError:  # only part of OpenTelemetry is there: stay off
                return None
        return _handles


def reset(*, tracer_provider: Any = None, meter_provider: Any = None) -> None:
    """Forget the tracer and the instruments (tests); use these providers if given.

    Without providers, poller follows the global ones (``trace.set_tracer_provider``,
    ``metrics.set_meter_provider``) again.
    """
    global _handles, _given  # noqa: PLW0603 - the one home of this state
    with _lock:
        _handles = None
        given = (tracer_provider, meter_provider)
        _given = given if given != (None, None) else None


def watch_budget(limiter: Any, region: str | None = None) -> None:
    """``limiter`` is an account's budget: the ``poller.budget.rate`` gauge reads it.

    One observation per live budget, with the account's ``cloud.region``;
    budgets the process forgot (``poller.testing.reset``) drop out.
    """
    attributes = {"cloud.region": region} if region else {}
    with _lock:
        _budgets[:] = [entry for entry in _budgets if entry[0]() is not None]
        _budgets.append((weakref.ref(limiter), attributes))


def _rates(_options: Any) -> Iterator[Any]:
    handles = _handles
    if handles is None:
        return
    with _lock:
        budgets = [(ref(), attributes) for ref, attributes in _budgets]
    for limiter, attributes in budgets:
        if limiter is not None:
            yield handles.observation(limiter.rate, attributes)


class WaitSpan:
    """One wait's span while it is in progress (only when a tracer provider records it)."""

    __slots__ = ("_token", "region", "span")

    def __init__(self, span: Any) -> None:
        self.span = span
        self.region: str | None = None  # the region of its calls, once one is made
        self._token: contextvars.Token[WaitSpan | None] | None = _current.set(self)

    def changed(self, before: str | None, after: str) -> None:
        """The run's status changed (``status_changed``)."""
        attributes = {"poller.status.to": after}
        if before is not None:
            attributes["poller.status.from"] = before
        self.span.add_event("poller.status_changed", attributes)

    def retried(self, event: str, fault: CallFault, attempt: int, sleep_s: float) -> None:
        """A failed call will be retried (``throttled`` or ``retrying``), in ``sleep_s``."""
        self.span.add_event(
            f"poller.{event}",
            {
                "error.type": fault.error_type,
                "poller.attempt": attempt,
                "poller.sleep_s": round(sleep_s, 3),
            },
        )

    def _leave(self) -> None:
        token, self._token = self._token, None
        if token is not None:
            # Set in another context (a task's, which ends with it): nothing to undo.
            with contextlib.suppress(ValueError):
                _current.reset(token)

    def close(self, polls: int) -> None:
        """The session ends without a result (a poke still waiting, a single read)."""
        self._leave()
        if self.region is not None:
            self.span.set_attribute("cloud.region", self.region)
        self.span.set_attribute("poller.polls", polls)
        self.span.end()


def wait_started(domain_id: str, job_run_id: str, *, resumed: bool = False) -> WaitSpan | None:
    """A wait starts: its span, a child of the current one; None when nothing records it."""
    handles = _get()
    if handles is None:
        return None
    attributes: dict[str, Any] = {
        "cloud.provider": "aws",
        "poller.domain_id": domain_id,
        "poller.job_run_id": job_run_id,
    }
    if resumed:
        attributes["poller.resumed"] = True
    span = handles.tracer.start_span("poller wait", attributes=attributes)
    if not span.is_recording():
        return None
    return WaitSpan(span)


def wait_finished(span: WaitSpan | None, result: WaitResult) -> None:
    """A wait ended with ``result``: its span's attributes and end, and the wait metrics."""
    handles = _get()
    if handles is None:
        return
    outcome = str(result.outcome)
    run = result.job_run
    handles.waits.add(1, {"poller.outcome": outcome})
    if run is not None and run.end_time is not None and run.is_terminal:
        lag = max(time.time() - run.end_time.timestamp(), 0.0)
        handles.lag.record(lag, {"poller.outcome": outcome})
    if span is None:
        return
    span._leave()
    attributes: dict[str, Any] = {
        "poller.outcome": outcome,
        "poller.polls": result.polls,
        "poller.throttled": result.throttled,
        "poller.errors_retried": result.errors_retried,
        "poller.waited_s": result.waited_s,
    }
    if span.region is not None:
        attributes["cloud.region"] = span.region
    if run is not None:
        attributes["poller.status"] = str(run.status)
        if run.job_id is not None:
            attributes["poller.job_id"] = run.job_id
        lineage = run.lineage
        if lineage is not None:
            for name in ("total_queries_processed", "num_queries_failed", "num_queries_succeeded"):
                value = getattr(lineage, name)
                if value is not None:
                    attributes[f"poller.lineage.{name}"] = value
    error_type = None
    if result.error is not None:
        error_type = type(result.error).__name__
    elif outcome in _BAD and run is not None:
        error_type = str(run.status)
    if error_type is not None:
        attributes["error.type"] = error_type
    span.span.set_attributes(attributes)
    if outcome in _BAD:
        description = str(result.error) if result.error is not None else None
        if description is None and run is not None:
            description = run.error_message
        span.span.set_status(handles.trace.Status(handles.trace.StatusCode.ERROR, description))
    span.span.end()


def called(client: Any, method: str, fault: CallFault | BaseException | None) -> None:
    """A DataZone call (``method``) got its answer: ``fault`` None, classified, or a bug."""
    handles = _get()
    if handles is None:
        return
    region = getattr(getattr(client, "meta", None), "region_name", None)
    attributes = {**_RPC, "rpc.method": method, "poller.call.answer": "ok"}
    if isinstance(region, str):
        attributes["cloud.region"] = region
        span = _current.get()
        if span is not None:
            span.region = region
    if fault is not None:
        kind = getattr(fault, "kind", None)
        answer = "unexpected" if kind is None else kind.value
        attributes["poller.call.answer"] = "throttled" if answer == "throttle" else answer
        attributes["error.type"] = getattr(fault, "error_type", None) or type(fault).__name__
    handles.calls.add(1, attributes)


def call_context() -> contextvars.Context:
    """The caller's contextvars for a call to run in, its wait's span current in them."""
    context = contextvars.copy_context()
    span = _current.get()
    handles = _handles
    if span is not None and handles is not None:
        # In the copy only: the caller's own context is not touched.
        context.run(handles.attach, handles.trace.set_span_in_context(span.span))
    return context
