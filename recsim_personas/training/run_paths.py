"""Where the Table-1 experiment keeps its work in a run folder (docs/design.md).

``adapters/<adapter>__<mode>/`` holds a trained adapter (named by :mod:`recsim_personas.adapter_names`),
``results/row<NN>_<adapter kind>__<mode>.json`` a finished evaluation of a Table-1 row, with its
predictions in the ``.parquet`` beside it.
"""

from __future__ import annotations

from pathlib import Path

from recsim_personas.adapter_names import adapter_name, persona_adapter_name

__all__ = ["adapter_dir", "result_name", "result_path", "row_adapters"]


def adapter_dir(run_dir: str | Path, name: str, mode: str, *, cue: bool = False) -> Path:
    """``<run_dir>/adapters/<name>__<mode>`` (docs/design.md); ``<name>_cue__<mode>`` with ``cue``."""
    return Path(run_dir) / "adapters" / adapter_name(name, mode, cue=cue)


def result_name(no: int, kind: str, mode: str, *, cue: bool = False) -> str:
    """The name of Table-1 row ``no``'s evaluation: ``row09_persona__ms`` (``row09_persona_cue__ms``
    with the collaborative cue)."""
    return f"row{no:02d}_{adapter_name(kind, mode, cue=cue)}"


def result_path(run: Path, no: int, kind: str, mode: str, results_dir: str = "results", *,
                cue: bool = False) -> Path:
    """``<run>/<results_dir>/row<NN>_<kind>__<mode>.json`` (``<kind>_cue__<mode>`` with ``cue``)."""
    return run / results_dir / f"{result_name(no, kind, mode, cue=cue)}.json"


def row_adapters(kind: str, mode: str, personas: dict[int, int], *, cue: bool = False) -> list[str]:
    """Names of the adapters a Table-1 row of adapter ``kind`` uses (none for the base model)."""
    if kind == "base":
        return []
    if kind == "persona":
        return [persona_adapter_name(p, mode, cue=cue) for p in sorted(set(personas.values()))]
    return [adapter_name(kind, mode, cue=cue)]
