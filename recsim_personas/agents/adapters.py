"""Which LoRA adapter scores each row: name resolution shared by every scorer.

``None`` and :data:`BASE_ADAPTER` (``"__base__"``, peft's own convention for ``adapter_names``) mean
the base model. :func:`resolve_adapters` expands the accepted forms (one name per prompt, one name
for all, ``None``) and checks every name against the adapters a model (or a server) holds, with a
did-you-mean; :class:`AdapterChecks` is the adapter half of the scorer seam that both scorers share.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any, TypeAlias

from recsim_personas.errors import AdapterError, ConfigError, did_you_mean

__all__ = ["BASE_ADAPTER", "AdapterChecks", "AdapterNames", "resolve_adapters"]

#: Adapter name meaning "the base model, no adapter" (peft's own convention for ``adapter_names``).
BASE_ADAPTER = "__base__"
#: What scorers accept as ``adapter_names``: one name (or None) per prompt, one name for all, or None.
AdapterNames: TypeAlias = Sequence[str | None] | str | None


def resolve_adapters(
    adapter_names: AdapterNames,
    n: int,
    available: Sequence[str],
    *,
    where: str = "the model",
    how_to_load: str = (
        "load them with recsim_personas.agents.llm.load_adapters(model, {name: path}) or pass None "
        "for the base model"
    ),
) -> list[str]:
    """One adapter name per prompt (``BASE_ADAPTER`` for the base model).

    Args:
        adapter_names: One name (or None) per prompt, one name for all, or None (base model).
        n: Number of prompts.
        available: Adapters that can be used.
        where: What holds them, for the messages (``"the model"``, ``"the server at URL"``).
        how_to_load: The fix when nothing holds any adapter.

    Raises:
        ConfigError: the number of names is not ``n``.
        AdapterError: a name is not available (did-you-mean).
    """
    if adapter_names is None:
        return [BASE_ADAPTER] * n
    if isinstance(adapter_names, str):
        adapter_names = [adapter_names] * n
    names = [BASE_ADAPTER if a is None else str(a) for a in adapter_names]
    if len(names) != n:
        raise ConfigError(f"adapter_names has {len(names)} entries for {n} prompts")
    for name in sorted(set(names) - {BASE_ADAPTER}):
        if name not in available:
            if not available:
                raise AdapterError(f"adapter {name!r} requested but {where} holds no adapters; {how_to_load}")
            raise AdapterError(
                f"unknown adapter {name!r}; {where} holds {sorted(available)}.{did_you_mean(name, available)}"
            )
    return names


class AdapterChecks:
    """Mixin of the scorers: which adapters they hold, name checks, and the prompt budget.

    A scorer sets ``context_length`` and ``max_new_tokens`` and implements :attr:`adapters`;
    ``_answer_room`` is the context it keeps free after a prompt beyond ``max_new_tokens``, and
    ``_adapter_messages()`` what its errors say holds the adapters and how to load them.
    """

    context_length: int
    max_new_tokens: int
    _answer_room: int = 4

    @property
    def adapters(self) -> tuple[str, ...]:  # pragma: no cover - every scorer overrides it
        """Names of the LoRA adapters the scorer can use."""
        raise NotImplementedError

    @property
    def max_prompt_tokens(self) -> int:
        """Longest prompt that leaves room for the answer in the context."""
        return self.context_length - self.max_new_tokens - self._answer_room

    def check_adapters(self, names: Sequence[str | None]) -> None:
        """Raise ``AdapterError`` (with a did-you-mean) if a name is not an adapter of the scorer."""
        self._normalise_adapters(list(names), len(names))

    def _adapter_messages(self) -> dict[str, Any]:
        return {}

    def _normalise_adapters(self, adapter_names: AdapterNames, n: int) -> list[str]:
        return resolve_adapters(adapter_names, n, self.adapters, **self._adapter_messages())
