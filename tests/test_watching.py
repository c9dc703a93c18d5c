"""The watch driver on virtual time against the simulator: every finished run once, few calls."""

from __future__ import annotations

import asyncio
from collections.abc import Iterator
from typing import Any

import pytest
from helpers import DOMAIN, LINEAGE, QUIET, keep
from structlog.testing import capture_logs

from poller import (
    AccessDeniedError,
    Outcome,
    PollPolicy,
    RateLimiter,
    ServiceUnavailableError,
    WaitResult,
)
from poller._announce import Cadence, Ledger
from poller._watching import JobWatch, MemoryStore, announce, start_ledger
from poller.aio import watch_job_runs
from poller.testing import Fault, RunScript, Simulator, VirtualClock, run_virtual

JOB = "job-sched"
EPOCH = 1_700_000_000.0
HOUR = 3600.0


@pytest.fixture
def clock() -> VirtualClock:
    return VirtualClock()


@pytest.fixture
def sim(clock: VirtualClock) -> Iterator[Simulator]:
    with Simulator(clock=clock, wall=lambda: EPOCH + clock(), seed=0) as simulator:
        yield simulator


def past(sim: Simulator, runs: int = 12, duration: float = 600.0) -> list[str]:
    """The job's past: hourly runs of about ``duration`` s, the last an hour ago."""
    spec = [(-HOUR * k, duration + 3 * (k % 4), "SUCCESS") for k in range(runs, 0, -1)]
    return sim.add_scheduled_runs(DOMAIN, JOB, spec)


def collect(
    sim: Simulator,
    clock: VirtualClock,
    count: int,
    *,
    store: MemoryStore | None = None,
    **kwargs: Any,
) -> list[tuple[WaitResult, float]]:
    """The first ``count`` announcements, each with the virtual time it came."""

    async def main() -> list[tuple[WaitResult, float]]:
        out = []
        stream = watch_job_runs(
            DOMAIN,
            JOB,
            client=keep(sim.client()),
            store=store,
            limiter=kwargs.pop("limiter", RateLimiter(10, clock=clock)),
            wall=lambda: EPOCH + clock(),
            logger=kwargs.pop("logger", QUIET),
            **kwargs,
        )
        async for result in stream:
            out.append((result, clock()))
            if len(out) == count:
                break
        await stream.aclose()
        return out

    return run_virtual(main(), clock)


def operations(sim: Simulator, name: str) -> list[Any]:
    return [r for r in sim.requests if r.operation == name]


def test_each_finished_run_is_announced_once_with_its_lineage_soon_after_it_ends(
    sim: Simulator, clock: VirtualClock
) -> None:
    """Three scheduled runs end (one FAILED): three announcements in order, each read once,
    each within a listing period of its end; the past runs are not announced."""
    past(sim)
    ids = sim.add_scheduled_runs(
        DOMAIN,
        JOB,
        [(0, 610, "SUCCESS"), (HOUR, 590, "FAILED"), (2 * HOUR, 605, "SUCCESS")],
        lineage=LINEAGE,
    )
    got = collect(sim, clock, 3)
    assert [r.job_run_id for r, _ in got] == ids
    assert [r.outcome for r, _ in got] == [Outcome.SUCCEEDED, Outcome.FAILED, Outcome.SUCCEEDED]
    assert all(r.job_run and r.job_run.lineage for r, _ in got)
    for result, seen in got:
        end = sim.end_time(result.job_run_id)
        assert end is not None
        assert 0 <= seen - end <= Cadence().look + 1
    reads = [r.run_id for r in operations(sim, "GetJobRun")]
    assert reads == ids


def test_it_lists_rarely_while_no_run_can_end(sim: Simulator, clock: VirtualClock) -> None:
    """Over three hours of an hourly 10-minute job, far fewer listings than one per 30 s:
    none inside a run's quiet window nor before the next scheduled start."""
    past(sim)
    sim.add_scheduled_runs(DOMAIN, JOB, [(k * HOUR, 600, "SUCCESS") for k in range(3)])
    collect(sim, clock, 3)
    listings = operations(sim, "ListJobRuns")
    naive = (2 * HOUR + 600) / 30
    assert len(listings) < naive / 5
    # None while a run was surely still going (its first 5 minutes).
    for k in range(3):
        assert not [r for r in listings if 1000 + k * HOUR + 30 < r.t < 1000 + k * HOUR + 300]


