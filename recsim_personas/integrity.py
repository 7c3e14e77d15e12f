"""Run folders that verify themselves: damaged files, stale adapters, and the command that repairs them.

Every stage of a run folder records the size and SHA-256 of the files it wrote
(:meth:`~recsim_personas.artifacts.RunFolder.mark_done`). :func:`verify_run_folder` checks them
before a later stage, a re-run or ``gym.make`` reads the folder:

* a damaged file (truncated, edited, missing) of a stage is **rebuilt** by the commands that can
  build it (``reproduce`` repairs everything; ``train`` its adapters) and **refused** elsewhere, with
  one :class:`~recsim_personas.errors.DataError` line naming the file and the repairing command;
* each trained adapter records (stage ``adapter:<name>``) the digests of the memory-stage files it
  was trained on, so rebuilding the memories with another split or backend makes the old adapters
  **stale**: the environment refuses them instead of silently serving users they never saw;
* files without a record (folders from older versions, adapters trained from Python) get a cheap
  structural check: parquet magic bytes, the safetensors header against the file size, npy
  headers, JSON syntax.
"""

from __future__ import annotations

import json
import shutil
import struct
import warnings
from collections.abc import Iterable
from pathlib import Path
from typing import Any

from recsim_personas.adapter_names import ADAPTER_FILES, ADAPTER_INFO
from recsim_personas.artifacts import RunFolder
from recsim_personas.errors import DataError, RecsimWarning

__all__ = [
    "MEMORY_FILES",
    "RunRepairWarning",
    "adapter_record_inputs",
    "adapter_stage",
    "adapter_up_to_date",
    "check_structure",
    "memory_inputs",
    "record_adapters",
    "structure_problem",
    "verify_run_folder",
]

#: The memory-stage files an adapter's training rows and the environment's users come from.
MEMORY_FILES: tuple[str, ...] = (
    "split/train.parquet", "split/test.parquet", "profiles.parquet", "memories.parquet",
    "embeddings/profiles.npy", "embeddings/profile_user_ids.npy", "embeddings/items.npy",
    "embeddings/item_ids.npy", "personas.parquet",
)
_MEMORY_STAGES = ("split", "distill", "embed", "personas")
_ADAPTER_FILES = (*ADAPTER_FILES, ADAPTER_INFO)


class RunRepairWarning(RecsimWarning):
    """A damaged file of a run folder was removed and its stage is rebuilt."""


def adapter_stage(name: str) -> str:
    """The manifest stage of adapter folder ``adapters/<name>``."""
    return f"adapter:{name}"


def _repair_command(stage: str, run: Path) -> str:
    if stage in _MEMORY_STAGES:
        return f"`recsim-personas memory --out {run}` (or `recsim-personas reproduce --out {run}`)"
    if stage.startswith("adapter:"):
        return f"`recsim-personas train {run}` (or `recsim-personas reproduce --out {run}`)"
    return f"`recsim-personas reproduce --out {run}`"


def memory_inputs(run: RunFolder) -> dict[str, Any]:
    """The recorded digests of :data:`MEMORY_FILES` (``None`` for a file no stage recorded)."""
    stages = run.manifest()["stages"]
    recorded: dict[str, str | None] = dict.fromkeys(MEMORY_FILES)
    for stage in _MEMORY_STAGES:
        files = (stages.get(stage) or {}).get("files") or {}
        for name in MEMORY_FILES:
            if name in files:
                recorded[name] = files[name].get("sha256")
    return recorded


def adapter_record_inputs(run: RunFolder, settings: dict[str, Any]) -> dict[str, Any]:
    """The inputs an adapter record holds: the memory files' digests and the training ``settings``."""
    return {"memory": memory_inputs(run), "settings": settings}


def record_adapters(run_dir: str | Path, names: Iterable[str], settings: dict[str, Any]) -> None:
    """Record the adapters ``names`` (folders under ``adapters/``) as trained on the current memories.

    Args:
        run_dir: The run folder.
        names: Adapter folder names that ``train_adapter`` just returned (trained or reused: either
            way their rows come from the current memories).
        settings: Everything else their rows and weights depend on (``adapter_inputs``).
    """
    run = RunFolder(run_dir)
    inputs = adapter_record_inputs(run, settings)
    for name in names:
        outputs = [f"adapters/{name}/{f}" for f in _ADAPTER_FILES]
        if all((run.path / o).is_file() for o in outputs):
            run.mark_done(adapter_stage(name), inputs, outputs)


def adapter_up_to_date(run_dir: str | Path, name: str, settings: dict[str, Any]) -> bool:
    """True when adapter ``name`` is recorded with these memories and ``settings`` and is intact: a
    real run reuses it (the same inputs give the same rows, so the same run key)."""
    run = RunFolder(run_dir)
    stage = adapter_stage(name)
    return run.is_done(stage, adapter_record_inputs(run, settings))


