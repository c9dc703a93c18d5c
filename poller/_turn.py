"""A wait's turn on its account's budget, decided: a pure state machine, like `_policy`.

``on_event(turn, event, now) -> (turn, action)`` on a frozen `Turn`: no I/O,
no clock, no asyncio. The engine (`_engine._Turns`) only carries the action
out (books a call, waits for its time or for the job's listing, makes the
call, takes the run as the listing showed it, or ends the wait) and feeds
back what happened as the next event, as tenacity's ``BaseRetrying.iter``
returns actions its loops only perform.

A wait's state is two explicit values, never inferred from which fields are
set: its `Phase` in its fleet (read or not, watched or alone) and the `Stage`
of its current turn (booked, listening, stuck, reading). Every rule of
docs/design.md ("A wait's turn") is a line here, tested with exact values and
hypothesis (tests/test_turn.py).
"""

from __future__ import annotations

import enum
import math
from dataclasses import dataclass, replace

from poller._limiter import RECHECK
from poller._listing import Reading
from poller._model import JobRun
from poller._runtime import BOOKING_GRACE, CALL_GRACE

__all__ = [
    "FIRST_GRACE",
    "FIRST_RECHECK",
    "LATE",
    "LOST",
    "NO_ROOM",
    "STUCK_RECHECK",
    "UNLISTED",
    "UNREACHED",
    "Action",
    "Ask",
    "Begin",
    "Book",
    "Booked",
    "Call",
    "Event",
    "Expire",
    "Granted",
    "Listed",
    "Paced",
    "Phase",
    "Stage",
    "Take",
    "Turn",
    "WaitBooked",
    "WaitUntil",
    "Woke",
    "ended",
    "joined",
    "left",
    "on_event",
    "reads_own",
    "started",
]

# Why a run's wait ended without the call it wanted.
UNREACHED = "the request budget did not reach it before the deadline"
# How long after its deadline a wait waits for the listing that gives its last look; and
# how long after its booked time a listing may answer before its runs look for themselves.
LATE = BOOKING_GRACE + CALL_GRACE
# A wait's first call may still go this long after its deadline (timeout=0 checks each
# of several runs once): its answer is waited for within CALL_GRACE, inside the second.
FIRST_GRACE = 0.3
# A first call booked later than this after it was asked for looks for a sooner free
# time this often (s): listed runs give their slots back, and unread runs take them.
FIRST_RECHECK = 0.5
# A wait no call of which fits before its deadline tries to book again this often (s).
STUCK_RECHECK = 0.5


class Phase(enum.Enum):
    """Where one wait stands in its fleet.

    ``UNREAD`` -> ``STARTED`` at its first answer (or a listing showing its run);
    ``STARTED`` -> ``OWN`` when it reads a run of a job by its own call;
    ``OWN`` (or ``UNREAD``/``STARTED``, shown by a listing) -> ``WATCHED`` when it
    joins its job's watch; ``WATCHED`` -> ``ALONE`` when the watch will not show
    it; any -> ``DONE`` when the wait ends.
    """

    #: No answer yet: counted among the fleet's unread waits (a listing may show it);
    #: its first call is pulled forward into freed slots and may go a moment after the deadline.
    UNREAD = "unread"
    #: Answered, but no run of a job read by its own call yet (a throttle, an error, a read).
    STARTED = "started"
    #: Reads its run by its own calls; counted among its job's readers; may join a watch.
    OWN = "own"
    #: Its job's watch shows it: it asks the watch for its looks.
    WATCHED = "watched"
    #: Its own calls to the end: its job's watch did not show it, or stopped.
    ALONE = "alone"
    #: Ended (or cancelled): its booking given back, its place in the start window freed.
    DONE = "done"


class Stage(enum.Enum):
    """Where the wait's current turn stands: what it holds and what it waits for."""

    #: Between turns: nothing booked, nothing awaited (and a wait's first turn).
    IDLE = "idle"
    #: A call of its own booked: waits for its time (and, if listening, for the listing).
    BOOKED = "booked"
    #: No call of its own: its job's watch looks for it; waits for the listing, until late.
    LISTENING = "listening"
    #: No call fits before the deadline: books again every STUCK_RECHECK, still listening.
    STUCK = "stuck"
    #: A listing showed the run finished: one urgent call booked to read it whole.
    READING = "reading"


