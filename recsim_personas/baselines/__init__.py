"""Classic recommenders: rating predictors and rankers behind one interface.

``make_baseline(name, **kw)`` builds one by name; see :mod:`recsim_personas.baselines.registry`.
Every model has ``fit(train)``, ``recommend(user_id, k, exclude_seen=True, candidates=None)`` and
``score_items(user_id, item_ids)``; rating predictors add ``predict(user_ids, item_ids)`` and
``fallback_count``.
"""

from __future__ import annotations

from recsim_personas.lazy import lazy_exports

#: Each public name and the submodule that is its home (imported on first use).
_WHERE: dict[str, str] = {
    "BiasPredictor": "bias",
    "GlobalMean": "means",
    "ItemMean": "means",
    "UserMean": "means",
    "BiasedMF": "mf",
    "BasePredictor": "protocol",
    "BaseRecommender": "protocol",
    "RatingPredictor": "protocol",
    "Recommender": "protocol",
    "ALSRanker": "rankers",
    "PopularityRanker": "rankers",
    "RandomRanker": "rankers",
    "BASELINES": "registry",
    "BaselineSpec": "registry",
    "PREDICTORS": "registry",
    "RANKERS": "registry",
    "baseline_names": "registry",
    "get_baseline_spec": "registry",
    "make_baseline": "registry",
}
__all__ = sorted(_WHERE)
__getattr__, __dir__ = lazy_exports(__name__, _WHERE)