def test_a_watch_started_again_on_its_store_announces_what_ended_meanwhile_and_nothing_twice(
    sim: Simulator, clock: VirtualClock
) -> None:
    """Stop after the first run; two runs end while nobody watches; the watch started again
    on the same store announces exactly those two, then the next live one."""
    past(sim)
    ids = sim.add_scheduled_runs(DOMAIN, JOB, [(k * HOUR, 600, "SUCCESS") for k in range(4)])
    store = MemoryStore()
    first = collect(sim, clock, 1, store=store)
    clock.now += 2 * HOUR + 1200  # down: runs 2 and 3 end meanwhile
    second = collect(sim, clock, 3, store=store)
    assert [r.job_run_id for r, _ in first] == ids[:1]
    assert [r.job_run_id for r, _ in second] == ids[1:]
    assert Ledger.from_json(store.value) is not None


def test_since_in_the_past_announces_the_runs_that_ended_after_it(
    sim: Simulator, clock: VirtualClock
) -> None:
    """`since` two and a half hours back: the two past runs that ended after it come first."""
    ids = past(sim)
    got = collect(sim, clock, 2, since=EPOCH + clock() - 2.5 * HOUR)
    assert [r.job_run_id for r, _ in got] == ids[-2:]


def test_only_the_chosen_end_states_are_announced(sim: Simulator, clock: VirtualClock) -> None:
    """statuses=["FAILED"]: the successful runs pass unannounced and unread."""
    past(sim)
    ids = sim.add_scheduled_runs(
        DOMAIN, JOB, [(0, 600, "SUCCESS"), (HOUR, 600, "FAILED"), (2 * HOUR, 600, "SUCCESS")]
    )
    sim.add_scheduled_runs(DOMAIN, JOB, [(3 * HOUR, 600, "FAILED")])
    got = collect(sim, clock, 2, statuses=["FAILED"])
    assert [r.outcome for r, _ in got] == [Outcome.FAILED, Outcome.FAILED]
    assert got[0][0].job_run_id == ids[1]
    assert ids[0] not in [r.run_id for r in operations(sim, "GetJobRun")]


def test_a_throttled_listing_is_retried_and_slows_the_budget(
    sim: Simulator, clock: VirtualClock
) -> None:
    """Two throttles, then the listing gets through; the first halved the budget's rate."""
    past(sim)
    ids = sim.add_scheduled_runs(DOMAIN, JOB, [(0, 600, "SUCCESS")])
    sim.fail_list_job_runs(DOMAIN, JOB, Fault.throttle(), Fault.throttle())
    rates: list[float] = []

    class Budget(RateLimiter):
        def throttled(self, granted_at: float, spacing_cap: float | None = None) -> None:
            super().throttled(granted_at, spacing_cap)
            rates.append(self.rate)

    got = collect(sim, clock, 1, limiter=Budget(10, clock=clock))
    assert [r.job_run_id for r, _ in got] == ids
    assert [r.status_code for r in operations(sim, "ListJobRuns")][:3] == [429, 429, 200]
    assert rates[:1] == [5]  # cut; it climbs back in time after


def test_a_listing_throttled_1100_times_in_a_row_gets_through_at_the_capped_backoff(
    sim: Simulator, clock: VirtualClock
) -> None:
    """1,100 throttles, then the listing answers: the run is announced; no retry waited
    more than retry_max (the backoff exponent is bounded, as a wait's)."""
    past(sim)
    ids = sim.add_scheduled_runs(DOMAIN, JOB, [(0, 600, "SUCCESS")])
    sim.fail_list_job_runs(DOMAIN, JOB, *[Fault.throttle()] * 1100)
    policy = PollPolicy(retry_initial=0.5, retry_max=2.0)
    with capture_logs() as events:
        got = collect(
            sim, clock, 1, policy=policy, limiter=RateLimiter(1000, clock=clock), logger=None
        )
    assert [r.job_run_id for r, _ in got] == ids
    sleeps = [e["sleep_s"] for e in events if e["event"] == "watch_retrying"]
    assert len(sleeps) == 1100
    assert max(sleeps) <= 2.0


