"""The package itself: its version, as the convention has it."""

from __future__ import annotations

import importlib.metadata
import subprocess

from helpers import POLLER

import poller


def test_poller_has_a_version_equal_to_the_distribution_s_and_the_cli_s() -> None:
    """`poller.__version__` is importlib.metadata's version, and what `poller --version` says."""
    assert poller.__version__ == importlib.metadata.version("poller")
    shown = subprocess.run(
        [str(POLLER), "--version"], capture_output=True, text=True, timeout=60, check=True
    ).stdout
    assert shown == f"poller {poller.__version__}\n"
    assert "__version__" in dir(poller)
