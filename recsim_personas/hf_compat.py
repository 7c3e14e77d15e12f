"""The one place that knows how the KV-cache argument of a transformers forward pass is spelled.

transformers 5.24 renamed ``past_key_values`` (argument and output field) to ``cache`` and warns on
the old name; the declared floor (5.0) knows only the old one. Every forward pass in the package
goes through :func:`cache_kwargs` and :func:`output_cache`, so neither warns on the locked versions
and both keep working on the floor. Importing this module imports transformers lazily (first call).

peft (up to 0.21.2, the locked version) reads ``model.is_gradient_checkpointing``, which
transformers 5 deprecates with a ``FutureWarning`` the user cannot act on: :func:`peft_wrapping`
silences exactly that warning around the calls that wrap a model.
"""

from __future__ import annotations

import contextlib
import dataclasses
import functools
import warnings
from collections.abc import Iterator
from typing import Any

__all__ = ["cache_argument", "cache_kwargs", "output_cache", "peft_wrapping"]

#: The message of the deprecation that peft triggers in transformers 5 (see the module docstring).
PEFT_CHECKPOINTING_WARNING = r".*is_gradient_checkpointing.* is deprecated"


@functools.cache
def cache_argument() -> str:
    """``"cache"`` on transformers versions that renamed the KV-cache argument, else ``"past_key_values"``."""
    from transformers.modeling_outputs import CausalLMOutputWithPast

    names = {f.name for f in dataclasses.fields(CausalLMOutputWithPast)}
    return "cache" if "cache" in names else "past_key_values"


def cache_kwargs(cache: Any) -> dict[str, Any]:
    """``{name: cache}`` for a model call, under the name the installed transformers expects."""
    return {cache_argument(): cache}


def output_cache(out: Any) -> Any:
    """The KV cache a forward pass returned (``out.cache`` or ``out.past_key_values``)."""
    return getattr(out, cache_argument())


@contextlib.contextmanager
def peft_wrapping() -> Iterator[None]:
    """Silence transformers' ``is_gradient_checkpointing`` deprecation while peft wraps a model."""
    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", message=PEFT_CHECKPOINTING_WARNING, category=FutureWarning)
        yield
