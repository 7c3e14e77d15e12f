"""Baselines: one shared suite every registered model passes, plus known-answer cases per model.

The shared suite (in the spirit of LensKit's component test mixin) is parametrised over
``baseline_names()``: registering a new baseline runs it through every contract test for free.
"""

from __future__ import annotations

import re

import numpy as np
import pandas as pd
import pytest

from recsim_personas.baselines import (
    BASELINES,
    PREDICTORS,
    BiasedMF,
    BiasPredictor,
    GlobalMean,
    ItemMean,
    PopularityRanker,
    RandomRanker,
    RatingPredictor,
    Recommender,
    UserMean,
    baseline_names,
    make_baseline,
)
from recsim_personas.baselines.bias import fit_biases
from recsim_personas.data.dataset import RatingScale
from recsim_personas.errors import ConfigError, DataError, ModelError

SCALE = RatingScale(1, 5, 1)
ALL = baseline_names()


def frame(rows: list[tuple[int, int, float]]) -> pd.DataFrame:
    out = pd.DataFrame(rows, columns=["user_id", "item_id", "rating"])
    out["timestamp"] = np.arange(len(out), dtype=np.int64)
    return out.astype({"user_id": "int64", "item_id": "int64", "rating": "float64"})


@pytest.fixture(scope="module")
def train() -> pd.DataFrame:
    """40 users x 30 items, ~40% observed, ratings from a low-rank + bias model."""
    rng = np.random.default_rng(0)
    n_u, n_i = 40, 30
    p, q = rng.normal(size=(n_u, 2)), rng.normal(size=(n_i, 2))
    bu, bi = rng.normal(0, 0.5, n_u), rng.normal(0, 0.5, n_i)
    full = np.clip(np.round(3.5 + bu[:, None] + bi[None, :] + 0.5 * p @ q.T), 1, 5)
    mask = rng.random((n_u, n_i)) < 0.4
    mask[np.arange(n_u), rng.integers(0, n_i, n_u)] = True  # every user rates something
    u, i = np.nonzero(mask)
    # Ids are not 0..n-1: they must be mapped, not used as indices.
    return frame(list(zip(u * 7 + 100, i * 3 + 5, full[u, i], strict=True)))


def build(name: str, **kw):
    spec = BASELINES[name]
    if spec.kind == "predictor":
        kw.setdefault("scale", SCALE)
    return make_baseline(name, **kw)


@pytest.fixture(scope="module")
def fitted(train):
    """One fitted instance per baseline (shared by the read-only tests)."""
    return {name: build(name).fit(train) for name in ALL}


