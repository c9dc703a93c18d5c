"""One wait everywhere: every scripted scenario ends the same through every front door."""

from __future__ import annotations

import asyncio
import json
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from typing import Any

import pytest
import structlog

from poller import PollPolicy, RateLimiter, wait_for_job_runs
from poller._waiter import wait_result
from poller.aio import async_wait_result
from poller.airflow import DataZoneJobRunTrigger
from poller.airflow.trigger import policy_kwargs
from poller.cli import main
from poller.poke import JobRunPoker, PokeState
from poller.testing import Fault, Lineage, RunScript, Simulator

DOMAIN = "dzd_parity"
# Small values, so the whole table runs in seconds; no jitter, so counts are exact.
POLICY = PollPolicy(
    timeout=10,
    interval=0.05,
    max_interval=0.05,
    multiplier=1.0,
    jitter=0.0,
    not_found_grace=5.0,
    retry_initial=0.02,
    retry_max=0.1,
    max_errors=5,
)
NOT_FOUND = Fault.error("ResourceNotFoundException", 404)


@dataclass(frozen=True)
class Scenario:
    name: str
    statuses: list[Any]
    outcome: str
    lineage: Lineage | None = None
    policy: dict[str, Any] = field(default_factory=dict)
    # A wait that ends on its deadline makes as many polls as time allows.
    timed: bool = False


SCENARIOS = [
    Scenario(
        "success with lineage",
        ["IN_PROGRESS", "SUCCESS"],
        "succeeded",
        lineage=Lineage(total_queries_processed=42, num_queries_failed=2),
    ),
    Scenario("already finished", ["SUCCESS"], "succeeded"),
    Scenario("throttle storm", ["IN_PROGRESS", *[Fault.throttle()] * 12, "SUCCESS"], "succeeded"),
    Scenario("internal error", [Fault.internal(), "SUCCESS"], "succeeded"),
    Scenario("proxy 502 page", [Fault.http(502), "SUCCESS"], "succeeded"),
    Scenario("connection reset", [Fault.reset(), "SUCCESS"], "succeeded"),
    Scenario("garbled body", [Fault.malformed(), "SUCCESS"], "succeeded"),
    Scenario("faults that do not clear", [*[Fault.internal()] * 5, "SUCCESS"], "error"),
    Scenario("not found inside grace", [NOT_FOUND, NOT_FOUND, "SUCCESS"], "succeeded"),
    Scenario(
        "not found after grace", [NOT_FOUND, "SUCCESS"], "error", policy={"not_found_grace": 0}
    ),
    Scenario("failed", ["IN_PROGRESS", "FAILED"], "failed"),
    Scenario("aborted", ["ABORTED"], "failed"),
    Scenario("timed out", ["TIMED_OUT"], "failed"),
    Scenario("canceled", ["CANCELED"], "failed"),
    Scenario("partial", ["PARTIALLY_SUCCEEDED"], "partially_succeeded"),
    Scenario("deadline", ["IN_PROGRESS"], "wait_timeout", policy={"timeout": 0.3}, timed=True),
]
KEYS = ("outcome", "status", "lineage", "polls", "throttled", "errors_retried")
# The simulator dates a run's queries from its creation: each door's run is its own.
_WHEN = ("query_start_time", "query_end_time")


def same(document: dict[str, Any], keys: tuple[str, ...]) -> dict[str, Any]:
    """The parts of a result document every door must agree on."""
    picked = {k: document[k] for k in keys}
    if picked.get("lineage"):
        picked["lineage"] = {k: v for k, v in picked["lineage"].items() if k not in _WHEN}
    return picked


def blocking(sim: Simulator, run_id: str, policy: PollPolicy) -> dict[str, Any]:
    return wait_result(DOMAIN, run_id, client=sim.client(), policy=policy).to_dict()


def asynchronous(sim: Simulator, run_id: str, policy: PollPolicy) -> dict[str, Any]:
    coro = async_wait_result(DOMAIN, run_id, client=sim.client(), policy=policy)
    return asyncio.run(coro).to_dict()


def fan_out(sim: Simulator, run_id: str, policy: PollPolicy) -> dict[str, Any]:
    [result] = wait_for_job_runs(
        [(DOMAIN, run_id)], client=sim.client(), policy=policy, limiter=RateLimiter(10)
    )
    return result.to_dict()


def command_line(sim: Simulator, run_id: str, policy: PollPolicy) -> dict[str, Any]:
    saved = structlog.get_config()
    try:
        with pytest.MonkeyPatch.context() as env:
            env.setenv("POLLER_WAIT_INTERVAL", str(policy.interval))
            env.setenv("POLLER_WAIT_MAX_INTERVAL", str(policy.max_interval))
            env.setenv("POLLER_WAIT_MULTIPLIER", str(policy.multiplier))
            env.setenv("POLLER_WAIT_JITTER", str(policy.jitter))
            env.setenv("POLLER_WAIT_NOT_FOUND_GRACE", str(policy.not_found_grace))
            env.setenv("POLLER_RETRY_INITIAL", str(policy.retry_initial))
            env.setenv("POLLER_RETRY_MAX", str(policy.retry_max))
            env.setenv("POLLER_RETRY_MAX_ERRORS", str(policy.max_errors))
            env.setenv("POLLER_WAIT_TIMEOUT", str(policy.timeout))
            argv = ["wait", "--domain-identifier", DOMAIN, "--identifier", run_id, "--quiet"]
            out = _capture(lambda: main([*argv, "--endpoint-url", sim.endpoint_url]))
    finally:
        structlog.configure(**saved)
    document: dict[str, Any] = json.loads(out)
    return document


