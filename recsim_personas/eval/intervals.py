"""Confidence intervals of per-episode metrics that stay inside the metric's range."""

from __future__ import annotations

import math

import numpy as np

__all__ = ["MIN_EPISODES_FOR_CI", "mean_ci"]

#: Fewest episodes (non-missing values) for which :func:`mean_ci` gives an interval.
MIN_EPISODES_FOR_CI = 5


def mean_ci(values: np.ndarray, level: float = 0.95, *, n_boot: int = 2000, seed: int = 0) -> tuple[float, float, float]:
    """``(mean, low, high)``: the mean and its percentile-bootstrap confidence interval (NaN dropped).

    The percentile bootstrap never leaves the range of the values (a like rate stays in [0, 1], a
    rating on its scale), unlike a Student-t interval on a handful of episodes. With fewer than
    :data:`MIN_EPISODES_FOR_CI` values the interval is ``(nan, nan)``: too few episodes to say.

    Example:
        >>> m, lo, hi = mean_ci(np.array([1.0, 2.0, 3.0, 4.0, 5.0]))
        >>> m, 1.0 <= lo < m < hi <= 5.0
        (3.0, True)
    """
    v = np.asarray(values, dtype=np.float64)
    v = v[~np.isnan(v)]
    if len(v) == 0:
        return math.nan, math.nan, math.nan
    mean = float(v.mean())
    if len(v) < MIN_EPISODES_FOR_CI:
        return mean, math.nan, math.nan
    rng = np.random.default_rng(seed)
    means = v[rng.integers(0, len(v), size=(n_boot, len(v)))].mean(axis=1)
    lo, hi = np.quantile(means, [0.5 - level / 2, 0.5 + level / 2])
    return mean, float(lo), float(hi)
