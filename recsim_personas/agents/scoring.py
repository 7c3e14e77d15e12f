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

Models with sliding-window attention layers (Gemma 3, Mistral, Phi-3) use the prefix cache only for
batches whose padded length stays inside the window (the masked hole between prefix and suffix would
shift the windows, which count cache slots); other batches are scored from full prompts.
"""

from __future__ import annotations

import contextlib
import difflib
import functools
import logging
import os
import re
import warnings
from collections import OrderedDict
from collections.abc import Callable, Iterator, Sequence
from dataclasses import asdict, dataclass, fields
from typing import TYPE_CHECKING, Any

import numpy as np

from recsim_personas.agents.protocol import RatingBatch
from recsim_personas.data.dataset import RatingScale
from recsim_personas.errors import (
    AdapterError,
    ConfigError,
    ModelError,
    RecsimWarning,
    unknown_keys,
)
from recsim_personas.hf_compat import cache_kwargs, output_cache

if TYPE_CHECKING:  # pragma: no cover
    import torch

    from recsim_personas.agents.prompts import RatingPrompt

__all__ = ["BASE_ADAPTER", "RatingScorer", "ScoringConfig", "parse_rating"]

logger = logging.getLogger(__name__)

#: Adapter name meaning "the base model, no adapter" (peft's own convention for ``adapter_names``).
BASE_ADAPTER = "__base__"

#: A mixed batch whose rows fall into at most this many runs per adapter uses contiguous slices;
#: more scattered batches use the gathered-weights ``bmm`` path.
_MAX_RUNS_PER_ADAPTER = 2

_FORCE_GQA = "TRANSFORMERS_SDPA_FORCE_GQA"
#: Cache slots kept free after a batch's suffixes for continuations (multi-token levels, generation).
_RESERVE_TOKENS = 16

_NUMBER = re.compile(r"(?<![\d.])\d+(?:\.\d+)?")


def parse_rating(text: str, scale: RatingScale) -> float | None:
    """The rating in a generated answer: the first number in ``text``, if it lies on ``scale``.

    ``"4"`` -> 4, ``"A 5."`` -> 5, ``"I'd say 3.5 stars"`` -> 3.5 on half stars (None on 1-5),
    ``"five"``, ``""`` and ``"6"`` (off the 1-5 scale) -> None. Number words are not read: the prompt
    asks for digits, and an answer in words counts as unparsable, as with the paper's regex.
    """
    match = _NUMBER.search(text or "")
    if match is None:
        return None
    value = float(match.group(0))
    if not bool(scale.contains(value)):
        return None
    return float(scale.snap(value))


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


@dataclass
class _PrefixEntry:
    kv: torch.Tensor  # (layers, 2, kv_heads, length, head_dim)
    length: int
    nbytes: int


def _lcp(a: Sequence[int], b: Sequence[int]) -> int:
    n = 0
    for x, y in zip(a, b, strict=False):
        if x != y:
            break
        n += 1
    return n


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
        self.cache_entries = cfg.cache_entries
        self.cache_bytes = cfg.cache_bytes
        self.group_by_adapter = cfg.group_by_adapter
        self.temperature = cfg.temperature
        self.top_p = cfg.top_p
        self.top_k = cfg.top_k
        self.max_new_tokens = cfg.max_new_tokens
        self.seed = cfg.seed
        self._generate_calls = 0
        self._cache: OrderedDict[tuple[str, str], _PrefixEntry] = OrderedDict()
        self._cache_nbytes = 0
        self._token_cache: OrderedDict[str, list[int]] = OrderedDict()
        self._level_cache: dict[str, tuple[list[list[int]], list[int]]] = {}
        self.fast_lora = cfg.fast_lora
        self._router: _LoraRouter | None = None
        self.stats = {"prefix_hits": 0, "prefix_misses": 0, "rows": 0, "forward_passes": 0, "seam_fallbacks": 0}
        self._warned_seam = False

        if tokenizer.pad_token_id is None:
            tokenizer.pad_token = tokenizer.eos_token
        self.pad_id = int(tokenizer.pad_token_id if tokenizer.pad_token_id is not None else 0)
        bos = tokenizer.bos_token_id
        probe = tokenizer("a")["input_ids"]
        self._bos = [int(bos)] if bos is not None and probe and probe[0] == bos else []
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
        if adapter_names is None:
            return [BASE_ADAPTER] * n
        if isinstance(adapter_names, str):
            adapter_names = [adapter_names] * n
        names = [BASE_ADAPTER if a is None else str(a) for a in adapter_names]
        if len(names) != n:
            raise ConfigError(f"adapter_names has {len(names)} entries for {n} prompts")
        available = self.adapters
        for name in sorted(set(names) - {BASE_ADAPTER}):
            if name not in available:
                if not available:
                    raise AdapterError(
                        f"adapter {name!r} requested but the model holds no adapters; load them with "
                        "recsim_personas.agents.llm.load_adapters(model, {name: path}) or pass None "
                        "for the base model"
                    )
                close = difflib.get_close_matches(name, list(available), n=1)
                hint = f" Did you mean {close[0]!r}?" if close else ""
                raise AdapterError(
                    f"unknown adapter {name!r}; the model holds {sorted(available)}.{hint}"
                )
        return names

    @contextlib.contextmanager
    def _adapters_active(self, names: Sequence[str]) -> Iterator[dict[str, Any]]:
        """Activate the adapters of one batch; yields extra forward kwargs."""
        unique = set(names)
        if not self._is_peft:
            yield {}
            return
        router = self._lora_router()
        if router is not None:
            with router.route(names):
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

    def _lora_router(self) -> _LoraRouter | None:
        """The batched-matmul LoRA path, (re)built when the set of adapters changed."""
        if not self.fast_lora:
            return None
        names = self.adapters
        if self._router is None or self._router.names != names:
            self._router = _LoraRouter(self.model, names)
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
        return list(self.tokenizer(text, add_special_tokens=False)["input_ids"])

    def _prefix_ids(self, prefix: str) -> list[int]:
        ids = self._token_cache.get(prefix)
        if ids is None:
            ids = self._encode(prefix)
            if self._bos and not prefix.startswith(self.tokenizer.bos_token or "\0"):
                ids = self._bos + ids
            self._token_cache[prefix] = ids
            if len(self._token_cache) > 4 * self.cache_entries:
                self._token_cache.popitem(last=False)
        else:
            self._token_cache.move_to_end(prefix)
        return ids

    def _rows(self, prompts: Sequence[RatingPrompt | str]) -> list[tuple[str, list[int], list[int]]]:
        """Per prompt: (prefix text or "", prefix ids, suffix ids); unsplittable prompts get no prefix."""
        rows = []
        for p in prompts:
            prefix, suffix = ("", p) if isinstance(p, str) else (p.prefix, p.suffix)
            if not prefix or not self.prefix_cache:
                full = self._encode(prefix + suffix)
                if self._bos and not (prefix + suffix).startswith(self.tokenizer.bos_token or "\0"):
                    full = self._bos + full
                rows.append(("", [], full))
                continue
            pids = self._prefix_ids(prefix)
            sids = self._encode(suffix)
            # Every prompt is checked (one extra tokenization, well under 1% of a forward pass): a
            # suffix that tokenizes differently at the seam is scored from its full text instead.
            joint = self._encode(prefix + suffix)
            if joint != pids[len(self._bos) :] + sids:
                if not self._warned_seam:
                    warnings.warn(
                        "a prompt's prefix and suffix tokenize differently apart than together; such "
                        "prompts are scored from their full text, without the prefix cache (split "
                        "prompts before a space-led word or a blank line, as "
                        "recsim_personas.agents.prompts does)",
                        RecsimWarning,
                        stacklevel=3,
                    )
                    self._warned_seam = True
                self.stats["seam_fallbacks"] += 1
                rows.append(("", [], pids[: len(self._bos)] + joint))
                continue
            rows.append((prefix, pids, sids))
        return rows

    # ------------------------------------------------------------------ prefix cache
    def clear_cache(self) -> None:
        """Forget all cached prefixes and stacked adapter weights (call after changing adapters)."""
        self._cache.clear()
        self._cache_nbytes = 0
        self._router = None

    def cache_info(self) -> dict[str, int]:
        """Entries, bytes, hits and misses of the prefix cache."""
        return {
            "entries": len(self._cache),
            "bytes": self._cache_nbytes,
            "hits": self.stats["prefix_hits"],
            "misses": self.stats["prefix_misses"],
        }

    def _store(self, key: tuple[str, str], entry: _PrefixEntry) -> None:
        self._cache[key] = entry
        self._cache_nbytes += entry.nbytes
        while len(self._cache) > 1 and (
            len(self._cache) > self.cache_entries or self._cache_nbytes > self.cache_bytes
        ):
            _, old = self._cache.popitem(last=False)
            self._cache_nbytes -= old.nbytes

    def _ensure_prefixes(
        self, keys: Sequence[tuple[str, str]], ids: dict[tuple[str, str], list[int]]
    ) -> dict[tuple[str, str], _PrefixEntry]:
        """Cache entries of ``keys`` (adapter, prefix), encoding the missing ones in batches."""
        import torch

        found: dict[tuple[str, str], _PrefixEntry] = {}
        missing: list[tuple[str, str]] = []
        for key in dict.fromkeys(keys):
            entry = self._cache.get(key)
            if entry is None:
                missing.append(key)
            else:
                self._cache.move_to_end(key)
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
            layers = _cache_layers(output_cache(out))
            for i, k in enumerate(chunk):
                kv = torch.stack(
                    [torch.stack((key[i, :, : lengths[i]], val[i, :, : lengths[i]])) for key, val in layers]
                ).contiguous()
                entry = _PrefixEntry(kv=kv, length=lengths[i], nbytes=kv.numel() * kv.element_size())
                found[k] = entry
                self._store(k, entry)
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
        place (``_buffer_layer``) instead of concatenating a new cache per layer and pass.
        """
        import torch
        from transformers import DynamicCache

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
            first = next(entries[k] for k in keys if k[1])
            n_layers, _, heads, _, dim = first.kv.shape
            width = p_max + s_max + (reserve if keep_cache else 0)
            kv = torch.empty((n_layers, 2, bsz, heads, width, dim), dtype=first.kv.dtype, device=self.device)
            for i, k in enumerate(keys):
                # Padding slots are masked, but must be finite: 0 x NaN would still poison the sum.
                kv[:, :, i, :, : p_max - p_len[i]].zero_()
                if k[1]:
                    kv[:, :, i, :, p_max - p_len[i] : p_max] = entries[k].kv
            past = DynamicCache()
            past.layers = [_buffer_layer(kv[layer, 0], kv[layer, 1], p_max) for layer in range(n_layers)]
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
        seqs, _ = self._level_tokens(_tail(prompt))
        return sum(len(r) for r in _continuation_rows(seqs))

    def _level_tokens(self, tail: str) -> tuple[list[list[int]], list[int]]:
        """Token sequences of the levels after a prompt ending in ``tail``, and the first tokens."""
        cached = self._level_cache.get(tail)
        if cached is not None:
            return cached
        base = self._encode(tail)
        seqs = []
        texts = [self.scale.format(v) for v in self.scale.levels]
        for text in texts:
            ids = self._encode(tail + text)
            if ids[: len(base)] != base or len(ids) == len(base):
                raise ModelError(
                    f"level {text!r} merges with the end of the prompt ({tail[-20:]!r}) when tokenized; "
                    "end prompts with a newline or a special token (the chat templates do)"
                )
            seqs.append(ids[len(base) :])
        for i, a in enumerate(seqs):
            for j, b in enumerate(seqs):
                if i != j and a == b:
                    raise ModelError(
                        f"rating levels {texts[i]!r} and {texts[j]!r} tokenize identically; this "
                        "tokenizer cannot express the scale"
                    )
        end = self.tokenizer.eos_token_id
        closed = []
        for i, a in enumerate(seqs):
            if any(j != i and len(b) > len(a) and b[: len(a)] == a for j, b in enumerate(seqs)):
                if end is None:
                    raise ModelError(
                        f"level {texts[i]!r} is a prefix of another level and the tokenizer has no "
                        "end token to close it; this scale cannot be scored with this tokenizer"
                    )
                a = [*a, int(end)]
            closed.append(a)
        firsts = sorted({s[0] for s in closed})
        result = (closed, firsts)
        self._level_cache[tail] = result
        return result

    def _level_probs(
        self,
        logits: torch.Tensor,
        state: Any,
        seqs: list[list[int]],
        names: Sequence[str],
    ) -> tuple[np.ndarray, np.ndarray]:
        """``(probs (B, n_levels), outside (B,))`` from answer logits (+ continuation when needed)."""
        import torch

        logp0 = torch.log_softmax(logits, dim=-1)
        firsts = sorted({s[0] for s in seqs})
        outside = 1.0 - logp0[:, firsts].exp().sum(dim=-1)
        logp = torch.stack([logp0[:, s[0]] for s in seqs], dim=1)
        if max(len(s) for s in seqs) > 1:
            logp = logp + self._continuation_logp(state, seqs, names)
        probs = torch.softmax(logp, dim=1)
        return probs.double().cpu().numpy(), outside.clamp(0.0, 1.0).double().cpu().numpy()

    def _continuation_logp(self, state: Any, seqs: list[list[int]], names: Sequence[str]) -> torch.Tensor:
        """Sum over each level's tokens after the first of log p(token | prompt, earlier tokens)."""
        rows = _continuation_rows(seqs)
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
    ) -> torch.Tensor:
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
        total = torch.zeros((bsz, len(seqs)), dtype=torch.float32, device=lp.device)
        for li, s in enumerate(seqs):
            for t in range(1, len(s)):
                j = next(j for j, r in enumerate(rows) if r[:t] == tuple(s[:t]))
                total[:, li] += lp[:, offset[j] + t - 1, s[t]]
        return total

    def _continuation_repeat(
        self, state: Any, seqs: list[list[int]], rows: list[tuple[int, ...]], names: Sequence[str]
    ) -> torch.Tensor:
        """Fallback for attention implementations without custom 4D masks: one row per branch."""
        import torch
        from transformers import DynamicCache

        cache, mask, next_pos = state
        m, width = len(rows), max(len(r) for r in rows)
        bsz = mask.shape[0]
        total = torch.zeros((bsz, len(seqs)), dtype=torch.float32)
        layers = _cache_layers(cache)
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
            for li, s in enumerate(seqs):
                for t in range(1, len(s)):
                    stem = tuple(s[:t])
                    j = next(j for j, r in enumerate(rows) if r[:t] == stem)
                    total[sl, li] += lp[:, j, t - 1, s[t]].cpu()
        return total.to(self.device)

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
                seqs, _ = self._level_tokens(_tail(prompts[int(idx[0])]))
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
                tail = _tail(prompts[int(idx[0])])
                base = self._encode(tail)
                first = []
                for opt in options:
                    ids = self._encode(tail + opt)
                    if ids[: len(base)] != base or len(ids) == len(base):
                        raise ModelError(f"option {opt!r} merges with the end of the prompt when tokenized")
                    first.append(ids[len(base)])
                if len(set(first)) != len(first):
                    raise ModelError(
                        f"options {list(options)} share their first token; choose options that start "
                        "with different single tokens (e.g. 'A' / 'B')"
                    )
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
        k = self.scale.n_levels
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
        parsed = [parse_rating(t, self.scale) for t in texts]
        valid = np.array([p is not None for p in parsed], dtype=bool)
        probs = np.full((n, k), 1.0 / k)
        levels = self.scale.levels
        for i, p in enumerate(parsed):
            if p is not None:
                probs[i] = 0.0
                probs[i, int(np.argmin(np.abs(levels - p)))] = 1.0
        outside = np.where(valid, 0.0, 1.0)
        return texts, RatingBatch(probs=probs, outside_mass=outside, valid=valid)

    def _sample(self, logits: torch.Tensor, gen: torch.Generator) -> torch.Tensor:
        import torch

        logits = logits.float().cpu()
        if self.temperature == 0:
            return logits.argmax(dim=-1)
        logits = logits / self.temperature
        if self.top_k is not None:
            kth = torch.topk(logits, min(self.top_k, logits.shape[-1]), dim=-1).values[:, -1:]
            logits = logits.masked_fill(logits < kth, float("-inf"))
        probs = torch.softmax(logits, dim=-1)
        if self.top_p < 1.0:
            sorted_p, order = torch.sort(probs, dim=-1, descending=True)
            before = sorted_p.cumsum(dim=-1) - sorted_p
            sorted_p = sorted_p.masked_fill(before >= self.top_p, 0.0)
            probs = torch.zeros_like(probs).scatter(-1, order, sorted_p)
        return torch.multinomial(probs, 1, generator=gen)[:, 0]


