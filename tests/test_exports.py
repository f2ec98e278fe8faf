"""Tests for passflow.exports: real files in tmp_path, real SQLite, PostgreSQL via `pg_url`."""

from __future__ import annotations

import csv
import gc
import os
import re
import subprocess
import sys
import tempfile
import textwrap
from collections.abc import Iterator
from pathlib import Path

import pandas as pd
import pytest
import sqlalchemy as sa
from hypothesis import given, settings
from hypothesis import strategies as st

import passflow.exports.writer as exports
from passflow.errors import PassflowError
from passflow.exports import AttributeExport, DbAttributeExport, cleanup_stale_partials, neutralise_formulas

GENDATE = "2026-11-22T10:15:00Z"
ATTRS = ["skycore_pass_id", "skycore_pass_link", "skycore_pass_gendate"]


def frame(ids: list[str | None], **overrides: list[str | None]) -> pd.DataFrame:
    """A chunk as the flows produce it: all-string columns."""
    data: dict[str, list[str | None]] = {
        "customer_id": ids,
        "pass_id": [f"P{i}" for i in ids],
        "pass_link": [f"https://d2c.skycore.com/wallet/gc/abc?pass-id=P{i}" for i in ids],
        "pass_gendate": [GENDATE] * len(ids),
    }
    data.update(overrides)
    return pd.DataFrame(data, dtype="str")


def ids(start: int, stop: int) -> list[str | None]:
    return [f"c{i}" for i in range(start, stop)]


def read_rows(path: Path) -> list[list[str]]:
    with open(path, newline="", encoding="utf-8") as f:
        return list(csv.reader(f))


def export(tmp_path: Path, kind: str = "moengage", **kw: object) -> AttributeExport:
    params: dict[str, object] = {
        "kind": kind,
        "directory": tmp_path,
        "campaign": "spring-sale",
        "provider": "skycore",
        "run_id": "abcdef1234567890",
    }
    params.update(kw)
    return AttributeExport(**params)  # type: ignore[arg-type]


def listing(directory: Path) -> list[str]:
    return sorted(p.name for p in directory.iterdir())


# -- column layout -------------------------------------------------------------------------------


def test_moengage_header_values_and_name(tmp_path: Path) -> None:
    with export(tmp_path) as ex:
        ex.write(frame(ids(0, 2)))
        ex.write(frame(ids(2, 3)))
    [path] = tmp_path.iterdir()
    assert re.fullmatch(r"spring-sale-skycore-moengage-\d{8}T\d{6}Z-abcdef12\.csv", path.name)
    raw = path.read_bytes()
    assert raw.startswith(b"ID,skycore_pass_id,")  # no BOM, header not quoted
    rows = read_rows(path)
    assert rows[0] == ["ID", *ATTRS]
    assert rows[1:] == [
        [f"c{i}", f"Pc{i}", f"https://d2c.skycore.com/wallet/gc/abc?pass-id=Pc{i}", GENDATE] for i in range(3)
    ]
    assert ex.rows_written == 3


def test_moengage_extra_columns_follow_attributes(tmp_path: Path) -> None:
    with export(tmp_path, provider="passmachine", extra_columns=("install_status",)) as ex:
        ex.write(frame(ids(0, 1), install_status=["installed"]))
    [path] = tmp_path.iterdir()
    assert read_rows(path) == [
        ["ID", "passmachine_pass_id", "passmachine_pass_link", "passmachine_pass_gendate", "install_status"],
        ["c0", "Pc0", "https://d2c.skycore.com/wallet/gc/abc?pass-id=Pc0", GENDATE, "installed"],
    ]


def test_bloomreach_contacts_spelled_exactly_and_phones_untouched(tmp_path: Path) -> None:
    chunk = frame(ids(0, 2), email=["a@example.com", "b@example.com"], phone=["+15551234567", "-12.5"])
    with export(tmp_path, kind="bloomreach") as ex:
        ex.write(chunk)
    [path] = tmp_path.iterdir()
    assert "-bloomreach-" in path.name
    rows = read_rows(path)
    assert rows[0] == ["registered", "email", "phone", *ATTRS]
    assert [r[:3] for r in rows[1:]] == [
        ["c0", "a@example.com", "+15551234567"],
        ["c1", "b@example.com", "-12.5"],
    ]


