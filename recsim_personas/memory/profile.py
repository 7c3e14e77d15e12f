"""A user's short-term memory M_s: three social-trait levels plus a first-person taste description."""

from __future__ import annotations

from dataclasses import dataclass, field, fields
from typing import Any

from recsim_personas.errors import DataError
from recsim_personas.memory.traits import render_persona, trait_text

__all__ = ["PROFILE_COLUMNS", "UserProfile"]

#: Columns of ``profiles.parquet`` (docs/design.md), in order.
PROFILE_COLUMNS: tuple[str, ...] = (
    "user_id",
    "activity",
    "conformity",
    "diversity",
    "activity_level",
    "conformity_level",
    "diversity_level",
    "taste",
    "profile_text",
)


@dataclass(frozen=True)
class UserProfile:
    """M_s for one user.

    Attributes:
        user_id: The user's id.
        activity_level: 0 low, 1 mid, 2 high (see :mod:`recsim_personas.memory.traits`).
        conformity_level: 0 low (ignores historical ratings) .. 2 high (follows them).
        diversity_level: 0 low (narrow taste) .. 2 high.
        taste: First-person description of the user's tastes and dislikes.
        activity: Trait text; filled from the level when empty.
        conformity: Trait text; filled from the level when empty.
        diversity: Trait text; filled from the level when empty.
    """

    user_id: int
    activity_level: int
    conformity_level: int
    diversity_level: int
    taste: str
    activity: str = field(default="")
    conformity: str = field(default="")
    diversity: str = field(default="")

    def __post_init__(self) -> None:
        for trait in ("activity", "conformity", "diversity"):
            level = getattr(self, f"{trait}_level")
            text = trait_text(trait, int(level))  # validates the level
            object.__setattr__(self, f"{trait}_level", int(level))
            if not getattr(self, trait):
                object.__setattr__(self, trait, text)
        object.__setattr__(self, "user_id", int(self.user_id))
        if not str(self.taste).strip():
            raise DataError(f"user {self.user_id}: the profile's taste description is empty")

    @property
    def profile_text(self) -> str:
        """M_s rendered as the paper's PERSONA paragraph (Appendix C)."""
        return render_persona(self.activity, self.conformity, self.diversity, self.taste)

    def to_row(self) -> dict[str, Any]:
        """One row of ``profiles.parquet`` (columns :data:`PROFILE_COLUMNS`)."""
        return {column: getattr(self, column) for column in PROFILE_COLUMNS}

    @classmethod
    def from_row(cls, row: dict[str, Any]) -> UserProfile:
        """Inverse of :meth:`to_row` (``profile_text`` is recomputed, not read).

        Raises:
            DataError: a required column is missing.
        """
        missing = [c for c in PROFILE_COLUMNS if c != "profile_text" and c not in row]
        if missing:
            raise DataError(f"profile row is missing column(s) {missing}; expected {PROFILE_COLUMNS}")
        # The ids and levels are integers, the trait texts and the taste strings.
        return cls(**{f.name: (int if f.name == "user_id" or f.name.endswith("_level") else str)(row[f.name])
                      for f in fields(cls)})
