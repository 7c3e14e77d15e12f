"""Table 1 of the paper, in its row layout, next to this run's numbers and the classic baselines.

Rows the chosen models cannot fill (the LLaMA-3 prompted rows when no such LLM is configured) are kept
and marked, never dropped. Errors average per rating over the test rows evaluated.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pandas as pd

from recsim_personas.artifacts import atomic_write_json, atomic_write_text
from recsim_personas.training.experiment import TABLE1_ROWS

__all__ = ["PAPER_TABLE1", "ROW_KEYS", "Table1Row", "markdown_table", "render_table1", "write_table1"]


@dataclass(frozen=True)
class Table1Row:
    """One row of the paper's Table 1 and its published numbers (URR as a fraction)."""

    no: int
    base: str
    adapter: str
    memories: str
    rmse: float
    mae: float
    urr: float


#: Thakur et al. (2025), Table 1 (ML-1M, 200 users, temporal 60:40, 7,496 test rows).
PAPER_TABLE1: tuple[Table1Row, ...] = (
    Table1Row(0, "LLaMA-3", "-", "M_s", 1.158, 0.847, 0.0),
    Table1Row(1, "LLaMA-3", "-", "M_s + M_l", 1.221, 0.883, 0.0),
    Table1Row(2, "LLaMA-3", "-", "M_l", 1.229, 0.888, 0.0),
    Table1Row(3, "Phi-3-Mini", "-", "M_s", 1.203, 0.863, 0.0423),
    Table1Row(4, "Phi-3-Mini", "-", "M_s + M_l", 1.315, 0.952, 0.0293),
    Table1Row(5, "Phi-3-Mini", "single (max)", "M_s", 1.312, 0.940, 0.0130),
    Table1Row(6, "Phi-3-Mini", "single (min)", "M_s", 1.180, 0.848, 0.0193),
    Table1Row(7, "Phi-3-Mini", "single (max)", "M_s + M_l", 1.150, 0.834, 0.0115),
    Table1Row(8, "Phi-3-Mini", "single (min)", "M_s + M_l", 1.337, 1.042, 0.0301),
    Table1Row(9, "Phi-3-Mini", "persona", "M_s", 1.292, 0.937, 0.0229),
    Table1Row(10, "Phi-3-Mini", "persona", "M_s + M_l", 1.171, 0.881, 0.0177),
)

#: (adapter, memory mode) of each SLM row, as the experiment runner names them.
ROW_KEYS: dict[int, tuple[str, str]] = TABLE1_ROWS


def _fmt(value: Any, pct: bool = False) -> str:
    if value is None or (isinstance(value, float) and math.isnan(value)):
        return "-"
    return f"{100 * value:.2f}%" if pct else f"{value:.3f}"


def render_table1(
    results: dict[int, dict[str, Any]],
    baselines: Sequence[dict[str, Any]],
    *,
    model_name: str,
    llm_rows_note: str = "not run: needs a prompted 8B LLM (set model.name to one on a GPU)",
) -> pd.DataFrame:
    """The paper's rows 0-10 with this run's RMSE / MAE / URR beside the paper's, then baselines.

    Args:
        results: Row number -> metrics (``rmse``, ``mae``, ``urr``, ``n_test``, ``train_rows``,
            ``train_seconds``) for the rows this run filled.
        baselines: Classic predictors on the same split: dicts with ``model``, ``rmse``, ``mae``.
        model_name: Name of the small LM used in place of Phi-3-Mini.
    """
    records = []
    for row in PAPER_TABLE1:
        got = results.get(row.no)
        base = row.base if row.no <= 2 else model_name
        records.append(
            {
                "No.": row.no,
                "Base": base,
                "Adapter": row.adapter,
                "Memories": row.memories,
                "RMSE": _fmt(got.get("rmse")) if got else "-",
                "MAE": _fmt(got.get("mae")) if got else "-",
                "URR": _fmt(got.get("urr"), pct=True) if got else "-",
                "Test rows": str(got.get("n_test", "-")) if got else "-",
                "Train rows": str(got.get("train_rows", "-")) if got and got.get("train_rows") else "-",
                "Train s": f"{got['train_seconds']:.0f}" if got and got.get("train_seconds") else "-",
                "Paper RMSE": f"{row.rmse:.3f}",
                "Paper MAE": f"{row.mae:.3f}",
                "Paper URR": f"{100 * row.urr:.2f}%",
                "Note": "" if got else (llm_rows_note if row.no <= 2 else "not run in this preset"),
            }
        )
    for b in baselines:
        records.append(
            {
                "No.": "-",
                "Base": "classic",
                "Adapter": b["model"],
                "Memories": "-",
                "RMSE": _fmt(b.get("rmse")),
                "MAE": _fmt(b.get("mae")),
                "URR": "0.00%",
                "Test rows": str(b.get("n_test", "-")),
                "Train rows": str(b.get("train_rows", "-")),
                "Train s": f"{b['train_seconds']:.1f}" if b.get("train_seconds") else "-",
                "Paper RMSE": "-",
                "Paper MAE": "-",
                "Paper URR": "-",
                "Note": "same split, same test rows",
            }
        )
    return pd.DataFrame.from_records(records)


def markdown_table(table: pd.DataFrame) -> str:
    """A GitHub-flavoured markdown table (no extra dependency)."""
    cols = [str(c) for c in table.columns]
    lines = ["| " + " | ".join(cols) + " |", "|" + "|".join("---" for _ in cols) + "|"]
    for row in table.itertuples(index=False):
        lines.append("| " + " | ".join(str(v).replace("|", "/") for v in row) + " |")
    return "\n".join(lines)


def write_table1(table: pd.DataFrame, out_dir: str | Path, meta: dict[str, Any]) -> list[Path]:
    """Write ``table1.md``, ``table1.csv`` and ``table1.json`` (with ``meta``) into ``out_dir``."""
    out = Path(out_dir)
    md = out / "table1.md"
    csv = out / "table1.csv"
    js = out / "table1.json"
    header = (
        "Errors average per rating over the evaluated test rows. Paper columns: Thakur et al. (2025), "
        "Table 1 (Phi-3-Mini / LLaMA-3 on ML-1M).\n\n"
    )
    atomic_write_text(md, header + markdown_table(table) + "\n")
    atomic_write_text(csv, table.to_csv(index=False))
    atomic_write_json(js, {**meta, "rows": table.to_dict(orient="records")})
    return [md, csv, js]
