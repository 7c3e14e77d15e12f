"""Persona plots as PNG files: the elbow curve, persona sizes, each persona's distinctive words.

Drawn on matplotlib's Agg canvas without pyplot, so no global backend is switched.
"""

from __future__ import annotations

import math
from pathlib import Path
from typing import Any, Protocol

from recsim_personas.artifacts import atomic_path

__all__ = ["PlottableClusters", "plot_personas"]


class PlottableClusters(Protocol):
    """What the plots read of a :class:`~recsim_personas.memory.personas.PersonaClusters`."""

    k: int
    elbow: int | None
    ks: Any  # candidate K values of the elbow curve
    inertias: Any  # KMeans inertia per K
    sizes: Any  # users per persona
    user_ids: Any
    descriptions: Any  # one PersonaDescription per persona


def plot_personas(clusters: PlottableClusters, out_dir: str | Path, *,
                  relative_to: str | Path | None = None) -> list[str]:
    """Draw ``elbow.png``, ``persona_sizes.png`` and ``persona_words.png`` into ``out_dir``.

    Returns:
        The written paths (relative to ``relative_to`` when given).
    """
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    out_dir = Path(out_dir)
    written = []
    for name, draw in (("elbow.png", _elbow), ("persona_sizes.png", _sizes), ("persona_words.png", _words)):
        fig = draw(Figure, clusters)
        FigureCanvasAgg(fig)
        path = out_dir / name
        with atomic_path(path) as tmp:
            fig.savefig(tmp, format="png", dpi=110, bbox_inches="tight")
        written.append(str(path.relative_to(relative_to)) if relative_to else str(path))
    return written


def _elbow(figure: Any, clusters: PlottableClusters) -> Any:
    fig = figure(figsize=(5.5, 3.6))
    ax = fig.add_subplot()
    ax.plot(clusters.ks, clusters.inertias, marker="o", color="#33658a")
    ax.axvline(clusters.elbow, color="#999999", ls="--", lw=1, label=f"elbow K={clusters.elbow}")
    if clusters.k != clusters.elbow:
        ax.axvline(clusters.k, color="#f26419", ls=":", lw=1.5, label=f"used K={clusters.k}")
    ax.set(xlabel="K (personas)", ylabel="KMeans inertia", title="Elbow curve of profile embeddings")
    ax.set_xticks(clusters.ks)
    ax.legend()
    return fig


def _sizes(figure: Any, clusters: PlottableClusters) -> Any:
    fig = figure(figsize=(5.5, 3.2))
    ax = fig.add_subplot()
    sizes = clusters.sizes
    bars = ax.bar([f"persona {p}" for p in range(clusters.k)], sizes, color="#86bbd8")
    ax.bar_label(bars, labels=[str(s) for s in sizes])
    ax.margins(y=0.12)
    ax.set(ylabel="users", title=f"Persona sizes ({len(clusters.user_ids)} users, K={clusters.k})")
    return fig


def _words(figure: Any, clusters: PlottableClusters) -> Any:
    cols = min(clusters.k, 4)
    rows = math.ceil(clusters.k / cols)
    fig = figure(figsize=(3.6 * cols, 3.0 * rows), layout="constrained")
    for p in range(clusters.k):
        ax = fig.add_subplot(rows, cols, p + 1)
        desc = clusters.descriptions[p] if p < len(clusters.descriptions) else None
        words = desc.top_words if desc else []
        label = "distinct words (count)"
        if desc and not words and desc.over_represented:
            words, label = [(w, s) for w, s in desc.over_represented], "over-represented (score)"
        if words:
            ax.barh([w for w, _ in words][::-1], [v for _, v in words][::-1], color="#2f4858")
        else:
            ax.text(0.5, 0.5, "no distinct words", ha="center", va="center", transform=ax.transAxes)
        ax.set_title(f"persona {p} (n={int(clusters.sizes[p])})", fontsize=9)
        ax.set_xlabel(label, fontsize=8)
        ax.tick_params(labelsize=7)
    fig.suptitle("Top distinctive words per persona (one-vs-all set difference)", fontsize=10)
    return fig
