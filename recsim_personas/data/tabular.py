"""Delimited and parquet rating files: exact-line validation and the generic caller-mapped loader.

Every loader in :mod:`recsim_personas.data` reads its files through :func:`read_table`, which
parses with pandas' C engine (vectorised, no Python loop per line on the happy path) and still
knows the 1-based line of every row, so a bad row is reported as ``file: line N, field 'rating':
...``. The scan that finds each line's field count works on the raw bytes with numpy; quoted CSV
is handled by tracking quote parity, with the :mod:`csv` module as the fallback for files whose
quotes do not follow RFC 4180.

Bad rows are collected in a :class:`RowProblems` per file. :meth:`Table.resolve` then either raises
one :class:`~recsim_personas.errors.DataError` naming the first bad line (and how many more there
are) or, with ``skip_bad_rows=True``, drops them and records the count in a
:class:`~recsim_personas.data.dataset.LoadReport`.
"""

from __future__ import annotations

import csv
import difflib
import io
import logging
import os
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Literal

import numpy as np
import pandas as pd

from recsim_personas.data.dataset import (
    INTERACTION_COLUMNS,
    ITEM_TEXT_COLUMNS,
    LoadReport,
    RatingDataset,
    RatingScale,
    make_items_frame,
    split_title_year,
)
from recsim_personas.errors import ConfigError, DataError

__all__ = [
    "ColumnKind",
    "RowProblems",
    "Table",
    "check_interactions",
    "finish_interactions",
    "load_csv",
    "read_file_table",
    "read_table",
]

logger = logging.getLogger("recsim_personas.data")

#: How a column is parsed: whole numbers, real numbers or text.
ColumnKind = Literal["int", "float", "str"]

# Multi-byte separators ("::" in ML-1M) are rewritten to this byte so pandas' C engine can parse.
_UNIT_SEP = b"\x1f"
_QUOTE = 34
_NEWLINE = 10
# Separators to suggest when a line has a single field.
_COMMON_SEPARATORS = ("::", "\t", ",", ";", "|")
_FIX_HINT = (
    "Fix the file, or load with skip_bad_rows=True (CLI: --skip-bad-rows) to drop bad rows and "
    "report how many"
)


def _show_sep(sep: str) -> str:
    return {"\t": "TAB", " ": "SPACE"}.get(sep, repr(sep))


def _short(value: object, limit: int = 40) -> str:
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
    """

    path: Path
    frame: pd.DataFrame
    lines: np.ndarray
    problems: RowProblems
    int_columns: tuple[str, ...] = field(default_factory=tuple)

    def flag(self, mask: np.ndarray | pd.Series, field: str, reason: Callable[[int], str]) -> None:
        """Flag the rows where ``mask`` is true; ``reason(pos)`` gets the row's position."""
        positions = np.flatnonzero(np.asarray(mask, dtype=bool))
        if positions.size:
            self.problems.add(self.lines[positions], field, lambda k: reason(int(positions[k])))

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


# ---------------------------------------------------------------------------------------------
# Scanning raw bytes into records


@dataclass
class _Scan:
    starts: np.ndarray  # byte offset of each record
    ends: np.ndarray  # byte offset of the record's terminating newline
    lines: np.ndarray  # 1-based line of each record's first byte
    n_fields: np.ndarray


def _scan_records(arr: np.ndarray, sep: int, quoted: bool) -> _Scan:
    """Split a newline-terminated buffer into records and count each record's fields."""
    newlines = np.flatnonzero(arr == _NEWLINE)
    seps = np.flatnonzero(arr == sep)
    terminators = newlines
    if quoted:
        quotes = np.flatnonzero(arr == _QUOTE)
        if quotes.size:
            # A newline or separator inside quotes follows an odd number of quote characters
            # (an escaped quote "" adds two, so parity still tells inside from outside).
            terminators = newlines[np.searchsorted(quotes, newlines) % 2 == 0]
            seps = seps[np.searchsorted(quotes, seps) % 2 == 0]
    if arr.size and (not terminators.size or terminators[-1] != arr.size - 1):
        # An unbalanced quote swallowed the final newlines: the rest is one (bad) record.
        terminators = np.append(terminators, arr.size - 1)
    # The buffer ends with a newline (or is empty), so records end exactly at the terminators.
    starts = np.concatenate(([0], terminators[:-1] + 1)).astype(np.int64)[: len(terminators)]
    ends = terminators.astype(np.int64)
    n_fields = np.searchsorted(seps, ends) - np.searchsorted(seps, starts) + 1
    lines = np.searchsorted(newlines, starts) + 1
    return _Scan(starts, ends, lines, n_fields)


