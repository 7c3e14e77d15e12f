"""Item facts for prompts: title, year, genres, summary and cast, and the train-only average rating.

The paper's rating prompt describes an item in two lines (Appendix C)::

    MOVIE: The movie Big Lebowski, The was released in the year 1998 is of Comedy, Crime, Mystery,
    Thriller genre with historical average rating of 3.74.
    SUMMARY: <summary>. The cast of the movie is as follows: Jeff Bridges, John Goodman, ...

:meth:`ItemCatalog.describe` and :meth:`ItemCatalog.summary` produce those texts. The historical
average is computed on the **train** split only, so a test rating never leaks into its own prompt.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import pandas as pd

from recsim_personas.data.dataset import RatingDataset
from recsim_personas.errors import DataError

__all__ = ["PAPER_MAX_CAST", "ItemCatalog", "ItemInfo", "text_or_none", "title_with_year"]

#: The paper's examples list the first 15 names of IMDb's top cast (its Big Lebowski line stops
#: at John Turturro, the 15th of 18 names on the page), so summaries keep at most 15 by default.
PAPER_MAX_CAST = 15


@dataclass(frozen=True)
class ItemInfo:
    """What a prompt may say about one item.

    Attributes:
        item_id: The item.
        title: Title without the year (``"Big Lebowski, The"``).
        year: Release year, or ``None``.
        genres: Genre names (possibly empty).
        avg_rating: Mean train rating, or ``None`` when the item has no train rating.
        n_ratings: Number of train ratings.
        description: Plot summary, or ``None``.
        director: Director name(s), ``", "``-joined, or ``None``.
        cast: Cast names in billing order, ``", "``-joined, or ``None``.
    """

    item_id: int
    title: str
    year: int | None
    genres: tuple[str, ...]
    avg_rating: float | None
    n_ratings: int
    description: str | None = None
    director: str | None = None
    cast: str | None = None

    @property
    def label(self) -> str:
        """The title with its year, as lists show it: ``"Big Lebowski, The (1998)"``."""
        return title_with_year(self.title, self.year)


def title_with_year(title: str, year: int | None) -> str:
    """``"Title (1998)"``, or the bare title without a year: the one way items are named in text."""
    return f"{title} ({year})" if year is not None else title


def text_or_none(value: object) -> str | None:
    """A table cell as stripped text; ``None`` for a missing (None, NaN, NA) or blank cell."""
    if value is None or (isinstance(value, float) and np.isnan(value)) or value is pd.NA:
        return None
    text = str(value).strip()
    return text or None


class ItemCatalog:
    """Item facts of a dataset, with rating statistics from a train split.

    Args:
        dataset: The dataset whose ``items`` table describes the items.
        train: Train interactions (columns ``item_id`` and ``rating``); the historical average
            rating and the rating count come from these rows only.
        max_cast: Most cast names :meth:`summary` lists (``None``: all).

    Raises:
        DataError: ``train`` lacks a column, or rates an item the dataset does not know.
    """

    def __init__(
        self, dataset: RatingDataset, train: pd.DataFrame, *, max_cast: int | None = PAPER_MAX_CAST
    ) -> None:
        missing = [c for c in ("item_id", "rating") if c not in train.columns]
        if missing:
            raise DataError(
                f"ItemCatalog: train frame lacks column {missing[0]!r} (has {', '.join(map(str, train.columns))})"
            )
        if max_cast is not None and max_cast < 1:
            raise DataError(f"ItemCatalog: max_cast must be >= 1 or None, got {max_cast}")
        self.dataset = dataset
        self.max_cast = max_cast
        items = dataset.items
        stats = train.groupby("item_id")["rating"].agg(["mean", "count"])
        unknown = stats.index.difference(items.index)
        if len(unknown):
            raise DataError(
                f"ItemCatalog: train rates {len(unknown)} item id(s) not in dataset "
                f"{dataset.name!r} (e.g. {int(unknown[0])}); was the split made from another dataset?"
            )
        self._mean = stats["mean"].reindex(items.index)
        self._count = stats["count"].reindex(items.index).fillna(0).astype(np.int64)
        self._items = items

    def __len__(self) -> int:
        return len(self._items)

    def __contains__(self, item_id: object) -> bool:
        try:
            return int(item_id) in self._items.index  # type: ignore[call-overload]
        except (TypeError, ValueError):
            return False

    @property
    def item_ids(self) -> np.ndarray:
        """All item ids of the dataset (rated or not), ascending as the items table has them."""
        return self._items.index.to_numpy()

    def stats(self) -> pd.DataFrame:
        """Per item: ``avg_rating`` (NaN without train ratings) and ``n_ratings`` from train."""
        return pd.DataFrame({"avg_rating": self._mean, "n_ratings": self._count})

    def info(self, item_id: int) -> ItemInfo:
        """Everything known about ``item_id``.

        Raises:
            DataError: The id is not an item of the dataset.
        """
        try:
            key = int(item_id)
            row = self._items.loc[key]
        except (KeyError, TypeError, ValueError):
            ids = self._items.index
            raise DataError(
                f"unknown item id {item_id!r} in dataset {self.dataset.name!r} "
                f"(ids run {int(ids.min())}-{int(ids.max())}, {len(ids)} items)"
            ) from None
        mean = self._mean.loc[key]
        year = row.get("year")
        genres = row.get("genres")
        return ItemInfo(
            item_id=key,
            title=str(row["title"]),
            year=None if year is None or pd.isna(year) else int(year),
            genres=tuple(genres) if isinstance(genres, (tuple, list)) else (),
            avg_rating=None if pd.isna(mean) else float(mean),
            n_ratings=int(self._count.loc[key]),
            description=text_or_none(row.get("description")),
            director=text_or_none(row.get("director")),
            cast=text_or_none(row.get("cast")),
        )

    def describe(self, item_id: int) -> str:
        """The paper's MOVIE line, e.g. ``"The movie Big Lebowski, The was released in the year
        1998 is of Comedy, Crime genre with historical average rating of 3.74."``

        Without a year the release clause is left out; without genres it says "of unknown
        genre"; without train ratings it says "with no historical ratings".
        """
        info = self.info(item_id)
        text = f"The movie {info.title}"
        if info.year is not None:
            text += f" was released in the year {info.year}"
        genres = ", ".join(info.genres) if info.genres else "unknown"
        text += f" is of {genres} genre"
        if info.avg_rating is None:
            text += " with no historical ratings."
        else:
            text += f" with historical average rating of {info.avg_rating:.2f}."
        return text

    def summary(self, item_id: int) -> str | None:
        """The paper's SUMMARY line: ``"<description>. The cast of the movie is as follows: A, B"``.

        The text joins exactly as the paper's prompts do (a description ending in "." gives
        ".."). Only the description, or only the cast, gives that part alone; neither gives
        ``None``.
        """
        info = self.info(item_id)
        cast = info.cast
        if cast is not None and self.max_cast is not None:
            cast = ", ".join(cast.split(", ")[: self.max_cast])
        parts = []
        if info.description is not None:
            parts.append(info.description)
        if cast is not None:
            parts.append(f"The cast of the movie is as follows: {cast}")
        return ". ".join(parts) if parts else None
