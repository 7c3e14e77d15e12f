"""The in-process scorer's forward passes: prompts batched against their cached user prefixes.

:class:`PrefixBatchRunner` is the part of :class:`~recsim_personas.agents.scoring.RatingScorer`
that runs the model over batches of prompts. Each prompt's user prefix is encoded once per
(adapter, prefix) and its keys/values kept in the scorer's
:class:`~recsim_personas.agents.kv_cache.PrefixKVCache`; a batch of suffixes from different users
is scored against their cached prefixes: the prefixes are left-padded to a common length, the
suffixes left-padded after them (the hole is masked), ``position_ids`` continue each row's own
prefix length, and the answer logits are read at the last position (``logits_to_keep=1``, so the
LM head runs once per row). Rows are ordered (by adapter and prefix, or by suffix length) so that
a batch pads as little as possible.

Models with sliding-window attention layers run batches whose padded length could reach the
window from full prompts (the masked hole would shift the windows, which count cache slots).
"""

from __future__ import annotations

import os
from collections.abc import Iterator, Sequence
from typing import TYPE_CHECKING, Any

import numpy as np

from recsim_personas.agents.kv_cache import PrefixEntry, PrefixKVCache, cache_layers
from recsim_personas.agents.tokenization import PromptRow, PromptTokenizer
from recsim_personas.hf_compat import cache_kwargs, output_cache

if TYPE_CHECKING:  # pragma: no cover
    import torch

    from recsim_personas.agents.prompts import RatingPrompt

__all__ = ["PrefixBatchRunner"]

_FORCE_GQA = "TRANSFORMERS_SDPA_FORCE_GQA"
#: Cache slots kept free after a batch's suffixes for continuations (multi-token levels, generation).
_RESERVE_TOKENS = 16


