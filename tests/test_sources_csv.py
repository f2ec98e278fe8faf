"""CSV segment source: encodings, delimiters, quoting, row numbers, malformed rows, errors, chunking.

Every test writes a real file (bytes, so the encoding under test is exact) and reads it back.
"""

from __future__ import annotations

import csv
import gc
import tracemalloc
from pathlib import Path

import pandas as pd
import pytest

from passflow.errors import SourceError
from passflow.sources import CsvDialect, MalformedRow, detect_csv_dialect, read_csv_chunks

DATA = Path(__file__).parent / "data" / "csv"


def write(tmp_path: Path, content: str | bytes, name: str = "segment.csv", encoding: str = "utf-8") -> Path:
    path = tmp_path / name
    path.write_bytes(content if isinstance(content, bytes) else content.encode(encoding))
    return path


def read_all(path: Path, **kwargs) -> pd.DataFrame:
    chunks = list(read_csv_chunks(path, **kwargs))
    assert chunks, "expected at least one chunk"
    return pd.concat(chunks, ignore_index=True)


def records(df: pd.DataFrame) -> list[dict]:
    return df.to_dict("records")


def assert_chunk_convention(df: pd.DataFrame) -> None:
    assert df.columns[-1] == "__row__"
    assert df["__row__"].dtype == "int64"
    for name in df.columns[:-1]:
        assert df[name].dtype == "str", name
        assert not df[name].isna().any(), name


# --------------------------------------------------------------------------------------- encodings


def test_utf8_with_bom_strips_bom_from_header(tmp_path: Path) -> None:
    path = write(tmp_path, b"\xef\xbb\xbfemail,name\r\na@example.com,Zo\xc3\xab\r\n")
    assert detect_csv_dialect(path) == CsvDialect(encoding="utf-8-sig", delimiter=",")
    df = read_all(path)
    assert list(df.columns) == ["email", "name", "__row__"]
    assert records(df) == [{"email": "a@example.com", "name": "Zoë", "__row__": 2}]
    assert_chunk_convention(df)


def test_bom_is_stripped_even_with_explicit_utf8(tmp_path: Path) -> None:
    path = write(tmp_path, "\ufeffemail,name\na@example.com,x\n")
    df = read_all(path, encoding="utf-8")
    assert list(df.columns) == ["email", "name", "__row__"]


def test_utf8_without_bom(tmp_path: Path) -> None:
    path = write(tmp_path, "email,name\na@example.com,René €\n")
    assert detect_csv_dialect(path).encoding == "utf-8"
    assert read_all(path)["name"].tolist() == ["René €"]


def test_cp1252_euro_and_accents(tmp_path: Path) -> None:
    path = write(tmp_path, "email,name,credit\na@example.com,René,5 €\n", encoding="cp1252")
    assert path.read_bytes().count(b"\x80") == 1  # really cp1252: € is 0x80
    assert detect_csv_dialect(path).encoding == "cp1252"
    df = read_all(path)
    assert records(df) == [{"email": "a@example.com", "name": "René", "credit": "5 €", "__row__": 2}]


def test_bytes_undefined_in_cp1252_stop_instead_of_latin1_c1(tmp_path: Path) -> None:
    # 0x81 has no cp1252 mapping; latin-1 would map it to a C1 control, cp1251 to a Cyrillic letter
    # inside a Latin word: no reading is text, so the run stops with the fix (never silent mojibake).
    path = write(tmp_path, b"email,name\na@example.com,Ren\xe9\x81\n")
    with pytest.raises(SourceError, match=r'segment\.csv.*cp1252.*\[source\] encoding = "'):
        detect_csv_dialect(path)
    assert read_all(path, encoding="latin-1")["name"].tolist() == ["René\x81"]  # declared wins


def test_invalid_utf8_late_in_a_large_file_is_detected(tmp_path: Path) -> None:
    # The whole file is checked, not just a prefix: the only non-UTF-8 byte sits past the first block.
    lines = (
        [b"email,name"]
        + [b"u%d@example.com,Zo\xc3\xab" % i for i in range(70_000)]
        + [b"last@example.com,Ren\xe9"]
    )
    path = write(tmp_path, b"\n".join(lines) + b"\n")
    assert path.stat().st_size > 1 << 20
    # The sample takes the file's tail too: a mixed file stops the run (it used to read as cp1252,
    # turning every "ë" into "Ã«").
    with pytest.raises(SourceError, match=r"mixed or damaged.*\[source\] encoding"):
        detect_csv_dialect(path)


