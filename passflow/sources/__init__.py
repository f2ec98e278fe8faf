"""Segment sources: stream a CSV file or a SQL table/query as string DataFrame chunks.

Prefect-free and constant-memory. Every chunk has the source's columns as pandas ``str`` dtype
("" for missing values, header names stripped) plus an int64 ``__row__`` column: the spreadsheet row
number for CSV (header = row 1), the 1-based result ordinal for SQL. Blank records are dropped.
A source that cannot be read at all raises ``passflow.errors.SourceError``; a CSV record that cannot
become a row is reported as a ``MalformedRow``.
"""

from passflow.sources.csv_source import (
    ROW_COLUMN,
    CsvDialect,
    MalformedRow,
    detect_csv_dialect,
    read_csv_chunks,
)
from passflow.sources.sql_source import read_sql_chunks

__all__ = [
    "ROW_COLUMN",
    "CsvDialect",
    "MalformedRow",
    "detect_csv_dialect",
    "read_csv_chunks",
    "read_sql_chunks",
]
