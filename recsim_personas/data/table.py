"""Rows parsed from one file, each knowing the 1-based line it came from, with its problems.

Every reader (:mod:`~recsim_personas.data.delimited`, :mod:`~recsim_personas.data.parquet`) returns
a :class:`Table`. Bad rows are collected in a :class:`RowProblems` per file; :meth:`Table.resolve`
then either raises one :class:`~recsim_personas.errors.DataError` naming the first bad line (and
how many more there are) or, with ``skip_bad_rows=True``, drops them and records the count in a
:class:`~recsim_personas.data.dataset.LoadReport`.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Literal

import numpy as np
import pandas as pd

from recsim_personas.data.dataset import LoadReport
from recsim_personas.errors import DataError

__all__ = ["RAW_PREFIX", "ColumnKind", "RowProblems", "Table", "short_text"]

logger = logging.getLogger("recsim_personas.data")

#: How a column is parsed: whole numbers, real numbers or text.
ColumnKind = Literal["int", "float", "str"]

#: Prefix of the raw-text twin a reader keeps next to a numeric column that did not parse, so the
#: message can quote the cell (:meth:`Table.from_parsed` flags and drops the twins).
RAW_PREFIX = "__raw__"

_FIX_HINT = (
    "Fix the file, or load with skip_bad_rows=True (CLI: --skip-bad-rows) to drop bad rows and "
    "report how many"
)


def short_text(value: object, limit: int = 40) -> str:
    """``repr`` of ``value`` as text, cut to ``limit`` characters for messages."""
    text = repr(str(value))
    return text if len(text) <= limit else text[: limit - 4] + "...'"


class RowProblems:
    """Bad rows of one file, each with its line (or row) number, field and reason.

    Reasons are built lazily from a callback, so flagging a million bad lines (a wrong separator)
    stays cheap: only the few that end up in a message are formatted.
    """

    def __init__(self, path: Path, unit: str = "line") -> None:
        self.path = path
        self.unit = unit
        self._flags: list[tuple[np.ndarray, str, Callable[[int], str]]] = []

    def add(self, lines: np.ndarray, field: str, reason: Callable[[int], str]) -> None:
        """Flag ``lines`` (1-based numbers); ``reason(k)`` describes the ``k``-th of them."""
        lines = np.asarray(lines, dtype=np.int64)
        if lines.size:
            self._flags.append((lines, field, reason))

    def __bool__(self) -> bool:
        return bool(self._flags)

    def lines(self) -> np.ndarray:
        """All flagged line numbers, sorted, unique."""
        if not self._flags:
            return np.zeros(0, dtype=np.int64)
        return np.unique(np.concatenate([f[0] for f in self._flags]))

    def messages(self, limit: int = 5) -> list[str]:
        """Descriptions of the first ``limit`` flagged lines (in file order), one per line."""
        out: list[str] = []
        for line in self.lines()[:limit]:
            for lines, field_name, reason in self._flags:
                hit = np.flatnonzero(lines == line)
                if hit.size:
                    out.append(
                        f"{self.path}: {self.unit} {int(line)}, field {field_name!r}: "
                        f"{reason(int(hit[0]))}"
                    )
                    break
        return out

    def error(self) -> DataError:
        """One :class:`DataError` naming the first bad line and how many more there are."""
        bad = self.lines()
        first = self.messages(1)[0]
        if len(bad) > 1:
            shown = ", ".join(str(int(x)) for x in bad[1:6])
            more = ", ..." if len(bad) > 6 else ""
            n_more = len(bad) - 1
            first += f" ({n_more} more bad {self.unit}{'s' if n_more > 1 else ''}: {shown}{more})"
        return DataError(f"{first}. {_FIX_HINT}.")


@dataclass
class Table:
    """Rows parsed from one file, with the 1-based line each row came from and its problems.

    Attributes:
        path: The file.
        frame: Parsed columns (``int`` columns are float64 until :meth:`resolve` drops bad rows).
        lines: ``(len(frame),)`` line (or row, for parquet) number of each row.
        problems: Bad rows found so far; loaders add semantic checks before :meth:`resolve`.
        int_columns: Columns :meth:`resolve` casts to int64.
    """

    path: Path
    frame: pd.DataFrame
    lines: np.ndarray
    problems: RowProblems
    int_columns: tuple[str, ...] = field(default_factory=tuple)

    @classmethod
    def from_parsed(
        cls,
        path: Path,
        frame: pd.DataFrame,
        lines: np.ndarray,
        problems: RowProblems,
        kinds: Mapping[str, ColumnKind],
    ) -> Table:
        """A reader's result: ``int`` columns noted, unparsable or fractional numbers flagged.

        Args:
            path: The file.
            frame: Parsed columns; a numeric column that did not parse everywhere has a raw-text
                twin named :data:`RAW_PREFIX` + column (dropped here once its cells are flagged).
            lines: Line (or row) number of each row.
            problems: Problems the reader found (field counts, encoding).
            kinds: How each column was parsed.
        """
        table = cls(
            path, frame, np.asarray(lines, dtype=np.int64), problems,
            tuple(c for c, k in kinds.items() if k == "int"),
        )
        table._flag_numbers(kinds)
        return table

    def _flag_numbers(self, kinds: Mapping[str, ColumnKind]) -> None:
        """Flag numeric cells that did not parse (the raw twin is present) or are not whole numbers."""
        frame = self.frame
        for column, kind in kinds.items():
            if kind == "str":
                continue
            raw_name = RAW_PREFIX + column
            values = frame[column]
            if raw_name in frame.columns:
                raw = frame[raw_name]
                bad = values.isna().to_numpy()

                def reason(pos: int, raw: pd.Series = raw, kind: str = kind) -> str:
                    text = raw.iloc[pos]
                    if text is None or str(text).strip() == "":
                        return "empty value"
                    return f"{short_text(text)} is not {'an integer' if kind == 'int' else 'a number'}"

                self.flag(bad, column, reason)
                del frame[raw_name]
            if kind == "int" and values.dtype.kind == "f":
                v = values.to_numpy()
                frac = np.isfinite(v) & (v != np.round(v))
                inf = np.isinf(v)
                self.flag(frac | inf, column, lambda pos, v=v: f"{float(v[pos]):g} is not an integer")
                huge = np.isfinite(v) & (np.abs(v) >= 2.0**63)
                self.flag(huge, column, lambda pos, v=v: f"{float(v[pos]):g} does not fit in int64")

    def flag(self, mask: np.ndarray | pd.Series, field: str, reason: Callable[[int], str]) -> None:
        """Flag the rows where ``mask`` is true; ``reason(pos)`` gets the row's position."""
        positions = np.flatnonzero(np.asarray(mask, dtype=bool))
        if positions.size:
            self.problems.add(self.lines[positions], field, lambda k: reason(int(positions[k])))

    def flag_duplicate_ids(self, column: str, field: str | None = None, *, what: str = "id") -> None:
        """Flag every repeat of an id in ``column``, naming the line of its first occurrence.

        Args:
            column: The id column (in :attr:`frame`).
            field: The column's name in the file, for messages (default: ``column``).
            what: How messages call the id (``"id"``, ``"item id"``).
        """
        ids = self.frame[column]
        first_mask = ~ids.duplicated(keep="first").to_numpy()
        dup = ids.notna().to_numpy() & ~first_mask
        if dup.any():
            first = dict(zip(ids[first_mask].tolist(), self.lines[first_mask].tolist(), strict=True))
            self.flag(
                dup,
                field or column,
                lambda pos: f"duplicate {what} {int(ids.iloc[pos])} (first at line {first[ids.iloc[pos]]})",
            )

    def bad_rows(self) -> np.ndarray:
        """Boolean mask of rows flagged so far."""
        return np.isin(self.lines, self.problems.lines())

    def resolve(self, *, skip_bad_rows: bool, report: LoadReport | None) -> pd.DataFrame:
        """Raise on bad rows, or drop them (``skip_bad_rows``) and record the count in ``report``.

        Returns:
            The frame without bad rows, ``int`` columns cast to int64, index reset.

        Raises:
            DataError: Bad rows and ``skip_bad_rows`` is false, or no row is left.
        """
        frame = self.frame
        if self.problems:
            if not skip_bad_rows:
                raise self.problems.error()
            n_bad = len(self.problems.lines())
            frame = frame.loc[~self.bad_rows()]
            examples = self.problems.messages(5)
            if report is not None:
                report.add_skipped(self.path.name, n_bad, examples)
            logger.warning(
                "skipped %d bad %ss in %s (first: %s)",
                n_bad,
                self.problems.unit,
                self.path,
                examples[0] if examples else "?",
            )
            if frame.empty:
                raise DataError(
                    f"{self.path}: no valid rows left after skipping {n_bad} bad "
                    f"{self.problems.unit}s (first: {examples[0]}); is this the right file and format?"
                )
        frame = frame.reset_index(drop=True)
        for column in self.int_columns:
            if column in frame.columns:
                frame[column] = frame[column].astype(np.int64)
        return frame
