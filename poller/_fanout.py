"""Waiting on many runs at once under one shared request budget.

Each run is an ordinary wait: a `WaitSession` driven by `async_drive`, so the
cadence, backoff, grace and deadline rules are the core's, unchanged. The one
difference is the fetch: before calling GetJobRun, a wait asks the `_Gate` for
a turn. The gate hands out turns one at a time as the `RateLimiter` allows,
earliest due first, so when the budget is short the run whose poll is most
overdue goes next and no run starves. Every answer is fed back to the limiter:
a throttle lowers the shared rate, a call that got through raises it.

The blocking `wait_for_job_runs` runs the same coroutine on a private event
loop: thousands of waits cost one thread plus the small call pool, not a
thread each.
"""

from __future__ import annotations

import asyncio
import collections
import functools
import heapq
import itertools
import random
import threading
from collections.abc import Callable, Iterable
from concurrent.futures import Executor
from typing import Any

from poller import log
from poller._datazone import JobRunClient, fetch_job_run, validate_ids
from poller._history import learn, shared_cache, wants_history, worth_a_look
from poller._limiter import RateLimiter, shared_limiter
from poller._model import JobRun, WaitResult
from poller._policy import CallFault, FaultKind, PollPolicy
from poller._runtime import (
    UNSET,
    AsyncSleep,
    Unset,
    async_drive,
    off_any_running_loop,
    resolve_policy,
    shared_client,
    shared_executor,
)
from poller._session import Clock, OnChange, OnStep, WaitSession
from poller.errors import InvalidRequestError

__all__ = ["OnResult", "RunRef", "StepHooks", "async_wait_for_job_runs", "wait_for_job_runs"]

#: A run to wait on: ``(domain_id, job_run_id)``.
RunRef = tuple[str, str]
#: Called with each run's result as soon as its wait ends.
OnResult = Callable[[WaitResult], object]
#: Given a run, the ``on_step`` hook of its wait (or None): a progress display per run.
StepHooks = Callable[[RunRef], OnStep | None]

# Debug level: the per-run events already tell the story; these sum a fleet up.
FANOUT_STARTED = "fanout_started"
FANOUT_FINISHED = "fanout_finished"

# How often the blocking call looks at its threading.Event: a stop within a
# tenth of a second is prompt for a human, and idle polling costs nothing.
_CANCEL_POLL = 0.1


class _Gate:
    """Hands out call turns within the limiter's budget, earliest due first; one per loop."""

    def __init__(self, limiter: RateLimiter, sleep: AsyncSleep) -> None:
        self._limiter = limiter
        self._sleep = sleep
        self._queue: list[tuple[float, int, asyncio.Future[float]]] = []
        self._order = itertools.count()  # ties keep arrival order
        self._arrived = asyncio.Event()
        self._task: asyncio.Task[None] | None = None

    async def turn(self, due: float) -> float:
        """Wait for a turn to call; ``due`` is when the poll became due. Returns the grant time."""
        future: asyncio.Future[float] = asyncio.get_running_loop().create_future()
        heapq.heappush(self._queue, (due, next(self._order), future))
        self._arrived.set()
        if self._task is None:
            self._task = asyncio.create_task(self._dispatch(), name="poller-fanout-gate")
        return await future

    async def _dispatch(self) -> None:
        while True:
            # A wait cancelled while queued leaves a done future behind: skip it.
            while self._queue and self._queue[0][-1].done():
                heapq.heappop(self._queue)
            if not self._queue:
                self._arrived.clear()
                await self._arrived.wait()
                continue
            delay = self._limiter.try_acquire()
            if delay > 0:
                await self._sleep(delay)
                continue
            future = heapq.heappop(self._queue)[-1]
            future.set_result(self._limiter.clock())

    async def close(self) -> None:
        """Stop dispatching; any turn still queued is abandoned."""
        if self._task is not None:
            self._task.cancel()
            await asyncio.gather(self._task, return_exceptions=True)


def _refs(runs: Iterable[RunRef]) -> list[RunRef]:
    refs = []
    for i, ref in enumerate(runs):
        if isinstance(ref, str | bytes) or not isinstance(ref, Iterable):
            raise TypeError(f"runs[{i}] must be a (domain_id, job_run_id) pair, not {ref!r}")
        pair = tuple(ref)
        if len(pair) != 2:
            raise TypeError(f"runs[{i}] must be a (domain_id, job_run_id) pair, not {ref!r}")
        refs.append((pair[0], pair[1]))
    return refs


def _resolve_limiter(
    limiter: RateLimiter | None, max_rps: float | None, clock: Clock | None
) -> RateLimiter:
    if limiter is not None:
        if max_rps is not None:
            limiter.max_rps = max_rps
        return limiter
    if clock is not None:
        # The shared limiter runs on the real clock; a budget measured on an
        # injected clock cannot be shared with it, so it gets its own.
        return RateLimiter(
            max_rps if max_rps is not None else shared_limiter().max_rps, clock=clock
        )
    return shared_limiter(max_rps)


def _not_waited(ref: RunRef, error: InvalidRequestError, logger: Any) -> WaitResult:
    result = WaitResult.from_error(*ref, error)
    logger.info(log.FINISHED, **result.to_dict())
    return result


