"""Item rankers without rating predictions: random, popularity, and implicit-feedback ALS.

These only rank, so reports give them ranking metrics (precision, recall, NDCG at k, coverage) and
no RMSE. ALS treats every train interaction as a positive, whatever its rating: its scores are
preference strengths, not stars.

Fallbacks: ALS has no factors for a user not in train and ranks by popularity instead; each such
``recommend`` call adds one to ``fallback_count``. Popularity and random treat every user alike, so
they never fall back. Candidate items not in train score 0 for popularity, a seeded random score
for random, and ``-inf`` for ALS (ranked last).
"""

from __future__ import annotations

import numpy as np

from recsim_personas.baselines.params import ALSParams, SeedParams
from recsim_personas.baselines.protocol import BaseRecommender

__all__ = ["ALSRanker", "PopularityRanker", "RandomRanker"]


class RandomRanker(BaseRecommender):
    """Uniformly random ranking; the order for a user depends only on (``seed``, user id).

    Args:
        seed: Seed; the same seed gives every user the same order on every call.
    """

    name = "random"
    params_type = SeedParams
    params: SeedParams

    def _fit(self, u: np.ndarray, i: np.ndarray, r: np.ndarray) -> None:
        pass

    def _on_unknown_user_recommend(self) -> None:
        pass

    def _score_user(self, u: int, i: np.ndarray) -> np.ndarray:  # pragma: no cover - unused
        raise NotImplementedError("RandomRanker scores by id; see _score_candidates")

    def _score_candidates(
        self, user_id: int, u: int, item_ids: np.ndarray, i: np.ndarray
    ) -> np.ndarray:
        # Scores come from ids, not indices: an item keeps its score in any candidate set.
        return self._scores(user_id, item_ids)

    def _scores(self, user_id: int, item_ids: np.ndarray) -> np.ndarray:
        # A hash of (seed, user, item) rather than a stream: independent of list order and size.
        # Python ints (wrapped to 64 bits) for the scalar key: numpy warns on scalar uint64 overflow.
        key = np.uint64(((int(self.params.seed) * 0x9E3779B97F4A7C15) % 2**64) ^ (int(user_id) & (2**64 - 1)))
        with np.errstate(over="ignore"):
            x = item_ids.astype(np.uint64) * np.uint64(0xBF58476D1CE4E5B9) ^ key
            x ^= x >> np.uint64(30)
            x *= np.uint64(0x94D049BB133111EB)
            x ^= x >> np.uint64(31)
        return (x >> np.uint64(11)).astype(np.float64) / float(2**53)


class PopularityRanker(BaseRecommender):
    """Ranks items by their number of train interactions (most popular first).

    Unknown users get the same ranking as everyone (minus nothing seen), so no fallback is counted.
    """

    name = "popularity"

    def _fit(self, u: np.ndarray, i: np.ndarray, r: np.ndarray) -> None:
        self.item_counts_ = np.bincount(i, minlength=len(self.item_ids_)).astype(np.float64)

    def _score_user(self, u: int, i: np.ndarray) -> np.ndarray:
        return np.where(i >= 0, self.item_counts_[np.maximum(i, 0)], 0.0)

    def _on_unknown_user_recommend(self) -> None:
        pass


class ALSRanker(BaseRecommender):
    """Implicit-feedback ALS (Hu, Koren, Volinsky 2008) from the ``implicit`` library.

    Every train interaction is a positive with confidence ``1 + alpha``. Fitting runs with BLAS
    limited to one thread (implicit's own recommendation; the ALS loop is parallel itself, over
    ``num_threads``).

    Args:
        factors: Latent dimensions.
        regularization: L2 regularisation.
        alpha: Confidence weight of an observed interaction.
        iterations: ALS sweeps.
        seed: Seed of the initial factors.
        num_threads: Threads of implicit's solver (0 = all cores).
    """

    name = "als"
    params_type = ALSParams
    params: ALSParams

    def _fit(self, u: np.ndarray, i: np.ndarray, r: np.ndarray) -> None:
        from implicit.cpu.als import AlternatingLeastSquares
        from threadpoolctl import threadpool_limits

        user_items = self._seen.astype(np.float32)
        # implicit checks the BLAS thread count when the model is built and warns if it is > 1.
        with threadpool_limits(limits=1, user_api="blas"):
            kwargs = self.get_params()  # implicit's own keyword names, but for the seed
            kwargs["random_state"] = kwargs.pop("seed")
            model = AlternatingLeastSquares(**kwargs)
            model.fit(user_items, show_progress=False)
        self.user_factors_ = np.asarray(model.user_factors, dtype=np.float64)
        self.item_factors_ = np.asarray(model.item_factors, dtype=np.float64)
        self.item_counts_ = np.bincount(i, minlength=len(self.item_ids_)).astype(np.float64)

    def _score_user(self, u: int, i: np.ndarray) -> np.ndarray:
        known = i >= 0
        out = np.full(len(i), -np.inf)
        if u < 0:
            out[known] = self.item_counts_[i[known]]
        else:
            out[known] = self.item_factors_[i[known]] @ self.user_factors_[u]
        return out
