"""Temperature calibration of every evaluated Table-1 row, fitted on the validation slice.

With :attr:`ExperimentConfig.calibrate <recsim_personas.training.experiment_config.ExperimentConfig.calibrate>`
(the default) the newest ``validation_fraction`` of each evaluated user's train rows
(:func:`recsim_personas.data.validation.validation_slice`) is removed from every adapter's training
rows (:func:`~recsim_personas.training.run_inputs.train_interactions`). After training, each
evaluated agent (one Table-1 row: a persona row scores each user with the user's persona adapter,
so its one temperature covers all of them) scores those rows, and a
:class:`~recsim_personas.eval.calibration.TemperatureCalibrator` is fitted on them: the temperature
minimising the validation NLL. It never sees a test row: the test predictions only get it
applied, into ``<results>/row<NN>_<kind>__<mode>.calibrated.parquet`` beside the raw predictions
(which stay as they were), and the row's JSON gains a ``calibration`` entry.

Files, in the run folder:

- ``calibration/row<NN>_<kind>__<mode>.json``: the fitted temperature, its validation NLL before
  and after, the number of rows, under the hash of its inputs (the agent's adapters, prompt
  settings and the validation rows; not the test rows, so re-scoring other test rows reuses it) and
  ``.parquet`` beside it: the agent's validation predictions;
- ``calibration/holdout.json``: the validation slice the adapters were trained without (its digest)
  and the run key of every adapter trained so; evaluating with calibration refuses an adapter not
  listed there (trained with the slice in its rows), instead of fitting on rows it learnt.

Known limit: the memory stage (profile M_s, memories M_l, item averages) was built from the whole
train part, validation rows included. The agent never retrieves a memory of the item it rates, but
a validation row's prompt can still carry traces of its own rating (the profile's summary, one
rating among its item's average), which test rows never have: the rows are unseen by the adapters,
not wholly by the prompts, so the fitted temperature may be a little sharper than the test rows
would ask for. Test rows stay untouched either way.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pandas as pd

from recsim_personas.artifacts import atomic_write_json, atomic_write_parquet, stable_hash
from recsim_personas.errors import AdapterError, DataError
from recsim_personas.eval.calibration import (
    TemperatureCalibrator,
    calibrate_predictions,
    level_index,
)
from recsim_personas.training.run_paths import result_name

__all__ = [
    "HOLDOUT_FILE",
    "calibrated_path",
    "calibration_path",
    "check_holdout",
    "fit_row_calibration",
    "read_calibration",
    "record_holdout",
    "validation_digest",
    "write_calibrated",
]

#: The record of the validation slice the adapters were trained without, in the run folder.
HOLDOUT_FILE = "calibration/holdout.json"


def validation_digest(validation: pd.DataFrame) -> str:
    """A content hash of validation rows (user, item, rating), stable across processes."""
    cols = ["user_id", "item_id", "rating"]
    return stable_hash(validation[cols].astype(str).sort_values(cols[:2]).to_dict("list"))


def calibration_path(run: Path, no: int, kind: str, mode: str) -> Path:
    """``<run>/calibration/row<NN>_<kind>__<mode>.json``: one evaluated agent's temperature."""
    return run / "calibration" / f"{result_name(no, kind, mode)}.json"


def calibrated_path(predictions_path: Path) -> Path:
    """``row<NN>_<kind>__<mode>.calibrated.parquet`` beside a row's raw predictions."""
    return predictions_path.with_name(predictions_path.name.split(".")[0] + ".calibrated.parquet")


def read_calibration(path: Path, inputs_hash: str) -> dict[str, Any] | None:
    """The calibration written at ``path`` under ``inputs_hash``, or ``None`` (absent, other inputs, damaged)."""
    if not path.is_file():
        return None
    try:
        doc = json.loads(path.read_text(encoding="utf-8"))
        TemperatureCalibrator(temperature=float(doc["temperature"]))
    except (OSError, json.JSONDecodeError, KeyError, TypeError, ValueError, DataError):
        return None  # damaged: fitted again
    return doc if doc.get("inputs_hash") == inputs_hash else None


def fit_row_calibration(
    agent: Any, validation: pd.DataFrame, path: Path, inputs: dict[str, Any], *, personas: dict[int, int],
    name: str, batch_size: int, seed: int, progress: bool,
) -> dict[str, Any]:
    """Score ``validation`` with ``agent``, fit its temperature; write and return the calibration record.

    Raises:
        DataError: No validation rows (every user too short to give one) or a malformed agent batch.
    """
    from recsim_personas.eval.agent_eval import evaluate_agent
    from recsim_personas.eval.fidelity import level_columns

    if validation.empty:
        raise DataError(
            "calibration: the validation slice is empty (every user has fewer than 2 train rows); "
            "set calibrate=False"
        )
    evaluation = evaluate_agent(agent, validation, personas=personas, name=f"{name} validation",
                                batch_size=batch_size, seed=seed, progress=progress)
    pred = evaluation.predictions
    scale = agent.scale
    cols = level_columns(pred, scale)
    calibrator = TemperatureCalibrator.fit(pred[cols].to_numpy(), level_index(pred["rating"].to_numpy(), scale))
    doc = {**calibrator.to_dict(), "users": int(pred["user_id"].nunique()), "fitted_on": "validation",
           "seconds": round(evaluation.seconds, 3), "inputs_hash": stable_hash(inputs), "inputs": inputs}
    atomic_write_parquet(path.with_suffix(".parquet"), pred)
    atomic_write_json(path, doc)
    return doc


def write_calibrated(predictions: pd.DataFrame, predictions_path: Path, scale: Any,
                     calibration: dict[str, Any]) -> pd.DataFrame:
    """Write the calibrated copy of a row's raw predictions beside them (:func:`calibrated_path`); return it."""
    from recsim_personas.eval.fidelity import level_columns

    calibrator = TemperatureCalibrator(temperature=float(calibration["temperature"]))
    out = calibrate_predictions(predictions, scale, calibrator, level_columns(predictions, scale))
    out["temperature"] = calibrator.temperature
    atomic_write_parquet(calibrated_path(predictions_path), out)
    return out


def _read_holdout(run: Path) -> dict[str, Any]:
    try:
        return json.loads((run / HOLDOUT_FILE).read_text(encoding="utf-8"))
    except (OSError, json.JSONDecodeError):
        return {}


def record_holdout(run: Path, digest: str, fraction: float, run_keys: dict[str, str]) -> None:
    """Record that the adapters ``run_keys`` (``{name: run key}``) were trained without slice ``digest``."""
    doc = _read_holdout(run)
    if doc.get("validation") != digest:
        doc = {"validation": digest, "fraction": fraction, "adapters": {}}
    doc["adapters"].update(run_keys)
    atomic_write_json(run / HOLDOUT_FILE, doc)


def check_holdout(run: Path, digest: str, run_keys: dict[str, str]) -> None:
    """Refuse an adapter that was not trained without validation slice ``digest`` (leak guard).

    Raises:
        AdapterError: An adapter of ``run_keys`` is not recorded in ``calibration/holdout.json`` with
            this slice and its current run key.
    """
    doc = _read_holdout(run)
    trained = doc.get("adapters", {}) if doc.get("validation") == digest else {}
    stale = sorted(n for n, key in run_keys.items() if trained.get(n) != key)
    if stale:
        raise AdapterError(
            f"adapter(s) {', '.join(stale[:3])} were not trained with this validation slice held out "
            f"(their training rows may hold the rows the temperature is fitted on); train them with "
            f"calibration on (`recsim-personas train {run}`), or evaluate with calibrate off "
            f"(--no-calibrate)"
        )
