"""Item feature vectors and the flat observation of ``PersonaRec``: what a policy can learn from.

:func:`item_features` gives every catalogue item a fixed float32 vector made only of what a
recommender knows before it acts: the item table and the ratings of ``source`` (``logged``, the
default: every rating of the dataset except the population's test rows, the same log the cheap
simulator is fitted on, :meth:`~recsim_personas.envs.user_population.UserPopulation.logged_ratings`;
``train``: the population's train split only), never the simulated user model nor the test split:

* the item's genres, multi-hot over the genres of the catalogue (none when the item table has no
  ``genres`` column);
* its popularity, ``log1p(ratings) / log1p(max ratings)`` in [0, 1];
* its shrunk mean rating, ``(sum + 5 * global mean) / (count + 5)``, mapped to [0, 1] over the
  scale;
* a collaborative embedding (``embedding``):

  - ``mf`` (the default): ``[b_i, q_i]`` of the recommender's own biased matrix factorisation
    (:class:`~recsim_personas.baselines.mf.BiasedMF`, :data:`RECOMMENDER_MF` = 32 factors, seed 1:
    not the simulator's 50-factor, seed-0 model) fitted on ``source``; :func:`user_features` gives
    the matching ``[b_u, p_u]``, so ``b_u + b_i + p_u . q_i`` (what a matrix-factorisation
    recommender predicts) is a bilinear function of the two;
  - ``svd``: ``dim`` (16) dimensions of a truncated SVD of the user x item matrix of mean-centred
    ratings.

  Each column is scaled to unit max-abs, so every entry lies in [-1, 1].

:class:`FlatObservation` turns the session state into one ``Box`` vector (``observation="flat"``):
``[profile embedding, user collaborative embedding (:func:`user_features`), persona one-hot, history item
features (history_len x d, zeros for padding), history ratings / max rating, step / horizon]`` and, with ``mask_in_obs``, the ``n_items`` action mask.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any, Literal, get_args

import numpy as np
from gymnasium import spaces

from recsim_personas.errors import ConfigError, not_one_of

if TYPE_CHECKING:
    import pandas as pd

    from recsim_personas.envs.population import UserPopulation

__all__ = ["RECOMMENDER_MF", "SVD_DIM", "Embedding", "FlatObservation", "item_features", "user_features"]

_PRIOR_WEIGHT = 5.0

#: Collaborative embeddings of item and user features.
Embedding = Literal["mf", "svd"]
#: Parameters of the recommender-side matrix factorisation behind ``embedding="mf"``.
RECOMMENDER_MF: dict[str, Any] = {"n_factors": 32, "reg": 0.1, "seed": 1}
#: Dimensions of ``embedding="svd"``.
SVD_DIM = 16


def item_features(
    population: UserPopulation, *, source: str = "logged", embedding: Embedding = "mf",
    dim: int | None = None,
) -> np.ndarray:
    """``(n_items, d)`` float32 features of the catalogue, aligned with ``population.item_ids``.

    Args:
        population: The users and catalogue.
        source: ``logged`` or ``train`` (module docstring).
        embedding: ``mf`` or ``svd`` (module docstring).
        dim: Factors of the embedding (default 32 for ``mf``, 16 for ``svd``; 0 = none).

    Example:
        >>> from recsim_personas.envs.population import synthetic_population
        >>> pop = synthetic_population(n_users=20, n_items=40, seed=0)
        >>> feats = item_features(pop, embedding="svd", dim=4)
        >>> feats.shape, feats.dtype.name
        ((40, 6), 'float32')
    """
    pop = population
    ratings_frame = pop.recommender_ratings(source)
    items = pop.item_ids
    n = len(items)
    ids = ratings_frame["item_id"].to_numpy(np.int64)
    pos = np.minimum(np.searchsorted(items, ids), max(n - 1, 0))
    keep = items[pos] == ids
    pos = pos[keep]
    ratings = ratings_frame["rating"].to_numpy(np.float64)[keep]
    counts = np.bincount(pos, minlength=n).astype(np.float64)
    sums = np.bincount(pos, weights=ratings, minlength=n)
    mean = float(ratings.mean()) if len(ratings) else 0.0
    shrunk = (sums + _PRIOR_WEIGHT * mean) / (counts + _PRIOR_WEIGHT)
    lo, hi = float(pop.scale.min), float(pop.scale.max)
    blocks = [_genres(pop), (np.log1p(counts) / max(np.log1p(counts.max()), 1e-9))[:, None],
              ((shrunk - lo) / (hi - lo))[:, None]]
    blocks.append(_embedding(pop, source, embedding, dim)[1])
    return np.concatenate(blocks, axis=1).astype(np.float32)


def user_features(
    population: UserPopulation, *, source: str = "logged", embedding: Embedding = "mf",
    dim: int | None = None,
) -> np.ndarray:
    """``(n_users, e)`` float32 collaborative user embeddings, aligned with ``population.user_ids``.

    The user side of the same embedding as :func:`item_features` (``[b_u, p_u]`` for ``mf``,
    ``U * S`` for ``svd``, each column scaled to unit max-abs): what the user's ratings before the
    session say about their taste, in the coordinates of the items' collaborative features.
    """
    return _embedding(population, source, embedding, dim)[0].astype(np.float32)


def _embedding(pop: UserPopulation, source: str, embedding: str, dim: int | None) -> tuple[np.ndarray, np.ndarray]:
    """``(user vectors, item vectors)`` of the collaborative embedding, computed once per population."""
    if embedding not in get_args(Embedding):
        raise ConfigError(not_one_of("item_embedding", embedding, get_args(Embedding)))
    size = (RECOMMENDER_MF["n_factors"] if embedding == "mf" else SVD_DIM) if dim is None else dim
    if size <= 0:
        return np.zeros((pop.n_users, 0)), np.zeros((pop.n_items, 0))
    build = _mf_vectors if embedding == "mf" else _svd_vectors
    return pop.derived(("embedding", source, embedding, size), lambda: build(pop, pop.recommender_ratings(source), size))


def _mf_vectors(pop: UserPopulation, ratings: pd.DataFrame, k: int) -> tuple[np.ndarray, np.ndarray]:
    """``([b_u, p_u], [b_i, q_i])`` of the recommender's biased MF on ``ratings`` (zeros if unknown)."""
    from recsim_personas.baselines.mf import BiasedMF

    model = BiasedMF(scale=pop.scale, **{**RECOMMENDER_MF, "n_factors": k}).fit(ratings)
    users = _rows(pop.user_ids, model.user_ids_, np.column_stack([model.user_bias_, model.user_factors_]))
    items = _rows(pop.item_ids, model.item_ids_, np.column_stack([model.item_bias_, model.item_factors_]))
    return _unit_max_abs(users), _unit_max_abs(items)


