"""A local Amazon DataZone endpoint for tests: GetJobRun and ListJobRuns over real HTTP.

Point any boto3 client at it, with dummy credentials, and script what each run
answers: a status sequence or a timeline, throttles, server errors, proxy error
pages, dropped connections, slow answers, lineage details. Requests are really
signed, serialized and parsed by botocore, as in production; nothing is mocked.

Test your own pipeline offline::

    import boto3
    from poller.testing import Fault, Lineage, RunScript, Simulator

    with Simulator() as sim:
        sim.add_run(
            "dzd_abc123",
            "run-1",
            RunScript(
                statuses=["SCHEDULED", Fault.throttle(), "IN_PROGRESS", "SUCCESS"],
                lineage=Lineage(total_queries_processed=42, num_queries_failed=2),
            ),
            job_id="job-1",
        )
        client = boto3.client(
            "datazone",
            region_name="us-east-1",
            endpoint_url=sim.endpoint_url,
            aws_access_key_id="testing",
            aws_secret_access_key="testing",
        )
        run_my_pipeline(client)  # your code, calling client.get_job_run(...)
        assert sim.calls("run-1") == 4

Code that builds its own client can be redirected with the environment variable
``AWS_ENDPOINT_URL_DATAZONE=<sim.endpoint_url>`` (plus ``AWS_ACCESS_KEY_ID`` and
``AWS_SECRET_ACCESS_KEY`` set to anything). ``python -m poller.testing
--scenario file.json`` runs the simulator in the foreground for manual use;
``--log FILE`` (or ``Simulator(log_file=...)``) appends a JSON line per request.
``sim.client(read_timeout=1)`` builds the client above, botocore retries off.
`Seams` replaces what a wait takes from its surroundings (``clock``, ``wall``,
``sleep``, ``async_sleep``, ``rng``, ``executor``, ``logger``): ``wait_for_job_run(...,
seams=Seams(clock=fake.now, sleep=fake.sleep))`` waits on a fake clock.

Below the service, for code that must survive a broken network or proxy, each
a context manager with ``endpoint_url`` and ``client()`` like `Simulator`:
`TrickleServer` sends a 200 one byte at a time, so a per-read timeout never
fires; `SilentServer` reads the request and never answers; `GarbledServer`
answers fixed bytes (``.invalid_utf8()``, ``.bad_timestamp()``,
``.bad_integer()``, ``.html()``, or a `job_run_body` of your own);
`RedirectServer` answers a 301. ``Simulator(tls=True)`` serves HTTPS with a
self-signed certificate, trusted with ``verify=sim.ca_file``. Per run,
``Fault.override({"createdAt": "yesterday"})`` and ``Fault.malformed(b"\\xff")``
garble one answer of the normal simulator.

Many waits on simulated time: `VirtualTimeLoop` is an event loop whose time
is a clock (a `VirtualClock` by default) that it moves only when every task
is asleep, jumping to the next timer; while a call runs in a thread, time
stands still. Give the simulator, the waits' ``Seams(clock=...)`` and a
fan-out's ``RateLimiter(..., clock=...)`` the same clock and
``run_virtual(coro, clock)`` runs ten thousand waits of an hour in seconds,
each request stamped with an exact, reproducible time. A single wait given a
fake ``clock`` and ``sleep`` runs on such a loop by itself (the engine's code,
in a fleet of its own), its ``sleep`` called for every jump.

``reset()`` forgets what poller keeps for the process (the engine, one request
budget per account, job histories, shared clients): call it between tests.
"""

from poller import _home
from poller._runtime import Seams
from poller._vloop import VirtualClock, VirtualTimeLoop, run_virtual
from poller.testing._faulty import (
    GarbledServer,
    RedirectServer,
    SilentServer,
    TrickleServer,
    job_run_body,
)
from poller.testing._script import Fault, Lineage, RunScript
from poller.testing._simulator import RequestRecord, Simulator

__all__ = [
    "Fault",
    "GarbledServer",
    "Lineage",
    "RedirectServer",
    "RequestRecord",
    "RunScript",
    "Seams",
    "SilentServer",
    "Simulator",
    "TrickleServer",
    "VirtualClock",
    "VirtualTimeLoop",
    "job_run_body",
    "reset",
    "run_virtual",
]


def reset(*, seams: Seams | None = None) -> None:
    """Forget the process's shared state: the engine and its thread, budgets, history, clients.

    For tests: each starts with full budgets, no job history and no shared
    client left from the one before. ``seams`` (its ``clock`` and
    ``async_sleep``) puts the process's next engine, and every wait that
    joins it, on that time: a simulated-time benchmark of triggers, say. Its
    ``wall`` dates run ages for every wait of the process that has no wall
    seam of its own: give the simulator the same one (``Simulator(wall=...)``)
    and a wait started late does not take its runs as younger than they are.
    """
    _home.reset()
    if seams is not None:
        if seams.clock is not None:
            _home.CLOCK.put(seams.clock)
        if seams.wall is not None:
            _home.WALL.put(seams.wall)
        if seams.async_sleep is not None:
            _home.ASYNC_SLEEP.put(seams.async_sleep)
