"""A user's own table file: its reader picked by suffix, its columns named by the caller.

Loaders of files the user brings (:func:`~recsim_personas.data.custom_csv.load_csv`, enrichment
tables) read them through :func:`read_file_table`: parquet by suffix, anything else as quoted
delimited text with a header. :func:`check_column_mapping` checks the caller's ``{canonical name:
file column}`` mapping first.
"""

from __future__ import annotations

import csv
from collections.abc import Mapping
from pathlib import Path

from recsim_personas.data.delimited import read_table
from recsim_personas.data.parquet import is_parquet, parquet_columns, read_parquet_table
from recsim_personas.data.table import ColumnKind, Table
from recsim_personas.errors import ConfigError, DataError, did_you_mean

__all__ = ["check_column_mapping", "header_names", "read_file_table"]


def read_file_table(
    path: Path, *, columns: Mapping[str, ColumnKind], sep: str, encoding: str
) -> Table:
    """A parquet file (by suffix) or a quoted delimited file with a header, as a :class:`Table`."""
    if is_parquet(path):
        return read_parquet_table(path, columns)
    return read_table(path, sep=sep, columns=columns, encoding=encoding, quoted=True)


def header_names(path: Path, *, sep: str, encoding: str) -> list[str]:
    """The column names of a file: its parquet schema, or the header line of delimited text.

    Raises:
        DataError: The file is missing (or not parquet, for a parquet suffix).
    """
    if is_parquet(path):
        return parquet_columns(path)
    try:
        with open(path, encoding=encoding, errors="replace", newline="") as fh:
            return [c.strip() for c in next(csv.reader(fh, delimiter=sep), [])]
    except FileNotFoundError:
        raise DataError(f"file not found: {path}") from None


def check_column_mapping(
    mapping: Mapping[str, str], allowed: tuple[str, ...], what: str, required: tuple[str, ...] = ()
) -> None:
    """Check a caller's ``{canonical name: file column}`` mapping.

    Args:
        mapping: The mapping to check.
        allowed: The canonical names a key may be.
        what: Names the mapping in messages (``"load_csv columns"``).
        required: Keys that must be present.

    Raises:
        ConfigError: An unknown key (with a did-you-mean) or a missing required one.
    """
    for key in mapping:
        if key not in allowed:
            raise ConfigError(
                f"{what}: unknown key {key!r}; expected some of {', '.join(allowed)}."
                f"{did_you_mean(key, allowed)}"
            )
    for key in required:
        if key not in mapping:
            raise ConfigError(f"{what}: key {key!r} is required (map it to the file's column name)")
