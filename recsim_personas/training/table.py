"""The Table-1 frame: one row per evaluated Table-1 row, with its adapters' train cost.

:func:`experiment_table` joins the evaluation results (:func:`~recsim_personas.training.evaluation.evaluate_rows`)
with the train results of the adapters each row used (:func:`finished_adapters`), and collects the
per-persona points of the paper's Figure 3.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pandas as pd

from recsim_personas.adapter_names import ADAPTER_GLOB, persona_adapter_name
from recsim_personas.errors import AdapterError
from recsim_personas.training.adapter_folder import load_train_result
from recsim_personas.training.experiment_config import TABLE1_ROWS, ExperimentConfig
from recsim_personas.training.run_paths import row_adapters

__all__ = ["experiment_table", "finished_adapters"]

_MODE_LABEL = {"ms": "M_s", "msml": "M_s + M_l"}
_KIND_LABEL = {"base": "-", "single_max": "single (max)", "single_min": "single (min)", "persona": "persona"}


def experiment_table(config: ExperimentConfig, results: dict[int, dict[str, Any]], train: dict[str, Any],
                     personas: dict[int, int]) -> tuple[pd.DataFrame, list[dict[str, Any]]]:
    """The Table-1 frame and the per-persona points from evaluation results and train results.

    Args:
        config: The experiment config (which rows).
        results: ``{row: results dict}`` from :func:`evaluate_rows`.
        train: ``{"<name>__<mode>": TrainResult}`` (e.g. :func:`finished_adapters`).
        personas: ``user_id -> persona``.
    """
    records, points = [], []
    for no in config.rows():
        kind, mode = TABLE1_ROWS[no]
        res = results.get(no)
        if res is None:
            continue
        names = row_adapters(kind, mode, personas, cue=config.cue)
        trained = [train[n] for n in names if n in train]
        m = res["metrics"]
        records.append({
            "No.": no,
            "Adapter": _KIND_LABEL[kind],
            "Memories": _MODE_LABEL[mode],
            "RMSE": m["rmse"],
            "MAE": m["mae"],
            "URR": m["urr"],
            "outside_mass": m["outside_mass"],
            "RMSE (mode)": m["rmse_mode"],
            "RMSE (sample)": m["rmse_sample"],
            "test_rows": m["n"],
            "train_rows": sum(t.n_rows for t in trained) if trained else 0,
            "train_steps": sum(t.steps for t in trained) if trained else 0,
            "train_seconds": round(sum(t.wall_seconds for t in trained), 1) if trained else 0.0,
            "eval_seconds": res.get("seconds"),
        })
        cal = res.get("calibration")
        if cal is not None:  # the columns exist only when some row is calibrated
            records[-1].update({"T": cal["temperature"], "RMSE (calibrated)": cal.get("rmse"),
                                "MAE (calibrated)": cal.get("mae")})
        if kind == "persona":
            for p, pm in sorted(res.get("per_persona", {}).items(), key=lambda kv: int(kv[0])):
                t = train.get(persona_adapter_name(int(p), mode, cue=config.cue))
                points.append({"persona": int(p), "memory": mode, "train_rows": t.n_rows if t else None,
                               "rmse": pm["rmse"], "mae": pm["mae"], "n_test": pm["n"]})
    return pd.DataFrame.from_records(records), points


def finished_adapters(run_dir: str | Path) -> dict[str, Any]:
    """``{"<name>__<mode>": TrainResult}`` of every finished adapter in ``run_dir/adapters``."""
    out = {}
    for folder in sorted((Path(run_dir) / "adapters").glob(ADAPTER_GLOB)):
        try:
            out[folder.name] = load_train_result(folder)
        except AdapterError:
            continue
    return out
