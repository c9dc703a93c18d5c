"""Start-up: the work a `poller` process skips, and that skipping it changes nothing.

How fast is measured in benchmarks/bench_cli_startup.py; these tests pin the
structural facts behind the figures.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import textwrap
from collections.abc import Iterator
from typing import Any

import botocore.handlers
import botocore.loaders
import botocore.session
import pytest

from poller._datazone import _DataZoneLoader, build_client
from poller.testing import RunScript, Simulator

ENV_CREDENTIALS = {
    "AWS_ACCESS_KEY_ID": "testing",
    "AWS_SECRET_ACCESS_KEY": "testing",
    "AWS_DEFAULT_REGION": "us-east-1",
    "AWS_CONFIG_FILE": os.devnull,
    "AWS_SHARED_CREDENTIALS_FILE": os.devnull,
}


def test_waiting_on_a_finished_run_imports_no_boto3_s3transfer_or_tenacity() -> None:
    """`poller wait` on a finished run imports botocore, not boto3, s3transfer or tenacity."""
    with Simulator() as sim:
        sim.add_run("dzd_abc123", "run-1", RunScript(statuses=["SUCCESS"]))
        env = {**ENV_CREDENTIALS, "PATH": "/usr/bin:/bin", "HOME": "/nonexistent"}
        command = ["wait", "--domain-identifier", "dzd_abc123", "--identifier", "run-1"]
        done = subprocess.run(
            [sys.executable, "-X", "importtime", "-m", "poller", *command],
            env={**env, "AWS_ENDPOINT_URL_DATAZONE": sim.endpoint_url},
            capture_output=True,
            text=True,
            check=True,
        )
    assert json.loads(done.stdout)["status"] == "SUCCESS"
    imported = {
        line.rsplit("|", 1)[1].strip().split(".")[0]
        for line in done.stderr.splitlines()
        if line.startswith("import time:")
    }
    assert "botocore" in imported
    assert not {"boto3", "s3transfer", "tenacity"} & imported


def test_building_a_client_lists_no_other_service_s_model_folder() -> None:
    """build_client looks in DataZone's model folder only, not in all ~450 services' folders."""
    code = textwrap.dedent(
        """
        import os, sys
        import botocore
        data = os.path.realpath(os.path.join(os.path.dirname(botocore.__file__), "data"))
        listed = []
        def hook(event, args):
            if event in ("os.listdir", "os.scandir") and args and args[0] is not None:
                listed.append(os.path.realpath(os.fsdecode(args[0])))
        sys.addaudithook(hook)
        from poller._datazone import build_client
        build_client(region_name="us-east-1")
        inside = sorted({p for p in listed if p == data or p.startswith(data + os.sep)})
        print("\\n".join(inside))
        """
    )
    env = {**ENV_CREDENTIALS, "PATH": "/usr/bin:/bin", "HOME": "/nonexistent"}
    done = subprocess.run(
        [sys.executable, "-c", code], env=env, capture_output=True, text=True, check=True
    )
    data = os.path.realpath(os.path.join(os.path.dirname(botocore.__file__), "data"))
    assert done.stdout.split() == [os.path.join(data, "datazone")]


def _builtin_events() -> Iterator[str]:
    """Every event a built-in handler listens to, as a DataZone client would emit it."""
    kinds = {spec[0].split(".")[0] for spec in botocore.handlers.BUILTIN_HANDLERS}
    for kind in sorted(kinds):
        yield kind
        yield f"{kind}.datazone"
        for operation in ("GetJobRun", "ListJobRuns", "CreateAsset"):
            yield f"{kind}.datazone.{operation}"


def _handler_names(client: Any, event: str) -> list[str]:
    emitter = client.meta.events._emitter
    names = []
    for handler in emitter._handlers.prefix_search(event):
        func = getattr(handler, "func", handler)  # a functools.partial
        names.append(f"{func.__module__}.{getattr(func, '__qualname__', type(func).__name__)}")
    return names


def test_poller_s_client_runs_the_handlers_botocore_s_own_client_runs() -> None:
    """On every event a built-in handler listens to, poller's client runs botocore's handlers."""
    ours = build_client(endpoint_url="http://127.0.0.1:1")
    theirs = botocore.session.Session().create_client("datazone", endpoint_url="http://127.0.0.1:1")
    differ = {
        event: (_handler_names(ours, event), _handler_names(theirs, event))
        for event in _builtin_events()
        if _handler_names(ours, event) != _handler_names(theirs, event)
    }
    assert not differ


@pytest.mark.parametrize(
    ("name", "kind"),
    [("datazone", "service-2"), ("datazone", "endpoint-rule-set-1"), ("endpoints", None)],
)
def test_poller_s_loader_reads_the_models_botocore_reads(name: str, kind: str | None) -> None:
    """The models and endpoints poller parses (into plain dicts) are botocore's own, unchanged."""
    # Fresh loaders: botocore's endpoint resolver fills defaults into the data it was given.
    ours, theirs = _DataZoneLoader(), botocore.loaders.create_loader()
    if kind is None:
        assert ours.load_data(name) == theirs.load_data(name)
    else:
        assert ours.load_service_model(name, kind) == theirs.load_service_model(name, kind)
