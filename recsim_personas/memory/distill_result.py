"""What a distillation returns (:class:`DistillResult`): the profile, memory and log frames, typed."""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pandas as pd

from recsim_personas.artifacts import atomic_write_parquet
from recsim_personas.errors import DataError
from recsim_personas.memory.profile import PROFILE_COLUMNS, UserProfile
from recsim_personas.memory.statistics import TraitCuts

__all__ = ["LOG_COLUMNS", "MEMORY_COLUMNS", "DistillResult"]

#: Columns of ``memories.parquet``.
MEMORY_COLUMNS: tuple[str, ...] = ("user_id", "item_id", "rating", "timestamp", "text")
#: Columns of ``distill_log.parquet``.
LOG_COLUMNS: tuple[str, ...] = ("user_id", "batch", "step", "attempt", "reason", "words", "detail")

# Text columns use "str" (pandas 3's string dtype; plain object strings on pandas 2), so frames
# compare equal after a parquet round trip.
_MEMORY_DTYPES = {"user_id": "int64", "item_id": "int64", "rating": "float64", "timestamp": "int64",
                  "text": "str"}
_LOG_DTYPES = {"user_id": "int64", "batch": "int64", "step": "str", "attempt": "int64",
               "reason": "str", "words": "int64", "detail": "str"}
_PROFILE_DTYPES = {"user_id": "int64", "activity": "str", "conformity": "str", "diversity": "str",
                   "activity_level": "int64", "conformity_level": "int64",
                   "diversity_level": "int64", "taste": "str", "profile_text": "str"}


def _frame(rows: list[dict[str, Any]], columns: tuple[str, ...], dtypes: dict[str, str]) -> pd.DataFrame:
    """``rows`` as a frame of ``columns`` with ``dtypes`` (an empty frame keeps the dtypes too)."""
    if not rows:
        return pd.DataFrame({c: pd.Series(dtype=dtypes.get(c, "str")) for c in columns})
    return pd.DataFrame(rows, columns=list(columns)).astype(dtypes)


@dataclass
class DistillResult:
    """What :func:`~recsim_personas.memory.distill.distill_users` returns.

    Attributes:
        profiles: One row per user, columns :data:`~recsim_personas.memory.profile.PROFILE_COLUMNS`.
        memories: One row per train interaction, columns :data:`MEMORY_COLUMNS`.
        log: One row per rejected or replaced answer, columns :data:`LOG_COLUMNS`.
        usage: Counters: users, resumed users, batches, steps, rejections, fallbacks, seconds, and
            the backend's own (requests, tokens, cost, cache hits).
        trait_cuts: The cut points that mapped statistics to trait levels.
    """

    profiles: pd.DataFrame
    memories: pd.DataFrame
    log: pd.DataFrame
    usage: dict[str, Any] = field(default_factory=dict)
    trait_cuts: TraitCuts | None = None

    @classmethod
    def from_rows(cls, profiles: list[dict[str, Any]], memories: list[dict[str, Any]],
                  log: list[dict[str, Any]], **kwargs: Any) -> DistillResult:
        """Build the typed frames from row dicts (``kwargs``: ``usage``, ``trait_cuts``)."""
        return cls(profiles=_frame(profiles, PROFILE_COLUMNS, _PROFILE_DTYPES),
                   memories=_frame(memories, MEMORY_COLUMNS, _MEMORY_DTYPES),
                   log=_frame(log, LOG_COLUMNS, _LOG_DTYPES), **kwargs)

    def profile(self, user_id: int) -> UserProfile:
        rows = self.profiles[self.profiles["user_id"] == int(user_id)]
        if rows.empty:
            raise DataError(
                f"user id {user_id} is not in this result ({len(self.profiles)} users distilled)"
            )
        return UserProfile.from_row(rows.iloc[0].to_dict())

    def save(self, directory: str | Path) -> dict[str, Path]:
        """Write ``profiles.parquet``, ``memories.parquet``, ``distill_log.parquet`` atomically."""
        directory = Path(directory)
        paths = {
            "profiles": directory / "profiles.parquet",
            "memories": directory / "memories.parquet",
            "log": directory / "distill_log.parquet",
        }
        for name, frame in (("profiles", self.profiles), ("memories", self.memories), ("log", self.log)):
            atomic_write_parquet(paths[name], frame)
        return paths
