"""The first offending row of a check, so an error can name it."""

from __future__ import annotations

from typing import TYPE_CHECKING

import numpy as np

if TYPE_CHECKING:
    from numpy.typing import ArrayLike

__all__ = ["first_true"]


def first_true(mask: ArrayLike) -> int | None:
    """Position of the first true value of ``mask``, or ``None`` when every value is false.

    Example:
        >>> first_true(~np.isfinite(np.array([1.0, np.nan, np.inf])))
        1
    """
    hits = np.flatnonzero(np.asarray(mask, dtype=bool))
    return int(hits[0]) if hits.size else None
