"""Sizing a language-model agent's prefix cache for the sessions (and users) of an environment.

An LM user agent caches the key/value states of each user's profile prefix (one entry for the
rating prompt, with the user's adapter, and one for the exit prompt). The scorer's LRU defaults to
1 GiB, about 20 users of the paper prompt with SmolLM2-135M in float32: fewer than the sessions of a
vector env at ``N = 32``, whose live prefixes would then be evicted and recomputed at every step.

:func:`reserve_prefix_cache` raises the limits so that every live session's prefixes stay, and, when
the whole population's prefixes fit in ``memory_fraction`` (half) of the device's memory, every
user's: an RL run steps the same users over and over, and a reset then costs no prefix pass for a
user seen before. The 115 users of the embedded default use about 5.6 GB in float32 (the sizing
estimate, 640 tokens per prefix plus a quarter, is 8.5 GB: it fits on a 24 GB machine); the 200 of
ML-1M's paper split would use about 10 GB (estimate 14.7 GB: not on 24 GB, where only the live
sessions' prefixes are kept). Limits are raised, never lowered.
"""

from __future__ import annotations

import logging
import os
from typing import Any

__all__ = ["device_memory_bytes", "prefix_bytes_per_token", "prepare_prefix_cache", "reserve_prefix_cache"]

logger = logging.getLogger(__name__)

#: Prefix length assumed per prompt (the paper prompt's profile prefix is about 550 tokens with
#: SmolLM2's tokenizer).
PREFIX_TOKENS = 640
#: Cached prefixes per session or user: the rating prompt's and the exit prompt's.
PREFIXES_PER_USER = 2
#: Share of the device's memory the whole population's prefixes may take (the limit is an upper
#: bound: the LRU holds only what was computed, about 46 KB per token for SmolLM2-135M in float32).
MEMORY_FRACTION = 0.5


def prefix_bytes_per_token(model: Any) -> int:
    """Bytes of keys and values one cached token takes in ``model`` (all layers, its dtype)."""
    config = model.config
    if hasattr(config, "get_text_config"):
        config = config.get_text_config(decoder=True)
    layers = int(getattr(config, "num_hidden_layers", 0) or 0)
    heads = int(getattr(config, "num_attention_heads", 0) or 0)
    kv_heads = int(getattr(config, "num_key_value_heads", None) or heads)
    head_dim = int(getattr(config, "head_dim", None) or (config.hidden_size // max(heads, 1)))
    element = next(model.parameters()).element_size()
    return 2 * layers * kv_heads * head_dim * element


def device_memory_bytes(device: Any) -> int | None:
    """Total memory of ``device`` (a CUDA GPU's, or the machine's RAM for the CPU); None if unknown."""
    kind = getattr(device, "type", str(device))
    if kind == "cuda":
        import torch

        return int(torch.cuda.get_device_properties(device).total_memory)
    try:
        return int(os.sysconf("SC_PHYS_PAGES")) * int(os.sysconf("SC_PAGE_SIZE"))
    except (AttributeError, ValueError, OSError):  # not a POSIX system
        return None


def reserve_prefix_cache(
    agent: Any,
    n_sessions: int,
    prefix_tokens: int = PREFIX_TOKENS,
    *,
    n_users: int | None = None,
    memory_fraction: float = MEMORY_FRACTION,
) -> int | None:
    """Make an LM agent's prefix cache hold every session's prefixes, and every user's if they fit.

    Args:
        agent: A user agent; agents without a scorer cache (the bias agent) are left alone.
        n_sessions: Sessions that run at once (their prefixes must never be evicted).
        prefix_tokens: Prefix length assumed per prompt.
        n_users: Users of the population; when all their prefixes fit in ``memory_fraction`` of the
            device's memory the cache is sized for all of them.
        memory_fraction: Share of the device's memory the population's prefixes may take.

    Returns:
        The scorer's byte limit after the call, or None for agents without a prefix cache.
    """
    scorer = getattr(agent, "scorer", None)
    model = getattr(scorer, "model", None)
    if scorer is None or model is None or not hasattr(scorer, "cache_bytes"):
        return None
    per_prefix = int(prefix_tokens * prefix_bytes_per_token(model) * 1.25)
    entries = PREFIXES_PER_USER * n_sessions
    need = entries * per_prefix
    if n_users is not None and n_users > n_sessions:
        population = PREFIXES_PER_USER * n_users * per_prefix
        total = device_memory_bytes(getattr(scorer, "device", "cpu"))
        if total is not None and population <= memory_fraction * total:
            need, entries = population, PREFIXES_PER_USER * n_users
        else:
            logger.info(
                "the prefixes of all %d users (%.1f GB) exceed %.0f%% of the device's memory; caching "
                "the %d live sessions' only (a returning user's prefix is recomputed at reset)",
                n_users, population / 1e9, 100 * memory_fraction, n_sessions,
            )
    if need > scorer.cache_bytes:
        logger.info("raising the LM prefix cache from %.2f to %.2f GB", scorer.cache_bytes / 1e9, need / 1e9)
        scorer.cache_bytes = need
    scorer.cache_entries = max(int(scorer.cache_entries), 2 * entries)
    return int(scorer.cache_bytes)


def prepare_prefix_cache(agent: Any, n_sessions: int, user_ids: Any, *, warm: bool, exits: bool) -> None:
    """What an environment does with its agent's cache: size it (:func:`reserve_prefix_cache`) and,
    with ``warm``, compute every user's prefixes now (``LMUserAgent.warm_cache``; ``exits``: the
    exit prompts' too)."""
    reserve_prefix_cache(agent, n_sessions, n_users=len(user_ids))
    if warm and hasattr(agent, "warm_cache"):
        agent.warm_cache(user_ids, exits=exits)
