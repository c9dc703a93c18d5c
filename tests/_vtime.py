"""An asyncio event loop on virtual time, for exact tests of many concurrent waits.

``loop.time()`` only moves when every task is asleep: the loop then jumps to
the next timer instead of waiting for it. While a call runs in an executor
thread (a real HTTP request to the simulator) time stands still, so requests
are stamped with exact, reproducible times and a thousand-second fleet takes
as long as its requests do. The simulator, the waits and the limiter all read
the same `VirtualClock`.
"""

from __future__ import annotations

import asyncio
import selectors
from collections.abc import Callable, Coroutine
from concurrent.futures import Executor
from typing import Any, TypeVar

_T = TypeVar("_T")

# Stuck executor work (a hung server) fails the test instead of hanging it.
_REAL_WAIT_LIMIT = 30.0


class VirtualClock:
    """The time every party of a test reads; only the loop moves it."""

    def __init__(self, start: float = 1000.0) -> None:
        # Not 0: a zero start hides "time since start" bugs.
        self.now = start

    def __call__(self) -> float:
        return self.now


class _Selector(selectors.DefaultSelector):  # type: ignore[misc,valid-type]
    loop: VirtualTimeLoop

    def select(self, timeout: float | None = None) -> list[Any]:
        loop = self.loop
        if timeout is not None and timeout <= 0:
            return super().select(0)
        if loop.pending:
            # Work is in flight in a thread: wait for it for real, with time frozen.
            ready = super().select(_REAL_WAIT_LIMIT)
            if not ready:
                raise TimeoutError("executor work did not finish within 30 s of real time")
            return ready
        ready = super().select(0)
        if ready or timeout is None:
            return ready or super().select(None)
        loop.clock.now += timeout
        return []


class VirtualTimeLoop(asyncio.SelectorEventLoop):
    """A selector loop whose clock jumps from timer to timer."""

    def __init__(self, clock: VirtualClock) -> None:
        selector = _Selector()
        selector.loop = self
        self.clock = clock
        self.pending = 0
        super().__init__(selector)

    def time(self) -> float:
        return self.clock.now

    def run_in_executor(
        self, executor: Executor | None, func: Callable[..., _T], *args: Any
    ) -> asyncio.Future[_T]:
        future = super().run_in_executor(executor, func, *args)
        self.pending += 1
        # Counted down on the loop, after the result has been handed over, so
        # the selector never sees "nothing pending" while an answer is on its way.
        future.add_done_callback(self._one_done)
        return future

    def _one_done(self, _: object) -> None:
        self.pending -= 1


def run(coro: Coroutine[Any, Any, _T], clock: VirtualClock) -> _T:
    """Run ``coro`` to the end on a fresh loop whose time is ``clock``."""
    with asyncio.Runner(loop_factory=lambda: VirtualTimeLoop(clock)) as runner:
        return runner.run(coro)