def test_invalid_utf8_outside_the_sample_stops_the_reader(tmp_path: Path) -> None:
    lines = [b"email,name"] + [b"u%d@example.com,Zo\xc3\xab" % i for i in range(70_000)]
    lines[40_000] = b"mid@example.com,Ren\xe9"  # between the sample's slices
    path = write(tmp_path, b"\n".join(lines) + b"\n")
    assert detect_csv_dialect(path).encoding == "utf-8"
    with pytest.raises(SourceError, match=r"cannot decode the file as utf-8.*\[source\] encoding"):
        read_all(path)


def test_utf16_with_bom_from_excel_unicode_text(tmp_path: Path) -> None:
    path = write(tmp_path, "email\tname\r\na@example.com\tZoë\r\n".encode("utf-16"))
    assert detect_csv_dialect(path) == CsvDialect(encoding="utf-16", delimiter="\t")
    assert records(read_all(path)) == [{"email": "a@example.com", "name": "Zoë", "__row__": 2}]


def test_explicit_wrong_encoding_raises_source_error(tmp_path: Path) -> None:
    path = write(tmp_path, "email,name\na@example.com,René\n", encoding="cp1252")
    with pytest.raises(SourceError, match=r"segment\.csv.*utf-8"):
        list(read_csv_chunks(path, encoding="utf-8"))


def test_unknown_encoding_name_is_an_error(tmp_path: Path) -> None:
    path = write(tmp_path, "email\na@example.com\n")
    with pytest.raises(SourceError, match="unknown CSV encoding"):
        read_csv_chunks(path, encoding="utf-9")


# -------------------------------------------------------------------------------------- delimiters


@pytest.mark.parametrize(
    ("content", "expected"),
    [
        ("email;name;tier\na@example.com;Ann;gold\n", ";"),
        ("email\tname\ttier\na@example.com\tAnn\tgold\n", "\t"),
        ("email,name,tier\na@example.com,Ann,gold\n", ","),
        ('"email, primary";name;tier\na@example.com;Ann;gold\n', ";"),  # comma inside quotes ignored
        ("email\na@example.com\n", ","),  # one column: no delimiter to find
    ],
)
def test_delimiter_detected_from_header(tmp_path: Path, content: str, expected: str) -> None:
    path = write(tmp_path, content)
    assert detect_csv_dialect(path).delimiter == expected
    df = read_all(path)
    assert df.iloc[0, 0] == "a@example.com"


def test_semicolon_file_with_commas_in_values(tmp_path: Path) -> None:
    path = write(tmp_path, "email;amount\na@example.com;12,50\n")
    assert records(read_all(path)) == [{"email": "a@example.com", "amount": "12,50", "__row__": 2}]


@pytest.mark.parametrize("given", ["\t", "tab", "\\t"])
def test_explicit_tab_delimiter_and_aliases(tmp_path: Path, given: str) -> None:
    path = write(tmp_path, "email\tname\na@example.com\tA, B\n")
    assert detect_csv_dialect(path, delimiter=given).delimiter == "\t"
    assert read_all(path, delimiter=given)["name"].tolist() == ["A, B"]


def test_invalid_delimiter_is_an_error(tmp_path: Path) -> None:
    path = write(tmp_path, "email\na@example.com\n")
    with pytest.raises(SourceError, match="invalid CSV delimiter"):
        read_csv_chunks(path, delimiter=";;")


# ------------------------------------------------------------------------ quoting and row numbers


def test_quoted_newlines_and_doubled_quotes_keep_spreadsheet_row_numbers(tmp_path: Path) -> None:
    path = write(
        tmp_path,
        'id,note\n1,"line one\nline two\nline three"\n2,"he said ""hi"""\n3,plain\n',
    )
    df = read_all(path)
    assert records(df) == [
        {"id": "1", "note": "line one\nline two\nline three", "__row__": 2},
        {"id": "2", "note": 'he said "hi"', "__row__": 3},
        {"id": "3", "note": "plain", "__row__": 4},  # row 4 although it is physical line 6
    ]


def test_crlf_line_endings(tmp_path: Path) -> None:
    path = write(tmp_path, 'id,note\r\n1,"a\r\nb"\r\n2,c\r\n')
    df = read_all(path)
    assert records(df) == [
        {"id": "1", "note": "a\r\nb", "__row__": 2},  # embedded line break is data, kept as written
        {"id": "2", "note": "c", "__row__": 3},
    ]