class _LoraRouter:
    """Per-row LoRA adapters by batched matmuls over stacked weights (inference only, no dropout).

    peft's ``adapter_names`` path gathers each adapter's rows, runs that adapter's A and B on them
    and scatters the result back, per projection; on CPU the gathers and scatters cost more than the
    LoRA maths. Here every LoRA ``Linear`` gets its adapters stacked once, ``A`` as ``(n + 1, r, in)``
    and ``B * scaling`` as ``(n + 1, out, r)`` with index 0 all zeros for the base model (ranks are
    zero-padded to the largest), and a batch adds ``bmm(bmm(x, A[idx]^T), B[idx]^T)`` to the base
    output; a single-adapter batch uses two plain matmuls, and a batch whose rows come in runs of
    equal adapters (the scorer groups them) two plain matmuls per run on contiguous row slices.
    """

    def __init__(self, model: Any, names: tuple[str, ...]) -> None:
        import torch

        self.names = names
        self.index = {name: i + 1 for i, name in enumerate(names)}
        self.index[BASE_ADAPTER] = 0
        self.supported = True
        self.reason = ""
        self.layers: list[tuple[Any, torch.Tensor, torch.Tensor]] = []
        self._rows: torch.Tensor | None = None
        self._uniform: int | None = None
        self._runs: list[tuple[int, int, int]] | None = None
        try:
            from peft.tuners.lora.layer import Linear as LoraLinear
        except ImportError:  # pragma: no cover - peft is a dependency
            self.supported, self.reason = False, "peft LoRA layer class not found"
            return
        for module in model.modules():
            if not hasattr(module, "lora_A") or not hasattr(module, "base_layer"):
                continue
            if not isinstance(module, LoraLinear):
                self.supported, self.reason = False, f"non-Linear LoRA layer {type(module).__name__}"
                return
            if module.merged or getattr(module, "fan_in_fan_out", False):
                self.supported, self.reason = False, "merged or fan_in_fan_out adapters"
                return
            present = [n for n in names if n in module.lora_A]
            if any(module.use_dora.get(n, False) or n in getattr(module, "lora_variant", {}) for n in present) or any(
                getattr(module, "lora_bias", {}).get(n, False) for n in present
            ):
                self.supported, self.reason = False, "DoRA, LoRA variants or LoRA bias"
                return
            weight = module.get_base_layer().weight
            r_max = max((module.lora_A[n].weight.shape[0] for n in present), default=1)
            a_all = torch.zeros((len(names) + 1, r_max, weight.shape[1]), dtype=weight.dtype, device=weight.device)
            b_all = torch.zeros((len(names) + 1, weight.shape[0], r_max), dtype=weight.dtype, device=weight.device)
            with torch.no_grad():
                for n in present:
                    a = module.lora_A[n].weight
                    b = module.lora_B[n].weight * module.scaling[n]
                    a_all[self.index[n], : a.shape[0]] = a.to(weight.dtype)
                    b_all[self.index[n], :, : a.shape[0]] = b.to(weight.dtype)
            self.layers.append((module, a_all, b_all))

    @contextlib.contextmanager
    def route(self, names: Sequence[str]) -> Iterator[None]:
        import torch

        idx = [self.index[n] for n in names]
        self._uniform = idx[0] if len(set(idx)) == 1 else None
        self._rows = torch.tensor(idx, dtype=torch.long)
        # Runs of equal adapters (rows come grouped by adapter): contiguous slices need no gather.
        runs: list[tuple[int, int, int]] = []
        for i, k in enumerate(idx):
            if runs and runs[-1][2] == k:
                runs[-1] = (runs[-1][0], i + 1, k)
            else:
                runs.append((i, i + 1, k))
        self._runs = [r for r in runs if r[2] != 0] if len(runs) <= _MAX_RUNS_PER_ADAPTER * len(set(idx)) else None
        patched = []
        try:
            for module, a_all, b_all in self.layers:
                module.forward = self._make_forward(module, a_all, b_all)
                patched.append(module)
            yield
        finally:
            for module in patched:
                del module.forward
            self._rows = None

    def _make_forward(self, module: Any, a_all: torch.Tensor, b_all: torch.Tensor) -> Callable[..., Any]:
        import torch
        import torch.nn.functional as F

        base = module.base_layer
        router = self

        def forward(x: torch.Tensor, *args: Any, **kwargs: Any) -> torch.Tensor:
            result = base(x, *args, **kwargs)
            k = router._uniform
            if k == 0:
                return result
            if not result.is_contiguous() or result.dtype != a_all.dtype:
                result = result.contiguous().to(a_all.dtype)
            x = x.to(a_all.dtype)
            width = x.shape[-1]
            out = result.shape[-1]
            # addmm_ accumulates B's product straight into the base output (one GEMM with beta=1):
            # no temporary of the output's size and no separate addition pass.
            if k is not None:
                result.view(-1, out).addmm_(F.linear(x.reshape(-1, width), a_all[k]), b_all[k].t())
                return result
            rows = router._rows
            bsz = x.shape[0]
            if rows is None or rows.shape[0] != bsz:
                raise ModelError(
                    f"LoRA router got a batch of {bsz} rows for {None if rows is None else len(rows)} adapters"
                )
            runs = router._runs
            if runs is not None:
                for start, stop, j in runs:
                    xa = F.linear(x[start:stop].reshape(-1, width), a_all[j])
                    result[start:stop].view(-1, out).addmm_(xa, b_all[j].t())
                return result
            xa = torch.bmm(x.reshape(bsz, -1, width), a_all[rows].transpose(1, 2))
            result.view(bsz, -1, out).baddbmm_(xa, b_all[rows].transpose(1, 2))
            return result

        return forward


