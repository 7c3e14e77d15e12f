"""Hyperparameters of the baselines: one :class:`~recsim_personas.config.Config` dataclass per model.

Each field is declared with :func:`whole` or :func:`number`, which record its lower bound; the
shared :meth:`BaselineParams.__post_init__` checks every field against it and raises one
:class:`~recsim_personas.errors.ConfigError` listing all problems (``invalid BiasedMF parameters:
n_factors must be an integer >= 1, got 0; ...``). A model's own cross-field rules go in
:meth:`BaselineParams.extra_problems`.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from recsim_personas.config import Config
from recsim_personas.errors import ConfigError

__all__ = [
    "ALSParams",
    "BaselineParams",
    "BiasParams",
    "BiasedMFParams",
    "DampingParams",
    "NoParams",
    "SeedParams",
    "number",
    "whole",
]


def whole(default: int, low: int, help: str) -> Any:
    """A field holding an integer ``>= low``."""
    return field(default=default, metadata={"help": help, "kind": "int", "low": low})


def number(default: float, help: str, low: float = 0.0) -> Any:
    """A field holding a real number ``>= low``."""
    return field(default=default, metadata={"help": help, "kind": "float", "low": low})


@dataclass(frozen=True)
class BaselineParams(Config):
    """Base of every baseline's hyperparameters: bounds checked, numbers made plain ``int``/``float``."""

    def __post_init__(self) -> None:
        problems = []
        for f in dataclasses.fields(self):
            kind, low = f.metadata.get("kind"), f.metadata.get("low")
            value = getattr(self, f.name)
            if kind == "int":
                if isinstance(value, bool) or not isinstance(value, (int, np.integer)) or value < low:
                    problems.append(f"{f.name} must be an integer >= {low}, got {value!r}")
                else:
                    object.__setattr__(self, f.name, int(value))
            elif kind == "float":
                if isinstance(value, bool) or not isinstance(value, (int, float)) or value < low:
                    problems.append(f"{f.name} must be a number >= {low:g}, got {value!r}")
                else:
                    object.__setattr__(self, f.name, float(value))
        if not problems:
            problems = self.extra_problems()
        if problems:
            model = type(self).__name__.removesuffix("Params")
            raise ConfigError(f"invalid {model} parameters: " + "; ".join(problems))

    def extra_problems(self) -> list[str]:
        """Cross-field rules of one model (run once every field is within its bounds)."""
        return []


@dataclass(frozen=True)
class NoParams(BaselineParams):
    """A model without hyperparameters (global mean, popularity)."""


@dataclass(frozen=True)
class DampingParams(BaselineParams):
    """User or item mean."""

    damping: float = number(0.0, "shrinkage towards the global mean, in pseudo-ratings")


@dataclass(frozen=True)
class BiasParams(BaselineParams):
    """User + item bias."""

    reg_user: float = number(15.0, "regularisation of user biases")
    reg_item: float = number(10.0, "regularisation of item biases")
    n_iter: int = whole(10, 1, "alternating passes")


@dataclass(frozen=True)
class BiasedMFParams(BaselineParams):
    """Biased matrix factorisation."""

    n_factors: int = whole(20, 1, "latent dimensions")
    reg: float = number(0.2, "weighted-lambda regularisation of the factors (> 0)")
    reg_bias: float = number(5.0, "regularisation of the biases")
    n_iter: int = whole(15, 1, "ALS passes")
    init_std: float = number(0.1, "standard deviation of the initial factors")
    seed: int = whole(0, 0, "seed of the initial factors")

    def extra_problems(self) -> list[str]:
        if self.reg == 0:
            return ["reg must be > 0: it keeps each ALS least-squares problem well-posed"]
        return []


@dataclass(frozen=True)
class SeedParams(BaselineParams):
    """Random ranking."""

    seed: int = whole(0, 0, "seed of the order")


@dataclass(frozen=True)
class ALSParams(BaselineParams):
    """Implicit-feedback ALS (keyword names of ``implicit``'s ``AlternatingLeastSquares``)."""

    factors: int = whole(16, 1, "latent dimensions")
    regularization: float = number(0.05, "L2 regularisation")
    alpha: float = number(2.0, "confidence weight of an observed interaction")
    iterations: int = whole(15, 1, "ALS sweeps")
    seed: int = whole(0, 0, "seed of the initial factors")
    num_threads: int = whole(1, 0, "threads of implicit's solver (0: all cores)")
