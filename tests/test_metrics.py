"""Metrics against hand-computed values; the offline evaluator and the report on a tiny split."""

from __future__ import annotations

import json
import math
import re

import numpy as np
import pandas as pd
import pytest

from recsim_personas.data.dataset import RatingScale
from recsim_personas.data.splits import Split, SplitConfig
from recsim_personas.errors import ConfigError, DataError
from recsim_personas.eval.metrics import (
    coverage,
    mae,
    ndcg_at_k,
    precision_at_k,
    recall_at_k,
    rmse,
    urr,
)
from recsim_personas.eval.offline import (
    EvalConfig,
    default_relevance_threshold,
    evaluate_baselines,
    evaluate_predictor,
    evaluate_ranker,
)
from recsim_personas.eval.report import (
    averaging_note,
    results_document,
    results_markdown,
    write_results_json,
)

# -- rating errors -----------------------------------------------------------------------------
PRED = [1.0, 2.0, 3.0, 4.0]
TRUE = [1.0, 2.0, 5.0, 3.0]
USERS = [7, 7, 8, 8]


def test_rmse_mae_per_rating_by_hand():
    # errors 0, 0, -2, 1: squared 0, 0, 4, 1.
    assert rmse(PRED, TRUE) == pytest.approx(math.sqrt(5 / 4))
    assert mae(PRED, TRUE) == pytest.approx(3 / 4)


def test_rmse_mae_per_user_by_hand():
    # user 7: errors 0, 0 -> rmse 0, mae 0; user 8: errors -2, 1 -> rmse sqrt(5/2), mae 1.5.
    assert rmse(PRED, TRUE, user_ids=USERS, average="user") == pytest.approx(math.sqrt(2.5) / 2)
    assert mae(PRED, TRUE, user_ids=USERS, average="user") == pytest.approx(0.75)
    # Uneven users: per-user and per-rating differ.
    assert mae([1, 1, 1, 4], [1, 1, 1, 1], user_ids=[1, 1, 1, 2], average="user") == 1.5
    assert mae([1, 1, 1, 4], [1, 1, 1, 1]) == 0.75


@pytest.mark.parametrize("metric", [rmse, mae])
def test_missing_prediction_raises(metric):
    name = metric.__name__
    with pytest.raises(DataError, match=re.escape(
            f"{name}: prediction missing at row 2 (user_id=8): got nan; 1 of 4 predictions")):
        metric([1.0, 2.0, np.nan, 4.0], TRUE, user_ids=USERS)
    with pytest.raises(DataError, match=f"{name}: prediction missing at row 0: got inf"):
        metric([np.inf], [3.0])
    with pytest.raises(DataError, match=f"{name}: 3 predictions for 4 ratings"):
        metric(PRED[:3], TRUE)
    with pytest.raises(DataError, match=f"{name}: no ratings to score"):
        metric([], [])
    with pytest.raises(ConfigError, match=f"{name}: average='user' needs user_ids"):
        metric(PRED, TRUE, average="user")
    with pytest.raises(ConfigError, match=f"{name}: average must be 'rating' or 'user'"):
        metric(PRED, TRUE, average="item")


def test_urr():
    assert urr([True, False, True, True]) == 0.25
    assert urr(np.ones(3, dtype=bool)) == 0.0
    with pytest.raises(DataError, match="urr: no responses to score"):
        urr([])
    with pytest.raises(DataError, match="urr: valid_mask must be boolean, got dtype int64"):
        urr(np.array([1, 0]))


# -- ranking -----------------------------------------------------------------------------------
REC = [1, 2, 3, 4]
REL = {2, 4, 9}


def test_ranking_metrics_by_hand():
    # k=3: hits at ranks 2 only (item 2).
    assert precision_at_k(REC, REL, 3) == pytest.approx(1 / 3)
    assert recall_at_k(REC, REL, 3) == pytest.approx(1 / 3)
    dcg = 1 / math.log2(3)
    idcg = 1 + 1 / math.log2(3) + 1 / math.log2(4)
    assert ndcg_at_k(REC, REL, 3) == pytest.approx(dcg / idcg)
    # k=4: hits at ranks 2 and 4.
    assert precision_at_k(REC, REL, 4) == 0.5
    assert recall_at_k(REC, REL, 4) == pytest.approx(2 / 3)
    assert ndcg_at_k(REC, REL, 4) == pytest.approx((1 / math.log2(3) + 1 / math.log2(5)) / idcg)
    # Perfect list; one relevant item found first.
    assert ndcg_at_k([9, 4, 2], REL, 3) == pytest.approx(1.0)
    assert ndcg_at_k([5, 6], {5}, 10) == pytest.approx(1.0)
    # A short list: precision still divides by k.
    assert precision_at_k([2], REL, 5) == pytest.approx(0.2)
    assert recall_at_k([], REL, 5) == 0.0


