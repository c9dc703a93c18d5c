"""docs/cli.md stays true: its exit-code and config tables are generated from the code.

Run ``python tests/test_cli_docs.py`` to rewrite the page's generated blocks (between
``<!-- name:start -->`` and ``<!-- name:end -->``) after changing ``config/poller.toml``
or ``poller.cli.ExitCode``.
"""

from __future__ import annotations

import re
import sys

from helpers import ROOT

from poller._config import KEYS
from poller.cli import ExitCode
from poller.cli._exit import WAIT_MEANINGS, severity_text

DOC = ROOT / "docs" / "cli.md"
DEFAULTS = ROOT / "config" / "poller.toml"


def exit_code_table() -> str:
    """The exit-code table, from the codes the CLI uses."""
    rows = ["| code | meaning |", "|---|---|"]
    for code, meaning in WAIT_MEANINGS.items():
        rows.append(f"| {int(code)} | {meaning} |")
    return "\n".join(rows)


def exit_severity() -> str:
    """The order in which several runs' codes combine, from the one the CLI uses."""
    return severity_text()


def config_reference() -> str:
    """The configuration reference, from the comments and values of config/poller.toml."""
    rows = ["| key | environment variable | default | meaning |", "|---|---|---|---|"]
    section, comments = "", []
    for raw in DEFAULTS.read_text().splitlines():
        line = raw.strip()
        if match := re.fullmatch(r"\[(\w+)\]", line):
            section, comments = match.group(1), []
        elif line.startswith("#"):
            comments.append(line.lstrip("# "))
        elif "=" in line and section:
            key, value = (part.strip() for part in line.split("=", 1))
            env = f"POLLER_{section.upper()}_{key.upper()}"
            meaning = " ".join(comments).replace("|", "\\|")
            rows.append(f"| `[{section}] {key}` | `{env}` | `{value}` | {meaning} |")
            comments = []
        else:
            comments = []
    return "\n".join(rows)


def block(name: str) -> str:
    found = re.search(
        rf"<!-- {name}:start -->\n(.*?)\n<!-- {name}:end -->", DOC.read_text(), flags=re.DOTALL
    )
    assert found, f"docs/cli.md lacks the {name} block"
    return found.group(1)


def test_exit_code_table_is_the_one_the_cli_uses() -> None:
    """The documented exit codes are exactly poller.cli.ExitCode, each with its meaning."""
    assert block("exit-codes") == exit_code_table()
    assert list(WAIT_MEANINGS) == list(ExitCode)


def test_the_documented_order_of_several_runs_codes_is_the_one_the_cli_uses() -> None:
    """docs/cli.md's severity order is generated from poller.cli._exit.SEVERITY."""
    assert block("exit-severity") == exit_severity()


def test_configuration_reference_matches_the_packaged_defaults() -> None:
    """Every key, default and comment of config/poller.toml is in the reference, and no other."""
    reference = block("config-reference")
    assert reference == config_reference()
    documented = set(re.findall(r"`\[(\w+)\] (\w+)`", reference))
    assert documented == set(KEYS)


def rewrite() -> None:
    text = DOC.read_text()
    blocks = (
        ("exit-codes", exit_code_table()),
        ("exit-severity", exit_severity()),
        ("config-reference", config_reference()),
    )
    for name, body in blocks:
        text = re.sub(
            rf"(<!-- {name}:start -->\n).*?(\n<!-- {name}:end -->)",
            lambda m, body=body: m.group(1) + body + m.group(2),
            text,
            flags=re.DOTALL,
        )
    DOC.write_text(text)


if __name__ == "__main__":
    rewrite()
    sys.exit(0)
