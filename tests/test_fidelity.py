"""Fidelity metrics, the paired bootstrap against bias, and the run-folder report and command."""

from __future__ import annotations

import json
import re

import numpy as np
import pandas as pd
import pytest

from recsim_personas.data.dataset import RatingScale
from recsim_personas.errors import DataError
from recsim_personas.eval.fidelity import (
    calibration_bins,
    fidelity_metrics,
    paired_difference,
    point_distribution,
)

SCALE = RatingScale(1, 5, 1)


def _frame(pred: np.ndarray, true: np.ndarray, users: np.ndarray, sharp: float = 8.0) -> pd.DataFrame:
    """Predictions with a softmax distribution around ``pred`` (as the Table-1 evaluation writes them)."""
    levels = SCALE.levels
    logits = -sharp * (levels[None, :] - pred[:, None]) ** 2
    dist = np.exp(logits - logits.max(axis=1, keepdims=True))
    dist /= dist.sum(axis=1, keepdims=True)
    frame = pd.DataFrame({"user_id": users, "item_id": np.arange(len(users)), "rating": true,
                          "expectation": dist @ levels, "mode": levels[dist.argmax(axis=1)]})
    for j, v in enumerate(levels):
        frame[f"p_{SCALE.format(v)}"] = dist[:, j]
    return frame


@pytest.fixture()
def ratings():
    rng = np.random.default_rng(0)
    users = np.repeat(np.arange(30), 12)
    true = rng.integers(1, 6, size=len(users)).astype(float)
    return users, true


def test_a_perfect_predictor_scores_perfectly(ratings):
    users, true = ratings
    m = fidelity_metrics(_frame(true, true, users, sharp=50.0), SCALE)
    assert m["rmse"] < 1e-6 and m["rmse_mode"] == 0.0
    assert m["spearman"] == pytest.approx(1.0) and m["ndcg@10"] == pytest.approx(1.0)
    assert m["auc_like"] == pytest.approx(1.0)
    assert m["hist_tv"] < 1e-6 and m["hist_w1"] < 1e-6
    assert m["users"] == 30 and m["n"] == len(true)


def test_a_constant_predictor_has_the_marginal_error_and_no_ranking(ratings):
    users, true = ratings
    m = fidelity_metrics(_frame(np.full(len(true), 3.0), true, users), SCALE)
    assert m["rmse"] == pytest.approx(np.sqrt(np.mean((m["pred_std"] * 0 + 3.0 - true) ** 2)), abs=1e-3)
    assert m["spearman"] is None  # no spread in any user's predictions
    assert m["auc_like"] == pytest.approx(0.5)
    assert m["hist_tv"] > 0.5  # everything on 3 against a flat real histogram


def test_point_predictor_and_missing_predictions(ratings):
    users, true = ratings
    frame = pd.DataFrame({"user_id": users, "rating": true, "bias": true + 0.2})
    m = fidelity_metrics(frame, SCALE, predicted="bias", distribution=point_distribution(true + 0.2, SCALE))
    assert m["rmse"] == pytest.approx(0.2) and m["rmse_mode"] == 0.0 and m["auc_like"] == 1.0
    frame.loc[3, "bias"] = np.nan
    with pytest.raises(DataError, match=re.escape("fidelity: prediction 'bias' of row 3 is missing")):
        fidelity_metrics(frame, SCALE, predicted="bias", distribution=point_distribution(true, SCALE))
    with pytest.raises(DataError, match="distribution column"):
        fidelity_metrics(frame.drop(columns="bias").assign(expectation=3.0), SCALE)


def test_paired_bootstrap_separates_a_better_predictor_and_not_an_equal_one(ratings):
    users, true = ratings
    rng = np.random.default_rng(1)
    frame = pd.DataFrame({"user_id": users, "rating": true,
                          "good": true + rng.normal(0, 0.5, len(true)),
                          "bad": true + rng.normal(0, 1.2, len(true))})
    better = paired_difference(frame, "good", "bad", n_boot=500)
    lo, hi = better["rmse_diff_ci"]
    assert lo <= better["rmse_diff"] <= hi < 0
    assert better["spearman_diff_ci"][0] > 0
    same = paired_difference(frame, "good", "good", n_boot=200)
    assert same["rmse_diff"] == 0.0 and same["rmse_diff_ci"] == [0.0, 0.0]
    assert same["users"] == 30 and same["resampled"] == "users"


