"""Waiting on many runs at once: the fan-out's front doors over the process's engine.

Each run is an ordinary wait in a `_engine.Fleet`: its account's budget, its
job's listing, its history. The fan-out adds what a batch needs: the runs in
input order, one result each (a malformed ID is an ``error`` result, a run
listed twice is waited on once), ``on_result`` as each ends, a start window
so 100,000 runs do not hold 100,000 coroutines at once, and one deadline
from the fan-out's start.

With real time the waits run on the process's engine, sharing the account's
budget with every other wait of the process (threads, triggers, the CLI);
with injected time or a ``limiter`` of their own they run a private fleet on
the caller's loop (the blocking call: a private loop in this thread).
"""

from __future__ import annotations

import asyncio
import collections
import random
import threading
from collections.abc import Callable, Iterable
from dataclasses import replace
from typing import Any

from poller import log
from poller._datazone import JobRunClient, validate_ids
from poller._engine import (
    LISTING_STOPPED,
    LISTING_TRIES,
    Engine,
    Fleet,
    Relay,
    RunRef,
    Stream,
    joins_engine,
    run_async,
    run_blocking,
)
from poller._limiter import RateLimiter, budget_for
from poller._model import WaitResult
from poller._policy import PollPolicy
from poller._runtime import (
    CANCEL_POLL,
    REAL,
    UNSET,
    ClientSettings,
    Clock,
    Seams,
    Unset,
    off_any_running_loop,
    resolve_client,
    resolve_policy,
)
from poller._session import OnChange, OnStep, WaitSession
from poller.errors import InvalidRequestError

__all__ = [
    "LISTING_STOPPED",
    "LISTING_TRIES",
    "OnResult",
    "RunRef",
    "StepHooks",
    "async_wait_for_job_runs",
    "wait_for_job_runs",
]

#: Called with each run's result as soon as its wait ends.
OnResult = Callable[[WaitResult], object]
#: Given a run, the ``on_step`` hook of its wait (or None): a progress display per run.
StepHooks = Callable[[RunRef], OnStep | None]

# Debug level: the per-run events already tell the story; these sum a fleet up.
FANOUT_STARTED = "fanout_started"
FANOUT_FINISHED = "fanout_finished"

# Waits started but not yet answered once, at most (see `_Group.run`).
STARTING = 1000


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


def _private_limiter(
    limiter: RateLimiter | None, max_rps: float | None, clock: Clock | None, client: object
) -> RateLimiter:
    if limiter is not None:
        if max_rps is not None:
            limiter.max_rps = max_rps
        return limiter
    if clock is not None:
        # The process's budgets run on the engine's clock; a budget measured on
        # an injected clock cannot be shared with them, so it gets its own.
        budget = max_rps if max_rps is not None else budget_for(client).max_rps
        return RateLimiter(budget, clock=clock)
    return budget_for(client, max_rps)


def _not_waited(ref: RunRef, error: InvalidRequestError, logger: Any) -> WaitResult:
    result = WaitResult.from_error(*ref, error)
    logger.info(log.FINISHED, **result.to_dict())
    return result


class _Group:
    """The waits of one fan-out call in a fleet: their settings, start window and results."""

    def __init__(
        self,
        fleet: Fleet,
        *,
        policy: PollPolicy,
        client: JobRunClient,
        seams: Seams,
        on_change: OnChange | None,
        on_result: OnResult | None,
        hooks: dict[RunRef, OnStep | None],
    ) -> None:
        self.fleet = fleet
        self.policy = policy
        self.client = client
        # Every wait's seams: the fleet's clock.
        self.seams = replace(seams, clock=fleet.clock)
        self.on_change = on_change
        self.on_result = on_result
        self.hooks = hooks
        # Set when the fan-out is stopped: its waits end `interrupted`.
        self.stopping = False
        self.started = fleet.clock()
        self.window = asyncio.Semaphore(STARTING)
        self.live: set[asyncio.Task[None]] = set()
        self.results: dict[RunRef, WaitResult] = {}

    async def wait_one(self, ref: RunRef, rng: Stream) -> None:
        """Wait on one run; its result goes to ``results`` (and ``on_result``)."""
        session = WaitSession(
            *ref,
            self.policy,
            seams=self.seams,
            jitter=rng,
            on_change=self.on_change,
            on_step=self.hooks.get(ref),
            started=self.started,
        )
        if self.stopping:
            self.window.release()
            self.fleet.unseen -= 1
            step = session.interrupted()
        else:
            step = await self.fleet.drive(session, self.client, window=self.window, counted=True)
        self._ended(ref, session.result(step))

    async def run(self, todo: dict[RunRef, Stream]) -> dict[RunRef, WaitResult]:
        """Start the waits in input order, a window at a time; return when all have ended.

        A wait is started only when fewer than ``STARTING`` others are still
        before their first answer: 100,000 runs do not hold 100,000 coroutines,
        timers and queued calls at once. Every wait's deadline still runs from
        ``started``, the fan-out's start. Cancelled, every wait still going
        ends ``interrupted`` (those not started too), and the cancellation
        goes on.
        """
        self.fleet.unseen += len(todo)
        begun = 0
        try:
            for ref, rng in todo.items():
                if self.stopping:
                    break
                await self.window.acquire()
                task = asyncio.create_task(self.wait_one(ref, rng))
                begun += 1
                self.live.add(task)
                task.add_done_callback(self.live.discard)
            while self.live:
                ended = await asyncio.gather(*self.live, return_exceptions=True)
                for outcome in ended:
                    if isinstance(outcome, BaseException) and not isinstance(
                        outcome, asyncio.CancelledError
                    ):
                        raise outcome  # a bug, not a fault: the finally stops the rest
        finally:
            # Cancelled, or one wait raised: stop the rest, each logging its last state.
            self.stop()
            await asyncio.gather(*self.live, return_exceptions=True)
            self.fleet.unseen -= len(todo) - begun
            for ref in todo:
                if ref not in self.results:
                    # Stopped before its wait began: it still gets its result.
                    session = WaitSession(*ref, self.policy, seams=self.seams)
                    self._ended(ref, session.result(session.interrupted()))
        return self.results

    def _ended(self, ref: RunRef, result: WaitResult) -> None:
        self.results[ref] = result
        if self.on_result is not None:
            self.on_result(result)

    def stop(self) -> None:
        """End every wait with an ``interrupted`` result, those not started yet included."""
        self.stopping = True
        for task in list(self.live):
            task.cancel()