def _continuation_rows(seqs: list[list[int]]) -> list[tuple[int, ...]]:
    """The token rows fed after the answer position: the maximal proper prefixes of the levels
    (each level without its last token), deduplicated; empty when every level is one token."""
    stems = sorted({tuple(s[:-1]) for s in seqs if len(s) > 1}, key=lambda t: (-len(t), t))
    rows: list[tuple[int, ...]] = []
    for stem in stems:
        if not any(len(r) >= len(stem) and r[: len(stem)] == stem for r in rows):
            rows.append(stem)
    return rows


def _tail(prompt: RatingPrompt | str) -> str:
    text = prompt if isinstance(prompt, str) else prompt.suffix
    return text[-32:]


@functools.cache
def _buffer_layer_class() -> type:
    from transformers.cache_utils import DynamicLayer

    class BufferLayer(DynamicLayer):
        """A ``DynamicLayer`` over a preallocated ``(B, H, width, D)`` buffer: ``update`` writes the new
        keys and values in place after the ``filled`` slots (a view is returned) instead of
        concatenating a fresh copy of the whole cache; past the buffer's end it concatenates."""

        def __init__(self, keys: torch.Tensor, values: torch.Tensor, filled: int) -> None:
            super().__init__()
            self._buf_k, self._buf_v, self._filled = keys, values, filled
            self.dtype, self.device = keys.dtype, keys.device
            self.is_initialized = True
            self.keys, self.values = keys[:, :, :filled], values[:, :, :filled]

        def update(self, key_states: torch.Tensor, value_states: torch.Tensor, *args: Any, **kwargs: Any) -> Any:
            end = self._filled + key_states.shape[-2]
            if self._buf_k is None or end > self._buf_k.shape[-2]:
                self._buf_k = self._buf_v = None  # from now on a plain DynamicLayer
                return super().update(key_states, value_states, *args, **kwargs)
            self._buf_k[:, :, self._filled : end] = key_states
            self._buf_v[:, :, self._filled : end] = value_states
            self._filled = end
            self.keys, self.values = self._buf_k[:, :, :end], self._buf_v[:, :, :end]
            return self.keys, self.values

    return BufferLayer


def _buffer_layer(keys: torch.Tensor, values: torch.Tensor, filled: int) -> Any:
    """A cache layer over a preallocated buffer (``_buffer_layer_class``, built on first use so that
    importing this module does not import transformers)."""
    return _buffer_layer_class()(keys, values, filled)


def _cache_layers(cache: Any) -> list[tuple[torch.Tensor, torch.Tensor]]:
    """``[(keys, values), ...]`` per layer of a transformers cache (each ``(B, H, T, D)``)."""
    if hasattr(cache, "layers"):
        return [(layer.keys, layer.values) for layer in cache.layers]
    if hasattr(cache, "key_cache"):  # older transformers
        return list(zip(cache.key_cache, cache.value_cache, strict=True))
    return [(k, v) for k, v in cache]
