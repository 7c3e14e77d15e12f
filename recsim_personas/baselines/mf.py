"""Biased matrix factorisation for explicit ratings, fit by alternating least squares in numpy.

Model: ``r(u, i) = mu + b_u + b_i + p_u . q_i``. It minimises

    sum (r - mu - b_u - b_i - p_u . q_i)^2
        + reg * (sum_u n_u |p_u|^2 + sum_i n_i |q_i|^2)
        + reg_bias * (sum_u b_u^2 + sum_i b_i^2)

The factors use weighted-lambda regularisation (Zhou et al. 2008: a user's or item's penalty grows
with its number of ratings ``n``, which keeps one ``reg`` right for light and heavy users); the
biases a constant, as in :class:`~recsim_personas.baselines.bias.BiasPredictor`, so an item with
one rating does not get that rating's full offset.

The defaults (20 factors, ``reg=0.2``, ``reg_bias=5``, 15 passes) were chosen on ml-100k with a
per-user random 80:20 split, seed 0 (RMSE 0.922 against 0.943 for the bias baseline), and checked
on the temporal paper split, where they stay close to the bias baseline instead of overfitting.

Each half-step solves every user's (then every item's) ``(n_factors + 1)``-dimensional ridge
problem for ``[b_u, p_u]`` exactly. The per-user normal equations are built for all users at once
with one sparse-times-dense product (the user-item indicator matrix times each item's outer product
``[1, q_i] [1, q_i]^T``) and solved in one batched ``numpy.linalg.solve``: a full fit on
ml-100k (15 passes) takes about a second on one core. Biases start at the regularised bias
baseline and factors at ``N(0, init_std^2)`` from ``seed``: the same seed gives the same model.

Fallbacks (counted in ``fallback_count``): an unknown user gets ``mu + b_i`` (item bias only), an
unknown item ``mu + b_u``, both unknown the global mean.
"""

from __future__ import annotations

from typing import Any

import numpy as np

from recsim_personas.baselines.bias import fit_biases
from recsim_personas.baselines.params import BiasedMFParams
from recsim_personas.baselines.protocol import BasePredictor

__all__ = ["BiasedMF"]

# Rows of the stacked outer products handled per sparse product; bounds memory on wide catalogues.
_CHUNK_ELEMENTS = 4_000_000


