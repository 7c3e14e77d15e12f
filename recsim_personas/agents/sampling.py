"""Next-token sampling of the paper's generate mode: temperature, top-k and nucleus (top-p)."""

from __future__ import annotations

from typing import TYPE_CHECKING

if TYPE_CHECKING:  # pragma: no cover
    import torch

__all__ = ["sample_next_tokens"]


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
