"""One wait in progress: feeds the pure core, logs, calls back, builds the result.

The blocking loop, the async loop and the Airflow trigger differ only in how
they call GetJobRun and how they sleep; everything they have in common lives
here so it is written once.
"""

from __future__ import annotations

import random
import time
from collections.abc import Callable
from dataclasses import replace
from typing import Any

from poller import _history, _otel, log
from poller._model import JobRun, Outcome, WaitResult
from poller._policy import (
    CallFault,
    FaultKind,
    Forecast,
    Jitter,
    PollPolicy,
    Step,
    WaitState,
    advance,
    expire,
    fail,
)
from poller._runtime import REAL, Clock, Seams, wall_of
from poller.errors import PollerError, WaitCancelledError

__all__ = [
    "HEARTBEAT_EVERY",
    "Clock",
    "OnChange",
    "OnStep",
    "Pace",
    "WaitSession",
    "log_retry",
    "raise_if_error",
    "result_document",
]

OnChange = Callable[[JobRun], object]
# Called after every call with the core's new state and its answer: what a
# progress display needs ("next check in N s") without a log line per poll.
OnStep = Callable[[WaitState, Step], object]
# Given the delay the core asked for, the real delay until the next call (a
# fan-out books its turn with the shared budget here); the default is as asked.
Pace = Callable[[float], float]

# Non-interactive logs need a sign of life now and then, not one per poll.
HEARTBEAT_EVERY = 60.0


