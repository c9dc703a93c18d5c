"""Whole-process cost of `poller wait` on a run that has already finished, and of `--help`.

Three commands answer the same question ("how did run X end?") against the
same simulator run, over real HTTP, each in a fresh process:

* ``poller``  -- ``poller wait --domain-identifier D --identifier R`` (stderr not a
  terminal, so JSON logs, as in CI);
* ``boto3``   -- a bare script: ``import boto3``, create the client, one
  ``get_job_run`` call, nothing else: the baseline every ratio is against;
* ``awscli``  -- ``aws datazone get-job-run`` from the AWS CLI (v1, from PyPI),
  installed into ``benchmarks/.venv-awscli`` on first use.

Two more rows place them: ``help`` is ``poller --help``, and ``python`` is
``python -c pass``, the interpreter's own start-up, under which nothing goes.

poller and the bare script run from ``benchmarks/.venv-poller``, where poller
is installed as a user installs it (``pip install .``, no extras): the
development venv also holds Airflow, whose ``rich`` dependency structlog
imports when it finds it (~40 ms that a plain install does not pay).

They run interleaved (one of each per round, the order rotating), after one
warm-up each, so drift in the machine's load hits all of them alike. Wall time
is measured around the child process, CPU time (user + system) is the
child's own from ``wait4``. Targets (issue 3): ``poller wait`` at most 1.00x
the bare boto3 script (wall, medians), faster than the AWS CLI, and
``poller --help`` at most 100 ms (wall, median).

    .venv/bin/python benchmarks/bench_cli_startup.py [--rounds 30] [--no-awscli]
"""

from __future__ import annotations

import argparse
import os
import statistics
import subprocess
import sys
import time
from pathlib import Path

from poller.testing import Lineage, RunScript, Simulator

HERE = Path(__file__).resolve().parent
AWSCLI_VENV = HERE / ".venv-awscli"
POLLER_VENV = HERE / ".venv-poller"
DOMAIN, RUN = "dzd_bench", "run-finished"

BARE_BOTO3 = f"""
import boto3
client = boto3.client("datazone")
client.get_job_run(domainIdentifier={DOMAIN!r}, identifier={RUN!r})
"""


def ensure_awscli() -> Path:
    """The `aws` executable of the benchmark's own venv, installed from PyPI if missing."""
    aws = AWSCLI_VENV / "bin" / "aws"
    if not aws.exists():
        print(f"installing the AWS CLI into {AWSCLI_VENV} ...", file=sys.stderr)
        subprocess.run([sys.executable, "-m", "venv", str(AWSCLI_VENV)], check=True)
        subprocess.run(
            [str(AWSCLI_VENV / "bin" / "pip"), "install", "--quiet", "awscli"], check=True
        )
    return aws


def ensure_poller() -> Path:
    """The bin folder of a venv holding this checkout of poller as a plain install."""
    pip = POLLER_VENV / "bin" / "pip"
    if not pip.exists():
        subprocess.run([sys.executable, "-m", "venv", str(POLLER_VENV)], check=True)
        subprocess.run([str(pip), "install", "--quiet", str(HERE.parent)], check=True)
    # Always the code as it is now, not as it was when the venv was made.
    subprocess.run(
        [str(pip), "install", "--quiet", "--no-deps", "--force-reinstall", str(HERE.parent)],
        check=True,
    )
    return POLLER_VENV / "bin"