def test_blank_lines_are_dropped_but_counted_as_rows(tmp_path: Path) -> None:
    path = write(tmp_path, "id,name\r\n1,a\r\n\r\n\r\n4,d\r\n,\r\n   \r\n7,g\r\n\r\n")
    df = read_all(path)
    assert df["id"].tolist() == ["1", "4", "7"]
    assert df["__row__"].tolist() == [2, 5, 8]


def test_leading_blank_lines_before_header(tmp_path: Path) -> None:
    path = write(tmp_path, "\n\nid,name\n1,a\n")
    df = read_all(path)
    assert records(df) == [{"id": "1", "name": "a", "__row__": 4}]


def test_header_names_are_stripped_and_values_kept_as_is(tmp_path: Path) -> None:
    path = write(tmp_path, " email , first name \n a@example.com ,Ann\n")
    df = read_all(path)
    assert list(df.columns) == ["email", "first name", "__row__"]
    assert df["email"].tolist() == [" a@example.com "]  # value cleanup is validation's job


# ----------------------------------------------------------------------- extra/missing/ragged rows


def test_extra_columns_are_kept_and_short_rows_padded(tmp_path: Path) -> None:
    path = write(
        tmp_path, "email,name,loyalty_tier,favourite_store\na@example.com,Ann\nb@example.com,Bob,gold,Köln\n"
    )
    df = read_all(path)
    assert list(df.columns) == ["email", "name", "loyalty_tier", "favourite_store", "__row__"]
    assert records(df)[0] == {
        "email": "a@example.com",
        "name": "Ann",
        "loyalty_tier": "",
        "favourite_store": "",
        "__row__": 2,
    }
    assert_chunk_convention(df)


def test_ragged_rows_are_reported_with_row_numbers_and_excluded(tmp_path: Path) -> None:
    path = write(
        tmp_path, 'email,name\na@example.com,Ann\nb@example.com,Bob,"Smith, Jr.",x\n\nc@example.com,Cy\n'
    )
    malformed: list[MalformedRow] = []
    df = read_all(path, malformed=malformed)
    assert df["__row__"].tolist() == [2, 5]
    assert malformed == [
        MalformedRow(row=3, reason="expected 2 fields, found 4", raw='b@example.com,Bob,"Smith, Jr.",x'),
    ]


def test_trailing_empty_fields_beyond_header_are_trimmed_not_reported(tmp_path: Path) -> None:
    # Spreadsheet exports often end every line with delimiters for columns that were once touched.
    path = write(tmp_path, "email;name;;;\na@example.com;Ann;;;\nb@example.com;Bob;;;;;\n")
    malformed: list[MalformedRow] = []
    df = read_all(path, malformed=malformed)
    assert list(df.columns) == ["email", "name", "__row__"]
    assert df["name"].tolist() == ["Ann", "Bob"]
    assert malformed == []


def test_ragged_row_without_malformed_list_raises(tmp_path: Path) -> None:
    path = write(tmp_path, "email,name\na@example.com,Ann,extra\n")
    with pytest.raises(SourceError, match=r"segment\.csv: row 2: expected 2 fields, found 3"):
        list(read_csv_chunks(path))


def test_raw_text_of_malformed_row_is_truncated(tmp_path: Path) -> None:
    path = write(tmp_path, "a,b\n1,2," + "x" * 1000 + "\n")
    malformed: list[MalformedRow] = []
    assert list(read_csv_chunks(path, malformed=malformed)) == []
    assert malformed[0].row == 2
    assert 190 <= len(malformed[0].raw) <= 210


def test_nul_byte_row_is_reported_not_stripped(tmp_path: Path) -> None:
    path = write(tmp_path, b"email,name\na@example.com,Ann\nb@exa\x00mple.com,Bob\nc@example.com,Cy\n")
    malformed: list[MalformedRow] = []
    df = read_all(path, malformed=malformed)
    assert df["email"].tolist() == ["a@example.com", "c@example.com"]
    assert df["__row__"].tolist() == [2, 4]
    assert len(malformed) == 1
    assert malformed[0].row == 3
    assert "NUL" in malformed[0].reason
    assert malformed[0].raw == "b@exa\\x00mple.com,Bob"