def test_transient_faults_in_a_row_end_the_watch_at_max_errors_after_jittered_retries(
    sim: Simulator, clock: VirtualClock
) -> None:
    """max_errors=4 and four 500s in a row: ServiceUnavailableError after four calls; the
    three retries waited the policy's jittered backoff (1, 2, 4 s, each +-20 %)."""
    sim.add_scheduled_runs(DOMAIN, JOB, [(0, 60, "SUCCESS")])  # would be announced
    sim.fail_list_job_runs(DOMAIN, JOB, *[Fault.internal()] * 4)
    with capture_logs() as events, pytest.raises(ServiceUnavailableError, match="4 transient"):
        collect(sim, clock, 1, policy=PollPolicy(max_errors=4, retry_max=20.0), logger=None)
    assert len(operations(sim, "ListJobRuns")) == 4
    sleeps = [e["sleep_s"] for e in events if e["event"] == "watch_retrying"]
    assert len(sleeps) == 3
    for sleep, plain in zip(sleeps, [1.0, 2.0, 4.0], strict=True):
        assert 0.8 * plain <= sleep <= 1.2 * plain
    assert sleeps != [1.0, 2.0, 4.0]


def test_a_run_listed_finished_that_getjobrun_never_finds_is_given_up_after_the_grace(
    sim: Simulator, clock: VirtualClock
) -> None:
    """A listed SUCCESS run GetJobRun answers 404: read again through not_found_grace (10 s),
    then skipped with a warning; the watch goes on and announces the next run."""
    past(sim)
    ids = sim.add_scheduled_runs(DOMAIN, JOB, [(0, 600, "SUCCESS")])
    ghost = {"domainId": DOMAIN, "jobId": JOB, "runId": "ghost", "status": "SUCCESS"}
    sim.add_list_item(DOMAIN, JOB, {**ghost, "createdAt": EPOCH + 1001, "endTime": EPOCH + 1002})
    with capture_logs() as events:
        got = collect(sim, clock, 1, logger=None)
    assert [r.job_run_id for r, _ in got] == ids
    reads = [r.t for r in operations(sim, "GetJobRun") if r.run_id == "ghost"]
    assert 3 <= len(reads) <= 6
    assert 9 <= reads[-1] - reads[0] <= 10.01
    assert [e["job_run_id"] for e in events if e["event"] == "watch_skipped"] == ["ghost"]


def test_denied_access_ends_the_watch_at_once_with_its_error(
    sim: Simulator, clock: VirtualClock
) -> None:
    """AccessDenied on the first listing: AccessDeniedError, after that one call."""
    sim.fail_list_job_runs(DOMAIN, JOB, Fault.error("AccessDeniedException", 403, "no list"))
    with pytest.raises(AccessDeniedError, match="ListJobRuns: AccessDeniedException: no list"):
        collect(sim, clock, 1)
    assert len(sim.requests) == 1


def test_two_watchers_of_one_job_share_the_listings_and_each_read(
    sim: Simulator, clock: VirtualClock
) -> None:
    """Two announcers (all end states; FAILED only) on one listing loop: one GetJobRun per
    run, and each gets what it asked for."""
    past(sim)
    ids = sim.add_scheduled_runs(DOMAIN, JOB, [(0, 600, "FAILED"), (HOUR, 600, "SUCCESS")])
    client = keep(sim.client())

    async def main() -> tuple[list[str], list[str]]:
        watch = JobWatch(
            DOMAIN,
            JOB,
            client,
            limiter=RateLimiter(10, clock=clock),
            wall=lambda: EPOCH + clock(),
            logger=QUIET,
        )
        queues: list[asyncio.Queue[Any]] = [asyncio.Queue(), asyncio.Queue()]

        async def fan() -> None:
            async for listing in watch.listings():
                for q in queues:
                    q.put_nowait(listing)

        async def stream(q: asyncio.Queue[Any]) -> Any:
            while True:
                yield await q.get()

        async def take(q: asyncio.Queue[Any], statuses: frozenset[str], n: int) -> list[str]:
            store = MemoryStore()
            ledger = await start_ledger(store, EPOCH + clock())
            out = []
            async for result in announce(stream(q), statuses, store, ledger, QUIET):
                out.append(result.job_run_id)
                if len(out) == n:
                    break
            return out

        producer = asyncio.create_task(fan())
        every = frozenset({"SUCCESS", "FAILED"})
        both = await asyncio.gather(
            take(queues[0], every, 2), take(queues[1], frozenset({"FAILED"}), 1)
        )
        producer.cancel()
        return both[0], both[1]

    everything, failed = run_virtual(main(), clock)
    assert (everything, failed) == (ids, ids[:1])
    assert [r.run_id for r in operations(sim, "GetJobRun")] == ids


