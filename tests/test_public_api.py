"""The public API: a short top-level namespace, every stage's names importable from its package,
and examples that use public names only."""

from __future__ import annotations

import ast
import importlib
import inspect
import re
from pathlib import Path

import pytest

import graftsearch
import graftsearch.errors
from graftsearch._utils import errors as private_errors

ROOT = Path(__file__).resolve().parents[1]
EXAMPLES = sorted((ROOT / "examples").glob("*.py"))
README_BLOCKS = re.findall(r"```python\n(.*?)```", (ROOT / "README.md").read_text(), flags=re.S)
# The public packages: the stages (ARCHITECTURE.md) and the module of every error type.
PACKAGES = ("taps", "donors", "data", "training", "cultivate", "features", "fitness", "optimize",
            "graft", "report", "pipeline", "errors")


def test_top_level_is_short_and_resolves():
    names = graftsearch.__all__
    assert len(names) <= 40, f"{len(names)} names at the top level"
    assert len(set(names)) == len(names), "a name listed twice"
    missing = [n for n in names if not hasattr(graftsearch, n)]
    assert not missing, missing


def test_top_level_imports_only_what_it_exports():
    public = {n for n in vars(graftsearch) if not n.startswith("_")}
    modules = {n for n in public if inspect.ismodule(getattr(graftsearch, n))}
    assert public - modules <= set(graftsearch.__all__), sorted(public - modules - set(graftsearch.__all__))


@pytest.mark.parametrize("package", PACKAGES)
def test_every_package_all_resolves(package):
    module = importlib.import_module(f"graftsearch.{package}")
    assert module.__all__, f"graftsearch.{package} exports nothing"
    missing = [n for n in module.__all__ if not hasattr(module, n)]
    assert not missing, f"graftsearch.{package}.__all__ names what it lacks: {missing}"


def test_every_top_level_name_has_a_home_in_a_package():
    # what the top level re-exports is also importable from its stage (or graftsearch.errors)
    homes = {n for p in PACKAGES for n in importlib.import_module(f"graftsearch.{p}").__all__}
    loose = [n for n in graftsearch.__all__ if n not in homes and n not in
             {"__version__", "Progress", "ProgressCallback"}]
    assert not loose, loose


def test_errors_module_holds_every_error_type():
    assert set(graftsearch.errors.__all__) == set(private_errors.__all__)
    for name in graftsearch.errors.__all__:
        cls = getattr(graftsearch.errors, name)
        assert issubclass(cls, graftsearch.GraftSearchError)
        if name in graftsearch.__all__:
            assert getattr(graftsearch, name) is cls


def _private_imports(source: str) -> list[str]:
    """`graftsearch._x` or `graftsearch.<stage>._x` modules (or names) that ``source`` imports."""
    def private(dotted: str) -> bool:
        parts = dotted.split(".")
        return parts[0] == "graftsearch" and any(p.startswith("_") for p in parts[1:])

    found = []
    for node in ast.walk(ast.parse(source)):
        if isinstance(node, ast.Import):
            found += [a.name for a in node.names if private(a.name)]
        elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
            if private(node.module):
                found.append(node.module)
            elif node.module.split(".")[0] == "graftsearch":
                found += [f"{node.module}.{a.name}" for a in node.names
                          if a.name.startswith("_") and a.name != "__version__"]
    return found


def test_the_private_import_check_sees_private_imports(tmp_path):
    sample = tmp_path / "sample.py"
    sample.write_text("import graftsearch._cli\nfrom graftsearch.taps._trace import count_params\n"
                      "from graftsearch import _version\nfrom graftsearch.taps import Tap\n")
    assert _private_imports(sample.read_text()) == ["graftsearch._cli", "graftsearch.taps._trace",
                                        "graftsearch._version"]


def _top_level_names_used(source: str) -> set[str]:
    """The ``X`` of every ``gs.X`` (``graftsearch.X``) in ``source``."""
    tree = ast.parse(source)
    aliases = {a.asname or a.name for node in ast.walk(tree) if isinstance(node, ast.Import)
               for a in node.names if a.name == "graftsearch"} or {"gs"}
    return {node.attr for node in ast.walk(tree) if isinstance(node, ast.Attribute)
            and isinstance(node.value, ast.Name) and node.value.id in aliases}


ALLOWED = set(graftsearch.__all__) | set(PACKAGES)


@pytest.mark.parametrize("path", EXAMPLES, ids=lambda p: p.name)
def test_examples_import_public_names_only(path):
    assert not _private_imports(path.read_text()), f"{path.name} imports private modules"


@pytest.mark.parametrize("path", EXAMPLES, ids=lambda p: p.name)
def test_examples_use_top_level_names_that_exist(path):
    # `gs.X` in an example must be in graftsearch.__all__ (or be a public package)
    used = _top_level_names_used(path.read_text())
    assert used <= ALLOWED, sorted(used - ALLOWED)


@pytest.mark.parametrize("block", README_BLOCKS)
def test_readme_python_uses_public_names_only(block):
    assert not _private_imports(block)
    used = _top_level_names_used(block)  # README blocks use `gs` for graftsearch
    assert used <= ALLOWED, sorted(used - ALLOWED)