def test_nul_bytes_in_header_mean_not_a_csv(tmp_path: Path) -> None:
    path = write(tmp_path, "email,name\na@example.com,Ann\n".encode("utf-16-le"))  # UTF-16 without BOM
    with pytest.raises(SourceError, match="NUL"):
        read_csv_chunks(path)


def test_unterminated_quote_is_reported_not_swallowed(tmp_path: Path) -> None:
    path = write(tmp_path, 'email,note\na@example.com,ok\nb@example.com,"never closed\nc@example.com,x\n')
    malformed: list[MalformedRow] = []
    df = read_all(path, malformed=malformed)
    assert df["email"].tolist() == ["a@example.com"]
    assert [(m.row, "unterminated" in m.reason) for m in malformed] == [(3, True)]


def test_garbage_after_closing_quote_is_reported_and_reading_continues(tmp_path: Path) -> None:
    path = write(tmp_path, 'email,note\na@example.com,"x"y\nb@example.com,ok\n')
    malformed: list[MalformedRow] = []
    df = read_all(path, malformed=malformed)
    assert records(df) == [{"email": "b@example.com", "note": "ok", "__row__": 3}]
    assert len(malformed) == 1
    assert malformed[0].row == 2
    assert malformed[0].raw == 'a@example.com,"x"y'


def test_realistic_cp1252_semicolon_export() -> None:
    path = DATA / "crm_export_cp1252_semicolon.csv"
    assert detect_csv_dialect(path) == CsvDialect(encoding="cp1252", delimiter=";")
    malformed: list[MalformedRow] = []
    df = read_all(path, malformed=malformed)
    assert_chunk_convention(df)
    assert df["Kundennummer"].tolist() == ["K001", "K002", "K003", "K005"]
    assert df["__row__"].tolist() == [2, 3, 5, 7]
    assert df["Vorname"].tolist() == ["René", "Zoë", "Anna", "José"]
    assert df["Guthaben"].tolist() == ["12,50 €", "0,00 €", "5 €", ""]
    assert df["Nachname"].tolist()[1] == "Dupont; Jr."
    assert df["Notiz"].tolist() == ["", "zweizeilige\r\nNotiz", 'sagt "hallo"', ""]
    assert [(m.row, m.reason) for m in malformed] == [(6, "expected 6 fields, found 7")]


# ------------------------------------------------------------------------------------------ errors


def test_missing_file(tmp_path: Path) -> None:
    with pytest.raises(SourceError, match=r"nope\.csv: segment file not found"):
        read_csv_chunks(tmp_path / "nope.csv")


def test_directory_instead_of_file(tmp_path: Path) -> None:
    with pytest.raises(SourceError, match="is a directory"):
        read_csv_chunks(tmp_path)


def test_empty_file(tmp_path: Path) -> None:
    path = write(tmp_path, b"", name="empty.csv")
    with pytest.raises(SourceError, match=r"empty\.csv: segment file is empty"):
        read_csv_chunks(path)


def test_only_blank_lines_has_no_header(tmp_path: Path) -> None:
    path = write(tmp_path, "\r\n\r\n\r\n", name="blank.csv")
    with pytest.raises(SourceError, match=r"blank\.csv: segment file has no header row"):
        read_csv_chunks(path)


def test_duplicate_header_names_are_named(tmp_path: Path) -> None:
    path = write(tmp_path, "email,name,Email,name ,phone\n", name="dupes.csv")
    with pytest.raises(
        SourceError, match=r"dupes\.csv: header has duplicate column name\(s\): 'name'"
    ) as info:
        read_csv_chunks(path)
    assert "'Email'" not in str(info.value)  # names are case-sensitive


def test_empty_header_name_between_columns(tmp_path: Path) -> None:
    path = write(tmp_path, "email,,name\n")
    with pytest.raises(SourceError, match=r"empty column name\(s\) at position\(s\) 2"):
        read_csv_chunks(path)


def test_reserved_row_column_name(tmp_path: Path) -> None:
    path = write(tmp_path, "email,__row__\n")
    with pytest.raises(SourceError, match="reserved"):
        read_csv_chunks(path)


@pytest.mark.parametrize("content", ["email,name\n", "email,name", "email,name\r\n\r\n\r\n"])
def test_header_only_yields_nothing(tmp_path: Path, content: str) -> None:
    path = write(tmp_path, content)
    malformed: list[MalformedRow] = []
    assert list(read_csv_chunks(path, malformed=malformed)) == []
    assert malformed == []


