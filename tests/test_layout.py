"""The package layout: a light, lazy face and a module graph that reads as the architecture."""

from __future__ import annotations

import ast
import subprocess
import sys
from pathlib import Path

import poller

PACKAGE = Path(poller.__file__).resolve().parent
TESTS = Path(__file__).resolve().parent


def _module_name(path: Path) -> str:
    parts = path.relative_to(PACKAGE.parent).with_suffix("").parts
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


MODULES = {_module_name(p): p for p in sorted(PACKAGE.rglob("*.py"))}


def _is_type_checking(test: ast.expr) -> bool:
    return (isinstance(test, ast.Name) and test.id == "TYPE_CHECKING") or (
        isinstance(test, ast.Attribute) and test.attr == "TYPE_CHECKING"
    )


def _top_level_imports(body: list[ast.stmt]) -> list[ast.Import | ast.ImportFrom]:
    found: list[ast.Import | ast.ImportFrom] = []
    for node in body:
        if isinstance(node, ast.Import | ast.ImportFrom):
            found.append(node)
        elif isinstance(node, ast.If):
            if not _is_type_checking(node.test):
                found += _top_level_imports(node.body)
            found += _top_level_imports(node.orelse)
        elif isinstance(node, ast.Try):
            for block in (node.body, node.orelse, node.finalbody, *(h.body for h in node.handlers)):
                found += _top_level_imports(block)
    return found


def _targets(node: ast.Import | ast.ImportFrom) -> list[str]:
    """The poller modules an import statement loads."""
    if isinstance(node, ast.Import):
        return [alias.name for alias in node.names if alias.name in MODULES]
    if node.module is None or node.module not in MODULES:
        return []
    submodules = [f"{node.module}.{alias.name}" for alias in node.names]
    return [node.module, *(name for name in submodules if name in MODULES)]


def _import_graph() -> dict[str, set[str]]:
    graph: dict[str, set[str]] = {}
    for name, path in MODULES.items():
        tree = ast.parse(path.read_text(encoding="utf-8"))
        edges = {t for node in _top_level_imports(tree.body) for t in _targets(node)}
        # Importing a module runs its package's __init__; that edge is not a cycle.
        graph[name] = {t for t in edges if t != name and not name.startswith(f"{t}.")}
    return graph


def test_importing_poller_loads_no_botocore_structlog_or_asyncio() -> None:
    """A clean interpreter's `import poller` stays light: the heavy modules load on first use."""
    code = (
        "import poller, sys; "
        "assert 'botocore' not in sys.modules and 'structlog' not in sys.modules "
        "and 'asyncio' not in sys.modules, sorted(sys.modules)"
    )
    subprocess.run([sys.executable, "-c", code], check=True, capture_output=True, text=True)


def test_every_name_in_all_imports_from_poller() -> None:
    """Each name in `poller.__all__` can be imported from `poller`, in a fresh interpreter too."""
    code = f"from poller import {', '.join(poller.__all__)}"
    subprocess.run([sys.executable, "-c", code], check=True, capture_output=True, text=True)
    for name in poller.__all__:
        assert getattr(poller, name).__module__.startswith("poller.")


def test_dir_of_poller_lists_every_public_name() -> None:
    """`dir(poller)` shows every name in `__all__`, imported yet or not."""
    assert set(poller.__all__) <= set(dir(poller))


def test_no_module_imports_a_private_name_from_another_poller_module() -> None:
    """Modules share names through public names of (possibly private) modules, never `_name`s."""
    offenders = [
        f"{_module_name(path)}:{node.lineno} imports {alias.name} from {node.module}"
        for path in MODULES.values()
        for node in ast.walk(ast.parse(path.read_text(encoding="utf-8")))
        if isinstance(node, ast.ImportFrom) and (node.module or "").split(".")[0] == "poller"
        for alias in node.names
        if alias.name.startswith("_") and f"{node.module}.{alias.name}" not in MODULES
    ]
    assert offenders == []


def test_poller_modules_import_each_other_without_a_cycle() -> None:
    """The module-import-time graph of poller's modules is acyclic."""
    graph = _import_graph()
    done: set[str] = set()

    def visit(name: str, path: list[str]) -> None:
        if name in path:
            raise AssertionError(" -> ".join([*path[path.index(name) :], name]))
        if name in done:
            return
        for target in sorted(graph[name]):
            visit(target, [*path, name])
        done.add(name)

    for name in sorted(graph):
        visit(name, [])


def test_test_modules_share_code_only_through_helper_modules() -> None:
    """No test file imports conftest, a test module or `tests.x`: one name per file, no copies."""
    test_modules = {path.stem for path in TESTS.glob("test_*.py")}
    offenders = [
        f"{path.name}:{node.lineno} imports {name}"
        for path in sorted(TESTS.glob("*.py"))
        for node in ast.walk(ast.parse(path.read_text(encoding="utf-8")))
        for name in (
            [alias.name for alias in node.names]
            if isinstance(node, ast.Import)
            else [node.module or ""]
            if isinstance(node, ast.ImportFrom)
            else []
        )
        if name.split(".")[0] in {"tests", "conftest", *test_modules}
    ]
    assert offenders == []


def _layout_order() -> list[str]:
    """The modules (or packages) of docs/design.md's layout block, in their order."""
    text = (PACKAGE.parent / "docs" / "design.md").read_text(encoding="utf-8")
    layout = text.split("## Layout", 1)[1].split("```", 2)[1]
    names = []
    for line in layout.splitlines():
        path = line.split(" ", 1)[0]
        if path.startswith("poller/"):
            names.append(path.removesuffix(".py").removesuffix("/").replace("/", "."))
    return names


def test_the_design_layout_lists_every_module_in_the_order_of_its_top_level_imports() -> None:
    """Each module's top-level imports are of modules listed above it (or of its own package)."""
    order = _layout_order()

    def place(module: str) -> int:
        return max(
            i for i, name in enumerate(order) if module == name or module.startswith(f"{name}.")
        )

    for module, targets in _import_graph().items():
        if module.endswith("__init__") or module == "poller":
            continue
        assert any(module == n or module.startswith(f"{n}.") for n in order), f"{module} unlisted"
        for target in targets:
            if target == "poller" or place(target) == place(module):
                continue  # the package's face, or a module of its own package
            assert place(target) < place(module), f"{module} imports {target}, listed below it"
