"""The log events the docs list are the ones the code emits: found in the source, not typed twice.

`poller.log.EVENTS` names every event and says when it is logged; this module
finds every event the code logs (the first argument of each ``.info``,
``.debug``, ``.warning`` call and of WaitSession's ``_emit`` / ``_note``), with
its level, and checks the two agree. The lists in docs/python-api.md (a table),
docs/cli.md and docs/design.md (the names) are generated: run ``python
tests/test_log_events.py`` to rewrite them after adding an event.
"""

from __future__ import annotations

import ast
import re
import sys

from helpers import ROOT

from poller.log import EVENTS

PACKAGE = ROOT / "poller"
#: A call's method name -> the level it logs at.
LEVELS = {"debug": "debug", "info": "info", "warning": "warning", "_emit": "info", "_note": "debug"}
EVENT_NAME = re.compile(r"[a-z][a-z_]+")
PAGES = {
    "python-api.md": "events",
    "cli.md": "event-names",
    "design.md": "event-names",
}


def _constants() -> dict[str, str]:
    """Every module-level ``NAME = "text"`` (or ``NAME: Final = "text"``) of the package."""
    found: dict[str, str] = {}
    for path in PACKAGE.rglob("*.py"):
        for node in ast.parse(path.read_text(encoding="utf-8")).body:
            target = node.target if isinstance(node, ast.AnnAssign) else None
            if isinstance(node, ast.Assign) and len(node.targets) == 1:
                target = node.targets[0]
            value = getattr(node, "value", None)
            constant = isinstance(value, ast.Constant) and isinstance(value.value, str)
            if isinstance(target, ast.Name) and constant:
                found[target.id] = value.value  # type: ignore[union-attr]
    return found


def _values(node: ast.expr, local: dict[str, ast.expr], constants: dict[str, str]) -> list[str]:
    """The strings an event argument can be: a literal, a constant, a local choosing between."""
    if isinstance(node, ast.Constant) and isinstance(node.value, str):
        return [node.value]
    if isinstance(node, ast.IfExp):
        return _values(node.body, local, constants) + _values(node.orelse, local, constants)
    if isinstance(node, ast.Name) and node.id in local:
        return _values(local[node.id], local, constants)
    name = node.id if isinstance(node, ast.Name) else getattr(node, "attr", None)
    return [constants[name]] if name in constants else []


def emitted() -> dict[str, set[str]]:
    """Every event the package logs -> the levels it is logged at."""
    constants = _constants()
    events: dict[str, set[str]] = {}
    for path in PACKAGE.rglob("*.py"):
        tree = ast.parse(path.read_text(encoding="utf-8"))
        for function in ast.walk(tree):
            if not isinstance(function, ast.FunctionDef | ast.AsyncFunctionDef):
                continue
            local = {
                target.id: node.value
                for node in ast.walk(function)
                if isinstance(node, ast.Assign)
                for target in node.targets
                if isinstance(target, ast.Name)
            }
            for call in ast.walk(function):
                if not (isinstance(call, ast.Call) and isinstance(call.func, ast.Attribute)):
                    continue
                level = LEVELS.get(call.func.attr)
                if level is None or not call.args:
                    continue
                for value in _values(call.args[0], local, constants):
                    if EVENT_NAME.fullmatch(value):
                        events.setdefault(value, set()).add(level)
    return events


def events_table() -> str:
    """The table of docs/python-api.md: every event, its level, when it is logged."""
    levels = emitted()
    rows = ["| event | level | logged when |", "|---|---|---|"]
    for name, when in EVENTS.items():
        rows.append(f"| `{name}` | {', '.join(sorted(levels.get(name, ())))} | {when} |")
    return "\n".join(rows)


def event_names() -> str:
    """The names, for the pages that point to the table."""
    return ", ".join(f"`{name}`" for name in EVENTS)


def block(page: str, name: str) -> str:
    found = re.search(
        rf"<!-- {name}:start -->\n(.*?)\n<!-- {name}:end -->",
        (ROOT / "docs" / page).read_text(encoding="utf-8"),
        flags=re.DOTALL,
    )
    assert found, f"docs/{page} lacks the {name} block"
    return found.group(1)


def generated(name: str) -> str:
    return events_table() if name == "events" else event_names()


def test_every_event_the_code_logs_is_named_and_described_and_no_other() -> None:
    """poller.log.EVENTS is exactly the set of events logged anywhere in the package."""
    assert set(emitted()) == set(EVENTS)


def test_history_unavailable_is_no_news_at_info_level() -> None:
    """A job with fewer than 5 past runs is normal: said at debug, never at info."""
    assert emitted()["history_unavailable"] == {"debug"}


def test_the_docs_list_every_event_as_the_code_has_them() -> None:
    """python-api.md's table and the names in cli.md and design.md are generated from the code."""
    for page, name in PAGES.items():
        assert block(page, name) == generated(name), f"docs/{page}: run {__file__}"


def rewrite() -> None:
    for page, name in PAGES.items():
        path = ROOT / "docs" / page
        body = generated(name)
        text = re.sub(
            rf"(<!-- {name}:start -->\n).*?(\n<!-- {name}:end -->)",
            lambda m, body=body: m.group(1) + body + m.group(2),
            path.read_text(encoding="utf-8"),
            flags=re.DOTALL,
        )
        path.write_text(text, encoding="utf-8")


if __name__ == "__main__":
    rewrite()
    sys.exit(0)
