"""Stream a CSV segment file as string DataFrame chunks.

Built for the files analysts actually hand over: UTF-8 with or without BOM, cp1252/latin-1 exports,
comma/semicolon/tab delimiters, quoted fields with embedded newlines, CRLF, blank lines, ragged rows.

Chunk convention (shared with the SQL source): every column is pandas ``str`` dtype with "" for
missing values, header names are stripped of whitespace and a BOM, and an int64 ``__row__`` column
holds the spreadsheet row number of the record (header = row 1; a blank line is a row; a quoted
field spanning several physical lines is still one row). Blank records (every field empty or
whitespace) are dropped silently.

Parsing uses Python's C ``csv`` module: it handles quoting exactly like spreadsheets do, yields one
record at a time (constant memory), and lets us count records to get spreadsheet row numbers and see
ragged rows, which the pandas/pyarrow readers either hide or renumber.

Decisions worth knowing:
- A record with more fields than the header is reported as a ``MalformedRow`` and excluded, unless
  the extra fields are all empty (trailing delimiters from spreadsheet exports), which are trimmed.
  Fewer fields than the header are padded with "".
- A record containing a NUL character is reported as malformed rather than silently stripped: NULs
  mean corruption or a binary/UTF-16 file, and a "cleaned" value could pass validation while wrong.
- Syntax errors the csv module detects in strict mode (``"a"b``, an unterminated quote) are reported
  as malformed rows too; row numbers after such a record are best effort.
- Trailing empty header cells are ignored (a common spreadsheet artefact); an empty name between
  real names, a duplicate name, or a column called ``__row__`` is a ``SourceError``.
"""

from __future__ import annotations

import codecs
import csv
import functools
import io
import re
from collections import Counter
from collections.abc import Iterable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import TextIO

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.compute as pc

from passflow.errors import SourceError
from passflow.sources.encoding import C1_PATTERN_RE2, resolve_encoding, undecided

__all__ = ["CsvDialect", "MalformedRow", "detect_csv_dialect", "read_csv_chunks", "ROW_COLUMN"]

ROW_COLUMN = "__row__"
_RAW_MAX = 200
_SCAN_BLOCK = 1 << 20
_QUOTE, _LF, _CR = ord('"'), ord("\n"), ord("\r")
_DELIMITER_CANDIDATES = (",", ";", "\t")  # order breaks ties: comma is the most common export
_DELIMITER_ALIASES = {"tab": "\t", "\\t": "\t", "comma": ",", "semicolon": ";", "pipe": "|"}


@dataclass(frozen=True)
class CsvDialect:
    """The encoding and delimiter used to read a file (detected or as given)."""

    encoding: str
    delimiter: str
    # detected (not declared): values holding C1 controls stop the run (passflow.sources.encoding)
    detected: bool = field(default=False, compare=False)


@dataclass
class MalformedRow:
    """A record that could not be turned into a row (reported to the caller, never dropped silently)."""

    row: int
    reason: str
    raw: str  # the record's text, truncated to ~200 characters


# --------------------------------------------------------------------------------------- detection


def detect_csv_dialect(path: Path, encoding: str = "auto", delimiter: str = "auto") -> CsvDialect:
    """Work out how to read ``path``; explicit values are validated and returned as given.

    encoding "auto": see :func:`passflow.sources.encoding.resolve_encoding` (BOM, UTF-8 sample, else
    the Windows/ISO code page the sample reads as; undecidable files raise SourceError with the fix).
    delimiter "auto": the most frequent of , ; TAB outside quotes in the header line (comma if none).
    Raises SourceError if the file is missing/unreadable or empty.
    """
    path = Path(path)
    _check_file(path)
    choice = resolve_encoding(path, encoding)
    enc = choice.encoding
    if delimiter == "auto":
        header_line = _first_line(path, enc)
        delim = _sniff_delimiter(header_line)
    else:
        delim = _checked_delimiter(delimiter)
    return CsvDialect(encoding=enc, delimiter=delim, detected=choice.how != "declared")


