"""One wait in progress: feeds the pure core, logs, calls back, builds the result.

The blocking loop, the async loop and the Airflow trigger differ only in how
they call GetJobRun and how they sleep; everything they have in common lives
here so it is written once.
"""

from __future__ import annotations

import random
import time
from collections.abc import Callable
from datetime import datetime
from typing import Any

from poller import _history, log
from poller._model import JobRun, Outcome, WaitResult
from poller._policy import (
    CallFault,
    FaultKind,
    Forecast,
    PollPolicy,
    Step,
    WaitState,
    advance,
    fail,
)
from poller.errors import PollerError, WaitCancelledError

__all__ = ["HEARTBEAT_EVERY", "Clock", "OnChange", "OnStep", "WaitSession", "raise_if_error"]

Clock = Callable[[], float]
OnChange = Callable[[JobRun], object]
# Called after every call with the core's new state and its answer: what a
# progress display needs ("next check in N s") without a log line per poll.
OnStep = Callable[[WaitState, Step], object]

# Non-interactive logs need a sign of life now and then, not one per poll.
HEARTBEAT_EVERY = 60.0


class WaitSession:
    """The state of one wait between calls; not thread-safe, one per wait."""

    def __init__(
        self,
        domain_id: str,
        job_run_id: str,
        policy: PollPolicy,
        *,
        clock: Clock | None = None,
        rng: random.Random | None = None,
        on_change: OnChange | None = None,
        on_step: OnStep | None = None,
        logger: Any = None,
    ) -> None:
        self.domain_id = domain_id
        self.job_run_id = job_run_id
        self.policy = policy
        # Looked up per wait, not bound as a default, so freezegun can patch it.
        self._clock = clock if clock is not None else time.monotonic
        self._rng = rng if rng is not None else random.Random()
        self._on_change = on_change
        self._on_step = on_step
        self._log = logger if logger is not None else log.get_logger()
        self._log = self._log.bind(domain_id=domain_id, job_run_id=job_run_id)
        self.state = WaitState.start(policy, self._clock())
        self._last_news = self.state.started
        # Wall time measured on the wait's own clock from one reading, so run
        # ages (startTime is wall time) follow an injected or scaled clock too.
        self._wall_at_start = time.time()
        self._learned: _history.Learned | None = None
        self._run_started: float | None = None  # the run's start on the wait's clock
        self._start_seen: datetime | None = None
        self._log.info(log.WAIT_STARTED, timeout_s=policy.timeout)

    @property
    def elapsed(self) -> float:
        """Seconds since the wait started."""
        return round(self._clock() - self.state.started, 3)

    def seen(self, run: JobRun) -> Step:
        """A call returned ``run``: what next."""
        before = self.state.last
        now = self._clock()
        learning = self._learned is None
        forecast = self._forecast(run, now)
        self.state, step = advance(self.policy, self.state, run, now, self._rng, forecast)
        if before is None or before.status != run.status:
            self._last_news = now
            self._log.info(
                log.STATUS_CHANGED,
                **{"from": before.status if before else None, "to": run.status},
                elapsed_s=self.elapsed,
            )
            if self._on_change is not None:
                self._on_change(run)
        elif now - self._last_news >= HEARTBEAT_EVERY:
            self._last_news = now
            self._log.info(
                log.HEARTBEAT, status=run.status, elapsed_s=self.elapsed, polls=self.state.polls
            )
        if learning and self._learned is not None:
            self._tell(run, self._learned)
        return self._stepped(step)

    def _tell(self, run: JobRun, learned: _history.Learned) -> None:
        # Once per wait: what the job's history taught, or why it is not used.
        if learned.history is None:
            self._log.info(_history.HISTORY_UNAVAILABLE, job_id=run.job_id, reason=learned.reason)
        else:
            self._log.info(_history.HISTORY, job_id=run.job_id, **learned.history.summary())

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
            self._learned = _history.shared_cache().get((run.domain_id, run.job_id))
            if self._learned is None:
                return None  # not fetched yet: the plain cadence, for now
        if self._learned.history is None:
            return None
        if run.start_time is None:
            # Not started yet: it cannot end before it has run for the quiet window.
            self._run_started = now
        elif run.start_time != self._start_seen:
            self._start_seen = run.start_time
            wall_now = self._wall_at_start + (now - self.state.started)
            self._run_started = now - max(wall_now - run.start_time.timestamp(), 0.0)
        return self.forecast

    def _stepped(self, step: Step) -> Step:
        if self._on_step is not None:
            self._on_step(self.state, step)
        return step

    def failed(self, fault: CallFault) -> Step:
        """A call failed with ``fault``: retry after how long, or stop."""
        self.state, step = fail(self.policy, self.state, fault, self._clock(), self._rng)
        if not step.done:
            event = log.THROTTLED if fault.kind is FaultKind.THROTTLE else log.RETRYING
            self._log.info(
                event,
                error_type=fault.error_type,
                attempt=self.state.retry_attempt,
                sleep_s=round(step.delay, 3),
            )
        return self._stepped(step)

    def interrupted(self) -> Step:
        """The caller stopped the wait."""
        error = WaitCancelledError(
            "the wait was cancelled; the job run itself was not touched", job_run=self.state.last
        )
        return Step(outcome=Outcome.INTERRUPTED, error=error)

    def result(self, step: Step) -> WaitResult:
        """The result of a wait that ended with ``step``; logged as ``finished``."""
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
        if step.error is not None:
            step.error.result = result
        self._log.info(log.FINISHED, **result.to_dict())
        return result


def raise_if_error(result: WaitResult) -> WaitResult:
    """The result, unless the wait could not tell how the run ended: then its error."""
    if isinstance(result.error, PollerError):
        raise result.error
    return result
