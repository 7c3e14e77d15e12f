"""Progress bars: drawn on a terminal, silent in logs and CI.

Every bar of the package comes from :func:`progress_bar`. A bar the caller asked for
(``enabled=True``) is drawn only when stderr is a terminal (tqdm's ``disable=None``);
``RECSIM_PERSONAS_PROGRESS=1`` forces bars on, ``=0`` turns them off everywhere.
:func:`quiet_third_party_bars` turns off the bars of transformers and the Hugging Face hub
(weights loading) under the same rule.
"""

from __future__ import annotations

import os
import sys
from typing import Any

__all__ = ["bars_enabled", "progress_bar", "quiet_third_party_bars"]

ENV_VAR = "RECSIM_PERSONAS_PROGRESS"


def _forced() -> bool | None:
    value = os.environ.get(ENV_VAR, "").strip().lower()
    if value in {"1", "true", "yes", "on"}:
        return True
    if value in {"0", "false", "no", "off"}:
        return False
    return None


def bars_enabled(enabled: bool = True) -> bool:
    """Whether a bar the caller asked for would be drawn here and now."""
    if not enabled:
        return False
    forced = _forced()
    if forced is not None:
        return forced
    return bool(getattr(sys.stderr, "isatty", lambda: False)())


def progress_bar(iterable: Any = None, *, enabled: bool = True, **kwargs: Any) -> Any:
    """A tqdm bar that draws only on a terminal (see the module docstring).

    ``enabled=False`` (the caller's ``progress=False``) always disables it; the bar object still
    works (``update``, ``close``, iteration), so callers need no ``if bar`` checks.
    """
    from tqdm.auto import tqdm

    forced = _forced()
    if not enabled or forced is False:
        disable: bool | None = True
    elif forced:
        disable = False
    else:
        disable = None  # tqdm: off when the output is not a terminal
    return tqdm(iterable, disable=disable, **kwargs)


def quiet_third_party_bars() -> None:
    """Hide transformers' and the hub's own bars unless bars are on (a terminal, or forced)."""
    if bars_enabled():
        return
    try:
        from transformers.utils import logging as hf_logging

        hf_logging.disable_progress_bar()
    except ImportError:  # pragma: no cover - transformers is a dependency
        pass
    try:
        from huggingface_hub.utils import disable_progress_bars

        disable_progress_bars()
    except ImportError:  # pragma: no cover
        pass
