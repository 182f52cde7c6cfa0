"""Package attributes imported on first use (PEP 562), so that importing a package stays cheap.

Has no package-level imports of its own: `forgerytalker/__init__.py` uses it before anything else is loaded.
"""

from __future__ import annotations

import importlib
from collections.abc import Callable, MutableMapping


def lazy_attributes(package: str, names: dict[str, str], namespace: MutableMapping) -> tuple[Callable, Callable]:
    """`(__getattr__, __dir__)` for `package`.

    Args:
        package: the package's `__name__`.
        names: public name -> the submodule (relative to `package`) that defines it.
        namespace: the package's `globals()`; a name is stored there once loaded, so it loads once.
    """

    def __getattr__(name: str):
        module = names.get(name)
        if module is None:
            raise AttributeError(f"module {package!r} has no attribute {name!r}")
        value = getattr(importlib.import_module(f".{module}", package), name)
        namespace[name] = value
        return value

    def __dir__() -> list[str]:
        return sorted({*namespace, *names})

    return __getattr__, __dir__