def _check_file(path: Path) -> None:
    try:
        size = path.stat().st_size
    except FileNotFoundError:
        raise SourceError(f"{path}: segment file not found") from None
    except OSError as exc:
        raise SourceError(f"{path}: cannot read segment file: {exc.strerror or exc}") from None
    if path.is_dir():
        raise SourceError(f"{path}: is a directory, expected a CSV file")
    if size == 0:
        raise SourceError(f"{path}: segment file is empty (no header row)")


def _checked_delimiter(delimiter: str) -> str:
    delim = _DELIMITER_ALIASES.get(delimiter.lower(), delimiter)
    if len(delim) != 1 or delim in ('"', "\r", "\n"):
        raise SourceError(f"invalid CSV delimiter {delimiter!r}: use 'auto' or one character such as ';'")
    return delim


def _first_line(path: Path, encoding: str, limit: int = 1 << 16) -> str:
    """The header line (up to the first newline outside quotes), decoded."""
    try:
        with path.open(encoding=encoding, newline="", errors="replace") as f:
            text = f.read(limit)
    except OSError as exc:
        raise SourceError(f"{path}: cannot read segment file: {exc.strerror or exc}") from None
    text = text.lstrip("\ufeff \r\n")  # a BOM read as text, and leading blank lines
    in_quotes = False
    for i, ch in enumerate(text):
        if ch == '"':
            in_quotes = not in_quotes
        elif ch in "\r\n" and not in_quotes:
            return text[:i]
    return text


def _sniff_delimiter(header_line: str) -> str:
    counts = dict.fromkeys(_DELIMITER_CANDIDATES, 0)
    in_quotes = False
    for ch in header_line:
        if ch == '"':
            in_quotes = not in_quotes
        elif not in_quotes and ch in counts:
            counts[ch] += 1
    best = max(_DELIMITER_CANDIDATES, key=lambda d: counts[d])  # max keeps the first on ties
    return best if counts[best] else ","  # no delimiter at all: a one-column file


# ------------------------------------------------------------------------------------------ reading


class _LineTap:
    """Feeds lines to csv.reader while remembering the last one (for error reports) and NULs.

    Python-level per-line work is kept to one containment test; measured overhead is in the noise.
    """

    __slots__ = ("_file", "last", "saw_nul")

    def __init__(self, file: TextIO) -> None:
        self._file = file
        self.last = ""
        self.saw_nul = False

    def __iter__(self) -> Iterator[str]:
        for line in self._file:
            self.last = line
            if "\x00" in line:
                self.saw_nul = True
            yield line


def read_csv_chunks(
    path: str | Path,
    *,
    encoding: str = "auto",
    delimiter: str = "auto",
    chunk_size: int = 50_000,
    malformed: list[MalformedRow] | None = None,
) -> Iterator[pd.DataFrame]:
    """Yield the records of a CSV file as DataFrames of at most ``chunk_size`` rows.

    The file, its encoding/delimiter and its header are checked before this returns, so problems
    with the source raise ``SourceError`` at call time; decoding errors deeper in a file with an
    explicit wrong encoding raise ``SourceError`` during iteration.

    Records that cannot become rows are appended to ``malformed`` as ``MalformedRow`` (and left out
    of the chunks). If ``malformed`` is None, the first such record raises ``SourceError`` instead,
    so nothing is ever dropped silently. A header-only file yields nothing.
    """
    if chunk_size < 1:
        raise ValueError(f"chunk_size must be >= 1, got {chunk_size}")
    path = Path(path)
    dialect = detect_csv_dialect(path, encoding, delimiter)
    # Read the header now so a bad file fails here, not at the first next().
    with _open(path, dialect) as f:
        names, _ = _read_header(path, csv.reader(_LineTap(f), **_reader_args(dialect)))
    return _iter_chunks(path, dialect, names, chunk_size, malformed)


def _reader_args(dialect: CsvDialect) -> dict:
    # strict=True turns unterminated quotes and `"a"b` into errors we report, instead of silently
    # swallowing the rest of the file into one field.
    return {"delimiter": dialect.delimiter, "quotechar": '"', "doublequote": True, "strict": True}


