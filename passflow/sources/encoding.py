"""Which encoding a segment file was saved with — decided on a sample, never by silent guessing.

Order: a declared ``[source] encoding`` wins; then a BOM (UTF-8, UTF-16); then a sample that is
valid UTF-8; else the sample's non-ASCII lines are decoded with each Windows / ISO code page that
analysts' spreadsheets produce, and the reading that looks like text in one language wins
(charset-normalizer's mess ratio breaks ties). When readings differ and none wins, or the best one
still looks like noise, or it would put C1 control characters (U+0080–U+009F, what cp1252 text read
as latin-1 gives) into values, :class:`EncodingUndecided` stops the run before anything is issued,
naming the file, the encodings considered and the ``[source] encoding = "…"`` fix.

Why a sample: the 1M-row link run must not pay for a whole-file scan. Bytes past the sample that do
not decode, or decode to C1 characters, stop the reader later (still before anything is issued:
the whole segment is staged before the first send).
"""

from __future__ import annotations

import codecs
import re
import unicodedata
from dataclasses import dataclass
from pathlib import Path

from passflow.errors import SourceError

__all__ = [
    "CANDIDATES",
    "C1_PATTERN_RE2",
    "EncodingUndecided",
    "SourceEncoding",
    "has_c1",
    "resolve_encoding",
]

# Windows code pages first: on a tie between identical readings, the name reported is Excel's.
CANDIDATES = (
    "cp1252", "cp1250", "iso8859_2", "iso8859_16", "cp1251", "iso8859_5", "iso8859_15", "latin_1",
    "cp1253", "iso8859_7", "cp1254", "iso8859_9", "cp1257", "iso8859_13",
)  # fmt: skip
_HEAD, _SLICE, _SLICES = 256 << 10, 32 << 10, 8  # the sample: the head, slices spread over the rest
_MAX_NON_ASCII = 64 << 10  # bytes of non-ASCII lines the candidates are scored on
_MAX_MESS = 0.2  # charset-normalizer's mess ratio above which a reading is noise
_C1 = re.compile("[\x80-\x9f]")
_WORD = re.compile(r"[^\W\d_]+")
C1_PATTERN_RE2 = r"[\x{80}-\x{9f}]"  # the same class for pyarrow's RE2

# Letters (besides ASCII) of the languages passflow's customers write in; a reading whose letters
# fit one alphabet beats one that mixes alphabets (cp1250 read as ISO 8859-2 turns Polish ą into š).
_ALPHABETS = {
    "cs": "áčďéěíňóřšťúůýž",
    "sk": "áäčďéíĺľňóôŕšťúýž",
    "pl": "ąćęłńóśźż",
    "hu": "áéíóöőúüű",
    "ro": "ăâîșțşţ",
    "hr": "čćđšž",
    "sl": "čšž",
    "de": "äöüß",
    "fr": "àâæçéèêëîïôœùûüÿ",
    "nordic": "åäöæøéðþáíóúý",
    "es": "áéíóúñü",
    "pt": "áâãàçéêíóôõú",
    "it": "àèéìíòóù",
    "tr": "çğıöşüîâ",
    "lt": "ąčęėįšųūž",
    "lv": "āčēģīķļņšūž",
    "et": "äöõüšž",
    "el": "αβγδεζηθικλμνξοπρσςτυφχψωάέήίόύώϊϋΐΰ",
    "ru": "абвгдеёжзийклмнопрстуфхцчшщъыьэюя",
    "uk": "абвгґдеєжзиіїйклмнопрстуфхцчшщьюя",
}


@dataclass(frozen=True)
class SourceEncoding:
    """How a file is read: ``encoding`` (a Python codec name) and how it was decided."""

    encoding: str
    how: str  # "declared", "bom", "utf-8" or "detected"
    considered: tuple[str, ...] = ()


class EncodingUndecided(SourceError):
    """The file's encoding cannot be told for sure: the run stops with the fix."""


def has_c1(text: str) -> bool:
    return _C1.search(text) is not None


def undecided(
    path: Path, why: str, considered: tuple[str, ...], suggest: str | None = None
) -> EncodingUndecided:
    fix = f'[source] encoding = "{suggest}"' if suggest else '[source] encoding = "…"'
    return EncodingUndecided(
        f"{path}: cannot tell the file's encoding for sure: {why}. Encodings considered: "
        f"{', '.join(considered) or 'utf-8'}. Nothing was issued. Set the encoding the file was saved with "
        f"in the campaign file, e.g. {fix} (or re-export the file as CSV UTF-8)"
    )


def resolve_encoding(path: Path, declared: str = "auto") -> SourceEncoding:
    """The encoding to read ``path`` with (see the module docstring). Raises SourceError."""
    if declared != "auto":
        try:
            codecs.lookup(declared)
        except LookupError:
            raise SourceError(
                f"unknown CSV encoding {declared!r} (use 'auto', 'utf-8', 'cp1250', 'cp1252', ...)"
            ) from None
        return SourceEncoding(declared, "declared")
    sample, whole = _sample(path)
    if sample.startswith(codecs.BOM_UTF8):
        return SourceEncoding("utf-8-sig", "bom")
    if sample.startswith((codecs.BOM_UTF16_LE, codecs.BOM_UTF16_BE)):
        return SourceEncoding("utf-16", "bom")  # Excel's "Unicode text" export
    return SourceEncoding(*_detect(path, sample, whole))


