"""A watcher's pure decisions: what is due, the ledger's mark, when to list next; exact values."""

from __future__ import annotations

import itertools
import math
from datetime import UTC, datetime

import pytest
from hypothesis import given
from hypothesis import strategies as st

from poller import InvalidRequestError
from poller._announce import (
    END_STATES,
    Cadence,
    Ledger,
    Outlook,
    due,
    more_pages,
    next_listing,
    outlook,
    parse_statuses,
    reached,
    settle,
)
from poller._model import JobRun

T0 = 1_700_000_000.0
ALL = frozenset(END_STATES)


def at(seconds: float | None) -> datetime | None:
    return None if seconds is None else datetime.fromtimestamp(T0 + seconds, UTC)


def run(
    run_id: str,
    status: str,
    *,
    created: float = 0.0,
    start: float | None = None,
    end: float | None = None,
    mode: str = "SCHEDULED",
) -> JobRun:
    return JobRun(
        domain_id="dzd_a",
        id=run_id,
        status=status,
        job_id="job-1",
        run_mode=mode,
        created_at=at(created),
        start_time=at(created if start is None else start),
        end_time=at(end),
    )


def test_the_statuses_default_to_the_six_end_states_and_others_are_refused() -> None:
    """None is every end state; a running status or a typo is a clear error."""
    assert parse_statuses(None) == ALL
    assert parse_statuses(["failed", "TIMED_OUT"]) == {"FAILED", "TIMED_OUT"}
    with pytest.raises(InvalidRequestError, match="not IN_PROGRESS"):
        parse_statuses(["IN_PROGRESS"])
    with pytest.raises(InvalidRequestError, match="none were given"):
        parse_statuses([])


def test_due_runs_ended_at_or_after_since_in_the_statuses_oldest_end_first() -> None:
    """Running, earlier, filtered-out and settled runs are not due; the rest by end time."""
    ledger = Ledger(T0 + 100).add("r-settled", T0 + 150)
    runs = [
        run("r-late", "FAILED", end=300),
        run("r-running", "IN_PROGRESS"),
        run("r-early", "SUCCESS", end=99),
        run("r-edge", "SUCCESS", end=100),
        run("r-settled", "SUCCESS", end=150),
        run("r-canceled", "CANCELED", end=200),
    ]
    assert [r.id for r in due(ledger, runs, ALL, T0 + 400)] == ["r-edge", "r-canceled", "r-late"]
    chosen = frozenset({"FAILED"})
    assert [r.id for r in due(ledger, runs, chosen, T0 + 400)] == ["r-late"]


def test_settle_raises_the_mark_to_the_latest_end_once_nothing_is_due() -> None:
    """With a run still due the ledger stays; once all are settled the mark rises and
    the settled runs before it are forgotten."""
    runs = [
        run("a", "SUCCESS", end=200),
        run("b", "FAILED", end=250),
        run("c", "IN_PROGRESS", created=260),
    ]
    ledger = Ledger(T0 + 100).add("a", T0 + 200)
    assert settle(ledger, runs, ALL, T0 + 300) == ledger  # b is still due
    ledger = ledger.add("b", T0 + 250)
    assert settle(ledger, runs, ALL, T0 + 300) == Ledger(T0 + 250, (("b", T0 + 250),))


def test_the_mark_never_passes_the_creation_of_a_run_listed_going() -> None:
    """A run listed going, created at T0+110, may have ended already (its end reported
    late): the mark rises to 110 at most, and the run is due once listed finished."""
    ledger = Ledger(T0 + 100).add("b", T0 + 250)
    going = run("a", "IN_PROGRESS", created=110, start=120)
    runs = [run("b", "SUCCESS", created=130, end=250), going]
    assert settle(ledger, runs, ALL, T0 + 300) == Ledger(T0 + 110, (("b", T0 + 250),))
    late = [runs[0], run("a", "SUCCESS", created=110, start=120, end=150)]
    assert [r.id for r in due(settle(ledger, runs, ALL, T0 + 300), late, ALL, T0 + 400)] == ["a"]