def _open(path: Path, dialect: CsvDialect) -> TextIO:
    try:
        # newline="" hands line endings to the csv module: CRLF inside quoted fields stays data.
        return path.open(encoding=dialect.encoding, newline="")
    except OSError as exc:
        raise SourceError(f"{path}: cannot read segment file: {exc.strerror or exc}") from None


def _read_header(path: Path, reader: Iterator[list[str]]) -> tuple[list[str], int]:
    """Return (column names, spreadsheet row of the header). Leading blank lines are skipped."""
    row_no = 0
    try:
        for record in reader:
            row_no += 1
            if any(field.strip() for field in record):
                break
        else:
            raise SourceError(f"{path}: segment file has no header row (it is empty or only blank lines)")
    except csv.Error as exc:
        raise SourceError(f"{path}: cannot parse the header row: {exc}") from None
    except UnicodeDecodeError as exc:
        raise SourceError(f"{path}: header is not valid {exc.encoding}: set the source encoding") from None

    if any("\x00" in field for field in record):
        raise SourceError(
            f"{path}: header contains NUL bytes; the file is probably UTF-16 without a BOM or not a CSV "
            "file (re-export it as CSV UTF-8)"
        )
    names = [field.strip().lstrip("\ufeff").strip() for field in record]
    while names and not names[-1]:
        names.pop()  # trailing empty header cells: spreadsheet artefact, not columns
    empty = [str(i + 1) for i, name in enumerate(names) if not name]
    if empty:
        raise SourceError(f"{path}: header has empty column name(s) at position(s) {', '.join(empty)}")
    dupes = sorted(name for name, count in Counter(names).items() if count > 1)
    if dupes:
        raise SourceError(f"{path}: header has duplicate column name(s): {', '.join(map(repr, dupes))}")
    if ROW_COLUMN in names:
        raise SourceError(f"{path}: column name {ROW_COLUMN!r} is reserved; rename that column")
    return names, row_no


def _raw_text(fields: Iterable[str], delimiter: str) -> str:
    buf = io.StringIO()
    csv.writer(buf, delimiter=delimiter, lineterminator="").writerow(fields)
    return _truncate(buf.getvalue())


def _truncate(text: str) -> str:
    return text if len(text) <= _RAW_MAX else text[:_RAW_MAX] + "…"


def _iter_chunks(
    path: Path,
    dialect: CsvDialect,
    names: list[str],
    chunk_size: int,
    malformed: list[MalformedRow] | None,
) -> Iterator[pd.DataFrame]:
    fast = _plain_prefix_start(path, dialect, len(names))
    if fast is None:
        with _open(path, dialect) as f:
            reader = csv.reader(_LineTap(f), **_reader_args(dialect))
            _, row_no = _read_header(path, reader)
        yield from _record_chunks(path, dialect, names, chunk_size, malformed, 0, row_no)
        return
    offset, row_no = fast
    plain = _PlainBlocks(path, dialect.delimiter, names, chunk_size, offset, row_no)
    yield from plain
    # The rest of the file (from the first block that is not plain) goes through the csv module.
    yield from _record_chunks(path, dialect, names, chunk_size, malformed, plain.offset, plain.row_no)


