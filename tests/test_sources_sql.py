"""SQL segment source: real SQLite files and (marked `postgres`) a real PostgreSQL schema."""

from __future__ import annotations

import datetime as dt
import decimal
import uuid
from collections.abc import Iterator
from pathlib import Path

import pandas as pd
import pytest
import sqlalchemy as sa

from passflow.errors import SourceError
from passflow.sources import read_sql_chunks, sql_source
from passflow.sources.sql_source import _value_to_str


def read_all(url: str, **kwargs) -> pd.DataFrame:
    return pd.concat(list(read_sql_chunks(url, **kwargs)), ignore_index=True)


def assert_chunk_convention(df: pd.DataFrame) -> None:
    assert df.columns[-1] == "__row__"
    assert df["__row__"].dtype == "int64"
    for name in df.columns[:-1]:
        assert df[name].dtype == "str", name
        assert not df[name].isna().any(), name


@pytest.fixture
def sqlite_url(tmp_path: Path) -> Iterator[str]:
    url = f"sqlite:///{tmp_path / 'crm.db'}"
    engine = sa.create_engine(url)
    meta = sa.MetaData()
    customers = sa.Table(
        "customer segment",  # a name that needs quoting
        meta,
        sa.Column("id", sa.Integer, primary_key=True),
        sa.Column("email", sa.String),
        sa.Column("first_name", sa.String),
        sa.Column("points", sa.Integer),
        sa.Column("balance", sa.Float),
    )
    meta.create_all(engine)
    with engine.begin() as conn:
        conn.execute(
            customers.insert(),
            [
                {"email": "a@example.com", "first_name": "René", "points": 10, "balance": 12.5},
                {"email": "b@example.com", "first_name": None, "points": None, "balance": 3.0},
                {"email": "c@example.com", "first_name": "Zoë", "points": 0, "balance": None},
            ],
        )
        conn.execute(sa.text("create table other (x integer)"))
    engine.dispose()
    yield url


# ------------------------------------------------------------------------------------------ SQLite


def test_sqlite_table(sqlite_url: str) -> None:
    df = read_all(sqlite_url, table="customer segment")
    assert_chunk_convention(df)
    assert df.to_dict("records") == [
        {
            "id": "1",
            "email": "a@example.com",
            "first_name": "René",
            "points": "10",
            "balance": "12.5",
            "__row__": 1,
        },
        {"id": "2", "email": "b@example.com", "first_name": "", "points": "", "balance": "3", "__row__": 2},
        {
            "id": "3",
            "email": "c@example.com",
            "first_name": "Zoë",
            "points": "0",
            "balance": "",
            "__row__": 3,
        },
    ]


def test_sqlite_query_text_is_sent_as_written(sqlite_url: str) -> None:
    # ':x' and '%' inside literals must not be taken as bind parameters / format markers.
    query = """
        select email, 'time: 12:30 :x' as note, '50%' as pct, points * 2 as doubled
        from "customer segment" where points is not null order by id
    """
    df = read_all(sqlite_url, query=query)
    assert df.to_dict("records") == [
        {"email": "a@example.com", "note": "time: 12:30 :x", "pct": "50%", "doubled": "20", "__row__": 1},
        {"email": "c@example.com", "note": "time: 12:30 :x", "pct": "50%", "doubled": "0", "__row__": 2},
    ]


def test_sqlite_chunks_and_ordinals(tmp_path: Path) -> None:
    url = f"sqlite:///{tmp_path / 'big.db'}"
    engine = sa.create_engine(url)
    with engine.begin() as conn:
        conn.execute(sa.text("create table seg (n integer, label text)"))
        conn.execute(
            sa.text("insert into seg values (:n, :label)"), [{"n": i, "label": f"r{i}"} for i in range(10)]
        )
    engine.dispose()
    chunks = list(read_sql_chunks(url, table="seg", chunk_size=3))
    assert [len(c) for c in chunks] == [3, 3, 3, 1]
    assert all(c.index.tolist() == list(range(len(c))) for c in chunks)
    whole = pd.concat(chunks, ignore_index=True)
    assert whole["__row__"].tolist() == list(range(1, 11))
    assert whole["n"].tolist() == [str(i) for i in range(10)]
    pd.testing.assert_frame_equal(whole, read_all(url, table="seg"))