def _capture(call: Callable[[], int]) -> str:
    import contextlib
    import io

    stdout, stderr = io.StringIO(), io.StringIO()
    with contextlib.redirect_stdout(stdout), contextlib.redirect_stderr(stderr):
        call()
    return stdout.getvalue()


def trigger(sim: Simulator, run_id: str, policy: PollPolicy) -> dict[str, Any]:
    # The trigger builds its own client (no Airflow connection): from the environment.
    with pytest.MonkeyPatch.context() as env:
        env.setenv("AWS_ENDPOINT_URL_DATAZONE", sim.endpoint_url)
        assert policy.timeout is not None
        made = DataZoneJobRunTrigger(
            DOMAIN, run_id, deadline=time.time() + policy.timeout, policy=policy_kwargs(policy)
        )

        async def first_event() -> dict[str, Any]:
            async for event in made.run():
                payload: dict[str, Any] = event.payload
                return payload
            raise AssertionError("the trigger fired no event")

        document: dict[str, Any] = asyncio.run(first_event())["result"]
    return document


DOORS = {
    "blocking": blocking,
    "async": asynchronous,
    "fan-out": fan_out,
    "cli": command_line,
    "trigger": trigger,
}


@pytest.fixture(scope="module")
def sim() -> Iterator[Simulator]:
    with Simulator() as simulator:
        yield simulator


_REFERENCES: dict[str, dict[str, Any]] = {}


def expected(scenario: Scenario, sim: Simulator) -> dict[str, Any]:
    """The blocking call's document, the reference every door is held to (once a scenario)."""
    if scenario.name not in _REFERENCES:
        run_id = _add(sim, scenario, "reference")
        _REFERENCES[scenario.name] = blocking(sim, run_id, _policy(scenario))
    return _REFERENCES[scenario.name]


def _policy(scenario: Scenario) -> PollPolicy:
    return PollPolicy(**{**policy_kwargs(POLICY), "timeout": POLICY.timeout, **scenario.policy})


def _add(sim: Simulator, scenario: Scenario, door: str) -> str:
    run_id = f"{scenario.name}-{door}".replace(" ", "-")
    sim.add_run(DOMAIN, run_id, RunScript(statuses=scenario.statuses, lineage=scenario.lineage))
    return run_id


@pytest.mark.parametrize("door", list(DOORS))
@pytest.mark.parametrize("scenario", SCENARIOS, ids=[s.name for s in SCENARIOS])
def test_every_front_door_ends_a_scenario_the_same(
    scenario: Scenario, door: str, sim: Simulator
) -> None:
    """Outcome, status, lineage and the cost counters agree with the blocking call's."""
    reference = expected(scenario, sim)
    assert reference["outcome"] == scenario.outcome
    got = DOORS[door](sim, _add(sim, scenario, door), _policy(scenario))
    keys = KEYS
    if scenario.timed:
        # How many polls fit before a deadline depends on each call's latency.
        keys = ("outcome", "status", "lineage")
    assert same(got, keys) == same(reference, keys)


@pytest.mark.parametrize(
    "scenario",
    [s for s in SCENARIOS if not s.timed],
    ids=[s.name for s in SCENARIOS if not s.timed],
)
def test_the_sensor_poke_loop_ends_a_scenario_the_same(scenario: Scenario, sim: Simulator) -> None:
    """Pokes repeated until done reach the same end; the document counts only the last poke."""
    reference = expected(scenario, sim)
    run_id = _add(sim, scenario, "poke")
    poker = JobRunPoker(DOMAIN, run_id, budget=5, policy=_policy(scenario), client=sim.client())
    before_last = 0
    for _ in range(20):
        before_last = sim.calls(run_id, domain_id=DOMAIN)
        verdict = poker.poke()
        if verdict.state is not PokeState.WAITING:
            break
        time.sleep(POLICY.interval)
    assert verdict.document is not None
    got = verdict.document
    assert same(got, ("outcome", "status", "lineage")) == same(
        reference, ("outcome", "status", "lineage")
    )
    # A poke holds no state between pokes (that is what lets a scheduler
    # reschedule it): its document counts the calls of the last poke, and
    # the pokes together made the reference's calls.
    assert got["polls"] == sim.calls(run_id, domain_id=DOMAIN) - before_last
    assert sim.calls(run_id, domain_id=DOMAIN) == reference["polls"]


def test_the_sensor_poke_leaves_the_deadline_to_its_scheduler(sim: Simulator) -> None:
    """A run still going gets WAITING from every poke: Airflow's own timeout ends a poke loop."""
    [scenario] = [s for s in SCENARIOS if s.timed]
    run_id = _add(sim, scenario, "poke")
    poker = JobRunPoker(DOMAIN, run_id, budget=0.2, policy=_policy(scenario), client=sim.client())
    verdicts = [poker.poke() for _ in range(3)]
    assert [(v.state, v.status) for v in verdicts] == [(PokeState.WAITING, "IN_PROGRESS")] * 3
