"""The shape of ``core/``: every module imports on its own, and no two modules import each other (directly or
through others), counting the imports inside functions too — a cycle hidden by a function-local import is still a
cycle. The import graph is read from the source with ``ast`` (relative imports resolved against the package)."""

from __future__ import annotations

import ast
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
CORE = ROOT / "core"
PACK = "aware_restore"



def module_name(path: Path) -> str:
    parts = list(path.relative_to(ROOT).with_suffix("").parts)
    if parts[-1] == "__init__":
        parts.pop()
    return ".".join(parts)


def core_modules() -> dict[str, Path]:
    return {module_name(p): p for p in sorted(CORE.rglob("*.py"))}


def _ancestors(name: str) -> list[str]:
    parts = name.split(".")
    return [".".join(parts[:i]) for i in range(1, len(parts))]


def import_graph(modules: dict[str, Path]) -> dict[str, set[str]]:
    """``{module: modules it imports}`` for the modules of ``core/`` (top-level and function-local imports,
    relative and absolute). Importing ``a.b.c`` runs ``a`` and ``a.b`` first, so those packages count as imported
    too, unless they enclose the importer (they are already being imported then)."""
    graph: dict[str, set[str]] = {}
    for name, path in modules.items():
        package = name if path.name == "__init__.py" else name.rpartition(".")[0]
        targets: set[str] = set()
        for node in ast.walk(ast.parse(path.read_text(), str(path))):
            if isinstance(node, ast.ImportFrom):
                if node.level:
                    base = package.split(".")[: len(package.split(".")) - node.level + 1]
                    source = ".".join(base + ([node.module] if node.module else []))
                elif node.module and node.module.startswith(PACK + "."):
                    source = node.module[len(PACK) + 1:]
                else:
                    continue
                subs = [f"{source}.{a.name}" for a in node.names if f"{source}.{a.name}" in modules]
                targets.update(subs)
                if len(subs) < len(node.names):  # names defined in `source` itself
                    targets.add(source)
            elif isinstance(node, ast.Import):
                targets.update(a.name[len(PACK) + 1:] for a in node.names if a.name.startswith(PACK + "."))
        own = set(_ancestors(name))
        for t in list(targets):
            targets.update(a for a in _ancestors(t) if a not in own)
        graph[name] = {t for t in targets if t in modules and t != name}
    return graph


def cycles(graph: dict[str, set[str]]) -> list[set[str]]:
    """The strongly connected components with more than one module (Tarjan)."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on_stack: set[str] = set()
    found: list[set[str]] = []

    def visit(v: str) -> None:
        index[v] = low[v] = len(index)
        stack.append(v)
        on_stack.add(v)
        for w in sorted(graph[v]):
            if w not in index:
                visit(w)
                low[v] = min(low[v], low[w])
            elif w in on_stack:
                low[v] = min(low[v], index[w])
        if low[v] == index[v]:
            comp = set()
            while True:
                w = stack.pop()
                on_stack.discard(w)
                comp.add(w)
                if w == v:
                    break
            if len(comp) > 1:
                found.append(comp)

    for v in sorted(graph):
        if v not in index:
            visit(v)
    return found


def test_the_graph_sees_relative_function_local_and_package_imports(tmp_path):
    pkg = tmp_path / "core"
    (pkg / "fam").mkdir(parents=True)
    (pkg / "__init__.py").write_text("")
    (pkg / "errors.py").write_text("")
    (pkg / "fam" / "__init__.py").write_text("from .load import load\n")
    (pkg / "fam" / "arch.py").write_text("from ..errors import X\n\ndef load():\n    from .load import build\n")
    (pkg / "fam" / "load.py").write_text("from . import arch\nfrom .. import errors\n")
    (pkg / "other.py").write_text("def f():\n    from aware_restore.core.fam import arch\n")
    mods = {".".join(p.relative_to(tmp_path).with_suffix("").parts).removesuffix(".__init__"): p
            for p in pkg.rglob("*.py")}
    g = import_graph(mods)
    assert g["core.fam.arch"] == {"core.errors", "core.fam.load"}  # the function-local import counts
    assert g["core.fam.load"] == {"core.fam.arch", "core.errors"}  # `from . import arch`: the module, not the package
    assert g["core.other"] == {"core.fam", "core.fam.arch"}  # absolute; runs core/fam/__init__.py first
    assert cycles(g) == [{"core.fam.arch", "core.fam.load"}]


def test_core_has_no_import_cycles():
    found = cycles(import_graph(core_modules()))
    assert not found, "import cycles in core/: " + "; ".join(" <-> ".join(sorted(c)) for c in found)


_ISOLATED = """
import importlib, sys, traceback
failed = []
for name in sys.argv[1:]:
    for key in [k for k in sys.modules if k == "aware_restore" or k.startswith("aware_restore.")]:
        del sys.modules[key]
    try:
        importlib.import_module(name)
    except Exception:
        failed.append(name + ": " + traceback.format_exc().strip().splitlines()[-1])
print("\\n".join(failed))
sys.exit(1 if failed else 0)
"""


def test_every_core_module_imports_on_its_own():
    """Each module imported first, in a fresh state of the pack (third-party modules stay loaded; one process)."""
    names = [f"{PACK}.{m}" for m in core_modules()]
    r = subprocess.run([sys.executable, "-c", _ISOLATED, *names], capture_output=True, text=True, timeout=600,
                       check=False)
    assert r.returncode == 0, r.stdout + r.stderr[-3000:]


def test_the_kit_is_a_package_that_docs_run_without_import_tricks():
    """tests/kit imports its own modules relatively (so it is a package under any name), and the docs run it as
    ``python -m kit`` from tests/ instead of planting it in sys.modules."""
    kit = ROOT / "tests" / "kit"
    for path in kit.glob("*.py"):
        for node in ast.walk(ast.parse(path.read_text())):
            names = [node.module or ""] if isinstance(node, ast.ImportFrom) else (
                [a.name for a in node.names] if isinstance(node, ast.Import) else [])
            assert not [n for n in names if n == "kit" or n.startswith("kit.")], f"{path.name}: absolute kit import"
        assert 'import_module(f"kit.' not in path.read_text(), path.name
    render = (ROOT / "docs" / "render_workflows.py").read_text()
    assert "sys.modules" not in render and "sys.path" not in render and '"-m", "kit"' in render
    r = subprocess.run([sys.executable, "-m", "kit"], cwd=kit.parent, capture_output=True, text=True, check=False)
    assert r.returncode == 2 and "usage: python -m kit MODELS_ROOT" in r.stderr
