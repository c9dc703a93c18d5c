r"""Example DAG: wait for an Amazon DataZone job run, then use its result document.

Copy it into your DAGs folder, install ``poller[airflow]`` (which brings
apache-airflow-providers-amazon), define the AWS connection ``aws_default``
(or name yours in ``aws_conn_id``), and trigger it with the run to wait for::

    airflow dags trigger datazone_job_run \
        --conf '{"domain_id": "dzd_abc123", "job_run_id": "run-42"}'
"""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any

from airflow.sdk import dag, task

from poller.airflow import DataZoneJobRunSensor


@dag(
    schedule=None,
    start_date=datetime(2026, 1, 1, tzinfo=UTC),
    catchup=False,
    params={"domain_id": "dzd_abc123", "job_run_id": "run-42"},
    tags=["datazone"],
)
def datazone_job_run() -> None:
    """Wait for one job run in the triggerer, then report what it did."""
    wait = DataZoneJobRunSensor(
        task_id="wait_for_job_run",
        domain_id="{{ params.domain_id }}",
        job_run_id="{{ params.job_run_id }}",
        aws_conn_id="aws_default",  # an Airflow AWS connection, as for any AWS operator
        region_name=None,  # None: the connection's region
        deferrable=True,  # frees the worker slot while the run goes on
        poke_interval=60,  # never more than a minute between two looks at the run
        timeout=6 * 3600,  # the same deadline in every mode
        soft_fail=False,  # True: skip instead of failing (failed run, denied, timeout)
    )

    @task
    def report(result: dict[str, Any]) -> str:
        """The sensor's XCom is poller's result document; the same in every mode."""
        lineage = result["lineage"] or {}
        summary = (
            f"job run {result['job_run_id']} ended {result['status']} "
            f"after {result['duration_s']} s; "
            f"{lineage.get('num_queries_failed')} of "
            f"{lineage.get('total_queries_processed')} SQL queries failed"
        )
        print(summary)
        return summary

    report(wait.output)


datazone_job_run()