def _read_bytes(path: Path, encoding: str) -> bytes:
    try:
        buf = path.read_bytes()
    except FileNotFoundError:
        raise DataError(f"file not found: {path}") from None
    except OSError as exc:
        raise DataError(f"cannot read {path}: {exc.strerror or exc}") from None
    if buf.startswith(b"\xef\xbb\xbf"):
        buf = buf[3:]
    if b"\r" in buf:
        buf = buf.replace(b"\r\n", b"\n")
    if buf and not buf.endswith(b"\n"):
        buf += b"\n"
    return buf


def _undecodable(buf: bytes, encoding: str) -> list[tuple[int, int]]:
    """``(offset, byte)`` of the first byte that does not decode in each line that has one."""
    try:
        buf.decode(encoding)
        return []
    except UnicodeDecodeError:
        pass
    except LookupError:
        raise DataError(f"unknown text encoding {encoding!r}; use e.g. utf-8 or latin-1") from None
    out, offset = [], 0
    for line in buf.split(b"\n"):  # only on the failure path: one decode per line
        try:
            line.decode(encoding)
        except UnicodeDecodeError as exc:
            out.append((offset + exc.start, line[exc.start]))
        offset += len(line) + 1
    return out


def _encoding_problem(path: Path, offset: int, byte: int, encoding: str) -> str:
    return (f"byte 0x{byte:02x} at byte offset {offset} is not {encoding}; pass --encoding latin-1 "
            f"(Python: encoding='latin-1') if {path.name} is Latin-1, or save it as UTF-8")


def _split_header(text: str, sep: str) -> list[str]:
    row = next(csv.reader([text], delimiter=sep), [])
    return [c.strip() for c in row]


def _line_text(buf: bytes, start: int, end: int, encoding: str) -> str:
    return buf[start:end].decode(encoding, errors="replace")


def _wrong_sep_hint(text: str, sep: str) -> str:
    for other in _COMMON_SEPARATORS:
        if other != sep and other in text and not (other == ":" and sep == "::"):
            return f"; it contains {_show_sep(other)}: wrong separator? (the format uses {_show_sep(sep)})"
    return ""


def _field_count_problem(
    n: int, expected: int, field_names: Sequence[str], sep: str, text: str
) -> str:
    what = "missing" if n < expected else "unexpected extra field"
    hint = _wrong_sep_hint(text, sep) if n == 1 else ""
    return (
        f"{what}: the line has {n} field{'s' if n != 1 else ''} where {expected} are expected "
        f"({', '.join(field_names)}; separator {_show_sep(sep)}){hint}: {_short(text, 60)}"
    )


def _field_count_name(n: int, expected: int, field_names: Sequence[str]) -> str:
    """The field a line with ``n`` of ``expected`` fields gets wrong: the first missing, or the extra."""
    return field_names[n] if n < expected else f"#{expected + 1} (extra)"


