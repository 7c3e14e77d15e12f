"""The collaborative cue in the learning curve (``benchmarks/learning_curve.py --cue``).

With ``--cue`` every train and test prompt also states the numbers a strong classic predictor knows
(:class:`~recsim_personas.memory.cue.CueStatistics`: the user's mean rating and count over their
train rows, the item's mean and count over the rating pool, and a damped user + item bias estimate;
a training row's numbers leave the row's own rating out). The point is trained on exactly the rows
of the point without the cue and scored on exactly the same test rows, so that the difference of
the two agents on the same rows is what the numbers add (or what the language model adds beyond
them: compare with the bias baseline).

This module holds what ``--cue`` adds to the script: the check that the cue run trains on the same
rows as the run without it, and the paired comparison with the no-cue agent's predictions.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

KEYS = ["user_id", "item_id", "rating"]


def same_train_rows(no_cue_work: Path, rows: Any) -> dict[str, Any]:
    """Whether the run without the cue (its work folder ``no_cue_work``) built the same train rows,
    in the same order (then the seeded selection of every point is the same too).

    Returns:
        ``{"checked": bool, "same": bool | None, "file": str | None}``.

    Raises:
        RuntimeError: a no-cue rows file of the same length holds other rows (the comparison would
            not be paired).
    """
    import pandas as pd

    files = sorted(no_cue_work.glob("train-rows-*.parquet"))
    for path in files:
        other = pd.read_parquet(path, columns=KEYS)
        if len(other) != len(rows):
            continue
        same = bool((other[KEYS].to_numpy() == rows[KEYS].to_numpy()).all())
        if not same:
            raise RuntimeError(f"the cue run's train rows differ from the no-cue rows in {path}")
        return {"checked": True, "same": True, "file": str(path)}
    return {"checked": False, "same": None, "file": None}


def same_test_rows(no_cue_work: Path, test: Any) -> dict[str, bool]:
    """``{predictions file name: on exactly the rows of test}`` for each no-cue point's predictions
    (checked when the run starts, so that a mismatch shows before hours of training)."""
    import pandas as pd

    out = {}
    for path in sorted((no_cue_work / "points").glob("n*-predictions.parquet")):
        other = pd.read_parquet(path, columns=KEYS).sort_values(["user_id", "item_id"], kind="stable")
        mine = test[KEYS].sort_values(["user_id", "item_id"], kind="stable")
        out[path.name] = len(other) == len(mine) and bool((other.to_numpy() == mine.to_numpy()).all())
    return out


def no_cue_comparison(frame: Any, no_cue_work: Path, label: str, seed: int) -> dict[str, Any] | None:
    """Paired bootstrap of (cue agent - no-cue agent) on the same test rows, when the no-cue point's
    predictions (``<no_cue_work>/points/n<label>-predictions.parquet``) exist; else ``None``. When
    they are on other test rows: ``{"error": ...}`` (the cue point's own results are kept)."""
    import pandas as pd

    from recsim_personas.eval.fidelity import paired_difference

    path = no_cue_work / "points" / f"n{label}-predictions.parquet"
    if not path.is_file():
        return None
    other = pd.read_parquet(path, columns=[*KEYS, "expectation"]).rename(columns={"expectation": "no_cue"})
    merged = frame.merge(other, on=["user_id", "item_id"], how="inner", suffixes=("", "_no_cue"),
                         validate="one_to_one")
    if len(merged) != len(frame) or len(other) != len(frame) or not (
            merged["rating"].to_numpy() == merged["rating_no_cue"].to_numpy()).all():
        return {"error": f"the no-cue predictions {path} are not on the same test rows "
                         f"({len(other)} rows, {len(merged)} in common with {len(frame)})"}
    out = paired_difference(merged, "expectation", "no_cue", n_boot=2000, seed=seed)
    import numpy as np

    diff = merged["expectation"].to_numpy() - merged["no_cue"].to_numpy()
    out.update(source=str(path), mean_abs_prediction_change=float(np.abs(diff).mean()),
               corr_with_no_cue=float(np.corrcoef(merged["expectation"], merged["no_cue"])[0, 1]))
    return out


def table_lines(finished: list[dict[str, Any]]) -> list[str]:
    """Report lines: each finished point's cue agent minus the no-cue agent (when compared)."""
    lines = []
    for p in finished:
        d = p["paired"].get("no-cue")
        if d is None or "error" in d:
            why = d["error"] if d else "no no-cue predictions in the run folder"
            lines.append(f"{p['adapter']['n_rows']:>8,} cue - no-cue: {why}")
            continue
        lines.append(f"{p['adapter']['n_rows']:>8,} cue - no-cue: RMSE {d['rmse_diff']:+.4f} "
                     f"[{d['rmse_diff_ci'][0]:+.4f}, {d['rmse_diff_ci'][1]:+.4f}], Spearman "
                     f"{d['spearman_diff']:+.3f} [{d['spearman_diff_ci'][0]:+.3f}, {d['spearman_diff_ci'][1]:+.3f}]")
    return lines
