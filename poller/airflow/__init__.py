"""Airflow 3 integration: a DataZone job-run sensor, its trigger, and an asset watcher.

The ``poller[airflow]`` extra.

Not imported by ``poller`` itself, so poller works without Airflow installed::

    from poller.airflow import DataZoneJobRunSensor

The names load on first use (PEP 562): a triggerer importing the trigger on
its event loop thread does not pay for the sensor as well.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from poller.airflow.sensor import DataZoneJobRunSensor
    from poller.airflow.trigger import DataZoneJobRunTrigger
    from poller.airflow.watcher import DataZoneJobRunWatcher

__all__ = ["DataZoneJobRunSensor", "DataZoneJobRunTrigger", "DataZoneJobRunWatcher"]


def __getattr__(name: str) -> Any:
    if name == "DataZoneJobRunSensor":
        from poller.airflow.sensor import DataZoneJobRunSensor  # noqa: PLC0415

        return DataZoneJobRunSensor
    if name == "DataZoneJobRunTrigger":
        from poller.airflow.trigger import DataZoneJobRunTrigger  # noqa: PLC0415

        return DataZoneJobRunTrigger
    if name == "DataZoneJobRunWatcher":
        from poller.airflow.watcher import DataZoneJobRunWatcher  # noqa: PLC0415

        return DataZoneJobRunWatcher
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
