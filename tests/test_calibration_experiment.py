"""Calibration wired into the experiment and the fidelity report (issue 12 item 5), on a tiny model.

The validation slice (the newest 10% of each user's train rows) never reaches a training row set,
the temperature is fitted on it and never on test rows, calibration off leaves everything as it
was, the report has a raw and a calibrated row per agent, and a resumed run gives the same report.
"""

from __future__ import annotations

import json
import shutil

import numpy as np
import pandas as pd
import pytest
import torch

from recsim_personas.errors import AdapterError, ConfigError
from recsim_personas.training.experiment_config import ExperimentConfig

pytestmark = [pytest.mark.integration, pytest.mark.usefixtures("one_torch_thread")]

_TRAIN = {"r": 4, "alpha": 8.0, "max_steps": 1, "checkpoint_every": 0, "batch_size": 2}


def _config(**kw) -> ExperimentConfig:
    base = {"memory_modes": ("ms",), "adapters": ("persona",), "train_overrides": _TRAIN,
            "max_users": 4, "train_rows_per_user": 3, "test_rows_per_user": 3}
    return ExperimentConfig(**{**base, **kw})


def _pairs(frame: pd.DataFrame) -> set[tuple[int, int]]:
    return set(zip(frame["user_id"].astype(int), frame["item_id"].astype(int), strict=True))


@pytest.fixture(scope="module")
def lm(smollm2_tokenizer):
    """The tiny random llama, embeddings scaled up so its rating distributions are not uniform."""
    from tests.conftest import build_tiny_llama

    model = build_tiny_llama(smollm2_tokenizer)
    with torch.no_grad():
        model.get_input_embeddings().weight.mul_(20.0)
    return model, smollm2_tokenizer


@pytest.fixture(scope="module")
def calibrated_run(small_run_dir, lm, tmp_path_factory):
    """The small run folder trained and evaluated with calibration on; the rows each adapter trained on."""
    from recsim_personas.data.registry import load_dataset
    from recsim_personas.training import lora
    from recsim_personas.training.experiment import run_experiment

    run = tmp_path_factory.mktemp("cal") / "run"
    shutil.copytree(small_run_dir, run)
    dataset = load_dataset("ml-latest-small")
    seen: dict[str, pd.DataFrame] = {}
    original = lora.train_adapter
    mp = pytest.MonkeyPatch()

    def spy(model, tokenizer, rows, config, out, *, name, **kw):
        seen[name] = rows.copy()
        return original(model, tokenizer, rows, config, out, name=name, **kw)

    mp.setattr(lora, "train_adapter", spy)
    try:
        result = run_experiment(run, dataset, _config(), model=lm[0], tokenizer=lm[1], progress=False)
    finally:
        mp.undo()
    return run, dataset, result, seen


def test_validation_rows_are_absent_from_every_training_row_set(calibrated_run):
    from recsim_personas.data.splits import Split
    from recsim_personas.training.run_inputs import (
        persona_map,
        train_interactions,
        users_of,
        validation_interactions,
    )

    run, _, _, seen = calibrated_run
    config = _config()
    split = Split.load(run / "split")
    users = users_of(split, persona_map(run), config)
    held_out = validation_interactions(split, config, users, capped=False)
    assert len(held_out) >= len(users)  # at least one row of each user
    assert set(seen) == {"persona_0__ms", "persona_1__ms"}
    for name, rows in seen.items():
        assert rows.size and not _pairs(rows) & _pairs(held_out), name
    assert not _pairs(train_interactions(split, config, users)) & _pairs(held_out)
    # every validation row is newer than each of its user's training rows
    newest_train = split.train[~split.train.set_index(["user_id", "item_id"]).index.isin(
        held_out.set_index(["user_id", "item_id"]).index)].groupby("user_id").timestamp.max()
    assert (held_out.groupby("user_id").timestamp.min() >= newest_train.loc[users]).all()
    holdout = json.loads((run / "calibration" / "holdout.json").read_text())
    assert set(holdout["adapters"]) == set(seen)