class _Plan:
    """A fan-out's checked arguments: the runs in order, those to wait on, those already done."""

    def __init__(
        self,
        runs: Iterable[RunRef],
        *,
        timeout: float | Unset | None,
        policy: PollPolicy | None,
        client: JobRunClient | ClientSettings | None,
        on_result: OnResult | None,
        on_step: StepHooks | None,
        seams: Seams | None,
    ) -> None:
        self.refs = _refs(runs)
        self.policy = resolve_policy(policy, timeout)
        seams = seams or REAL
        self.logger = seams.logger if seams.logger is not None else log.get_logger()
        self.seams = replace(seams, logger=self.logger)
        rng = seams.rng if seams.rng is not None else random.Random()
        self.done: dict[RunRef, WaitResult] = {}
        self.todo: dict[RunRef, Stream] = {}
        for ref in self.refs:
            if ref in self.done or ref in self.todo:
                continue  # the same run twice is waited on once, reported at each place
            try:
                validate_ids(*ref)
            except InvalidRequestError as error:
                self.done[ref] = _not_waited(ref, error, self.logger)
                if on_result is not None:
                    on_result(self.done[ref])
            else:
                # Each wait gets its own generator, seeded in input order, so one
                # rng gives a reproducible fleet whatever order the calls end in.
                self.todo[ref] = Stream(rng.getrandbits(64))
        self.hooks: dict[RunRef, OnStep | None] = {}
        if on_step is not None:
            self.hooks = {ref: on_step(ref) for ref in self.todo}
        self.client = resolve_client(client, shared=True) if self.todo else None
        self.logger.debug(FANOUT_STARTED, runs=len(self.refs), waits=len(self.todo))

    def group(
        self,
        fleet: Fleet,
        relay: Relay | None,
        on_change: OnChange | None,
        on_result: OnResult | None,
    ) -> _Group:
        """The group of these waits in ``fleet``; callbacks through ``relay`` if given."""
        hooks = self.hooks
        if relay is not None:
            on_change, on_result = relay.wrap(on_change), relay.wrap(on_result)
            hooks = {ref: relay.wrap(hook) for ref, hook in hooks.items()}
        assert self.client is not None
        return _Group(
            fleet,
            policy=self.policy,
            client=self.client,
            seams=self.seams,
            on_change=on_change,
            on_result=on_result,
            hooks=hooks,
        )

    def results(self, waited: dict[RunRef, WaitResult], rate: float) -> list[WaitResult]:
        """One result per run, in input order."""
        self.done.update(waited)
        outcomes = collections.Counter(str(result.outcome) for result in self.done.values())
        self.logger.debug(FANOUT_FINISHED, runs=len(self.refs), rate=round(rate, 3), **outcomes)
        return [self.done[ref] for ref in self.refs]


async def _in_engine(
    plan: _Plan,
    relay: Relay,
    engine: Engine,
    on_change: OnChange | None,
    on_result: OnResult | None,
) -> dict[RunRef, WaitResult]:
    assert plan.client is not None
    group = plan.group(engine.fleet(plan.client), relay, on_change, on_result)
    try:
        return await group.run(plan.todo)
    except asyncio.CancelledError:
        return group.results  # stopped: every wait ended `interrupted`


