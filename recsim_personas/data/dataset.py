"""The in-memory dataset type shared by every stage: interactions, items, users and the rating scale."""

from __future__ import annotations

import hashlib
import re
from collections.abc import Iterable
from dataclasses import dataclass, field

import numpy as np
import pandas as pd

from recsim_personas.errors import DataError

__all__ = [
    "INTERACTION_COLUMNS",
    "ITEM_TEXT_COLUMNS",
    "LoadReport",
    "RatingDataset",
    "RatingScale",
    "make_items_frame",
    "split_title_year",
]

#: Columns (and dtypes) of :attr:`RatingDataset.interactions`.
INTERACTION_COLUMNS: dict[str, str] = {
    "user_id": "int64",
    "item_id": "int64",
    "rating": "float64",
    "timestamp": "int64",
}
#: Optional free-text item columns filled by enrichment tables (missing values are ``None``).
ITEM_TEXT_COLUMNS: tuple[str, ...] = ("description", "director", "cast")


@dataclass(frozen=True)
class RatingScale:
    """An explicit rating scale: ``min`` to ``max`` in steps of ``step`` (1-5 by 1, 0.5-5 by 0.5).

    Attributes:
        min: The lowest level.
        max: The highest level.
        step: The distance between neighbouring levels.
    """

    min: float
    max: float
    step: float

    def __post_init__(self) -> None:
        if not self.step > 0:
            raise DataError(f"rating scale step must be positive, got {self.step}")
        if not self.max > self.min:
            raise DataError(f"rating scale max ({self.max}) must exceed min ({self.min})")
        n = (self.max - self.min) / self.step
        if abs(n - round(n)) > 1e-9:
            raise DataError(
                f"rating scale {self.min}-{self.max} is not a whole number of steps of {self.step}"
            )

    @property
    def levels(self) -> np.ndarray:
        """All valid rating values, ascending."""
        n = round((self.max - self.min) / self.step) + 1
        return np.round(self.min + self.step * np.arange(n), 6)

    @property
    def n_levels(self) -> int:
        return len(self.levels)

    def contains(self, values: np.ndarray | pd.Series | float) -> np.ndarray:
        """Boolean mask: which values lie on the scale (in range and on a step)."""
        v = np.asarray(values, dtype=np.float64)
        k = (v - self.min) / self.step
        on_step = np.abs(k - np.round(k)) < 1e-6
        return on_step & (v >= self.min - 1e-9) & (v <= self.max + 1e-9)

    def clip(self, values: np.ndarray | float) -> np.ndarray:
        """Clip predictions into ``[min, max]`` (predictors may output off-step values)."""
        return np.clip(np.asarray(values, dtype=np.float64), self.min, self.max)

    def snap(self, values: np.ndarray | float) -> np.ndarray:
        """Round values to the nearest level on the scale."""
        v = self.clip(values)
        return np.round(np.round((v - self.min) / self.step) * self.step + self.min, 6)

    def format(self, value: float) -> str:
        """Text of one level as a prompt shows it: ``"4"`` on integer scales, ``"3.5"`` on half stars."""
        if float(self.step).is_integer() and float(self.min).is_integer():
            return str(round(value))
        return f"{value:.1f}"

    def to_dict(self) -> dict[str, float]:
        return {"min": self.min, "max": self.max, "step": self.step}


@dataclass
class LoadReport:
    """What a loader dropped or could not match, so nothing disappears silently.

    Attributes:
        skipped: Rows dropped per file name (only with ``skip_bad_rows=True``; otherwise bad rows
            raise :class:`~recsim_personas.errors.DataError`).
        examples: The first few problems found, each naming file, line and field.
        notes: Other facts worth a line in a log, e.g. how many items an enrichment table matched.
    """

    skipped: dict[str, int] = field(default_factory=dict)
    examples: list[str] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)

    #: How many problem descriptions :attr:`examples` keeps.
    MAX_EXAMPLES = 20

    @property
    def total_skipped(self) -> int:
        """Rows dropped over all files."""
        return sum(self.skipped.values())

    def add_skipped(self, file: str, count: int, examples: Iterable[str] = ()) -> None:
        """Record ``count`` dropped rows of ``file`` and a few of their problem descriptions."""
        if count <= 0:
            return
        self.skipped[file] = self.skipped.get(file, 0) + int(count)
        for text in examples:
            if len(self.examples) >= self.MAX_EXAMPLES:
                break
            self.examples.append(text)

    def to_dict(self) -> dict[str, object]:
        return {
            "skipped": dict(self.skipped),
            "total_skipped": self.total_skipped,
            "examples": list(self.examples),
            "notes": list(self.notes),
        }


