"""Output paths checked before any work starts: a run folder (``--out``) and result files (``--json``).

Each check raises one :class:`~recsim_personas.errors.OutputError` line naming the option, the path
and the fix, so a bad path costs nothing instead of losing a computed table at the final write.
"""

from __future__ import annotations

import os
from pathlib import Path

from recsim_personas.errors import OutputError

__all__ = ["check_output_dir", "check_output_file"]


def _writable_ancestor(path: Path, option: str) -> None:
    """The nearest existing ancestor of ``path`` must be a writable folder."""
    for parent in path.parents:
        if parent.exists():
            if not parent.is_dir():
                raise OutputError(f"{option} {path}: {parent} is a file, not a folder; choose another path")
            if not os.access(parent, os.W_OK | os.X_OK):
                raise OutputError(f"{option} {path}: folder {parent} is not writable; choose another path")
            return


def check_output_dir(path: str | os.PathLike[str], option: str = "--out") -> Path:
    """``path`` is, or can be created as, a writable folder.

    Raises:
        OutputError: ``path`` is a file, lies under a file, or cannot be written.
    """
    path = Path(path)
    if path.exists():
        if not path.is_dir():
            raise OutputError(f"{option} {path} is a file, not a folder; give a folder (it is created if missing)")
        if not os.access(path, os.W_OK | os.X_OK):
            raise OutputError(f"{option} {path}: folder is not writable; choose another {option}")
        return path
    _writable_ancestor(path, option)
    return path


def check_output_file(path: str | os.PathLike[str], option: str = "--json") -> Path:
    """``path`` can be written as a file (its folder is created if missing).

    Raises:
        OutputError: ``path`` is a folder, lies under a file, or cannot be written.
    """
    path = Path(path)
    if path.is_dir():
        raise OutputError(f"{option} {path} is a folder; give a file name, e.g. {path / 'results.json'}")
    if path.exists() and not os.access(path, os.W_OK):
        raise OutputError(f"{option} {path}: file is not writable; choose another {option}")
    if path.parent.exists() and not path.parent.is_dir():
        raise OutputError(f"{option} {path}: {path.parent} is a file, not a folder; choose another path")
    _writable_ancestor(path, option)
    return path
