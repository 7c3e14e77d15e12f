"""The compute floor of a language-model user: how fast this machine could answer at best.

Benchmarks compare measured throughput with a **FLOP floor**: a forward pass costs about
``2 x parameters x tokens`` FLOPs (one multiply-add per weight per token), and only the tokens that
no cache can share must be processed per answer (the item text and its memories for a rating, the
session lines for a leave/stay decision; the user's profile prefix is cached). Dividing by the
machine's measured matrix-multiply rate in the dtype used gives the shortest possible time per
answer. ``parameters`` here are the non-embedding weights (the embedding lookup is not a matmul)
plus, per answer, one pass of the output head at the answer position.

Example:
    >>> rate = matmul_rate("float32", size=256, seconds=0.05)     # doctest: +SKIP
    >>> floor_seconds(flops_per_answer(106e6, 28e6, 60), rate)    # doctest: +SKIP
"""

from __future__ import annotations

import time
from typing import Any

__all__ = ["count_parameters", "floor_seconds", "flops_per_answer", "matmul_rate"]


def matmul_rate(dtype: str = "float32", *, size: int = 1024, seconds: float = 1.0, device: str = "cpu") -> float:
    """Measured FLOP/s of square ``size x size`` matmuls in ``dtype`` (best of repeated runs).

    Uses the current torch thread settings, so call it in the same process and configuration as the
    model being benchmarked.
    """
    import torch

    dt = getattr(torch, dtype)
    a = torch.randn(size, size, device=device).to(dt)
    b = torch.randn(size, size, device=device).to(dt)
    for _ in range(2):  # warm-up
        torch.matmul(a, b)
    best = 0.0
    end = time.perf_counter() + seconds
    while time.perf_counter() < end:
        start = time.perf_counter()
        for _ in range(4):
            torch.matmul(a, b)
        if device != "cpu":
            torch.cuda.synchronize()
        elapsed = time.perf_counter() - start
        best = max(best, 4 * 2 * size**3 / elapsed)
    return best


def count_parameters(model: Any) -> tuple[int, int]:
    """``(non_embedding, head)`` parameter counts of a causal LM (LoRA weights included).

    ``head`` is the output projection (vocabulary x hidden), counted apart because it runs only at
    the answer position when logits are kept for the last token.
    """
    total = sum(int(p.numel()) for p in model.parameters())
    emb = model.get_input_embeddings().weight
    out = model.get_output_embeddings()
    head = int(out.weight.numel()) if out is not None else int(emb.numel())
    tied = out is not None and out.weight.data_ptr() == emb.data_ptr()
    non_embedding = total - int(emb.numel()) - (0 if tied or out is None else head)
    return non_embedding, head


def flops_per_answer(non_embedding_params: float, head_params: float, unshared_tokens: float) -> float:
    """FLOPs one answer needs at least: ``2 x non-embedding params x unshared tokens + 2 x head``."""
    return 2.0 * non_embedding_params * unshared_tokens + 2.0 * head_params


def floor_seconds(flops: float, rate: float) -> float:
    """Shortest time for ``flops`` at ``rate`` FLOP/s."""
    return float(flops) / float(rate)