def _record_chunks(
    path: Path,
    dialect: CsvDialect,
    names: list[str],
    chunk_size: int,
    malformed: list[MalformedRow] | None,
    offset: int,
    row_no: int,
) -> Iterator[pd.DataFrame]:
    """Records from byte ``offset`` on (0: the header is read first) through the csv module;
    ``row_no`` is the spreadsheet row of the record before ``offset``."""
    n = len(names)

    def report(row: int, reason: str, raw: str) -> None:
        if malformed is None:
            raise SourceError(f"{path}: row {row}: {reason} (pass malformed=[] to collect such rows)")
        malformed.append(MalformedRow(row=row, reason=reason, raw=raw))

    with _open_at(path, dialect, offset) as f:
        tap = _LineTap(f)
        reader = csv.reader(tap, **_reader_args(dialect))
        if offset == 0:
            _, row_no = _read_header(path, reader)
        # Fields of accepted records go into one flat list (strings are not GC-tracked, so building a
        # chunk creates no garbage-collector churn); column j is flat[j::n].
        flat: list[str] = []
        rows: list[int] = []
        try:
            while True:
                try:
                    for record in reader:
                        row_no += 1
                        if tap.saw_nul:  # rare: only records whose lines contained a NUL are inspected
                            tap.saw_nul = False
                            if any("\x00" in field for field in record):
                                raw = _raw_text(record, dialect.delimiter).replace("\x00", "\\x00")
                                report(row_no, "contains a NUL byte (\\x00): corrupt or binary data", raw)
                                continue
                        # Blank = every field empty or whitespace (a blank line is []); dropped silently.
                        if not "".join(record).strip():
                            continue
                        k = len(record)
                        if k != n:
                            if k < n:
                                record += [""] * (n - k)  # trailing empty columns left off
                            elif any(record[n:]):
                                report(
                                    row_no,
                                    f"expected {n} fields, found {k}",
                                    _raw_text(record, dialect.delimiter),
                                )
                                continue
                            else:
                                del record[n:]  # only trailing delimiters beyond the header
                        flat.extend(record)
                        rows.append(row_no)
                        if len(rows) >= chunk_size:
                            yield _checked_c1(path, dialect, _build_chunk(names, flat, rows))
                            flat, rows = [], []
                    break
                except csv.Error as exc:
                    # The reader resumes at the next physical line; count the bad record as one row.
                    row_no += 1
                    reason = str(exc)
                    if reason == "unexpected end of data":
                        reason = "unterminated quoted field (a quote opened here is never closed)"
                    report(row_no, f"unparseable CSV record: {reason}", _truncate(tap.last.rstrip("\r\n")))
        except UnicodeDecodeError as exc:
            raise SourceError(
                f"{path}: cannot decode the file as {dialect.encoding} after row {row_no}: {exc.reason}; "
                'nothing was issued. Set the encoding the file was saved with, e.g. [source] encoding = "cp1250"'
                + (" (it was detected on a sample of the file)" if dialect.detected else "")
            ) from None
        if rows:
            yield _checked_c1(path, dialect, _build_chunk(names, flat, rows))


def _checked_c1(path: Path, dialect: CsvDialect, chunk: pd.DataFrame) -> pd.DataFrame:
    """A detected encoding whose values hold C1 controls was a wrong guess: stop (never mojibake)."""
    if not dialect.detected:
        return chunk
    for name in chunk.columns[:-1]:
        arr = pa.array(chunk[name], type=pa.large_string())
        hit = pc.match_substring_regex(arr, C1_PATTERN_RE2)
        if pc.any(hit).as_py():
            row = int(chunk[ROW_COLUMN].to_numpy()[np.flatnonzero(hit.to_numpy(zero_copy_only=False))[0]])
            raise undecided(
                path,
                f"read as {dialect.encoding}, row {row} (column {name!r}) holds C1 control characters "
                "(U+0080–U+009F), so that reading is wrong",
                (dialect.encoding,),
            )
    return chunk


def _open_at(path: Path, dialect: CsvDialect, offset: int) -> TextIO:
    if offset == 0:
        return _open(path, dialect)
    raw = path.open("rb")
    raw.seek(offset)
    # Past the header: a BOM can no longer occur, and offset is at a line start.
    encoding = "utf-8" if dialect.encoding == "utf-8-sig" else dialect.encoding
    return io.TextIOWrapper(raw, encoding=encoding, newline="")


# ------------------------------------------------------------------------------- plain fast path
#
# Most segments are plain: one record per line, UTF-8, no blank or ragged lines, quotes (if any)
# around whole fields. For those, Arrow's C++ CSV parser reads a block of lines many times faster
# than the csv module, and the row number of a record is simply its line number. Each block is
# checked for what would make that untrue (a field over two lines, a stray quote, a NUL, a lone CR,
# a line with another number of fields); the first block that is not plain, and everything after it, is read by the csv module above, so edge cases keep exactly
# the behaviour documented at the top of this module.

# Bytes read at a time: about one chunk's worth (memory stays that of a chunk), within these bounds.
_PLAIN_BLOCK_MIN, _PLAIN_BLOCK_MAX = 64 << 10, 8 << 20
_PLAIN_ENCODINGS = ("utf-8", "utf-8-sig")
_UTF8_C1 = re.compile(b"\xc2[\x80-\x9f]")


