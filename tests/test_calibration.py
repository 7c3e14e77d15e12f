"""Temperature calibration on a validation slice (issue 12 item 5)."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

from recsim_personas.data.dataset import RatingScale
from recsim_personas.data.validation import validation_slice
from recsim_personas.errors import ConfigError, DataError
from recsim_personas.eval.calibration import (
    TemperatureCalibrator,
    calibrate_predictions,
    level_index,
    mean_nll,
)
from tests.tolerances import fp32_sum_atol

SCALE = RatingScale(1.0, 5.0, 1.0)


def _softmax(z: np.ndarray) -> np.ndarray:
    e = np.exp(z - z.max(axis=1, keepdims=True))
    return e / e.sum(axis=1, keepdims=True)


def _data(true_t: float, n: int = 4000, seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    """Labels drawn from softmax(z); the model reports softmax(z * true_t), so T = true_t undoes it."""
    rng = np.random.default_rng(seed)
    z = rng.normal(0.0, 1.5, size=(n, 5))
    labels = np.array([rng.choice(5, p=p) for p in _softmax(z)])
    return _softmax(z * true_t), labels


@pytest.mark.parametrize("true_t", [0.4, 2.5])
def test_fit_recovers_the_temperature_that_generated_the_data(true_t: float) -> None:
    probs, labels = _data(true_t)
    cal = TemperatureCalibrator.fit(probs, labels)
    assert cal.temperature == pytest.approx(true_t, rel=0.1)
    assert cal.nll_after < cal.nll_before
    assert cal.n_rows == len(labels)


def test_calibrated_model_needs_no_change() -> None:
    probs, labels = _data(1.0)
    cal = TemperatureCalibrator.fit(probs, labels)
    assert cal.temperature == pytest.approx(1.0, abs=0.1)
    assert cal.nll_before - cal.nll_after < 1e-3


def test_apply_keeps_rows_normalised_and_level_order() -> None:
    probs, _ = _data(1.0, n=50)
    out = TemperatureCalibrator(temperature=0.5).apply(probs)
    np.testing.assert_allclose(out.sum(axis=1), 1.0, atol=fp32_sum_atol(5))
    assert (np.argsort(out, axis=1) == np.argsort(probs, axis=1)).all()
    # sharper: the top level gains mass
    assert (out.max(axis=1) >= probs.max(axis=1) - 1e-12).all()
    assert mean_nll(probs, np.zeros(50, dtype=int), 0.5) == pytest.approx(
        mean_nll(out, np.zeros(50, dtype=int), 1.0)
    )


def test_identity_and_bad_input() -> None:
    probs, _ = _data(1.0, n=3)
    np.testing.assert_allclose(TemperatureCalibrator().apply(probs), probs)
    with pytest.raises(DataError, match="temperature must be a positive"):
        TemperatureCalibrator(temperature=0.0)
    with pytest.raises(DataError, match="row 1 holds a negative"):
        TemperatureCalibrator().apply(np.array([[0.5, 0.5], [-0.1, 1.1]]))
    with pytest.raises(DataError, match="not a level of the scale"):
        level_index([1.0, 3.5], SCALE)


def test_calibrate_predictions_recomputes_expectation_and_mode() -> None:
    cols = [f"p_{SCALE.format(float(v))}" for v in SCALE.levels]
    frame = pd.DataFrame([[0.1, 0.2, 0.3, 0.25, 0.15]], columns=cols)
    frame["expectation"] = 3.15
    frame["mode"] = 3.0
    frame["sample"] = 5.0
    out = calibrate_predictions(frame, SCALE, TemperatureCalibrator(temperature=0.25), cols)
    p = out[cols].to_numpy()[0]
    assert out["expectation"].iloc[0] == pytest.approx(float(p @ SCALE.levels))
    assert out["mode"].iloc[0] == 3.0 and out["sample"].iloc[0] == 5.0
    assert p[2] > 0.3 and frame[cols].to_numpy()[0][2] == 0.3  # input untouched


def _train(sizes: dict[int, int]) -> pd.DataFrame:
    rows = [(u, 100 + k, 3.0, 1000 + k) for u, n in sizes.items() for k in range(n)]
    return pd.DataFrame(rows, columns=["user_id", "item_id", "rating", "timestamp"])


def test_validation_slice_holds_out_each_users_newest_rows() -> None:
    train = _train({1: 20, 2: 5, 3: 1}).sample(frac=1.0, random_state=0)  # any input order
    cut = validation_slice(train, 0.1)
    val = cut.validation.sort_values(["user_id", "timestamp"])
    assert val.groupby("user_id").size().to_dict() == {1: 2, 2: 1}
    assert set(val[val.user_id == 1].timestamp) == {1018, 1019}
    assert set(val[val.user_id == 2].timestamp) == {1004}
    assert cut.users_too_short == 1  # user 3 keeps its one row
    # a partition: nothing lost, nothing twice, every validation row newer than the user's fit rows
    assert len(cut.fit) + len(cut.validation) == len(train)
    assert not set(cut.fit.index) & set(cut.validation.index)
    newest_fit = cut.fit.groupby("user_id").timestamp.max()
    assert (val.groupby("user_id").timestamp.min() > newest_fit.loc[[1, 2]]).all()


def test_validation_slice_ties_break_by_item_id_and_bad_config() -> None:
    train = pd.DataFrame({"user_id": [1, 1, 1], "item_id": [9, 7, 8], "rating": [1.0, 2.0, 3.0],
                          "timestamp": [5, 5, 5]})
    assert validation_slice(train, 0.3).validation.item_id.tolist() == [9]
    with pytest.raises(ConfigError, match="fraction must be a number in"):
        validation_slice(train, 1.0)
    with pytest.raises(DataError, match="lack column"):
        validation_slice(train.drop(columns="timestamp"), 0.1)
