"""Offline evaluation: metrics, evaluation of recommenders on a split, and result reports.

- :mod:`~recsim_personas.eval.metrics`: ``rmse``, ``mae`` (raise on a missing prediction), ``urr``,
  ``precision_at_k``, ``recall_at_k``, ``ndcg_at_k``, ``coverage``.
- :mod:`~recsim_personas.eval.offline`: ``evaluate_predictor``, ``evaluate_ranker``,
  ``evaluate_baselines``.
- :mod:`~recsim_personas.eval.report`: rich / Markdown tables and the results JSON file.
"""

from __future__ import annotations

from recsim_personas.lazy import lazy_exports

#: Each public name and the submodule that is its home (imported on first use).
_WHERE: dict[str, str] = {
    "coverage": "metrics",
    "mae": "metrics",
    "ndcg_at_k": "metrics",
    "precision_at_k": "metrics",
    "recall_at_k": "metrics",
    "rmse": "metrics",
    "urr": "metrics",
}
__all__ = sorted(_WHERE)
__getattr__, __dir__ = lazy_exports(__name__, _WHERE)
