"""Classic recommenders: rating predictors and rankers behind one interface.

``make_baseline(name, **kw)`` builds one by name; see :mod:`recsim_personas.baselines.registry`.
Every model has ``fit(train)``, ``recommend(user_id, k, exclude_seen=True, candidates=None)`` and
``score_items(user_id, item_ids)``; rating predictors add ``predict(user_ids, item_ids)`` and
``fallback_count``.
"""

from __future__ import annotations

from recsim_personas.baselines.bias import BiasPredictor
from recsim_personas.baselines.means import GlobalMean, ItemMean, UserMean
from recsim_personas.baselines.mf import BiasedMF
from recsim_personas.baselines.protocol import (
    BasePredictor,
    BaseRecommender,
    RatingPredictor,
    Recommender,
)
from recsim_personas.baselines.rankers import ALSRanker, PopularityRanker, RandomRanker
from recsim_personas.baselines.registry import (
    BASELINES,
    PREDICTORS,
    RANKERS,
    BaselineSpec,
    baseline_names,
    get_baseline_spec,
    make_baseline,
)

__all__ = [
    "BASELINES",
    "PREDICTORS",
    "RANKERS",
    "ALSRanker",
    "BasePredictor",
    "BaseRecommender",
    "BaselineSpec",
    "BiasPredictor",
    "BiasedMF",
    "GlobalMean",
    "ItemMean",
    "PopularityRanker",
    "RandomRanker",
    "RatingPredictor",
    "Recommender",
    "UserMean",
    "baseline_names",
    "get_baseline_spec",
    "make_baseline",
]
