"""Every Python example that imports the Airflow extra runs as written, where Airflow is.

The same convention and the same clean interpreter as tests/test_readme.py;
this module imports Airflow at its top, so `make test` runs it in the main
.venv only, as every Airflow test (.ci/pythons).
"""

from __future__ import annotations

from pathlib import Path

import pytest
from _docs import PAGES, Block, blocks, run_example

from poller.airflow import DataZoneJobRunSensor

NEEDS_AIRFLOW = [
    block for page in PAGES for block in blocks(page) if block.runs and block.needs_airflow
]


@pytest.mark.parametrize("block", NEEDS_AIRFLOW, ids=[block.name for block in NEEDS_AIRFLOW])
def test_every_unmarked_airflow_example_runs(block: Block, tmp_path: Path) -> None:
    """The example exits 0 in a clean interpreter that has no AWS account to reach."""
    run_example(block, tmp_path)


def test_the_airflow_pages_have_a_runnable_example_of_the_sensor() -> None:
    """At least one such example builds the sensor (a guard against none being found)."""
    assert any(DataZoneJobRunSensor.__name__ in block.code for block in NEEDS_AIRFLOW)
