"""The custom-CSV source: a user's own ratings file (CSV or parquet), its columns mapped by the caller."""

from __future__ import annotations

import os
from collections.abc import Mapping
from pathlib import Path

import numpy as np
import pandas as pd

from recsim_personas.data.dataset import (
    ITEM_TEXT_COLUMNS,
    LoadReport,
    RatingDataset,
    RatingScale,
    make_items_frame,
    split_title_year,
)
from recsim_personas.data.files import check_column_mapping, read_file_table
from recsim_personas.data.interactions import ratings_dataset
from recsim_personas.data.parquet import is_parquet
from recsim_personas.data.table import ColumnKind, short_text
from recsim_personas.errors import ConfigError

__all__ = ["load_csv"]

_RATING_KEYS = ("user_id", "item_id", "rating", "timestamp")
_ITEM_KEYS = ("item_id", "title", "year", "genres", *ITEM_TEXT_COLUMNS)


def load_csv(
    path: str | os.PathLike[str],
    *,
    columns: Mapping[str, str],
    scale: RatingScale,
    items_path: str | os.PathLike[str] | None = None,
    item_columns: Mapping[str, str] | None = None,
    name: str | None = None,
    sep: str = ",",
    encoding: str = "utf-8",
    genre_sep: str = "|",
    skip_bad_rows: bool = False,
) -> RatingDataset:
    """Load ratings (and optionally items) from a CSV or parquet file with caller-mapped columns.

    Args:
        path: Ratings file; ``.parquet`` / ``.pq`` files are read as parquet, anything else as
            delimited text with a header line.
        columns: Canonical name -> column in the file, for ``user_id``, ``item_id``, ``rating``
            (required) and ``timestamp`` (optional). Ids must be integers. Without a timestamp
            column, ``timestamp`` is the row's 0-based position in the file, so temporal splits
            follow file order.
        scale: The rating scale; ratings off it are errors.
        items_path: Optional item file; when given, every rated item must be in it.
        item_columns: Canonical name -> column in the item file: ``item_id`` (required),
            ``title``, ``year``, ``genres`` (``genre_sep``-separated), ``description``,
            ``director``, ``cast``. Without ``year`` the year is parsed from a trailing
            ``(1995)`` in the title.
        name: Dataset name (default: the file's stem).
        sep: Field separator of text files.
        encoding: Text encoding.
        genre_sep: Separator inside the genres column.
        skip_bad_rows: Drop bad rows and count them in ``dataset.report`` instead of raising.

    Returns:
        The dataset; items not in an item file get their id as title. ``users`` has no columns.

    Raises:
        ConfigError: A mapping key is unknown or a required key is missing.
        DataError: A missing column, malformed line, bad value, duplicate pair or unknown item
            (naming file, line and field), unless ``skip_bad_rows``.
    """
    path = Path(path)
    check_column_mapping(columns, _RATING_KEYS, "load_csv columns", ("user_id", "item_id", "rating"))
    kinds: dict[str, ColumnKind] = {
        "user_id": "int",
        "item_id": "int",
        "rating": "float",
        "timestamp": "int",
    }
    file_kinds = {columns[k]: kinds[k] for k in columns}
    if len(set(columns.values())) != len(columns):
        raise ConfigError(f"load_csv columns map two keys to the same column: {dict(columns)}")
    report = LoadReport()
    table = read_file_table(path, columns=file_kinds, sep=sep, encoding=encoding)
    table.frame = table.frame.rename(columns={v: k for k, v in columns.items()})
    if "timestamp" not in columns:
        table.frame["timestamp"] = np.arange(len(table.frame), dtype=np.int64)

    items = None
    if items_path is not None:
        items = _load_items_table(
            Path(items_path),
            item_columns or {"item_id": columns["item_id"]},
            sep=sep,
            encoding=encoding,
            genre_sep=genre_sep,
            skip_bad_rows=skip_bad_rows,
            report=report,
        )
    source = {"path": str(path), "format": "parquet" if is_parquet(path) else "csv"}
    if items_path is not None:
        source["items_path"] = str(items_path)
    return ratings_dataset(
        table,
        name=name or path.stem,
        scale=scale,
        source=source,
        report=report,
        skip_bad_rows=skip_bad_rows,
        items=items,
        item_file=Path(items_path).name if items_path is not None else None,
        fields=columns,
    )


def _load_items_table(
    path: Path,
    mapping: Mapping[str, str],
    *,
    sep: str,
    encoding: str,
    genre_sep: str,
    skip_bad_rows: bool,
    report: LoadReport,
) -> pd.DataFrame:
    check_column_mapping(mapping, _ITEM_KEYS, "load_csv item_columns", ("item_id",))
    # Years may be missing, so they are read as text and checked below.
    kinds: dict[str, ColumnKind] = {k: ("int" if k == "item_id" else "str") for k in mapping}
    file_kinds = {mapping[k]: kinds[k] for k in mapping}
    table = read_file_table(path, columns=file_kinds, sep=sep, encoding=encoding)
    table.frame = table.frame.rename(columns={v: k for k, v in mapping.items()})
    table.flag_duplicate_ids("item_id", mapping["item_id"], what="item id")
    if "year" in mapping:
        raw_year = table.frame["year"].map(lambda v: v.strip() if isinstance(v, str) else v)
        year_num = pd.to_numeric(raw_year.replace("", None), errors="coerce")
        bad_year = (raw_year.notna() & (raw_year != "")).to_numpy() & (
            year_num.isna().to_numpy() | (year_num.fillna(0) % 1 != 0).to_numpy()
        )
        table.flag(
            bad_year, mapping["year"], lambda pos: f"{short_text(raw_year.iloc[pos])} is not a year"
        )
        table.frame["year"] = year_num
    table.int_columns = ("item_id",)
    frame = table.resolve(skip_bad_rows=skip_bad_rows, report=report)
    if "title" in frame:
        title, parsed_year = split_title_year(frame["title"])
    else:
        title, parsed_year = frame["item_id"].astype(str).astype(object), None
    year = frame.get("year", parsed_year)
    if "genres" in frame:
        genres = [
            tuple(g.strip() for g in str(v).split(genre_sep) if g.strip())
            if isinstance(v, str)
            else ()
            for v in frame["genres"]
        ]
    else:
        genres = [()] * len(frame)
    extra = {}
    for column in ITEM_TEXT_COLUMNS:
        if column in frame:
            extra[column] = [v if isinstance(v, str) and v.strip() else None for v in frame[column]]
    return make_items_frame(frame["item_id"], title, genres, year, **extra)
