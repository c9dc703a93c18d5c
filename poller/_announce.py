"""The pure decisions of a job watcher: which finished runs to announce, and when to list next.

A watcher announces every run of one job that reaches an end state, once. It
sees the job through ListJobRuns listings (newest run first) and reads each
run it announces with one GetJobRun (lineage is only there). Everything it
decides is a pure function here, on frozen values, with no I/O and no clock;
`poller._watching` only drives them (docs/design.md, "Watching a job").

- `Ledger`: what has been announced. ``since`` is the high-water mark (epoch
  seconds): runs that ended before it are never announced; ``settled`` holds
  the runs at or after it that were dealt with. It is all a watcher must keep
  across restarts (`Ledger.to_json`), and it stays small: `settle` raises the
  mark once a complete listing has nothing left to announce, but never past
  the start of a run the listing still shows going (its end may be reported
  late, and is no earlier than its start).
- `due`: the runs of a listing to read and announce, oldest end first.
- `Outlook` / `next_listing`: when a run of the job can next have ended. A run
  that no listing at time t shows running cannot end before t plus the job's
  shortest plausible duration (its *quiet window*, `JobHistory.quiet_s`); a
  run seen running cannot end before its ``startTime`` plus it; and a job
  that runs on a schedule starts its next run no sooner than the shortest
  plausible gap between its scheduled runs. Until the earliest of these the
  watcher does not list; after it, it lists every ``Cadence.look`` seconds.
- `more_pages` / `reach`: whether a listing's next page can hold a run that
  matters: one ended at or after the mark, or one the last listing showed going.
"""

from __future__ import annotations

import itertools
import math
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, replace
from typing import Any

from poller._history import JobHistory
from poller._model import JobRun, JobRunStatus
from poller.errors import InvalidRequestError

__all__ = [
    "END_STATES",
    "LONGEST",
    "LOOK",
    "Cadence",
    "Ledger",
    "Outlook",
    "due",
    "end_of",
    "more_pages",
    "next_listing",
    "outlook",
    "parse_statuses",
    "reach",
    "reached",
    "settle",
]

#: The six end states a run can reach; a watcher announces these by default.
END_STATES: tuple[str, ...] = tuple(str(s) for s in JobRunStatus if s.outcome is not None)
#: Seconds between two listings while a run may be ending, by default.
LOOK = 25.0
#: Never longer than this between two listings, by default.
LONGEST = 600.0
# A ledger in a store carries its format, so a later one can tell an old one apart.
_VERSION = 1


def parse_statuses(statuses: Iterable[str] | None) -> frozenset[str]:
    """The end states to announce (all six for None); InvalidRequestError for any other value."""
    if statuses is None:
        return frozenset(END_STATES)
    if isinstance(statuses, str):
        statuses = [statuses]
    chosen = frozenset(str(s).upper() for s in statuses)
    unknown = sorted(chosen - set(END_STATES))
    if unknown or not chosen:
        raise InvalidRequestError(
            f"statuses must be end states among {', '.join(END_STATES)}; "
            + (f"not {', '.join(unknown)}" if unknown else "none were given")
        )
    return chosen


def end_of(run: JobRun, listed_at: float) -> float:
    """When ``run`` ended (epoch seconds); a finished run without an ``endTime``: when listed."""
    return run.end_time.timestamp() if run.end_time is not None else listed_at


