"""Lazy package attributes (PEP 562), shared by ``pinsage_ray`` and ``pinsage_ray.training``.

A package lists ``{public name: defining module}`` and gets the module-level ``__getattr__``
and ``__dir__`` that import the defining module on first use of a name. Importing the package
then costs nothing heavy: ``pinsage-ray --help`` and the Ray workers that need only a config
class do not load torch.
"""

from __future__ import annotations

import importlib
from collections.abc import Callable
from typing import Any


def lazy_exports(package: str, exports: dict[str, str],
                 namespace: dict[str, Any]) -> tuple[Callable[[str], Any], Callable[[], list[str]]]:
    """``(__getattr__, __dir__)`` for ``package``: a name in ``exports`` is imported from its
    module on first access and cached in ``namespace`` (the package's ``globals()``)."""

    def __getattr__(name: str) -> Any:
        module = exports.get(name)
        if module is None:
            raise AttributeError(f"module {package!r} has no attribute {name!r}")
        value = getattr(importlib.import_module(module), name)
        namespace[name] = value  # later lookups skip this function
        return value

    def __dir__() -> list[str]:
        return sorted({*namespace, *exports})

    return __getattr__, __dir__
