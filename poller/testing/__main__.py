"""``python -m poller.testing``: run the DataZone simulator in the foreground.

Prints the endpoint URL on stdout, and on stderr the lines to export for a
``poller wait`` (or any boto3 client) in another shell: the endpoint, a region
and dummy keys. Serves until Ctrl-C or SIGTERM, then stops cleanly.
``--log FILE`` appends a JSON line per request answered (see
`Simulator`); ``--tls`` serves HTTPS and prints the certificate's path on
stderr. Without ``--scenario`` it serves one run, ``run-42`` of domain
``dzd_abc123`` (the IDs every example of the docs uses), that succeeds 10
seconds after start. ``--env-file FILE`` also writes the export line to FILE,
for ``. ./FILE`` in the other shell; the file is removed on stop.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import shlex
import signal
import sys
import threading
from typing import Any

from poller.testing._script import Lineage, RunScript
from poller.testing._simulator import Simulator

_DEMO_DOMAIN, _DEMO_RUN = "dzd_abc123", "run-42"


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m poller.testing",
        description="Serve a local Amazon DataZone endpoint (GetJobRun, ListJobRuns).",
    )
    parser.add_argument("--host", default="127.0.0.1", help="address to bind (default 127.0.0.1)")
    parser.add_argument("--port", type=int, default=0, help="port (default: any free port)")
    parser.add_argument(
        "--scenario",
        help='JSON file: {"runs": [{"domain_id": "dzd_x", "run_id": "run-1", "job_id": "job-1", '
        '"statuses": ["IN_PROGRESS", {"fault": "throttle"}, "SUCCESS"]}, ...]}; every key in '
        "docs/testing.md (Scenario files)",
    )
    parser.add_argument("--seed", type=int, default=0, help="seed for random throttles")
    parser.add_argument("--max-rps", type=float, default=None, help="server-wide request rate")
    parser.add_argument(
        "--log",
        metavar="FILE",
        help="append one JSON line per request to FILE (time, method, path, operation, "
        "access_key_id, status, answer)",
    )
    parser.add_argument(
        "--tls",
        action="store_true",
        help="serve HTTPS with a self-signed certificate (its path is printed on stderr)",
    )
    parser.add_argument(
        "--env-file",
        metavar="FILE",
        help="also write the export line to FILE, for `. ./FILE` in another shell; removed on stop",
    )
    args = parser.parse_args(argv)

    try:
        sim = Simulator(
            seed=args.seed,
            max_rps=args.max_rps,
            host=args.host,
            port=args.port,
            log_file=args.log,
            tls=args.tls,
        )
        if args.scenario:
            scenario = _read_scenario(args.scenario)
            try:
                sim.load_scenario(scenario)
            except ValueError as e:
                raise ValueError(f"--scenario {args.scenario}: {e}") from None
        else:
            sim.add_run(
                _DEMO_DOMAIN,
                _DEMO_RUN,
                RunScript(
                    timeline=[(0, "SCHEDULED"), (2, "IN_PROGRESS"), (10, "SUCCESS")],
                    lineage=Lineage(),
                ),
            )
            print(
                f"serving run {_DEMO_RUN} of domain {_DEMO_DOMAIN} (SUCCESS 10 s from now)",
                file=sys.stderr,
            )
        sim.start()
        if args.tls:
            print(
                f"CA certificate (use as verify= or AWS_CA_BUNDLE): {sim.ca_file}", file=sys.stderr
            )
    except (OSError, ValueError) as e:
        print(f"python -m poller.testing: error: {e}", file=sys.stderr)
        return 2

    stop = threading.Event()
    signal.signal(signal.SIGTERM, lambda *_: stop.set())
    environ = sim.environ()
    if args.tls:
        environ["AWS_CA_BUNDLE"] = str(sim.ca_file)
    exports = " ".join(f"{name}={shlex.quote(value)}" for name, value in environ.items())
    try:
        if args.env_file:
            with open(args.env_file, "w", encoding="utf-8") as f:
                f.write(f"export {exports}\n")
    except OSError as e:
        sim.stop()
        print(f"python -m poller.testing: error: --env-file: {e.strerror or e}", file=sys.stderr)
        return 2
    print(
        f"for a client in another shell (poller wait, boto3):\n  export {exports}",
        file=sys.stderr,
        flush=True,
    )
    print(sim.endpoint_url, flush=True)
    try:
        stop.wait()
    except KeyboardInterrupt:
        pass
    finally:
        sim.stop()
        if args.env_file:
            with contextlib.suppress(OSError):
                os.remove(args.env_file)
    return 0


def _read_scenario(path: str) -> Any:
    """The scenario file's JSON; an error names the file (and where in it JSON broke)."""
    try:
        with open(path, encoding="utf-8") as f:
            return json.load(f)
    except json.JSONDecodeError as e:
        raise ValueError(
            f"--scenario {path}: not valid JSON at line {e.lineno}, column {e.colno}: {e.msg}"
        ) from None
    except OSError as e:
        raise ValueError(f"--scenario {path}: cannot read it: {e.strerror or e}") from None
    except UnicodeDecodeError as e:
        raise ValueError(f"--scenario {path}: not UTF-8 text: {e.reason}") from None


if __name__ == "__main__":
    sys.exit(main())