def _plain_prefix_start(path: Path, dialect: CsvDialect, n_names: int) -> tuple[int, int] | None:
    """(byte offset after the header line, its row number) if the file starts plain, else None."""
    if codecs.lookup(dialect.encoding).name not in _PLAIN_ENCODINGS or len(dialect.delimiter.encode()) != 1:
        return None  # Arrow parses UTF-8 with a one-byte delimiter
    with path.open("rb") as f:
        head = f.read(1 << 16)
    delim = dialect.delimiter.encode()
    row_no, start = 0, 0
    while True:  # leading blank lines, then the header line
        end = head.find(b"\n", start)
        if end < 0:
            return None  # no complete header line in the first 64 kB, or a header-only file
        line = head[start:end]
        row_no += 1
        if b"\x00" in line or b"\r" in line.rstrip(b"\r") or not _quotes_plain(line + b"\n", delim):
            return None
        if line.strip(b" \t\r\xef\xbb\xbf"):
            break
        start = end + 1
    if line.rstrip(b"\r").count(delim) != n_names - 1:
        return None  # trailing empty header cells or a quoted delimiter: let the csv module decide
    return end + 1, row_no


def _quotes_plain(block: bytes, delim: bytes) -> bool:
    """Whether every quote in these whole lines sits next to a field boundary, each once: an opening
    quote after a delimiter or a line start, or a closing one before a delimiter or a line end
    (``"a"b`` or ``"a" ,`` are errors for the csv module, not for Arrow). Looks only at the bytes
    around each quote (numpy): counting two-byte patterns with ``bytes.count`` took longer than
    parsing the block. :func:`_accounts_for` checks what the parse made of them."""
    data = np.frombuffer(block, dtype=np.uint8)
    quotes = np.flatnonzero(data == _QUOTE)
    if not quotes.size:
        return True
    sep = delim[0]  # one byte: the plain path takes no other delimiter (_plain_prefix_start)
    before = data[np.maximum(quotes - 1, 0)]
    opening = (before == sep) | (before == _LF) | (quotes == 0)
    after = data[np.minimum(quotes + 1, data.size - 1)]
    closing = ((after == sep) | (after == _LF) | (after == _CR)) & (quotes < data.size - 1)
    return int(quotes.size) == int(np.count_nonzero(opening)) + int(np.count_nonzero(closing))


def _accounts_for(block: bytes, table: pa.Table, delim: bytes, lines: int) -> bool:
    """Whether every byte of ``block`` is in a value, a field separator, a quote or a line end. It is
    not when a value holds a quote (an escaped ``""``, a stray one) or a delimiter (quoted, or a
    field that went on to the next line): rare, and left to the csv module."""
    separators = (table.num_columns - 1) * lines
    if block.count(delim) != separators:
        return False
    values = sum(_byte_length(col) for col in table.columns)
    ends = block.count(b"\n") + block.count(b"\r")
    return values + separators + block.count(b'"') + ends == len(block)


def _byte_length(col: pa.ChunkedArray) -> int:
    return pc.sum(pc.binary_length(col)).as_py() or 0


