"""The package's folders are its data flow: a later stage imports earlier ones, never the reverse,
and no module imports itself back through others (no cycles), lazy imports included."""

from __future__ import annotations

import ast
import subprocess
import sys
from pathlib import Path

import pytest

import graftsearch

PACKAGE = Path(graftsearch.__file__).parent

# The stages in the order the data flows through them (ARCHITECTURE.md draws the same picture).
# A module may import its own stage and the stages before it.
STAGES = ("_utils", "taps", "donors", "data", "training", "cultivate", "features", "fitness",
          "optimize", "graft", "report", "pipeline", "_cli")
# Modules that sit outside the stages: the package root re-exports every stage, graftsearch.errors
# every error type of _utils/errors.py.
ROOT_MODULES = {"graftsearch", "graftsearch.__main__", "graftsearch._version", "graftsearch.errors"}


def _module_name(path: Path) -> str:
    parts = list(path.relative_to(PACKAGE.parent).with_suffix("").parts)
    if parts[-1] == "__init__":
        parts = parts[:-1]
    return ".".join(parts)


def _resolve(importer: str, is_package: bool, node: ast.ImportFrom) -> list[str]:
    if node.level:
        base = importer.split(".")
        if not is_package:
            base = base[:-1]
        base = base[:len(base) - (node.level - 1)]
        target = ".".join(base + ([node.module] if node.module else []))
    else:
        target = node.module or ""
    if not target.startswith("graftsearch"):
        return []
    # `from pkg import name` may name a submodule of pkg
    found = []
    for alias in node.names:
        sub = f"{target}.{alias.name}"
        found.append(sub if sub in MODULE_NAMES else target)
    return found


def _graph() -> dict[str, set[str]]:
    graph: dict[str, set[str]] = {}
    for path, name in MODULES.items():
        tree = ast.parse(path.read_text(), filename=str(path))
        deps: set[str] = set()
        for node in ast.walk(tree):
            if isinstance(node, ast.ImportFrom):
                deps.update(_resolve(name, path.name == "__init__.py", node))
            elif isinstance(node, ast.Import):
                deps.update(a.name for a in node.names if a.name.startswith("graftsearch"))
            elif (isinstance(node, ast.Call) and isinstance(node.func, ast.Name)
                  and node.func.id == "_lazy_exports" and len(node.args) == 2
                  and isinstance(node.args[1], ast.Dict)):
                # a package's lazy namespace imports each listed module on first use
                deps.update(k.value for k in node.args[1].keys if isinstance(k, ast.Constant))
        deps.discard(name)
        graph[name] = {d for d in deps if d in MODULE_NAMES}
    return graph


MODULES = {p: _module_name(p) for p in sorted(PACKAGE.rglob("*.py"))}  # path -> module name
MODULE_NAMES = set(MODULES.values())


def _stage(module: str) -> str | None:
    if module in ROOT_MODULES:
        return None
    return module.split(".")[1]


def test_every_module_belongs_to_a_stage():
    strays = [m for m in MODULE_NAMES if m not in ROOT_MODULES and _stage(m) not in STAGES]
    assert not strays, f"modules outside the stage folders: {sorted(strays)}"


def test_imports_run_one_way():
    backwards = []
    for module, deps in _graph().items():
        stage = _stage(module)
        if stage is None:
            continue
        for dep in deps:
            dep_stage = _stage(dep)
            if dep_stage is None:
                if dep != "graftsearch._version":
                    backwards.append(f"{module} -> {dep} (the package root)")
                continue
            if STAGES.index(dep_stage) > STAGES.index(stage):
                backwards.append(f"{module} -> {dep}")
    assert not backwards, "later stages imported by earlier ones:\n" + "\n".join(sorted(backwards))


def test_a_stage_does_not_import_its_own_package_root():
    # graftsearch.taps._records importing graftsearch.taps would cycle through taps/__init__.py
    offenders = [f"{m} -> {d}" for m, deps in _graph().items() for d in deps
                 if _stage(m) is not None and d == f"graftsearch.{_stage(m)}"
                 and not m.endswith("__init__") and m != d]
    assert not offenders, offenders


def test_no_import_cycles():
    graph = _graph()
    state: dict[str, int] = {}
    stack: list[str] = []
    cycles: list[list[str]] = []

    def visit(node: str) -> None:
        state[node] = 1
        stack.append(node)
        for dep in sorted(graph.get(node, ())):
            if state.get(dep) == 1:
                cycles.append(stack[stack.index(dep):] + [dep])
            elif dep not in state:
                visit(dep)
        stack.pop()
        state[node] = 2

    for node in sorted(graph):
        if node not in state:
            visit(node)
    assert not cycles, "import cycles:\n" + "\n".join(" -> ".join(c) for c in cycles)


def test_the_graph_sees_real_imports():
    # guards the test itself: a parser that found nothing would pass every check above
    graph = _graph()

    def stage_imports(stage: str, other: str) -> bool:
        return any(d.startswith(f"graftsearch.{other}") for m, deps in graph.items()
                   if m.startswith(f"graftsearch.{stage}.") for d in deps)

    assert stage_imports("donors", "taps")
    assert "graftsearch.taps._records" in graph["graftsearch.taps"]  # a lazy namespace's modules
    assert stage_imports("pipeline", "optimize")
    assert not stage_imports("taps", "donors")


@pytest.mark.parametrize("stage", [s for s in STAGES if not s.startswith("_")])
def test_each_stage_imports_alone(stage):
    # a fresh interpreter: importing one stage first, and each of its (lazily imported) names,
    # must not trip over a cycle
    code = (f"import graftsearch.{stage} as m; names = m.__all__; "
            "print(len([getattr(m, n) for n in names]))")
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True)
    assert done.returncode == 0, done.stderr