class WaitSession:
    """The state of one wait between calls; not thread-safe, one per wait."""

    # A fan-out holds one per run: no instance dict, no bound logger each.
    __slots__ = (
        "_clock",
        "_last_news",
        "_last_seen",
        "_learned",
        "_log",
        "_on_change",
        "_on_step",
        "_pace",
        "_resumed",
        "_rng",
        "_run_started",
        "_span",
        "_wall_at_start",
        "domain_id",
        "job_run_id",
        "policy",
        "state",
    )

    def __init__(
        self,
        domain_id: str,
        job_run_id: str,
        policy: PollPolicy,
        *,
        seams: Seams = REAL,
        jitter: Jitter | None = None,
        on_change: OnChange | None = None,
        on_step: OnStep | None = None,
        pace: Pace | None = None,
        started: float | None = None,
        resumed: bool = False,
        last_seen: JobRun | None = None,
    ) -> None:
        # ``resumed``: this session goes on with a wait an earlier session
        # started (the next poke of a sensor), so ``wait_started`` is not
        # logged again, and a status is news only if it differs from
        # ``last_seen``, the status that earlier session saw (None: unknown).
        self.domain_id = domain_id
        self.job_run_id = job_run_id
        self.policy = policy
        # Looked up per wait, not bound as a default, so freezegun can patch it.
        self._clock: Clock = seams.clock if seams.clock is not None else time.monotonic
        # ``jitter``: this wait's own stream (a fan-out's), in place of ``seams.rng``.
        self._rng: Jitter = jitter or seams.rng or random.Random()
        self._on_change = on_change
        self._on_step = on_step
        self._pace = pace
        self._log = seams.logger if seams.logger is not None else log.get_logger()
        # ``started``: when the deadline began, if before now (a fan-out's start).
        self.state = WaitState.start(policy, self._clock() if started is None else started)
        self._last_news = self.state.started
        self._resumed = resumed
        self._last_seen = last_seen
        # The wall time at ``state.started``, from one reading, so run ages
        # (startTime is wall time) follow an injected or scaled clock too, and
        # a fan-out's run created after its start is not taken as older. The
        # wall is the wait's seam, else the process's (``reset(seams=...)``).
        self._wall_at_start = wall_of(seams)() - (self._clock() - self.state.started)
        self._learned: _history.Learned | None = None
        self._run_started: float | None = None  # the run's start on the wait's clock
        # OpenTelemetry: this wait's span, a child of the caller's current one (None: off).
        self._span = _otel.wait_started(domain_id, job_run_id, resumed=resumed)
        if not resumed:
            timeout = policy.timeout
            self._emit(log.WAIT_STARTED, timeout_s=None if timeout is None else round(timeout, 3))

    def paced(self, pace: Pace | None) -> None:
        """From now on ``pace`` turns each delay the core asks for into the real one."""
        self._pace = pace

    def _emit(self, event: str, **fields: Any) -> None:
        self._log.info(event, domain_id=self.domain_id, job_run_id=self.job_run_id, **fields)

    def _note(self, event: str, **fields: Any) -> None:
        """An event at debug level: true, but not news for a person reading the log."""
        self._log.debug(event, domain_id=self.domain_id, job_run_id=self.job_run_id, **fields)

    @property
    def elapsed(self) -> float:
        """Seconds since the wait started."""
        return round(self._clock() - self.state.started, 3)

    def time_left(self) -> float:
        """Seconds to the deadline on the wait's clock (never negative); infinite without one."""
        return self.state.time_left(self._clock())

    def seen(self, run: JobRun, *, polled: bool = True) -> Step:
        """A call returned ``run`` (``polled=False``: its job's listing showed it): what next."""
        before = self.state.last if self.state.last is not None else self._last_seen
        now = self._clock()
        learning = self._learned is None
        forecast = self._forecast(run, now)
        self.state, step = advance(
            self.policy, self.state, run, now, self._rng, forecast, polled=polled
        )
        if (before is None and not self._resumed) or (
            before is not None and before.status != run.status
        ):
            self._last_news = now
            self._emit(
                log.STATUS_CHANGED,
                **{"from": before.status if before else None, "to": run.status},
                elapsed_s=self.elapsed,
            )
            if self._span is not None:
                self._span.changed(str(before.status) if before else None, str(run.status))
            if self._on_change is not None:
                self._on_change(run)
        elif now - self._last_news >= HEARTBEAT_EVERY:
            self._last_news = now
            self._emit(
                log.HEARTBEAT, status=run.status, elapsed_s=self.elapsed, polls=self.state.polls
            )
        if learning and self._learned is not None:
            self._tell(run, self._learned)
        return self._stepped(step)

    def _tell(self, run: JobRun, learned: _history.Learned) -> None:
        # Once per wait: what the job's history taught, or why it is not used. No
        # history is no news (a young job has fewer than 5 past runs; the cadence is
        # the plain one then), so it is said at debug level.
        if learned.history is None:
            self._note(_history.HISTORY_UNAVAILABLE, job_id=run.job_id, reason=learned.reason)
        else:
            self._emit(_history.HISTORY, job_id=run.job_id, **learned.history.summary())

    @property
    def forecast(self) -> Forecast | None:
        """What the job's history says about this run, once known; None without one."""
        learned = self._learned
        if learned is None or learned.history is None or self._run_started is None:
            return None
        return learned.history.forecast(self._run_started)

    def _forecast(self, run: JobRun, now: float) -> Forecast | None:
        if not self.policy.history or run.is_terminal or not run.job_id:
            return None
        if self._learned is None:
            # Shared with every wait of the job: a pointer per wait, no copy.
            self._learned = _history.shared_cache().get((run.domain_id, run.job_id))
            if self._learned is None:
                return None  # not fetched yet: the plain cadence, for now
        if self._learned.history is None:
            return None
        if run.start_time is None:
            # Not started yet: it cannot end before it has run for the quiet window.
            self._run_started = now
        else:
            wall_now = self._wall_at_start + (now - self.state.started)
            self._run_started = now - max(wall_now - run.start_time.timestamp(), 0.0)
        return self.forecast

    def _stepped(self, step: Step) -> Step:
        if self._pace is not None and not step.done:
            step = replace(step, delay=self._pace(step.delay))
        if self._on_step is not None:
            self._on_step(self.state, step)
        return step

    def failed(self, fault: CallFault) -> Step:
        """A call failed with ``fault``: retry after how long, or stop."""
        self.state, step = fail(self.policy, self.state, fault, self._clock(), self._rng)
        step = self._stepped(step)
        # After pacing: the time until the next call, whatever it waits for.
        log_retry(
            self._log, fault, self.state, step, domain_id=self.domain_id, job_run_id=self.job_run_id
        )
        if self._span is not None and not step.done:
            event = log.THROTTLED if fault.kind is FaultKind.THROTTLE else log.RETRYING
            self._span.retried(event, fault, self.state.retry_attempt, step.delay)
        return step

    def expired(self, why: str) -> Step:
        """The deadline passed before another call could be made; ``why`` says what stopped it."""
        return expire(self.state, why)

    def interrupted(self) -> Step:
        """The caller stopped the wait."""
        error = WaitCancelledError(
            "the wait was cancelled; the job run itself was not touched", job_run=self.state.last
        )
        return Step(outcome=Outcome.INTERRUPTED, error=error)

    def result(self, step: Step, *, running: bool = False) -> WaitResult:
        """The result of a wait that ended with ``step``; logged as ``finished``.

        ``running``: a read (``poller status``) found the run still going; its
        document, logged and printed alike (`result_document`), has no outcome.
        """
        assert step.outcome is not None, "result() of a step that is not done"
        result = WaitResult(
            domain_id=self.domain_id,
            job_run_id=self.job_run_id,
            outcome=step.outcome,
            job_run=self.state.last,
            polls=self.state.polls,
            throttled=self.state.throttled,
            errors_retried=self.state.errors_retried,
            waited_s=self.elapsed,
            error=step.error,
        )
        lineage = result.job_run.lineage if result.job_run else None
        if lineage is not None and lineage.inconsistency:
            self._log.warning(
                log.LINEAGE_INCONSISTENT,
                domain_id=self.domain_id,
                job_run_id=self.job_run_id,
                reported=lineage.inconsistency,
            )
        self._log.info(log.FINISHED, **result_document(result, running=running))
        _otel.wait_finished(self._span, result)
        self._span = None
        return result

    def close(self) -> None:
        """The session ends without a result: a poke still waiting, a single read.

        Its span (if any) ends with what it saw; ``result`` needs no ``close``.
        """
        if self._span is not None:
            self._span.close(self.state.polls)
            self._span = None


def result_document(result: WaitResult, *, running: bool = False) -> dict[str, Any]:
    """The result document; a read of a run still ``running`` has no outcome yet (null)."""
    document = result.to_dict()
    if running:
        document["outcome"] = None
    return document


def log_retry(logger: Any, fault: CallFault, state: WaitState, step: Step, **ids: str) -> None:
    """Log a failed call that will be retried: ``throttled`` or ``retrying``, and when."""
    if not step.done:
        event = log.THROTTLED if fault.kind is FaultKind.THROTTLE else log.RETRYING
        logger.info(
            event,
            **ids,
            error_type=fault.error_type,
            attempt=state.retry_attempt,
            sleep_s=round(step.delay, 3),
        )


def raise_if_error(result: WaitResult) -> WaitResult:
    """The result, unless the wait could not tell how the run ended: then its error."""
    if isinstance(result.error, PollerError):
        raise result.error
    return result
