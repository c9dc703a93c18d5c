"""A job's listing, decided: when to list, which pages, what a page means, when to give up.

Pure functions on values, like `_policy`: no I/O, no clock, no asyncio. The
engine's `_Watch` and `_Turns` feed them what they know and act on the answer,
so each rule of docs/design.md ("A job's listing") is one function here,
tested with exact values (tests/test_listing.py).
"""

from __future__ import annotations

import enum
import math

from poller._model import JobRun, JobRunStatus
from poller._policy import FaultKind

__all__ = [
    "EXTRA_HORIZON",
    "LATE",
    "LISTING_PAGES",
    "LISTING_TRIES",
    "AfterFailure",
    "Reading",
    "after_failure",
    "answer_by",
    "lookup_by",
    "read_next_page",
    "reading",
    "worth_a_watch",
]

# A history lookup is made only if the budget has a free time within this (s).
EXTRA_HORIZON = 1.0
# The most ListJobRuns pages (of 50 runs) one listing of a job reads.
LISTING_PAGES = 10
# A job's listing throttled or failing this many times in a row ends its watch.
LISTING_TRIES = 3
# How long after its booked time (or after its call went out) a listing may answer
# before the runs waiting on it look for themselves (seconds).
LATE = 0.7
# A listing may lag the run's own answers: one that shows a run SCHEDULED
# again after it was seen started is not believed.
_BACK = JobRunStatus.SCHEDULED
_RETRIED = frozenset({FaultKind.THROTTLE, FaultKind.TRANSIENT})


def worth_a_watch(*, history_claimed: bool, unread: int, readers: int) -> bool:
    """When to list a job: a run of it was just read still going.

    The listing pays for itself when it is the job's history lookup
    (``history_claimed``: this wait is to look the history up) while other
    waits of the fleet have no first answer yet (``unread``; the page may show
    them), or when a second run of the job was read still going (``readers``:
    how many waits read a run of the job by their own call).
    """
    return (history_claimed and unread > 0) or readers > 1


def read_next_page(*, page: int, more: bool, shown: int, deeper: bool = False) -> bool:
    """Which pages: after page ``page`` (0 the first), read the next one only while there
    is ``more`` and this page showed at least two live waits (``shown``) or a job watcher
    needs older runs (``deeper``: `_announce.more_pages`), up to LISTING_PAGES."""
    return more and (shown >= 2 or deeper) and page + 1 < LISTING_PAGES


class Reading(enum.Enum):
    """What a listed item means for a wait of the fleet."""

    IGNORE = "ignore"  # another domain or job: it says nothing of the wait's run
    TAKE = "take"  # the run as listed is the wait's next look
    KEEP = "keep"  # the listing lags (SCHEDULED again): the last status stands
    READ = "read"  # listed finished: read it whole (GetJobRun, for its lineage)


def reading(key: tuple[str, str], item: JobRun, last: JobRun | None) -> Reading:
    """What an item of the listing of job ``key`` (domain, job) means for the wait of its run,
    whose last status was ``last`` (None: not read yet)."""
    domain_id, job_id = key
    if item.domain_id != domain_id or item.job_id not in (None, job_id):
        return Reading.IGNORE
    if item.is_terminal:
        return Reading.READ
    if last is not None and item.status == _BACK and last.status != _BACK:
        return Reading.KEEP
    return Reading.TAKE


class AfterFailure(enum.Enum):
    """What a failed listing leads to."""

    AGAIN = "again"  # booked again, at the budget's next free time
    STOP = "stop"  # the watch ends; its runs go back to their own calls


def after_failure(kind: FaultKind | None, failures: int) -> AfterFailure:
    """When to give up: a throttled or transient failure is tried again while fewer than
    LISTING_TRIES failed in a row (``failures``, this one included); anything else (denied,
    invalid, a fault `classify` does not know: ``kind`` None) stops at once."""
    if kind in _RETRIED and failures < LISTING_TRIES:
        return AfterFailure.AGAIN
    return AfterFailure.STOP


def lookup_by(now: float, deadline: float | None) -> float:
    """The latest time a job's history lookup may be booked at, asked for at ``now`` by a
    wait with ``deadline``: polls before extras. Within EXTRA_HORIZON, or none (with the
    budget full it would take a due poll's slot; it is claimed again later), and never
    after the deadline of the wait that asked."""
    horizon = now + EXTRA_HORIZON
    return horizon if deadline is None else min(deadline, horizon)


def answer_by(*, sent_at: float | None, booked_at: float | None) -> float:
    """When a listing is late: LATE after its call went out (``sent_at``), or after its booked
    time; never (infinity) with neither, as the runs are told when they are not listed."""
    if sent_at is not None:
        return sent_at + LATE
    if booked_at is not None:
        return booked_at + LATE
    return math.inf