class _PlainBlocks:
    """Chunks of the plain part of a file; afterwards ``offset`` and ``row_no`` say where it ended
    (the end of the file, or the start of the first block that is not plain)."""

    def __init__(
        self, path: Path, delimiter: str, names: list[str], chunk_size: int, offset: int, row_no: int
    ) -> None:
        import pyarrow.csv as pacsv

        self.path = path
        self.names = names
        self.chunk_size = chunk_size
        self.offset = offset
        self.row_no = row_no
        self.delimiter = delimiter
        self._read, self._read_quoted = (
            functools.partial(
                pacsv.read_csv,
                read_options=pacsv.ReadOptions(column_names=names, use_threads=False),
                parse_options=pacsv.ParseOptions(
                    delimiter=delimiter,
                    quote_char=quote,
                    double_quote=bool(quote),
                    newlines_in_values=False,
                    ignore_empty_lines=False,
                ),
                convert_options=pacsv.ConvertOptions(
                    column_types={name: pa.large_string() for name in names},
                    strings_can_be_null=False,
                    quoted_strings_can_be_null=False,
                ),
            )
            for quote in (False, '"')
        )

    def __iter__(self) -> Iterator[pd.DataFrame]:
        pending: list[pd.DataFrame] = []
        held = 0
        with self.path.open("rb") as f:
            f.seek(self.offset)
            carry = b""
            size = _PLAIN_BLOCK_MIN
            while True:
                data = f.read(size)
                buf = carry + data
                cut = buf.rfind(b"\n") + 1 if data else len(buf)
                block, carry = buf[:cut], buf[cut:]
                if not block:
                    break
                frame = self._parse(block)
                if frame is None:
                    break  # not plain: the csv module reads on from self.offset
                self.offset += len(block)
                lines = frame.attrs.pop("lines")
                self.row_no += lines
                size = min(_PLAIN_BLOCK_MAX, max(_PLAIN_BLOCK_MIN, len(block) * self.chunk_size // lines))
                pending.append(frame)
                held += len(frame)
                while held >= self.chunk_size:
                    chunk, pending, held = _take(pending, self.chunk_size)
                    yield chunk
                if not data:
                    break
        if held:
            yield pd.concat(pending, ignore_index=True)

    def _parse(self, block: bytes) -> pd.DataFrame | None:
        lines = block.count(b"\n") + (not block.endswith(b"\n"))
        if b"\x00" in block or (b"\r" in block and block.count(b"\r") != block.count(b"\r\n")):
            return None
        if b"\xc2" in block and _UTF8_C1.search(block):  # memchr first: C1 is U+0080–U+009F
            return None  # the csv module reads on and stops the run at that row (_checked_c1)
        delim = self.delimiter.encode()
        quoted = b'"' in block
        if quoted and not _quotes_plain(block, delim):
            return None
        try:
            table = (self._read_quoted if quoted else self._read)(io.BytesIO(block))
        except (pa.ArrowInvalid, UnicodeDecodeError):  # a ragged line, bad UTF-8: the csv module says
            return None
        if table.num_rows != lines:
            return None
        if quoted and not _accounts_for(block, table, delim, lines):
            return None
        rows = np.arange(self.row_no + 1, self.row_no + 1 + lines, dtype=np.int64)
        columns = table.columns
        blank = _blank(columns[0])  # every field empty or whitespace: dropped, as by the csv module
        if blank.any():
            for col in columns[1:]:
                blank &= _blank(col)
        data = {name: pd.Series(col, dtype="str") for name, col in zip(self.names, columns, strict=True)}
        data[ROW_COLUMN] = pd.Series(rows)
        frame = pd.DataFrame(data)
        if blank.any():
            frame = frame.loc[~blank].reset_index(drop=True)
        frame.attrs["lines"] = lines
        return frame


def _blank(col: pa.ChunkedArray) -> np.ndarray:
    return pc.equal(pc.utf8_trim_whitespace(col), "").to_numpy(zero_copy_only=False)


def _take(frames: list[pd.DataFrame], n: int) -> tuple[pd.DataFrame, list[pd.DataFrame], int]:
    """The first ``n`` rows of ``frames`` as one frame, the rest, and its row count."""
    whole = pd.concat(frames, ignore_index=True) if len(frames) > 1 else frames[0]
    rest = whole.iloc[n:].reset_index(drop=True)
    return whole.iloc[:n].reset_index(drop=True), [rest] if len(rest) else [], len(rest)


def _build_chunk(names: list[str], flat: list[str], rows: list[int]) -> pd.DataFrame:
    n = len(names)
    data = {name: _str_series(flat[j::n]) for j, name in enumerate(names)}
    data[ROW_COLUMN] = pd.Series(np.asarray(rows, dtype=np.int64))
    return pd.DataFrame(data)


def _str_series(values: list[str]) -> pd.Series:
    # pyarrow builds the string array in C; pandas' "str" dtype stores large_string, so no cast.
    return pd.Series(pa.array(values, type=pa.large_string()), dtype="str")