# -- the shared suite --------------------------------------------------------------------------
@pytest.mark.parametrize("name", ALL)
class TestEveryBaseline:
    def test_protocols_and_fit_returns_self(self, name, train):
        model = build(name)
        assert model.fit(train) is model
        assert isinstance(model, Recommender)
        assert model.name == name
        assert isinstance(model, RatingPredictor) == (name in PREDICTORS)

    def test_fit_leaves_train_untouched(self, name, train):
        before = train.copy()
        build(name).fit(train)
        pd.testing.assert_frame_equal(train, before)

    def test_recommend_contract(self, name, fitted, train):
        model = fitted[name]
        user = int(train["user_id"].iloc[0])
        seen = set(train.loc[train["user_id"] == user, "item_id"])
        rec = model.recommend(user, 5)
        assert rec.dtype == np.int64 and len(rec) == 5 and len(set(rec)) == 5
        assert not seen & set(rec)
        assert set(rec) <= set(train["item_id"])
        np.testing.assert_array_equal(rec, model.recommend(user, 5))  # deterministic
        # The list is the top of the model's own scores, best first.
        scores = model.score_items(user, rec)
        assert np.all(np.diff(scores) <= 0)
        with_seen = model.recommend(user, 1000, exclude_seen=False)
        assert set(with_seen) == set(train["item_id"])  # k beyond the catalogue: all of it

    def test_recommend_respects_candidates(self, name, fitted, train):
        model = fitted[name]
        user = int(train["user_id"].iloc[0])
        cands = [5, 8, 11, 14, 99_999, 8]  # duplicate and unknown item allowed
        rec = model.recommend(user, 10, exclude_seen=False, candidates=cands)
        assert sorted(rec) == [5, 8, 11, 14, 99_999]
        assert set(model.recommend(user, 2, candidates=[5, 8, 11])) <= {5, 8, 11}

    def test_scores_are_never_nan(self, name, fitted, train):
        model = fitted[name]
        items = np.r_[np.unique(train["item_id"]), 424242]
        for user in (int(train["user_id"].iloc[0]), -5):
            scores = model.score_items(user, items)
            assert scores.shape == (len(items),) and not np.isnan(scores).any()

    def test_unknown_user_gets_a_full_list(self, name, fitted):
        rec = fitted[name].recommend(987_654, 4)
        assert len(rec) == 4 and len(set(rec)) == 4

    def test_same_seed_same_model(self, name, train):
        a, b = build(name).fit(train), build(name).fit(train)
        for user in (100, 107, 114):
            np.testing.assert_array_equal(a.recommend(user, 8), b.recommend(user, 8))
        if name in PREDICTORS:
            users, items = train["user_id"].to_numpy(), train["item_id"].to_numpy()
            np.testing.assert_array_equal(a.predict(users, items), b.predict(users, items))

    def test_not_fitted(self, name):
        with pytest.raises(ModelError, match=f"{name} is not fitted; call fit\\(train\\) first"):
            build(name).recommend(1, 3)

    def test_bad_k(self, name, fitted):
        with pytest.raises(ConfigError, match=f"{name}.recommend: k must be a positive integer"):
            fitted[name].recommend(100, 0)

    def test_bad_train(self, name, train):
        with pytest.raises(DataError, match=re.escape(f"{name}.fit: train lacks column(s) rating")):
            build(name).fit(train.drop(columns="rating"))
        with pytest.raises(DataError, match=f"{name}.fit: train is empty"):
            build(name).fit(train.iloc[:0])
        dup = pd.concat([train, train.iloc[[3]]], ignore_index=True)
        u, i = train.iloc[3][["user_id", "item_id"]].astype(int)
        with pytest.raises(DataError, match=re.escape(f"(user_id={u}, item_id={i}) occurs more")):
            build(name).fit(dup)
        nan = train.copy()
        nan.loc[2, "rating"] = np.nan
        with pytest.raises(DataError, match=f"{name}.fit: train row 2 .* has rating nan"):
            build(name).fit(nan)

    def test_predictions_on_scale_with_counted_fallbacks(self, name, fitted, train):
        if name not in PREDICTORS:
            assert not hasattr(fitted[name], "predict")
            return
        model = build(name).fit(train)
        users = np.r_[train["user_id"].to_numpy()[:5], [-1, -1, 100]]
        items = np.r_[train["item_id"].to_numpy()[:5], [5, -2, -2]]
        pred = model.predict(users, items)
        assert pred.shape == (8,) and np.isfinite(pred).all()
        assert ((pred >= 1) & (pred <= 5)).all()
        # Unknown user (2 rows) or unknown item (2 rows; one overlaps): 3 rows, except for the
        # global mean, which has no fallback, and single-sided models.
        expected = {"global-mean": 0, "user-mean": 2, "item-mean": 2}.get(name, 3)
        assert model.fallback_count == expected
        model.predict(users, items)
        assert model.fallback_count == 2 * expected  # cumulative since fit
        model.fit(train)
        assert model.fallback_count == 0  # reset by fit
        with pytest.raises(DataError, match=f"{name}.predict: 2 user ids but 3 item ids"):
            model.predict([1, 2], [1, 2, 3])


# -- registry ----------------------------------------------------------------------------------
def test_registry_names_and_errors():
    assert ALL == ("global-mean", "user-mean", "item-mean", "bias", "biased-mf", "random",
                   "popularity", "als")
    with pytest.raises(ConfigError, match=re.escape("unknown baseline 'biased_mf'; choose from "
                                                    "global-mean, user-mean")) as info:
        make_baseline("biased_mf")
    assert "Did you mean 'biased-mf'?" in str(info.value)
    with pytest.raises(ConfigError, match=re.escape("baseline 'bias' takes no parameter "
                                                    "'reg_usr' (did you mean 'reg_user'?)")):
        make_baseline("bias", reg_usr=3)
    assert repr(make_baseline("bias", reg_user=10.0)) == (
        "BiasPredictor(reg_user=10.0, reg_item=10.0, n_iter=10)")


@pytest.mark.parametrize(
    ("name", "kw", "message"),
    [
        ("bias", {"reg_user": -1}, "reg_user must be a number >= 0, got -1"),
        ("biased-mf", {"n_factors": 0}, "n_factors must be an integer >= 1, got 0"),
        ("biased-mf", {"reg": 0}, "reg must be > 0: it keeps each ALS least-squares problem"),
        ("user-mean", {"damping": "x"}, "damping must be a number >= 0, got 'x'"),
        ("als", {"factors": 2.5}, "factors must be an integer >= 1, got 2.5"),
        ("random", {"seed": -3}, "seed must be an integer >= 0, got -3"),
    ],
)
def test_parameter_validation(name, kw, message):
    with pytest.raises(ConfigError, match=re.escape(message)):
        make_baseline(name, **kw)


