r"""Example DAG: run once for every run of a DataZone job that finishes, scheduled runs included.

The asset ``datazone_lineage_job_runs`` has a watcher: poller's
``DataZoneJobRunWatcher`` runs in the triggerer, lists the job's runs only
when one can have ended (by the job's history), and fires one asset event per
run that ends, exactly once, with the run's result document (lineage
included) as the event's payload. This DAG is scheduled on that asset.

Copy it into your DAGs folder, install ``poller[airflow]``, set the domain
and job below, and define the AWS connection ``aws_default`` (or name yours
in ``aws_conn_id``). Airflow 3.3 keeps what was announced in the asset's
state store, so a restarted triggerer neither repeats a run nor misses one.
"""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any

from airflow.sdk import Asset, AssetWatcher, dag, task

from poller.airflow import DataZoneJobRunWatcher

DOMAIN_ID = "dzd_abc123"
JOB_ID = "job-7"

job_runs = Asset(
    "datazone_lineage_job_runs",
    watchers=[
        AssetWatcher(
            name="datazone_lineage_job_runs_watcher",
            trigger=DataZoneJobRunWatcher(
                domain_id=DOMAIN_ID,
                job_id=JOB_ID,
                aws_conn_id="aws_default",  # an Airflow AWS connection, as for any AWS operator
                statuses=["SUCCESS", "PARTIALLY_SUCCEEDED", "FAILED", "TIMED_OUT"],
            ),
        )
    ],
)


def summarize(document: dict[str, Any]) -> str:
    """One line about a finished run, from its result document."""
    lineage = document.get("lineage") or {}
    return (
        f"job run {document['job_run_id']} of {document['job_id']} ended {document['status']} "
        f"after {document['duration_s']} s; {lineage.get('num_queries_failed')} of "
        f"{lineage.get('total_queries_processed')} SQL queries failed"
    )


@dag(
    schedule=[job_runs],
    start_date=datetime(2026, 1, 1, tzinfo=UTC),
    catchup=False,
    tags=["datazone"],
)
def datazone_job_run_finished() -> None:
    """Report each finished run of the job: one DAG run per asset event."""

    @task
    def report(triggering_asset_events: Any = None) -> list[str]:
        """Each asset event's payload is poller's result document of one finished run."""
        lines = [
            summarize(event.extra["payload"])
            for event in (triggering_asset_events or {}).get(job_runs, [])
        ]
        for line in lines:
            print(line)
        return lines

    report()


datazone_job_run_finished()