def test_bloomreach_without_contacts_and_id_override(tmp_path: Path) -> None:
    with export(tmp_path, kind="bloomreach", id_column="customer_key") as ex:
        ex.write(frame(ids(0, 1)))
    [path] = tmp_path.iterdir()
    assert read_rows(path)[0] == ["customer_key", *ATTRS]


def test_missing_input_column_is_a_clear_error(tmp_path: Path) -> None:
    with pytest.raises(PassflowError, match="pass_link"), export(tmp_path) as ex:
        ex.write(frame(ids(0, 1)).drop(columns="pass_link"))
    assert listing(tmp_path) == []


def test_invalid_provider_and_kind_are_rejected(tmp_path: Path) -> None:
    with pytest.raises(PassflowError, match="provider"):
        export(tmp_path, provider="sky core")
    with pytest.raises(
        PassflowError, match="unknown export format .salesforce.; known formats: bloomreach, braze, moengage"
    ):
        export(tmp_path, kind="salesforce")


def test_campaign_name_cannot_escape_directory(tmp_path: Path) -> None:
    out = tmp_path / "new" / "nested"  # created on demand
    with export(out, campaign="../../etc/x y") as ex:
        ex.write(frame(ids(0, 1)))
    [path] = out.iterdir()
    assert path.name.startswith("etc_x_y-skycore-moengage-")
    assert listing(tmp_path) == ["new"]


# -- CSV encoding --------------------------------------------------------------------------------

TRICKY = [
    "comma, inside",
    'quote " inside',
    '"fully quoted"',
    "line\nbreak",
    "crlf\r\nbreak",
    "lone\rcr",
    "ünïcödé — ‘quotes’",
    "emoji 🎟️👩‍👩‍👧",
    "  padded  ",
    "",
    None,
    "tab\tinside",
    "nul\x00inside",
]


def test_round_trip_of_tricky_values(tmp_path: Path) -> None:
    n = len(TRICKY)
    with export(tmp_path, extra_columns=("note",)) as ex:
        ex.write(frame(ids(0, n), pass_id=TRICKY, note=list(reversed(TRICKY))))
    [path] = tmp_path.iterdir()
    rows = read_rows(path)[1:]
    assert [r[1] for r in rows] == ["" if v is None else v for v in TRICKY]
    assert [r[4] for r in rows] == ["" if v is None else v for v in reversed(TRICKY)]


def test_quoting_only_where_needed(tmp_path: Path) -> None:
    with export(tmp_path) as ex:
        ex.write(frame(["c0", "c1"], pass_id=["plain", 'a,"b"']))
    [path] = tmp_path.iterdir()
    lines = path.read_bytes().split(b"\n")
    assert lines[1] == b"c0,plain,https://d2c.skycore.com/wallet/gc/abc?pass-id=Pc0," + GENDATE.encode()
    assert lines[2].startswith(b'c1,"a,""b""",')


def test_sliced_and_object_dtype_chunks(tmp_path: Path) -> None:
    big = frame(ids(0, 10), pass_id=["a,b", *[f"P{i}" for i in range(1, 10)]])
    legacy = pd.DataFrame(  # object dtype, non-string ids, missing values
        {
            "customer_id": [101, 102],
            "pass_id": ["x", None],
            "pass_link": ["=1", "l"],
            "pass_gendate": [GENDATE, None],
        },
        dtype=object,
    )
    with export(tmp_path) as ex:
        ex.write(big.iloc[3:6])  # Arrow arrays with a non-zero offset
        ex.write(big.iloc[[0]])
        ex.write(legacy)
    [path] = tmp_path.iterdir()
    assert read_rows(path)[1:] == [
        ["c3", "P3", "https://d2c.skycore.com/wallet/gc/abc?pass-id=Pc3", GENDATE],
        ["c4", "P4", "https://d2c.skycore.com/wallet/gc/abc?pass-id=Pc4", GENDATE],
        ["c5", "P5", "https://d2c.skycore.com/wallet/gc/abc?pass-id=Pc5", GENDATE],
        ["c0", "a,b", "https://d2c.skycore.com/wallet/gc/abc?pass-id=Pc0", GENDATE],
        ["101", "x", "'=1", GENDATE],
        ["102", "", "l", ""],
    ]


