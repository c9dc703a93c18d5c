"""The ``poller`` command line: ``wait``, ``status`` and ``demo``.

stdout carries results only (one JSON document per run, or a short text
summary); stderr carries logs, one-line errors and, on a terminal, a live
status line. No error reaches the user as a traceback.

The package: ``_commands`` (click declarations, the entry point), ``_run``
(executing the waits, signals), ``_render`` (what is printed, where),
``_exit`` (``ExitCode``), ``_live`` (the live status line).
"""

from poller.cli._commands import cli, main
from poller.cli._exit import ExitCode

__all__ = ["ExitCode", "cli", "main"]