class _Fleet:
    """The waits of one fan-out call: their shared settings and how to stop them."""

    def __init__(
        self,
        *,
        policy: PollPolicy,
        client: JobRunClient,
        limiter: RateLimiter,
        gate: _Gate,
        clock: Clock,
        sleep: AsyncSleep,
        executor: Executor,
        on_change: OnChange | None,
        on_result: OnResult | None,
        on_step: StepHooks | None,
        logger: Any,
    ) -> None:
        self.policy = policy
        self.client = client
        self.limiter = limiter
        self.gate = gate
        self.clock = clock
        self.sleep = sleep
        self.executor = executor
        self.on_change = on_change
        self.on_result = on_result
        self.on_step = on_step
        self.logger = logger
        # Set when the caller stops the whole fan-out: cancelled waits then
        # end with an `interrupted` result instead of propagating.
        self.stopping = False
        # ListJobRuns lookups in flight: each takes a turn like a poll due at
        # once, and no wait blocks on one (it picks the history up next time).
        self.learning: set[asyncio.Task[None]] = set()

    def learn(self, domain_id: str, job_id: str, answered: Callable[[float, Any], None]) -> None:
        """Look the job's history up in the background, from the shared budget."""

        async def lookup() -> None:
            loop = asyncio.get_running_loop()
            try:
                granted = await self.gate.turn(self.clock())
                learned = await loop.run_in_executor(
                    self.executor, learn, self.client, domain_id, job_id
                )
            except BaseException:
                shared_cache().release((domain_id, job_id))
                raise
            answered(granted, learned.fault)

        task = asyncio.create_task(lookup())
        self.learning.add(task)
        task.add_done_callback(self.learning.discard)

    async def close(self) -> None:
        """Stop the lookups still going, then the gate."""
        for task in list(self.learning):
            task.cancel()
        await asyncio.gather(*self.learning, return_exceptions=True)
        await self.gate.close()

    async def wait_one(self, ref: RunRef, rng: random.Random) -> WaitResult:
        domain_id, job_run_id = ref
        session = WaitSession(
            domain_id,
            job_run_id,
            self.policy,
            clock=self.clock,
            rng=rng,
            on_change=self.on_change,
            on_step=self.on_step(ref) if self.on_step is not None else None,
            logger=self.logger,
        )
        call = functools.partial(fetch_job_run, self.client, domain_id, job_run_id)
        loop = asyncio.get_running_loop()

        def answered(granted: float, kind: FaultKind | None) -> None:
            if kind is FaultKind.THROTTLE:
                self.limiter.throttled(granted)
            elif kind is not FaultKind.TRANSIENT:
                # Denied or not found still means the rate was accepted.
                self.limiter.succeeded()

        async def fetch() -> JobRun:
            granted = await self.gate.turn(
                worth_a_look(session.forecast, session.state, self.clock())
            )
            try:
                run = await loop.run_in_executor(self.executor, call)
            except CallFault as fault:
                answered(granted, fault.kind)
                raise
            answered(granted, None)
            if wants_history(self.policy, run):
                assert run.job_id is not None
                self.learn(domain_id, run.job_id, answered)
            return run

        try:
            step = await async_drive(session, fetch, self.sleep)
        except asyncio.CancelledError:
            result = session.result(session.interrupted())
            if not self.stopping:
                raise
        else:
            result = session.result(step)
        if self.on_result is not None:
            self.on_result(result)
        return result


async def _fan_out(
    runs: Iterable[RunRef],
    *,
    timeout: float | Unset | None,
    policy: PollPolicy | None,
    client: JobRunClient | None,
    region_name: str | None,
    profile_name: str | None,
    endpoint_url: str | None,
    max_rps: float | None,
    limiter: RateLimiter | None,
    on_result: OnResult | None,
    on_change: OnChange | None,
    on_step: StepHooks | None,
    cancel: threading.Event | None,
    clock: Clock | None,
    sleep: AsyncSleep | None,
    rng: random.Random | None,
    executor: Executor | None,
    logger: Any,
) -> list[WaitResult]:
    refs = _refs(runs)
    policy = resolve_policy(policy, timeout)
    budget = _resolve_limiter(limiter, max_rps, clock)
    logger = logger if logger is not None else log.get_logger()
    rng = rng if rng is not None else random.Random()
    done: dict[RunRef, WaitResult] = {}
    todo: dict[RunRef, random.Random] = {}
    for ref in refs:
        if ref in done or ref in todo:
            continue  # the same run twice is waited on once, reported at each place
        try:
            validate_ids(*ref)
        except InvalidRequestError as error:
            done[ref] = _not_waited(ref, error, logger)
            if on_result is not None:
                on_result(done[ref])
        else:
            # Each wait gets its own generator, seeded in input order, so one
            # rng gives a reproducible fleet whatever order the calls end in.
            todo[ref] = random.Random(rng.random())
    logger.debug(FANOUT_STARTED, runs=len(refs), waits=len(todo), max_rps=budget.max_rps)
    if todo:
        if client is None:
            client = shared_client(region_name or None, profile_name or None, endpoint_url or None)
        fleet = _Fleet(
            policy=policy,
            client=client,
            limiter=budget,
            gate=_Gate(budget, sleep or asyncio.sleep),
            clock=clock or budget.clock,
            sleep=sleep or asyncio.sleep,
            executor=executor if executor is not None else shared_executor(),
            on_change=on_change,
            on_result=on_result,
            on_step=on_step,
            logger=logger,
        )
        tasks = {
            ref: asyncio.create_task(fleet.wait_one(ref, own_rng)) for ref, own_rng in todo.items()
        }
        watcher = None
        if cancel is not None:
            watcher = asyncio.create_task(_stop_on(cancel, fleet, list(tasks.values())))
        try:
            await asyncio.gather(*tasks.values())
        finally:
            # One wait that raised (a bug, not a fault) or an outer cancel
            # stops the rest, each logging its last state as it goes.
            for task in tasks.values():
                task.cancel()
            await asyncio.gather(*tasks.values(), return_exceptions=True)
            if watcher is not None:
                watcher.cancel()
            await fleet.close()
        done.update((ref, task.result()) for ref, task in tasks.items())
    outcomes = collections.Counter(str(result.outcome) for result in done.values())
    logger.debug(FANOUT_FINISHED, runs=len(refs), rate=round(budget.rate, 3), **outcomes)
    return [done[ref] for ref in refs]