@dataclass(frozen=True, slots=True)
class Ledger:
    """What a watcher has announced: the high-water mark and the runs settled at or after it.

    ``settled`` holds ``(run_id, end)`` pairs, sorted: the runs announced (or
    given up on) whose end is at or after ``since``. A run is due when it has
    ended at or after ``since`` and is not settled.
    """

    since: float
    settled: tuple[tuple[str, float], ...] = ()

    def has(self, run_id: str) -> bool:
        """True if the run was settled already."""
        return any(rid == run_id for rid, _ in self.settled)

    def add(self, run_id: str, end: float) -> Ledger:
        """The ledger with this run settled (announced, or given up on)."""
        if self.has(run_id):
            return self
        return replace(self, settled=tuple(sorted((*self.settled, (run_id, end)))))

    def to_json(self) -> dict[str, Any]:
        """The ledger as JSON values, for a store (Airflow's asset_state_store)."""
        return {
            "version": _VERSION,
            "since": self.since,
            "settled": [[rid, end] for rid, end in self.settled],
        }

    @classmethod
    def from_json(cls, value: object) -> Ledger | None:
        """A ledger saved by `to_json`; None for anything else (nothing saved, another format)."""
        if not isinstance(value, Mapping) or value.get("version") != _VERSION:
            return None
        since, settled = value.get("since"), value.get("settled")
        if not _is_time(since) or not isinstance(settled, list):
            return None
        pairs = []
        for item in settled:
            if not (
                isinstance(item, list)
                and len(item) == 2
                and isinstance(item[0], str)
                and _is_time(item[1])
            ):
                return None
            pairs.append((item[0], float(item[1])))
        assert isinstance(since, int | float)
        return cls(float(since), tuple(sorted(pairs)))


def _is_time(value: object) -> bool:
    return isinstance(value, int | float) and not isinstance(value, bool) and math.isfinite(value)


def due(
    ledger: Ledger, runs: Iterable[JobRun], statuses: frozenset[str], listed_at: float
) -> list[JobRun]:
    """The runs of a listing to announce: ended in ``statuses`` at or after ``since``, not settled.

    Oldest end first (then by ID), each run once.
    """
    found: dict[str, tuple[float, JobRun]] = {}
    for run in runs:
        if not run.is_terminal or str(run.status) not in statuses or run.id in found:
            continue
        end = end_of(run, listed_at)
        if end >= ledger.since and not ledger.has(run.id):
            found[run.id] = (end, run)
    return [run for _, run in sorted(found.values(), key=lambda pair: (pair[0], pair[1].id))]


def settle(
    ledger: Ledger, runs: Sequence[JobRun], statuses: frozenset[str], listed_at: float
) -> Ledger:
    """After a complete listing: raise ``since`` to the latest end it shows, if nothing is due,
    but not past the earliest start of a run it shows going.

    Once none of the listing's runs is due any more, the mark may rise to the
    latest end among them, and the settled runs before it are forgotten. A
    listing can report an end late (eventually consistent): a run it shows
    going may already have ended, but not before it was created or started,
    so the mark stays at or below that. While a run is still due (not read
    yet, or read still going), the ledger stays as it is.
    """
    if due(ledger, runs, statuses, listed_at):
        return ledger
    ends = [end_of(run, listed_at) for run in runs if run.is_terminal]
    going = [_began(run, listed_at) for run in runs if not run.is_terminal]
    since = max(ledger.since, min([max(ends, default=ledger.since), *going]))
    if since == ledger.since:
        return ledger
    return Ledger(since, tuple(pair for pair in ledger.settled if pair[1] >= since))


def _began(run: JobRun, listed_at: float) -> float:
    """The earliest a run listed going can have ended: its creation or start (else the listing)."""
    times = [t.timestamp() for t in (run.created_at, run.start_time) if t is not None]
    return min(times, default=listed_at)


@dataclass(frozen=True, slots=True)
class Cadence:
    """How often a watcher lists: every ``look`` seconds while a run may be ending, and never
    more than ``longest`` seconds apart (a bound on how late a run that defies the job's
    history is seen)."""

    look: float = LOOK
    longest: float = LONGEST

    def __post_init__(self) -> None:
        if not (math.isfinite(self.look) and self.look > 0):
            raise InvalidRequestError(f"look must be a positive number of seconds, not {self.look}")
        if not (math.isfinite(self.longest) and self.longest >= self.look):
            raise InvalidRequestError(f"longest must be at least look ({self.look} s)")