async def _in_private(
    plan: _Plan,
    limiter: RateLimiter | None,
    max_rps: float | None,
    on_change: OnChange | None,
    on_result: OnResult | None,
    cancel: threading.Event | None,
) -> tuple[dict[RunRef, WaitResult], float]:
    seams = plan.seams
    budget = _private_limiter(limiter, max_rps, seams.clock, plan.client)
    fleet = Fleet(
        limiter=budget,
        clock=seams.clock,
        sleep=seams.async_sleep,
        executor=seams.executor,
        logger=plan.logger,
    )
    group = plan.group(fleet, None, on_change, on_result)
    watcher = None
    if cancel is not None:
        watcher = asyncio.create_task(_stop_on(cancel, group))
    try:
        return await group.run(plan.todo), budget.rate
    finally:
        if watcher is not None:
            watcher.cancel()
        await fleet.close()


async def _stop_on(cancel: threading.Event, group: _Group) -> None:
    # Real time on purpose: the event is set by another thread, on no clock of ours.
    while not cancel.is_set():
        await asyncio.sleep(CANCEL_POLL)
    group.stop()


async def async_wait_for_job_runs(
    runs: Iterable[RunRef],
    *,
    timeout: float | Unset | None = UNSET,
    policy: PollPolicy | None = None,
    client: JobRunClient | ClientSettings | None = None,
    max_rps: float | None = None,
    limiter: RateLimiter | None = None,
    on_result: OnResult | None = None,
    on_change: OnChange | None = None,
    on_step: StepHooks | None = None,
    seams: Seams | None = None,
) -> list[WaitResult]:
    """Wait on every ``(domain_id, job_run_id)`` in ``runs`` at once; one result each, in order.

    Never raises for a run: one that cannot be waited on (bad IDs, not found,
    denied, deadline passed...) gets a result with that outcome and its
    ``error``, and the others carry on. ``on_result`` is called with each
    result as its wait ends; a run listed twice is waited on once. ``on_step``
    gives each run's wait its own ``on_step`` hook (a progress line per run).

    The waits join the process's engine: every call is booked on the budget
    of the client's account, shared with every other wait of the process
    (``max_rps`` sets it). With ``limiter``, or an injected ``seams.clock`` or
    ``async_sleep``, they run a private fleet on this loop instead, on that
    budget (or a private one on that clock). Callbacks run on this loop.
    Cancelling the task stops every wait; each logs its last state as
    ``interrupted``.
    """
    plan = _Plan(
        runs,
        timeout=timeout,
        policy=policy,
        client=client,
        on_result=on_result,
        on_step=on_step,
        seams=seams,
    )
    if not plan.todo:
        return plan.results({}, 0.0)
    if limiter is not None or not joins_engine(plan.seams):
        waited, rate = await _in_private(plan, limiter, max_rps, on_change, on_result, None)
        return plan.results(waited, rate)
    assert plan.client is not None
    budget = budget_for(plan.client, max_rps)
    relay = Relay(asyncio.get_running_loop())
    waited = await run_async(
        lambda engine: _in_engine(plan, relay, engine, on_change, on_result), relay=relay
    )
    return plan.results(waited, budget.rate)


def wait_for_job_runs(
    runs: Iterable[RunRef],
    *,
    timeout: float | Unset | None = UNSET,
    policy: PollPolicy | None = None,
    client: JobRunClient | ClientSettings | None = None,
    max_rps: float | None = None,
    limiter: RateLimiter | None = None,
    on_result: OnResult | None = None,
    on_change: OnChange | None = None,
    on_step: StepHooks | None = None,
    cancel: threading.Event | None = None,
    seams: Seams | None = None,
) -> list[WaitResult]:
    """Block until every run in ``runs`` has a result; as `async_wait_for_job_runs`.

    Setting ``cancel`` stops every wait still going: each gets an
    ``interrupted`` result and the list is returned as usual. The waits run
    on the process's engine (with ``limiter`` or injected time: on a private
    event loop in this thread, or in a helper thread if this one already runs
    a loop); ``on_result`` and the other callbacks are called in this thread.
    """

    plan = _Plan(
        runs,
        timeout=timeout,
        policy=policy,
        client=client,
        on_result=on_result,
        on_step=on_step,
        seams=seams,
    )
    if not plan.todo:
        return plan.results({}, 0.0)
    if limiter is not None or not joins_engine(plan.seams):

        def run() -> tuple[dict[RunRef, WaitResult], float]:
            return asyncio.run(_in_private(plan, limiter, max_rps, on_change, on_result, cancel))

        return plan.results(*off_any_running_loop(run))
    assert plan.client is not None
    budget = budget_for(plan.client, max_rps)
    relay = Relay()
    waited = run_blocking(
        lambda engine: _in_engine(plan, relay, engine, on_change, on_result),
        relay=relay,
        cancel=cancel,
    )
    return plan.results(waited, budget.rate)
