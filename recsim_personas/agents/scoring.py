"""Batched rating inference with a causal LM: scored distributions, sampled answers, choices.

:class:`RatingScorer` turns :class:`~recsim_personas.agents.prompts.RatingPrompt` objects into rating
distributions over a :class:`~recsim_personas.data.dataset.RatingScale`:

``score`` (default)
    One forward pass; the softmax at the answer position, read at each level's token, renormalised
    over the levels. When every level is one token (``"1"`` ... ``"5"`` for SmolLM2) that is all.
    When a level needs several tokens (half stars: ``"3.5"`` -> ``"3" "." "5"``) each level's
    sequence probability is computed with the prompt's key/value cache and one extra batched pass over
    the levels' continuations (a level that is a proper prefix of another, like ``"1"`` and ``"10"``,
    is closed with the end-of-turn token). ``outside_mass`` is the probability the model put on
    tokens other than the levels' first tokens.
``generate`` (the paper's)
    Samples up to ``max_new_tokens`` (4) tokens with temperature (0.3) and top-p, seeded, and parses
    the first number with :func:`parse_rating`; unparsable or off-scale answers are invalid (they
    count in URR). The paper says "top-p set to 50", which is not a probability: we read it as a typo
    for either top-k 50 (the Hugging Face default) or top-p 0.5, and default to ``top_p=0.9`` with
    ``top_k=None``; both are configurable.
``choice_probs``
    Probability of each of a few single-token options (leave vs stay).

Speed:
    * Mixed adapters in one pass: a ``PeftModel`` holding several named LoRA adapters gets peft's
      per-sample ``adapter_names``; a batch with a single adapter uses ``set_adapter`` (cheaper) and a
      base-model batch ``disable_adapter()``. ``None`` or ``"__base__"`` mean the base model.
    * Prefix KV cache: each prompt's user prefix is encoded once per (adapter, prefix) and its
      keys/values kept in a bounded LRU (entries and bytes). A batch of suffixes from different
      users is scored against their cached prefixes: the prefixes are left-padded to a common length,
      the suffixes left-padded after them (the hole is masked), ``position_ids`` continue each row's
      own prefix length, and the answer logits are read at the last position (``logits_to_keep=1``,
      so the LM head runs once per row). The cache is per adapter because LoRA on k/v projections
      changes it; call :meth:`RatingScorer.clear_cache` after changing adapter weights.
    * Rows are grouped by adapter and prefix before batching (``group_by_adapter``).

The pieces live in modules with one job each, shared with the served scorer
(:mod:`recsim_personas.agents.served`): :mod:`~recsim_personas.agents.tokenization` (prompt ids,
the prefix/suffix seam rule, level and option tokens), :mod:`~recsim_personas.agents.levels`
(level maths and parsing), :mod:`~recsim_personas.agents.adapters` (adapter names),
:mod:`~recsim_personas.agents.kv_cache` (the prefix KV cache), :mod:`~recsim_personas.agents.lora_router`
(the batched LoRA path) and :mod:`~recsim_personas.agents.sampling`; this module runs the model.

Models with sliding-window attention layers (Gemma 3, Mistral, Phi-3) use the prefix cache only for
batches whose padded length stays inside the window (the masked hole between prefix and suffix would
shift the windows, which count cache slots); other batches are scored from full prompts.
"""

from __future__ import annotations

import contextlib
import logging
import os
from collections.abc import Iterator, Sequence
from dataclasses import asdict, dataclass, fields
from typing import TYPE_CHECKING, Any

import numpy as np

from recsim_personas.agents.adapters import BASE_ADAPTER, resolve_adapters
from recsim_personas.agents.kv_cache import PrefixEntry, PrefixKVCache, cache_layers
from recsim_personas.agents.levels import (
    continuation_rows,
    generated_batch,
    level_distribution,
    level_logp,
    parse_rating,
)
from recsim_personas.agents.lora_router import MAX_RUNS_PER_ADAPTER, LoraRouter
from recsim_personas.agents.protocol import RatingBatch
from recsim_personas.agents.sampling import sample_next_tokens
from recsim_personas.agents.tokenization import PromptRow, PromptTokenizer, prompt_tail
from recsim_personas.data.dataset import RatingScale
from recsim_personas.errors import ConfigError, unknown_keys
from recsim_personas.hf_compat import cache_kwargs, output_cache

