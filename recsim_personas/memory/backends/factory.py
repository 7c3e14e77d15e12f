"""Build a text backend by name: :func:`make_backend`."""

from __future__ import annotations

from typing import Any

from recsim_personas.errors import ConfigError, did_you_mean
from recsim_personas.memory.backends.steps import TextBackend
from recsim_personas.memory.distill_config import BACKENDS

__all__ = ["make_backend"]


def make_backend(name: str, **kwargs: Any) -> TextBackend:
    """Build a backend by name.

    Args:
        name: ``"template"``, ``"openai"`` or ``"hf"``.
        **kwargs: Passed to the backend's constructor (``config=DistillConfig(...)`` for all of
            them; ``model=``/``tokenizer=`` objects for ``hf``; ``api_key=`` for ``openai``).

    Raises:
        ConfigError: unknown name (with a did-you-mean).
    """
    if name == "template":
        from recsim_personas.memory.backends.template import TemplateBackend

        return TemplateBackend(**kwargs)
    if name == "openai":
        from recsim_personas.memory.backends.openai_backend import OpenAIBackend

        return OpenAIBackend(**kwargs)
    if name == "hf":
        from recsim_personas.memory.backends.hf_backend import HFBackend

        return HFBackend(**kwargs)
    raise ConfigError(
        f"unknown distillation backend {name!r}; use one of {list(BACKENDS)}.{did_you_mean(name, BACKENDS)}"
    )
