"""Atomic file writes and the run folder: one folder per experiment, with a manifest of stages.

A stage records the hash of its inputs (config, upstream hashes) in ``manifest.json``; a stage whose
inputs did not change is skipped on re-run, a changed input re-runs it. Every file is written to a
temporary name in the same folder and renamed, so a crash or Ctrl-C never leaves a half-written file.
"""

from __future__ import annotations

import hashlib
import json
import os
import platform
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import asdict, is_dataclass
from importlib import metadata
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

__all__ = [
    "RunFolder",
    "atomic_path",
    "atomic_write_json",
    "atomic_write_npy",
    "atomic_write_parquet",
    "atomic_write_text",
    "environment_info",
    "git_info",
    "stable_hash",
]

_PACKAGES = (
    "recsim-personas", "numpy", "pandas", "scikit-learn", "implicit", "torch", "transformers",
    "peft", "sentence-transformers", "faiss-cpu", "gymnasium", "openai",
)


@contextmanager
def atomic_path(path: str | os.PathLike[str]) -> Iterator[Path]:
    """Yield a temporary path beside ``path``; rename it onto ``path`` only if the block succeeds."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    os.close(fd)
    tmp_path = Path(tmp)
    try:
        yield tmp_path
        os.replace(tmp_path, path)
    finally:
        if tmp_path.exists():
            tmp_path.unlink()


def atomic_write_text(path: str | os.PathLike[str], text: str) -> None:
    with atomic_path(path) as tmp:
        tmp.write_text(text, encoding="utf-8")


def _json_default(obj: Any) -> Any:
    if is_dataclass(obj) and not isinstance(obj, type):
        return asdict(obj)
    if isinstance(obj, np.generic):
        return obj.item()
    if isinstance(obj, np.ndarray):
        return obj.tolist()
    if isinstance(obj, Path):
        return str(obj)
    raise TypeError(f"not JSON serialisable: {type(obj).__name__}")


def atomic_write_json(path: str | os.PathLike[str], obj: Any) -> None:
    atomic_write_text(path, json.dumps(obj, indent=2, default=_json_default) + "\n")


def atomic_write_parquet(path: str | os.PathLike[str], frame: pd.DataFrame) -> None:
    with atomic_path(path) as tmp:
        frame.to_parquet(tmp, index=False)


def atomic_write_npy(path: str | os.PathLike[str], array: np.ndarray) -> None:
    with atomic_path(path) as tmp, open(tmp, "wb") as fh:
        np.save(fh, array)


def stable_hash(obj: Any) -> str:
    """A short sha256 of a JSON-serialisable object (dataclasses allowed), stable across runs."""
    text = json.dumps(obj, sort_keys=True, default=_json_default)
    return hashlib.sha256(text.encode()).hexdigest()[:16]


def git_info() -> dict[str, Any]:
    """The current git commit and whether the tree is dirty (``None`` outside a checkout)."""
    root = Path(__file__).resolve().parent.parent
    try:
        commit = subprocess.run(
            ["git", "rev-parse", "HEAD"], cwd=root, capture_output=True, text=True, timeout=5
        ).stdout.strip()
        dirty = subprocess.run(
            ["git", "status", "--porcelain", "--untracked-files=no"],
            cwd=root, capture_output=True, text=True, timeout=5,
        ).stdout.strip()
    except (OSError, subprocess.SubprocessError):
        return {"commit": None, "dirty": None}
    return {"commit": commit or None, "dirty": bool(dirty) if commit else None}


def environment_info() -> dict[str, Any]:
    """Package versions and hardware, for results JSON files."""
    versions: dict[str, str | None] = {"python": sys.version.split()[0]}
    for name in _PACKAGES:
        try:
            versions[name] = metadata.version(name)
        except metadata.PackageNotFoundError:
            versions[name] = None
    hardware: dict[str, Any] = {
        "machine": platform.machine(),
        "processor": platform.processor() or platform.machine(),
        "cpu_count": os.cpu_count(),
    }
    from recsim_personas.agents.cpu_dtype import cpu_info

    cpu = cpu_info()
    hardware.update(cpu_model=cpu["model"], cpu_bf16_flags=cpu["bf16_flags"], cpu_flags=cpu["flags"])
    try:
        import torch

        hardware["cuda"] = torch.cuda.get_device_name(0) if torch.cuda.is_available() else None
    except ImportError:  # pragma: no cover - torch is a hard dependency
        hardware["cuda"] = None
    return {"versions": versions, "hardware": hardware}


class RunFolder:
    """One experiment's folder: artifacts plus ``manifest.json`` recording each finished stage.

    Example:
        >>> run = RunFolder(tmp_dir)                                      # doctest: +SKIP
        >>> if not run.is_done("distill", inputs):                        # doctest: +SKIP
        ...     build(); run.mark_done("distill", inputs, outputs=["profiles.parquet"])
    """

    MANIFEST = "manifest.json"

    def __init__(self, path: str | os.PathLike[str]) -> None:
        self.path = Path(path)
        self.path.mkdir(parents=True, exist_ok=True)

    def __truediv__(self, name: str) -> Path:
        return self.path / name

    @property
    def manifest_path(self) -> Path:
        return self.path / self.MANIFEST

    def manifest(self) -> dict[str, Any]:
        if not self.manifest_path.exists():
            return {"stages": {}}
        try:
            return json.loads(self.manifest_path.read_text(encoding="utf-8"))
        except json.JSONDecodeError:
            # A manifest is only ever replaced atomically; an unreadable one means the stages re-run.
            return {"stages": {}}

    def stage_record(self, stage: str) -> dict[str, Any] | None:
        return self.manifest()["stages"].get(stage)

    def is_done(self, stage: str, inputs: Any) -> bool:
        """True when ``stage`` finished with the same inputs and all its outputs still exist."""
        rec = self.stage_record(stage)
        if rec is None or rec.get("inputs_hash") != stable_hash(inputs):
            return False
        return all((self.path / out).exists() for out in rec.get("outputs", []))

    def mark_done(
        self, stage: str, inputs: Any, outputs: list[str], extra: dict[str, Any] | None = None
    ) -> None:
        manifest = self.manifest()
        manifest["stages"][stage] = {
            "inputs_hash": stable_hash(inputs),
            "inputs": json.loads(json.dumps(inputs, default=_json_default)),
            "outputs": outputs,
            "finished_at": time.strftime("%Y-%m-%dT%H:%M:%S"),
            **(extra or {}),
        }
        manifest.update(environment_info())
        manifest["git"] = git_info()
        atomic_write_json(self.manifest_path, manifest)

    def run_stage(
        self,
        stage: str,
        inputs: Any,
        outputs: list[str],
        build: Callable[[], dict[str, Any] | None],
    ) -> bool:
        """Run ``build`` unless the stage is done with these inputs. Returns True if it ran."""
        if self.is_done(stage, inputs):
            return False
        extra = build()
        self.mark_done(stage, inputs, outputs, extra=extra)
        return True