# -- known answers -----------------------------------------------------------------------------
SMALL = frame([(1, 10, 5), (1, 20, 3), (2, 10, 4), (2, 30, 1), (3, 20, 2)])  # mean 3.0


def test_global_mean_known_answer():
    model = GlobalMean().fit(SMALL)
    np.testing.assert_allclose(model.predict([1, 9], [30, 99]), [3.0, 3.0])
    assert model.fallback_count == 0


def test_user_and_item_mean_known_answers():
    um = UserMean().fit(SMALL)
    np.testing.assert_allclose(um.predict([1, 2, 3, 9], [10, 10, 10, 10]), [4.0, 2.5, 2.0, 3.0])
    damped = UserMean(damping=2).fit(SMALL)
    # (5 + 3 + 2 * 3) / (2 + 2) = 3.5
    np.testing.assert_allclose(damped.predict([1], [10]), [3.5])
    im = ItemMean().fit(SMALL)
    np.testing.assert_allclose(im.predict([1, 1, 1, 1], [10, 20, 30, 99]), [4.5, 2.5, 1.0, 3.0])
    assert im.fallback_count == 1


def test_bias_one_pass_by_hand():
    model = BiasPredictor(reg_user=1.0, reg_item=2.0, n_iter=1).fit(SMALL)
    mu = 3.0
    # User pass (item biases 0): b_u = sum(r - mu) / (1 + n_u).
    bu = {1: (2 + 0) / 3, 2: (1 - 2) / 3, 3: (-1) / 2}
    # Item pass: b_i = sum(r - mu - b_u) / (2 + n_i).
    bi = {
        10: ((5 - mu - bu[1]) + (4 - mu - bu[2])) / 4,
        20: ((3 - mu - bu[1]) + (2 - mu - bu[3])) / 4,
        30: (1 - mu - bu[2]) / 3,
    }
    np.testing.assert_allclose(model.user_bias([1, 2, 3, 42]), [bu[1], bu[2], bu[3], 0.0])
    np.testing.assert_allclose(model.item_bias([10, 20, 30]), [bi[10], bi[20], bi[30]])
    np.testing.assert_allclose(model.predict([2], [20]), [mu + bu[2] + bi[20]])
    # Fallbacks: unknown user -> item bias only; unknown item -> user bias only.
    np.testing.assert_allclose(model.predict([42, 1, 42], [10, 77, 77]),
                               [mu + bi[10], mu + bu[1], mu])
    assert model.fallback_count == 3


def test_bias_recovers_additive_matrix_without_regularisation():
    users, items = np.meshgrid(np.arange(6), np.arange(5), indexing="ij")
    bu, bi = np.array([-1, 0, 0.5, 1, -0.5, 0.25]), np.array([0.5, -0.5, 0, 1, -1])
    r = 3.0 + bu[users] + bi[items]
    train = frame(list(zip(users.ravel(), items.ravel(), r.ravel(), strict=True)))
    model = BiasPredictor(reg_user=0, reg_item=0, n_iter=50).fit(train)
    np.testing.assert_allclose(model.predict(users.ravel(), items.ravel()), r.ravel(), atol=1e-6)


def test_fit_biases_matches_closed_form_fixed_point():
    rng = np.random.default_rng(3)
    u, i = rng.integers(0, 8, 60), rng.integers(0, 6, 60)
    key = np.unique(u * 6 + i, return_index=True)[1]
    u, i = u[key], i[key]
    r = rng.integers(1, 6, len(u)).astype(float)
    mu, bu, bi = fit_biases(u, i, r, 8, 6, reg_user=2.0, reg_item=3.0, n_iter=500)
    # At the fixed point, each update reproduces its input.
    resid = r - mu
    np.testing.assert_allclose(
        bu, np.bincount(u, resid - bi[i], 8) / (2.0 + np.bincount(u, minlength=8)), atol=1e-9)
    np.testing.assert_allclose(
        bi, np.bincount(i, resid - bu[u], 6) / (3.0 + np.bincount(i, minlength=6)), atol=1e-9)


