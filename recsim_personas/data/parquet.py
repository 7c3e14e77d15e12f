"""Parquet files read into a :class:`~recsim_personas.data.table.Table`, each row numbered from 1."""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path

import numpy as np
import pandas as pd

from recsim_personas.data.table import RAW_PREFIX, ColumnKind, RowProblems, Table
from recsim_personas.errors import DataError, did_you_mean

__all__ = ["PARQUET_SUFFIXES", "is_parquet", "parquet_columns", "read_parquet_table"]

#: File suffixes read as parquet (anything else is delimited text).
PARQUET_SUFFIXES: tuple[str, ...] = (".parquet", ".pq")


def is_parquet(path: Path) -> bool:
    """Whether ``path`` is read as parquet (by its suffix)."""
    return path.suffix.lower() in PARQUET_SUFFIXES


def parquet_columns(path: Path) -> list[str]:
    """The column names in a parquet file's schema.

    Raises:
        DataError: The file is missing or not parquet.
    """
    try:
        import pyarrow.parquet as pq

        return list(pq.read_schema(path).names)
    except FileNotFoundError:
        raise DataError(f"file not found: {path}") from None
    except Exception as exc:  # pyarrow raises several types for a non-parquet file
        raise DataError(f"{path}: not a readable parquet file ({exc})") from None


def read_parquet_table(path: Path, columns: Mapping[str, ColumnKind]) -> Table:
    """Read ``columns`` of a parquet file, flagging bad cells with their 1-based row.

    Raises:
        DataError: The file is missing or not parquet, or lacks a requested column.
    """
    schema_names = parquet_columns(path)
    missing = [c for c in columns if c not in schema_names]
    if missing:
        raise DataError(
            f"{path}: field {missing[0]!r}: column missing; the file has "
            f"{', '.join(map(repr, schema_names))}.{did_you_mean(missing[0], schema_names)}"
        )
    frame = pd.read_parquet(path, columns=list(columns))
    problems = RowProblems(path, unit="row")
    lines = np.arange(1, len(frame) + 1, dtype=np.int64)
    for column, kind in columns.items():
        if kind == "str":
            frame[column] = frame[column].astype(object)
            continue
        if frame[column].dtype.kind not in "iuf":
            raw = frame[column].astype(object)
            frame[RAW_PREFIX + column] = raw
            frame[column] = pd.to_numeric(raw.astype(str).str.strip(), errors="coerce").astype(
                np.float64
            )
            frame.loc[raw.isna().to_numpy(), column] = np.nan
        elif frame[column].isna().any():
            frame[RAW_PREFIX + column] = frame[column].astype(object).where(frame[column].notna(), None)
            frame[column] = frame[column].astype(np.float64)
        else:
            frame[column] = frame[column].astype(np.float64 if kind == "float" else np.int64)
    return Table.from_parsed(path, frame, lines, problems, columns)