def _solve_side(
    indicator: Any,
    values: Any,
    other: np.ndarray,
    counts: np.ndarray,
    reg: float,
    reg_bias: float,
) -> np.ndarray:
    """Solve every row's ridge problem ``[b, p]`` given the other side's ``[b, q]`` (column 0 = bias).

    Args:
        indicator: CSR (rows x cols) with 1 at each rating.
        values: CSR (rows x cols) with the target residual ``r - mu - b_other`` at each rating.
        other: ``(cols, d)`` features of the other side with column 0 set to 1.
        counts: Ratings per row (for weighted-lambda regularisation).
        reg: Factor regularisation.
        reg_bias: Bias regularisation.
    """
    n_rows, d = indicator.shape[0], other.shape[1]
    # Only the upper triangle of each outer product: the normal matrices are symmetric.
    rows, cols = np.triu_indices(d)
    upper = np.zeros((n_rows, len(rows)))
    cols_per_chunk = max(1, _CHUNK_ELEMENTS // len(rows))
    for start in range(0, other.shape[0], cols_per_chunk):
        block = other[start : start + cols_per_chunk]
        upper += indicator[:, start : start + cols_per_chunk] @ (block[:, rows] * block[:, cols])
    gram = np.empty((n_rows, d, d))
    gram[:, rows, cols] = upper
    gram[:, cols, rows] = upper
    rhs = values @ other
    # Factors: weighted lambda (reg * n); biases: a constant, as in the bias baseline, so a
    # bias backed by one rating is damped as strongly as there. max(n, 1) guards empty rows.
    lam = np.empty((n_rows, d))
    lam[:, 0] = reg_bias
    lam[:, 1:] = reg * np.maximum(counts, 1)[:, None]
    gram[:, np.arange(d), np.arange(d)] += lam
    return np.linalg.solve(gram, rhs[:, :, None])[:, :, 0]


class BiasedMF(BasePredictor):
    """Biased matrix factorisation by explicit ALS (see the module docstring).

    Args:
        n_factors: Latent dimensions.
        reg: Weighted-lambda regularisation of the factors (times each row's rating count);
            must be positive.
        reg_bias: Regularisation of the biases (a constant, like the bias baseline's).
        n_iter: ALS passes (each updates all users, then all items).
        init_std: Standard deviation of the initial factors.
        seed: Seed of the initial factors.
        scale: Rating scale to clip predictions to.
    """

    name = "biased-mf"
    params_type = BiasedMFParams
    params: BiasedMFParams

    def _fit(self, u: np.ndarray, i: np.ndarray, r: np.ndarray) -> None:
        from scipy.sparse import csr_matrix

        n_users, n_items = len(self.user_ids_), len(self.item_ids_)
        mu, b_u, b_i = fit_biases(
            u, i, r, n_users, n_items, reg_user=15.0, reg_item=10.0, n_iter=10
        )
        rng = np.random.default_rng(self.params.seed)
        users = np.empty((n_users, self.params.n_factors + 1))
        items = np.empty((n_items, self.params.n_factors + 1))
        users[:, 0], items[:, 0] = b_u, b_i
        users[:, 1:] = rng.normal(0.0, self.params.init_std, (n_users, self.params.n_factors))
        items[:, 1:] = rng.normal(0.0, self.params.init_std, (n_items, self.params.n_factors))

        shape = (n_users, n_items)
        ones = np.ones(len(r))
        ind_ui = csr_matrix((ones, (u, i)), shape=shape)
        ind_iu = ind_ui.T.tocsr()
        n_u = np.bincount(u, minlength=n_users).astype(np.float64)
        n_i = np.bincount(i, minlength=n_items).astype(np.float64)
        resid = r - mu
        for _ in range(self.params.n_iter):
            # Users: features of items are [1, q_i]; target r - mu - b_i.
            feats = np.column_stack([np.ones(n_items), items[:, 1:]])
            vals = csr_matrix((resid - items[i, 0], (u, i)), shape=shape)
            users = _solve_side(ind_ui, vals, feats, n_u, self.params.reg, self.params.reg_bias)
            # Items: features of users are [1, p_u]; target r - mu - b_u.
            feats = np.column_stack([np.ones(n_users), users[:, 1:]])
            vals = csr_matrix((resid - users[u, 0], (i, u)), shape=shape[::-1])
            items = _solve_side(ind_iu, vals, feats, n_i, self.params.reg, self.params.reg_bias)

        self.global_mean_ = mu
        self.user_bias_, self.user_factors_ = users[:, 0].copy(), users[:, 1:].copy()
        self.item_bias_, self.item_factors_ = items[:, 0].copy(), items[:, 1:].copy()

    def _predict(self, u: np.ndarray, i: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        known_u, known_i = u >= 0, i >= 0
        bu = np.where(known_u, self.user_bias_[u], 0.0)
        bi = np.where(known_i, self.item_bias_[i], 0.0)
        both = known_u & known_i
        dot = np.zeros(len(u))
        if both.any():
            dot[both] = np.einsum(
                "ij,ij->i", self.user_factors_[u[both]], self.item_factors_[i[both]]
            )
        return self.global_mean_ + bu + bi + dot, ~both

    def _score_user(self, u: int, i: np.ndarray) -> np.ndarray:
        # One matrix-vector product instead of per-pair einsum: ranking scores every item.
        if u < 0:
            return self._predict(np.full(len(i), -1, dtype=np.int64), i)[0]
        known = i >= 0
        out = np.full(len(i), self.global_mean_ + self.user_bias_[u])
        idx = i[known]
        out[known] += self.item_bias_[idx] + self.item_factors_[idx] @ self.user_factors_[u]
        return out