@settings(max_examples=40, deadline=None)
@given(values=st.lists(st.text(alphabet=st.characters(exclude_categories=("Cs",))), min_size=1, max_size=20))
def test_round_trip_property(values: list[str]) -> None:
    with tempfile.TemporaryDirectory() as d:
        with export(Path(d)) as ex:
            ex.write(frame(ids(0, len(values)), pass_link=values))
        [path] = Path(d).iterdir()
        got = [r[2] for r in read_rows(path)[1:]]
    assert got == [reference_neutralise(v) for v in values]


# -- formula neutralisation ----------------------------------------------------------------------


def reference_neutralise(v: str) -> str:
    """Plain-Python statement of the rule, to check the vectorised one against."""
    if v[:1] in ("=", "+", "-", "@", "\t", "\r") and not re.fullmatch(r"[+-]?[0-9]+(\.[0-9]+)?", v):
        return "'" + v
    return v


@pytest.mark.parametrize(
    ("value", "expected"),
    [
        ("=SUM(A1:A9)", "'=SUM(A1:A9)"),
        ('=HYPERLINK("http://evil","x")', '\'=HYPERLINK("http://evil","x")'),
        ("+cmd|' /C calc'!A0", "'+cmd|' /C calc'!A0"),
        ("-2+3", "'-2+3"),
        ("@SUM(1)", "'@SUM(1)"),
        ("\t=1", "'\t=1"),
        ("\r=1", "'\r=1"),
        ("-", "'-"),
        ("+1 555 123 4567", "'+1 555 123 4567"),  # not a plain number: spaces
        ("+1\n", "'+1\n"),
        ("-.5", "'-.5"),
        ("+١٢٣", "'+١٢٣"),  # non-ASCII digits are not a plain number
        ("+15551234567", "+15551234567"),
        ("-12.5", "-12.5"),
        ("+0", "+0"),
        ("42", "42"),
        ("a=b", "a=b"),
        ("", ""),
        ("'=already", "'=already"),
    ],
)
def test_neutralise_cases(value: str, expected: str) -> None:
    assert neutralise_formulas(pd.Series([value], dtype="str")).tolist() == [expected]


def test_neutralise_keeps_missing_and_accepts_object_dtype() -> None:
    out = neutralise_formulas(pd.Series(["=1+1", None, "ok"], dtype=object))
    assert out.dtype == "str"
    assert out.iloc[0] == "'=1+1" and pd.isna(out.iloc[1]) and out.iloc[2] == "ok"


def test_neutralise_does_not_modify_input() -> None:
    s = pd.Series(["=x", "y"], dtype="str")
    neutralise_formulas(s)
    assert s.tolist() == ["=x", "y"]


@settings(max_examples=200, deadline=None)
@given(values=st.lists(st.text(alphabet=st.characters(exclude_categories=("Cs",)), max_size=6), max_size=30))
def test_neutralise_matches_reference(values: list[str]) -> None:
    got = neutralise_formulas(pd.Series(values, dtype="str")).tolist()
    assert got == [reference_neutralise(v) for v in values]


def test_formulas_neutralised_in_file(tmp_path: Path) -> None:
    with export(tmp_path, kind="bloomreach") as ex:
        ex.write(frame(["c0"], pass_link=["=IMPORTXML(1)"], email=["@evil"], phone=["+15551234567"]))
    [path] = tmp_path.iterdir()
    assert read_rows(path)[1] == ["c0", "'@evil", "+15551234567", "Pc0", "'=IMPORTXML(1)", GENDATE]


# -- one row per customer ------------------------------------------------------------------------


def test_duplicates_and_missing_ids_are_dropped(tmp_path: Path) -> None:
    with export(tmp_path, kind="bloomreach") as ex:
        ex.write(frame(["c0", "c1", "c0", None, ""], pass_id=["first", "x", "second", "y", "z"]))
        ex.write(frame(["c1", "c2"], pass_id=["again", "new"]))
    [path] = tmp_path.iterdir()
    assert [r[:2] for r in read_rows(path)[1:]] == [["c0", "first"], ["c1", "x"], ["c2", "new"]]
    assert (ex.rows_written, ex.duplicates_dropped, ex.missing_id_dropped) == (3, 2, 2)