@dataclass(frozen=True, slots=True)
class Turn:
    """One wait's state in its fleet: its phase, its turn's stage, and what they need."""

    deadline: float | None = None
    phase: Phase = Phase.UNREAD
    stage: Stage = Stage.IDLE
    #: When the look the core asked for is due.
    due: float = -math.inf
    #: When the booked call was asked for (a booking moved past it looks for a sooner time).
    asked: float = -math.inf
    #: A listing of its job may show the run during this turn.
    listening: bool = False
    #: The run a listing showed finished (READING): taken as shown if no call fits.
    shown: JobRun | None = None

    @property
    def expires(self) -> float:
        """When the wait gives up a turn no call and no listing answered: the deadline, and
        the grace of its last look."""
        return math.inf if self.deadline is None else self.deadline + LATE

    @property
    def latest(self) -> float | None:
        """The latest time a call of this wait may be booked at (None: any)."""
        if self.deadline is None:
            return None
        # The last poll is due at the deadline itself (and timeout=0 checks once): a call
        # booked a moment after it still goes, its answer waited for within CALL_GRACE.
        return self.deadline + (FIRST_GRACE if self.phase is Phase.UNREAD else BOOKING_GRACE)

    @property
    def holds_booking(self) -> bool:
        """True while the turn has a call booked on the calendar."""
        return self.stage in (Stage.BOOKED, Stage.READING)

    @property
    def asking(self) -> float | None:
        """When it wants the look it asked its job's watch for; None if it is not waiting
        for one."""
        return self.due if self.stage is Stage.LISTENING else None


# Events: what happened since the last action.


@dataclass(frozen=True, slots=True)
class Paced:
    """The core asked for a look at ``due``; ``watched``: its job's watch looks for it."""

    due: float
    watched: bool


@dataclass(frozen=True, slots=True)
class Begin:
    """The wait's turn begins (the core wants its next look now).

    ``listenable``: a listing may show its run; ``watched``: its job's watch
    looks for it; ``listing_by``: when that watch's listing is late.
    """

    listenable: bool
    watched: bool
    listing_by: float = math.inf


@dataclass(frozen=True, slots=True)
class Booked:
    """The call asked for (`Book`) was booked at ``at``."""

    at: float


@dataclass(frozen=True, slots=True)
class Granted:
    """The booked call's time came: it goes now."""


@dataclass(frozen=True, slots=True)
class _NoRoom:
    """No time before the booking's ``latest`` was free."""


@dataclass(frozen=True, slots=True)
class _Lost:
    """The booking was moved past its ``latest`` (a throttle, urgent calls)."""


@dataclass(frozen=True, slots=True)
class _Unlisted:
    """Its job's watch will not show the run (not on its pages, or stopped)."""


@dataclass(frozen=True, slots=True)
class Listed:
    """Its job's listing shows the run: ``what`` it means (`_listing.reading`), and the
    run as last seen (``last``)."""

    what: Reading
    run: JobRun
    last: JobRun | None = None


@dataclass(frozen=True, slots=True)
class Woke:
    """The time the turn waited until came; ``listing_by``: when its watch's listing is
    late now (it may have moved)."""

    listing_by: float = math.inf


NO_ROOM = _NoRoom()
LOST = _Lost()
UNLISTED = _Unlisted()

Event = Paced | Begin | Booked | _NoRoom | Granted | _Lost | _Unlisted | Listed | Woke


# Actions: what the engine does next.


@dataclass(frozen=True, slots=True)
class Book:
    """Book a call at the earliest free time at or after ``due``, not after ``latest``
    (None: any); ``urgent`` ahead of ordinary calls. Any booking held is given back first."""

    due: float
    latest: float | None
    urgent: bool = False


@dataclass(frozen=True, slots=True)
class WaitBooked:
    """Wait for the booked call's time (`_limiter.until_booked`: a booking moved past
    ``asked`` looks for a sooner time every ``recheck``); and for the listing if ``listen``."""

    asked: float
    recheck: float
    listen: bool


@dataclass(frozen=True, slots=True)
class WaitUntil:
    """Wait until ``until`` (inf: no end); and for the listing if ``listen``."""

    until: float
    listen: bool


@dataclass(frozen=True, slots=True)
class Ask:
    """Ask its job's watch for a look by ``due`` (no call of its own)."""

    due: float


@dataclass(frozen=True, slots=True)
class Call:
    """Make the booked call now."""


@dataclass(frozen=True, slots=True)
class Take:
    """Take ``run`` as its job's listing showed it, in place of a call."""

    run: JobRun


@dataclass(frozen=True, slots=True)
class Expire:
    """End the wait: the deadline came with no call and no listing in reach."""

    why: str = UNREACHED


Action = Book | WaitBooked | WaitUntil | Ask | Call | Take | Expire


