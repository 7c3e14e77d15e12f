"""Per-user sampling of interactions or rows: a cap per user, a fixed fraction of every user's rows.

:func:`subsample_to_size` keeps the same fraction of every user's rows, as the paper built
theta_single(min) / theta_single(max) "by sampling a fixed percentage of rows at random per user"
to the size of the smallest / largest persona dataset; :func:`cap_per_user` bounds a CPU budget.
"""

from __future__ import annotations

import numpy as np
import pandas as pd

from recsim_personas.errors import ConfigError

__all__ = ["cap_per_user", "subsample_to_size"]


def cap_per_user(
    interactions: pd.DataFrame, per_user: int | float | None, *, seed: int = 0
) -> pd.DataFrame:
    """Keep at most ``per_user`` rows of each user (int), or that fraction of them (float in (0, 1]).

    Rows are drawn at random per user with ``seed`` (not the oldest or newest: the cap must not bias
    time); the result keeps the input's row order. ``None`` keeps everything. A fraction keeps
    ``max(1, round(f * n_user))`` rows, so no user disappears.

    Raises:
        ConfigError: ``per_user`` is not a positive int, a float in (0, 1], or None.
    """
    if per_user is None:
        return interactions
    if isinstance(per_user, bool) or not isinstance(per_user, (int, float, np.integer, np.floating)):
        raise ConfigError(f"per_user must be an int, a float in (0, 1] or None, got {per_user!r}")
    is_int = isinstance(per_user, (int, np.integer))
    if (is_int and per_user < 1) or (not is_int and not 0.0 < float(per_user) <= 1.0):
        raise ConfigError(
            f"per_user must be an integer >= 1 (rows per user) or a fraction in (0, 1], got {per_user!r}"
        )
    rng = np.random.default_rng(seed)
    keep: list[np.ndarray] = []
    users = interactions["user_id"].to_numpy()
    for user in pd.unique(users):
        idx = np.flatnonzero(users == user)
        n = min(len(idx), int(per_user)) if is_int else max(1, round(float(per_user) * len(idx)))
        keep.append(np.sort(rng.choice(idx, size=n, replace=False)) if n < len(idx) else idx)
    chosen = np.sort(np.concatenate(keep)) if keep else np.zeros(0, dtype=np.int64)
    return interactions.iloc[chosen]


def subsample_to_size(rows: pd.DataFrame, n: int, seed: int = 0) -> pd.DataFrame:
    """Sample a fixed fraction of every user's rows so that exactly ``n`` rows remain.

    Each user keeps ``f * n_user`` rows with ``f = n / len(rows)``; the fractional parts are resolved
    by largest remainder (ties broken by a seeded random order), so the total is exactly ``n`` and no
    user's share differs from ``f * n_user`` by a full row. Which rows a user keeps is random (seeded).
    The result keeps the input's row order.

    Args:
        rows: A frame with a ``user_id`` column (training rows or interactions).
        n: Target size, ``0 <= n <= len(rows)``.
        seed: Seed of the draw.

    Raises:
        ConfigError: ``n`` is negative or exceeds ``len(rows)``.
    """
    total = len(rows)
    if isinstance(n, bool) or not isinstance(n, (int, np.integer)) or n < 0 or n > total:
        raise ConfigError(
            f"subsample_to_size: target size must be an integer in [0, {total}] (the rows available), "
            f"got {n!r}"
        )
    if n == total:
        return rows
    rng = np.random.default_rng(seed)
    users = rows["user_id"].to_numpy()
    uniq, inverse, counts = np.unique(users, return_inverse=True, return_counts=True)
    exact = counts * (n / total)
    quota = np.floor(exact).astype(np.int64)
    short = n - int(quota.sum())
    if short:
        # Largest remainder; a seeded jitter far below the remainder resolution breaks ties.
        order = np.lexsort((rng.random(len(uniq)), -(exact - quota)))
        quota[order[:short]] += 1
    keep = []
    for u in range(len(uniq)):
        idx = np.flatnonzero(inverse == u)
        if quota[u]:
            keep.append(rng.choice(idx, size=int(quota[u]), replace=False))
    chosen = np.sort(np.concatenate(keep)) if keep else np.zeros(0, dtype=np.int64)
    return rows.iloc[chosen].reset_index(drop=True)