def test_seen_hashes_across_many_runs() -> None:
    seen = exports._SeenHashes()
    values = pd.util.hash_array(pd.Series([f"x{i}" for i in range(5000)]).to_numpy(dtype=object))
    for start in range(0, 5000, 300):
        chunk = values[start : start + 300]
        assert not seen.contains(chunk).any()
        seen.add(chunk)
    assert seen.contains(values).all()
    assert len(seen._runs) <= 6  # merged, not one run per chunk


# -- splitting -----------------------------------------------------------------------------------


def test_split_at_max_rows_per_file(tmp_path: Path) -> None:
    with export(tmp_path, kind="bloomreach", max_rows_per_file=3) as ex:
        for start, stop in [(0, 2), (2, 7), (7, 8)]:
            ex.write(frame(ids(start, stop)))
    paths = ex_paths = sorted(tmp_path.iterdir())
    assert [re.sub(r".*-(part\d+\.csv)$", r"\1", p.name) for p in paths] == [
        "part0001.csv",
        "part0002.csv",
        "part0003.csv",
    ]
    files = [read_rows(p) for p in ex_paths]
    assert all(rows[0] == ["registered", *ATTRS] for rows in files)
    assert [len(rows) - 1 for rows in files] == [3, 3, 2]
    assert [r[0] for rows in files for r in rows[1:]] == ids(0, 8)


def test_exact_multiple_makes_no_empty_part(tmp_path: Path) -> None:
    with export(tmp_path, max_rows_per_file=3) as ex:
        ex.write(frame(ids(0, 6)))
    assert len(listing(tmp_path)) == 2


def test_single_file_has_no_part_suffix_and_commit_returns_paths(tmp_path: Path) -> None:
    ex = export(tmp_path, max_rows_per_file=3)
    ex.write(frame(ids(0, 3)))
    paths = ex.commit()
    assert paths == [tmp_path / f"{ex.base_name}.csv"]
    assert listing(tmp_path) == [paths[0].name]


def test_empty_export_is_header_only(tmp_path: Path) -> None:
    with export(tmp_path, kind="bloomreach"):
        pass
    [path] = tmp_path.iterdir()
    assert path.read_text(encoding="utf-8") == "registered," + ",".join(ATTRS) + "\n"


# -- atomicity -----------------------------------------------------------------------------------


def test_nothing_visible_before_commit(tmp_path: Path) -> None:
    ex = export(tmp_path)
    ex.write(frame(ids(0, 3)))
    assert all(name.startswith(".") and name.endswith(".csv.partial") for name in listing(tmp_path))
    ex.commit()
    assert not any(name.startswith(".") for name in listing(tmp_path))


def test_abort_leaves_nothing(tmp_path: Path) -> None:
    ex = export(tmp_path, max_rows_per_file=2)
    ex.write(frame(ids(0, 5)))
    ex.abort()
    ex.abort()  # idempotent
    assert listing(tmp_path) == []
    with pytest.raises(RuntimeError, match="aborted"):
        ex.write(frame(ids(5, 6)))


def test_exception_in_with_block_leaves_nothing(tmp_path: Path) -> None:
    class Boom(Exception):
        pass

    with pytest.raises(Boom), export(tmp_path, max_rows_per_file=2) as ex:
        ex.write(frame(ids(0, 3)))
        ex.write(frame(ids(3, 5)))
        raise Boom  # a crash after some chunks
    assert listing(tmp_path) == []


