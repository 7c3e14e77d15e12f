"""Offline evaluation: metrics, evaluation of recommenders on a split, and result reports.

- :mod:`~recsim_personas.eval.metrics`: ``rmse``, ``mae`` (raise on a missing prediction), ``urr``,
  ``precision_at_k``, ``recall_at_k``, ``ndcg_at_k``, ``coverage``.
- :mod:`~recsim_personas.eval.offline`: ``evaluate_predictor``, ``evaluate_ranker``,
  ``evaluate_baselines``.
- :mod:`~recsim_personas.eval.report`: rich / Markdown tables and the results JSON file.
"""

from __future__ import annotations

from recsim_personas.lazy import lazy_exports

# Each submodule and the public names it is the home of (imported on first use).
__getattr__, __dir__, __all__ = lazy_exports(__name__, {
    "metrics": ("coverage", "mae", "ndcg_at_k", "precision_at_k", "recall_at_k", "rmse", "urr"),
})
