"""A job's listing, decided: the pure rules of `_listing`, with exact values."""

from __future__ import annotations

import math

import pytest

from poller._listing import (
    EXTRA_HORIZON,
    LATE,
    LISTING_PAGES,
    LISTING_TRIES,
    AfterFailure,
    Reading,
    after_failure,
    answer_by,
    lookup_by,
    read_next_page,
    reading,
    worth_a_watch,
)
from poller._model import JobRun
from poller._policy import FaultKind

KEY = ("dzd_abc123", "job-1")


def listed(status: str, *, domain: str = "dzd_abc123", job: str | None = "job-1") -> JobRun:
    return JobRun(domain_id=domain, id="run-1", status=status, job_id=job)


@pytest.mark.parametrize(
    ("claimed", "unread", "readers", "watch"),
    [
        (True, 3, 1, True),  # the history lookup, and others may be on the page
        (True, 0, 1, False),  # the history lookup alone: ask for the successes only
        (False, 5, 1, False),  # history known, one run read: its own calls are enough
        (False, 0, 2, True),  # a second run of the job read still going
        (True, 0, 2, True),
    ],
)
def test_a_job_is_listed_when_the_listing_pays_for_itself(
    claimed: bool, unread: int, readers: int, watch: bool
) -> None:
    """The history lookup while others are unread, or a second reader of the job."""
    assert worth_a_watch(history_claimed=claimed, unread=unread, readers=readers) is watch


def test_the_next_page_is_read_while_pages_show_several_waits_up_to_ten() -> None:
    """Two waits on a page with more to come: read on; one, or no more, or page 10: stop."""
    assert read_next_page(page=0, more=True, shown=2) is True
    assert read_next_page(page=0, more=True, shown=1) is False
    assert read_next_page(page=0, more=False, shown=50) is False
    assert read_next_page(page=LISTING_PAGES - 2, more=True, shown=50) is True
    assert read_next_page(page=LISTING_PAGES - 1, more=True, shown=50) is False


def test_the_next_page_is_read_while_a_job_watcher_needs_older_runs_up_to_ten() -> None:
    """A watcher needs the pages past this one: read on, though it shows no wait; no more,
    or page 10: stop."""
    assert read_next_page(page=0, more=True, shown=0, deeper=True) is True
    assert read_next_page(page=0, more=True, shown=0, deeper=False) is False
    assert read_next_page(page=0, more=False, shown=0, deeper=True) is False
    assert read_next_page(page=LISTING_PAGES - 1, more=True, shown=0, deeper=True) is False


@pytest.mark.parametrize(
    ("item", "last", "what"),
    [
        (listed("IN_PROGRESS"), None, Reading.TAKE),
        (listed("IN_PROGRESS"), listed("SCHEDULED"), Reading.TAKE),
        (listed("SCHEDULED"), listed("IN_PROGRESS"), Reading.KEEP),  # the listing lags
        (listed("SCHEDULED"), listed("SCHEDULED"), Reading.TAKE),
        (listed("SCHEDULED"), None, Reading.TAKE),
        (listed("FAILED"), listed("IN_PROGRESS"), Reading.READ),  # its lineage is in GetJobRun
        (listed("SUCCESS"), None, Reading.READ),
        (listed("FAILED", domain="dzd_other"), listed("IN_PROGRESS"), Reading.IGNORE),
        (listed("FAILED", job="job-2"), listed("IN_PROGRESS"), Reading.IGNORE),
        (listed("IN_PROGRESS", job=None), None, Reading.TAKE),  # an item without a job id
        (listed("SOMETHING_NEW"), listed("IN_PROGRESS"), Reading.TAKE),  # unknown: still going
    ],
)
def test_what_a_listed_item_means_for_the_wait_of_its_run(
    item: JobRun, last: JobRun | None, what: Reading
) -> None:
    """Only for its own domain and job; a lagging SCHEDULED is not believed; finished is read."""
    assert reading(KEY, item, last) is what


@pytest.mark.parametrize(
    ("kind", "failures", "then"),
    [
        (FaultKind.THROTTLE, 1, AfterFailure.AGAIN),
        (FaultKind.TRANSIENT, LISTING_TRIES - 1, AfterFailure.AGAIN),
        (FaultKind.THROTTLE, LISTING_TRIES, AfterFailure.STOP),
        (FaultKind.DENIED, 1, AfterFailure.STOP),
        (FaultKind.INVALID, 1, AfterFailure.STOP),
        (FaultKind.NOT_FOUND, 1, AfterFailure.STOP),
        (None, 1, AfterFailure.STOP),  # a fault classify does not know
    ],
)
def test_a_failed_listing_is_tried_again_only_for_throttles_and_transient_faults(
    kind: FaultKind | None, failures: int, then: AfterFailure
) -> None:
    """Three throttled or transient failures in a row end the watch; anything else at once."""
    assert after_failure(kind, failures) is then


def test_a_listing_is_late_0_7_s_after_its_call_went_out_or_its_booked_time() -> None:
    """The call out counts first; with nothing booked or out, never."""
    assert LATE == 0.7
    assert answer_by(sent_at=10.0, booked_at=9.0) == 10.7
    assert answer_by(sent_at=None, booked_at=9.0) == pytest.approx(9.7)
    assert answer_by(sent_at=None, booked_at=None) == math.inf


def test_a_history_lookup_is_booked_within_a_second_and_never_past_its_waits_deadline() -> None:
    """Polls before extras: a free time within EXTRA_HORIZON (1 s), or the lookup is not
    made; a wait whose deadline comes sooner bounds it there."""
    assert EXTRA_HORIZON == 1.0
    assert lookup_by(1000.0, None) == 1001.0
    assert lookup_by(1000.0, 1030.0) == 1001.0
    assert lookup_by(1000.0, 1000.4) == 1000.4