def test_a_run_filtered_out_still_raises_the_mark() -> None:
    """Runs in an end state not announced are finished too: the mark passes them."""
    runs = [run("a", "SUCCESS", end=200)]
    assert settle(Ledger(T0), runs, frozenset({"FAILED"}), T0 + 300) == Ledger(T0 + 200)


def test_the_ledger_round_trips_through_json_and_refuses_anything_else() -> None:
    """What a store keeps comes back equal; garbage or another version is no ledger."""
    ledger = Ledger(T0).add("r-2", T0 + 5).add("r-1", T0 + 7)
    assert Ledger.from_json(ledger.to_json()) == ledger
    for bad in (None, {}, {"version": 2, "since": T0, "settled": []}, {"version": 1}, "x"):
        assert Ledger.from_json(bad) is None
    assert Ledger.from_json({"version": 1, "since": T0, "settled": [["a", "b"]]}) is None


def history(n: int = 10, duration: float = 600.0, gap: float = 3600.0) -> list[JobRun]:
    """``n`` past scheduled successes, ``gap`` apart, each ``duration`` long; newest first."""
    return [
        run(f"p{k}", "SUCCESS", created=-gap * k, end=-gap * k + duration) for k in range(1, n + 1)
    ]


def test_no_history_lists_every_look() -> None:
    """A job with no history: any run may end at any time, so the cadence is `look`."""
    view = outlook([], T0)
    assert view == Outlook(T0)
    assert next_listing(view, Cadence(look=25, longest=600)) == T0 + 25


def test_an_idle_scheduled_job_is_next_listed_when_its_next_run_can_first_have_ended() -> None:
    """No run going: the next scheduled run starts an hour after the last one (the gaps do
    not vary), and cannot end before its shortest plausible duration."""
    view = outlook(history(), T0 + 60)
    assert view.running == ()
    assert view.next_start == pytest.approx(T0 - 3600 + 3600)
    assert view.quiet == pytest.approx(600)  # ten runs of exactly 600 s
    # The next start (T0) is before the listing: a run created right after the
    # listing cannot end before listed_at + quiet, but the cap is 600 s.
    assert next_listing(view, Cadence(look=25, longest=900)) == pytest.approx(T0 + 60 + 600)


def test_a_run_going_is_next_looked_at_when_it_can_first_have_ended() -> None:
    """A run started at T0+100 of a job whose runs take 600 s: no look before T0+700."""
    runs = [run("now", "IN_PROGRESS", created=100), *history()]
    view = outlook(runs, T0 + 200)
    assert view.running == (T0 + 100,)
    assert next_listing(view, Cadence(look=25, longest=3600)) == pytest.approx(T0 + 700)
    # Past that time, the plain cadence.
    late = outlook(runs, T0 + 800)
    assert next_listing(late, Cadence(look=25, longest=3600)) == T0 + 825


def test_a_run_not_started_yet_counts_from_the_listing() -> None:
    """A SCHEDULED run cannot end before the listing plus the shortest duration."""
    runs = [run("queued", "SCHEDULED", created=100, start=None), *history()]
    view = outlook([*runs[:1], *runs[1:]], T0 + 200)
    assert view.running == (T0 + 200,)


def test_erratic_schedules_and_durations_give_no_quiet_window() -> None:
    """Runs whose durations or gaps vary widely say nothing: look every `look`."""
    erratic = [
        run(f"e{k}", "SUCCESS", created=-g, end=-g + d, mode="ON_DEMAND")
        for k, (g, d) in enumerate([(100, 5), (900, 3000), (5000, 40), (9000, 900), (20000, 2)])
    ]
    view = outlook(erratic, T0)
    assert (view.quiet, view.next_start) == (0.0, None)
    assert next_listing(view, Cadence()) == T0 + Cadence().look


def test_a_listing_is_complete_when_it_read_every_page_or_back_to_the_floor_else_list_again() -> (
    None
):
    """No page past it: complete, read every page. Its last page older than the floor:
    complete, read to the floor. Short of the floor: incomplete, and list again now unless
    it stopped at the page limit."""
    old = [run("a", "SUCCESS", created=10, end=20)]
    new = [run("b", "SUCCESS", created=60, end=70)]
    floor = T0 + 50
    assert reached(more=False, last=new, pages=1, floor=floor, limit=10) == (True, -math.inf, False)
    assert reached(more=True, last=old, pages=1, floor=floor, limit=10) == (True, floor, False)
    assert reached(more=True, last=new, pages=1, floor=floor, limit=10) == (False, math.inf, True)
    assert reached(more=True, last=new, pages=10, floor=floor, limit=10) == (False, math.inf, False)