def test_chunk_size_must_be_positive(tmp_path: Path) -> None:
    with pytest.raises(ValueError, match="chunk_size"):
        read_csv_chunks(write(tmp_path, "a\n1\n"), chunk_size=0)


# ---------------------------------------------------------------------------------------- chunking


def test_chunking_across_boundaries_matches_one_chunk(tmp_path: Path) -> None:
    content = 'id,note\n1,a\n2,"multi\nline"\n\n4,d,ragged\n5,e\n,\n7,g\n8,h\n9,i\n'
    path = write(tmp_path, content)
    whole_malformed: list[MalformedRow] = []
    whole = list(read_csv_chunks(path, malformed=whole_malformed))
    assert len(whole) == 1
    small_malformed: list[MalformedRow] = []
    small = list(read_csv_chunks(path, chunk_size=2, malformed=small_malformed))
    assert [len(c) for c in small] == [2, 2, 2]
    assert all(c.index.tolist() == list(range(len(c))) for c in small)
    pd.testing.assert_frame_equal(pd.concat(small, ignore_index=True), whole[0])
    assert whole[0]["__row__"].tolist() == [2, 3, 6, 8, 9, 10]
    assert small_malformed == whole_malformed == [MalformedRow(5, "expected 2 fields, found 3", "4,d,ragged")]


def test_exact_multiple_of_chunk_size_has_no_empty_chunk(tmp_path: Path) -> None:
    path = write(tmp_path, "id\n1\n2\n3\n4\n")
    assert [len(c) for c in read_csv_chunks(path, chunk_size=2)] == [2, 2]


def test_memory_does_not_grow_with_file_size(tmp_path: Path) -> None:
    def make(rows: int) -> Path:
        path = tmp_path / f"seg_{rows}.csv"
        with path.open("w", newline="", encoding="utf-8") as f:
            writer = csv.writer(f)
            writer.writerow(["customer_id", "email", "first_name", "tier"])
            writer.writerows([f"C{i:07d}", f"user{i}@example.com", "Zoë", "gold"] for i in range(rows))
        return path

    def peak(path: Path) -> int:
        gc.collect()
        tracemalloc.start()
        try:
            chunks = read_csv_chunks(path, encoding="utf-8", delimiter=",", chunk_size=1_000)
            rows = sum(len(chunk) for chunk in chunks)
            return tracemalloc.get_traced_memory()[1]
        finally:
            tracemalloc.stop()
            assert rows > 0

    # Explicit encoding: the "auto" scan reads fixed 1 MiB blocks, a floor that would hide the chunks.
    small, large = make(10_000), make(40_000)
    peak_small, peak_large = peak(small), peak(large)
    # 4x the rows must not need more memory: only one chunk is alive at a time (reading everything
    # into one chunk makes the large peak ~8x the small one).
    assert peak_large < peak_small * 2, (peak_small, peak_large)
    assert peak_large < large.stat().st_size / 2, (peak_large, large.stat().st_size)


# --- the plain fast path (Arrow's parser for blocks of one-record-per-line text) -----------------


def _plain_lines(start: int, count: int, eol: str = "\n") -> str:
    return "".join(f"C{i:07d},user{i}@example.com,Zoë Ann,gold{eol}" for i in range(start, start + count))


def _both_ways(path: Path, monkeypatch: pytest.MonkeyPatch, chunk_size: int):
    """(chunks, malformed) read with the fast path, then with the csv module only."""
    from passflow.sources import csv_source

    results = []
    for fast in (True, False):
        with monkeypatch.context() as m:
            if not fast:
                m.setattr(csv_source, "_plain_prefix_start", lambda *a: None)
            bad: list[MalformedRow] = []
            chunks = list(read_csv_chunks(path, chunk_size=chunk_size, malformed=bad))
            results.append((chunks, bad))
    return results


