"""Shared fixtures.

PostgreSQL: tests marked `postgres` use `pg_url`. Locally they skip with a reason when no server is
reachable; in CI (`CI=true`) an unreachable server is an error, never a skip.
"""

from __future__ import annotations

import os
import uuid
from collections.abc import Iterator

import pytest
import sqlalchemy as sa

from passflow.sandbox.runner import SandboxHandle, start_sandbox_thread
from passflow.sandbox.state import DEMO_PUBLIC_TOKEN, DEMO_SECRET_TOKEN

PG_ADMIN_URL = os.environ.get("PASSFLOW_TEST_PG_URL", "postgresql+psycopg://postgres@127.0.0.1:5432/test")


def _pg_reachable() -> str | None:
    try:
        engine = sa.create_engine(PG_ADMIN_URL, connect_args={"connect_timeout": 3})
        with engine.connect() as conn:
            conn.execute(sa.text("select 1"))
        engine.dispose()
        return None
    except Exception as exc:  # noqa: BLE001 - any failure means "not reachable"
        return f"{type(exc).__name__}: {str(exc).splitlines()[0] if str(exc) else ''}"


@pytest.fixture(scope="session")
def pg_admin_url() -> str:
    problem = _pg_reachable()
    if problem is not None:
        if os.environ.get("CI", "").lower() == "true":
            pytest.fail(f"PostgreSQL at {PG_ADMIN_URL} is required in CI but unreachable: {problem}")
        pytest.skip(f"PostgreSQL not reachable at {PG_ADMIN_URL} ({problem}); set PASSFLOW_TEST_PG_URL")
    return PG_ADMIN_URL


@pytest.fixture
def pg_url(pg_admin_url: str) -> Iterator[str]:
    """A fresh, empty schema in the test database for one test; dropped afterwards."""
    schema = f"t_{uuid.uuid4().hex[:12]}"
    engine = sa.create_engine(pg_admin_url)
    with engine.begin() as conn:
        conn.execute(sa.text(f'create schema "{schema}"'))
    # search_path makes unqualified table names land in the fresh schema.
    yield f"{pg_admin_url}?options=-csearch_path%3D{schema}"
    with engine.begin() as conn:
        conn.execute(sa.text(f'drop schema "{schema}" cascade'))
    engine.dispose()


@pytest.fixture(params=["sqlite", pytest.param("postgres", marks=pytest.mark.postgres)])
def db_url(request: pytest.FixtureRequest, tmp_path) -> str:  # noqa: ANN001
    """The same test against a SQLite file and against PostgreSQL."""
    if request.param == "sqlite":
        return f"sqlite:///{tmp_path / 'ledger.db'}"
    return request.getfixturevalue("pg_url")


@pytest.fixture(scope="session")
def prefect_harness() -> Iterator[None]:
    """One temporary Prefect API (SQLite in a temp dir) for the whole session: it takes ~15 s to start."""
    os.environ.setdefault("PREFECT_SERVER_EPHEMERAL_STARTUP_TIMEOUT_SECONDS", "180")
    os.environ.setdefault("PREFECT_SERVER_ANALYTICS_ENABLED", "false")
    from prefect.testing.utilities import prefect_test_harness

    with prefect_test_harness(server_startup_timeout=180):
        yield


@pytest.fixture(scope="module")
def sandbox() -> Iterator[SandboxHandle]:
    """The provider sandbox in a thread, one per test module (modules may define their own)."""
    with start_sandbox_thread() as handle:
        yield handle


@pytest.fixture
def fresh_sandbox(sandbox: SandboxHandle, monkeypatch: pytest.MonkeyPatch) -> SandboxHandle:
    """The module's sandbox, reset, with the demo Passmachine credentials in PF_PM_PUBLIC/SECRET."""
    sandbox.admin.reset()
    monkeypatch.setenv("PF_PM_PUBLIC", DEMO_PUBLIC_TOKEN)
    monkeypatch.setenv("PF_PM_SECRET", DEMO_SECRET_TOKEN)
    return sandbox
