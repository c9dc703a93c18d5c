"""History-aware polling: what a job's past runs say about when this run will end.

A job whose runs always take about ten minutes need not be looked at every
30 s from the start. DataZone lists a job's recent successful runs with their
start and end times (ListJobRuns); from those durations this module derives a
`Forecast` the pure core uses (`_policy.advance`): no look while the run is
surely still going (the *quiet window*), then the plain cadence around its
expected end and after it.

Two parts:

- pure: `JobHistory` (the durations, their quantiles, the quiet window and
  the forecast for one run). No I/O, no clock.
- I/O: `learn` (one ListJobRuns call, never raising: any failure becomes a
  reason to poll on the plain cadence) and `HistoryCache`, the per-process
  cache that makes it at most one call per (domain, job) while fresh.
  A fleet (`_engine`) calls `learn` in the background once a wait's answer is
  not terminal and the job's history is not known, or lists a job's runs of
  any status instead (`list_runs`); `learned_from_listing` takes the history
  from that.
"""

from __future__ import annotations

import math
import statistics
import threading
import time
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from typing import Any

from poller import _home
from poller._datazone import list_job_runs
from poller._model import JobRun, JobRunStatus
from poller._policy import CallFault, FaultKind, Forecast, PollPolicy

__all__ = [
    "FRESH_FOR",
    "HISTORY",
    "HISTORY_UNAVAILABLE",
    "MIN_RUNS",
    "RETRY_AFTER",
    "HistoryCache",
    "JobHistory",
    "Learned",
    "failed",
    "learn",
    "learned_from_listing",
    "list_runs",
    "shared_cache",
    "wants_history",
]

#: Log events: what a wait learned, or why it polls on the plain cadence.
HISTORY = "history"
HISTORY_UNAVAILABLE = "history_unavailable"

#: Fewer finished runs than this say too little: the plain cadence is used.
MIN_RUNS = 5
#: A job's history is reused for this long (seconds) before it is fetched again.
FRESH_FOR = 1800.0
#: After a failed or too-short history, a job's waits try again only after this long.
RETRY_AFTER = 300.0
# The quiet window ends where a lognormal fitted to the durations puts a few
# per cent of runs (this many standard deviations below the mean log-duration),
# widened for a short history, whose spread is less certain.
_QUIET_Z = 2.0
# ... and only when at most this share of runs would end so early in it that
# they are seen later than the plain cadence's own worst (a delay of about half
# the time elapsed): for an erratic job the window would cost more than it saves.
_QUIET_RISK = 0.001
_PLAIN_WORST = 1.5
# Past this quantile of its job's durations a run is "late": history says no more.
_LATE_QUANTILE = 0.95


@dataclass(frozen=True, slots=True)
class JobHistory:
    """The durations (seconds, start to end, ascending) of a job's recent successful runs."""

    durations: tuple[float, ...]

    @classmethod
    def of(cls, runs: Iterable[JobRun]) -> JobHistory:
        """The history of these runs; runs without both times are left out."""
        durations = (run.duration_s for run in runs)
        return cls(tuple(sorted(d for d in durations if d is not None and d > 0)))

    @property
    def runs(self) -> int:
        """How many durations there are."""
        return len(self.durations)

    @property
    def usable(self) -> bool:
        """True with at least MIN_RUNS durations."""
        return self.runs >= MIN_RUNS

    def quantile(self, q: float) -> float:
        """The ``q`` quantile of the durations (linear between order statistics)."""
        if not self.durations:
            raise ValueError("no durations")
        position = q * (self.runs - 1)
        low = math.floor(position)
        high = min(low + 1, self.runs - 1)
        return self.durations[low] + (position - low) * (self.durations[high] - self.durations[low])

    @property
    def p50(self) -> float:
        """The median duration."""
        return self.quantile(0.5)

    @property
    def quiet_s(self) -> float:
        """How long into a run it is very unlikely to have ended: the quiet window's length.

        Durations are taken as lognormal, as run times commonly are. A job
        whose runs vary widely gets no window at all (0.0): erratic jobs are
        polled exactly as without history.
        """
        logs = [math.log(d) for d in self.durations]
        spread = statistics.stdev(logs) if len(logs) > 1 else 0.0
        z = _QUIET_Z * (1 + 2 / len(logs))
        if spread > 0:
            early = statistics.NormalDist().cdf(-z - math.log(_PLAIN_WORST) / spread)
            if early > _QUIET_RISK:
                return 0.0
        return math.exp(statistics.fmean(logs) - z * spread)

    @property
    def late_s(self) -> float:
        """The age past which a run has outlived nearly all of its job's past runs."""
        return self.quantile(_LATE_QUANTILE)

    def forecast(self, started: float) -> Forecast:
        """The forecast for a run that started at ``started`` (the wait's clock)."""
        return Forecast(
            started=started, quiet_until=started + self.quiet_s, late_after=started + self.late_s
        )

    def summary(self) -> dict[str, Any]:
        """What the ``history`` log event reports."""
        return {
            "runs": self.runs,
            "p50_s": round(self.p50, 3),
            "quiet_s": round(self.quiet_s, 3),
            "late_s": round(self.late_s, 3),
        }


@dataclass(frozen=True, slots=True)
class Learned:
    """What a ListJobRuns call taught about a job: a usable history, or why there is none."""

    history: JobHistory | None
    reason: str | None = None
    # How the call itself failed; None only when it got through. The fan-out
    # tells its budget so (a success, a throttle, or neither).
    fault: FaultKind | None = None


Key = tuple[str, str]
Clock = Callable[[], float]

# A history cache drops its stale entries once it holds more than this many.
_PRUNE_FROM = 1024