@dataclass
class RatingDataset:
    """Explicit-feedback data in one canonical shape.

    Attributes:
        name: Short identifier, e.g. ``"ml-1m"``.
        interactions: One row per (user, item) with columns ``user_id`` (int64), ``item_id``
            (int64), ``rating`` (float64, on ``scale``) and ``timestamp`` (int64, seconds).
            (user, item) pairs are unique.
        items: Indexed by ``item_id``; columns ``title`` (str), ``year`` (nullable Int64),
            ``genres`` (tuple of str), and ``description``, ``director``, ``cast`` (str or None).
        users: Indexed by ``user_id``; demographic columns where the dataset has them (may be empty).
        scale: The rating scale.
        source: Where the data came from (``path``, ``format``, enrichment file, ...).
        report: Rows dropped by ``skip_bad_rows=True`` and other load notes.
    """

    name: str
    interactions: pd.DataFrame
    items: pd.DataFrame
    users: pd.DataFrame
    scale: RatingScale
    source: dict[str, str] = field(default_factory=dict)
    report: LoadReport = field(default_factory=LoadReport)

    @property
    def n_ratings(self) -> int:
        return len(self.interactions)

    @property
    def n_users(self) -> int:
        return int(self.interactions["user_id"].nunique())

    @property
    def n_items(self) -> int:
        """Number of distinct rated items."""
        return int(self.interactions["item_id"].nunique())

    def summary(self) -> dict[str, float | int | str]:
        return {
            "name": self.name,
            "ratings": self.n_ratings,
            "users": self.n_users,
            "items": self.n_items,
            "mean_rating": float(self.interactions["rating"].mean()),
            "scale": f"{self.scale.min}-{self.scale.max} step {self.scale.step}",
        }

    def fingerprint(self) -> str:
        """A content hash of the interactions (stable across processes), for caches and manifests."""
        cols = self.interactions[list(INTERACTION_COLUMNS)]
        h = hashlib.sha256(pd.util.hash_pandas_object(cols, index=False).values.tobytes())
        h.update(repr(self.scale.to_dict()).encode())
        return h.hexdigest()[:16]

    def item_title(self, item_id: int) -> str:
        try:
            return str(self.items.at[item_id, "title"])
        except KeyError:
            raise DataError(f"unknown item id {item_id} in dataset {self.name!r}") from None


# "Toy Story (1995)", "Hyena Road (2015) ", "Death Note: Desu nôto (2006–2007)" and the one ml-100k
# title with a trailing video marker, "Land Before Time III: ... (1995) (V)".
_TITLE_YEAR = re.compile(
    r"^(?P<title>.*?)\s*\((?P<year>\d{4})(?:\s*[-–]\s*(?:\d{4})?)?\)(?P<tag>\s*\((?:V|TV)\))?\s*$"
)


def split_title_year(titles: pd.Series) -> tuple[pd.Series, pd.Series]:
    """Split MovieLens titles into the title and the trailing release year.

    ``"Big Lebowski, The (1998)"`` becomes ``("Big Lebowski, The", 1998)``; the article stays at the
    end as the data has it (the paper's prompts show titles that way). Titles without a year keep
    their text (stripped) and get a missing year.

    Args:
        titles: Raw title strings.

    Returns:
        ``(title, year)``: object strings and a nullable ``Int64`` series, same index as ``titles``.
    """
    raw = titles.astype(object).where(titles.notna(), "").map(str)
    parts = raw.str.extract(_TITLE_YEAR)
    matched = parts["title"].notna()
    tag = parts["tag"].fillna("").str.strip()
    base = parts["title"].where(matched, raw.str.strip())
    title = (base + np.where(tag != "", " " + tag, "")).astype(object)
    year = pd.to_numeric(parts["year"], errors="coerce").astype("Int64")
    return title, year


def make_items_frame(
    item_ids: Iterable[int],
    titles: Iterable[str],
    genres: Iterable[tuple[str, ...]],
    years: Iterable[object] | None = None,
    **extra: Iterable[object],
) -> pd.DataFrame:
    """Build an items table in the canonical shape of :attr:`RatingDataset.items`.

    Args:
        item_ids: Item ids (become the ``item_id`` index).
        titles: Titles without the year.
        genres: One tuple of genre names per item.
        years: Release years (missing allowed); ``None`` means all missing.
        **extra: More columns to keep (e.g. ``imdb_url``); ``description``, ``director`` and
            ``cast`` given here replace the empty defaults.

    Returns:
        A frame indexed by ``item_id`` (int64) with ``title``, ``year`` (Int64), ``genres``,
        ``description``, ``director``, ``cast`` and the extra columns.
    """
    index = pd.Index(np.asarray(list(item_ids), dtype=np.int64), name="item_id")
    n = len(index)
    frame = pd.DataFrame(index=index)
    frame["title"] = pd.Series(list(titles), index=index, dtype=object)
    frame["year"] = (
        pd.array([pd.NA] * n, dtype="Int64")
        if years is None
        else pd.array(
            pd.to_numeric(pd.Series(list(years), dtype=object), errors="coerce"), dtype="Int64"
        )
    )
    frame["genres"] = pd.Series([tuple(g) for g in genres], index=index, dtype=object)
    for column in ITEM_TEXT_COLUMNS:
        frame[column] = pd.Series([None] * n, index=index, dtype=object)
    for column, values in extra.items():
        frame[column] = pd.Series(list(values), index=index, dtype=object)
    return frame