def test_calibration_bins_report_the_observed_rate():
    p = np.array([0.05, 0.05, 0.95, 0.95, 0.95, 0.55])
    y = np.array([0, 0, 1, 1, 0, 1])
    bins = {round(b["low"], 1): b for b in calibration_bins(p, y)}
    assert bins[0.0]["observed"] == 0.0 and bins[0.9]["observed"] == pytest.approx(2 / 3)
    assert sum(b["count"] for b in bins.values()) == 6


@pytest.fixture(scope="module")
def run_dir(tmp_path_factory):
    """A run folder with a split and one evaluated row (synthetic predictions near the truth)."""
    from recsim_personas.data.registry import load_dataset
    from recsim_personas.data.splits import SplitConfig, make_split

    dataset = load_dataset("ml-latest-small")
    split = make_split(dataset, SplitConfig(min_interactions=30, max_interactions=60, n_users=6, seed=0))
    run = tmp_path_factory.mktemp("fid") / "run"
    split.save(run / "split")
    test = split.test
    scale = dataset.scale
    rng = np.random.default_rng(0)
    pred = np.clip(test["rating"].to_numpy() + rng.normal(0, 0.3, len(test)), scale.min, scale.max)
    levels = scale.levels
    dist = np.exp(-8 * (levels[None, :] - pred[:, None]) ** 2)
    dist /= dist.sum(axis=1, keepdims=True)
    frame = pd.DataFrame({"user_id": test["user_id"].to_numpy(), "item_id": test["item_id"].to_numpy(),
                          "rating": test["rating"].to_numpy(), "persona": test["user_id"].to_numpy() % 2,
                          "expectation": dist @ levels, "mode": levels[dist.argmax(axis=1)]})
    for j, v in enumerate(levels):
        frame[f"p_{scale.format(v)}"] = dist[:, j]
    (run / "results").mkdir()
    frame.to_parquet(run / "results" / "row09_persona__ms.parquet")
    (run / "manifest.json").write_text(json.dumps({"stages": {}, "dataset": {"name": "ml-latest-small"},
                                                   "config": {"item_stats": "dataset"}}))
    return run, dataset


def test_report_scores_agents_against_bias_on_the_same_rows(run_dir):
    from recsim_personas.reproduce.fidelity_report import fidelity_report

    run, dataset = run_dir
    report = fidelity_report(run, dataset, n_boot=300)
    names = [r["name"] for r in report.rows]
    assert names == ["row 9: theta_persona, M_s", "user+item bias (same ratings)", "user+item bias (train rows only)"]
    agent, bias = report.rows[0], report.rows[1]
    assert agent["metrics"]["n"] == bias["metrics"]["n"]  # same rows
    assert bias["fit_rows"] > report.rows[2]["fit_rows"]  # the whole dataset minus test rows vs train
    assert agent["paired"]["rmse_diff_ci"][1] < 0  # near-truth predictions beat bias
    assert set(agent["per_persona"]) == {"0", "1"}
    assert "95% paired bootstrap interval over users" in report.verdict
    assert "more accurate than bias" in report.verdict
    for name in ("fidelity.json", "fidelity.md", "fidelity_calibration.png"):
        assert (run / name).is_file()


def test_command_prints_the_report_and_refuses_an_unevaluated_run(run_dir, tmp_path, capsys):
    from recsim_personas.cli.main import main

    run, _ = run_dir
    assert main(["fidelity", str(run), "--bootstrap", "100", "--json", str(tmp_path / "f.json")]) == 0
    out = capsys.readouterr().out
    assert "Best simulated user: row 9" in out and "RMSE - bias" in out
    assert json.loads((tmp_path / "f.json").read_text())["rows"][0]["paired"]["n_boot"] == 100
    empty = tmp_path / "empty"
    (empty / "split").mkdir(parents=True)
    run_split = run / "split"
    for f in run_split.iterdir():
        (empty / "split" / f.name).write_bytes(f.read_bytes())
    (empty / "manifest.json").write_text((run / "manifest.json").read_text())
    assert main(["fidelity", str(empty)]) == 2
    err = capsys.readouterr().err
    assert "has no evaluated rows" in err and "recsim-personas evaluate" in err
