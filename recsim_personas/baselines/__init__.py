"""Classic recommenders: rating predictors and rankers behind one interface.

``make_baseline(name, **kw)`` builds one by name; see :mod:`recsim_personas.baselines.registry`.
Every model has ``fit(train)``, ``recommend(user_id, k, exclude_seen=True, candidates=None)`` and
``score_items(user_id, item_ids)``; rating predictors add ``predict(user_ids, item_ids)`` and
``fallback_count``.
"""

from __future__ import annotations

from recsim_personas.lazy import lazy_exports

# Each submodule and the public names it is the home of (imported on first use).
__getattr__, __dir__, __all__ = lazy_exports(__name__, {
    "bias": ("BiasPredictor",),
    "means": ("GlobalMean", "ItemMean", "UserMean"),
    "mf": ("BiasedMF",),
    "protocol": ("BasePredictor", "BaseRecommender", "RatingPredictor", "Recommender"),
    "rankers": ("ALSRanker", "PopularityRanker", "RandomRanker"),
    "registry": (
        "BASELINES",
        "BaselineSpec",
        "PREDICTORS",
        "RANKERS",
        "baseline_names",
        "get_baseline_spec",
        "make_baseline",
    ),
})
