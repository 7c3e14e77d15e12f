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
(:mod:`recsim_personas.agents.served`) where both need them: :mod:`~recsim_personas.agents.tokenization`
(prompt ids, the prefix/suffix seam rule, level and option tokens), :mod:`~recsim_personas.agents.levels`
(level maths and parsing), :mod:`~recsim_personas.agents.adapters` (adapter names),
:mod:`~recsim_personas.agents.kv_cache` (the prefix KV cache), :mod:`~recsim_personas.agents.prefix_batches`
(the prefix-cached batched forward passes), :mod:`~recsim_personas.agents.continuation` (the
multi-token levels' continuation pass), :mod:`~recsim_personas.agents.lora_router` (the batched
LoRA path) and :mod:`~recsim_personas.agents.sampling`; this module holds the settings, activates
the adapters of a batch and answers the public calls.

Models with sliding-window attention layers (Gemma 3, Mistral, Phi-3) use the prefix cache only for
batches whose padded length stays inside the window (the masked hole between prefix and suffix would
shift the windows, which count cache slots); other batches are scored from full prompts.
"""

from __future__ import annotations

import contextlib
import logging
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import numpy as np

from recsim_personas.agents.adapters import BASE_ADAPTER, AdapterChecks, AdapterNames
from recsim_personas.agents.continuation import LevelContinuation
from recsim_personas.agents.kv_cache import PrefixKVCache
from recsim_personas.agents.levels import generated_batch, parse_rating
from recsim_personas.agents.lora_router import MAX_RUNS_PER_ADAPTER, LoraRouter
from recsim_personas.agents.prefix_batches import PrefixBatchRunner
from recsim_personas.agents.protocol import RatingBatch
from recsim_personas.agents.sampling import (
    SamplingSettings,
    positive_int_problems,
    sample_next_tokens,
)
from recsim_personas.agents.tokenization import PromptTokenizer, prompt_tail
from recsim_personas.data.dataset import RatingScale
from recsim_personas.errors import ConfigError
from recsim_personas.hf_compat import cache_kwargs, output_cache

if TYPE_CHECKING:  # pragma: no cover
    import torch

    from recsim_personas.agents.prompts import RatingPrompt

__all__ = ["BASE_ADAPTER", "RatingScorer", "ScoringConfig", "parse_rating"]

logger = logging.getLogger(__name__)

#: The LoRA router's slice-or-gather threshold, read per batch (tests lower it to force the bmm path).
_MAX_RUNS_PER_ADAPTER = MAX_RUNS_PER_ADAPTER


@dataclass(frozen=True)
class ScoringConfig(SamplingSettings):
    """Settings of a :class:`RatingScorer` as data (``RatingScorer.from_config``); see its Args.

    Example:
        >>> ScoringConfig.from_dict(ScoringConfig(max_batch=8).to_dict()) == ScoringConfig(max_batch=8)
        True
    """

    config_name = "scoring"

    max_batch: int = 16
    prefix_cache: bool = True
    cache_entries: int = 256
    cache_bytes: int = 2**30
    group_by_adapter: bool = True
    fast_lora: bool = True

    def __post_init__(self) -> None:
        problems = positive_int_problems(self, ("max_batch", "cache_entries", "cache_bytes"))
        problems += self.sampling_problems()
        if problems:
            raise ConfigError("RatingScorer settings: " + "; ".join(problems))


class RatingScorer(LevelContinuation, PrefixBatchRunner, AdapterChecks):
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

    def warm(
        self, prompts: Sequence[RatingPrompt | str], adapter_names: AdapterNames = None
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

    # ------------------------------------------------------------------ public API
    def score(
        self, prompts: Sequence[RatingPrompt | str], adapter_names: AdapterNames = None
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
        self, prompts: Sequence[RatingPrompt | str], adapter_names: AdapterNames = None, options: Sequence[str] = ("A", "B")
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
        self, prompts: Sequence[RatingPrompt | str], adapter_names: AdapterNames = None, seed: int | None = None
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
