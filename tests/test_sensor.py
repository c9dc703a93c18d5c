"""The framework-neutral poke: one bounded look, no memory, the core's rules."""

from __future__ import annotations

from typing import Any

import pytest
from helpers import DOMAIN, FakeTime

from poller import PollPolicy
from poller.poke import JobRunPoker, PokeState, Verdict, describe_lineage, judge
from poller.testing import Fault, Lineage, RunScript, Seams, Simulator, reset

LINEAGE = Lineage(
    total_queries_processed=42, num_queries_failed=2, error_messages=("bad SQL", "timeout")
)
NO_JITTER = PollPolicy(jitter=0)


def poker(client: Any, fake_time: FakeTime, run_id: str = "run-1", **kwargs: Any) -> JobRunPoker:
    """A poker on fake time: no real sleeping, exact delays recorded."""
    kwargs.setdefault("policy", NO_JITTER)
    return JobRunPoker(
        DOMAIN,
        run_id,
        client=client,
        seams=Seams(clock=fake_time.clock, sleep=fake_time.sleep),
        **kwargs,
    )


@pytest.mark.parametrize(
    ("status", "allow_partial", "state"),
    [
        ("SCHEDULED", False, PokeState.WAITING),
        ("IN_PROGRESS", False, PokeState.WAITING),
        ("SUCCESS", False, PokeState.DONE),
        ("PARTIALLY_SUCCEEDED", False, PokeState.FAILED),
        ("PARTIALLY_SUCCEEDED", True, PokeState.DONE),
        ("FAILED", True, PokeState.FAILED),
        ("ABORTED", False, PokeState.FAILED),
        ("TIMED_OUT", False, PokeState.FAILED),
        ("CANCELED", False, PokeState.FAILED),
        ("SOME_NEW_STATUS", False, PokeState.WAITING),
    ],
)
def test_state_table(
    sim: Simulator, client: Any, fake_time: FakeTime, status: str, allow_partial: bool, state: Any
) -> None:
    """Each status gives its answer in one call; only an ended wait carries a document."""
    sim.add_run(DOMAIN, "run-1", RunScript(statuses=[status], lineage=LINEAGE))
    verdict = poker(client, fake_time, allow_partial=allow_partial).poke()
    assert (verdict.state, verdict.status, sim.calls("run-1")) == (state, status, 1)
    assert (verdict.document is None) == (state is PokeState.WAITING)
    assert not verdict.retryable
    if verdict.document is not None:
        assert verdict.document["status"] == status
        assert verdict.document["polls"] == 1


def test_failure_reason_names_the_error_and_the_lineage(
    sim: Simulator, client: Any, fake_time: FakeTime
) -> None:
    """A failed run's reason carries its error message and its SQL-query statistics."""
    script = RunScript(statuses=["FAILED"], lineage=LINEAGE, error_message="query 7 failed")
    sim.add_run(DOMAIN, "run-1", script)
    verdict = poker(client, fake_time).poke()
    assert verdict.failed
    assert verdict.reason == (
        "job run run-1 in domain dzd_abc123 ended FAILED: query 7 failed; lineage: "
        "42 SQL queries processed, 2 failed (4.76%); first error: bad SQL (+1 more)"
    )


def test_throttles_inside_a_poke_are_absorbed(
    sim: Simulator, client: Any, fake_time: FakeTime
) -> None:
    """Three throttles are retried with the core's backoff within one poke, then done."""
    sim.add_run(DOMAIN, "run-1", RunScript(statuses=[*[Fault.throttle()] * 3, "SUCCESS"]))
    verdict = poker(client, fake_time, budget=60).poke()
    assert verdict.done
    assert fake_time.sleeps == [1, 2, 4]
    assert verdict.document is not None
    assert (verdict.document["throttled"], verdict.document["polls"]) == (3, 4)


def test_a_poke_never_outlives_its_budget(sim: Simulator, client: Any, fake_time: FakeTime) -> None:
    """Endless throttling ends the poke at its budget as 'not done yet', the last try on time."""
    sim.add_run(DOMAIN, "run-1", RunScript(statuses=[*[Fault.throttle()] * 100, "SUCCESS"]))
    verdict = poker(client, fake_time, budget=10).poke()
    assert verdict.state is PokeState.WAITING
    assert verdict.status is None
    assert "deadline" in (verdict.reason or "")
    assert fake_time.now - 1000.0 == pytest.approx(10)
    assert sim.requests[-1].t == pytest.approx(1010)


def test_pokes_hold_no_state(sim: Simulator, client: Any, fake_time: FakeTime) -> None:
    """Successive pokes each look once and start afresh; the last one's document is its own."""
    sim.add_run(DOMAIN, "run-1", RunScript(statuses=["SCHEDULED", "IN_PROGRESS", "SUCCESS"]))
    one = poker(client, fake_time)
    answers = [one.poke() for _ in range(3)]
    assert [a.state for a in answers] == [PokeState.WAITING, PokeState.WAITING, PokeState.DONE]
    assert [a.status for a in answers] == ["SCHEDULED", "IN_PROGRESS", "SUCCESS"]
    assert answers[-1].document is not None
    assert answers[-1].document["polls"] == 1
    assert fake_time.sleeps == []


def test_fatal_errors_fail_without_retry(sim: Simulator, client: Any, fake_time: FakeTime) -> None:
    """Access denied fails the poke at once, not retryable by a scheduler either."""
    script = RunScript(statuses=[Fault.error("AccessDeniedException", 403, "nope"), "SUCCESS"])
    sim.add_run(DOMAIN, "run-1", script)
    verdict = poker(client, fake_time).poke()
    assert (verdict.state, verdict.retryable) == (PokeState.FAILED, False)
    assert verdict.reason == "AccessDeniedError: nope"
    assert sim.calls("run-1") == 1