def test_the_simulator_lists_scheduled_runs_as_they_progress(
    sim: Simulator, clock: VirtualClock
) -> None:
    """A scheduled run is absent before its start, IN_PROGRESS while it runs and finished
    after, with its times, in ListJobRuns and GetJobRun alike, with no call moving it on."""
    [run_id] = sim.add_scheduled_runs(DOMAIN, JOB, [(100, 50, "TIMED_OUT")])
    client = keep(sim.client())

    def listed() -> list[tuple[str, str]]:
        page = client.list_job_runs(domainIdentifier=DOMAIN, jobIdentifier=JOB)
        return [(item["runId"], item["status"]) for item in page["items"]]

    assert listed() == []
    clock.now += 120
    assert listed() == [(run_id, "IN_PROGRESS")]
    clock.now += 40
    assert listed() == [(run_id, "TIMED_OUT")]
    answer = client.get_job_run(domainIdentifier=DOMAIN, identifier=run_id)
    assert answer["runMode"] == "SCHEDULED"
    assert (answer["endTime"] - answer["startTime"]).total_seconds() == pytest.approx(50)
    assert answer["startTime"].timestamp() == pytest.approx(EPOCH + 1000 + 100)


def test_runs_past_the_first_page_are_announced_when_since_reaches_them(
    sim: Simulator, clock: VirtualClock
) -> None:
    """60 hourly past runs (two pages) and since 55 h back: the 55 runs that ended after it
    are announced, oldest first, those from the second page included."""
    ids = past(sim, runs=60)
    got = collect(sim, clock, 55, since=EPOCH + clock() - 55 * HOUR)
    assert [r.job_run_id for r, _ in got] == ids[-55:]
    assert len(operations(sim, "ListJobRuns")) == 2


def within(
    sim: Simulator, clock: VirtualClock, seconds: float, **kwargs: Any
) -> list[tuple[str, float]]:
    """Every announcement (run ID, virtual time) of a watch left running ``seconds``."""

    async def main() -> list[tuple[str, float]]:
        out: list[tuple[str, float]] = []
        stream = watch_job_runs(
            DOMAIN,
            JOB,
            client=keep(sim.client()),
            limiter=RateLimiter(10, clock=clock),
            wall=lambda: EPOCH + clock(),
            logger=QUIET,
            **kwargs,
        )
        try:
            async with asyncio.timeout(seconds):
                async for result in stream:
                    out.append((result.job_run_id, clock()))
        except TimeoutError:
            pass
        finally:
            await stream.aclose()
        return out

    return run_virtual(main(), clock)


def test_runs_on_later_pages_running_when_the_watch_starts_are_announced_as_they_end(
    sim: Simulator, clock: VirtualClock
) -> None:
    """Six runs going at the start, two a page, the newest ending first: each is announced
    once, in end order, though the first page soon shows only finished runs older than
    the watch."""
    ids = sim.add_scheduled_runs(
        DOMAIN, JOB, [(-100 + k, 100 + 60 * (6 - k), "SUCCESS") for k in range(6)]
    )
    sim.page_list_job_runs(DOMAIN, JOB, 2)
    got = within(sim, clock, 1200)
    assert [run_id for run_id, _ in got] == ids[::-1]
    for run_id, seen in got:
        end = sim.end_time(run_id)
        assert end is not None
        assert 0 <= seen - end <= Cadence().look + 1


