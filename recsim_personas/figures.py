"""Headless matplotlib for every figure of the library: the Agg backend, PNGs written atomically.

Plotting code calls :func:`pyplot` for the ``matplotlib.pyplot`` module (Agg, so no display is
needed) and hands the finished figure to :func:`save_png`, which writes it through
:func:`~recsim_personas.artifacts.atomic_path` (a crash never leaves half a PNG) and closes it.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

__all__ = ["pyplot", "save_png"]


def pyplot() -> Any:
    """``matplotlib.pyplot`` on the Agg backend (imported here: matplotlib loads only to plot)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    return plt


def save_png(fig: Any, path: str | Path, *, dpi: int = 120, tight: bool = False) -> Path:
    """Write ``fig`` to ``path`` as a PNG (atomically), close it and return the path.

    ``tight`` lays the figure out first (``fig.tight_layout()``), so titles and labels are not clipped.
    """
    from recsim_personas.artifacts import atomic_path

    if tight:
        fig.tight_layout()
    path = Path(path)
    with atomic_path(path) as tmp:
        fig.savefig(tmp, format="png", dpi=dpi)
    pyplot().close(fig)
    return path
