"""Analysts' files in the encodings they really have: every value read exactly, or the run stopped
with the ``[source] encoding = "…"`` fix — never silent mojibake.

The corpus is generated here: names per language, saved as UTF-8, UTF-8 with BOM, UTF-16 and each
Windows / ISO code page that can hold them, with comma and semicolon delimiters.
"""

from __future__ import annotations

import codecs
from pathlib import Path

import pytest

from passflow.errors import SourceError
from passflow.sources import read_csv_chunks

NAMES = {
    "cs": ["Řehoř Šťastný", "Žofie Dvořáková", "Jiří Čermák", "Tomáš Kůžel", "Ludmila Ťapková"],
    "sk": ["Ľubomír Šťastný", "Ján Kováč", "Mária Ďurčová", "Ľudovít Štúr", "Dušan Čaplovič"],
    "pl": ["Łukasz Wąsowski", "Małgorzata Źrebiec", "Ścibor Jaźwiński", "Józef Gęślicki", "Żaneta Ćwik"],
    "hu": ["Erdős Pál", "Őri Árpád", "Szűts Éva", "Lőrinc Győző", "Ügyes Ödön"],
    "ro": ["Ştefan Ţăranu", "Ioana Mureşan", "Andrei Năstase", "Măriuca Băicoianu", "Ion Creangă"],
    "hr": ["Đuro Šimić", "Ivana Čačić", "Željko Ćosić", "Dražen Petrović", "Mirjana Đurđević"],
    "de": ["Jürgen Müller", "Käthe Größe", "Jörg Weiß", "Uwe Bäcker", "Änne Schön"],
    "fr": ["François Lefèvre", "Hélène Dupré", "Zoë Bénédicte", "Gaëlle Noël", "Jérôme Çelik"],
    "nordic": ["Søren Kierkegaard", "Åsa Öberg", "Bjørn Ærø", "Þórunn Guðmundsdóttir", "Päivi Häkkinen"],
    "tr": ["Şükrü Çağlar", "İsmail Güneş", "Ayşe Yıldız", "Gökhan Öztürk", "Iğdır Şahin"],
    "el": [
        "Γιώργος Παπαδόπουλος",
        "Ελένη Κωνσταντίνου",
        "Δημήτρης Οικονόμου",
        "Σοφία Αλεξίου",
        "Νίκος Βλάχος",
    ],
    "ru": ["Пётр Иванов", "Наталья Смирнова", "Сергей Кузнецов", "Юлия Фёдорова", "Эдуард Щукин"],
    "uk": ["Олена Шевченко", "Ігор Їжак", "Євген Ґудзь", "Марія Коваль", "Андрій Мельник"],
}
CODE_PAGES = {
    "cs": ["cp1250", "iso8859_2"],
    "sk": ["cp1250", "iso8859_2"],
    "pl": ["cp1250", "iso8859_2"],
    "hu": ["cp1250", "iso8859_2"],
    "ro": ["cp1250", "iso8859_16"],  # cp1250 has the cedilla forms ş ţ that Windows users type
    "hr": ["cp1250", "iso8859_2"],
    "de": ["cp1252", "latin_1", "iso8859_15"],
    "fr": ["cp1252", "latin_1", "iso8859_15"],
    "nordic": ["cp1252", "latin_1", "iso8859_15"],
    "tr": ["cp1254", "iso8859_9"],
    "el": ["cp1253", "iso8859_7"],
    "ru": ["cp1251", "iso8859_5"],
    "uk": ["cp1251", "iso8859_5"],
}
# Files genuinely ambiguous on their bytes: both readings are plausible text, so the run stops with
# the fix instead of guessing. (language, code page): why
AMBIGUOUS = {
    # Romanian: cp1250's ş ţ Ş Ţ (cedilla, 0xBA 0xFE 0xAA 0xDE) are ISO 8859-16's ș ț Ș Ț (comma
    # below) at the same bytes, and both are correct Romanian spellings: no reading of the bytes can
    # tell which was meant, so a Romanian file in either code page stops with the fix.
    ("ro", "cp1250"): "cedilla vs comma-below ş/ș ţ/ț at the same bytes",
    ("ro", "iso8859-16"): "cedilla vs comma-below ş/ș ţ/ț at the same bytes",
}


def corpus() -> list[tuple[str, str, str]]:
    cases = []
    for lang in NAMES:
        for enc in ["utf-8", "utf-8-sig", "utf-16", *CODE_PAGES[lang]]:
            for delim in (",", ";"):
                cases.append((lang, enc, delim))
    return cases


def write_file(path: Path, lang: str, enc: str, delim: str) -> list[str]:
    names = NAMES[lang]
    if enc == "iso8859_16":  # it has only the comma-below forms (the correct ones)
        names = [n.translate(str.maketrans("şţŞŢ", "șțȘȚ")) for n in names]
    if enc == "iso8859_5":  # it predates Ukrainian Ґ ґ
        names = [n.translate(str.maketrans("Ґґ", "Гг")) for n in names]
    lines = [delim.join(["customer_id", "name", "email"])]
    lines += [delim.join([f"C{i:04d}", name, f"u{i}@example.com"]) for i, name in enumerate(names)]
    text = "\r\n".join(lines) + "\r\n"
    try:
        data = text.encode(enc)
    except UnicodeEncodeError:
        pytest.skip(f"{lang} names do not fit {enc}")
    path.write_bytes(data)
    return names


@pytest.mark.parametrize(
    ("lang", "enc", "delim"), corpus(), ids=lambda v: {",": "comma", ";": "semicolon"}.get(v, v)
)
def test_every_value_read_exactly_or_the_run_stopped_with_the_fix(
    tmp_path: Path, lang: str, enc: str, delim: str
) -> None:
    path = tmp_path / f"{lang}-{enc}.csv"
    names = write_file(path, lang, enc, delim)
    try:
        chunks = list(read_csv_chunks(path, chunk_size=1000))
    except SourceError as exc:
        assert (lang, codecs.lookup(enc).name) in AMBIGUOUS, f"stopped on an unambiguous file: {exc}"
        assert str(path) in str(exc) and '[source] encoding = "' in str(exc)
        return
    assert (lang, codecs.lookup(enc).name) not in AMBIGUOUS, "an ambiguous file was read without stopping"
    [df] = chunks
    assert df["name"].tolist() == names
    assert df["email"].tolist() == [f"u{i}@example.com" for i in range(len(names))]


@pytest.mark.parametrize(("lang", "enc"), [(lang, e) for lang, pages in CODE_PAGES.items() for e in pages])
def test_declared_encoding_wins(tmp_path: Path, lang: str, enc: str) -> None:
    path = tmp_path / "segment.csv"
    names = write_file(path, lang, enc, ";")
    [df] = list(read_csv_chunks(path, encoding=enc))
    assert df["name"].tolist() == names


def test_the_issue_example_cp1250_czech_excel_export(tmp_path: Path) -> None:
    path = tmp_path / "excel.csv"
    path.write_bytes("id;jméno\r\n1;Řehoř Šťastný\r\n2;Žofie\r\n".encode("cp1250"))
    [df] = list(read_csv_chunks(path))
    assert df["jméno"].tolist() == ["Řehoř Šťastný", "Žofie"]  # not "Øehoø \x8a\x9dastný"
