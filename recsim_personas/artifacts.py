"""Atomic file writes and the run folder: one folder per experiment, with a manifest of stages.

A stage records the hash of its inputs (config, upstream hashes) in ``manifest.json`` and the size
and SHA-256 of every file it wrote; a stage whose inputs did not change and whose files are intact
is skipped on re-run, a changed input or a damaged file re-runs it. Every file is written to a
temporary name in the same folder and renamed, so a crash or Ctrl-C never leaves a half-written file;
a write that fails (disk full, read-only folder) raises one :class:`OutputError` line naming the
path. :meth:`RunFolder.lock` keeps a second writer out of a folder another process is writing.
"""

from __future__ import annotations

import contextlib
import errno
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

from recsim_personas.errors import DataError, OutputError

__all__ = [
    "RunFolder",
    "atomic_path",
    "atomic_write_json",
    "atomic_write_npy",
    "atomic_write_parquet",
    "atomic_write_text",
    "environment_info",
    "file_digest",
    "file_record",
    "git_info",
    "stable_hash",
]

_PACKAGES = (
    "recsim-personas", "numpy", "pandas", "scikit-learn", "implicit", "torch", "transformers",
    "peft", "sentence-transformers", "faiss-cpu", "gymnasium", "openai",
)


def _write_error(path: Path, exc: OSError) -> OutputError:
    reason = exc.strerror or type(exc).__name__
    hint = {errno.ENOSPC: "free disk space", errno.EROFS: "choose a writable location",
            errno.EACCES: "choose a writable location", errno.EPERM: "choose a writable location",
            errno.ENOTDIR: "a part of the path is a file", errno.EISDIR: "the path is a folder",
            errno.EEXIST: "a part of the path is a file"}.get(exc.errno or 0, "check the path")
    return OutputError(f"cannot write {path}: {reason}; {hint}")


@contextmanager
def atomic_path(path: str | os.PathLike[str]) -> Iterator[Path]:
    """Yield a temporary path beside ``path``; rename it onto ``path`` only if the block succeeds.

    Raises:
        OutputError: The folder cannot be created or written, or the disk is full (one line naming
            ``path``).
    """
    path = Path(path)
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
        os.close(fd)
    except OSError as exc:
        raise _write_error(path, exc) from None
    tmp_path = Path(tmp)
    try:
        try:
            yield tmp_path
            os.replace(tmp_path, path)
        except OSError as exc:
            raise _write_error(path, exc) from None
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


def _sha256(path: Path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as fh:
        for block in iter(lambda: fh.read(1 << 20), b""):
            h.update(block)
    return h.hexdigest()


def file_digest(path: str | Path) -> str | None:
    """SHA-256 (first 16 hex digits) of a file's bytes; ``None`` if it does not exist."""
    path = Path(path)
    return _sha256(path)[:16] if path.is_file() else None


def file_record(path: str | os.PathLike[str]) -> dict[str, Any] | None:
    """``{"size": bytes, "sha256": hex}`` of a file, or ``None`` if it is missing."""
    path = Path(path)
    if not path.is_file():
        return None
    return {"size": path.stat().st_size, "sha256": _sha256(path)}


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
    from recsim_personas.hardware import cpu_info

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

    Each stage record holds the hash of its inputs and ``files``: the size and SHA-256 of every file
    it wrote, so a truncated or edited file is found (:meth:`damaged`) and the stage re-runs.

    Example:
        >>> run = RunFolder(tmp_dir)                                      # doctest: +SKIP
        >>> if not run.is_done("distill", inputs):                        # doctest: +SKIP
        ...     build(); run.mark_done("distill", inputs, outputs=["profiles.parquet"])
    """

    MANIFEST = "manifest.json"
    LOCK = ".lock"

    def __init__(self, path: str | os.PathLike[str]) -> None:
        self.path = Path(path)
        if self.path.exists() and not self.path.is_dir():
            raise OutputError(f"run folder {self.path} is a file, not a folder; choose another path")
        try:
            self.path.mkdir(parents=True, exist_ok=True)
        except OSError as exc:
            raise _write_error(self.path, exc) from None

    def __truediv__(self, name: str) -> Path:
        return self.path / name

    @property
    def manifest_path(self) -> Path:
        return self.path / self.MANIFEST

    def manifest(self) -> dict[str, Any]:
        if not self.manifest_path.exists():
            return {"stages": {}}
        try:
            data = json.loads(self.manifest_path.read_text(encoding="utf-8"))
        except (json.JSONDecodeError, UnicodeDecodeError):
            # A manifest is only ever replaced atomically; an unreadable one means the stages re-run.
            return {"stages": {}}
        if not isinstance(data, dict) or not isinstance(data.get("stages"), dict):
            return {"stages": {}}
        return data

    def stage_record(self, stage: str) -> dict[str, Any] | None:
        return self.manifest()["stages"].get(stage)

    def damaged(self, stage: str, record: dict[str, Any] | None = None) -> list[str]:
        """One line per output of ``stage`` that is missing or differs from its recorded size / digest."""
        rec = record if record is not None else self.stage_record(stage)
        if rec is None:
            return []
        files = rec.get("files")
        problems = []
        if not isinstance(files, dict):  # a record from before digests: existence only
            return [f"{out} is missing" for out in rec.get("outputs", []) if not (self.path / out).exists()]
        for name, want in files.items():
            path = self.path / name
            if not path.is_file():
                problems.append(f"{name} is missing")
                continue
            size = path.stat().st_size
            if size != want.get("size"):
                problems.append(f"{name} has {size} bytes, {want.get('size')} were written")
            elif (file_record(path) or {}).get("sha256") != want.get("sha256"):
                problems.append(f"{name} changed since it was written (SHA-256 differs)")
        return problems

    def is_done(self, stage: str, inputs: Any) -> bool:
        """True when ``stage`` finished with the same inputs and all its outputs are intact."""
        rec = self.stage_record(stage)
        if rec is None or rec.get("inputs_hash") != stable_hash(inputs):
            return False
        return not self.damaged(stage, rec)

    def mark_done(
        self, stage: str, inputs: Any, outputs: list[str], extra: dict[str, Any] | None = None
    ) -> None:
        manifest = self.manifest()
        files = {}
        for out in outputs:
            rec = file_record(self.path / out)
            if rec is not None:
                files[out] = rec
        manifest["stages"][stage] = {
            "inputs_hash": stable_hash(inputs),
            "inputs": json.loads(json.dumps(inputs, default=_json_default)),
            "outputs": outputs,
            "files": files,
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

    @contextmanager
    def lock(self, command: str = "recsim-personas") -> Iterator[None]:
        """Hold the folder's write lock for the block; a second writer fails at once.

        Raises:
            DataError: Another process holds the lock (names its pid and command).
        """
        import fcntl

        path = self.path / self.LOCK
        fh = open(path, "a+", encoding="utf-8")  # noqa: SIM115 - held for the whole block
        try:
            try:
                fcntl.flock(fh, fcntl.LOCK_EX | fcntl.LOCK_NB)
            except BlockingIOError:
                fh.seek(0)
                holder = fh.read().strip() or "another process"
                raise DataError(
                    f"run folder {self.path} is being written by {holder}; wait for it to finish, or "
                    "use another folder"
                ) from None
            fh.seek(0)
            fh.truncate()
            fh.write(f"pid {os.getpid()} ({command}, since {time.strftime('%H:%M:%S')})")
            fh.flush()
            yield
        finally:
            with contextlib.suppress(OSError):
                fh.close()