if TYPE_CHECKING:  # pragma: no cover
    import torch

    from recsim_personas.agents.prompts import RatingPrompt

__all__ = ["BASE_ADAPTER", "RatingScorer", "ScoringConfig", "parse_rating"]

logger = logging.getLogger(__name__)

#: The LoRA router's slice-or-gather threshold, read per batch (tests lower it to force the bmm path).
_MAX_RUNS_PER_ADAPTER = MAX_RUNS_PER_ADAPTER

_FORCE_GQA = "TRANSFORMERS_SDPA_FORCE_GQA"
#: Cache slots kept free after a batch's suffixes for continuations (multi-token levels, generation).
_RESERVE_TOKENS = 16


@dataclass(frozen=True)
class ScoringConfig:
    """Settings of a :class:`RatingScorer` as data (``RatingScorer.from_config``); see its Args.

    Example:
        >>> ScoringConfig.from_dict(ScoringConfig(max_batch=8).to_dict()) == ScoringConfig(max_batch=8)
        True
    """

    max_batch: int = 16
    prefix_cache: bool = True
    cache_entries: int = 256
    cache_bytes: int = 2**30
    group_by_adapter: bool = True
    temperature: float = 0.3
    top_p: float = 0.9
    top_k: int | None = None
    max_new_tokens: int = 4
    seed: int = 0
    fast_lora: bool = True

    def __post_init__(self) -> None:
        problems = []
        for name in ("max_batch", "cache_entries", "cache_bytes", "max_new_tokens"):
            value = getattr(self, name)
            if not isinstance(value, int) or isinstance(value, bool) or value < 1:
                problems.append(f"{name} must be an integer >= 1, got {value!r}")
        if not self.temperature >= 0:
            problems.append(f"temperature must be >= 0, got {self.temperature}")
        if not 0 < self.top_p <= 1:
            problems.append(
                f"top_p must be in (0, 1], got {self.top_p} (the paper's 'top-p 50' is not a "
                "probability; use top_k=50 for that reading)"
            )
        if self.top_k is not None and (not isinstance(self.top_k, int) or self.top_k < 1):
            problems.append(f"top_k must be an integer >= 1 or None, got {self.top_k!r}")
        if problems:
            raise ConfigError("RatingScorer settings: " + "; ".join(problems))

    def to_dict(self) -> dict[str, Any]:
        """JSON-ready dict; :meth:`from_dict` round-trips."""
        return asdict(self)

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> ScoringConfig:
        """Build from :meth:`to_dict` output; unknown keys raise ``ConfigError`` (did-you-mean)."""
        names = [f.name for f in fields(cls)]
        bad = unknown_keys(data, names)
        if bad:
            raise ConfigError(f"unknown scoring setting(s) {', '.join(bad)}; valid: {', '.join(names)}")
        return cls(**data)