def _sample(path: Path) -> tuple[bytes, bool]:
    """(sample bytes, whether it is the whole file); slices start at a line start."""
    try:
        with path.open("rb") as f:
            head = f.read(_HEAD)
            size = f.seek(0, 2)
            if size <= _HEAD + _SLICE * _SLICES:
                f.seek(0)
                return f.read(), True
            parts = [head[: head.rfind(b"\n") + 1] or head]
            step = (size - _HEAD) // _SLICES
            for i in range(_SLICES):
                last = i == _SLICES - 1  # the last slice is the file's tail
                f.seek(size - _SLICE if last else _HEAD + i * step)
                block = f.read(_SLICE)
                start = block.find(b"\n") + 1
                end = len(block) if last else block.rfind(b"\n") + 1
                if 0 < start < end:
                    parts.append(block[start:end])
            return b"".join(parts), False
    except OSError as exc:
        raise SourceError(f"{path}: cannot read segment file: {exc.strerror or exc}") from None


def _detect(path: Path, sample: bytes, whole: bool) -> tuple[str, str, tuple[str, ...]]:
    decoder = codecs.getincrementaldecoder("utf-8")()
    try:
        text = decoder.decode(sample, final=whole)
    except UnicodeDecodeError:
        text = None
    if text is not None:
        if has_c1(text):
            raise undecided(path, "it is UTF-8 but holds C1 control characters (U+0080–U+009F): text that was "
                            "already mis-decoded once", ("utf-8",))  # fmt: skip
        return "utf-8", "utf-8", ("utf-8",)
    lines = _non_ascii_lines(sample)
    if _looks_mixed(lines):
        raise undecided(
            path, "most of it is UTF-8 but some bytes are not (a mixed or damaged file)", ("utf-8",), "utf-8"
        )
    readings: dict[str, list[str]] = {}
    for enc in CANDIDATES:
        try:
            decoded = lines.decode(enc)
        except UnicodeDecodeError:
            continue  # a byte this code page leaves undefined
        if has_c1(decoded):
            continue  # cp125x text read as ISO 8859: C1 controls instead of letters
        readings.setdefault(decoded, []).append(enc)
    considered = ("utf-8", *CANDIDATES)
    if not readings:
        raise undecided(path, "no Windows or ISO code page reads it without undefined bytes or C1 control "
                        "characters", considered)  # fmt: skip
    scored = sorted((_score(text), encs[0], encs) for text, encs in readings.items())
    best_score, best, _ = scored[0]
    if best_score[1] > _MAX_MESS or best_score[2]:  # noise, or words mixing Latin and Cyrillic/Greek
        raise undecided(path, f"the best reading ({best}) still looks like noise", considered)
    if len(scored) > 1 and scored[1][0] == best_score:
        tied = [s[1] for s in scored if s[0] == best_score]
        raise undecided(
            path,
            f"the sample reads as plausible but different text in {' and '.join(tied)}",
            tuple(tied),
            tied[0],
        )
    return best, "detected", considered


def _non_ascii_lines(sample: bytes) -> bytes:
    out, size = [], 0
    for line in sample.splitlines(keepends=True):
        if not line.isascii():
            out.append(line)
            size += len(line)
            if size >= _MAX_NON_ASCII:
                break
    return b"".join(out)


def _looks_mixed(lines: bytes) -> bool:
    """UTF-8 multi-byte characters at least as often as bytes that are not UTF-8."""
    text = lines.decode("utf-8", errors="surrogateescape")
    bad = sum(1 for ch in text if "\udc80" <= ch <= "\udcff")
    good = sum(1 for ch in text if ord(ch) > 0x7F) - bad
    return good > 0 and good >= bad


def _score(text: str) -> tuple[int, float, int]:
    """(non-ASCII letters outside the best-fitting alphabet + non-letters between letters + words
    mixing scripts, mess)."""
    from charset_normalizer.md import mess_ratio

    letters = {ch for ch in text.lower() if ord(ch) > 0x7F and ch.isalpha()}
    misfit = min(len(letters - set(alphabet)) for alphabet in _ALPHABETS.values())
    odd = sum(
        1
        for i in range(1, len(text) - 1)
        if ord(text[i]) > 0x7F
        and not text[i].isalpha()
        and text[i - 1].isalpha()
        and text[i + 1].isalpha()
        and unicodedata.category(text[i]) != "Pd"
    )
    mixed = 0
    for word in _WORD.findall(text):
        if not word.isascii():
            scripts = {unicodedata.name(ch, "?").split()[0] for ch in word if ch.isalpha()}
            mixed += len(scripts) > 1
    return misfit + odd + 2 * mixed, round(mess_ratio(text), 3), mixed