def test_sqlite_schema_qualified_table(sqlite_url: str) -> None:
    assert len(read_all(sqlite_url, table="main.customer segment")) == 3


def test_empty_result_yields_nothing(sqlite_url: str) -> None:
    assert list(read_sql_chunks(sqlite_url, table="other")) == []
    assert list(read_sql_chunks(sqlite_url, query="select * from other")) == []


def test_missing_table_is_a_clear_error_and_not_injectable(sqlite_url: str) -> None:
    with pytest.raises(SourceError, match="table 'other; drop table other' does not exist"):
        read_sql_chunks(sqlite_url, table="other; drop table other")
    assert list(read_sql_chunks(sqlite_url, query="select count(*) as n from other"))[0]["n"].tolist() == [
        "0"
    ]


def test_bad_query_is_a_source_error(sqlite_url: str) -> None:
    chunks = read_sql_chunks(sqlite_url, query="select * from no_such_table")
    with pytest.raises(SourceError, match="reading query failed.*no such table: no_such_table"):
        list(chunks)


def test_duplicate_result_columns_are_named(sqlite_url: str) -> None:
    with pytest.raises(SourceError, match="duplicate column name.*'email'"):
        list(read_sql_chunks(sqlite_url, query='select email, email from "customer segment"'))


def test_missing_sqlite_file_is_not_created(tmp_path: Path) -> None:
    path = tmp_path / "missing.db"
    with pytest.raises(SourceError, match="SQLite database file not found"):
        read_sql_chunks(f"sqlite:///{path}", table="x")
    assert not path.exists()


@pytest.mark.parametrize("kwargs", [{}, {"table": "t", "query": "select 1"}])
def test_exactly_one_of_table_or_query(sqlite_url: str, kwargs: dict) -> None:
    with pytest.raises(SourceError, match="exactly one of"):
        read_sql_chunks(sqlite_url, **kwargs)


def test_unreachable_database_hides_password() -> None:
    url = "postgresql+psycopg://app:s3cr3t-pw@127.0.0.1:1/crm?connect_timeout=3"
    with pytest.raises(SourceError) as info:
        read_sql_chunks(url, table="customers")
    message = str(info.value)
    assert "s3cr3t-pw" not in message
    assert "postgresql+psycopg://app:***@127.0.0.1:1/crm" in message
    assert "cannot connect" in message
    assert info.value.__cause__ is None and info.value.__suppress_context__


@pytest.mark.parametrize(
    "url",
    ["nosuchdialect://app:s3cr3t-pw@host/db", "postgresql+nosuchdriver://app:s3cr3t-pw@host/db", "s3cr3t-pw"],
)
def test_bad_url_hides_password(url: str) -> None:
    with pytest.raises(SourceError) as info:
        read_sql_chunks(url, table="customers")
    assert "s3cr3t-pw" not in str(info.value)


@pytest.mark.parametrize(
    ("value", "expected"),
    [
        (None, ""),
        ("text", "text"),
        (42, "42"),
        (12345678901234567890, "12345678901234567890"),
        (True, "true"),
        (False, "false"),
        (3.0, "3"),
        (2.5, "2.5"),
        (float("nan"), ""),
        (1e20, "1e+20"),
        (decimal.Decimal("12.50"), "12.50"),
        (decimal.Decimal("1E+3"), "1000"),
        (dt.datetime(2026, 1, 2, 3, 4, 5), "2026-01-02T03:04:05"),
        (dt.datetime(2026, 1, 2, 3, 4, 5, tzinfo=dt.UTC), "2026-01-02T03:04:05+00:00"),
        (dt.date(2026, 1, 2), "2026-01-02"),
        (dt.time(9, 30), "09:30:00"),
        (b"\x00\xff", "00ff"),
        (uuid.UUID(int=1), "00000000-0000-0000-0000-000000000001"),
        ({"tier": "gold"}, '{"tier": "gold"}'),
    ],
)
def test_value_to_str(value: object, expected: str) -> None:
    assert _value_to_str(value) == expected


