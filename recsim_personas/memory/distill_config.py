"""How to distil profiles and memories: :class:`DistillConfig`, validated before any model loads."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Literal

from recsim_personas.config import Config
from recsim_personas.errors import ConfigError, did_you_mean

__all__ = ["BACKENDS", "DistillConfig"]

#: Names of the text backends :func:`~recsim_personas.memory.backends.make_backend` builds.
BACKENDS: tuple[str, ...] = ("template", "openai", "hf")
_FALLBACKS = ("auto", "template", "error")


@dataclass(frozen=True)
class DistillConfig(Config):
    """How to distil profiles and memories. Every field is validated in ``__post_init__``.

    Attributes:
        backend: ``"template"`` (default, deterministic, no model), ``"openai"`` or ``"hf"``.
        model: Model name (``openai``: default ``"gpt-4o"``; ``hf``: hub id or local path, default
            the packaged SmolLM2-135M-Instruct).
        base_url: OpenAI-compatible endpoint (default ``https://api.openai.com/v1``).
        batch_size: Ratings per chronological batch (paper: at most 10).
        max_words: Answers longer than this many words are rejected (paper: 2,000).
        target_words: Length the prompts ask the taste description to stay under.
        max_retries: Retries of a rejected answer (wrong format or too long) before the fallback.
        fallback: ``"auto"``, ``"template"`` or ``"error"`` (see :mod:`recsim_personas.memory.distill`).
        concurrency: ``openai``: users in flight at once (thread pool size).
        generation_batch_size: ``hf``: prompts generated together.
        temperature: Sampling temperature (0 = greedy / deterministic).
        seed: Seed of sampling and of the backoff jitter.
        max_new_tokens: Longest answer, in tokens (``max_tokens`` for ``openai``).
        request_retries: ``openai``: retries of one HTTP request on 429 / 5xx / timeout /
            connection error / malformed body.
        backoff_base: ``openai``: first backoff delay in seconds (doubles per retry).
        backoff_max: ``openai``: longest backoff delay in seconds.
        timeout: ``openai``: seconds a request waits for its answer (5 s to connect).
        retry_after_max: ``openai``: the longest ``Retry-After`` (seconds) honoured; a server asking
            for a longer wait stops the run at once.
        json_mode: ``openai``: send ``response_format={"type": "json_object"}``.
        cache: ``openai``: keep the on-disk request cache.
        cache_dir: ``openai``: cache folder (default ``cache_dir("llm-requests", "openai")``).
        api_key_env: ``openai``: environment variable holding the API key.
        price_per_million: ``openai``: USD per 1M (input, output) tokens; ``None`` = the model's
            entry in ``PRICES`` (GPT-4o: 2.50 / 10.00), or 0.
        shrinkage: Pseudo-count of the per-genre / per-decade leans (template statistics).
        device: ``hf``: ``"auto"``, ``"cpu"``, ``"cuda"``.
        dtype: ``hf``: ``"auto"``, ``"float32"``, ``"bfloat16"`` ...
    """

    backend: str = "template"
    model: str | None = None
    base_url: str | None = None
    batch_size: int = 10
    max_words: int = 2000
    target_words: int = 300
    max_retries: int = 2
    fallback: Literal["auto", "template", "error"] = "auto"
    concurrency: int = 4
    generation_batch_size: int = 4
    temperature: float = 0.0
    seed: int = 0
    max_new_tokens: int = 1024
    request_retries: int = 2
    backoff_base: float = 1.0
    backoff_max: float = 10.0
    timeout: float = 30.0
    retry_after_max: float = 30.0
    json_mode: bool = True
    cache: bool = True
    cache_dir: str | None = None
    api_key_env: str = "OPENAI_API_KEY"
    price_per_million: tuple[float, float] | None = None
    shrinkage: float = 5.0
    device: str = "auto"
    dtype: str = "auto"

    config_name = "distill config"
    #: Fields that change the distilled texts (part of checkpoint keys); the rest only change speed.
    OUTPUT_FIELDS = (
        "backend", "model", "batch_size", "max_words", "target_words", "max_retries", "fallback",
        "temperature", "seed", "max_new_tokens", "json_mode", "shrinkage", "dtype",
    )

    def __post_init__(self) -> None:
        errors: list[str] = []
        if self.backend not in BACKENDS:
            errors.append(f"backend={self.backend!r}: use one of {list(BACKENDS)}.{did_you_mean(self.backend, BACKENDS)}")
        if self.fallback not in _FALLBACKS:
            errors.append(f"fallback={self.fallback!r}: use one of {list(_FALLBACKS)}")
        for name, low in (
            ("batch_size", 1), ("max_words", 1), ("target_words", 1), ("max_retries", 0),
            ("concurrency", 1), ("generation_batch_size", 1), ("max_new_tokens", 1),
            ("request_retries", 0),
        ):
            value = getattr(self, name)
            if not isinstance(value, int) or isinstance(value, bool) or value < low:
                errors.append(f"{name}={value!r}: must be an integer >= {low}")
        for name in ("temperature", "backoff_base", "backoff_max", "retry_after_max", "shrinkage"):
            value = getattr(self, name)
            if not isinstance(value, (int, float)) or isinstance(value, bool) or value < 0:
                errors.append(f"{name}={value!r}: must be a number >= 0")
        if not isinstance(self.timeout, (int, float)) or self.timeout <= 0:
            errors.append(f"timeout={self.timeout!r}: must be a number > 0")
        if self.price_per_million is not None:
            price = tuple(self.price_per_million)
            if len(price) != 2 or any(not isinstance(p, (int, float)) or p < 0 for p in price):
                errors.append(
                    f"price_per_million={self.price_per_million!r}: need (input, output) USD >= 0"
                )
            else:
                object.__setattr__(self, "price_per_million", (float(price[0]), float(price[1])))
        if errors:
            raise ConfigError("invalid DistillConfig: " + "; ".join(errors))

    def resolved_fallback(self, backend_name: str) -> str:
        """``"template"`` or ``"error"`` for ``backend_name`` (resolves ``"auto"``)."""
        if self.fallback != "auto":
            return self.fallback
        return "error" if backend_name == "openai" else "template"

    def output_dict(self) -> dict[str, Any]:
        return {name: getattr(self, name) for name in self.OUTPUT_FIELDS}
