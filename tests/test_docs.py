"""The docs hold together and agree with the code: links resolve, the contracts are the code's."""

from __future__ import annotations

import json
import re
from pathlib import Path

import pytest
from _docs import PAGES, ROOT, anchors, blocks, prose, slug
from botocore.exceptions import ClientError

from poller import wait_for_job_run
from poller._datazone import _DENIED_CODES, _THROTTLE_CODES, classify
from poller._policy import FaultKind
from poller.testing import Lineage, RunScript, Simulator

DESIGN = ROOT / "docs" / "design.md"
# [text](target) where target has no scheme (http:, mailto:): a file in the repository.
_LINK = re.compile(r"\]\((?P<target>[^)\s]+)\)")


def local_links(page: Path) -> list[str]:
    """The targets of the page's links that point into the repository, code excluded."""
    targets = _LINK.findall(prose(page))
    return [t for t in targets if not re.match(r"[a-zA-Z][a-zA-Z0-9+.-]*:", t)]


def broken_links(page: Path) -> list[str]:
    """The page's local links whose file, or whose heading anchor, does not exist."""
    broken = []
    for target in local_links(page):
        path, _, anchor = target.partition("#")
        where = (page.parent / path).resolve() if path else page
        if not where.exists():
            broken.append(f"{target}: no such file")
        elif anchor and where.suffix == ".md" and anchor not in anchors(where):
            broken.append(f"{target}: no heading #{anchor} in {where.name}")
    return broken


@pytest.mark.parametrize("page", PAGES, ids=[p.relative_to(ROOT).as_posix() for p in PAGES])
def test_every_relative_link_points_at_a_file_and_heading_that_exist(page: Path) -> None:
    """Each `](path)` and `](path#anchor)` in the page resolves in the repository."""
    assert broken_links(page) == []


def test_a_link_to_a_missing_page_or_heading_is_reported(tmp_path: Path) -> None:
    """The link check is not vacuous: a wrong file and a wrong anchor are both caught."""
    (tmp_path / "other.md").write_text("# Other page\n\n## A `code` heading: here\n")
    page = tmp_path / "page.md"
    page.write_text(
        "[ok](other.md#a-code-heading-here) [self](#top) [gone](nowhere.md) "
        "[bad](other.md#no-such) [web](https://example.com/x.md)\n\n# Top\n"
        "```sh\n[in code](ignored.md)\n```\n"
    )
    assert broken_links(page) == [
        "nowhere.md: no such file",
        "other.md#no-such: no heading #no-such in other.md",
    ]


def test_heading_anchors_are_the_ones_github_makes() -> None:
    """Code spans, colons and case go the way GitHub renders them; repeats are numbered."""
    assert slug("Airflow 3: `DataZoneJobRunSensor`") == "airflow-3-datazonejobrunsensor"
    assert slug("Beyond Airflow: `poller.poke`") == "beyond-airflow-pollerpoke"
    assert slug("The shared request budget (AIMD)") == "the-shared-request-budget-aimd"
    assert {"layout", "the-result-document"} <= anchors(DESIGN)


def test_the_readme_is_a_front_page() -> None:
    """The README stays short, starts with the two fresh-machine commands, and links the docs."""
    text = (ROOT / "README.md").read_text(encoding="utf-8")
    assert len(text.splitlines()) <= 250
    first_block = blocks(ROOT / "README.md")[0]
    assert first_block.code.startswith("make demo")
    assert "\nmake test" in first_block.code
    # Install lines that work from a checkout: poller is not on PyPI.
    assert "pip install .  " in text
    assert "pip install '.[airflow]'" in text
    assert "pip install poller" not in text
    linked = {Path(t.partition("#")[0]).as_posix() for t in local_links(ROOT / "README.md")}
    assert {p.relative_to(ROOT).as_posix() for p in PAGES[1:]} <= linked


def test_the_design_result_document_has_the_keys_a_wait_returns(sim: Simulator) -> None:
    """docs/design.md's result document lists exactly the keys of `to_dict()`, in order."""
    text = DESIGN.read_text(encoding="utf-8")
    section = text[text.index("## The result document") :]
    documented = json.loads(next(b for b in blocks(DESIGN) if b.code in section).code)
    sim.add_run(
        "dzd_abc123",
        "run-42",
        RunScript(statuses=["SUCCESS"], lineage=Lineage(total_queries_processed=1)),
    )
    document = wait_for_job_run("dzd_abc123", "run-42", client=sim.client()).to_dict()
    assert list(documented) == list(document)
    assert list(documented["lineage"]) == list(document["lineage"])


def _classification_rows() -> dict[str, set[str]]:
    """The ClientError codes of docs/design.md's classification table, by documented kind."""
    text = DESIGN.read_text(encoding="utf-8")
    rows: dict[str, set[str]] = {}
    for line in text[text.index("## Error classification") :].splitlines():
        cells = [c.strip() for c in line.strip("|").split("|")]
        if len(cells) == 4 and cells[0].startswith("ClientError"):
            rows.setdefault(cells[1], set()).update(re.findall(r"`(\w+)`", cells[0]))
    return rows


def test_the_classification_table_says_what_classify_does_with_each_error_code() -> None:
    """Every error code the design names is classified as its row says, and none is left out."""
    kinds = {"throttle": FaultKind.THROTTLE, "not found": FaultKind.NOT_FOUND}
    kinds |= {"denied": FaultKind.DENIED, "transient": FaultKind.TRANSIENT}
    kinds |= {"invalid": FaultKind.INVALID}
    rows = _classification_rows()
    for kind, codes in rows.items():
        for code in codes:
            error = ClientError(
                {"Error": {"Code": code}, "ResponseMetadata": {"HTTPStatusCode": 400}}, "GetJobRun"
            )
            fault = classify(error)
            assert fault is not None, code
            assert fault.kind is kinds[kind], (code, kind)
    assert rows["throttle"] == set(_THROTTLE_CODES)
    assert rows["denied"] == set(_DENIED_CODES)


def test_the_docs_describe_what_poller_does_not_how_it_came_to_be() -> None:
    """No page speaks of the project's rounds or issues: a reader needs what is true now."""
    history = re.compile(r"\b(round (one|two|three)|the (reported )?issue\b)", re.IGNORECASE)
    for page in [*PAGES, ROOT / "benchmarks" / "RESULTS.md"]:
        for number, line in enumerate(page.read_text(encoding="utf-8").splitlines(), 1):
            assert not history.search(line), f"{page.name}:{number}: {line.strip()}"