@dataclass(frozen=True, slots=True)
class Outlook:
    """What one listing says about when a run of the job can next end (epoch seconds).

    ``running``: for each run the listing showed not finished, the time from
    which it may end after ``quiet`` seconds (its ``startTime``, or the listing's
    time for a run not started yet). ``next_start``: the earliest plausible
    creation of the job's next scheduled run, None when the job shows no
    schedule. ``quiet``: the job's shortest plausible run (0: unknown).
    """

    listed_at: float
    quiet: float = 0.0
    running: tuple[float, ...] = ()
    next_start: float | None = None

    @property
    def earliest_end(self) -> float:
        """The earliest time a run of the job not yet seen finished can have ended."""
        new = max(self.listed_at, self.next_start or self.listed_at)
        return min([new, *self.running]) + self.quiet


def outlook(runs: Sequence[JobRun], listed_at: float) -> Outlook:
    """The outlook after a listing of the job's newest ``runs`` made at ``listed_at``."""
    history = JobHistory.of(run for run in runs if run.status == JobRunStatus.SUCCESS)
    quiet = history.quiet_s if history.usable else 0.0
    running = tuple(
        min(run.start_time.timestamp(), listed_at)
        if run.start_time is not None and run.status != JobRunStatus.SCHEDULED
        else listed_at
        for run in runs
        if not run.is_terminal
    )
    return Outlook(listed_at, quiet, running, _next_start(runs))


def _next_start(runs: Sequence[JobRun]) -> float | None:
    """The earliest plausible creation of the next scheduled run, from the gaps between them."""
    created = sorted(
        run.created_at.timestamp()
        for run in runs
        if run.run_mode == "SCHEDULED" and run.created_at is not None
    )
    gaps = JobHistory(tuple(sorted(g for a, b in itertools.pairwise(created) if (g := b - a) > 0)))
    if not gaps.usable:
        return None
    shortest = gaps.quiet_s  # the same lower bound as a duration's: 0 for an erratic schedule
    return created[-1] + shortest if shortest > 0 else None


def next_listing(view: Outlook, cadence: Cadence) -> float:
    """When to list next: at the earliest end a run can have, but ``look`` to ``longest`` apart."""
    soonest = view.listed_at + cadence.look
    latest = view.listed_at + cadence.longest
    return min(max(view.earliest_end, soonest), latest)


def reach(floor: float, going: Iterable[float] | None) -> float:
    """The creation time a listing reads back to: ``floor`` (the earliest end any watcher of
    the job announces), and the creation of each run the last complete listing showed
    going (``going``), wherever its page; every page (-inf) when nothing was listed yet.

    A run created before the floor matters only if it ran across it: the first
    listing cannot tell where such runs are, later ones know them from it.
    """
    if going is None:
        return -math.inf
    return min([floor, *going])


def reached(
    *, more: bool, last: Sequence[JobRun], pages: int, floor: float, limit: int
) -> tuple[bool, float, bool]:
    """Whether a listing of ``pages`` pages (``last`` the last, ``more`` past it) is complete
    for a watch that needs runs created back to ``floor``; how far back it read (-inf: every
    page; ``floor``; inf: not as far as needed); and whether to list again now: it stopped
    short while pages remain below ``limit`` (it was made for the waits, or the watch's
    floor dropped since), rather than at ``limit``.
    """
    if not more:
        return True, -math.inf, False
    if not more_pages(last, floor):
        return True, floor, False
    return False, math.inf, pages < limit


def more_pages(page: Sequence[JobRun], floor: float) -> bool:
    """Whether to read the listing's next page after ``page``: its oldest run may still matter.

    The pages go back in creation time. The next one is read while this one
    ends with a run still going, or with one created at or after ``floor``
    (the earliest end any watcher of the job still announces): an older run
    can only have ended after ``floor`` if it ran across it.
    """
    if not page:
        return False
    oldest = page[-1]
    if not oldest.is_terminal:
        return True
    return oldest.created_at is not None and oldest.created_at.timestamp() >= floor
