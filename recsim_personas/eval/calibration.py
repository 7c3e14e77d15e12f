"""Temperature calibration of an agent's rating distributions, fitted on a validation slice.

A language-model user answers with a distribution ``p`` over the rating levels. Temperature
scaling (Guo et al., 2017) reshapes it to ``p_T(level) ∝ p(level) ** (1 / T)``: ``T < 1`` sharpens
(the expectation moves toward the most likely level and spreads more across items), ``T > 1``
flattens. One scalar per adapter keeps the ranking of levels within a row; it cannot add taste the
model lacks, only fix how confident it is.

The temperature is the one that minimises the negative log-likelihood of the real ratings on the
**validation slice** (the newest rows of each user's train part, held out of training:
:func:`recsim_personas.data.validation.validation_slice`), never on test rows. The fit is a bounded
one-dimensional search over ``log T`` (scipy's ``minimize_scalar``, bounds 0.05-20).
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
import pandas as pd

from recsim_personas.data.dataset import RatingScale
from recsim_personas.errors import DataError

__all__ = [
    "TEMPERATURE_BOUNDS",
    "TemperatureCalibrator",
    "calibrate_predictions",
    "level_index",
    "mean_nll",
]

#: The range of temperatures the fit searches.
TEMPERATURE_BOUNDS: tuple[float, float] = (0.05, 20.0)
# Probabilities are clipped here before taking logs: a level the model gives exactly 0 stays
# possible after calibration, and log(0) never reaches the optimiser.
_FLOOR = 1e-12


def _check_probs(probs: np.ndarray, what: str) -> np.ndarray:
    p = np.asarray(probs, dtype=np.float64)
    if p.ndim != 2 or p.shape[0] == 0 or p.shape[1] < 2:
        raise DataError(f"{what}: expected an (n_rows, n_levels) array with n_rows >= 1, n_levels >= 2, got shape {p.shape}")
    if not np.all(np.isfinite(p)) or np.any(p < 0):
        bad = int(np.flatnonzero(~np.isfinite(p).all(axis=1) | (p < 0).any(axis=1))[0])
        raise DataError(f"{what}: row {bad} holds a negative or non-finite probability")
    sums = p.sum(axis=1)
    if np.any(sums <= 0):
        raise DataError(f"{what}: row {int(np.flatnonzero(sums <= 0)[0])} has no probability mass")
    return p / sums[:, None]


def level_index(ratings: Sequence[float] | np.ndarray, scale: RatingScale) -> np.ndarray:
    """Index of each rating among ``scale.levels``; a rating off the scale's grid is a DataError."""
    levels = np.asarray(scale.levels, dtype=np.float64)
    r = np.asarray(ratings, dtype=np.float64)
    idx = np.abs(r[:, None] - levels[None, :]).argmin(axis=1)
    off = ~np.isclose(levels[idx], r)
    if off.any():
        first = int(np.flatnonzero(off)[0])
        raise DataError(
            f"rating {r[first]!r} (row {first}) is not a level of the scale {scale.min}-{scale.max} "
            f"step {scale.step}"
        )
    return idx


def _tempered_log(log_p: np.ndarray, temperature: float) -> np.ndarray:
    z = log_p / temperature
    return z - np.logaddexp.reduce(z, axis=1, keepdims=True)


def mean_nll(probs: np.ndarray, labels: np.ndarray, temperature: float = 1.0) -> float:
    """Mean negative log-likelihood (nats) of level indices ``labels`` under ``probs`` at ``temperature``."""
    p = _check_probs(probs, "probabilities")
    lab = np.asarray(labels, dtype=np.int64)
    if lab.shape != (p.shape[0],) or lab.min() < 0 or lab.max() >= p.shape[1]:
        raise DataError(f"labels: expected {p.shape[0]} level indices in [0, {p.shape[1] - 1}]")
    logp = _tempered_log(np.log(np.maximum(p, _FLOOR)), temperature)
    return float(-logp[np.arange(len(lab)), lab].mean())


@dataclass(frozen=True)
class TemperatureCalibrator:
    """One temperature for one adapter's rating distributions.

    Attributes:
        temperature: ``T`` in ``p ** (1 / T)``; 1.0 is the identity.
        n_rows: Validation rows it was fitted on (0 for the identity).
        nll_before: Mean NLL on those rows at ``T = 1``.
        nll_after: Mean NLL on those rows at the fitted ``T`` (never above ``nll_before``).
    """

    temperature: float = 1.0
    n_rows: int = 0
    nll_before: float = math.nan
    nll_after: float = math.nan

    def __post_init__(self) -> None:
        if not (isinstance(self.temperature, (int, float)) and math.isfinite(self.temperature)
                and self.temperature > 0):
            raise DataError(f"temperature must be a positive finite number, got {self.temperature!r}")

    @classmethod
    def fit(cls, probs: np.ndarray, labels: np.ndarray) -> TemperatureCalibrator:
        """The temperature minimising the mean NLL of ``labels`` (level indices) under ``probs``."""
        from scipy.optimize import minimize_scalar

        p = _check_probs(probs, "validation probabilities")
        lab = np.asarray(labels, dtype=np.int64)
        before = mean_nll(p, lab, 1.0)
        lo, hi = (math.log(b) for b in TEMPERATURE_BOUNDS)
        res = minimize_scalar(lambda lt: mean_nll(p, lab, math.exp(lt)), bounds=(lo, hi), method="bounded",
                              options={"xatol": 1e-6})
        t = float(math.exp(res.x))
        after = mean_nll(p, lab, t)
        if after > before:  # the bounded search can stop beside T = 1 on a flat objective
            t, after = 1.0, before
        return cls(temperature=t, n_rows=len(lab), nll_before=before, nll_after=after)

    def apply(self, probs: np.ndarray) -> np.ndarray:
        """``probs`` reshaped by the temperature; rows still sum to 1 and keep their level order."""
        p = _check_probs(probs, "probabilities")
        if self.temperature == 1.0:
            return p
        return np.exp(_tempered_log(np.log(np.maximum(p, _FLOOR)), self.temperature))

    def to_dict(self) -> dict[str, float]:
        return {"temperature": self.temperature, "n_rows": self.n_rows,
                "nll_before": self.nll_before, "nll_after": self.nll_after}


def calibrate_predictions(
    frame: pd.DataFrame, scale: RatingScale, calibrator: TemperatureCalibrator, columns: Sequence[str]
) -> pd.DataFrame:
    """A copy of a predictions frame with its ``columns`` (``p_<level>``, in level order) calibrated.

    ``expectation`` and ``mode`` are recomputed from the calibrated distribution; other columns
    (``sample`` included: it was drawn from the raw distribution) are kept as they are.
    """
    if len(columns) != len(scale.levels):
        raise DataError(f"expected {len(scale.levels)} level columns for the scale, got {len(columns)}")
    out = frame.copy()
    probs = calibrator.apply(out[list(columns)].to_numpy())
    levels = np.asarray(scale.levels, dtype=np.float64)
    out[list(columns)] = probs
    out["expectation"] = probs @ levels
    out["mode"] = levels[np.argmax(probs, axis=1)]
    return out