def test_each_row_has_a_temperature_and_calibrated_predictions_beside_the_raw_ones(calibrated_run):
    from recsim_personas.eval.calibration import TemperatureCalibrator, calibrate_predictions
    from recsim_personas.eval.fidelity import level_columns

    run, dataset, result, _ = calibrated_run
    assert result.table["No."].tolist() == [3, 9]
    assert {"T", "RMSE (calibrated)"} <= set(result.table.columns)
    for stem in ("row03_base__ms", "row09_persona__ms"):
        doc = json.loads((run / "results" / f"{stem}.json").read_text())
        cal = doc["calibration"]
        assert cal["fitted_on"] == "validation" and cal["n_rows"] > 0 and cal["nll_after"] <= cal["nll_before"]
        saved = json.loads((run / "calibration" / f"{stem}.json").read_text())
        assert saved["temperature"] == cal["temperature"]
        raw = pd.read_parquet(run / "results" / f"{stem}.parquet")
        calibrated = pd.read_parquet(run / "results" / f"{stem}.calibrated.parquet")
        cols = level_columns(raw, dataset.scale)
        expected = calibrate_predictions(raw, dataset.scale, TemperatureCalibrator(cal["temperature"]), cols)
        np.testing.assert_allclose(calibrated[cols].to_numpy(), expected[cols].to_numpy())
        assert "temperature" not in raw.columns  # the raw file stays raw
        # the validation predictions the temperature was fitted on are not test rows
        val = pd.read_parquet(run / "calibration" / f"{stem}.parquet")
        assert len(val) == cal["n_rows"] and not _pairs(val) & _pairs(raw)


def test_temperature_depends_on_validation_labels_only(calibrated_run, lm, tmp_path, monkeypatch):
    from recsim_personas.training import evaluation
    from recsim_personas.training.evaluation import evaluate_rows

    src, dataset, _, _ = calibrated_run
    config = _config(base_rows=False)

    scale = dataset.scale

    def temperature(run, *, flip_test: bool = False, flip_validation: bool = False) -> float:
        def flipped(fn, on):
            def inner(*a, **kw):
                rows = fn(*a, **kw)
                if not on or not kw.get("capped", True):  # the slice training left out stays as it is
                    return rows
                return rows.assign(rating=scale.min + scale.max - rows["rating"])  # the scale mirrored
            return inner

        with monkeypatch.context() as mp:
            mp.setattr(evaluation, "test_interactions", flipped(evaluation.test_interactions, flip_test))
            mp.setattr(evaluation, "validation_interactions",
                       flipped(evaluation.validation_interactions, flip_validation))
            out = evaluate_rows(run, dataset, config, model=lm[0], tokenizer=lm[1], progress=False,
                                results_dir="again")
        (run / "calibration" / "row09_persona__ms.json").unlink(missing_ok=True)  # fit afresh next time
        return out[9]["calibration"]["temperature"]

    run = tmp_path / "run"
    shutil.copytree(src, run)
    (run / "calibration" / "row09_persona__ms.json").unlink()
    base = temperature(run)
    assert base == pytest.approx(json.loads((src / "results" / "row09_persona__ms.json").read_text())
                                 ["calibration"]["temperature"])
    assert temperature(run, flip_test=True) == base  # test labels never reach the fit
    assert temperature(run, flip_validation=True) != pytest.approx(base, rel=1e-3)


def test_report_has_a_raw_and_a_calibrated_row_per_agent_and_resumes_the_same(calibrated_run, lm, capsys):
    from recsim_personas.cli.fidelity import print_fidelity
    from recsim_personas.reproduce.fidelity_report import fidelity_report
    from recsim_personas.training.experiment import run_experiment

    run, dataset, _, _ = calibrated_run
    report = fidelity_report(run, dataset, n_boot=200, write=False)
    names = [r["name"] for r in report.rows]
    t3 = json.loads((run / "results" / "row03_base__ms.json").read_text())["calibration"]["temperature"]
    t9 = json.loads((run / "results" / "row09_persona__ms.json").read_text())["calibration"]["temperature"]
    assert names[:4] == ["row 3: prompted base, M_s", f"row 3: prompted base, M_s (T={t3:.2f})",
                         "row 9: theta_persona, M_s", f"row 9: theta_persona, M_s (T={t9:.2f})"]
    raw, cal = report.rows[2], report.rows[3]
    assert raw["temperature"] is None and cal["temperature"] == t9
    assert set(raw["metrics"]) == set(cal["metrics"]) and cal["metrics"]["n"] == raw["metrics"]["n"]
    assert cal["paired"]["rmse_diff_ci"] is not None and cal["per_persona"].keys() == raw["per_persona"].keys()
    if abs(t9 - 1.0) > 1e-6:
        assert cal["metrics"]["nll"] != raw["metrics"]["nll"]
    assert "Calibrated (T=" in report.verdict and "never on test rows" in report.verdict
    print_fidelity(report)
    assert f"(T={t9:.2f})" in capsys.readouterr().out
    before = report.rows

    # A resumed run trains and fits nothing again: the same temperatures, the same report.
    stamp = (run / "calibration" / "row09_persona__ms.json").stat().st_mtime_ns
    again = run_experiment(run, dataset, _config(), model=lm[0], tokenizer=lm[1], progress=False)
    assert all(t.cached for t in again.train.values())
    assert (run / "calibration" / "row09_persona__ms.json").stat().st_mtime_ns == stamp
    assert fidelity_report(run, dataset, n_boot=200, write=False).rows == before