def read_table(
    path: str | os.PathLike[str],
    *,
    sep: str,
    columns: Mapping[str, ColumnKind],
    names: Sequence[str] | None = None,
    encoding: str = "utf-8",
    quoted: bool = False,
) -> Table:
    """Read a delimited file into a :class:`Table`, flagging malformed rows with their line.

    Args:
        path: The file.
        sep: Field separator, one or more characters (``"\\t"``, ``"::"``, ``","``).
        columns: Columns to keep and how to parse each. With a header these are header names;
            without one they are names from ``names``.
        names: Names of all fields of a header-less format, in order (``None``: the first line is a
            header). Every line must have exactly ``len(names)`` fields.
        encoding: Text encoding (MovieLens item files are ``latin-1``).
        quoted: Fields may be quoted CSV-style (``"Toy Story, The"``).

    Returns:
        The parsed :class:`Table`; rows with the wrong number of fields or unparsable numbers are
        already flagged in ``table.problems``.

    Raises:
        DataError: Missing file, a header without a requested column, or bad text encoding.
    """
    path = Path(path)
    buf = _read_bytes(path, encoding)
    if len(sep.encode(encoding)) > 1:
        if _UNIT_SEP in buf:
            raise DataError(
                f"{path}: contains the control byte 0x1f; it is not a {sep!r}-separated text file"
            )
        buf = buf.replace(sep.encode(encoding), _UNIT_SEP)
        parse_sep = _UNIT_SEP.decode()
    else:
        parse_sep = sep
    arr = np.frombuffer(buf, dtype=np.uint8)
    scan = _scan_records(arr, ord(parse_sep), quoted)
    problems = RowProblems(path)
    blank = scan.ends == scan.starts
    undecodable = np.zeros(len(scan.starts), dtype=bool)
    bad_bytes = _undecodable(buf, encoding)
    if bad_bytes:
        # A line with bytes the encoding cannot read is a bad row (skipped with skip_bad_rows).
        offsets = np.array([o for o, _ in bad_bytes], dtype=np.int64)
        rec = np.clip(np.searchsorted(scan.starts, offsets, side="right") - 1, 0, len(scan.starts) - 1)
        if names is None and rec[0] == 0:
            o, b = bad_bytes[0]
            raise DataError(f"{path}: line 1 (header): {_encoding_problem(path, o, b, encoding)}")
        undecodable[rec] = True
        problems.add(scan.lines[rec], "encoding",
                     lambda k: _encoding_problem(path, bad_bytes[k][0], bad_bytes[k][1], encoding))

    if names is None:
        if not len(scan.starts) or blank[0]:
            raise DataError(
                f"{path}: line 1 is empty; expected a header naming the columns ({', '.join(columns)})"
            )
        header_text = _line_text(buf, int(scan.starts[0]), int(scan.ends[0]), encoding)
        header = _split_header(header_text, parse_sep)
        header_text = header_text.replace(parse_sep, sep)
        missing = [c for c in columns if c not in header]
        if missing:
            col = missing[0]
            close = difflib.get_close_matches(col, header, n=1)
            hint = f" Did you mean {close[0]!r}?" if close else ""
            if len(header) == 1:
                hint += _wrong_sep_hint(header_text, sep)
            raise DataError(
                f"{path}: line 1 (header), field {col!r}: column missing; the header has "
                f"{', '.join(map(repr, header))}.{hint}"
            )
        expected = len(header)
        field_names = header
        first_record = 1
    else:
        expected = len(names)
        field_names = list(names)
        first_record = 0

    body = np.arange(len(scan.starts)) >= first_record
    wrong = body & ~blank & ((scan.n_fields != expected) & ~undecodable)
    if wrong.any() and quoted and _QUOTE in arr:
        # Quote parity can misjudge quotes that do not open a field (`Foo "bar,Drama`), which
        # pandas and the csv module read literally: let the csv module, the authority on quoting,
        # decide (only on this error path).
        return _read_table_python(
            path, buf, sep=parse_sep, columns=columns, names=names, encoding=encoding
        )
    if wrong.any():
        idx = np.flatnonzero(wrong)

        def reason(k: int, idx: np.ndarray = idx) -> str:
            i = int(idx[k])
            text = _line_text(buf, int(scan.starts[i]), int(scan.ends[i]), encoding)
            if parse_sep != sep:
                text = text.replace(parse_sep, sep)
            return _field_count_problem(int(scan.n_fields[i]), expected, field_names, sep, text)

        # One flag per distinct field count, so each names the first missing (or extra) field.
        for n in np.unique(scan.n_fields[idx]):
            sub = np.flatnonzero(scan.n_fields[idx] == n)
            problems.add(
                scan.lines[idx[sub]],
                _field_count_name(int(n), expected, field_names),
                lambda k, sub=sub: reason(int(sub[k])),
            )

    keep = body & ~blank & ~wrong & ~undecodable
    header_keep = ~body  # the header record (if any) stays in the parsed bytes
    selected = keep | header_keep
    if selected.all():
        data = buf
    else:
        # Records tile the buffer exactly (each ends at its newline), so a byte mask keeps whole
        # records; vectorised, no Python loop over lines.
        mask = np.repeat(selected, scan.ends - scan.starts + 1)
        data = arr[mask].tobytes()
    row_lines = scan.lines[keep]

    frame = _parse_columns(
        data,
        path=path,
        sep=parse_sep,
        names=None if names is None else field_names,
        usecols=list(columns),
        kinds=columns,
        encoding=encoding,
        quoted=quoted,
        n_rows=int(keep.sum()),
    )
    if frame is None:
        # Quote parity and pandas disagree (quotes that do not follow RFC 4180): re-read with the
        # csv module, which treats quotes the way pandas' parser does.
        return _read_table_python(
            path, buf, sep=parse_sep, columns=columns, names=names, encoding=encoding
        )
    table = Table(
        path, frame, row_lines, problems, tuple(c for c, k in columns.items() if k == "int")
    )
    _flag_numeric(table, columns)
    return table


