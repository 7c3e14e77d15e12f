"""The validation slice: the newest rows of each user's train part, held out for calibration.

:func:`validation_slice` takes a train frame (rows in the canonical order of
:func:`recsim_personas.data.splits.make_split`: user, timestamp, item id) and moves the newest
``ceil(fraction * n)`` rows of each user with at least ``min_rows`` train rows to a validation
frame. A user with fewer rows keeps all of them in train (they are counted, not dropped). The slice
is newest-first because the test part of a temporal split is newer still: the validation rows sit
between what the model trains on and what it is tested on, so nothing fitted on them has seen
the future of a training row.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np
import pandas as pd

from recsim_personas.data.dataset import INTERACTION_COLUMNS
from recsim_personas.errors import ConfigError, DataError

__all__ = ["ValidationSlice", "validation_slice"]


@dataclass(frozen=True)
class ValidationSlice:
    """A train frame cut in two.

    Attributes:
        fit: The rows that stay for training, in the input order.
        validation: The held-out newest rows, in the input order.
        users_too_short: Users whose train part was too short to give up a row (kept whole in ``fit``).
    """

    fit: pd.DataFrame
    validation: pd.DataFrame
    users_too_short: int


def validation_slice(train: pd.DataFrame, fraction: float = 0.1, *, min_rows: int = 2) -> ValidationSlice:
    """Hold out the newest ``ceil(fraction * n)`` train rows of every user with ``n >= min_rows``.

    Args:
        train: Interaction rows (``user_id, item_id, rating, timestamp``).
        fraction: Share of each user's rows held out, in (0, 1). At least one row leaves per user
            that qualifies, and at least one row always stays.
        min_rows: Users with fewer train rows give none.

    Raises:
        ConfigError: ``fraction`` outside (0, 1) or ``min_rows`` < 2.
        DataError: ``train`` lacks an interaction column.
    """
    if isinstance(fraction, bool) or not isinstance(fraction, (int, float)) or not 0 < fraction < 1:
        raise ConfigError(f"validation fraction must be a number in (0, 1), got {fraction!r}")
    if isinstance(min_rows, bool) or not isinstance(min_rows, int) or min_rows < 2:
        raise ConfigError(f"validation min_rows must be an integer >= 2, got {min_rows!r}")
    missing = [c for c in INTERACTION_COLUMNS if c not in train.columns]
    if missing:
        raise DataError(f"train rows lack column(s) {', '.join(missing)} needed for the validation slice")
    if train.empty:
        return ValidationSlice(train.copy(), train.iloc[0:0].copy(), 0)
    u = train["user_id"].to_numpy(np.int64)
    t = train["timestamp"].to_numpy(np.int64)
    i = train["item_id"].to_numpy(np.int64)
    order = np.lexsort((i, t, u))  # (user, timestamp, item): ties on a timestamp break by item id
    u_sorted = u[order]
    starts = np.flatnonzero(np.r_[True, u_sorted[1:] != u_sorted[:-1]])
    sizes = np.diff(np.r_[starts, len(u_sorted)])
    n_val = np.array([min(math.ceil(fraction * n - 1e-9), n - 1) if n >= min_rows else 0 for n in sizes])
    position = np.arange(len(order)) - np.repeat(starts, sizes)
    held = position >= np.repeat(sizes - n_val, sizes)
    is_val = np.zeros(len(order), dtype=bool)
    is_val[order[held]] = True
    return ValidationSlice(
        fit=train[~is_val].copy(),
        validation=train[is_val].copy(),
        users_too_short=int(np.sum(sizes < min_rows)),
    )
