"""The process's shared state, in one home: budgets, history, clients, the call pool, the engine.

Everything poller keeps for the life of a process (one request budget per
account, the job histories, the shared clients, the call pool's threads, the
engine's event loop and thread) is made on first use by the module that owns
it, and kept here in a typed `Slot` its owner declares (``ENGINE =
Slot("engine", make)``); the settings they are made with (the engine's
clock) are typed `Setting`s. So one reset forgets it all
(``poller.testing.reset()``, for users' tests), and a forked child starts
clean: `os.register_at_fork` drops the parent's state in the child without
touching it (its threads did not survive the fork, and its clients' sockets
are the parent's), so the child's first wait builds a fresh engine.

This module imports nothing of poller's: every layer may keep its state here.
"""

from __future__ import annotations

import os
import threading
from collections.abc import Awaitable, Callable
from typing import Any, Generic, TypeVar, cast

__all__ = ["ASYNC_SLEEP", "CLOCK", "WALL", "Setting", "Slot", "forget", "in_child", "reset"]

_T = TypeVar("_T")

_lock = threading.RLock()
_things: dict[str, Any] = {}
# What else a forked child drops (`in_child`): state kept outside the home on purpose.
_child_hooks: list[Callable[[], None]] = []


class Slot(Generic[_T]):
    """One thing of the process's, typed: made by its owner's ``make`` on first use, kept here.

    Each owner declares its slot next to what it keeps (``ENGINE =
    Slot("engine", make)``), so every reader gets the type the owner made.
    """

    __slots__ = ("_make", "name")

    def __init__(self, name: str, make: Callable[[], _T]) -> None:
        self.name = name
        self._make = make

    def get(self) -> _T:
        """The thing, made on first use."""
        thing = _things.get(self.name)
        if thing is None:
            with _lock:
                thing = _things.get(self.name)
                if thing is None:
                    thing = _things[self.name] = self._make()
        return cast(_T, thing)

    def peek(self) -> _T | None:
        """The thing if it was made, else None (nothing is made)."""
        return cast("_T | None", _things.get(self.name))


class Setting(Generic[_T]):
    """A process-wide setting read when things are made; None until `put` (and after reset)."""

    __slots__ = ("name",)

    def __init__(self, name: str) -> None:
        self.name = name

    def peek(self) -> _T | None:
        return cast("_T | None", _things.get(self.name))

    def put(self, value: _T) -> None:
        with _lock:
            _things[self.name] = value


#: The clock the engine and the budgets are made on (``poller.testing.reset(seams=...)``).
CLOCK: Setting[Callable[[], float]] = Setting("clock")
#: The wall clock that dates run ages for waits with no wall seam of their own.
WALL: Setting[Callable[[], float]] = Setting("wall")
#: The engine's sleep, with `CLOCK`.
ASYNC_SLEEP: Setting[Callable[[float], Awaitable[object]]] = Setting("async_sleep")


def reset() -> None:
    """Forget every shared thing, closing those that can be closed (an engine, a pool, clients).

    What is made next starts fresh: a new engine, full budgets, no history.
    """
    global _things
    with _lock:
        old, _things = _things, {}
    for thing in old.values():
        close = getattr(thing, "close", None)
        if callable(close):
            close()


def forget() -> None:
    """Drop every shared thing without closing it: a forked child's start."""
    global _lock, _things  # noqa: PLW0603
    _lock = threading.RLock()
    _things = {}
    for hook in _child_hooks:
        hook()


def in_child(hook: Callable[[], None]) -> None:
    """Call ``hook`` in a forked child too, with `forget`: for state a reset must not drop
    (OpenTelemetry's handles, made from the providers a user gave), but a child must."""
    _child_hooks.append(hook)


if hasattr(os, "register_at_fork"):
    os.register_at_fork(after_in_child=forget)