def test_ranking_metric_errors():
    with pytest.raises(DataError, match="recall_at_k: the user has no relevant items"):
        recall_at_k(REC, set(), 3)
    with pytest.raises(DataError, match="ndcg_at_k: the user has no relevant items"):
        ndcg_at_k(REC, [], 3)
    with pytest.raises(DataError, match="precision_at_k: the recommended list repeats an item"):
        precision_at_k([1, 1, 2], REL, 3)
    with pytest.raises(ConfigError, match="precision_at_k: k must be a positive integer, got 0"):
        precision_at_k(REC, REL, 0)


def test_coverage():
    assert coverage([[1, 2], [2, 3]], 10) == pytest.approx(0.3)
    # With catalogue ids, items outside it do not count.
    assert coverage([[1, 2], [2, 3, 99]], [1, 2, 5, 6]) == 0.5
    assert coverage([], 4) == 0.0
    with pytest.raises(DataError, match="coverage: the catalogue is empty"):
        coverage([[1]], [])


# -- offline evaluator -------------------------------------------------------------------------
def _frame(rows):
    out = pd.DataFrame(rows, columns=["user_id", "item_id", "rating", "timestamp"])
    return out.astype({"user_id": "int64", "item_id": "int64", "rating": "float64",
                       "timestamp": "int64"})


@pytest.fixture()
def tiny_split() -> Split:
    train = _frame([(1, 10, 5, 1), (1, 20, 3, 2), (2, 10, 4, 1), (2, 30, 2, 2), (3, 20, 4, 1),
                    (3, 30, 2, 2)])
    test = _frame([(1, 30, 2, 3), (2, 20, 5, 3), (2, 40, 4, 4), (3, 10, 3, 3)])
    return Split(train, test, SplitConfig(), "f" * 16, "tiny", RatingScale(1, 5, 1))


def test_relevance_threshold_defaults():
    assert default_relevance_threshold(RatingScale(1, 5, 1)) == 4.0
    assert default_relevance_threshold(RatingScale(0.5, 5, 0.5)) == 4.0
    assert default_relevance_threshold(RatingScale(1, 10, 1)) == 8.0  # 7.75 rounded up to a level
    assert default_relevance_threshold(None) == 4.0
    assert EvalConfig(relevance_threshold=3.5).threshold_for(RatingScale(1, 5, 1)) == 3.5


def test_eval_config_round_trip_and_validation():
    cfg = EvalConfig(k=5, relevance_threshold=3.0)
    assert EvalConfig.from_dict(json.loads(json.dumps(cfg.to_dict()))) == cfg
    with pytest.raises(ConfigError, match=re.escape("EvalConfig.k must be a positive integer, got 0")):
        EvalConfig(k=0)
    with pytest.raises(ConfigError, match=re.escape("unknown EvalConfig key(s) 'kk'")):
        EvalConfig.from_dict({"kk": 3})


def test_evaluate_predictor_global_mean_by_hand(tiny_split):
    from recsim_personas.baselines import make_baseline

    model = make_baseline("global-mean").fit(tiny_split.train)  # mean of 5,3,4,2,4,2 = 10/3
    out = evaluate_predictor(model, tiny_split)
    err = np.array([10 / 3 - 2, 10 / 3 - 5, 10 / 3 - 4, 10 / 3 - 3])
    assert out["rmse"] == pytest.approx(np.sqrt(np.mean(err**2)))
    assert out["mae"] == pytest.approx(np.mean(np.abs(err)))
    per_user = [abs(err[0]), np.mean(np.abs(err[1:3])), abs(err[3])]
    assert out["mae_per_user"] == pytest.approx(np.mean(per_user))
    assert out["n_predictions"] == 4 and out["fallback_count"] == 0


def test_evaluate_predictor_counts_fallbacks(tiny_split):
    from recsim_personas.baselines import make_baseline

    model = make_baseline("item-mean").fit(tiny_split.train)
    assert evaluate_predictor(model, tiny_split)["fallback_count"] == 1  # item 40 not in train