# -------------------------------------------------------------------------------------- PostgreSQL


@pytest.mark.postgres
def test_postgres_table_types_and_nulls(pg_url: str) -> None:
    engine = sa.create_engine(pg_url)
    meta = sa.MetaData()
    table = sa.Table(
        "Loyalty Members",  # mixed case + space: must be quoted correctly
        meta,
        sa.Column("id", sa.BigInteger, primary_key=True),
        sa.Column("email", sa.Text, nullable=False),
        sa.Column("points", sa.Integer),
        sa.Column("balance", sa.Numeric(10, 2)),
        sa.Column("vip", sa.Boolean),
        sa.Column("joined_at", sa.DateTime),
        sa.Column("last_seen", sa.DateTime(timezone=True)),
        sa.Column("birthday", sa.Date),
    )
    meta.create_all(engine)
    with engine.begin() as conn:
        conn.execute(
            table.insert(),
            [
                {
                    "id": 9_000_000_001,
                    "email": "a@example.com",
                    "points": 120,
                    "balance": decimal.Decimal("12.50"),
                    "vip": True,
                    "joined_at": dt.datetime(2026, 1, 2, 3, 4, 5),
                    "last_seen": dt.datetime(2026, 3, 4, 5, 6, 7, tzinfo=dt.UTC),
                    "birthday": dt.date(1990, 5, 17),
                },
                {
                    "id": 9_000_000_002,
                    "email": "b@example.com",
                    "points": None,
                    "balance": None,
                    "vip": None,
                    "joined_at": None,
                    "last_seen": None,
                    "birthday": None,
                },
            ],
        )
    engine.dispose()

    df = read_all(pg_url, table="Loyalty Members")
    assert_chunk_convention(df)
    first, second = df.sort_values("id").to_dict("records")
    last_seen = first.pop("last_seen")
    assert pd.Timestamp(last_seen) == pd.Timestamp("2026-03-04T05:06:07Z")  # offset is the session's
    assert first == {
        "id": "9000000001",
        "email": "a@example.com",
        "points": "120",
        "balance": "12.50",
        "vip": "true",
        "joined_at": "2026-01-02T03:04:05",
        "birthday": "1990-05-17",
        "__row__": first["__row__"],
    }
    assert {k: v for k, v in second.items() if k not in ("id", "email", "__row__")} == dict.fromkeys(
        ["points", "balance", "vip", "joined_at", "last_seen", "birthday"], ""
    )
    assert sorted(df["__row__"].tolist()) == [1, 2]


@pytest.mark.postgres
def test_postgres_query_streams_with_server_side_cursor(pg_url: str) -> None:
    engine = sa.create_engine(pg_url)
    with engine.begin() as conn:
        conn.execute(
            sa.text(
                "create table seg as select g as n, 'user' || g || '@example.com' as email from generate_series(1, 2500) g"
            )
        )
    engine.dispose()

    cursors: list[object] = []

    def spy(conn, cursor, statement, parameters, context, executemany) -> None:  # noqa: ANN001
        if "from seg" in statement:
            cursors.append(cursor)

    sa.event.listen(sa.engine.Engine, "before_cursor_execute", spy)
    try:
        chunks = read_sql_chunks(
            pg_url, query="select n, email, null::text as note from seg order by n", chunk_size=1000
        )
        sizes, rows, firsts = [], [], []
        for chunk in chunks:
            sizes.append(len(chunk))
            rows.extend(chunk["__row__"].tolist())
            firsts.append(chunk["n"].iloc[0])
    finally:
        sa.event.remove(sa.engine.Engine, "before_cursor_execute", spy)

    assert sizes == [1000, 1000, 500]
    assert rows == list(range(1, 2501))
    assert firsts == ["1", "1001", "2001"]
    # A named (server-side) cursor: rows are fetched from the server per chunk, not all at once.
    assert len(cursors) == 1
    assert type(cursors[0]).__name__ == "ServerCursor", type(cursors[0])