async def _stop_on(cancel: threading.Event, fleet: _Fleet, tasks: list[asyncio.Task[Any]]) -> None:
    # Real time on purpose: the event is set by another thread, on no clock of ours.
    while not cancel.is_set():
        await asyncio.sleep(_CANCEL_POLL)
    fleet.stopping = True
    for task in tasks:
        task.cancel()


async def async_wait_for_job_runs(
    runs: Iterable[RunRef],
    *,
    timeout: float | Unset | None = UNSET,
    policy: PollPolicy | None = None,
    client: JobRunClient | None = None,
    region_name: str | None = None,
    profile_name: str | None = None,
    endpoint_url: str | None = None,
    max_rps: float | None = None,
    limiter: RateLimiter | None = None,
    on_result: OnResult | None = None,
    on_change: OnChange | None = None,
    on_step: StepHooks | None = None,
    clock: Clock | None = None,
    sleep: AsyncSleep | None = None,
    rng: random.Random | None = None,
    executor: Executor | None = None,
    logger: Any = None,
) -> list[WaitResult]:
    """Wait on every ``(domain_id, job_run_id)`` in ``runs`` at once; one result each, in order.

    Never raises for a run: one that cannot be waited on (bad IDs, not found,
    denied, deadline passed...) gets a result with that outcome and its
    ``error``, and the others carry on. ``on_result`` is called with each
    result as its wait ends; a run listed twice is waited on once. ``on_step``
    gives each run's wait its own ``on_step`` hook (a progress line per run).

    All calls share ``limiter`` (default: the process-wide one, whose budget
    ``max_rps`` sets). With an injected ``clock`` and no ``limiter``, the
    waits get a private limiter on that clock. Cancelling the task stops
    every wait; each logs its last state as ``interrupted``.
    """
    return await _fan_out(
        runs,
        timeout=timeout,
        policy=policy,
        client=client,
        region_name=region_name,
        profile_name=profile_name,
        endpoint_url=endpoint_url,
        max_rps=max_rps,
        limiter=limiter,
        on_result=on_result,
        on_change=on_change,
        on_step=on_step,
        cancel=None,
        clock=clock,
        sleep=sleep,
        rng=rng,
        executor=executor,
        logger=logger,
    )


def wait_for_job_runs(
    runs: Iterable[RunRef],
    *,
    timeout: float | Unset | None = UNSET,
    policy: PollPolicy | None = None,
    client: JobRunClient | None = None,
    region_name: str | None = None,
    profile_name: str | None = None,
    endpoint_url: str | None = None,
    max_rps: float | None = None,
    limiter: RateLimiter | None = None,
    on_result: OnResult | None = None,
    on_change: OnChange | None = None,
    on_step: StepHooks | None = None,
    cancel: threading.Event | None = None,
    rng: random.Random | None = None,
    logger: Any = None,
) -> list[WaitResult]:
    """Block until every run in ``runs`` has a result; as `async_wait_for_job_runs`.

    Setting ``cancel`` stops every wait still going: each gets an
    ``interrupted`` result and the list is returned as usual. The waits run
    on a private event loop in this thread (in a helper thread if this one
    already runs a loop); ``on_result`` is called on that thread.
    """

    def run() -> list[WaitResult]:
        return asyncio.run(
            _fan_out(
                runs,
                timeout=timeout,
                policy=policy,
                client=client,
                region_name=region_name,
                profile_name=profile_name,
                endpoint_url=endpoint_url,
                max_rps=max_rps,
                limiter=limiter,
                on_result=on_result,
                on_change=on_change,
                on_step=on_step,
                cancel=cancel,
                clock=None,
                sleep=None,
                rng=rng,
                executor=None,
                logger=logger,
            )
        )

    return off_any_running_loop(run)
