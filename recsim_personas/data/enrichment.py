"""Item enrichment: description, director and cast joined onto a dataset's items by item id.

An enrichment table is a CSV (or parquet) file with one row per item: an id column and any of
``description``, ``director``, ``cast``. Values may be plain text or Python-list strings as
scrapers write them (``"['Jeff Bridges', 'John Goodman']"``), which become ``"Jeff Bridges, John
Goodman"``. Known placeholders (IMDb's "It looks like we don't have any Plot Summaries ..." and
``['nan']``) count as missing, so a prompt never shows them.
"""

from __future__ import annotations

import ast
import dataclasses
import os
from collections.abc import Mapping
from pathlib import Path

import numpy as np
import pandas as pd

from recsim_personas.data.dataset import ITEM_TEXT_COLUMNS, LoadReport, RatingDataset
from recsim_personas.data.files import check_column_mapping, header_names, read_file_table
from recsim_personas.errors import DataError, did_you_mean

__all__ = ["PLACEHOLDER_TEXTS", "clean_text", "enrich_items", "load_enrichment"]

#: Texts (prefixes) that scraped pages show instead of a value; treated as missing.
PLACEHOLDER_TEXTS: tuple[str, ...] = (
    "It looks like we don't have any Plot Summaries for this title yet.",
)
_MISSING_TOKENS = {"", "nan", "none", "null", "n/a", "na"}


def clean_text(value: object) -> str | None:
    """Normalise one enrichment cell: list strings joined with ", ", whitespace collapsed.

    Args:
        value: A cell: plain text, a Python-list string, a list, or missing.

    Returns:
        The text, or ``None`` when the cell is missing, empty or a known placeholder.
    """
    if value is None or (isinstance(value, float) and np.isnan(value)):
        return None
    if isinstance(value, (list, tuple, np.ndarray)):
        parts = [clean_text(v) for v in value]
        joined = ", ".join(p for p in parts if p)
        return joined or None
    text = " ".join(str(value).split())
    if text.startswith("[") and text.endswith("]"):
        try:
            parsed = ast.literal_eval(text)
        except (ValueError, SyntaxError):
            parsed = None
        if isinstance(parsed, (list, tuple)):
            return clean_text(list(parsed))
    if text.lower() in _MISSING_TOKENS or any(text.startswith(p) for p in PLACEHOLDER_TEXTS):
        return None
    return text


def load_enrichment(
    path: str | os.PathLike[str],
    *,
    id_column: str = "movie_id",
    columns: Mapping[str, str] | None = None,
    sep: str = ",",
    encoding: str = "utf-8",
    skip_bad_rows: bool = False,
    report: LoadReport | None = None,
) -> pd.DataFrame:
    """Read an enrichment table.

    Args:
        path: CSV (quoted fields may span lines) or parquet file.
        id_column: The column holding item ids (integers).
        columns: Canonical name (``description``, ``director``, ``cast``) -> column in the file.
            Default: those of the three names the file has (at least one must exist).
        sep: Field separator of text files.
        encoding: Text encoding.
        skip_bad_rows: Drop bad rows (bad or duplicate ids) instead of raising.
        report: Where dropped rows are counted.

    Returns:
        A frame indexed by ``item_id`` with columns ``description``, ``director``, ``cast``
        (str or None), cleaned by :func:`clean_text`.

    Raises:
        ConfigError: An unknown canonical name in ``columns``.
        DataError: Missing id column, no text column, a bad or duplicate id (line named).
    """
    path = Path(path)
    if columns is None:
        header = header_names(path, sep=sep, encoding=encoding)
        if id_column not in header:
            raise DataError(
                f"{path}: line 1 (header), field {id_column!r}: id column missing; the header has "
                f"{', '.join(map(repr, header))}.{did_you_mean(id_column, header)} (pass id_column=...)"
            )
        columns = {c: c for c in ITEM_TEXT_COLUMNS if c in header}
        if not columns:
            raise DataError(
                f"{path}: line 1 (header): none of the columns {', '.join(ITEM_TEXT_COLUMNS)}; "
                "pass columns={'description': '<column>', ...}"
            )
    check_column_mapping(columns, ITEM_TEXT_COLUMNS, "enrichment columns")
    kinds = {id_column: "int", **{v: "str" for v in columns.values()}}
    table = read_file_table(path, columns=kinds, sep=sep, encoding=encoding)
    table.flag_duplicate_ids(id_column, what="item id")
    table.int_columns = (id_column,)
    frame = table.resolve(skip_bad_rows=skip_bad_rows, report=report)
    out = pd.DataFrame(index=pd.Index(frame[id_column].to_numpy(np.int64), name="item_id"))
    for key in ITEM_TEXT_COLUMNS:
        if key in columns:
            out[key] = pd.Series(
                [clean_text(v) for v in frame[columns[key]]], index=out.index, dtype=object
            )
        else:
            out[key] = pd.Series([None] * len(out), index=out.index, dtype=object)
    return out


def enrich_items(
    dataset: RatingDataset,
    enrichment: str | os.PathLike[str] | pd.DataFrame,
    *,
    id_column: str = "movie_id",
    columns: Mapping[str, str] | None = None,
    skip_bad_rows: bool = False,
) -> RatingDataset:
    """Join an enrichment table onto ``dataset.items`` by item id.

    Values from the table replace the item's value where the table has one; items the table
    does not cover keep what they had (usually ``None``). Table rows whose id is not an item of
    the dataset are counted in the report, not an error (one table may serve several datasets).

    Args:
        dataset: The dataset to enrich (not modified).
        enrichment: A file (see :func:`load_enrichment`) or a frame already indexed by item id
            with any of ``description``, ``director``, ``cast``.
        id_column: Id column of a file.
        columns: Column mapping of a file (see :func:`load_enrichment`).
        skip_bad_rows: Drop bad table rows instead of raising.

    Returns:
        A new dataset sharing the interactions and users, with enriched items; its report notes
        how many items matched and how many got each field.
    """
    report = dataclasses.replace(
        dataset.report,
        skipped=dict(dataset.report.skipped),
        examples=list(dataset.report.examples),
        notes=list(dataset.report.notes),
    )
    if isinstance(enrichment, pd.DataFrame):
        table = enrichment.copy()
        if "item_id" in table.columns:
            table = table.set_index("item_id")
        if table.index.has_duplicates:
            dup = table.index[table.index.duplicated()][0]
            raise DataError(f"enrichment frame: item id {dup} appears more than once")
        for key in ITEM_TEXT_COLUMNS:
            table[key] = [clean_text(v) for v in table[key]] if key in table else None
        label = "<frame>"
    else:
        table = load_enrichment(
            enrichment,
            id_column=id_column,
            columns=columns,
            skip_bad_rows=skip_bad_rows,
            report=report,
        )
        label = str(enrichment)
    items = dataset.items.copy()
    matched = table.index.isin(items.index)
    table_in = table.loc[matched]
    for key in ITEM_TEXT_COLUMNS:
        values = table_in[key]
        values = values[values.notna()]
        items[key] = items[key].astype(object)
        items.loc[values.index, key] = values.to_numpy()
    counts = {key: int(items[key].notna().sum()) for key in ITEM_TEXT_COLUMNS}
    report.notes.append(
        f"enrichment {Path(label).name}: {len(table)} rows, {int(matched.sum())} matched items of "
        f"{len(items)}, {int((~matched).sum())} ids not in {dataset.name}; items with "
        + ", ".join(f"{k}: {v}" for k, v in counts.items())
    )
    source = dict(dataset.source)
    source["enrichment"] = label
    return dataclasses.replace(dataset, items=items, source=source, report=report)
