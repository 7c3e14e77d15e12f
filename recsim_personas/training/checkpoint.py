"""Resumable training state: the content of ``checkpoint/state.pt``, written atomically, read back.

A checkpoint holds the LoRA weights, the optimizer and scheduler state, the step, the torch (and
CUDA) RNG state, the loss curve, the tokens seen and the seconds spent, under the run key of the
config and rows it belongs to; a checkpoint of another run key, or an unreadable one, is ignored
with a warning.
"""

from __future__ import annotations

import warnings
from pathlib import Path
from typing import Any

from recsim_personas.artifacts import atomic_path
from recsim_personas.errors import RecsimWarning

__all__ = ["CHECKPOINT_DIR", "CHECKPOINT_FILE", "load_checkpoint", "restore_state", "save_checkpoint", "training_state"]

#: Folder of the checkpoint inside an adapter folder, and the file in it.
CHECKPOINT_DIR = "checkpoint"
CHECKPOINT_FILE = "state.pt"


def training_state(run_key: str, step: int, params: dict[str, Any], optimizer: Any, scheduler: Any,
                   progress: dict[str, Any]) -> dict[str, Any]:
    """The checkpoint content after ``step`` steps; ``progress`` holds ``curve``, ``tokens``, ``elapsed``."""
    import torch

    return {
        "run_key": run_key,
        "step": step,
        "lora": {n: p.detach().cpu().clone() for n, p in params.items()},
        "optimizer": optimizer.state_dict(),
        "scheduler": scheduler.state_dict(),
        "torch_rng": torch.get_rng_state(),
        "cuda_rng": torch.cuda.get_rng_state_all() if torch.cuda.is_available() else None,
        **progress,
    }


def restore_state(state: dict[str, Any], params: dict[str, Any], optimizer: Any, scheduler: Any) -> None:
    """Put a checkpoint's weights, optimizer, scheduler and RNG state back."""
    import torch

    with torch.no_grad():
        for n, p in params.items():
            p.copy_(state["lora"][n])
    optimizer.load_state_dict(state["optimizer"])
    scheduler.load_state_dict(state["scheduler"])
    torch.set_rng_state(state["torch_rng"])
    if torch.cuda.is_available() and state.get("cuda_rng") is not None:
        torch.cuda.set_rng_state_all(state["cuda_rng"])


def save_checkpoint(path: Path, state: dict[str, Any]) -> None:
    """Write ``state`` to ``path`` atomically (a crash leaves the previous checkpoint)."""
    import torch

    with atomic_path(path) as tmp:
        torch.save(state, tmp)


def load_checkpoint(path: Path, run_key: str, *, stacklevel: int = 2) -> dict[str, Any] | None:
    """The checkpoint at ``path`` when it belongs to ``run_key``; ``None`` (warned) otherwise."""
    import torch

    if not path.is_file():
        return None
    try:
        state = torch.load(path, map_location="cpu", weights_only=False)
    except Exception as exc:  # a damaged file: start over rather than crash
        warnings.warn(f"ignoring unreadable checkpoint {path} ({exc}); training from step 0",
                      RecsimWarning, stacklevel=stacklevel + 1)
        return None
    if state.get("run_key") != run_key:
        warnings.warn(
            f"ignoring checkpoint {path}: it belongs to another config or other rows; training from "
            "step 0",
            RecsimWarning,
            stacklevel=stacklevel + 1,
        )
        return None
    return state
