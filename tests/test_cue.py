"""The collaborative cue's numbers, and that a training row's numbers never contain its label."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

from recsim_personas.data.dataset import RatingScale
from recsim_personas.errors import DataError
from recsim_personas.memory.cue import CueStatistics

SCALE = RatingScale(0.5, 5.0, 0.5)


def _frames(seed: int = 0) -> tuple[pd.DataFrame, pd.DataFrame]:
    rng = np.random.default_rng(seed)
    pool = pd.DataFrame({
        "user_id": rng.integers(1, 30, 400), "item_id": rng.integers(1, 40, 400),
        "rating": rng.integers(1, 11, 400) / 2.0,
    }).drop_duplicates(["user_id", "item_id"]).reset_index(drop=True)
    train = pool[pool.user_id < 15]  # the evaluated users' train rows (same index as in the pool)
    return pool, train


def _brute(pool: pd.DataFrame, train: pd.DataFrame, user: int, item: int, damping: float) -> dict[str, float]:
    mu = pool.rating.mean()
    u = train[train.user_id == user].rating
    i = pool[pool.item_id == item].rating
    b_u = (u.sum() - len(u) * mu) / (len(u) + damping)
    b_i = (i.sum() - len(i) * mu) / (len(i) + damping)
    return {"user_mean": u.mean() if len(u) else np.nan, "user_count": len(u),
            "item_mean": i.mean() if len(i) else np.nan, "item_count": len(i),
            "estimate": float(np.clip(mu + b_u + b_i, 0.5, 5.0))}


@pytest.mark.parametrize("damping", [0.0, 5.0])
def test_training_row_numbers_equal_a_recomputation_without_the_row(damping: float) -> None:
    pool, train = _frames()
    stats = CueStatistics.fit(pool, train, SCALE, damping=damping)
    rows = train.sample(25, random_state=1)
    got = stats.cues(rows.user_id.to_numpy(), rows.item_id.to_numpy(), rows.rating.to_numpy())
    for k, (idx, row) in enumerate(rows.iterrows()):
        want = _brute(pool.drop(index=idx), train.drop(index=idx), row.user_id, row.item_id, damping)
        for key, value in want.items():
            assert got[key].iloc[k] == pytest.approx(value, nan_ok=True, abs=1e-12), (key, idx)


def test_label_cannot_be_read_back_from_a_training_row() -> None:
    # Two rows that differ only in their own rating get the same numbers: nothing shown depends on it.
    pool = pd.DataFrame({"user_id": [1, 1, 2, 2], "item_id": [10, 11, 10, 11], "rating": [1.0, 4.0, 3.0, 4.0]})
    high = pool.assign(rating=[5.0, 4.0, 3.0, 4.0])
    a = CueStatistics.fit(pool, pool, SCALE).cues(np.array([1]), np.array([10]), np.array([1.0]))
    b = CueStatistics.fit(high, high, SCALE).cues(np.array([1]), np.array([10]), np.array([5.0]))
    pd.testing.assert_frame_equal(a, b)
    # an item rated once shows no mean in its own training row
    single = pd.DataFrame({"user_id": [1, 2], "item_id": [10, 11], "rating": [2.0, 4.0]})
    cue = CueStatistics.fit(single, single, SCALE).cues(np.array([1]), np.array([10]), np.array([2.0]))
    assert cue.item_count.iloc[0] == 0 and np.isnan(cue.item_mean.iloc[0])


def test_test_rows_use_the_full_sums_and_unknown_ids_get_no_mean() -> None:
    pool, train = _frames()
    stats = CueStatistics.fit(pool, train, SCALE)
    got = stats.cues(np.array([3, 999]), np.array([5, 999]))
    want = _brute(pool, train, 3, 5, 5.0)
    assert got.estimate.iloc[0] == pytest.approx(want["estimate"])
    assert got.user_count.iloc[1] == 0 and np.isnan(got.user_mean.iloc[1])
    assert got.estimate.iloc[1] == pytest.approx(pool.rating.mean())


def test_bad_input() -> None:
    pool, train = _frames()
    with pytest.raises(DataError, match="cue pool lacks column"):
        CueStatistics.fit(pool.drop(columns="rating"), train, SCALE)
    stats = CueStatistics.fit(pool, train, SCALE)
    with pytest.raises(DataError, match="not among the ratings"):
        stats.cues(np.array([999]), np.array([5]), np.array([3.0]))