def _rows(wanted: np.ndarray, known: np.ndarray, table: np.ndarray) -> np.ndarray:
    known = np.asarray(known, np.int64)
    pos = np.minimum(np.searchsorted(known, wanted), max(len(known) - 1, 0))
    found = known[pos] == wanted
    return np.where(found[:, None], table[pos], 0.0)


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


def _svd_vectors(pop: UserPopulation, ratings_frame: pd.DataFrame, k: int) -> tuple[np.ndarray, np.ndarray]:
    """``(user vectors, item vectors)`` of a truncated SVD of the mean-centred ratings."""
    from scipy.sparse import csr_matrix
    from sklearn.decomposition import TruncatedSVD

    users = np.unique(np.concatenate([pop.user_ids, ratings_frame["user_id"].to_numpy(np.int64)]))
    iid = ratings_frame["item_id"].to_numpy(np.int64)
    ipos = np.minimum(np.searchsorted(pop.item_ids, iid), max(pop.n_items - 1, 0))
    keep = pop.item_ids[ipos] == iid
    ratings = ratings_frame["rating"].to_numpy(np.float64)[keep]
    centred = ratings - (ratings.mean() if len(ratings) else 0.0)
    upos = np.searchsorted(users, ratings_frame["user_id"].to_numpy(np.int64)[keep])
    matrix = csr_matrix((centred, (upos, ipos[keep])), shape=(len(users), pop.n_items))
    k = min(k, min(matrix.shape) - 1)
    if k < 1:
        return np.zeros((pop.n_users, 0)), np.zeros((pop.n_items, 0))
    svd = TruncatedSVD(n_components=k, random_state=0).fit(matrix)
    user_vecs = svd.transform(matrix)[np.searchsorted(users, pop.user_ids)]
    return _unit_max_abs(user_vecs), _unit_max_abs(svd.components_.T)


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
        widths = {
            "profile": population.embedding_dim,
            "user": self._users.shape[1],
            "persona": self._onehot.shape[1],
            "history_items": history_len * features.shape[1],
            "history_ratings": history_len,
            "step": 1,
            "action_mask": population.n_items if mask_in_obs else 0,
        }
        #: Where each part sits in the vector: ``{name: slice}`` in the order above (module docstring;
        #: ``history_items`` holds ``history_len`` rows of ``d`` item features, newest first, zeros for
        #: padding; ``history_ratings`` the matching ratings over the scale maximum, 0 when unrated).
        self.layout: dict[str, slice] = {}
        start = 0
        for name, width in widths.items():
            self.layout[name] = slice(start, start + width)
            start += width
        self.size = start

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