@pytest.mark.parametrize("eol", ["\n", "\r\n"])
def test_plain_prefix_then_edge_cases_matches_the_csv_module(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, eol: str
) -> None:
    # ~250 kB of plain lines (several fast blocks), then what the fast path must hand over: a blank
    # line, a whitespace-only record, a quoted field with a newline, a ragged row, trailing delimiters.
    text = (
        "customer_id,email,first_name,tier" + eol
        + _plain_lines(0, 6000, eol)
        + " , ,\t, " + eol
        + eol
        + '"C9000001","a@example.com","two' + eol + 'lines",gold' + eol
        + "C9000002,b@example.com,Bo,gold,EXTRA" + eol
        + "C9000003,c@example.com,Cy,gold,," + eol
        + _plain_lines(7000, 3000, eol)
    )  # fmt: skip
    path = write(tmp_path, text)
    (fast, fast_bad), (slow, slow_bad) = _both_ways(path, monkeypatch, chunk_size=4000)
    assert all(len(c) <= 4000 for c in fast)
    fast_all = pd.concat(fast, ignore_index=True)
    slow_all = pd.concat(slow, ignore_index=True)
    pd.testing.assert_frame_equal(fast_all, slow_all)
    assert fast_bad == slow_bad and [m.row for m in fast_bad] == [6005]
    assert len(fast_all) == 9002
    assert fast_all["__row__"].iloc[-1] == 1 + 6000 + 5 + 3000  # header, rows, 5 records of edge cases
    assert fast_all.loc[fast_all["customer_id"] == "C9000001", "first_name"].item() == "two" + eol + "lines"


def test_plain_file_is_read_by_the_fast_path_with_row_numbers(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    from passflow.sources import csv_source

    path = write(tmp_path, "\ufeffcustomer_id,email,first_name,tier\n" + _plain_lines(0, 20_000))
    calls: list[int] = []
    original = csv_source._record_chunks

    def spy(*args, **kwargs):
        calls.append(args[5])  # the byte offset the csv module starts at
        return original(*args, **kwargs)

    monkeypatch.setattr(csv_source, "_record_chunks", spy)
    chunks = list(read_csv_chunks(path, chunk_size=7000, malformed=[]))
    assert [len(c) for c in chunks] == [7000, 7000, 6000]
    assert calls == [path.stat().st_size]  # the csv module only saw the end of the file
    whole = pd.concat(chunks, ignore_index=True)
    assert whole["__row__"].tolist() == list(range(2, 20_002))
    assert list(whole.columns) == ["customer_id", "email", "first_name", "tier", "__row__"]
    assert whole["first_name"].iloc[0] == "Zoë Ann" and str(whole["email"].dtype) == "str"


def test_quoted_plain_file_matches_the_csv_module(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    # Quote-everything exports (pyarrow, many databases) take the fast path too; a stray quote, an
    # escaped quote and a quoted delimiter further on are handed to the csv module.
    rows = "".join(f'"C{i:07d}","user{i}@example.com","Zoë",""\n' for i in range(5000))
    tail = '"C9000001","a@example.com","x"y,""\n"C9000002","b@example.com","say ""hi""",""\n'
    tail += '"C9000003","c@example.com","Doe, J",""\n"C9000004","d@example.com","ok",""\n'
    path = write(tmp_path, '"customer_id","email","first_name","tier"\n' + rows + tail + rows)
    (fast, fast_bad), (slow, slow_bad) = _both_ways(path, monkeypatch, chunk_size=3000)
    pd.testing.assert_frame_equal(pd.concat(fast, ignore_index=True), pd.concat(slow, ignore_index=True))
    assert fast_bad == slow_bad and [m.row for m in fast_bad] == [5002]
    whole = pd.concat(fast, ignore_index=True)
    assert whole.loc[whole["customer_id"] == "C9000003", "first_name"].item() == "Doe, J"
    assert whole.loc[whole["customer_id"] == "C9000002", "first_name"].item() == 'say "hi"'


def test_plain_path_needs_utf8_and_a_one_byte_delimiter(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    # A two-byte delimiter and a cp1252 file go to the csv module; results are the same either way.
    path = write(tmp_path, "id§name\n" + "".join(f"C{i}§Zoë\n" for i in range(3000)))
    both = pd.concat(read_csv_chunks(path, delimiter="§", chunk_size=1000), ignore_index=True)
    assert both["name"].eq("Zoë").all() and both["__row__"].tolist() == list(range(2, 3002))
    text = "id;name\n" + "".join(f"C{i};Zoë\n" for i in range(3000))
    path = write(tmp_path, text, name="cp.csv", encoding="cp1252")
    chunks = list(read_csv_chunks(path, encoding="cp1252", delimiter=";", chunk_size=1000))
    assert [c["name"].iloc[0] for c in chunks] == ["Zoë"] * 3
    path = write(tmp_path, text, name="utf8.csv")
    upper = pd.concat(read_csv_chunks(path, encoding="UTF-8", delimiter=";", chunk_size=1000))
    assert upper["name"].eq("Zoë").all() and upper["__row__"].iloc[-1] == 3001
