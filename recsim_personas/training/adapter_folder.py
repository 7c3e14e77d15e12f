"""A finished adapter folder on disk: its files, its ``recsim_adapter.json``, its :class:`TrainResult`.

``save_pretrained`` files (``adapter_config.json``, ``adapter_model.safetensors``: what peft's
``load_adapter`` and vLLM's ``LoRARequest`` read) are published into the folder file by file;
``recsim_adapter.json`` (config, data hash, loss curve, wall time, rows, versions) is written last,
so a folder with it is a finished adapter.
"""

from __future__ import annotations

import json
import os
import shutil
import tempfile
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from recsim_personas.adapter_names import ADAPTER_FILES as ADAPTER_FILES  # one home: adapter_names
from recsim_personas.adapter_names import ADAPTER_INFO as ADAPTER_INFO
from recsim_personas.errors import AdapterError
from recsim_personas.training.config import LoraTrainConfig

__all__ = [
    "FORMAT_VERSION",
    "TrainResult",
    "load_train_result",
    "model_name",
    "publish_adapter",
    "read_adapter_info",
    "result_from_info",
]

#: Version of ``recsim_adapter.json`` (part of every adapter's run key).
FORMAT_VERSION = 1


@dataclass
class TrainResult:
    """What :func:`train_adapter` did.

    Attributes:
        name: The adapter's name.
        out_dir: Folder with the peft files and ``recsim_adapter.json``.
        steps: Optimizer steps taken in total (including those before a resume).
        epochs: Passes over the rows completed (fractional when ``max_steps`` cut the run).
        n_rows: Rows trained on (after skipping over-long ones).
        n_skipped: Rows longer than ``config.max_length`` tokens, left out.
        train_tokens: Tokens processed (forward) in total.
        curve: One dict per step: ``step``, ``loss`` (mean CE per answer token), ``lr``, ``rows``,
            ``seconds`` (since the start, across resumes).
        wall_seconds: Training wall time (across resumes; 0 for a cached adapter's new call, whose
            original time is in ``curve``).
        data_hash: Hash of the rows' prompts and targets.
        config: The training config.
        resumed_from_step: Step the run resumed from, or ``None``.
        cached: True when a finished adapter with the same config and rows was found and returned.
    """

    name: str
    out_dir: Path
    steps: int
    epochs: float
    n_rows: int
    n_skipped: int
    train_tokens: int
    curve: list[dict[str, float]]
    wall_seconds: float
    data_hash: str
    config: LoraTrainConfig
    resumed_from_step: int | None = None
    cached: bool = False
    info: dict[str, Any] = field(default_factory=dict)

    def _window(self) -> int:
        return max(1, min(10, len(self.curve) // 4))

    @property
    def final_loss(self) -> float | None:
        """Mean loss of the last ``max(1, min(10, steps // 4))`` steps (``None`` without steps)."""
        if not self.curve:
            return None
        return float(np.mean([c["loss"] for c in self.curve[-self._window():]]))

    @property
    def first_loss(self) -> float | None:
        """Mean loss of the first ``max(1, min(10, steps // 4))`` steps."""
        if not self.curve:
            return None
        return float(np.mean([c["loss"] for c in self.curve[: self._window()]]))


def read_adapter_info(path: str | os.PathLike[str]) -> dict[str, Any]:
    """The ``recsim_adapter.json`` of a finished adapter folder.

    Raises:
        AdapterError: The folder holds no finished adapter (missing or unreadable JSON or weights).
    """
    folder = Path(path)
    info_path = folder / ADAPTER_INFO
    try:
        info = json.loads(info_path.read_text(encoding="utf-8"))
    except json.JSONDecodeError as exc:
        raise AdapterError(f"{info_path} line {exc.lineno}: not valid JSON; re-train the adapter") from None
    except OSError:
        raise AdapterError(
            f"{folder} holds no finished adapter ({ADAPTER_INFO} missing); train it with "
            "`recsim-personas train`"
        ) from None
    missing = [f for f in ADAPTER_FILES if not (folder / f).is_file()]
    if missing:
        raise AdapterError(f"{folder} lacks {', '.join(missing)}; re-train the adapter")
    return info


def publish_adapter(peft_model: Any, out_dir: Path) -> None:
    """``save_pretrained`` into a temporary folder, then move each file into ``out_dir``."""
    out_dir.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=".save-", dir=out_dir))
    try:
        peft_model.save_pretrained(str(tmp))
        umask = os.umask(0)
        os.umask(umask)
        for f in tmp.iterdir():
            # Temporary files are private (0600); a published adapter is readable like any other file.
            os.chmod(f, 0o666 & ~umask)
            os.replace(f, out_dir / f.name)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)


def model_name(model: Any) -> str:
    """The base model's hub id or path (its class name when it has none)."""
    return str(getattr(getattr(model, "config", None), "_name_or_path", "") or type(model).__name__)


def result_from_info(info: dict[str, Any], out: Path, config: LoraTrainConfig, *, cached: bool) -> TrainResult:
    """The :class:`TrainResult` that ``recsim_adapter.json`` content ``info`` describes."""
    return TrainResult(
        name=str(info["name"]), out_dir=out, steps=int(info["steps"]), epochs=float(info["epochs"]),
        n_rows=int(info["n_rows"]), n_skipped=int(info["n_skipped"]), train_tokens=int(info["train_tokens"]),
        curve=list(info["curve"]), wall_seconds=float(info["wall_seconds"]), data_hash=str(info["data_hash"]),
        config=config, resumed_from_step=info.get("resumed_from_step"), cached=cached, info=info,
    )


def load_train_result(path: str | os.PathLike[str]) -> TrainResult:
    """The :class:`TrainResult` of a finished adapter folder (from its ``recsim_adapter.json``).

    Raises:
        AdapterError: The folder holds no finished adapter.
    """
    folder = Path(path)
    info = read_adapter_info(folder)
    return result_from_info(info, folder, LoraTrainConfig.from_dict(info["config"]), cached=True)
