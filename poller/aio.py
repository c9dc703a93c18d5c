"""The async loop: the same core as the blocking call, for event loops and Airflow triggers.

boto3 is blocking, so each call runs in a small thread pool of its account's
(`CALL_WORKERS` threads at most): thousands of waits can sleep on the event
loop at once while only a few requests are in flight, and the threads stay few
however many waits there are.
"""

from poller._async import async_wait_for_job_run, async_wait_result
from poller._fanout import async_wait_for_job_runs
from poller._latest import async_wait_for_latest_job_run
from poller._runtime import CALL_WORKERS, shared_executor
from poller._watching import watch_job_runs

__all__ = [
    "CALL_WORKERS",
    "async_wait_for_job_run",
    "async_wait_for_job_runs",
    "async_wait_for_latest_job_run",
    "async_wait_result",
    "shared_executor",
    "watch_job_runs",
]
