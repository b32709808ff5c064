"""Package namespaces that import a name's module only when the name is first used.

``graftsearch --help`` and argument errors must answer without importing torch (seconds of a
start), yet ``graftsearch.run`` and ``from graftsearch.taps import TapList`` keep working: a
package lists where each public name lives, and a module-level ``__getattr__`` (PEP 562) imports
it on first access and keeps it in the namespace.
"""

from __future__ import annotations

import importlib
import sys
from typing import Callable, Dict, List, Mapping, Sequence, Tuple


def lazy_exports(package: str, exports: Mapping[str, Sequence[str]], *,
                 subpackages: Sequence[str] = ()
                 ) -> Tuple[List[str], Callable[[str], object], Callable[[], List[str]]]:
    """``(__all__, __getattr__, __dir__)`` for ``package`` from ``{module: (name, ...)}``;
    ``subpackages`` are reachable as attributes too (``graftsearch.taps.TapList`` after only
    ``import graftsearch``), imported on first use."""
    home: Dict[str, str] = {}
    for module, names in exports.items():
        for name in names:
            if name in home:
                raise ValueError(f"{package}: '{name}' is exported from two modules")
            home[name] = module

    def __getattr__(name: str) -> object:
        module = home.get(name)
        if module is None and name in subpackages:
            return importlib.import_module(f"{package}.{name}")  # the import sets the attribute
        if module is None:
            raise AttributeError(f"module '{package}' has no attribute '{name}'")
        value = getattr(importlib.import_module(module), name)
        setattr(sys.modules[package], name, value)
        return value

    def __dir__() -> List[str]:
        return sorted(set(vars(sys.modules[package])) | set(home) | set(subpackages))

    return list(home), __getattr__, __dir__
