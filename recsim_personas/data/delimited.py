"""Delimited text files (``,``, TAB, ``|``, ``::``) read into a :class:`~recsim_personas.data.table.Table`.

:func:`read_table` parses with pandas' C engine (vectorised, no Python loop per line on the happy
path) and still knows the 1-based line of every row, so a bad row is reported as ``file: line N,
field 'rating': ...``. The scan that finds each line's field count works on the raw bytes with
numpy; quoted CSV is handled by tracking quote parity, with the :mod:`csv` module as the fallback
for files whose quotes do not follow RFC 4180.
"""

from __future__ import annotations

import csv
import io
import os
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd

from recsim_personas.data.table import RAW_PREFIX, ColumnKind, RowProblems, Table, short_text
from recsim_personas.errors import DataError, did_you_mean

__all__ = ["read_table"]

# Multi-byte separators ("::" in ML-1M) are rewritten to this byte so pandas' C engine can parse.
_UNIT_SEP = b"\x1f"
_QUOTE = 34
_NEWLINE = 10
# Separators to suggest when a line has a single field.
_COMMON_SEPARATORS = ("::", "\t", ",", ";", "|")


def _show_sep(sep: str) -> str:
    return {"\t": "TAB", " ": "SPACE"}.get(sep, repr(sep))


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
        f"({', '.join(field_names)}; separator {_show_sep(sep)}){hint}: {short_text(text, 60)}"
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
            hint = did_you_mean(col, header)
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
    return Table.from_parsed(path, frame, row_lines, problems, columns)


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
                    frame[RAW_PREFIX + column] = raw.to_numpy()
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
            frame[RAW_PREFIX + column] = raw
            frame[column] = pd.to_numeric(raw.str.strip(), errors="coerce").astype(np.float64)
    return Table.from_parsed(path, frame, np.asarray(lines, dtype=np.int64), problems, columns)
