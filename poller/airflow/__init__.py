"""Airflow 3 integration: a DataZone job-run sensor and its trigger (the ``poller[airflow]`` extra).

Not imported by ``poller`` itself, so poller works without Airflow installed::

    from poller.airflow import DataZoneJobRunSensor
"""

from poller.airflow.sensor import DataZoneJobRunSensor
from poller.airflow.trigger import DataZoneJobRunTrigger

__all__ = ["DataZoneJobRunSensor", "DataZoneJobRunTrigger"]