def test_calibration_off_leaves_the_raw_rows_as_before(calibrated_run, lm, tmp_path):
    from recsim_personas.data.splits import Split
    from recsim_personas.reproduce.fidelity_report import fidelity_report
    from recsim_personas.training.evaluation import evaluate_rows
    from recsim_personas.training.run_inputs import persona_map, train_interactions, users_of
    from recsim_personas.training.sampling import cap_per_user

    src, dataset, _, _ = calibrated_run
    run = tmp_path / "run"
    shutil.copytree(src, run)
    off = _config(calibrate=False, adapters=(), base_rows=True)
    split = Split.load(run / "split")
    users = users_of(split, persona_map(run), off)
    old = cap_per_user(split.train[split.train["user_id"].isin(users)], 3, seed=0).reset_index(drop=True)
    pd.testing.assert_frame_equal(train_interactions(split, off, users), old)  # the rows of before
    # The prompted base row (no adapter) scored with calibration off: the same raw predictions.
    out = evaluate_rows(run, dataset, off, model=lm[0], tokenizer=lm[1], progress=False)
    assert "calibration" not in out[3]
    assert not (run / "results" / "row03_base__ms.calibrated.parquet").exists()
    raw_on = pd.read_parquet(src / "results" / "row03_base__ms.parquet")
    raw_off = pd.read_parquet(run / "results" / "row03_base__ms.parquet")
    pd.testing.assert_frame_equal(raw_on, raw_off, check_exact=False)
    (run / "results" / "row09_persona__ms.json").unlink()
    (run / "results" / "row09_persona__ms.parquet").unlink()
    rows = fidelity_report(run, dataset, n_boot=100, write=False).rows
    assert rows[0]["name"] == "row 3: prompted base, M_s" and all(
        r.get("temperature") is None for r in rows)
    assert rows[1]["name"].startswith("user+item bias")


def test_an_adapter_trained_on_the_slice_is_refused(calibrated_run, lm, tmp_path):
    from recsim_personas.training.evaluation import evaluate_rows

    src, dataset, _, _ = calibrated_run
    run = tmp_path / "run"
    shutil.copytree(src, run)
    (run / "calibration" / "holdout.json").unlink()  # as after training with calibrate off
    with pytest.raises(AdapterError, match=r"not trained with this validation slice held out"):
        evaluate_rows(run, dataset, _config(), model=lm[0], tokenizer=lm[1], progress=False)


def test_calibrate_rows_fits_only_the_rows_asked_for(calibrated_run, lm, tmp_path):
    from recsim_personas.training.evaluation import evaluate_rows

    src, dataset, _, _ = calibrated_run
    run = tmp_path / "run"
    shutil.copytree(src, run)
    out = evaluate_rows(run, dataset, _config(calibrate_rows=(9,)), model=lm[0], tokenizer=lm[1], progress=False)
    assert "calibration" not in out[3] and not (run / "results" / "row03_base__ms.calibrated.parquet").exists()
    assert out[9]["calibration"] == json.loads((src / "results" / "row09_persona__ms.json").read_text())["calibration"]


def test_config_options_and_errors():
    cfg = _config(validation_fraction=0.2, validation_rows=5)
    assert ExperimentConfig.from_dict(json.loads(json.dumps(cfg.to_dict()))) == cfg
    assert ExperimentConfig().calibrate is True and ExperimentConfig().validation_fraction == 0.1
    with pytest.raises(ConfigError, match=r"validation_fraction must be a number in \(0, 1\)"):
        _config(validation_fraction=1.0)
    with pytest.raises(ConfigError, match="validation_rows must be an int >= 1"):
        _config(validation_rows=0)
    from recsim_personas.reproduce.loading import load_reproduce_config
    from recsim_personas.reproduce.stages import adapter_inputs, experiment_config

    exp = experiment_config(load_reproduce_config("demo", overrides=["evaluation.validation_rows=7"]))
    assert exp.calibrate and exp.validation_rows == 7
    assert exp.calibrate_rows == (9,)  # the demo's fidelity report shows row 9 only: only it is fitted
    assert exp.calibrated(9) and not exp.calibrated(3) and ExperimentConfig().calibrated(3)
    with pytest.raises(ConfigError, match=r"calibrate_rows: \[2\] are not Table-1 rows"):
        _config(calibrate_rows=(2,))
    assert "validation_fraction" in adapter_inputs(exp)
    assert "validation_fraction" not in adapter_inputs(ExperimentConfig(calibrate=False))