def run_measured(argv: list[str], env: dict[str, str]) -> tuple[float, float]:
    """Wall and CPU seconds of one child process, CPU from wait4; it must exit 0."""
    devnull = os.open(os.devnull, os.O_WRONLY)
    try:
        start = time.perf_counter()
        pid = os.posix_spawn(
            argv[0],
            argv,
            env,
            file_actions=[(os.POSIX_SPAWN_DUP2, devnull, 1), (os.POSIX_SPAWN_DUP2, devnull, 2)],
        )
        _, status, usage = os.wait4(pid, 0)
        wall = time.perf_counter() - start
    finally:
        os.close(devnull)
    code = os.waitstatus_to_exitcode(status)
    if code != 0:
        # Run it again with its output visible, to say why.
        failed = subprocess.run(argv, env=env, capture_output=True, text=True, check=False)
        raise SystemExit(f"{' '.join(argv)} exited {code}: {failed.stderr[-800:]}")
    return wall, usage.ru_utime + usage.ru_stime


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--rounds", type=int, default=30, help="measured runs of each command")
    parser.add_argument("--no-awscli", action="store_true", help="skip the AWS CLI baseline")
    args = parser.parse_args()

    bin_dir = ensure_poller()
    commands: dict[str, list[str]] = {
        "poller": [
            str(bin_dir / "poller"),
            "wait",
            "--domain-identifier",
            DOMAIN,
            "--identifier",
            RUN,
        ],
        "boto3": [str(bin_dir / "python"), "-c", BARE_BOTO3],
    }
    if not args.no_awscli:
        aws = ensure_awscli()
        commands["awscli"] = [
            str(aws), "datazone", "get-job-run", "--domain-identifier", DOMAIN,
            "--identifier", RUN,
        ]  # fmt: skip
    commands["help"] = [str(bin_dir / "poller"), "--help"]
    commands["python"] = [str(bin_dir / "python"), "-c", "pass"]

    with Simulator() as sim:
        sim.add_run(DOMAIN, RUN, RunScript(statuses=["SUCCESS"], lineage=Lineage()))
        env = {
            "PATH": os.environ.get("PATH", "/usr/bin:/bin"),
            "HOME": os.environ.get("HOME", "/tmp"),
            "AWS_ENDPOINT_URL_DATAZONE": sim.endpoint_url,
            "AWS_ACCESS_KEY_ID": "testing",
            "AWS_SECRET_ACCESS_KEY": "testing",
            "AWS_DEFAULT_REGION": "us-east-1",
            "AWS_CONFIG_FILE": os.devnull,
            "AWS_SHARED_CREDENTIALS_FILE": os.devnull,
        }
        names = list(commands)
        for name in names:  # warm-up: page cache, .pyc files
            run_measured(commands[name], env)
        walls: dict[str, list[float]] = {name: [] for name in names}
        cpus: dict[str, list[float]] = {name: [] for name in names}
        for i in range(args.rounds):
            order = names[i % len(names) :] + names[: i % len(names)]
            for name in order:
                wall, cpu = run_measured(commands[name], env)
                walls[name].append(wall)
                cpus[name].append(cpu)
        calls = sim.calls(RUN)

    wall = {name: statistics.median(values) for name, values in walls.items()}
    cpu = {name: statistics.median(values) for name, values in cpus.items()}
    print(f"{args.rounds} rounds, interleaved; {calls} GetJobRun calls in all")
    print(
        f"{'command':<8} {'wall median':>12} {'wall mean':>10} {'cpu median':>11} {'cpu mean':>9}"
        f" {'wall / boto3':>13} {'cpu / boto3':>12}"
    )
    for name in names:
        print(
            f"{name:<8} {wall[name] * 1000:>10.0f}ms {statistics.mean(walls[name]) * 1000:>8.0f}ms"
            f" {cpu[name] * 1000:>9.0f}ms {statistics.mean(cpus[name]) * 1000:>7.0f}ms"
            f" {wall[name] / wall['boto3']:>12.3f}x {cpu[name] / cpu['boto3']:>11.3f}x"
        )
    ok_boto3 = wall["poller"] / wall["boto3"] <= 1.00
    ok_help = wall["help"] <= 0.100
    verdict = [
        f"boto3 target (<= 1.00x wall): {'met' if ok_boto3 else 'MISSED'}",
        f"--help target (<= 100 ms wall): {'met' if ok_help else 'MISSED'}",
    ]
    if "awscli" in walls:
        ok_aws = wall["poller"] < wall["awscli"]
        verdict.append(f"awscli target (faster): {'met' if ok_aws else 'MISSED'}")
    print("; ".join(verdict))


if __name__ == "__main__":
    main()
