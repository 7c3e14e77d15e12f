"""Item feature vectors and the flat observation of ``PersonaRec``: what a policy can learn from.

:func:`item_features` gives every catalogue item a fixed float32 vector made only of what a
recommender knows before it acts (the item table and the *train* interactions, never the simulated
user model nor the test split):

* the item's genres, multi-hot over the genres of the catalogue (none when the item table has no
  ``genres`` column);
* its popularity, ``log1p(train ratings) / log1p(max train ratings)`` in [0, 1];
* its shrunk mean train rating, ``(sum + 5 * global mean) / (count + 5)``, mapped to [0, 1] over the
  scale;
* ``n_svd`` (16) dimensions of a truncated SVD of the train user x item matrix of mean-centred
  ratings (collaborative item embeddings), each column scaled to unit max-abs.

:class:`FlatObservation` turns the session state into one ``Box`` vector (``observation="flat"``):
``[profile embedding, user SVD embedding (:func:`user_features`), persona one-hot, history item
features (history_len x d, zeros for padding), history ratings / max rating, step / horizon]`` and, with ``mask_in_obs``, the ``n_items`` action mask.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

import numpy as np
from gymnasium import spaces

if TYPE_CHECKING:
    from recsim_personas.envs.population import UserPopulation

__all__ = ["FlatObservation", "item_features", "user_features"]

_PRIOR_WEIGHT = 5.0


def item_features(population: UserPopulation, n_svd: int = 16) -> np.ndarray:
    """``(n_items, d)`` float32 features of the catalogue, aligned with ``population.item_ids``.

    Example:
        >>> from recsim_personas.envs.population import synthetic_population
        >>> feats = item_features(synthetic_population(n_users=20, n_items=40, seed=0), n_svd=4)
        >>> feats.shape, feats.dtype.name
        ((40, 6), 'float32')
    """
    pop = population
    items = pop.item_ids
    n = len(items)
    train = pop.train
    pos = np.searchsorted(items, train["item_id"].to_numpy(np.int64))
    ratings = train["rating"].to_numpy(np.float64)
    counts = np.bincount(pos, minlength=n).astype(np.float64)
    sums = np.bincount(pos, weights=ratings, minlength=n)
    mean = float(ratings.mean()) if len(ratings) else 0.0
    shrunk = (sums + _PRIOR_WEIGHT * mean) / (counts + _PRIOR_WEIGHT)
    lo, hi = float(pop.scale.min), float(pop.scale.max)
    blocks = [_genres(pop), (np.log1p(counts) / max(np.log1p(counts.max()), 1e-9))[:, None],
              ((shrunk - lo) / (hi - lo))[:, None]]
    if n_svd > 0:
        blocks.append(_train_svd(pop, n_svd)[1])
    return np.concatenate(blocks, axis=1).astype(np.float32)


def user_features(population: UserPopulation, n_svd: int = 16) -> np.ndarray:
    """``(n_users, n_svd)`` float32 collaborative user embeddings, aligned with ``population.user_ids``.

    The user side of the same truncated SVD of the train ratings as :func:`item_features`
    (``U * S``, each column scaled to unit max-abs): what the user's own train ratings say about
    their taste, in the coordinates of the items' SVD features.
    """
    if n_svd <= 0:
        return np.zeros((population.n_users, 0), np.float32)
    return _train_svd(population, n_svd)[0].astype(np.float32)


def _genres(pop: UserPopulation) -> np.ndarray:
    table = getattr(pop.dataset, "items", None)
    if table is None or "genres" not in getattr(table, "columns", ()):
        return np.zeros((pop.n_items, 0))
    genres = table["genres"].reindex(pop.item_ids)
    lists = [tuple(g) if isinstance(g, (tuple, list)) else () for g in genres]
    names = sorted({g for gs in lists for g in gs if g and g != "(no genres listed)"})
    col = {g: j for j, g in enumerate(names)}
    out = np.zeros((pop.n_items, len(names)))
    for i, gs in enumerate(lists):
        for g in gs:
            if g in col:
                out[i, col[g]] = 1.0
    return out


def _train_svd(pop: UserPopulation, k: int) -> tuple[np.ndarray, np.ndarray]:
    """``(user vectors, item vectors)`` of a truncated SVD of the mean-centred train ratings."""
    from scipy.sparse import csr_matrix
    from sklearn.decomposition import TruncatedSVD

    train = pop.train
    ratings = train["rating"].to_numpy(np.float64)
    centred = ratings - (ratings.mean() if len(ratings) else 0.0)
    upos = np.searchsorted(pop.user_ids, train["user_id"].to_numpy(np.int64))
    ipos = np.searchsorted(pop.item_ids, train["item_id"].to_numpy(np.int64))
    matrix = csr_matrix((centred, (upos, ipos)), shape=(pop.n_users, pop.n_items))
    k = min(k, min(matrix.shape) - 1)
    if k < 1:
        return np.zeros((pop.n_users, 0)), np.zeros((pop.n_items, 0))
    svd = TruncatedSVD(n_components=k, random_state=0).fit(matrix)
    return _unit_max_abs(svd.transform(matrix)), _unit_max_abs(svd.components_.T)


def _unit_max_abs(x: np.ndarray) -> np.ndarray:
    scale = np.abs(x).max(axis=0)
    return x / np.where(scale > 0, scale, 1.0)


class FlatObservation:
    """Builds the flat ``Box`` observation from the session arrays (module docstring).

    Args:
        population: The users and catalogue.
        features: ``(n_items, d)`` item features (:func:`item_features`).
        users: ``(n_users, e)`` user features (:func:`user_features`; None = none).
        history_len: Items of the history in the observation.
        horizon: Steps per session (normalises the step count).
        mask_in_obs: Append the ``n_items`` action mask.
    """

    def __init__(
        self, population: UserPopulation, features: np.ndarray, history_len: int, horizon: int,
        mask_in_obs: bool, users: np.ndarray | None = None,
    ) -> None:
        self.population = population
        self._users = (
            np.zeros((population.n_users, 0), np.float32) if users is None else users.astype(np.float32)
        )
        # One padding row of zeros at index n_items (the history's pad value).
        self._features = np.concatenate([features, np.zeros((1, features.shape[1]), np.float32)])
        self._onehot = np.eye(max(population.n_personas, 1), dtype=np.float32)
        self._max_rating = float(population.scale.max)
        self._horizon = float(horizon)
        self.mask_in_obs = mask_in_obs
        self.size = (
            population.embedding_dim + self._users.shape[1] + self._onehot.shape[1] + history_len * (features.shape[1] + 1) + 1
            + (population.n_items if mask_in_obs else 0)
        )

    @property
    def space(self) -> spaces.Box:
        """The single-session ``Box``: every entry lies in [-1, 1]."""
        return spaces.Box(-1.0, 1.0, (self.size,), dtype=np.float32)

    def build(
        self, user_pos: np.ndarray, hist_items: np.ndarray, hist_ratings: np.ndarray, t: np.ndarray,
        mask: np.ndarray | None,
    ) -> np.ndarray:
        """``(m, size)`` float32 observations of ``m`` sessions."""
        pop = self.population
        m = len(user_pos)
        parts = [
            pop.profile_embeddings[user_pos].astype(np.float32, copy=False),
            self._users[user_pos],
            self._onehot[pop.personas[user_pos]],
            self._features[hist_items].reshape(m, -1),
            (hist_ratings / self._max_rating).astype(np.float32, copy=False),
            (t / self._horizon).astype(np.float32)[:, None],
        ]
        if self.mask_in_obs:
            assert mask is not None
            parts.append(mask.astype(np.float32))
        return np.clip(np.concatenate(parts, axis=1), -1.0, 1.0)