def test_background_write_error_surfaces_and_aborts(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    def disk_full(slices: object) -> None:
        raise OSError(28, "No space left on device")

    monkeypatch.setattr(exports, "_write_slices", disk_full)
    with pytest.raises(OSError, match="No space"), export(tmp_path) as ex:
        ex.write(frame(ids(0, 2)))
    assert listing(tmp_path) == []


def test_failed_rename_rolls_back_earlier_parts(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    real_replace = os.replace
    calls = []

    def flaky_replace(src: object, dst: object) -> None:
        calls.append(dst)
        if len(calls) == 2:
            raise OSError("rename failed")
        real_replace(src, dst)  # type: ignore[arg-type]

    ex = export(tmp_path, max_rows_per_file=2)
    ex.write(frame(ids(0, 5)))
    monkeypatch.setattr(exports.os, "replace", flaky_replace)
    with pytest.raises(OSError, match="rename failed"):
        ex.commit()
    assert listing(tmp_path) == []


def test_commit_refuses_to_overwrite(tmp_path: Path) -> None:
    ex = export(tmp_path)
    ex.write(frame(ids(0, 1)))
    existing = tmp_path / f"{ex.base_name}.csv"
    existing.write_text("someone else's file")
    with pytest.raises(PassflowError, match="overwrite"):
        ex.commit()
    assert listing(tmp_path) == [existing.name]
    assert existing.read_text() == "someone else's file"


def test_commit_twice_and_abort_after_commit(tmp_path: Path) -> None:
    ex = export(tmp_path)
    ex.write(frame(ids(0, 1)))
    [path] = ex.commit()
    ex.abort()  # no-op: committed files stay
    assert path.exists()
    with pytest.raises(RuntimeError, match="committed"):
        ex.commit()


def test_dropped_export_cleans_up(tmp_path: Path) -> None:
    ex = export(tmp_path)
    ex.write(frame(ids(0, 2)))
    del ex
    gc.collect()
    assert listing(tmp_path) == []


def test_killed_process_leaves_only_hidden_partials(tmp_path: Path) -> None:
    script = textwrap.dedent(
        f"""
        import os
        from pathlib import Path
        import pandas as pd
        from passflow.exports import AttributeExport
        ex = AttributeExport(kind="bloomreach", directory=Path({str(tmp_path)!r}), campaign="c",
                             provider="skycore", run_id="run", max_rows_per_file=2)
        ids = [f"c{{i}}" for i in range(5)]
        ex.write(pd.DataFrame({{"customer_id": ids, "pass_id": ids, "pass_link": ids,
                                "pass_gendate": ids}}, dtype="str"))
        ex._drain()
        os._exit(9)  # like SIGKILL: no finally, no atexit, no finalizers
        """
    )
    subprocess.run([sys.executable, "-c", script], check=False, timeout=60)
    names = listing(tmp_path)
    assert len(names) == 3
    assert all(n.startswith(".") and n.endswith(".csv.partial") for n in names)

    (tmp_path / "keep.csv").write_text("x")
    (tmp_path / ".notes.partial").write_text("x")
    assert cleanup_stale_partials(tmp_path) == []  # too fresh to be stale by default
    removed = cleanup_stale_partials(tmp_path, min_age_seconds=0)
    assert sorted(p.name for p in removed) == names
    assert listing(tmp_path) == [".notes.partial", "keep.csv"]


def test_cleanup_of_missing_directory(tmp_path: Path) -> None:
    assert cleanup_stale_partials(tmp_path / "nope", min_age_seconds=0) == []


# -- database upsert -----------------------------------------------------------------------------


@pytest.fixture(params=["sqlite", pytest.param("postgres", marks=pytest.mark.postgres)])
def db_url(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[str]:
    if request.param == "sqlite":
        yield f"sqlite:///{tmp_path / 'attrs.db'}"
    else:
        yield request.getfixturevalue("pg_url")


def table_rows(url: str, table: str) -> list[tuple[object, ...]]:
    engine = sa.create_engine(url)
    try:
        with engine.connect() as conn:
            return [tuple(r) for r in conn.execute(sa.text(f"select * from {table} order by customer_id"))]
    finally:
        engine.dispose()


def test_db_upsert_twice_keeps_latest(db_url: str) -> None:
    with DbAttributeExport(url=db_url, table="pass_attributes", provider="skycore") as db:
        db.write(frame(["c0", "c1"], pass_id=["old0", "old1"]))
        first = table_rows(db_url, "pass_attributes")
        db.write(frame(["c1", "c2", "c2", None], pass_id=["new1", "stale2", "new2", "x"]))
    rows = table_rows(db_url, "pass_attributes")
    assert [r[:4] for r in rows] == [
        ("c0", "old0", "https://d2c.skycore.com/wallet/gc/abc?pass-id=Pc0", GENDATE),
        ("c1", "new1", "https://d2c.skycore.com/wallet/gc/abc?pass-id=Pc1", GENDATE),
        ("c2", "new2", "https://d2c.skycore.com/wallet/gc/abc?pass-id=Pc2", GENDATE),
    ]
    assert rows[0][4] == first[0][4]  # untouched row keeps its timestamp
    assert rows[1][4] is not None and rows[1][4] != first[1][4]


def test_db_table_shared_by_two_providers(db_url: str) -> None:
    with DbAttributeExport(url=db_url, table="pass_attributes", provider="skycore") as db:
        db.write(frame(["c0"], pass_id=["sky"]))
    with DbAttributeExport(url=db_url, table="pass_attributes", provider="passmachine") as db:
        db.write(frame(["c0", "c1"], pass_id=["pm0", "pm1"]))
    engine = sa.create_engine(db_url)
    with engine.connect() as conn:
        got = conn.execute(
            sa.text(
                "select customer_id, skycore_pass_id, passmachine_pass_id from pass_attributes order by 1"
            )
        ).all()
    engine.dispose()
    assert [tuple(r) for r in got] == [("c0", "sky", "pm0"), ("c1", None, "pm1")]


def test_db_upsert_in_several_batches(db_url: str) -> None:
    n = 25_000  # more than one 10k batch inside the chunk's transaction
    with DbAttributeExport(url=db_url, table="big", provider="skycore") as db:
        db.write(frame(ids(0, n)))
        db.write(frame(ids(n - 10, n + 10), pass_id=["z"] * 20))
    engine = sa.create_engine(db_url)
    with engine.connect() as conn:
        count, updated = conn.execute(
            sa.text("select count(*), sum(case when skycore_pass_id = 'z' then 1 else 0 end) from big")
        ).one()
    engine.dispose()
    assert (count, updated) == (n + 10, 20)


def test_db_connection_error_hides_password() -> None:
    url = "postgresql+psycopg://passflow:s3cr3t-pw@127.0.0.1:1/nowhere"
    with pytest.raises(PassflowError) as info:
        DbAttributeExport(url=url, table="t", provider="skycore")
    message = str(info.value)
    assert "cannot connect" in message and "***" in message and "s3cr3t-pw" not in message
    assert info.value.__cause__ is None and info.value.__suppress_context__


def test_db_bad_url_and_unsupported_backend_hide_password() -> None:
    for url in ["this is not a url s3cr3t-pw", "mysql://u:s3cr3t-pw@db/x"]:
        with pytest.raises(PassflowError) as info:
            DbAttributeExport(url=url, table="t", provider="skycore")
        assert "s3cr3t-pw" not in str(info.value)


def test_cleanup_leaves_a_partial_another_process_is_writing(tmp_path: Path) -> None:
    """Shards of one campaign share an export folder: one shard's cleanup must not take the other's
    file from under it (it did, and the other shard's rename then failed)."""
    writer = subprocess.Popen(
        [sys.executable, "-c", textwrap.dedent(
            f"""
            import sys, time
            from pathlib import Path
            from passflow.exports.partials import open_partial
            f = open_partial(Path({str(tmp_path / ".busy.csv.partial")!r}))
            print("open", flush=True)
            sys.stdin.read()
            """
        )],
        stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True,
    )  # fmt: skip
    try:
        assert writer.stdout is not None and writer.stdout.readline().strip() == "open"
        (tmp_path / ".left.csv.partial").write_text("x")  # a killed run's leftover: nobody holds it
        removed = cleanup_stale_partials(tmp_path, min_age_seconds=0)
        assert [p.name for p in removed] == [".left.csv.partial"]
        assert (tmp_path / ".busy.csv.partial").exists()
    finally:
        writer.communicate("", timeout=30)
    assert [p.name for p in cleanup_stale_partials(tmp_path, min_age_seconds=0)] == [".busy.csv.partial"]