def _read_csv_kwargs(sep: str, names: Sequence[str] | None, encoding: str, quoted: bool) -> dict:
    return {
        "sep": sep,
        "header": 0 if names is None else None,
        "names": list(names) if names is not None else None,
        "encoding": encoding,
        "quoting": csv.QUOTE_MINIMAL if quoted else csv.QUOTE_NONE,
        "lineterminator": "\n",
        "keep_default_na": False,
        "na_values": [],
        "skip_blank_lines": True,
        "index_col": False,
        "engine": "c",
    }


_RAW = "__raw__"


def _parse_columns(
    data: bytes,
    *,
    path: Path,
    sep: str,
    names: Sequence[str] | None,
    usecols: list[str],
    kinds: Mapping[str, ColumnKind],
    encoding: str,
    quoted: bool,
    n_rows: int,
) -> pd.DataFrame | None:
    """Parse the kept records; numeric columns that fail get a raw-text twin for messages."""
    if n_rows == 0:
        return pd.DataFrame(
            {c: pd.Series(dtype=object if kinds[c] == "str" else np.float64) for c in usecols}
        )
    kw = _read_csv_kwargs(sep, names, encoding, quoted)
    dtypes = {c: {"int": "int64", "float": "float64", "str": object}[kinds[c]] for c in usecols}
    try:
        frame = pd.read_csv(io.BytesIO(data), usecols=usecols, dtype=dtypes, **kw)
    except (ValueError, OverflowError):
        # Some numeric column has text in it: parse the text columns once, then each numeric
        # column on its own so only the failing ones take the slower string route.
        text_cols = [c for c in usecols if kinds[c] == "str"]
        try:
            frame = (
                pd.read_csv(io.BytesIO(data), usecols=text_cols, dtype=object, **kw)
                if text_cols
                else pd.DataFrame(index=pd.RangeIndex(n_rows))
            )
            for column in usecols:
                if kinds[column] == "str":
                    continue
                try:
                    col = pd.read_csv(
                        io.BytesIO(data), usecols=[column], dtype={column: dtypes[column]}, **kw
                    )[column]
                except (ValueError, OverflowError):
                    raw = pd.read_csv(io.BytesIO(data), usecols=[column], dtype=object, **kw)[
                        column
                    ]
                    col = pd.to_numeric(raw.str.strip(), errors="coerce").astype(np.float64)
                    frame[_RAW + column] = raw.to_numpy()
                frame[column] = col.to_numpy()
        except pd.errors.ParserError:
            return None
    except pd.errors.ParserError:
        return None
    if len(frame) != n_rows:
        return None
    for column in usecols:
        if kinds[column] == "str":
            frame[column] = frame[column].astype(object)
    return frame


def _flag_numeric(table: Table, kinds: Mapping[str, ColumnKind]) -> None:
    """Flag numeric cells that did not parse (the raw twin is present) or are not whole numbers."""
    frame = table.frame
    for column, kind in kinds.items():
        if kind == "str":
            continue
        raw_name = _RAW + column
        values = frame[column]
        if raw_name in frame.columns:
            raw = frame[raw_name]
            bad = values.isna().to_numpy()

            def reason(pos: int, raw: pd.Series = raw, kind: str = kind) -> str:
                text = raw.iloc[pos]
                if text is None or str(text).strip() == "":
                    return "empty value"
                return f"{_short(text)} is not {'an integer' if kind == 'int' else 'a number'}"

            table.flag(bad, column, reason)
            del frame[raw_name]
        if kind == "int" and values.dtype.kind == "f":
            v = values.to_numpy()
            frac = np.isfinite(v) & (v != np.round(v))
            inf = np.isinf(v)
            table.flag(frac | inf, column, lambda pos, v=v: f"{float(v[pos]):g} is not an integer")
            huge = np.isfinite(v) & (np.abs(v) >= 2.0**63)
            table.flag(huge, column, lambda pos, v=v: f"{float(v[pos]):g} does not fit in int64")


