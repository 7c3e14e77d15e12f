"""The one style of package ``__init__``: names listed once, imported on first use (PEP 562).

A package ``__init__`` maps each public name to the submodule that is its home and hands the map to
:func:`lazy_exports`::

    _WHERE = {"RatingDataset": "dataset", "load_dataset": "registry"}
    __all__ = sorted(_WHERE)
    __getattr__, __dir__ = lazy_exports(__name__, _WHERE)

``import recsim_personas.data`` then costs nothing beyond the package itself; ``from
recsim_personas.data import RatingDataset`` imports ``recsim_personas.data.dataset`` (and pandas)
at that moment. An unknown name raises ``AttributeError`` with the closest public name.
"""

from __future__ import annotations

import importlib
import sys
from collections.abc import Callable, Mapping
from typing import Any

from recsim_personas.errors import did_you_mean

__all__ = ["lazy_exports"]


def lazy_exports(
    package: str, where: Mapping[str, str]
) -> tuple[Callable[[str], Any], Callable[[], list[str]]]:
    """``(__getattr__, __dir__)`` for ``package``: ``where`` maps a public name to its submodule."""

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

    return __getattr__, __dir__