class HistoryCache:
    """Per-process memory of what each (domain, job) history is; thread-safe.

    A usable history is kept for ``fresh_for`` seconds, a failure or a too
    short history for ``retry_after``. `claim` hands the fetch of a job to
    exactly one caller at a time, so waits of the same job started together
    make one ListJobRuns call between them.
    """

    def __init__(
        self,
        *,
        clock: Clock | None = None,
        fresh_for: float = FRESH_FOR,
        retry_after: float = RETRY_AFTER,
    ) -> None:
        self._clock = clock if clock is not None else time.monotonic
        self._fresh_for = fresh_for
        self._retry_after = retry_after
        self._lock = threading.Lock()
        self._entries: dict[Key, tuple[Learned, float]] = {}
        self._fetching: set[Key] = set()
        # Past this many entries, `put` drops the stale ones (then sets it to twice the rest).
        self._prune_at = _PRUNE_FROM

    def __len__(self) -> int:
        """How many jobs it remembers, fresh or not yet dropped."""
        return len(self._entries)

    def _alive(self, entry: tuple[Learned, float], now: float) -> bool:
        learned, at = entry
        return now - at < (self._fresh_for if learned.history is not None else self._retry_after)

    def _fresh(self, key: Key) -> Learned | None:
        entry = self._entries.get(key)
        if entry is None or not self._alive(entry, self._clock()):
            return None
        return entry[0]

    def get(self, key: Key) -> Learned | None:
        """What is known of this job while it is fresh, else None."""
        with self._lock:
            return self._fresh(key)

    def claim(self, key: Key) -> bool:
        """True if the caller should fetch this job's history now (then `put` or `release`)."""
        with self._lock:
            if key in self._fetching or self._fresh(key) is not None:
                return False
            self._fetching.add(key)
            return True

    def put(self, key: Key, learned: Learned) -> None:
        """Remember what a fetch found; ends the caller's claim. Stale entries are dropped
        as they pile up, so a process that waits on ever new jobs keeps only the fresh."""
        with self._lock:
            now = self._clock()
            self._entries[key] = (learned, now)
            self._fetching.discard(key)
            if len(self._entries) > self._prune_at:
                self._entries = {k: e for k, e in self._entries.items() if self._alive(e, now)}
                self._prune_at = max(_PRUNE_FROM, 2 * len(self._entries))

    def release(self, key: Key) -> None:
        """Give a claim up without a result (the wait was cancelled)."""
        with self._lock:
            self._fetching.discard(key)

    def clear(self) -> None:
        """Forget everything."""
        with self._lock:
            self._entries.clear()
            self._fetching.clear()


_HISTORY = _home.Slot("history", HistoryCache)


def shared_cache() -> HistoryCache:
    """The process-wide cache every wait uses (kept in `_home`)."""
    return _HISTORY.get()


def wants_history(policy: PollPolicy, run: JobRun) -> bool:
    """After ``run`` was read: should this wait fetch its job's history now? Claims it if so.

    Only for a run still going (a finished run costs one GetJobRun and nothing
    else), with history on, and when no fresh answer or fetch in flight exists.
    """
    if not policy.history or run.is_terminal or not run.job_id:
        return False
    return shared_cache().claim((run.domain_id, run.job_id))


def list_runs(
    client: Any,
    domain_id: str,
    job_id: str,
    status: str | None = None,
    token: str | None = None,
) -> tuple[list[JobRun], str | None]:
    """One ListJobRuns page (`_datazone.list_job_runs`): the job's newest runs, of
    ``status`` only if given, after ``token``'s page, and the next page's token.
    A failed call raises its CallFault.
    """
    return list_job_runs(client, domain_id, job_id, status=status, next_token=token)


def _fetch(client: Any, domain_id: str, job_id: str) -> Learned:
    runs, _ = list_job_runs(client, domain_id, job_id, status="SUCCESS")
    return _learned(JobHistory.of(runs))


def _learned(history: JobHistory) -> Learned:
    if not history.usable:
        return Learned(
            None, f"{history.runs} finished run(s) with start and end times, {MIN_RUNS} needed"
        )
    return Learned(history)


def failed(exc: BaseException) -> Learned:
    """What a ListJobRuns call that raised ``exc`` teaches: nothing, and why.

    ``exc`` is the edge's CallFault, or an error it does not know (a bug, or a
    caller's client misbehaving). History is optional, so that is no reason
    to end a wait; but nothing says that call got through either, so it is
    taken as a transient fault: the budget does not count it as a success.
    """
    if isinstance(exc, CallFault):
        return Learned(None, f"ListJobRuns failed: {exc.error_type}: {exc.message}", exc.kind)
    return Learned(None, f"ListJobRuns failed: {type(exc).__name__}: {exc}", FaultKind.TRANSIENT)


def learned_from_listing(domain_id: str, job_id: str, runs: Iterable[JobRun], more: bool) -> bool:
    """Remember the history in a page of the job's runs of any status; False to ask for more.

    A fan-out lists a job's newest runs, whatever their status, to see its
    live runs; the successes among them are the history. Too few of them
    while ``more`` pages exist: False, the caller still holds the claim and
    asks for the successes alone (`learn`).
    """
    learned = _learned(JobHistory.of(r for r in runs if r.status == JobRunStatus.SUCCESS))
    if learned.history is None and more:
        return False
    shared_cache().put((domain_id, job_id), learned)
    return True


def learn(client: Any, domain_id: str, job_id: str) -> Learned:
    """One ListJobRuns call for the job's recent successes, remembered in the cache.

    Never raises: a call that is denied, throttled or fails, or a client
    without ``list_job_runs``, is a Learned with no history, the reason and
    the fault (`failed`).
    """
    try:
        learned = _fetch(client, domain_id, job_id)
    except Exception as exc:
        learned = failed(exc)
    shared_cache().put((domain_id, job_id), learned)
    return learned