def on_event(turn: Turn, event: Event, now: float) -> tuple[Turn, Action]:
    """The next state and action of a wait's turn after ``event``, at ``now``."""
    match event:
        case Paced(due=due, watched=True):
            # No call of its own: the look comes from the listing.
            return replace(turn, due=due, stage=Stage.LISTENING, listening=True), Ask(due)
        case Paced(due=due):
            return _book(replace(turn, due=due, stage=Stage.IDLE), due)
        case Begin():
            if event.listenable and turn.phase is not Phase.ALONE:
                turn = replace(turn, listening=True)
            return _resume(turn, now, watched=event.watched, listing_by=event.listing_by)
        case Booked():
            stage = Stage.READING if turn.shown is not None else Stage.BOOKED
            turn = replace(turn, stage=stage)
            return turn, _wait_booked(turn)
        case _NoRoom():
            if turn.shown is not None:
                # At the deadline, when no call fits any more: the run as the listing shows it.
                return _taken(turn, turn.shown)
            return _stuck(replace(turn, stage=Stage.IDLE), now)
        case Granted():
            return replace(turn, stage=Stage.IDLE, listening=False, shown=None), Call()
        case _Lost():
            if turn.shown is not None:
                return _taken(turn, turn.shown)
            return _stuck(replace(turn, stage=Stage.IDLE), now)
        case Listed(what=what, run=run, last=last):
            turn = replace(turn, listening=False)
            if what is Reading.READ:
                # Finished: read it whole (and its lineage) before anything else.
                return _book(replace(turn, shown=run), now, urgent=True)
            return _taken(turn, last if what is Reading.KEEP and last is not None else run)
        case _Unlisted():
            turn = replace(turn, listening=False)
            if turn.holds_booking:
                return turn, _wait_booked(turn)
            return _book(turn, max(turn.due, now))
        case Woke(listing_by=listing_by):
            if turn.stage is Stage.LISTENING:
                return _resume(turn, now, watched=True, listing_by=listing_by)
            # Stuck: look again as the calendar frees (calls given back, a rate climbed back).
            return _book(turn, max(turn.due, now))
    raise AssertionError(f"unknown event {event!r}")  # pragma: no cover


def _resume(turn: Turn, now: float, *, watched: bool, listing_by: float) -> tuple[Turn, Action]:
    """What the turn waits for as it stands: its booked call, the listing, or a booking."""
    match turn.stage:
        case Stage.BOOKED | Stage.READING:
            return turn, _wait_booked(turn)
        case Stage.STUCK:
            return turn, _stuck_wait(turn, now)
        case Stage.LISTENING if watched:
            # Its watch's listing, until it is late (then a call of its own).
            until = min(turn.expires, listing_by)
            if until > now:
                return turn, WaitUntil(until, listen=True)
        case Stage.IDLE if turn.phase is Phase.UNREAD:
            return _book(turn, now)  # the first call: as soon as the budget allows
    return _book(replace(turn, stage=Stage.IDLE), max(turn.due, now))


def _book(turn: Turn, due: float, *, urgent: bool = False) -> tuple[Turn, Action]:
    return replace(turn, asked=due), Book(due, turn.latest, urgent=urgent)


def _wait_booked(turn: Turn) -> WaitBooked:
    # A first call is pulled forward into slots given back meanwhile (runs a listing
    # showed): a run with no status yet is worth most.
    recheck = FIRST_RECHECK if turn.phase is Phase.UNREAD else RECHECK
    return WaitBooked(turn.asked, recheck, listen=turn.listening)


def _stuck(turn: Turn, now: float) -> tuple[Turn, Action]:
    """No call fits before the deadline: give up at it, else look again soon."""
    if now >= turn.expires:
        return replace(turn, stage=Stage.IDLE, listening=False), Expire()
    turn = replace(turn, stage=Stage.STUCK)
    return turn, _stuck_wait(turn, now)


def _stuck_wait(turn: Turn, now: float) -> WaitUntil:
    return WaitUntil(min(now + STUCK_RECHECK, turn.expires), listen=turn.listening)


def _taken(turn: Turn, run: JobRun) -> tuple[Turn, Action]:
    return replace(turn, stage=Stage.IDLE, listening=False, shown=None), Take(run)


# The wait's phase in its fleet: each change the engine makes, as a function.


def started(turn: Turn) -> Turn:
    """The wait had its first answer (or a listing showed its run)."""
    return replace(turn, phase=Phase.STARTED) if turn.phase is Phase.UNREAD else turn


def joined(turn: Turn, *, once: bool) -> Turn | None:
    """The wait joins its job's watch; None if it may not (a read, already in one, or one
    let it go)."""
    if once or turn.phase not in (Phase.UNREAD, Phase.STARTED, Phase.OWN):
        return None
    return replace(turn, phase=Phase.WATCHED)


def left(turn: Turn) -> Turn:
    """Its job's watch will not show the run: its own calls from now on."""
    return turn if turn.phase is Phase.DONE else replace(turn, phase=Phase.ALONE)


def ended(turn: Turn) -> Turn:
    """The wait ended (or was cancelled)."""
    return replace(turn, phase=Phase.DONE, stage=Stage.IDLE, listening=False, shown=None)


def reads_own(turn: Turn) -> Turn:
    """The wait read a run of a job by its own call (not shown by a listing)."""
    return replace(turn, phase=Phase.OWN) if turn.phase is Phase.STARTED else turn
