"""A wait's turn, decided: the pure state machine of `_turn`, with exact values and hypothesis."""

from __future__ import annotations

import math
from dataclasses import replace

from hypothesis import given
from hypothesis import strategies as st

from poller._limiter import RECHECK
from poller._listing import Reading
from poller._model import JobRun
from poller._runtime import BOOKING_GRACE
from poller._turn import (
    FIRST_GRACE,
    FIRST_RECHECK,
    LATE,
    LOST,
    NO_ROOM,
    STUCK_RECHECK,
    UNLISTED,
    UNREACHED,
    Ask,
    Begin,
    Book,
    Booked,
    Call,
    Event,
    Expire,
    Granted,
    Listed,
    Paced,
    Phase,
    Stage,
    Take,
    Turn,
    WaitBooked,
    WaitUntil,
    Woke,
    ended,
    joined,
    left,
    on_event,
    reads_own,
    started,
)

RUN = JobRun(domain_id="dzd_abc123", id="run-1", status="IN_PROGRESS", job_id="job-1")
DONE = replace(RUN, status="SUCCESS")
DEADLINE = 1030.0
READ = Turn(deadline=DEADLINE, phase=Phase.STARTED)


def test_a_first_turn_books_its_call_now_with_the_first_grace_and_the_quick_recheck() -> None:
    """Unread: booked at once, up to 0.3 s past the deadline, a sooner slot sought every 0.5 s."""
    turn, action = on_event(Turn(deadline=DEADLINE), Begin(listenable=True, watched=False), 1000.0)
    assert action == Book(1000.0, DEADLINE + FIRST_GRACE)
    assert turn.listening
    turn, action = on_event(turn, Booked(1004.0), 1000.0)
    assert (turn.stage, action) == (Stage.BOOKED, WaitBooked(1000.0, FIRST_RECHECK, listen=True))
    turn, action = on_event(turn, Granted(), 1004.0)
    assert (turn.stage, turn.listening, action) == (Stage.IDLE, False, Call())


def test_a_paced_look_is_booked_at_its_due_time_within_the_booking_grace() -> None:
    """The core names a delay: the call is booked then, up to 0.1 s past the deadline."""
    turn, action = on_event(READ, Paced(1010.0, watched=False), 1005.0)
    assert action == Book(1010.0, DEADLINE + BOOKING_GRACE)
    turn, action = on_event(turn, Booked(1010.0), 1005.0)
    assert action == WaitBooked(1010.0, RECHECK, listen=False)
    # The turn then listens for its job's listing while it waits for the booked time.
    turn, action = on_event(turn, Begin(listenable=True, watched=False), 1005.0)
    assert action == WaitBooked(1010.0, RECHECK, listen=True)


def test_a_watched_wait_asks_its_watch_and_listens_until_the_listing_is_late() -> None:
    """No call of its own: it asks for a look by then, and waits for the listing until late."""
    turn, action = on_event(READ, Paced(1010.0, watched=True), 1005.0)
    assert (turn.stage, turn.asking, action) == (Stage.LISTENING, 1010.0, Ask(1010.0))
    turn, action = on_event(turn, Begin(True, watched=True, listing_by=1010.7), 1005.0)
    assert action == WaitUntil(1010.7, listen=True)
    # The listing was booked later meanwhile: it is not late yet.
    turn, action = on_event(turn, Woke(listing_by=1012.7), 1010.7)
    assert action == WaitUntil(1012.7, listen=True)
    # Late: a call of its own, as soon as the budget allows; it listens no more once booked.
    turn, action = on_event(turn, Woke(listing_by=1012.7), 1012.7)
    assert (turn.stage, action) == (Stage.IDLE, Book(1012.7, DEADLINE + BOOKING_GRACE))
    turn, action = on_event(turn, Booked(1013.0), 1012.7)
    assert (turn.stage, action) == (Stage.BOOKED, WaitBooked(1012.7, RECHECK, listen=True))


