"""Simulated users: the agent protocol, the LM agent (prompts, model loading, scoring) and the bias agent.

Names are imported lazily so that ``import recsim_personas.agents`` stays cheap (torch and
transformers load only when a model is loaded or scored).

Modules:
    ``protocol``: :class:`UserAgent`, :class:`RatingBatch`, :class:`SessionEvent`.
    ``llm``: :func:`load_causal_lm`, :func:`load_tokenizer`, :func:`load_adapters`.
    ``prompts``: :class:`PromptTemplate` presets (``paper``, ``compact``), :func:`build_rating_prompt`,
    :func:`build_exit_prompt`.
    ``scoring``: :class:`RatingScorer` (score / generate / choice_probs, mixed adapters, prefix cache),
    built from ``tokenization``, ``levels``, ``adapters``, ``kv_cache``, ``lora_router``, ``sampling``.
    ``served``: :class:`ServedRatingScorer`, the same calls answered by a vLLM / OpenAI-compatible server.
    ``lm_agent``: :class:`LMUserAgent`, :func:`adapter_naming`.
    ``bias_agent``: :class:`BiasUserAgent`.
"""

from __future__ import annotations

import importlib
from typing import Any

__all__ = [
    "PROMPT_PRESETS",
    "BiasUserAgent",
    "LMUserAgent",
    "PromptMemory",
    "PromptTemplate",
    "RatingBatch",
    "RatingPrompt",
    "RatingScorer",
    "Scorer",
    "ServedConfig",
    "ServedRatingScorer",
    "SessionEvent",
    "UserAgent",
    "adapter_naming",
    "build_exit_prompt",
    "build_rating_prompt",
    "load_adapters",
    "load_causal_lm",
    "load_tokenizer",
    "parse_rating",
]

_WHERE = {
    "UserAgent": "protocol",
    "RatingBatch": "protocol",
    "SessionEvent": "protocol",
    "Scorer": "protocol",
    "ServedConfig": "served",
    "ServedRatingScorer": "served",
    "load_causal_lm": "llm",
    "load_tokenizer": "llm",
    "load_adapters": "llm",
    "PROMPT_PRESETS": "prompts",
    "PromptMemory": "prompts",
    "PromptTemplate": "prompts",
    "RatingPrompt": "prompts",
    "build_exit_prompt": "prompts",
    "build_rating_prompt": "prompts",
    "RatingScorer": "scoring",
    "parse_rating": "scoring",
    "LMUserAgent": "lm_agent",
    "adapter_naming": "lm_agent",
    "BiasUserAgent": "bias_agent",
}


def __getattr__(name: str) -> Any:
    module = _WHERE.get(name)
    if module is None:
        raise AttributeError(f"module 'recsim_personas.agents' has no attribute {name!r}")
    value = getattr(importlib.import_module(f"recsim_personas.agents.{module}"), name)
    globals()[name] = value
    return value


def __dir__() -> list[str]:
    return sorted(set(globals()) | set(__all__))