def test_biased_mf_fits_a_low_rank_matrix():
    rng = np.random.default_rng(1)
    p, q = rng.normal(size=(30, 2)), rng.normal(size=(25, 2))
    full = 3.0 + 0.3 * rng.normal(size=(30, 1)) + 0.3 * rng.normal(size=(1, 25)) + 0.6 * p @ q.T
    mask = rng.random(full.shape) < 0.6
    u, i = np.nonzero(mask)
    train = frame(list(zip(u, i, full[u, i], strict=True)))
    hidden_u, hidden_i = np.nonzero(~mask)
    mf = BiasedMF(n_factors=2, reg=0.001, reg_bias=0.001, n_iter=40).fit(train)
    bias = BiasPredictor().fit(train)

    def err(model):
        pred = model.predict(hidden_u, hidden_i)
        return np.sqrt(np.mean((pred - full[hidden_u, hidden_i]) ** 2))

    assert np.sqrt(np.mean((mf.predict(u, i) - full[u, i]) ** 2)) < 0.05
    assert err(mf) < 0.2 < err(bias)  # the factors explain what biases cannot


def test_biased_mf_fallbacks_use_the_biases():
    mf = BiasedMF(n_factors=3, seed=0).fit(SMALL)
    mu = mf.global_mean_
    np.testing.assert_allclose(mf.predict([42], [10]), [mu + mf.item_bias_[0]])
    np.testing.assert_allclose(mf.predict([1], [77]), [mu + mf.user_bias_[0]])
    np.testing.assert_allclose(mf.predict([42], [77]), [mu])
    other = BiasedMF(n_factors=3, seed=1).fit(SMALL)
    assert not np.allclose(other.user_factors_, mf.user_factors_)  # the seed matters


def test_predictions_are_clipped_to_the_scale():
    train = frame([(1, 1, 5), (1, 2, 5), (2, 1, 5), (2, 3, 1), (3, 3, 1), (3, 2, 5)])
    for model in (BiasPredictor(reg_user=0, reg_item=0, scale=SCALE),
                  BiasedMF(reg=1e-4, reg_bias=0, scale=SCALE)):
        model.fit(train)
        pred = model.predict([1, 2, 3], [3, 2, 1])
        assert pred.min() >= 1 and pred.max() <= 5
    # Without a scale, predictions are clipped to the train ratings' range.
    model = BiasPredictor(reg_user=0, reg_item=0).fit(train)
    assert model.predict([1], [1]).item() <= 5


def test_popularity_known_order_with_id_tie_break():
    train = frame([(1, 30, 4), (2, 30, 3), (3, 30, 5), (1, 20, 1), (2, 20, 2), (3, 10, 1),
                   (4, 40, 2), (4, 50, 3)])
    model = PopularityRanker().fit(train)
    # Counts: 30 -> 3, 20 -> 2, then 10, 40, 50 with one each (ties by ascending id).
    np.testing.assert_array_equal(model.recommend(99, 5), [30, 20, 10, 40, 50])
    np.testing.assert_array_equal(model.recommend(1, 5), [10, 40, 50])  # seen 30, 20 removed
    np.testing.assert_allclose(model.score_items(1, [30, 50, 999]), [3, 1, 0])


def test_random_ranker_depends_only_on_seed_user_and_items():
    train = frame([(u, i, 3) for u in range(1, 4) for i in range(1, 50) if (u + i) % 3])
    a = RandomRanker(seed=0).fit(train)
    s1 = a.score_items(1, [5, 6, 7])
    s2 = a.score_items(1, [7, 5, 6])
    np.testing.assert_allclose(s1, s2[[1, 2, 0]])  # order-independent per item
    assert not np.allclose(a.score_items(2, [5, 6, 7]), s1)  # per user
    b = RandomRanker(seed=1).fit(train)
    assert not np.array_equal(a.recommend(1, 10), b.recommend(1, 10))
    scores = a.score_items(1, np.arange(10_000))
    assert scores.min() >= 0 and scores.max() < 1 and abs(scores.mean() - 0.5) < 0.02


def test_als_learns_block_structure():
    # Two taste groups with disjoint items; each user hides one item of their own block.
    rows = []
    for u in range(20):
        block = range(0, 10) if u < 10 else range(10, 20)
        rows += [(u, i, 4) for i in block if i != (u % 10) + (0 if u < 10 else 10)]
    model = make_baseline("als", factors=4, iterations=10, regularization=0.01).fit(frame(rows))
    for u in (0, 3, 12, 17):
        rec = model.recommend(u, 1)
        assert rec[0] == (u % 10) + (0 if u < 10 else 10)
    # Unknown user: popularity fallback, counted.
    model.recommend(999, 3)
    assert model.fallback_count == 1
    assert model.score_items(0, [123456])[0] == -np.inf  # unknown item ranks last