def test_a_listing_waits_no_longer_than_the_deadline_and_its_grace() -> None:
    """A listing booked past the deadline: the wait listens until the deadline plus 0.7 s."""
    turn, _ = on_event(READ, Paced(1029.0, watched=True), 1028.0)
    _, action = on_event(turn, Begin(True, watched=True, listing_by=1040.0), 1028.0)
    assert action == WaitUntil(DEADLINE + LATE, listen=True)


def test_a_listing_that_shows_the_run_going_is_taken_in_place_of_the_call() -> None:
    """TAKE: the run as listed; KEEP: the run as last seen; the booking is given up."""
    booked, _ = on_event(replace(READ, stage=Stage.BOOKED, listening=True), Booked(1010.0), 1005.0)
    turn, action = on_event(booked, Listed(Reading.TAKE, RUN), 1006.0)
    assert (turn.stage, turn.holds_booking, action) == (Stage.IDLE, False, Take(RUN))
    older = replace(RUN, status="SCHEDULED")
    _, action = on_event(booked, Listed(Reading.KEEP, older, last=RUN), 1006.0)
    assert action == Take(RUN)
    _, action = on_event(booked, Listed(Reading.KEEP, older, last=None), 1006.0)
    assert action == Take(older)


def test_a_listing_that_shows_the_run_finished_gets_one_urgent_read() -> None:
    """READ: an urgent call now, to read the run whole; taken as listed if none fits."""
    turn, action = on_event(
        replace(READ, stage=Stage.LISTENING), Listed(Reading.READ, DONE), 1006.0
    )
    assert action == Book(1006.0, DEADLINE + BOOKING_GRACE, urgent=True)
    reading, action = on_event(turn, Booked(1006.1), 1006.0)
    assert (reading.stage, action) == (Stage.READING, WaitBooked(1006.0, RECHECK, listen=False))
    assert on_event(reading, Granted(), 1006.1)[1] == Call()
    # At the deadline, when no call fits any more (or the one booked is lost): as listed.
    assert on_event(turn, NO_ROOM, 1030.0)[1] == Take(DONE)
    assert on_event(reading, LOST, 1030.0)[1] == Take(DONE)


def test_a_booking_that_does_not_fit_is_tried_again_every_half_second_until_the_deadline() -> None:
    """Stuck: never a sleep to the deadline; at the deadline (plus 0.7 s) the wait expires."""
    turn, action = on_event(READ, Paced(1010.0, watched=False), 1005.0)
    turn, action = on_event(turn, NO_ROOM, 1005.0)
    assert (turn.stage, action) == (Stage.STUCK, WaitUntil(1005.0 + STUCK_RECHECK, listen=False))
    turn, action = on_event(turn, Woke(), 1005.5)
    assert action == Book(1010.0, DEADLINE + BOOKING_GRACE)
    turn, action = on_event(turn, NO_ROOM, 1030.5)
    assert action == WaitUntil(DEADLINE + LATE, listen=False)  # never past the deadline's grace
    turn, action = on_event(turn, Woke(), DEADLINE + LATE)
    turn, action = on_event(turn, NO_ROOM, DEADLINE + LATE)
    assert (turn.stage, action) == (Stage.IDLE, Expire(UNREACHED))


def test_a_lost_booking_is_stuck_and_keeps_listening() -> None:
    """A throttle moved the call past the deadline: book again soon, and hear a listing."""
    turn = replace(READ, stage=Stage.BOOKED, listening=True, asked=1010.0)
    turn, action = on_event(turn, LOST, 1011.0)
    assert (turn.stage, action) == (Stage.STUCK, WaitUntil(1011.5, listen=True))
    assert on_event(turn, Listed(Reading.TAKE, RUN), 1011.2)[1] == Take(RUN)


