"""The slate choice model of ``PersonaRec``: which item of a slate the user picks, if any.

RecSim's ``choice_model`` seam. A choice model maps the expected rating of every slate item (and
which items may be picked) to the probabilities of picking each slot or nothing; the environment
then draws the pick from one uniform per session. :class:`ConditionalLogitChoice` is the default
(``P(i) ∝ exp(E[r_i] / temperature)`` against a "pick nothing" option worth ``no_choice_utility``
stars); any object with the same ``probabilities`` method can replace it
(``env.unwrapped._engine.choice_model = MyChoice()``).

Example:
    >>> model = ConditionalLogitChoice(temperature=0.5, no_choice_utility=3.0)
    >>> p = model.probabilities(np.array([[5.0, 3.0]]), np.array([[True, True]]))
    >>> p.shape, bool(p[0, 0] > p[0, 1])
    ((1, 3), True)
"""

from __future__ import annotations

from typing import Protocol

import numpy as np

__all__ = ["ChoiceModel", "ConditionalLogitChoice", "draw_choice"]


class ChoiceModel(Protocol):
    """Picks among a slate: ``(m, k)`` expected ratings -> ``(m, k + 1)`` probabilities (last = none)."""

    def probabilities(self, expected: np.ndarray, allowed: np.ndarray) -> np.ndarray:
        """Probabilities of picking each slot (``allowed`` False: never) or, last column, nothing."""
        ...


class ConditionalLogitChoice:
    """Conditional logit over expected ratings against a no-choice option (module docstring).

    Args:
        temperature: Logit temperature in stars (> 0); lower = pickier.
        no_choice_utility: The expected rating the "pick nothing" option is worth.
    """

    def __init__(self, temperature: float, no_choice_utility: float) -> None:
        self.temperature = float(temperature)
        self.no_choice_utility = float(no_choice_utility)

    def probabilities(self, expected: np.ndarray, allowed: np.ndarray) -> np.ndarray:
        tau = self.temperature
        m = expected.shape[0]
        logits = np.where(allowed, expected / tau, -np.inf)
        logits = np.concatenate([logits, np.full((m, 1), self.no_choice_utility / tau)], axis=1)
        logits -= logits.max(axis=1, keepdims=True)
        weights = np.exp(logits)
        return weights / weights.sum(axis=1, keepdims=True)


def draw_choice(probs: np.ndarray, uniforms: np.ndarray) -> np.ndarray:
    """The picked slot per row (``-1`` = nothing) from ``(m, k + 1)`` probabilities and ``(m,)`` uniforms."""
    k = probs.shape[1] - 1
    pick = np.minimum((np.cumsum(probs, axis=1) < uniforms[:, None]).sum(axis=1), k)
    return np.where(pick == k, -1, pick)
