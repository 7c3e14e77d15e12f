"""The in-process scorer's multi-token levels: each level's continuation tokens after the answer.

When a rating level needs several tokens (half stars: ``"3.5"`` -> ``"3" "." "5"``) its probability
is the product of its tokens' probabilities, each given the prompt and the tokens before it.
:class:`LevelContinuation` computes them from the prompt's key/value cache in one extra batched pass
over the levels' continuations: all branches of a prompt in one row kept apart by a 4D tree
attention mask (sdpa and eager attention), or, for attention implementations without custom masks,
one row per branch. The level maths itself is :mod:`~recsim_personas.agents.levels` (shared with the
served scorer).
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import TYPE_CHECKING, Any

import numpy as np

from recsim_personas.agents.kv_cache import cache_layers
from recsim_personas.agents.levels import continuation_rows, level_distribution, level_logp
from recsim_personas.agents.tokenization import PromptTokenizer, prompt_tail
from recsim_personas.data.dataset import RatingScale
from recsim_personas.hf_compat import cache_kwargs

if TYPE_CHECKING:  # pragma: no cover
    import torch

    from recsim_personas.agents.prompts import RatingPrompt

__all__ = ["LevelContinuation"]


class LevelContinuation:
    """Mixin of :class:`~recsim_personas.agents.scoring.RatingScorer`: level probabilities from the
    answer logits and, for multi-token levels, one continuation pass (see the module docstring)."""

    model: Any
    device: Any
    pad_id: int
    scale: RatingScale
    tokens: PromptTokenizer

    if TYPE_CHECKING:  # pragma: no cover - provided by RatingScorer

        def _config(self) -> Any: ...
        def _adapters_active(self, names: Sequence[str]) -> Any: ...
        def _forward(self, **kwargs: Any) -> Any: ...

    def continuation_tokens(self, prompt: RatingPrompt | str) -> int:
        """Tokens :meth:`score` processes after the answer position of ``prompt``.

        0 when every level is one token; for half stars written "0.5" ... "5.0" with SmolLM2 12:
        each digit and the "." after it, scored in one tree-masked pass.
        """
        seqs, _ = self._level_tokens(prompt_tail(prompt))
        return sum(len(r) for r in continuation_rows(seqs))

    def _level_tokens(self, tail: str) -> tuple[list[list[int]], list[int]]:
        """Token sequences of the levels after a prompt ending in ``tail``, and the first tokens."""
        return self.tokens.level_tokens(tail, self.scale)

    def _level_probs(
        self,
        logits: torch.Tensor,
        state: Any,
        seqs: list[list[int]],
        names: Sequence[str],
    ) -> tuple[np.ndarray, np.ndarray]:
        """``(probs (B, n_levels), outside (B,))`` from answer logits (+ continuation when needed)."""
        import torch

        firsts = sorted({s[0] for s in seqs})
        lp_first = torch.log_softmax(logits, dim=-1)[:, firsts].double().cpu().numpy()
        column = {t: lp_first[:, i] for i, t in enumerate(firsts)}
        logp = level_logp([s[:1] for s in seqs], column.__getitem__, _no_stem)
        if max(len(s) for s in seqs) > 1:
            logp = logp + self._continuation_logp(state, seqs, names)
        return level_distribution(logp, np.exp(lp_first).sum(axis=1))

    def _continuation_logp(self, state: Any, seqs: list[list[int]], names: Sequence[str]) -> np.ndarray:
        """``(B, n_levels)``: sum over each level's tokens after the first of log p(token | prompt,
        earlier tokens)."""
        rows = continuation_rows(seqs)
        impl = getattr(self._config(), "_attn_implementation", None)
        if impl in ("sdpa", "eager"):
            return self._continuation_tree(state, seqs, rows, names, impl)
        return self._continuation_repeat(state, seqs, rows, names)

    def _continuation_tree(
        self,
        state: Any,
        seqs: list[list[int]],
        rows: list[tuple[int, ...]],
        names: Sequence[str],
        impl: str,
    ) -> np.ndarray:
        """All continuation branches of a prompt in one row, kept apart by a 4D tree attention mask.

        Branch ``j`` (tokens ``rows[j]``) sees the prompt and its own earlier tokens only, at
        positions continuing the prompt's, so each branch is computed exactly as if it were alone,
        without copying the prompt's key/value cache per branch.
        """
        import torch

        cache, mask, next_pos = state
        bsz, past = mask.shape
        tokens = [t for r in rows for t in r]
        branch = [j for j, r in enumerate(rows) for _ in r]
        depth = [d for r in rows for d in range(len(r))]
        offset = np.cumsum([0] + [len(r) for r in rows[:-1]]).tolist()
        n = len(tokens)
        b_ids = torch.tensor(branch)
        d_ids = torch.tensor(depth)
        tree = (b_ids[:, None] == b_ids[None, :]) & (d_ids[None, :] <= d_ids[:, None])  # (n, n)
        keep = torch.cat([mask.bool()[:, None, :].expand(bsz, n, past), tree.expand(bsz, n, n)], dim=2)
        keep = keep[:, None].to(self.device)
        if impl == "eager":
            dtype = next(self.model.parameters()).dtype
            attn = torch.zeros(keep.shape, dtype=dtype, device=self.device)
            attn = attn.masked_fill(~keep, torch.finfo(dtype).min)
        else:
            attn = keep
        ids = torch.tensor(tokens, dtype=torch.long)[None].expand(bsz, n)
        pos = next_pos[:, None] + d_ids[None, :]
        with self._adapters_active(names) as extra:
            out = self._forward(
                input_ids=ids.to(self.device),
                attention_mask=attn,
                position_ids=pos.to(self.device),
                **cache_kwargs(cache),
                use_cache=False,
                logits_to_keep=n,
                **extra,
            )
        lp = torch.log_softmax(out.logits.float(), dim=-1)  # (bsz, n, vocab)

        def after(stem: tuple[int, ...], token: int) -> np.ndarray:
            j = next(j for j, r in enumerate(rows) if r[: len(stem)] == stem)
            return lp[:, offset[j] + len(stem) - 1, token].double().cpu().numpy()

        return level_logp(seqs, lambda token: np.zeros(bsz), after)

    def _continuation_repeat(
        self, state: Any, seqs: list[list[int]], rows: list[tuple[int, ...]], names: Sequence[str]
    ) -> np.ndarray:
        """Fallback for attention implementations without custom 4D masks: one row per branch."""
        import torch
        from transformers import DynamicCache

        cache, mask, next_pos = state
        m, width = len(rows), max(len(r) for r in rows)
        bsz = mask.shape[0]
        total = np.zeros((bsz, len(seqs)))
        layers = cache_layers(cache)
        # Chunk the batch so the repeated cache stays under ~256 MB.
        per_row = sum((k.numel() + v.numel()) * k.element_size() for k, v in layers) // max(bsz, 1) * m
        chunk = max(1, int(256 * 2**20 // max(per_row, 1)))
        cont_ids = torch.full((m, width), self.pad_id, dtype=torch.long)
        cont_mask = torch.zeros((m, width), dtype=torch.long)
        for j, r in enumerate(rows):
            cont_ids[j, : len(r)] = torch.tensor(r)
            cont_mask[j, : len(r)] = 1
        for start in range(0, bsz, chunk):
            sl = slice(start, min(bsz, start + chunk))
            b = sl.stop - sl.start
            rep = DynamicCache(
                ddp_cache_data=[
                    (k[sl].repeat_interleave(m, dim=0), v[sl].repeat_interleave(m, dim=0)) for k, v in layers
                ]
            )
            ids = cont_ids.repeat(b, 1)
            full_mask = torch.cat([mask[sl].repeat_interleave(m, dim=0), cont_mask.repeat(b, 1)], dim=1)
            pos = next_pos[sl].repeat_interleave(m)[:, None] + torch.arange(width)[None, :]
            with self._adapters_active([n for n in names[sl] for _ in range(m)]) as extra:
                out = self._forward(
                    input_ids=ids.to(self.device),
                    attention_mask=full_mask.to(self.device),
                    position_ids=pos.to(self.device),
                    **cache_kwargs(rep),
                    use_cache=False,
                    logits_to_keep=width,
                    **extra,
                )
            lp = torch.log_softmax(out.logits.float(), dim=-1).view(b, m, width, -1)

            def after(stem: tuple[int, ...], token: int, lp: torch.Tensor = lp) -> np.ndarray:
                j = next(j for j, r in enumerate(rows) if r[: len(stem)] == stem)
                return lp[:, j, len(stem) - 1, token].double().cpu().numpy()

            total[sl] = level_logp(seqs, lambda token, b=b: np.zeros(b), after)
        return total


def _no_stem(stem: tuple[int, ...], token: int) -> np.ndarray:  # pragma: no cover - never called
    raise AssertionError("single-token sequences have no stems")
