"""The paper's figures as PNGs: per-persona error against train-set size (Figure 3) and the
personas' distinctive words (Figure 2)."""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import Any

from recsim_personas.figures import pyplot, save_png

__all__ = ["plot_persona_error_vs_size", "plot_persona_words"]


def plot_persona_error_vs_size(points: Sequence[dict[str, Any]], path: str | Path) -> Path:
    """Figure 3: one point per persona adapter: ``train_rows`` against ``rmse`` and ``mae``.

    Args:
        points: dicts with ``persona``, ``train_rows``, ``rmse``, ``mae``, ``memory`` ("ms"/"msml").
        path: PNG file to write.
    """
    plt = pyplot()
    fig, axes = plt.subplots(1, 2, figsize=(9, 3.6), sharex=True)
    for metric, ax in zip(("rmse", "mae"), axes):
        for memory, marker in (("ms", "o"), ("msml", "s")):
            sel = sorted((p for p in points if p["memory"] == memory), key=lambda p: p["train_rows"])
            if not sel:
                continue
            xs = [p["train_rows"] for p in sel]
            ys = [p[metric] for p in sel]
            label = "M_s" if memory == "ms" else "M_s + M_l"
            ax.plot(xs, ys, marker=marker, label=label)
            for p, x, y in zip(sel, xs, ys):
                ax.annotate(f"P{p['persona']}", (x, y), textcoords="offset points", xytext=(4, 4), fontsize=8)
        ax.margins(x=0.12, y=0.12)  # room for the persona labels at the ends
        ax.set_xlabel("train rows of the persona adapter")
        ax.set_ylabel(metric.upper())
        ax.grid(alpha=0.3)
    axes[0].legend()
    fig.suptitle("Per-persona error against train-set size (cf. paper Figure 3)")
    return save_png(fig, path, tight=True)


def plot_persona_words(personas: Sequence[dict[str, Any]], path: str | Path) -> Path:
    """Figure 2: each persona's top distinctive words (``top_words``: list of [word, count])."""
    plt = pyplot()
    n = max(1, len(personas))
    # At least ~6.5 inches wide so the title fits even with one persona.
    fig, axes = plt.subplots(1, n, figsize=(max(6.5, 3.2 * n), 3.8), squeeze=False)
    for ax, persona in zip(axes[0], personas or [{}]):
        words = list(persona.get("top_words") or [])[:10]
        labels = [w[0] if isinstance(w, (list, tuple)) else str(w) for w in words]
        counts = [w[1] if isinstance(w, (list, tuple)) and len(w) > 1 else 1 for w in words]
        if labels:
            ax.barh(range(len(labels))[::-1], counts, color="#4c72b0")
            ax.set_yticks(range(len(labels))[::-1], labels, fontsize=8)
            ax.set_xlabel("count", fontsize=8)
        else:
            ax.text(0.5, 0.5, "no distinctive words", ha="center", va="center", transform=ax.transAxes)
            ax.set_xticks([])
            ax.set_yticks([])
        ax.set_title(f"persona {persona.get('persona', '?')} (n={persona.get('size', '?')})", fontsize=9)
    fig.suptitle("Top-10 distinctive words per persona (cf. paper Figure 2)", fontsize=10)
    return save_png(fig, path, tight=True)
