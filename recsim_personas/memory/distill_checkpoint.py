"""Per-user distillation checkpoints: one ``user-<id>.json`` per finished user, keyed by its inputs' hash."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import numpy as np

from recsim_personas.artifacts import atomic_write_text

__all__ = ["CHECKPOINT_VERSION", "checkpoint_path", "read_checkpoint", "resume_hint", "write_checkpoint"]

#: Bump when the checkpoint format or the distillation loop changes.
CHECKPOINT_VERSION = "1"


def checkpoint_path(directory: Path, user_id: int) -> Path:
    """``directory/user-<id>.json``."""
    return directory / f"user-{user_id}.json"


def read_checkpoint(directory: Path, user_id: int, inputs_hash: str) -> dict[str, Any] | None:
    """The user's checkpoint, or ``None`` when it is missing, unreadable or made from other inputs."""
    path = checkpoint_path(directory, user_id)
    if not path.exists():
        return None
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return None  # unreadable: distil the user again (the file is replaced atomically)
    if not isinstance(data, dict) or data.get("inputs_hash") != inputs_hash:
        return None
    return data


def write_checkpoint(directory: Path, user_id: int, payload: dict[str, Any]) -> None:
    """Write the user's checkpoint atomically (numpy scalars become plain numbers)."""
    atomic_write_text(checkpoint_path(directory, user_id),
                      json.dumps(payload, ensure_ascii=False, default=_json_default))


def resume_hint(ckpt: Path | None, n_done: int) -> str:
    """The end of a failure message: whether the finished users are kept for a re-run."""
    if ckpt is None:
        return f"; {n_done} finished users were not kept (pass checkpoint_dir to resume)"
    # Only accepted answers are cached: a re-run asks again for every failed step.
    return (f"; {n_done} finished users are checkpointed in {ckpt}: after fixing the cause, a "
            "re-run resumes after them")


def _json_default(obj: Any) -> Any:
    if isinstance(obj, np.generic):
        return obj.item()
    raise TypeError(f"not JSON serialisable: {type(obj).__name__}")
