"""Next-token sampling of the paper's generate mode: temperature, top-k and nucleus (top-p).

:class:`SamplingSettings` are the settings both scorers' configs share (in process:
:class:`~recsim_personas.agents.scoring.ScoringConfig`; served:
:class:`~recsim_personas.agents.served.ServedConfig`); :func:`sample_next_tokens` draws the tokens
in process (the server samples its own with the same settings).
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass
from typing import TYPE_CHECKING

from recsim_personas.config import Config

if TYPE_CHECKING:  # pragma: no cover
    import torch

__all__ = ["SamplingSettings", "positive_int_problems", "sample_next_tokens"]


def positive_int_problems(config: object, names: Iterable[str]) -> list[str]:
    """``"<name> must be an integer >= 1, got <value>"`` for each of ``names`` that is not one."""
    problems = []
    for name in names:
        value = getattr(config, name)
        if not isinstance(value, int) or isinstance(value, bool) or value < 1:
            problems.append(f"{name} must be an integer >= 1, got {value!r}")
    return problems


@dataclass(frozen=True)
class SamplingSettings(Config):
    """How ``generate`` samples an answer (the paper's mode); the base of the scorers' configs.

    The paper says "top-p set to 50", which is not a probability: we read it as a typo for either
    top-k 50 (the Hugging Face default) or top-p 0.5, and default to ``top_p=0.9`` with
    ``top_k=None``; both are configurable.
    """

    temperature: float = 0.3
    """Sampling temperature (0 = greedy)."""
    top_p: float = 0.9
    """Nucleus threshold in (0, 1]."""
    top_k: int | None = None
    """Top-k filter (None = off)."""
    max_new_tokens: int = 4
    """Tokens sampled per answer."""
    seed: int = 0
    """Base seed (call ``i`` uses ``seed + i`` unless given one)."""

    def sampling_problems(self) -> list[str]:
        """What is wrong with these settings (empty when nothing); subclasses add theirs."""
        problems = positive_int_problems(self, ("max_new_tokens",))
        if not self.temperature >= 0:
            problems.append(f"temperature must be >= 0, got {self.temperature}")
        if not 0 < self.top_p <= 1:
            problems.append(
                f"top_p must be in (0, 1], got {self.top_p} (the paper's 'top-p 50' is not a "
                "probability; use top_k=50 for that reading)"
            )
        if self.top_k is not None and (not isinstance(self.top_k, int) or self.top_k < 1):
            problems.append(f"top_k must be an integer >= 1 or None, got {self.top_k!r}")
        return problems


def sample_next_tokens(
    logits: torch.Tensor, gen: torch.Generator, *, temperature: float, top_p: float, top_k: int | None
) -> torch.Tensor:
    """One token per row of ``(B, V)`` logits (greedy at temperature 0), drawn with ``gen``."""
    import torch

    logits = logits.float().cpu()
    if temperature == 0:
        return logits.argmax(dim=-1)
    logits = logits / temperature
    if top_k is not None:
        kth = torch.topk(logits, min(top_k, logits.shape[-1]), dim=-1).values[:, -1:]
        logits = logits.masked_fill(logits < kth, float("-inf"))
    probs = torch.softmax(logits, dim=-1)
    if top_p < 1.0:
        sorted_p, order = torch.sort(probs, dim=-1, descending=True)
        before = sorted_p.cumsum(dim=-1) - sorted_p
        sorted_p = sorted_p.masked_fill(before >= top_p, 0.0)
        probs = torch.zeros_like(probs).scatter(-1, order, sorted_p)
    return torch.multinomial(probs, 1, generator=gen)[:, 0]
