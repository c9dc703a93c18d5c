"""The simulator's inconsistent views of a job: small pages, listings behind or ahead of reads."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import pytest
from helpers import DOMAIN, keep

from poller.testing import Simulator, VirtualClock

JOB = "job-views"
EPOCH = 1_700_000_000.0


@pytest.fixture
def clock() -> VirtualClock:
    return VirtualClock()


@pytest.fixture
def sim(clock: VirtualClock) -> Iterator[Simulator]:
    with Simulator(clock=clock, wall=lambda: EPOCH + clock()) as simulator:
        yield simulator


def listed(client: Any, **kwargs: Any) -> tuple[list[tuple[str, str]], str | None]:
    page = client.list_job_runs(domainIdentifier=DOMAIN, jobIdentifier=JOB, **kwargs)
    return [(item["runId"], item["status"]) for item in page["items"]], page.get("nextToken")


def test_a_job_s_listing_can_be_cut_into_pages_smaller_than_asked(sim: Simulator) -> None:
    """Five runs at two a page: three pages, newest first, whatever maxResults asks."""
    ids = sim.add_scheduled_runs(DOMAIN, JOB, [(-50 + k, 100, "SUCCESS") for k in range(5)])
    sim.page_list_job_runs(DOMAIN, JOB, 2)
    client = keep(sim.client())
    seen, token, pages = [], None, 0
    while True:
        more = {"nextToken": token} if token else {}
        page, token = listed(client, maxResults=50, **more)
        seen += [run_id for run_id, _ in page]
        pages += 1
        if token is None:
            break
    assert (seen, pages) == (ids[::-1], 3)
    with pytest.raises(ValueError, match="between 1 and 50"):
        sim.page_list_job_runs(DOMAIN, JOB, 0)


def test_a_lagged_run_is_listed_and_read_as_it_was_seconds_ago_with_its_true_end(
    sim: Simulator, clock: VirtualClock
) -> None:
    """A run ending at 10 s, listed 5 s behind and read 3 s behind: running in each view
    until its lag has passed, then finished with endTime 10 s in both."""
    [late] = sim.add_scheduled_runs(DOMAIN, JOB, [(0, 10, "FAILED")])
    sim.lag_run(DOMAIN, late, listing=5, reading=3)
    client = keep(sim.client())

    def read() -> dict[str, Any]:
        return dict(client.get_job_run(domainIdentifier=DOMAIN, identifier=late))

    clock.now += 12
    assert listed(client)[0] == [(late, "IN_PROGRESS")]
    assert read()["status"] == "IN_PROGRESS"
    clock.now += 2
    answer = read()
    assert (answer["status"], answer["endTime"].timestamp()) == ("FAILED", EPOCH + 1010)
    assert listed(client)[0] == [(late, "IN_PROGRESS")]
    clock.now += 2
    page = client.list_job_runs(domainIdentifier=DOMAIN, jobIdentifier=JOB)["items"]
    assert (page[0]["status"], page[0]["endTime"].timestamp()) == ("FAILED", EPOCH + 1010)
    with pytest.raises(ValueError, match="negative"):
        sim.lag_run(DOMAIN, late, listing=-1)