def test_a_run_listed_finished_before_getjobrun_says_so_is_announced_once_it_does(
    sim: Simulator, clock: VirtualClock
) -> None:
    """ListJobRuns shows the run SUCCESS at 100 s, GetJobRun says IN_PROGRESS until 160 s:
    it is announced once, finished, soon after GetJobRun agrees, and the next run too."""
    ids = sim.add_scheduled_runs(DOMAIN, JOB, [(1, 99, "SUCCESS"), (200, 100, "FAILED")])
    sim.lag_run(DOMAIN, ids[0], reading=60)
    got = within(sim, clock, 1000)
    assert [run_id for run_id, _ in got] == ids
    end = sim.end_time(ids[0])
    assert end is not None
    assert 60 <= got[0][1] - end <= 60 + Cadence().look + 1


def test_a_run_whose_end_the_listing_reports_late_is_still_announced(
    sim: Simulator, clock: VirtualClock
) -> None:
    """b1 ends at 100 s but is listed running until 160 s; b2 ends at 130 s and is listed
    at once: both are announced, though b1's end is older than b2's."""
    ids = sim.add_scheduled_runs(DOMAIN, JOB, [(1, 99, "SUCCESS"), (2, 128, "SUCCESS")])
    sim.lag_run(DOMAIN, ids[0], listing=60)
    got = within(sim, clock, 1000)
    assert sorted(run_id for run_id, _ in got) == sorted(ids)
    assert len(got) == 2


def test_a_watch_started_again_right_after_break_repeats_no_run(
    sim: Simulator, clock: VirtualClock
) -> None:
    """The consumer breaks out after the first run and starts a new watch on the same store
    before the old stream is finalized: the new one announces the second run, not the
    first again."""
    past(sim)
    ids = sim.add_scheduled_runs(DOMAIN, JOB, [(0, 600, "SUCCESS"), (HOUR, 600, "FAILED")])
    store = MemoryStore()
    client = keep(sim.client())

    async def first(stream: Any) -> str:
        async for result in stream:
            return str(result.job_run_id)  # a `break` with the announcement
        raise AssertionError("the stream ended")

    async def main() -> tuple[str, str]:
        def watch() -> Any:
            return watch_job_runs(
                DOMAIN,
                JOB,
                client=client,
                store=store,
                limiter=RateLimiter(10, clock=clock),
                wall=lambda: EPOCH + clock(),
                logger=QUIET,
            )

        old = watch()  # kept, so not finalized (as a consumer may keep it, or the GC be late)
        one = await first(old)
        new = watch()
        two = await first(new)
        await new.aclose()
        await old.aclose()
        return one, two

    assert run_virtual(main(), clock) == (ids[0], ids[1])


def test_a_wall_clock_stepped_back_an_hour_holds_no_listing_back(
    sim: Simulator, clock: VirtualClock
) -> None:
    """The watch sleeps between listings on the monotonic clock: a wall clock an hour ahead,
    stepped back to the right time while the watch sleeps (NTP), delays no announcement (it
    slept the hour again)."""
    sim.add_run(
        DOMAIN, "late", RunScript(timeline=[(0.0, "RUNNING"), (60.0, "SUCCESS")]), job_id=JOB
    )
    ahead = [HOUR]

    async def main() -> float:
        asyncio.get_running_loop().call_later(10, ahead.__setitem__, 0, 0.0)
        stream = watch_job_runs(
            DOMAIN,
            JOB,
            since=EPOCH - 1,
            client=keep(sim.client()),
            limiter=RateLimiter(10, clock=clock),
            wall=lambda: EPOCH + clock() + ahead[0],
            logger=QUIET,
        )
        result = await anext(stream)
        await stream.aclose()
        assert result.job_run_id == "late"
        return clock()

    seen = run_virtual(main(), clock)
    end = sim.end_time("late")
    assert end is not None
    assert 0 <= seen - end <= Cadence().look + 1
