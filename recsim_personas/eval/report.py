"""Render evaluation results as a table (rich, or Markdown) and write the results JSON file.

Every table states how its numbers average: RMSE/MAE per rating (and per user in the ``/user``
columns), ranking metrics per user.
"""

from __future__ import annotations

import os
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

from recsim_personas.artifacts import atomic_write_json, environment_info, git_info

if TYPE_CHECKING:
    from rich.console import Console
    from rich.table import Table

__all__ = [
    "averaging_note",
    "print_results",
    "results_document",
    "results_markdown",
    "results_table",
    "write_results_json",
]

_DASH = "-"


def _columns(k: int) -> list[tuple[str, str, str]]:
    """(result key, header, number format) of each metric column."""
    return [
        ("rmse", "RMSE", ".4f"),
        ("mae", "MAE", ".4f"),
        ("rmse_per_user", "RMSE/user", ".4f"),
        ("mae_per_user", "MAE/user", ".4f"),
        ("fallback_count", "Fallbacks", "d"),
        (f"precision@{k}", f"P@{k}", ".4f"),
        (f"recall@{k}", f"R@{k}", ".4f"),
        (f"ndcg@{k}", f"NDCG@{k}", ".4f"),
        (f"coverage@{k}", f"Cov@{k}", ".3f"),
        ("fit_seconds", "Fit s", ".2f"),
    ]


def _cell(value: Any, fmt: str) -> str:
    if value is None:
        return _DASH
    try:
        return format(value, fmt)
    except (TypeError, ValueError):
        return str(value)


def averaging_note(results: Sequence[Mapping[str, Any]], k: int) -> str:
    """The sentence every table carries: what each column averages over."""
    ranked = [r for r in results if r.get(f"ndcg@{k}") is not None]
    threshold = ranked[0].get("relevance_threshold") if ranked else None
    users = ranked[0].get("ranking_users") if ranked else None
    parts = [
        "RMSE/MAE average per rating over all test ratings; RMSE/user and MAE/user average per "
        "user (each user's error, then the mean over users).",
    ]
    if ranked:
        parts.append(
            f"P/R/NDCG@{k} average per user over the {users} test users with a test rating >= "
            f"{threshold:g}; Cov@{k} = share of train items recommended to anyone."
        )
    parts.append(
        "Fallbacks: predictions (ratings models) or lists (rankers) that used the documented "
        "fallback for a user or item missing from train. '-' = not applicable: rankers predict "
        "no ratings; global and user mean score every item alike, so they rank nothing."
    )
    return " ".join(parts)


def results_table(
    results: Sequence[Mapping[str, Any]], *, k: int = 10, title: str | None = None
) -> Table:
    """A rich table of ``results`` (the ``results`` list of a results document)."""
    from rich.table import Table

    table = Table(title=title, caption=averaging_note(results, k), caption_justify="left")
    table.add_column("Model", style="bold")
    cols = _columns(k)
    for _, header, _ in cols:
        table.add_column(header, justify="right")
    for row in results:
        table.add_row(str(row.get("model")), *(_cell(row.get(key), fmt) for key, _, fmt in cols))
    return table


def results_markdown(
    results: Sequence[Mapping[str, Any]], *, k: int = 10, title: str | None = None
) -> str:
    """The same table as GitHub Markdown (for the README), with the averaging note below it."""
    cols = _columns(k)
    lines = []
    if title:
        lines += [f"**{title}**", ""]
    lines.append("| Model | " + " | ".join(h for _, h, _ in cols) + " |")
    lines.append("|---|" + "---:|" * len(cols))
    for row in results:
        cells = [_cell(row.get(key), fmt) for key, _, fmt in cols]
        lines.append(f"| {row.get('model')} | " + " | ".join(cells) + " |")
    lines += ["", averaging_note(results, k)]
    return "\n".join(lines) + "\n"


def print_results(
    results: Sequence[Mapping[str, Any]],
    *,
    k: int = 10,
    title: str | None = None,
    console: Console | None = None,
) -> None:
    """Print :func:`results_table` to ``console`` (default: stdout, at least 140 columns wide)."""
    from rich.console import Console

    if console is None:
        width = max(140, int(os.environ.get("COLUMNS", "0") or 0))
        console = Console(width=width)
    console.print(results_table(results, k=k, title=title))


def results_document(
    config: Mapping[str, Any], results: Sequence[Mapping[str, Any]], **extra: Any
) -> dict[str, Any]:
    """One JSON-able object: ``config``, ``git``, ``versions``, ``hardware``, ``results`` (+ extra)."""
    env = environment_info()
    return {
        "config": dict(config),
        "git": git_info(),
        "versions": env["versions"],
        "hardware": env["hardware"],
        "results": [dict(r) for r in results],
        **extra,
    }


def write_results_json(path: str | os.PathLike[str], document: Mapping[str, Any]) -> Path:
    """Write ``document`` atomically as indented JSON; returns the path."""
    path = Path(path)
    atomic_write_json(path, dict(document))
    return path
