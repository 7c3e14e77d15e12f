"""Baselines by name: :func:`make_baseline` builds any registered model from keyword arguments.

Names, in report order: rating predictors ``global-mean``, ``user-mean``, ``item-mean``, ``bias``,
``biased-mf``; rankers ``random``, ``popularity``, ``als``. Rating predictors accept ``scale``;
seeded models (``biased-mf``, ``random``, ``als``) accept ``seed``.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass
from typing import Any, Literal

from recsim_personas.baselines.bias import BiasPredictor
from recsim_personas.baselines.means import GlobalMean, ItemMean, UserMean
from recsim_personas.baselines.mf import BiasedMF
from recsim_personas.baselines.protocol import BasePredictor, BaseRecommender
from recsim_personas.baselines.rankers import ALSRanker, PopularityRanker, RandomRanker
from recsim_personas.errors import ConfigError, did_you_mean, unknown_keys

__all__ = [
    "BASELINES",
    "PREDICTORS",
    "RANKERS",
    "BaselineSpec",
    "baseline_names",
    "get_baseline_spec",
    "make_baseline",
]


@dataclass(frozen=True)
class BaselineSpec:
    """One registered baseline.

    Attributes:
        name: Registry name (``--models`` value, ``model`` in results files).
        cls: The class; ``cls(**kwargs)`` builds an unfitted model.
        kind: ``"predictor"`` (predicts ratings: RMSE/MAE) or ``"ranker"`` (ranking metrics only).
        summary: One line for ``--help`` and reports.
    """

    name: str
    cls: type[BaseRecommender]
    kind: Literal["predictor", "ranker"]
    summary: str

    @property
    def parameters(self) -> tuple[str, ...]:
        """Keyword arguments the constructor accepts: the hyperparameters, then ``scale``."""
        names = tuple(f.name for f in dataclasses.fields(self.cls.params_type))
        return (*names, "scale") if issubclass(self.cls, BasePredictor) else names

    @property
    def seeded(self) -> bool:
        return "seed" in self.parameters


#: Every baseline, in report order.
BASELINES: dict[str, BaselineSpec] = {
    spec.name: spec
    for spec in (
        BaselineSpec("global-mean", GlobalMean, "predictor", "mean train rating"),
        BaselineSpec("user-mean", UserMean, "predictor", "user's mean rating"),
        BaselineSpec("item-mean", ItemMean, "predictor", "item's mean rating"),
        BaselineSpec("bias", BiasPredictor, "predictor", "global mean + user bias + item bias"),
        BaselineSpec("biased-mf", BiasedMF, "predictor", "biased matrix factorisation (ALS)"),
        BaselineSpec("random", RandomRanker, "ranker", "seeded random order"),
        BaselineSpec("popularity", PopularityRanker, "ranker", "most-rated items first"),
        BaselineSpec("als", ALSRanker, "ranker", "implicit-feedback ALS (implicit library)"),
    )
}
#: Names of the rating predictors.
PREDICTORS: tuple[str, ...] = tuple(n for n, s in BASELINES.items() if s.kind == "predictor")
#: Names of the ranking-only models.
RANKERS: tuple[str, ...] = tuple(n for n, s in BASELINES.items() if s.kind == "ranker")


def baseline_names() -> tuple[str, ...]:
    """All registered names, in report order."""
    return tuple(BASELINES)


def get_baseline_spec(name: str) -> BaselineSpec:
    """The :class:`BaselineSpec` of ``name``.

    Raises:
        ConfigError: Unknown name (with a "did you mean" suggestion).
    """
    try:
        return BASELINES[name]
    except KeyError:
        raise ConfigError(
            f"unknown baseline {name!r}; choose from {', '.join(BASELINES)}.{did_you_mean(name, BASELINES)}"
        ) from None


def make_baseline(name: str, **kwargs: Any) -> BaseRecommender:
    """Build the baseline ``name`` (unfitted) with constructor ``kwargs``.

    Example:
        >>> make_baseline("bias", reg_user=10.0)
        BiasPredictor(reg_user=10.0, reg_item=10.0, n_iter=10)

    Raises:
        ConfigError: Unknown name, or a keyword the model does not take (the message lists the
            ones it does).
    """
    spec = get_baseline_spec(name)
    accepted = spec.parameters
    unknown = unknown_keys(kwargs, accepted)
    if unknown:
        raise ConfigError(
            f"baseline {name!r} takes no parameter {', '.join(unknown)}; it accepts "
            f"{', '.join(accepted) or 'no parameters'}"
        )
    return spec.cls(**kwargs)
