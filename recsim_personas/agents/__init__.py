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

from recsim_personas.lazy import lazy_exports

# Each submodule and the public names it is the home of (imported on first use).
__getattr__, __dir__, __all__ = lazy_exports(__name__, {
    "bias_agent": ("BiasUserAgent",),
    "llm": ("load_adapters", "load_causal_lm", "load_tokenizer"),
    "levels": ("parse_rating",),
    "lm_agent": ("LMUserAgent", "adapter_naming"),
    "prompt_template": ("PROMPT_PRESETS", "PromptTemplate"),
    "prompt_text": ("PromptMemory",),
    "prompts": ("RatingPrompt", "build_exit_prompt", "build_rating_prompt"),
    "protocol": ("RatingBatch", "Scorer", "SessionEvent", "UserAgent"),
    "scoring": ("RatingScorer",),
    "served": ("ServedConfig", "ServedRatingScorer"),
})
