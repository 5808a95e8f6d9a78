"""The direction of dependencies: the trainer never imports the service, and no module imports itself back.

Read from the source with ``ast`` (every import statement, also those inside functions), so a lazy
import cannot hide a cycle.
"""

from __future__ import annotations

import ast
import graphlib
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
PACKAGES = ("trainer", "service")


def _module_name(path: Path) -> str:
    parts = list(path.relative_to(ROOT).with_suffix("").parts)
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def _imports(path: Path) -> set[str]:
    """The project modules ``path`` imports (``from a.b import c`` counts as a.b, or a.b.c when it is one)."""
    found = set()
    for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
        if isinstance(node, ast.Import):
            found |= {alias.name for alias in node.names}
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            found.add(node.module)
            found |= {f"{node.module}.{alias.name}" for alias in node.names}
    return {name for name in found if name.split(".")[0] in PACKAGES}


def _graph() -> dict[str, set[str]]:
    files = {_module_name(p): p for package in PACKAGES for p in (ROOT / package).rglob("*.py")}
    return {
        name: {dep for dep in _imports(path) if dep in files and dep != name} for name, path in files.items()
    }


def test_the_trainer_imports_nothing_from_the_service():
    graph = _graph()
    offenders = {name: sorted(d for d in deps if d.startswith("service")) for name, deps in graph.items()}
    assert not {n: d for n, d in offenders.items() if n.startswith("trainer") and d}


def test_no_import_cycles_among_the_projects_modules():
    graph = _graph()
    # a package's __init__ re-exporting its submodules is not a cycle of concerns: leave those edges out
    graph = {n: {d for d in deps if not (n != d and d.startswith(n + "."))} for n, deps in graph.items()}
    try:
        list(graphlib.TopologicalSorter(graph).static_order())
    except graphlib.CycleError as exc:
        raise AssertionError(f"import cycle: {' -> '.join(exc.args[1])}") from None


def test_importing_the_card_or_the_config_pulls_in_neither_fastapi_nor_sqlalchemy_nor_torch():
    code = (
        "import sys, trainer.card, trainer.config\n"
        "print(sorted(m for m in ('fastapi', 'sqlalchemy', 'torch', 'service') if m in sys.modules))"
    )
    out = subprocess.run([sys.executable, "-c", code], cwd=ROOT, capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "[]", out.stdout