def test_an_unlisted_wait_books_its_own_call_or_keeps_the_one_it_has() -> None:
    """The watch will not show the run: its own call at its due time; a booking stays."""
    listening = replace(READ, stage=Stage.LISTENING, listening=True, due=1010.0)
    turn, action = on_event(listening, UNLISTED, 1008.0)
    assert (turn.listening, action) == (False, Book(1010.0, DEADLINE + BOOKING_GRACE))
    booked = replace(READ, stage=Stage.BOOKED, listening=True, asked=1010.0)
    turn, action = on_event(booked, UNLISTED, 1008.0)
    assert (turn.stage, action) == (Stage.BOOKED, WaitBooked(1010.0, RECHECK, listen=False))


def test_a_wait_with_no_deadline_listens_without_end_and_books_with_no_latest() -> None:
    """No deadline: a listing with nothing booked is awaited as long as it takes."""
    turn, _ = on_event(Turn(phase=Phase.WATCHED), Paced(5.0, watched=True), 1.0)
    assert on_event(turn, Begin(True, watched=True), 1.0)[1] == WaitUntil(math.inf, listen=True)
    assert on_event(Turn(), Begin(True, watched=False), 1.0)[1] == Book(1.0, None)


def test_an_alone_wait_never_listens_and_a_read_never_joins() -> None:
    """ALONE: its watch let it go; a read (``once``) joins no watch; DONE stays DONE."""
    alone = left(replace(READ, phase=Phase.WATCHED))
    assert alone.phase is Phase.ALONE
    assert not on_event(alone, Begin(listenable=True, watched=False), 1000.0)[0].listening
    assert joined(READ, once=True) is None
    assert joined(alone, once=False) is None
    assert joined(Turn(), once=False) == Turn(phase=Phase.WATCHED)
    assert left(ended(READ)).phase is Phase.DONE


def test_phases_move_one_way_from_unread() -> None:
    """UNREAD -> STARTED -> OWN; each function leaves the other phases alone."""
    assert started(Turn()).phase is Phase.STARTED
    assert reads_own(started(Turn())).phase is Phase.OWN
    assert reads_own(Turn()).phase is Phase.UNREAD
    assert started(reads_own(READ)).phase is Phase.OWN


EVENTS: st.SearchStrategy[Event] = st.one_of(
    st.builds(Paced, st.floats(1000, 1040), st.booleans()),
    st.builds(Begin, st.booleans(), st.booleans(), st.floats(1000, 1040) | st.just(math.inf)),
    st.builds(Booked, st.floats(1000, 1040)),
    st.just(NO_ROOM),
    st.just(Granted()),
    st.just(LOST),
    st.just(UNLISTED),
    st.builds(Listed, st.sampled_from(Reading), st.sampled_from([RUN, DONE])),
    st.builds(Woke, st.floats(1000, 1040) | st.just(math.inf)),
)


@given(
    deadline=st.none() | st.floats(1000, 1040),
    phase=st.sampled_from(Phase),
    steps=st.lists(st.tuples(EVENTS, st.floats(0, 5)), max_size=30),
)
def test_no_turn_ends_before_its_deadline_nor_waits_past_it(
    deadline: float | None, phase: Phase, steps: list[tuple[Event, float]]
) -> None:
    """For any events: Expire only at the deadline's grace; no wait or booking reaches past it."""
    turn, now = Turn(deadline=deadline, phase=phase), 1000.0
    for event, gap in steps:
        now += gap
        turn, action = on_event(turn, event, now)
        expires = math.inf if deadline is None else deadline + LATE
        match action:
            case Expire():
                assert now >= expires
            case WaitUntil(until=until):
                assert until <= expires
                assert action.listen or math.isfinite(until)
            case Book(latest=latest):
                assert latest is None if deadline is None else latest < expires
            case WaitBooked():
                assert turn.holds_booking
            case Take() | Call() | Ask():
                assert not turn.holds_booking or isinstance(action, Ask)
