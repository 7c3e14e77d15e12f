"""The one style of package ``__init__``: names listed once, imported on first use (PEP 562).

A package ``__init__`` lists, per submodule, the public names that submodule is the home of, and
hands the map to :func:`lazy_exports`::

    __getattr__, __dir__, __all__ = lazy_exports(__name__, {
        "dataset": ("RatingDataset", "RatingScale"),
        "registry": ("load_dataset",),
    })

``import recsim_personas.data`` then costs nothing beyond the package itself; ``from
recsim_personas.data import RatingDataset`` imports ``recsim_personas.data.dataset`` (and pandas)
at that moment. An unknown name raises ``AttributeError`` with the closest public name.
"""

from __future__ import annotations

import importlib
import sys
from collections.abc import Callable, Mapping, Sequence
from typing import Any

from recsim_personas.errors import did_you_mean

__all__ = ["lazy_exports"]


def lazy_exports(
    package: str, homes: Mapping[str, Sequence[str]]
) -> tuple[Callable[[str], Any], Callable[[], list[str]], list[str]]:
    """``(__getattr__, __dir__, __all__)`` for ``package``; ``homes`` maps a submodule to its names.

    Raises:
        ValueError: a name is listed under two submodules (a name has one home).
    """
    where: dict[str, str] = {}
    for module, names in homes.items():
        for name in names:
            if name in where:
                raise ValueError(f"{package}: {name!r} listed under {where[name]!r} and {module!r}")
            where[name] = module

    def __getattr__(name: str) -> Any:
        module = where.get(name)
        if module is None:
            raise AttributeError(
                f"module {package!r} has no attribute {name!r}.{did_you_mean(name, where)}"
            )
        value = getattr(importlib.import_module(f"{package}.{module}"), name)
        setattr(sys.modules[package], name, value)  # later lookups skip __getattr__
        return value

    def __dir__() -> list[str]:
        return sorted(set(vars(sys.modules[package])) | set(where))

    return __getattr__, __dir__, sorted(where)