def test_more_pages_while_the_oldest_run_is_going_or_not_older_than_the_floor() -> None:
    """The next page is read only when its runs could still matter."""
    assert more_pages([run("a", "SUCCESS", created=50, end=60)], T0 + 50)
    assert not more_pages([run("a", "SUCCESS", created=49, end=60)], T0 + 50)
    assert more_pages([run("a", "IN_PROGRESS", created=-9999)], T0 + 50)
    assert not more_pages([], T0)


ends = st.lists(
    st.tuples(st.sampled_from((*END_STATES, "IN_PROGRESS")), st.integers(0, 1000)),
    max_size=30,
)


@given(st.lists(ends, min_size=1, max_size=8), st.integers(0, 500))
def test_every_run_ending_after_since_is_announced_exactly_once(
    listings: list[list[tuple[str, int]]], since: int
) -> None:
    """Whatever listings come (each a snapshot of the runs so far, which only progress),
    announcing what is due and settling after each announces every run that ended at
    or after `since` once, and nothing else."""
    ledger = Ledger(T0 + since)
    announced: list[str] = []
    final: dict[str, JobRun] = {}
    for k, snapshot in enumerate(listings):
        runs = []
        for i, (status, end) in enumerate(snapshot):
            rid = f"r{i}"
            # A run, once finished, stays finished with the same end.
            if rid in final:
                runs.append(final[rid])
                continue
            r = run(rid, status, created=end - 1, end=end if status != "IN_PROGRESS" else None)
            if r.is_terminal:
                # Listings are in time order: a run finished in a later listing ends later.
                r = run(rid, status, created=end - 1, end=end + 1000 * k)
                final[rid] = r
            runs.append(r)
        for r in due(ledger, runs, ALL, T0 + 10_000 * (k + 1)):
            announced.append(r.id)
            assert r.end_time is not None
            ledger = ledger.add(r.id, r.end_time.timestamp())
        ledger = settle(ledger, runs, ALL, T0 + 10_000 * (k + 1))
    expected = {rid for rid, r in final.items() if r.end_time.timestamp() >= T0 + since}
    assert sorted(announced) == sorted(expected)
    assert len(announced) == len(set(announced))


@given(
    st.lists(
        st.tuples(st.integers(0, 1000), st.integers(0, 500), st.integers(0, 300)),
        min_size=1,
        max_size=20,
    ),
    st.lists(st.integers(1, 400), min_size=1, max_size=10),
    st.integers(0, 800),
)
def test_every_run_is_announced_once_whatever_ends_the_listings_report_late(
    specs: list[tuple[int, int, int]], steps: list[int], since: int
) -> None:
    """Runs (created, duration, lag): each listing shows a run going until ``lag`` seconds
    after its end, then finished with its true end. Announcing what is due and settling
    after each listing, then one listing that shows everything, announces each run that
    ended at or after `since` once."""
    ledger = Ledger(T0 + since)
    announced: list[str] = []
    times = list(itertools.accumulate(steps))
    times.append(times[-1] + 2000)  # every end reported by then
    for t in times:
        runs = [
            run(f"r{i}", "SUCCESS", created=c, end=c + d)
            if c + d + lag <= t
            else run(f"r{i}", "IN_PROGRESS", created=c)
            for i, (c, d, lag) in enumerate(specs)
            if c <= t
        ]
        runs.sort(key=lambda r: r.created_at or 0, reverse=True)
        for r in due(ledger, runs, ALL, T0 + t):
            announced.append(r.id)
            assert r.end_time is not None
            ledger = ledger.add(r.id, r.end_time.timestamp())
        ledger = settle(ledger, runs, ALL, T0 + t)
    expected = [f"r{i}" for i, (c, d, _) in enumerate(specs) if c + d >= since]
    assert sorted(announced) == sorted(expected)