class RatingScorer:
    """Rating distributions from a causal LM (optionally a ``PeftModel`` with named adapters).

    Args:
        model: A transformers causal LM, or a ``peft.PeftModel`` holding one or more named adapters.
        tokenizer: Its tokenizer (a pad token is needed; EOS is used when missing).
        scale: The rating scale whose levels are scored.
        max_batch: Rows per forward pass.
        prefix_cache: Reuse each (adapter, prefix)'s key/value cache across items.
        cache_entries: Most prefixes kept in the LRU.
        cache_bytes: Most bytes of keys/values kept in the LRU (default 1 GiB). SmolLM2-135M keeps
            46 KB per token in float32 (30 layers x keys and values x 3 heads x 64), so a 550-token
            paper-prompt prefix is about 25 MB and 1 GiB holds about 40 users: enough for the users
            of a batch of sessions, each of whose prefix is reused at every step.
        group_by_adapter: Sort rows by (adapter, prefix) before batching (fewer mixed batches).
        temperature: Sampling temperature of :meth:`generate` (0 = greedy).
        top_p: Nucleus threshold of :meth:`generate` in (0, 1].
        top_k: Optional top-k filter of :meth:`generate` (None = off).
        max_new_tokens: Tokens sampled by :meth:`generate`.
        seed: Base seed of :meth:`generate` (call ``i`` uses ``seed + i`` unless given one).
        fast_lora: Apply LoRA adapters with batched matmuls over stacked adapter weights (one
            ``bmm`` per projection for a mixed batch) instead of peft's per-adapter sub-batches;
            falls back to peft for DoRA, merged or variant adapters.

    Raises:
        ConfigError: invalid settings.
        ModelError: a level cannot be expressed (two levels tokenize the same way, or a level is a
            prefix of another and the tokenizer has no end token).
    """

    def __init__(
        self,
        model: Any,
        tokenizer: Any,
        scale: RatingScale,
        *,
        max_batch: int = 16,
        prefix_cache: bool = True,
        cache_entries: int = 256,
        cache_bytes: int = 2**30,
        group_by_adapter: bool = True,
        temperature: float = 0.3,
        top_p: float = 0.9,
        top_k: int | None = None,
        max_new_tokens: int = 4,
        seed: int = 0,
        fast_lora: bool = True,
    ) -> None:
        cfg = ScoringConfig(
            max_batch=max_batch, prefix_cache=prefix_cache, cache_entries=cache_entries,
            cache_bytes=cache_bytes, group_by_adapter=group_by_adapter, temperature=temperature,
            top_p=top_p, top_k=top_k, max_new_tokens=max_new_tokens, seed=seed, fast_lora=fast_lora,
        )
        self.config = cfg
        self.model = model
        self.tokenizer = tokenizer
        self.scale = scale
        self.max_batch = cfg.max_batch
        self.group_by_adapter = cfg.group_by_adapter
        self.temperature = cfg.temperature
        self.top_p = cfg.top_p
        self.top_k = cfg.top_k
        self.max_new_tokens = cfg.max_new_tokens
        self.seed = cfg.seed
        self._generate_calls = 0
        self._kv = PrefixKVCache(cfg.cache_entries, cfg.cache_bytes)
        self.fast_lora = cfg.fast_lora
        self._router: LoraRouter | None = None
        self.stats = {"prefix_hits": 0, "prefix_misses": 0, "rows": 0, "forward_passes": 0, "seam_fallbacks": 0}
        self.tokens = PromptTokenizer(tokenizer, split_prefix=prefix_cache, memo_entries=4 * cfg.cache_entries)
        self.pad_id = self.tokens.pad_id
        self._is_peft = hasattr(model, "peft_config") and hasattr(model, "set_adapter")
        config = self._config()
        layer_types = getattr(config, "layer_types", None) or []
        sliding = bool(getattr(config, "sliding_window", None)) and (
            not layer_types or any("sliding" in str(t) for t in layer_types)
        )
        use_window = sliding and getattr(config, "use_sliding_window", True) is not False
        #: Sliding-window size; batches whose padded length could reach it run without the cache.
        self._window: int | None = int(config.sliding_window) if use_window else None
        self.prefix_cache = bool(prefix_cache)
        self.device = next(model.parameters()).device
        import torch

        major, minor = (int(x) for x in torch.__version__.split(".")[:2])
        self._force_gqa = self.device.type == "cpu" and (major, minor) >= (2, 5)  # enable_gqa exists
        self.context_length = int(getattr(config, "max_position_embeddings", 0) or 2048)

    @classmethod
    def from_config(cls, model: Any, tokenizer: Any, scale: RatingScale, config: ScoringConfig) -> RatingScorer:
        """A scorer with the settings of ``config``."""
        return cls(model, tokenizer, scale, **config.to_dict())

    # ------------------------------------------------------------------ cache limits
    @property
    def cache_entries(self) -> int:
        """Most prefixes kept in the prefix cache (settable)."""
        return self._kv.max_entries

    @cache_entries.setter
    def cache_entries(self, value: int) -> None:
        self._kv.max_entries = int(value)
        self.tokens.memo_entries = 4 * int(value)

    @property
    def cache_bytes(self) -> int:
        """Most bytes of keys/values kept in the prefix cache (settable)."""
        return self._kv.max_bytes

    @cache_bytes.setter
    def cache_bytes(self, value: int) -> None:
        self._kv.max_bytes = int(value)

    # ------------------------------------------------------------------ model helpers
    def _config(self) -> Any:
        config = self.model.config
        return config.get_text_config(decoder=True) if hasattr(config, "get_text_config") else config

    @property
    def adapters(self) -> tuple[str, ...]:
        """Names of the LoRA adapters the model holds (empty for a plain model)."""
        return tuple(self.model.peft_config) if self._is_peft else ()

    @property
    def max_prompt_tokens(self) -> int:
        """Longest prompt that leaves room for the answer in the model's context."""
        return self.context_length - self.max_new_tokens - 4

    def check_adapters(self, names: Sequence[str | None]) -> None:
        """Raise ``AdapterError`` (with a did-you-mean) if a name is not an adapter of the model."""
        self._normalise_adapters(list(names), len(names))

    def _normalise_adapters(self, adapter_names: Sequence[str | None] | str | None, n: int) -> list[str]:
        return resolve_adapters(adapter_names, n, self.adapters)

    @contextlib.contextmanager
    def _adapters_active(self, names: Sequence[str]) -> Iterator[dict[str, Any]]:
        """Activate the adapters of one batch; yields extra forward kwargs."""
        unique = set(names)
        if not self._is_peft:
            yield {}
            return
        router = self._lora_router()
        if router is not None:
            with router.route(names, _MAX_RUNS_PER_ADAPTER):
                yield {}
            return
        if unique == {BASE_ADAPTER}:
            with self.model.disable_adapter():
                yield {}
            return
        if len(unique) == 1:
            (name,) = unique
            previous = self.model.active_adapter
            if previous != name:
                self.model.set_adapter(name, inference_mode=True)
            try:
                yield {}
            finally:
                if previous != name:
                    self.model.set_adapter(previous, inference_mode=not self._trainable(previous))
            return
        yield {"adapter_names": list(names)}

    def _lora_router(self) -> LoraRouter | None:
        """The batched-matmul LoRA path, (re)built when the set of adapters changed."""
        if not self.fast_lora:
            return None
        names = self.adapters
        if self._router is None or self._router.names != names:
            self._router = LoraRouter(self.model, names)
            if not self._router.supported:
                logger.info("LoRA router unsupported (%s); using peft's adapter_names", self._router.reason)
        return self._router if self._router.supported else None

    def _trainable(self, name: str) -> bool:
        for pname, param in self.model.named_parameters():
            if f".{name}." in pname and "lora_" in pname:
                return bool(param.requires_grad)
        return False

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

    def warm(
        self, prompts: Sequence[RatingPrompt | str], adapter_names: Sequence[str | None] | str | None = None
    ) -> int:
        """Compute and cache the prefixes of ``prompts`` (with their adapters) without scoring them.

        Returns:
            How many prefixes were computed (those already cached cost nothing). The cache keeps at
            most ``cache_entries`` / ``cache_bytes``: warm no more prefixes than it holds.
        """
        import torch

        names = self._normalise_adapters(adapter_names, len(prompts))
        ids = {(a, r[0]): r[1] for a, r in zip(names, self._rows(prompts), strict=True) if r[0]}
        before = self.stats["prefix_misses"]
        with torch.inference_mode():
            self._ensure_prefixes(list(ids), ids)
        return self.stats["prefix_misses"] - before

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

    # ------------------------------------------------------------------ levels
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

    # ------------------------------------------------------------------ public API
    def score(
        self,
        prompts: Sequence[RatingPrompt | str],
        adapter_names: Sequence[str | None] | str | None = None,
    ) -> RatingBatch:
        """Rating distributions of ``prompts`` (one forward pass per batch; no sampling).

        Args:
            prompts: :class:`RatingPrompt` objects (cacheable prefix) or full prompt strings.
            adapter_names: One adapter per prompt (``None`` / ``"__base__"`` = base model), one name
                for all, or ``None`` for the base model everywhere.

        Returns:
            :class:`RatingBatch` with ``probs`` over ``scale.levels``, ``outside_mass`` and all rows
            valid.

        Raises:
            AdapterError: an unknown adapter name (with a did-you-mean).
        """
        import torch

        n = len(prompts)
        k = self.scale.n_levels
        probs = np.zeros((n, k))
        outside = np.zeros(n)
        if n == 0:
            return RatingBatch(probs=probs, outside_mass=outside)
        with torch.inference_mode():
            for idx, rows, names in self._batches(prompts, adapter_names):
                seqs, _ = self._level_tokens(prompt_tail(prompts[int(idx[0])]))
                multi = max(len(s) for s in seqs) > 1
                logits, state = self._run_batch(rows, names, keep_cache=multi)
                p, o = self._level_probs(logits, state, seqs, names)
                probs[idx], outside[idx] = p, o
        return RatingBatch(probs=probs, outside_mass=outside)

    def choice_probs(
        self,
        prompts: Sequence[RatingPrompt | str],
        adapter_names: Sequence[str | None] | str | None = None,
        options: Sequence[str] = ("A", "B"),
    ) -> tuple[np.ndarray, np.ndarray]:
        """Probabilities of single-token ``options`` at the answer position.

        Returns:
            ``(probs (n, len(options)), outside (n,))``: ``probs`` renormalised over the options'
            first tokens; ``outside`` the mass on other tokens.

        Raises:
            ModelError: two options start with the same token.
        """
        import torch

        n = len(prompts)
        probs = np.zeros((n, len(options)))
        outside = np.zeros(n)
        if n == 0:
            return probs, outside
        with torch.inference_mode():
            for idx, rows, names in self._batches(prompts, adapter_names):
                first = self.tokens.option_tokens(prompt_tail(prompts[int(idx[0])]), options)
                logits, _ = self._run_batch(rows, names, keep_cache=False)
                p = torch.softmax(logits, dim=-1)[:, first]
                mass = p.sum(dim=-1)
                probs[idx] = (p / mass[:, None]).double().cpu().numpy()
                outside[idx] = (1.0 - mass).clamp(0, 1).double().cpu().numpy()
        return probs, outside

    def generate(
        self,
        prompts: Sequence[RatingPrompt | str],
        adapter_names: Sequence[str | None] | str | None = None,
        seed: int | None = None,
    ) -> tuple[list[str], RatingBatch]:
        """The paper's mode: sample up to ``max_new_tokens`` tokens and parse the rating.

        Args:
            prompts: As in :meth:`score`.
            adapter_names: As in :meth:`score`.
            seed: Seed of this call's sampling (default ``self.seed`` + the call count).

        Returns:
            ``(texts, batch)``: the decoded answers and a :class:`RatingBatch` whose valid rows are
            one-hot at the parsed level and whose invalid rows (unparsable or off-scale; they count
            in URR) are uniform with ``outside_mass`` 1.
        """
        import torch
        from transformers import DynamicCache  # noqa: F401  (cache type of the continued state)

        n = len(prompts)
        texts = [""] * n
        if seed is None:
            seed = self.seed + self._generate_calls
        self._generate_calls += 1
        gen = torch.Generator(device="cpu").manual_seed(int(seed))
        stop = {t for t in (self.tokenizer.eos_token_id, self.pad_id) if t is not None}
        with torch.inference_mode():
            for idx, rows, names in self._batches(prompts, adapter_names):
                logits, state = self._run_batch(rows, names, keep_cache=True)
                cache, mask, next_pos = state
                bsz = len(rows)
                done = torch.zeros(bsz, dtype=torch.bool)
                out_tokens: list[list[int]] = [[] for _ in range(bsz)]
                for step in range(self.max_new_tokens):
                    tokens = self._sample(logits, gen)
                    for i in range(bsz):
                        if not done[i]:
                            t = int(tokens[i])
                            if t in stop:
                                done[i] = True
                            else:
                                out_tokens[i].append(t)
                    if bool(done.all()) or step == self.max_new_tokens - 1:
                        break
                    mask = torch.cat([mask, torch.ones((bsz, 1), dtype=mask.dtype)], dim=1)
                    with self._adapters_active(names) as extra:
                        out = self._forward(
                            input_ids=tokens[:, None].to(self.device),
                            attention_mask=mask.to(self.device),
                            position_ids=(next_pos + step)[:, None].to(self.device),
                            **cache_kwargs(cache),
                            use_cache=True,
                            logits_to_keep=1,
                            **extra,
                        )
                    cache = output_cache(out)
                    logits = out.logits[:, -1, :].float()
                for i, row in enumerate(idx):
                    texts[int(row)] = self.tokenizer.decode(out_tokens[i], skip_special_tokens=True)
        return texts, generated_batch(texts, self.scale)

    def _sample(self, logits: torch.Tensor, gen: torch.Generator) -> torch.Tensor:
        return sample_next_tokens(logits, gen, temperature=self.temperature, top_p=self.top_p, top_k=self.top_k)


def _no_stem(stem: tuple[int, ...], token: int) -> np.ndarray:  # pragma: no cover - never called
    raise AssertionError("single-token sequences have no stems")