@pytest.mark.postgres
def test_postgres_text_columns_come_by_copy_exactly_as_by_the_driver(
    pg_url: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    """All-text results take COPY + Arrow (passflow.sources.pg_copy): same chunks, values, ordinals."""
    values = ["a", None, "", "x,y", 'q"uote', "multi\nline", "cr\rx", "Zoë 漢字 😀", "  pad ", "\\N", "NULL", "\t"]
    engine = sa.create_engine(pg_url)
    with engine.begin() as conn:
        conn.execute(sa.text("create table seg (id text, v varchar(50), w char(4), z text)"))
        conn.execute(
            sa.text("insert into seg values (:i, :v, :w, :z)"),
            [{"i": str(i), "v": v, "w": None if i % 3 else "ab", "z": v} for i, v in enumerate(values * 9)],
        )
        conn.execute(sa.text("create table one (v text)"))
        conn.execute(sa.text("insert into one values (:v)"), [{"v": v} for v in [None, "", None, "x", None]])
    engine.dispose()
    copies: list[str] = []
    real_copy_tables = sql_source.copy_tables

    def spy(driver, sql, width, chunk_size):  # noqa: ANN001, ANN202
        copies.append(sql)
        return real_copy_tables(driver, sql, width, chunk_size)

    monkeypatch.setattr(sql_source, "copy_tables", spy)
    cases = [
        ({"table": "seg"}, 25, True),
        ({"table": "one"}, 2, True),  # a NULL in a one-column row is an empty line
        ({"query": "select id, v from seg where id::int % 2 = 0"}, 7, False),  # "%": driver path
        ({"query": "select z, id from seg where false"}, 10, True),  # no rows
        ({"query": "select id, length(v) as n from seg"}, 50, False),  # not all text
        ({"query": "select id from seg;"}, 50, False),  # COPY refuses it: driver path
    ]
    for kwargs, chunk_size, by_copy in cases:
        copies.clear()
        fast = list(read_sql_chunks(pg_url, chunk_size=chunk_size, **kwargs))
        assert bool(copies) == by_copy, kwargs
        with monkeypatch.context() as m:
            m.setattr(sql_source, "_copy_chunks", lambda *a, **k: None)
            slow = list(read_sql_chunks(pg_url, chunk_size=chunk_size, **kwargs))
        assert len(fast) == len(slow), kwargs
        for a, b in zip(fast, slow, strict=True):
            assert_chunk_convention(a)
            pd.testing.assert_frame_equal(a, b)


@pytest.mark.postgres
def test_postgres_missing_table_and_bad_query(pg_url: str) -> None:
    with pytest.raises(SourceError, match="table 'customers' does not exist"):
        read_sql_chunks(pg_url, table="customers")
    with pytest.raises(SourceError, match="reading query failed"):
        list(read_sql_chunks(pg_url, query="select * from customers"))


@pytest.mark.postgres
def test_postgres_wrong_password_is_hidden(pg_admin_url: str) -> None:
    url = (
        sa.engine.make_url(pg_admin_url)
        .set(username="passflow_nobody", password="s3cr3t-pw")
        .render_as_string(hide_password=False)
    )
    with pytest.raises(SourceError) as info:
        read_sql_chunks(url, table="customers")
    assert "s3cr3t-pw" not in str(info.value)
    assert "***" in str(info.value)
