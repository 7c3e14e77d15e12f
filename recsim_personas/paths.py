"""Where the library keeps caches (converted models, downloads, embeddings)."""

from __future__ import annotations

import os
from pathlib import Path

__all__ = ["cache_dir"]


def cache_dir(*parts: str) -> Path:
    """``$RECSIM_PERSONAS_CACHE`` (default ``~/.cache/recsim-personas``) joined with ``parts``, created."""
    root = Path(os.environ.get("RECSIM_PERSONAS_CACHE", Path.home() / ".cache" / "recsim-personas"))
    path = root.joinpath(*parts)
    path.mkdir(parents=True, exist_ok=True)
    return path
