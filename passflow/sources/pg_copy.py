"""PostgreSQL fast path of the SQL source: ``COPY (query) TO STDOUT (FORMAT csv)`` parsed by Arrow.

Fetching rows through the driver (a tuple of Python strings per row, then Arrow arrays built from
them) was most of a PostgreSQL link run: ~10 s of the run's process for 1M rows, where COPY plus
Arrow's C++ CSV parser take ~2 s. It is taken only when it gives exactly what the driver path
gives: every column of the result is text (``text``, ``varchar``, ``char``, ``name``), whose COPY
text is the value itself. NULL and "" both become "" (COPY writes NULL unquoted and "" quoted; the
parser reads both as ""), as :func:`passflow.sources.sql_source._str_array` does. Other column
types (numbers, dates, booleans, JSON...) format differently in COPY, so those results take the
driver path, as does anything COPY refuses (then nothing was read yet).
"""

from __future__ import annotations

import io
import itertools
from collections.abc import Iterable, Iterator
from typing import Any

import pyarrow as pa
import pyarrow.csv as pacsv

# pg_type OIDs whose COPY text is the value as the driver returns it
TEXT_OIDS = frozenset({25, 1043, 1042, 19})  # text, varchar, bpchar, name
_BLOCK = 4 << 20  # bytes Arrow parses at a time


def copy_usable(driver_conn: Any) -> bool:
    """A psycopg (3) connection whose client encoding is UTF-8 (COPY's bytes go straight to Arrow)."""
    package = type(driver_conn).__module__.split(".")[0]  # not psycopg2: its cursors have no copy()
    info = getattr(driver_conn, "info", None)
    return package == "psycopg" and getattr(info, "encoding", "") in ("utf-8", "utf8")


def text_columns(driver_conn: Any, sql: str) -> list[str] | None:
    """The result's column names if every column is text, else None (also if the probe fails; the
    transaction is rolled back then, and the driver path reports the error as before)."""
    try:
        with driver_conn.cursor() as cur:
            cur.execute(f"SELECT * FROM ({sql}) AS passflow_source LIMIT 0")
            description = cur.description or []
    except Exception:  # noqa: BLE001 - e.g. a query that is not a plain SELECT: use the driver path
        driver_conn.rollback()
        return None
    if not description or any(d.type_code not in TEXT_OIDS for d in description):
        return None
    return [d.name for d in description]


class _CopyStream(io.RawIOBase):
    """COPY's data blocks as a readable byte stream for Arrow."""

    def __init__(self, blocks: Iterable[Any]) -> None:
        self._blocks = iter(blocks)
        self._view = memoryview(b"")

    def readable(self) -> bool:
        return True

    def readinto(self, buffer: Any) -> int:
        while not self._view:
            block = next(self._blocks, None)
            if block is None:
                return 0
            self._view = memoryview(block).cast("B")
        n = min(len(buffer), len(self._view))
        buffer[:n] = self._view[:n]
        self._view = self._view[n:]
        return n


def copy_tables(driver_conn: Any, sql: str, width: int, chunk_size: int) -> Iterator[pa.Table]:
    """The result of ``sql`` as tables of ``chunk_size`` rows (the last one shorter), every column
    ``large_string``, named ``c0``, ``c1``, ..."""
    names = [f"c{i}" for i in range(width)]
    with driver_conn.cursor() as cur, cur.copy(f"COPY ({sql}) TO STDOUT (FORMAT csv)") as copy:
        blocks = iter(copy)
        first = next(blocks, None)
        if first is None:  # no rows (Arrow refuses an empty CSV)
            return
        reader = pacsv.open_csv(
            io.BufferedReader(_CopyStream(itertools.chain([first], blocks)), _BLOCK),
            read_options=pacsv.ReadOptions(column_names=names, block_size=_BLOCK),
            parse_options=pacsv.ParseOptions(newlines_in_values=True, ignore_empty_lines=False),
            convert_options=pacsv.ConvertOptions(
                column_types=dict.fromkeys(names, pa.large_string()),
                strings_can_be_null=False,
                quoted_strings_can_be_null=False,
            ),
        )
        pending: list[pa.RecordBatch] = []
        held = 0
        for batch in reader:
            pending.append(batch)
            held += batch.num_rows
            while held >= chunk_size:
                table = pa.Table.from_batches(pending)
                yield table.slice(0, chunk_size)
                rest = table.slice(chunk_size)
                pending, held = rest.to_batches(), rest.num_rows
        if held:
            yield pa.Table.from_batches(pending, schema=reader.schema)
