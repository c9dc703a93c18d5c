"""Own time: an event loop whose time is a wait's clock, and the private fleets run on it.

A wait given its own time (``Seams(clock=..., sleep=...)``: a test's fake
clock) runs the engine's code, a `Fleet`, privately. Its tasks (the wait,
a background history lookup, a job listing) sleep concurrently, so their
time cannot come from each task moving a fake clock as it sleeps: the loop
moves it. ``loop.time()`` reads the wait's clock; when every task is asleep,
the loop calls the wait's blocking ``sleep`` for the gap to its next timer
(a fake sleep jumps the clock there, a real one really sleeps), once for
all of them. While a call runs in an executor thread, time stands still:
calls are stamped with exact, reproducible times.

`VirtualClock` is a clock only the loop moves; `run_virtual` runs a
coroutine on it. ``poller.testing`` offers both, for tests and benchmarks
of many waits on the simulator's clock.
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import contextlib
import contextvars
import selectors
import threading
import time
from collections.abc import Awaitable, Callable, Coroutine
from concurrent.futures import Executor
from typing import Any, TypeVar

from poller._engine import Relay, hand_over
from poller._runtime import CANCEL_POLL, Clock, Seams, Sleep, SleptClock, interruptible

__all__ = [
    "MIN_STEP",
    "STUCK_AFTER",
    "VirtualClock",
    "VirtualTimeLoop",
    "async_on_own_time",
    "on_own_time",
    "run_virtual",
]

_T = TypeVar("_T")

#: Executor work (a call) still out after this many real seconds, with time standing
#: still, fails the loop's run (TimeoutError) instead of hanging it: a hung server.
STUCK_AFTER = 30.0
#: The least a loop moves its time when all is asleep (s): a microsecond.
MIN_STEP = 1e-6


class VirtualClock:
    """A clock only a `VirtualTimeLoop` moves: the time every party of a test reads.

    Pass it as the loop's clock (its ``sleep`` jumps it), the simulator's
    ``clock`` and the waits' ``Seams(clock=...)``.
    """

    def __init__(self, start: float = 1000.0) -> None:
        # Not 0: a zero start hides "time since start" bugs.
        self.now = start

    def __call__(self) -> float:
        return self.now

    def sleep(self, seconds: float) -> None:
        """Move the clock ``seconds`` on (the loop's jump to its next timer)."""
        self.now += seconds


class _Selector(selectors.DefaultSelector):
    loop: VirtualTimeLoop

    def select(self, timeout: float | None = None) -> list[Any]:
        loop = self.loop
        if timeout is not None and timeout <= 0:
            return list(super().select(0))
        if loop.pending:
            return self._wait_for_work()
        ready = list(super().select(0))
        if ready:
            return ready
        if timeout is None:
            return list(super().select(None))
        loop.advance(timeout)
        return []

    def _wait_for_work(self) -> list[Any]:
        """Wait for real for a call in a thread, time standing still (unless the clock moves
        by itself: a real one), the loop's ``watch`` looked at every CANCEL_POLL."""
        loop = self.loop
        start, end = loop.time(), time.monotonic() + loop.stuck_after
        while True:
            ready = list(super().select(max(min(CANCEL_POLL, end - time.monotonic()), 0.0)))
            if ready or loop.watch() or loop.time() != start:
                return ready
            if time.monotonic() >= end:
                raise TimeoutError(
                    f"executor work did not finish within {loop.stuck_after:g} s of real time"
                )


class VirtualTimeLoop(asyncio.SelectorEventLoop):
    """A selector loop on ``clock``, moved by ``sleep`` from timer to timer when all is asleep.

    ``clock`` defaults to a new `VirtualClock`, ``sleep`` to the clock's own
    ``sleep`` (else ``time.sleep``). ``watch`` is called after each sleep and
    while a call is out (every CANCEL_POLL of real time): a wait's cancel
    event is looked at there (it returns True when it acted).
    """

    def __init__(
        self,
        clock: Clock | None = None,
        sleep: Sleep | None = None,
        *,
        watch: Callable[[], bool] | None = None,
        stuck_after: float = STUCK_AFTER,
    ) -> None:
        selector = _Selector()
        selector.loop = self
        self.clock: Clock = clock if clock is not None else VirtualClock()
        self._sleep: Sleep = sleep or getattr(self.clock, "sleep", None) or time.sleep
        self.watch: Callable[[], bool] = watch or (lambda: False)
        self.stuck_after = stuck_after
        self.pending = 0
        super().__init__(selector)
        # Timers due within this of now run now: a nanosecond is below a float step of a
        # large clock (freezegun's epoch, 1.8e9 s), where a timer due now would never run.
        self._clock_resolution: float = max(time.get_clock_info("monotonic").resolution, MIN_STEP)

    def time(self) -> float:
        return self.clock()

    def call_later(  # type: ignore[override]
        self, delay: float, callback: Callable[..., object], *args: Any, context: Any = None
    ) -> asyncio.TimerHandle:
        # A sleep shorter than a float step of a large clock (freezegun's epoch) would
        # end without the time moving: one that is meant to move it moves it MIN_STEP.
        return super().call_later(
            max(delay, MIN_STEP) if delay > 0 else delay, callback, *args, context=context
        )

    def advance(self, seconds: float) -> None:
        """Every task is asleep: move time ``seconds`` on (the wait's sleep).

        Rounded to the nanosecond: a gap of 0.1 s is asked for as 0.1, not
        as the float error of two times' difference; and a microsecond at
        least, so a clock of that resolution (freezegun's) still reaches the
        timer, whose time a float sum may leave a hair beyond the gap.
        """
        step = max(round(seconds, 9), MIN_STEP)
        since = self.clock()
        self._sleep(step)
        if isinstance(self.clock, SleptClock):
            self.clock.slept(step, since)  # a sleep that returned at once skipped its time
        self.watch()

    def run_in_executor(  # type: ignore[override]
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

    async def shutdown_default_executor(self, *args: Any, **kwargs: Any) -> None:
        # Its threads are joined in a thread, in real time, while time stands still as for
        # a call: Python 3.12+ bounds that join by a timeout on this loop's clock, which
        # lapsed at once (the loop, all asleep, jumped 300 s) and left them unjoined.
        self.pending += 1
        try:
            await super().shutdown_default_executor(*args, **kwargs)
        finally:
            self.pending -= 1


def run_virtual(coro: Coroutine[Any, Any, _T], clock: VirtualClock) -> _T:
    """Run ``coro`` to the end on a fresh loop whose time is ``clock``."""
    with asyncio.Runner(loop_factory=lambda: VirtualTimeLoop(clock)) as runner:
        return runner.run(coro)


def _uses_virtual_loop(seams: Seams) -> bool:
    return seams.clock is not None or seams.sleep is not None


def on_own_time(
    make: Callable[[], Coroutine[Any, Any, _T]],
    seams: Seams,
    cancel: threading.Event | None = None,
) -> _T:
    """Run ``make()`` (a private fleet's wait) to its end here, on the seams' time.

    With a clock or sleep of its own, on a `VirtualTimeLoop` of them (the
    sleep interrupted by ``cancel``); with neither (its own executor only),
    on a plain loop. ``cancel`` set cancels the task (the wait ends
    ``interrupted``). Must not be called on a running loop's thread.
    """
    task: asyncio.Task[_T] | None = None

    def watch() -> bool:
        if cancel is None or not cancel.is_set() or task is None or task.done():
            return False
        task.cancel()
        return True

    async def main() -> _T:
        nonlocal task
        task = asyncio.current_task()
        if cancel is not None and not _uses_virtual_loop(seams):
            # A real loop: a watcher on real time, as a fan-out's.
            watcher = asyncio.create_task(_cancel_on(cancel, task))
            try:
                return await make()
            finally:
                watcher.cancel()
        return await make()

    def factory() -> asyncio.AbstractEventLoop:
        if not _uses_virtual_loop(seams):
            return asyncio.new_event_loop()
        sleep = interruptible(seams.sleep, cancel)
        return VirtualTimeLoop(seams.clock or time.monotonic, sleep, watch=watch)

    with asyncio.Runner(loop_factory=factory) as runner:
        return runner.run(main())


async def _cancel_on(cancel: threading.Event, task: asyncio.Task[Any] | None) -> None:
    # Real time on purpose: the event is set by another thread, on no clock of ours.
    while not cancel.is_set():
        await asyncio.sleep(CANCEL_POLL)
    if task is not None:
        task.cancel()


async def async_on_own_time(
    make: Callable[[], Coroutine[Any, Any, _T]],
    seams: Seams,
    on_cancel: Callable[[_T], object] | None = None,
    relay: Relay | None = None,
) -> _T:
    """Await ``make()`` (a private fleet's wait) on the seams' time, from this loop.

    With no ``async_sleep`` of its own, it runs here, on this loop's time
    (a `VirtualTimeLoop` already, or real). With one, it runs on a
    `VirtualTimeLoop` of the seams' clock in a helper thread, whose sleeps
    are the ``async_sleep`` awaited on this loop: every task of the fleet is
    asleep then, and one sleep moves the time for all. Cancelling the caller
    cancels the wait; once it has ended (``interrupted``), its value goes to
    ``on_cancel`` and the cancellation goes on. ``relay``: the one the
    wait's callbacks were wrapped with; a callback that raises stops the wait.
    """
    if seams.async_sleep is None:
        ended = await make()  # a fleet's wait ends `interrupted` when cancelled
        current = asyncio.current_task()
        if current is not None and current.cancelling():
            if on_cancel is not None:
                on_cancel(ended)
            raise asyncio.CancelledError
        return ended
    caller = asyncio.get_running_loop()
    async_sleep = seams.async_sleep
    sleeping: list[concurrent.futures.Future[object]] = []

    def sleep(seconds: float) -> None:
        future = asyncio.run_coroutine_threadsafe(_awaited(async_sleep(seconds)), caller)
        sleeping.append(future)
        try:
            future.result()
        except concurrent.futures.CancelledError:
            pass  # the wait was cancelled meanwhile
        finally:
            sleeping.remove(future)

    loop = VirtualTimeLoop(seams.clock or time.monotonic, sleep)
    done: concurrent.futures.Future[_T] = concurrent.futures.Future()
    context = contextvars.copy_context()  # otel: the caller's span goes with the wait
    started = threading.Event()
    task: asyncio.Task[_T] | None = None

    def run() -> None:
        nonlocal task
        try:
            task = loop.create_task(make(), context=context)
            started.set()
            done.set_result(loop.run_until_complete(task))
        except BaseException as exc:  # handed to the caller
            done.set_exception(exc)
        finally:
            started.set()
            loop.close()

    def stop() -> None:
        if task is not None:
            with contextlib.suppress(RuntimeError):  # closed: the wait has ended
                loop.call_soon_threadsafe(task.cancel)
        for future in list(sleeping):
            future.cancel()

    if relay is not None:
        relay.stop = stop
    thread = threading.Thread(target=run, name="poller-own-time", daemon=True)
    thread.start()
    try:
        return await asyncio.wrap_future(done)
    except asyncio.CancelledError:
        await asyncio.to_thread(started.wait)
        stop()
        await hand_over(done, on_cancel)
        raise


async def _awaited(awaitable: Awaitable[object]) -> object:
    return await awaitable