def _read_table_python(
    path: Path,
    buf: bytes,
    *,
    sep: str,
    columns: Mapping[str, ColumnKind],
    names: Sequence[str] | None,
    encoding: str,
) -> Table:
    """Fallback for quoted files pandas and the parity scan disagree on: the csv module, row by row."""
    text = buf.decode(encoding, errors="replace")
    reader = csv.reader(io.StringIO(text, newline=""), delimiter=sep)
    problems = RowProblems(path)
    rows: list[list[str]] = []
    lines: list[int] = []
    prev = 0
    header = list(names) if names is not None else None
    for record in reader:
        start, prev = prev + 1, reader.line_num
        if not record:
            continue
        if header is None:
            header = [c.strip() for c in record]
            continue
        if len(record) != len(header):
            n, expected, names_ = len(record), len(header), header
            raw_text = sep.join(record)
            problems.add(
                np.array([start]),
                _field_count_name(n, expected, names_),
                lambda k, n=n, e=expected, f=names_, t=raw_text: _field_count_problem(
                    n, e, f, sep, t
                ),
            )
            continue
        rows.append(record)
        lines.append(start)
    header = header or []
    missing = [c for c in columns if c not in header]
    if missing:
        raise DataError(
            f"{path}: line 1 (header), field {missing[0]!r}: column missing; the header has "
            f"{', '.join(map(repr, header))}"
        )
    positions = [header.index(c) for c in columns]
    frame = pd.DataFrame(
        {c: [r[i] for r in rows] for c, i in zip(columns, positions, strict=True)}, dtype=object
    )
    for column, kind in columns.items():
        if kind != "str":
            raw = frame[column]
            frame[_RAW + column] = raw
            frame[column] = pd.to_numeric(raw.str.strip(), errors="coerce").astype(np.float64)
    table = Table(
        path,
        frame,
        np.asarray(lines, dtype=np.int64),
        problems,
        tuple(c for c, k in columns.items() if k == "int"),
    )
    _flag_numeric(table, columns)
    return table