def test_faults_that_do_not_clear_are_retryable(
    sim: Simulator, client: Any, fake_time: FakeTime
) -> None:
    """max_errors 5xx answers in a row fail the poke, marked retryable for the scheduler."""
    sim.add_run(DOMAIN, "run-1", RunScript(statuses=[*[Fault.internal()] * 5, "SUCCESS"]))
    verdict = poker(client, fake_time, policy=PollPolicy(jitter=0, max_errors=3)).poke()
    assert (verdict.state, verdict.retryable) == (PokeState.FAILED, True)
    assert verdict.document is not None
    assert verdict.document["problem"]["type"] == "ServiceUnavailableError"


def test_bad_ids_fail_with_no_call(sim: Simulator, client: Any, fake_time: FakeTime) -> None:
    """A malformed run ID is a failed poke with a result document, and no request."""
    verdict = poker(client, fake_time, run_id="bad id!").poke()
    assert verdict.failed
    assert verdict.document is not None
    assert verdict.document["problem"]["type"] == "InvalidRequestError"
    assert sim.requests == []


def test_an_unknown_run_fails_once_the_grace_has_passed_since_the_first_poke(
    sim: Simulator, client: Any, fake_time: FakeTime
) -> None:
    """Pokes shorter than not_found_grace end a run that never appears as one long wait does."""
    seams = Seams(clock=fake_time.clock, wall=fake_time.clock, sleep=fake_time.sleep)
    policy = PollPolicy(jitter=0, not_found_grace=3)
    one = JobRunPoker(DOMAIN, "run-gone", budget=1, policy=policy, client=client, seams=seams)
    first = fake_time.now
    verdicts: list[Verdict] = []
    while not verdicts or verdicts[-1].state is PokeState.WAITING:
        assert len(verdicts) < 10, "the pokes never gave up on the run"
        verdicts.append(one.poke())
        fake_time.sleep(1)
    assert (verdicts[-1].retryable, len(verdicts) > 1) == (False, True)
    assert verdicts[-1].document is not None
    assert verdicts[-1].document["problem"]["type"] == "JobRunNotFoundError"
    assert 3 <= fake_time.now - first <= 3 + 1 + 1 + 1  # grace, a poke, a sleep, one more


def test_a_poker_told_when_the_wait_began_counts_the_grace_from_then(
    sim: Simulator, client: Any, fake_time: FakeTime
) -> None:
    """A rescheduled poke of a wait older than not_found_grace fails an unknown run at once."""
    seams = Seams(clock=fake_time.clock, wall=fake_time.clock, sleep=fake_time.sleep)
    old = JobRunPoker(
        DOMAIN,
        "run-gone",
        budget=1,
        policy=PollPolicy(jitter=0, not_found_grace=3),
        client=client,
        resumed=True,
        started=fake_time.now - 5,
        seams=seams,
    )
    verdict = old.poke()
    assert (verdict.state, verdict.retryable, sim.calls("run-gone")) == (PokeState.FAILED, False, 1)


def test_a_poker_dates_its_pokes_by_the_processs_wall_as_a_wait_does(
    sim: Simulator, client: Any, fake_time: FakeTime
) -> None:
    """With the process's wall set (`reset(seams=...)`), the grace runs on it, not on time.time."""
    reset(seams=Seams(wall=fake_time.clock))
    seams = Seams(clock=fake_time.clock, sleep=fake_time.sleep)
    policy = PollPolicy(jitter=0, not_found_grace=3)
    one = JobRunPoker(DOMAIN, "run-gone", budget=1, policy=policy, client=client, seams=seams)
    verdicts: list[Verdict] = []
    while not verdicts or verdicts[-1].state is PokeState.WAITING:
        assert len(verdicts) < 10, "the pokes never gave up on the run"
        verdicts.append(one.poke())
        fake_time.sleep(1)
    assert verdicts[-1].document is not None
    assert verdicts[-1].document["problem"]["type"] == "JobRunNotFoundError"


def test_judge_reads_a_wait_timeout_as_not_done() -> None:
    """A document whose wait hit its deadline means 'not done': the caller owns the deadline."""
    doc = {
        "domain_id": DOMAIN,
        "job_run_id": "run-1",
        "status": "IN_PROGRESS",
        "outcome": "wait_timeout",
        "problem": {"type": "WaitTimeoutError", "message": "too slow"},
    }
    verdict = judge(doc)
    assert (verdict.state, verdict.status) == (PokeState.WAITING, "IN_PROGRESS")
    assert verdict.reason == "WaitTimeoutError: too slow"


def test_describe_lineage_without_statistics() -> None:
    """No lineage, or lineage with no counts, gives no sentence."""
    assert describe_lineage(None) is None
    assert describe_lineage({"total_queries_processed": None}) is None
    assert describe_lineage({"total_queries_processed": 0, "num_queries_failed": 0}) == (
        "0 SQL queries processed, 0 failed"
    )


def test_a_client_that_cannot_be_built_fails_the_poke(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Any
) -> None:
    """With no region anywhere, the poke fails with a reason instead of raising."""
    for name in ("AWS_REGION", "AWS_DEFAULT_REGION", "AWS_PROFILE"):
        monkeypatch.delenv(name, raising=False)
    monkeypatch.setenv("AWS_CONFIG_FILE", str(tmp_path / "none"))
    verdict = JobRunPoker(DOMAIN, "run-1").poke()
    assert (verdict.state, verdict.retryable) == (PokeState.FAILED, False)
    assert verdict.reason is not None
    assert verdict.reason.startswith("InvalidRequestError: no AWS region")
