"""The checks every loader applies to a ratings table before it becomes a :class:`RatingDataset`.

:func:`check_interactions` flags off-scale ratings, duplicate (user, item) pairs and unknown ids;
:func:`ratings_dataset` is the common tail of every loader: check, drop or raise on bad rows, build
the dataset.
"""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path

import numpy as np
import pandas as pd

from recsim_personas.data.dataset import (
    INTERACTION_COLUMNS,
    LoadReport,
    RatingDataset,
    RatingScale,
    make_items_frame,
)
from recsim_personas.data.table import Table
from recsim_personas.errors import DataError

__all__ = ["check_interactions", "finish_interactions", "ratings_dataset"]

_INT_COLUMNS = ("user_id", "item_id", "timestamp")


def check_interactions(
    table: Table,
    scale: RatingScale,
    *,
    fields: Mapping[str, str] | None = None,
    item_ids: pd.Index | None = None,
    item_file: str | None = None,
    user_ids: pd.Index | None = None,
    user_file: str | None = None,
) -> None:
    """Flag off-scale ratings, duplicate (user, item) pairs and unknown ids in a ratings table.

    Args:
        table: Parsed ratings with canonical columns ``user_id``, ``item_id``, ``rating``.
        scale: The rating scale every rating must lie on.
        fields: Canonical name -> name in the file, so messages use the file's column names.
        item_ids: Known item ids (from the item file), or ``None`` to skip the check.
        item_file: Item file name for messages.
        user_ids: Known user ids, or ``None``.
        user_file: User file name for messages.
    """
    fields = dict(fields or {})
    name = lambda c: fields.get(c, c)  # noqa: E731
    frame = table.frame
    rating = frame["rating"].to_numpy(dtype=np.float64)
    finite = np.isfinite(rating)
    off = finite & ~scale.contains(np.where(finite, rating, scale.min))
    off |= np.isinf(rating)
    table.flag(
        off,
        name("rating"),
        lambda pos: (
            f"{rating[pos]:g} is off the {scale.min:g}-{scale.max:g} scale (step {scale.step:g})"
        ),
    )
    for column, known, file in (("item_id", item_ids, item_file), ("user_id", user_ids, user_file)):
        if known is None:
            continue
        ids = frame[column]
        unknown = ids.notna().to_numpy() & ~ids.isin(known).to_numpy()
        what = column.removesuffix("_id")

        def reason(pos: int, ids: pd.Series = ids, what: str = what, file: str | None = file) -> str:
            return f"unknown {what} id {int(ids.iloc[pos])} (not in {file or f'the {what} file'})"

        table.flag(unknown, name(column), reason)
    # Duplicates among rows that are otherwise fine: the first occurrence is kept with
    # skip_bad_rows, later ones are reported with the line of the first.
    ok = ~table.bad_rows()
    keys = frame.loc[ok, ["user_id", "item_id"]]
    dup_local = keys.duplicated(keep="first").to_numpy()
    if dup_local.any():
        ok_positions = np.flatnonzero(ok)
        first_line = (
            pd.Series(table.lines[ok_positions])
            .groupby([keys["user_id"].to_numpy(), keys["item_id"].to_numpy()])
            .transform("min")
            .to_numpy()
        )
        dup = np.zeros(len(frame), dtype=bool)
        dup[ok_positions[dup_local]] = True
        first_by_pos = np.zeros(len(frame), dtype=np.int64)
        first_by_pos[ok_positions] = first_line
        table.flag(
            dup,
            f"{name('user_id')}, {name('item_id')}",
            lambda pos: (
                f"duplicate rating of item {int(frame['item_id'].iloc[pos])} by user "
                f"{int(frame['user_id'].iloc[pos])} (first at line {int(first_by_pos[pos])})"
            ),
        )


def finish_interactions(frame: pd.DataFrame, path: Path | None = None) -> pd.DataFrame:
    """Canonical interactions: the four columns of :data:`INTERACTION_COLUMNS`, in file order.

    Raises:
        DataError: No rating at all (an empty file is never a valid dataset).
    """
    if frame.empty:
        raise DataError(f"{path or 'ratings'}: no ratings in the file; is it the right file?")
    return pd.DataFrame({c: frame[c].to_numpy().astype(t) for c, t in INTERACTION_COLUMNS.items()})


def ratings_dataset(
    ratings: Table,
    *,
    name: str,
    scale: RatingScale,
    source: dict[str, str],
    report: LoadReport,
    skip_bad_rows: bool,
    items: pd.DataFrame | None = None,
    item_file: str | None = None,
    users: pd.DataFrame | None = None,
    user_file: str | None = None,
    fields: Mapping[str, str] | None = None,
) -> RatingDataset:
    """Check a ratings table, resolve its bad rows and build the dataset: every loader's last step.

    Args:
        ratings: Parsed ratings with canonical columns ``user_id``, ``item_id``, ``rating``,
            ``timestamp``.
        name: Dataset name.
        scale: The rating scale every rating must lie on.
        source: Where the data came from (``path``, ``format``, ...).
        report: The load report (rows dropped with ``skip_bad_rows`` are counted in it).
        skip_bad_rows: Drop bad rows instead of raising.
        items: The items table; ``None``: every rated item, its id as title (no id check).
        item_file: Item file name for messages.
        users: The users table; ``None``: an index of the rating users (no id check).
        user_file: User file name for messages.
        fields: Canonical name -> name in the file, for messages.

    Raises:
        DataError: Bad rows (unless ``skip_bad_rows``) or no rating at all.
    """
    check_interactions(
        ratings,
        scale,
        fields=fields,
        item_ids=None if items is None else items.index,
        item_file=item_file,
        user_ids=None if users is None else users.index,
        user_file=user_file,
    )
    ratings.int_columns = tuple(c for c in _INT_COLUMNS if c in ratings.frame.columns)
    interactions = finish_interactions(
        ratings.resolve(skip_bad_rows=skip_bad_rows, report=report), ratings.path
    )
    if items is None:
        rated = np.unique(interactions["item_id"].to_numpy())
        items = make_items_frame(rated, [str(i) for i in rated], [()] * len(rated))
    if users is None:
        users = pd.DataFrame(
            index=pd.Index(np.unique(interactions["user_id"].to_numpy()), name="user_id")
        )
    return RatingDataset(name, interactions, items, users, scale, source, report)