def _read_parquet(path: Path, columns: Mapping[str, ColumnKind]) -> Table:
    try:
        import pyarrow.parquet as pq

        schema_names = pq.read_schema(path).names
    except FileNotFoundError:
        raise DataError(f"file not found: {path}") from None
    except Exception as exc:  # pyarrow raises several types for a non-parquet file
        raise DataError(f"{path}: not a readable parquet file ({exc})") from None
    missing = [c for c in columns if c not in schema_names]
    if missing:
        close = difflib.get_close_matches(missing[0], schema_names, n=1)
        hint = f" Did you mean {close[0]!r}?" if close else ""
        raise DataError(
            f"{path}: field {missing[0]!r}: column missing; the file has {', '.join(map(repr, schema_names))}.{hint}"
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
            frame[_RAW + column] = raw
            frame[column] = pd.to_numeric(raw.astype(str).str.strip(), errors="coerce").astype(
                np.float64
            )
            frame.loc[raw.isna().to_numpy(), column] = np.nan
        elif frame[column].isna().any():
            frame[_RAW + column] = frame[column].astype(object).where(frame[column].notna(), None)
            frame[column] = frame[column].astype(np.float64)
        else:
            frame[column] = frame[column].astype(np.float64 if kind == "float" else np.int64)
    table = Table(path, frame, lines, problems, tuple(c for c, k in columns.items() if k == "int"))
    _flag_numeric(table, columns)
    return table


# ---------------------------------------------------------------------------------------------
# Interaction checks shared by every loader


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
    if item_ids is not None:
        ids = frame["item_id"]
        unknown = ids.notna().to_numpy() & ~ids.isin(item_ids).to_numpy()
        table.flag(
            unknown,
            name("item_id"),
            lambda pos: (
                f"unknown item id {int(ids.iloc[pos])} (not in {item_file or 'the item file'})"
            ),
        )
    if user_ids is not None:
        uids = frame["user_id"]
        unknown_u = uids.notna().to_numpy() & ~uids.isin(user_ids).to_numpy()
        table.flag(
            unknown_u,
            name("user_id"),
            lambda pos: (
                f"unknown user id {int(uids.iloc[pos])} (not in {user_file or 'the user file'})"
            ),
        )
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


# ---------------------------------------------------------------------------------------------
# The generic loader

_RATING_KEYS = ("user_id", "item_id", "rating", "timestamp")
_ITEM_KEYS = ("item_id", "title", "year", "genres", *ITEM_TEXT_COLUMNS)


def _check_mapping(
    mapping: Mapping[str, str], allowed: Sequence[str], required: Sequence[str], what: str
) -> None:
    for key in mapping:
        if key not in allowed:
            close = difflib.get_close_matches(key, allowed, n=1)
            hint = f" Did you mean {close[0]!r}?" if close else ""
            raise ConfigError(
                f"{what}: unknown key {key!r}; expected some of {', '.join(allowed)}.{hint}"
            )
    for key in required:
        if key not in mapping:
            raise ConfigError(f"{what}: key {key!r} is required (map it to the file's column name)")


def read_file_table(
    path: Path, *, columns: Mapping[str, ColumnKind], sep: str, encoding: str
) -> Table:
    """A parquet file (by suffix) or a quoted delimited file with a header, as a :class:`Table`."""
    if path.suffix.lower() in (".parquet", ".pq"):
        return _read_parquet(path, columns)
    return read_table(path, sep=sep, columns=columns, encoding=encoding, quoted=True)


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
    _check_mapping(columns, _RATING_KEYS, ("user_id", "item_id", "rating"), "load_csv columns")
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
    table.int_columns = tuple(k for k in ("user_id", "item_id", "timestamp") if k in columns)
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
    check_interactions(
        table,
        scale,
        fields=columns,
        item_ids=items.index if items is not None else None,
        item_file=Path(items_path).name if items_path is not None else None,
    )
    interactions = finish_interactions(
        table.resolve(skip_bad_rows=skip_bad_rows, report=report), path
    )
    rated = np.unique(interactions["item_id"].to_numpy())
    if items is None:
        items = make_items_frame(rated, [str(i) for i in rated], [()] * len(rated))
    users = pd.DataFrame(
        index=pd.Index(np.unique(interactions["user_id"].to_numpy()), name="user_id")
    )
    source = {
        "path": str(path),
        "format": "parquet" if path.suffix.lower() in (".parquet", ".pq") else "csv",
    }
    if items_path is not None:
        source["items_path"] = str(items_path)
    return RatingDataset(
        name=name or path.stem,
        interactions=interactions,
        items=items,
        users=users,
        scale=scale,
        source=source,
        report=report,
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
    _check_mapping(mapping, _ITEM_KEYS, ("item_id",), "load_csv item_columns")
    # Years may be missing, so they are read as text and checked below.
    kinds: dict[str, ColumnKind] = {k: ("int" if k == "item_id" else "str") for k in mapping}
    file_kinds = {mapping[k]: kinds[k] for k in mapping}
    table = read_file_table(path, columns=file_kinds, sep=sep, encoding=encoding)
    table.frame = table.frame.rename(columns={v: k for k, v in mapping.items()})
    ids = table.frame["item_id"]
    dup = ids.notna().to_numpy() & ids.duplicated(keep="first").to_numpy()
    if dup.any():
        first = dict(
            zip(
                ids[~ids.duplicated(keep="first")],
                table.lines[~ids.duplicated(keep="first").to_numpy()],
                strict=True,
            )
        )
        table.flag(
            dup,
            mapping["item_id"],
            lambda pos: (
                f"duplicate item id {int(ids.iloc[pos])} (first at line {first[ids.iloc[pos]]})"
            ),
        )
    if "year" in mapping:
        raw_year = table.frame["year"].map(lambda v: v.strip() if isinstance(v, str) else v)
        year_num = pd.to_numeric(raw_year.replace("", None), errors="coerce")
        bad_year = (raw_year.notna() & (raw_year != "")).to_numpy() & (
            year_num.isna().to_numpy() | (year_num.fillna(0) % 1 != 0).to_numpy()
        )
        table.flag(
            bad_year, mapping["year"], lambda pos: f"{_short(raw_year.iloc[pos])} is not a year"
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
