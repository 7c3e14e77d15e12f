"""Which LoRA adapter scores each row: name resolution shared by every scorer.

``None`` and :data:`BASE_ADAPTER` (``"__base__"``, peft's own convention for ``adapter_names``) mean
the base model. :func:`resolve_adapters` expands the accepted forms (one name per prompt, one name
for all, ``None``) and checks every name against the adapters a model (or a server) holds, with a
did-you-mean.
"""

from __future__ import annotations

import difflib
from collections.abc import Sequence

from recsim_personas.errors import AdapterError, ConfigError

__all__ = ["BASE_ADAPTER", "resolve_adapters"]

#: Adapter name meaning "the base model, no adapter" (peft's own convention for ``adapter_names``).
BASE_ADAPTER = "__base__"


def resolve_adapters(
    adapter_names: Sequence[str | None] | str | None,
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
            close = difflib.get_close_matches(name, list(available), n=1)
            hint = f" Did you mean {close[0]!r}?" if close else ""
            raise AdapterError(f"unknown adapter {name!r}; {where} holds {sorted(available)}.{hint}")
    return names
