"""Upsert the pass attributes of a run into a database table (SQLite or PostgreSQL): the
``[export] db = { url, table }`` export, beside the CRM files."""

from __future__ import annotations

from datetime import UTC, datetime
from types import TracebackType
from typing import Self

import pandas as pd
import pyarrow as pa
import sqlalchemy as sa
from sqlalchemy.dialects import postgresql, sqlite
from sqlalchemy.engine import make_url

from passflow.errors import PassflowError
from passflow.exports.writer import INPUT_ATTRS as _INPUT_ATTRS
from passflow.exports.writer import PROVIDER_RE as _PROVIDER_RE

__all__ = ["DbAttributeExport"]


class DbAttributeExport:
    """Upsert pass attributes into a table keyed by `customer_id` (SQLite or PostgreSQL).

    The table is created if missing; if it exists (for example written by another provider) the
    provider's columns are added, so several providers can share one table. Each `write()` is one
    transaction. Values are stored as text exactly as given (`pass_gendate` stays ISO 8601; no formula
    neutralisation, which is a spreadsheet concern); `updated_at` is the UTC time of the chunk's write.
    """

    _BATCH_ROWS = 10_000  # rows converted to Python dicts at a time: bounds memory for huge chunks

    def __init__(self, *, url: str, table: str, provider: str) -> None:
        if not _PROVIDER_RE.fullmatch(provider):
            raise PassflowError(
                f"provider name {provider!r} cannot be used in column names; use letters, digits, '_'"
            )
        self.provider = provider
        self.attribute_columns = tuple(f"{provider}_{a}" for a in _INPUT_ATTRS)
        try:
            parsed = make_url(url)
        except Exception:  # noqa: BLE001 - the message of a parse error may echo the URL (and password)
            raise PassflowError("the database URL is not valid (expected dialect+driver://...)") from None
        self._password = parsed.password
        self.safe_url = parsed.render_as_string(hide_password=True)
        if parsed.get_backend_name() not in ("sqlite", "postgresql"):
            raise PassflowError(f"unsupported database for attribute export: {self.safe_url}")
        # `from None` below: the chained driver exception could echo connection details.
        try:
            # hide_parameters: customer data must not end up in error messages or logs
            self._engine = sa.create_engine(parsed, hide_parameters=True)
        except ImportError as exc:
            raise PassflowError(
                f"the database driver for {self.safe_url} is not installed ({exc.name}); "
                "for PostgreSQL use a postgresql+psycopg:// URL"
            ) from None
        try:
            with self._engine.connect():
                pass
        except sa.exc.SQLAlchemyError as exc:
            self._engine.dispose()
            raise PassflowError(
                f"cannot connect to database {self.safe_url}: {self._describe(exc)}"
            ) from None
        try:
            self._table = self._ensure_table(table)
        except sa.exc.SQLAlchemyError as exc:
            self._engine.dispose()
            raise PassflowError(
                f"cannot create or extend table {table!r} in database {self.safe_url}: {self._describe(exc)}"
            ) from None
        insert = postgresql.insert if self._engine.dialect.name == "postgresql" else sqlite.insert
        stmt = insert(self._table)
        self._upsert = stmt.on_conflict_do_update(
            index_elements=[self._table.c.customer_id],
            set_={c: stmt.excluded[c] for c in (*self.attribute_columns, "updated_at")},
        )

    def write(self, df: pd.DataFrame) -> None:
        """Upsert one chunk in one transaction; the last row per customer id wins within the chunk."""
        missing = [c for c in ("customer_id", *_INPUT_ATTRS) if c not in df.columns]
        if missing:
            raise PassflowError(f"export chunk is missing column(s) {missing}; it has {list(df.columns)}")
        ids = df["customer_id"].astype("str")
        has_id = (ids.notna() & (ids != "")).to_numpy(dtype=bool, na_value=False)
        frame = pd.DataFrame(
            {
                "customer_id": ids,
                **{
                    col: df[src].astype("str")
                    for src, col in zip(_INPUT_ATTRS, self.attribute_columns, strict=True)
                },
            }
        )[has_id]
        # PostgreSQL refuses to update one row twice in a statement; and the latest value should win
        frame = frame.drop_duplicates(subset="customer_id", keep="last")
        if frame.empty:
            return
        table = pa.Table.from_pandas(frame, preserve_index=False)
        now = datetime.now(UTC)
        try:
            with self._engine.begin() as conn:
                for batch in table.to_batches(max_chunksize=self._BATCH_ROWS):
                    rows = batch.to_pylist()  # nulls become None (not NaN)
                    for row in rows:
                        row["updated_at"] = now
                    conn.execute(self._upsert, rows)
        except sa.exc.SQLAlchemyError as exc:
            raise PassflowError(
                f"upsert into {self._table.name!r} at {self.safe_url} failed: {self._describe(exc)}"
            ) from None

    def close(self) -> None:
        self._engine.dispose()

    def __enter__(self) -> Self:
        return self

    def __exit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        self.close()

    def _ensure_table(self, name: str) -> sa.Table:
        metadata = sa.MetaData()
        table = sa.Table(
            name,
            metadata,
            sa.Column("customer_id", sa.Text, primary_key=True),
            *(sa.Column(c, sa.Text) for c in self.attribute_columns),
            sa.Column("updated_at", sa.DateTime(timezone=True)),
        )
        with self._engine.begin() as conn:
            inspector = sa.inspect(conn)
            if not inspector.has_table(name):
                table.create(conn)
                return table
            existing = {c["name"] for c in inspector.get_columns(name)}
            if "customer_id" not in existing:
                raise PassflowError(f"table {name!r} exists but has no customer_id column")
            preparer = conn.dialect.identifier_preparer
            for col in table.columns:
                if col.name not in existing:
                    # another provider's table: add our columns rather than failing
                    col_type = col.type.compile(dialect=conn.dialect)
                    conn.execute(
                        sa.text(
                            f"ALTER TABLE {preparer.format_table(table)} "
                            f"ADD COLUMN {preparer.format_column(col)} {col_type}"
                        )
                    )
        return table

    def _describe(self, exc: sa.exc.SQLAlchemyError) -> str:
        """First line of the driver's message, with the password scrubbed should a driver echo it."""
        orig = getattr(exc, "orig", None) or exc
        text = (str(orig).strip().splitlines() or [type(orig).__name__])[0]
        if self._password:
            text = text.replace(str(self._password), "***")
        return f"{type(orig).__name__}: {text}"


