"""The process's shared state, in one home: budgets, history, clients, the call pool, the engine.

Everything poller keeps for the life of a process (one request budget per
account, the job histories, the shared clients, the call pool's threads, the
engine's event loop and thread) is made on first use by the module that owns
it, and kept here under one name. So one reset forgets it all
(``poller.testing.reset()``, for users' tests), and a forked child starts
clean: `os.register_at_fork` drops the parent's state in the child without
touching it (its threads did not survive the fork, and its clients' sockets
are the parent's), so the child's first wait builds a fresh engine.

This module imports nothing of poller's: every layer may keep its state here.
"""

from __future__ import annotations

import os
import threading
from collections.abc import Callable
from typing import Any, TypeVar, cast

__all__ = ["forget", "get", "peek", "put", "reset"]

_T = TypeVar("_T")

_lock = threading.RLock()
_things: dict[str, Any] = {}


def get(name: str, make: Callable[[], _T]) -> _T:
    """The process's ``name``, made by ``make()`` on first use."""
    thing = _things.get(name)
    if thing is None:
        with _lock:
            thing = _things.get(name)
            if thing is None:
                thing = _things[name] = make()
    return cast(_T, thing)


def peek(name: str) -> Any:
    """The process's ``name`` if it was made, else None (nothing is made)."""
    return _things.get(name)


def put(name: str, thing: Any) -> None:
    """Set the process's ``name`` (a setting read when other things are made)."""
    with _lock:
        _things[name] = thing


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


if hasattr(os, "register_at_fork"):
    os.register_at_fork(after_in_child=forget)