def test_evaluate_ranker_popularity_by_hand(tiny_split):
    from recsim_personas.baselines import make_baseline

    model = make_baseline("popularity").fit(tiny_split.train)  # counts: 10, 20, 30 -> 2 each
    out = evaluate_ranker(model, tiny_split, k=2)
    # Unseen train items: user 1 -> [30]; user 2 -> [20]; user 3 -> [10].
    # Relevant (>= 4): user 1 none; user 2 {20, 40}; user 3 none (rated 3).
    # So only user 2 is ranked: list [20], one hit of 2 relevant.
    assert out["ranking_users"] == 1 and out["users_without_relevant"] == 2
    assert out["precision@2"] == pytest.approx(0.5)
    assert out["recall@2"] == pytest.approx(0.5)
    assert out["ndcg@2"] == pytest.approx(1 / (1 + 1 / math.log2(3)))
    assert out["coverage@2"] == pytest.approx(1.0)  # 30, 20, 10 all shown
    assert out["relevance_threshold"] == 4.0
    lowered = evaluate_ranker(model, tiny_split, k=2, relevance_threshold=2)
    assert lowered["ranking_users"] == 3 and lowered["precision@2"] == pytest.approx(0.5)
    with pytest.raises(DataError, match=r"no test user .* has a test rating >= 6.0; lower the"):
        evaluate_ranker(model, tiny_split, relevance_threshold=6)


def test_evaluate_baselines_rows(tiny_split):
    rows = evaluate_baselines(tiny_split, ["global-mean", "bias", "popularity"],
                              config=EvalConfig(k=2), progress=False)
    by = {r["model"]: r for r in rows}
    assert [r["model"] for r in rows] == ["global-mean", "bias", "popularity"]
    assert by["global-mean"]["ndcg@2"] is None and by["global-mean"]["rmse"] is not None
    assert by["popularity"]["rmse"] is None and by["popularity"]["ndcg@2"] is not None
    assert by["bias"]["fallback_count"] == 1 and by["bias"]["kind"] == "predictor"
    assert by["bias"]["params"] == {"reg_user": 15.0, "reg_item": 10.0, "n_iter": 10}
    with pytest.raises(ConfigError, match="unknown baseline 'bais'"):
        evaluate_baselines(tiny_split, ["bais"], progress=False)
    with pytest.raises(ConfigError, match="params given for 'als', which is not among"):
        evaluate_baselines(tiny_split, ["bias"], params={"als": {}}, progress=False)


# -- report ------------------------------------------------------------------------------------
def test_markdown_table_and_note(tiny_split):
    rows = evaluate_baselines(tiny_split, ["global-mean", "popularity"], config=EvalConfig(k=2),
                              progress=False)
    text = results_markdown(rows, k=2, title="T")
    lines = text.splitlines()
    assert lines[0] == "**T**"
    assert lines[2].startswith("| Model | RMSE | MAE | RMSE/user | MAE/user | Fallbacks | P@2 |")
    gm = next(line for line in lines if line.startswith("| global-mean"))
    assert f"{rows[0]['rmse']:.4f}" in gm and gm.rstrip(" |").endswith(f"{rows[0]['fit_seconds']:.2f}")
    assert "| - |" in gm  # no ranking metrics for the global mean
    note = averaging_note(rows, 2)
    assert "average per rating" in note and "average per user over the 1 test users" in note


def test_results_document_and_json(tmp_path, monkeypatch):
    import recsim_personas.eval.report as report

    # environment_info imports torch (seconds); its own tests cover it.
    env = {"versions": {"numpy": np.__version__}, "hardware": {"cpu_count": 2}}
    monkeypatch.setattr(report, "environment_info", lambda: env)
    rows = [{"model": "bias", "rmse": 1.0}]
    doc = results_document({"dataset": "tiny"}, rows, extra_key=1)
    assert set(doc) == {"config", "git", "versions", "hardware", "results", "extra_key"}
    assert doc["versions"] == env["versions"] and doc["hardware"] == env["hardware"]
    assert doc["config"] == {"dataset": "tiny"} and doc["extra_key"] == 1
    path = write_results_json(tmp_path / "out" / "r.json", doc)
    assert json.loads(path.read_text())["results"] == rows