class PrefixBatchRunner:
    """Mixin of :class:`~recsim_personas.agents.scoring.RatingScorer`: batched, prefix-cached
    forward passes (see the module docstring). The scorer provides the attributes below and
    ``_adapters_active`` / ``_normalise_adapters`` / ``_lora_router``."""

    model: Any
    device: Any
    max_batch: int
    pad_id: int
    group_by_adapter: bool
    stats: dict[str, int]
    tokens: PromptTokenizer
    _kv: PrefixKVCache
    _router: Any
    _window: int | None
    _force_gqa: bool

    if TYPE_CHECKING:  # pragma: no cover - provided by RatingScorer

        def _adapters_active(self, names: Sequence[str]) -> Any: ...
        def _normalise_adapters(self, adapter_names: Any, n: int) -> list[str]: ...
        def _lora_router(self) -> Any: ...

    def _forward(self, **kwargs: Any) -> Any:
        self.stats["forward_passes"] += 1
        if not self._force_gqa:
            return self.model(**kwargs)
        # transformers expands grouped key/value heads to all query heads (a copy of the whole
        # cache per layer) whenever sdpa gets a mask; torch's CPU sdpa handles masked GQA itself,
        # which is 10-20% faster here with identical results. The switch is read per call.
        previous = os.environ.get(_FORCE_GQA)
        os.environ[_FORCE_GQA] = "1"
        try:
            return self.model(**kwargs)
        finally:
            if previous is None:
                os.environ.pop(_FORCE_GQA, None)
            else:
                os.environ[_FORCE_GQA] = previous

    # ------------------------------------------------------------------ tokens
    def _encode(self, text: str) -> list[int]:
        return self.tokens.encode(text)

    def _rows(self, prompts: Sequence[RatingPrompt | str]) -> list[PromptRow]:
        """Per prompt: (prefix text or "", prefix ids, suffix ids); unsplittable prompts get no prefix."""
        rows, fallbacks = self.tokens.rows(prompts)
        self.stats["seam_fallbacks"] += fallbacks
        return rows

    # ------------------------------------------------------------------ prefix cache
    def clear_cache(self) -> None:
        """Forget all cached prefixes and stacked adapter weights (call after changing adapters)."""
        self._kv.clear()
        self._router = None

    def cache_info(self) -> dict[str, int]:
        """Entries, bytes, hits and misses of the prefix cache."""
        return {
            "entries": len(self._kv),
            "bytes": self._kv.nbytes,
            "hits": self.stats["prefix_hits"],
            "misses": self.stats["prefix_misses"],
        }

    def _ensure_prefixes(
        self, keys: Sequence[tuple[str, str]], ids: dict[tuple[str, str], list[int]]
    ) -> dict[tuple[str, str], PrefixEntry]:
        """Cache entries of ``keys`` (adapter, prefix), encoding the missing ones in batches."""
        import torch

        found: dict[tuple[str, str], PrefixEntry] = {}
        missing: list[tuple[str, str]] = []
        for key in dict.fromkeys(keys):
            entry = self._kv.get(key)
            if entry is None:
                missing.append(key)
            else:
                found[key] = entry
                self.stats["prefix_hits"] += 1
        missing.sort()
        for start in range(0, len(missing), self.max_batch):
            chunk = missing[start : start + self.max_batch]
            lengths = [len(ids[k]) for k in chunk]
            width = max(lengths)
            batch = torch.full((len(chunk), width), self.pad_id, dtype=torch.long)
            for i, k in enumerate(chunk):
                batch[i, : lengths[i]] = torch.tensor(ids[k])
            # Right padding: real tokens never attend to the pads after them (causal attention).
            with self._adapters_active([k[0] for k in chunk]) as extra:
                out = self._forward(
                    input_ids=batch.to(self.device), use_cache=True, logits_to_keep=1, **extra
                )
            layers = cache_layers(output_cache(out))
            for i, k in enumerate(chunk):
                entry = PrefixEntry.from_layers(layers, i, lengths[i])
                found[k] = entry
                self._kv.put(k, entry)
                self.stats["prefix_misses"] += 1
        return found

    # ------------------------------------------------------------------ core pass
    def _run_batch(
        self,
        rows: Sequence[tuple[str, list[int], list[int]]],
        names: Sequence[str],
        *,
        keep_cache: bool,
        reserve: int = _RESERVE_TOKENS,
    ) -> tuple[torch.Tensor, Any]:
        """Logits at each row's answer position ``(B, V)`` and, if asked, the state to continue from.

        The rows' prefix caches are copied once into one buffer with room for the suffixes (and, with
        ``keep_cache``, ``reserve`` more tokens for continuations), which the forward passes fill in
        place (:func:`~recsim_personas.agents.kv_cache.buffer_layer`) instead of concatenating a new cache per layer and pass.
        """
        import torch

        if (
            self._window is not None
            and any(r[0] for r in rows)
            and max(len(r[1]) for r in rows) + max(len(r[2]) for r in rows) + 16 > self._window
        ):
            # The masked hole between a left-padded prefix and its suffix would shift the sliding
            # windows (they count cache slots): score these rows from full prompts.
            rows = [("", [], r[1] + r[2]) for r in rows]
        keys = [(a, r[0]) for a, r in zip(names, rows, strict=True)]
        cached = [k for k in keys if k[1]]
        entries = (
            self._ensure_prefixes(cached, {k: r[1] for k, r in zip(keys, rows, strict=True) if k[1]})
            if cached
            else {}
        )
        bsz = len(rows)
        p_len = [entries[k].length if k[1] else 0 for k in keys]
        s_len = [len(r[2]) for r in rows]
        p_max, s_max = max(p_len), max(s_len)
        input_ids = torch.full((bsz, s_max), self.pad_id, dtype=torch.long)
        mask = torch.zeros((bsz, p_max + s_max), dtype=torch.long)
        positions = torch.zeros((bsz, s_max), dtype=torch.long)
        for i, r in enumerate(rows):
            input_ids[i, s_max - s_len[i] :] = torch.tensor(r[2])
            mask[i, p_max - p_len[i] : p_max] = 1
            mask[i, p_max + s_max - s_len[i] :] = 1
            positions[i, s_max - s_len[i] :] = torch.arange(p_len[i], p_len[i] + s_len[i])
            positions[i, : s_max - s_len[i]] = p_len[i]
        past = None
        if p_max > 0:
            width = p_max + s_max + (reserve if keep_cache else 0)
            past = PrefixKVCache.batch_cache(
                [entries[k] if k[1] else None for k in keys], p_max, width, self.device
            )
        with self._adapters_active(names) as extra:
            out = self._forward(
                input_ids=input_ids.to(self.device),
                attention_mask=mask.to(self.device),
                position_ids=positions.to(self.device),
                **cache_kwargs(past),
                use_cache=keep_cache,
                logits_to_keep=1,
                **extra,
            )
        logits = out.logits[:, -1, :].float()
        state = None
        if keep_cache:
            next_pos = torch.tensor([p + s for p, s in zip(p_len, s_len, strict=True)], dtype=torch.long)
            state = (output_cache(out), mask, next_pos)
        return logits, state

    def _batches(
        self, prompts: Sequence[RatingPrompt | str], adapter_names: Any
    ) -> Iterator[tuple[np.ndarray, list[tuple[str, list[int], list[int]]], list[str]]]:
        n = len(prompts)
        names = self._normalise_adapters(adapter_names, n)
        rows = self._rows(prompts)
        self.stats["rows"] += n
        if self.group_by_adapter and len(set(names)) > 1 and self._lora_router() is None:
            # peft's per-sample adapter_names loops over the adapters in every layer: fewer mixes.
            order = sorted(range(n), key=lambda i: (names[i], rows[i][0], len(rows[i][2])))
        else:
            # Mixed adapters cost nothing extra (one base model, or the batched LoRA router):
            # order by suffix length so that a batch pads its suffixes as little as possible.
            order = sorted(range(n), key=lambda i: (len(rows[i][2]), len(rows[i][1]), rows[i][0]))
        for start in range(0, n, self.max_batch):
            chunk = order[start : start + self.max_batch]
            # Within a batch the order does not change its padding: rows of one adapter made
            # contiguous let the LoRA router use one plain matmul per adapter (no weight gathers).
            idx = np.asarray(sorted(chunk, key=lambda i: names[i]))
            yield idx, [rows[i] for i in idx], [names[i] for i in idx]