def structure_problem(path: Path) -> str | None:
    """Why ``path`` cannot be a whole file of its kind (cheap checks, no full parse), or ``None``."""
    try:
        size = path.stat().st_size
        with open(path, "rb") as fh:
            if path.suffix == ".parquet":
                head = fh.read(4)
                fh.seek(max(0, size - 4))
                if size < 12 or head != b"PAR1" or fh.read(4) != b"PAR1":
                    return "is not a whole parquet file (truncated?)"
            elif path.suffix == ".safetensors":
                raw = fh.read(8)
                n = struct.unpack("<Q", raw)[0] if len(raw) == 8 else -1
                header = json.loads(fh.read(n)) if 0 < n <= size - 8 else None
                if not isinstance(header, dict):
                    return "has no safetensors header (truncated?)"
                ends = [v["data_offsets"][1] for k, v in header.items() if k != "__metadata__"]
                if 8 + n + max(ends, default=0) != size:
                    return f"has {size} bytes, its header describes {8 + n + max(ends, default=0)} (truncated?)"
            elif path.suffix == ".npy":
                import numpy as np

                arr = np.load(path, mmap_mode="r", allow_pickle=False)
                del arr
            elif path.suffix == ".json":
                json.loads(fh.read().decode("utf-8"))
    except (OSError, ValueError, KeyError, TypeError, IndexError, struct.error) as exc:
        return f"cannot be read ({' '.join(str(exc).split())[:80]})"
    return None


def verify_run_folder(
    run_dir: str | Path,
    *,
    adapters: Iterable[str] = (),
    repair: Iterable[str] = (),
    check: Iterable[str] = ("memory", "adapters", "results"),
) -> list[str]:
    """Check a run folder's recorded files (and the ``adapters`` about to be loaded) before use.

    Args:
        run_dir: The run folder.
        adapters: Adapter names (folders under ``adapters/``) the caller will load: each must be
            intact and trained on the folder's current memories.
        repair: Stage kinds this caller can rebuild: ``"memory"``, ``"adapters"``, ``"results"``
            (everything else). A damaged file of such a stage is deleted, its record dropped, and a
            :class:`RunRepairWarning` issued, so the caller's own stage logic rebuilds it.
        check: Stage kinds whose recorded files are checked (the environment checks only the
            memory stages and the adapters it loads).

    Returns:
        One line per repaired file.

    Raises:
        DataError: A damaged file the caller cannot rebuild, or a stale adapter it needs.
    """
    if not Path(run_dir).is_dir():
        raise DataError(f"run folder {run_dir} does not exist; create it with `recsim-personas memory --out {run_dir}`")
    run = RunFolder(run_dir)
    can, checked = set(repair), set(check)
    repaired: list[str] = []
    manifest = run.manifest()
    changed = False
    wanted = {adapter_stage(a) for a in adapters}
    for stage, rec in list(manifest["stages"].items()):
        kind = "memory" if stage in _MEMORY_STAGES else "adapters" if stage.startswith("adapter:") else "results"
        if kind not in checked and stage not in wanted:
            continue
        problems = run.damaged(stage, rec)
        if not problems:
            continue
        if kind not in can:
            raise DataError(f"run folder {run.path}: {problems[0]} (stage {stage}); repair it with "
                            f"{_repair_command(stage, run.path)}")
        for name in rec.get("files") or rec.get("outputs", []):
            path = run.path / name
            if path.is_file() and any(p.startswith(f"{name} ") for p in problems):
                path.unlink()
        if kind == "adapters":  # an adapter folder without recsim_adapter.json is retrained
            info = run.path / "adapters" / stage.removeprefix("adapter:") / "recsim_adapter.json"
            info.unlink(missing_ok=True)
        manifest["stages"].pop(stage)
        changed = True
        line = f"{run.path}: {problems[0]}; rebuilding stage {stage}"
        repaired.append(line)
        warnings.warn(line, RunRepairWarning, stacklevel=2)
    if changed:
        from recsim_personas.artifacts import atomic_write_json

        atomic_write_json(run.manifest_path, manifest)
    current = memory_inputs(run)
    for name in adapters:
        folder = run.path / "adapters" / name
        rec = manifest["stages"].get(adapter_stage(name))
        for f in _ADAPTER_FILES[:2]:
            problem = structure_problem(folder / f) if (folder / f).is_file() else None
            if problem:
                if "adapters" in can:
                    shutil.rmtree(folder, ignore_errors=True)
                    break
                raise DataError(f"run folder {run.path}: adapters/{name}/{f} {problem}; repair it with "
                                f"{_repair_command(adapter_stage(name), run.path)}")
        trained_on = (rec or {}).get("inputs", {}).get("memory")
        if rec is not None and trained_on != current and "adapters" not in can:
            changed_files = [n for n, d in current.items() if (trained_on or {}).get(n) != d]
            raise DataError(
                f"run folder {run.path}: adapter {name} was trained on other memories "
                f"({', '.join(changed_files[:3])} changed since); re-train it with "
                f"`recsim-personas train {run.path}`"
            )
    return repaired


def check_structure(run_dir: str | Path, names: Iterable[str]) -> None:
    """Raise a one-line :class:`DataError` for the first of ``names`` that is not a whole file."""
    root = Path(run_dir)
    for name in names:
        path = root / name
        if path.is_file():
            problem = structure_problem(path)
            if problem:
                raise DataError(f"run folder {root}: {name} {problem}; rebuild it with "
                                f"`recsim-personas memory --out {root}`")
