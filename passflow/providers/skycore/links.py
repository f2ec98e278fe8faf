"""Skycore signed pass issuance links: build (vectorised over a chunk), parse and verify.

A link is ``{base}?{param}={value}&…&checksum={sha256}``. The seed (MoEngage <> Skycore) hashes the
link string built *before* ``&checksum=`` with the values concatenated raw. Skycore's own page for
the salted variant is not public, so the details are a :class:`LinkRecipe`:

* ``salt_position`` — ``append`` (``sha256(link + salt)``, the default) or ``prepend``;
* ``hex_case`` — ``lower`` (default) or ``upper`` hex digits;
* ``hash_input`` — ``raw`` (default: values as they are, like the seed) or ``encoded`` (the
  percent-encoded URL text exactly as emitted).

Whatever is hashed, the emitted URL is always properly percent-encoded, so an email with ``+`` or a
message with spaces and ``&`` survives a click. :func:`matching_recipes` checks one real link from
Skycore's "Get Link" preview against every recipe, so a user can find the one their account uses.
"""

from __future__ import annotations

import hashlib
import itertools
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any, Literal
from urllib.parse import quote, unquote

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.compute as pc

# Characters left as they are in query values: RFC 3986 unreserved plus "@", ":" and "/", which are
# legal in a query and keep emails readable. "+", "&", "=", "#", "%", space and anything non-ASCII
# are percent-encoded.
_SAFE = "@:/"
CHECKSUM_PARAM = "checksum"


@dataclass(frozen=True)
class LinkRecipe:
    """How the checksum is computed. Defaults reproduce the seed's recipe."""

    salt_position: Literal["append", "prepend"] = "append"
    hex_case: Literal["lower", "upper"] = "lower"
    hash_input: Literal["raw", "encoded"] = "raw"

    def describe(self) -> str:
        return f"salt_position={self.salt_position}, hex_case={self.hex_case}, hash_input={self.hash_input}"


def encode_value(value: str) -> str:
    """Percent-encode one query key or value (``%20`` for space, ``%2B`` for ``+``)."""
    return quote(value, safe=_SAFE)


def _checksum(text: str, salt: str | None, recipe: LinkRecipe) -> str:
    if salt:
        text = text + salt if recipe.salt_position == "append" else salt + text
    digest = hashlib.sha256(text.encode("utf-8")).hexdigest()
    return digest.upper() if recipe.hex_case == "upper" else digest


def signing_string(base: str, params: Sequence[tuple[str, str]], *, encoded: bool) -> str:
    """The text before ``&checksum=``: raw values (the seed) or percent-encoded ones."""
    enc = encode_value if encoded else (lambda v: v)
    return base + "?" + "&".join(f"{enc(k)}={enc(v)}" for k, v in params)


def build_link(
    base: str,
    params: Sequence[tuple[str, str]],
    *,
    salt: str | None = None,
    recipe: LinkRecipe = LinkRecipe(),
) -> str:
    """Build one signed link. The reference implementation; :func:`build_links` is the fast path."""
    signed = signing_string(base, params, encoded=recipe.hash_input == "encoded")
    url = signing_string(base, params, encoded=True)
    return f"{url}&{CHECKSUM_PARAM}={_checksum(signed, salt, recipe)}"


def _bytes_present(arr: pa.Array) -> np.ndarray:
    """Which byte values occur anywhere in a string array: one pass over its data buffer."""
    _, offsets, data = arr.buffers()
    if data is None:
        return np.zeros(256, dtype=bool)
    off = np.frombuffer(offsets, dtype=np.int64)
    raw = np.frombuffer(data, dtype=np.uint8)[off[arr.offset] : off[arr.offset + len(arr)]]
    return np.bincount(raw, minlength=256) > 0


# Bytes ``quote(safe=_SAFE)`` leaves alone; every other byte of a value's UTF-8 becomes %XX.
_KEEP_BYTES = np.zeros(256, dtype=bool)
_KEEP_BYTES[list(b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789_.~-" + _SAFE.encode())] = (
    True
)
_MAX_BYTE_PASSES = 16
_LS = pa.large_string()


def _large_strings(values: pd.Series) -> pa.Array:
    arr = pa.array(values, from_pandas=True)  # zero-copy for pandas' pyarrow-backed `str` dtype
    if isinstance(arr, pa.ChunkedArray):
        arr = arr.combine_chunks()
    return arr if arr.type == _LS else arr.cast(_LS)


def _encode_array(arr: pa.Array) -> pa.Array:
    """Percent-encode a column exactly like :func:`encode_value`, without a ``quote`` call per row.

    ``quote`` encodes each byte of the UTF-8 text that is not unreserved or safe as ``%XX``, so the
    same result comes from replacing those bytes one value at a time over the raw data ('%' first,
    so escapes added later are not re-escaped) — one vectorised pass per distinct byte present.
    Columns with many such bytes but few distinct values (a templated message) are encoded once
    per distinct value instead.
    """
    needs = np.flatnonzero(_bytes_present(arr) & ~_KEEP_BYTES)
    if needs.size == 0:
        return arr
    if needs.size > 2:
        codes = pc.dictionary_encode(arr)
        if len(codes.dictionary) * 8 <= len(arr):
            encoded = [encode_value(v) for v in codes.dictionary.to_pylist()]
            return pc.take(pa.array(encoded, type=_LS), codes.indices)
        if needs.size > _MAX_BYTE_PASSES:
            return pa.array([None if v is None else encode_value(v) for v in arr.to_pylist()], type=_LS)
    data = arr.cast(pa.large_binary())  # a view: replace single bytes, whatever character they are in
    for byte in sorted(needs.tolist(), key=lambda b: b != ord("%")):
        data = pc.replace_substring(data, bytes([byte]), b"%%%02X" % byte)
    return data.cast(_LS)  # ASCII now


def _join(
    base: str, keys: Sequence[str], values: Sequence[pa.Array], extra: pa.Scalar | None = None
) -> pa.Array:
    """``base?k1=v1&k2=v2…`` for a whole chunk in one element-wise join (``extra`` appended)."""
    parts: list[pa.Array | pa.Scalar] = []
    for i, (key, arr) in enumerate(zip(keys, values, strict=True)):
        parts.append(pa.scalar(f"{base}?{key}=" if i == 0 else f"&{key}=", _LS))
        parts.append(arr)
    if extra is not None:
        parts.append(extra)
    out = pc.binary_join_element_wise(*parts, pa.scalar("", _LS))
    return out.combine_chunks() if isinstance(out, pa.ChunkedArray) else out


def _sha256_hex(texts: pa.Array, *, prefix: bytes = b"", upper: bool = False) -> pa.Array:
    """Hex SHA-256 of each string (``prefix`` hashed first): one ``hashlib`` call per row straight
    off the Arrow buffer, hex-encoded in one go."""
    if texts.null_count:
        raise ValueError("cannot sign a link with a missing parameter value")
    n = len(texts)
    _, offsets, data = texts.buffers()
    off = np.frombuffer(offsets, dtype=np.int64)[texts.offset : texts.offset + n + 1].tolist()
    buf = memoryview(data if data is not None else b"")
    sha = hashlib.sha256
    if prefix:
        digests = [_prefixed(sha, prefix, buf[a:b]) for a, b in itertools.pairwise(off)]
    else:
        digests = [sha(buf[a:b]).digest() for a, b in itertools.pairwise(off)]
    hexed = b"".join(digests).hex()
    text = (hexed.upper() if upper else hexed).encode("ascii")
    offsets_out = pa.py_buffer(np.arange(0, 64 * (n + 1), 64, dtype=np.int64))
    return pa.LargeStringArray.from_buffers(n, offsets_out, pa.py_buffer(text))


def _prefixed(sha: Callable[[bytes], Any], prefix: bytes, text: memoryview) -> bytes:
    h = sha(prefix)
    h.update(text)
    return h.digest()


@dataclass
class SignedLinks:
    links: pd.Series
    checksums: pd.Series


def build_links(
    base: str,
    columns: Sequence[tuple[str, pd.Series]],
    *,
    salt: str | None = None,
    recipe: LinkRecipe = LinkRecipe(),
) -> SignedLinks:
    """Build signed links for a whole chunk: one string column per parameter, in link order.

    String building is vectorised (Arrow kernels); hashing is one tight ``hashlib`` call per row,
    which is the irreducible cost (~0.5 µs/row here).
    """
    if not columns:
        raise ValueError("a Skycore link needs at least one parameter")
    index = columns[0][1].index
    raw = [_large_strings(values) for _, values in columns]
    url = _join(base, [encode_value(k) for k, _ in columns], [_encode_array(a) for a in raw])
    salt_bytes = (salt or "").encode("utf-8")
    append = pa.scalar(salt or "", _LS) if salt_bytes and recipe.salt_position == "append" else None
    prefix = salt_bytes if salt_bytes and recipe.salt_position == "prepend" else b""
    if recipe.hash_input == "encoded":
        signed = url if append is None else pc.binary_join_element_wise(url, append, pa.scalar("", _LS))
    else:
        signed = _join(base, [k for k, _ in columns], raw, extra=append)
    checksums = _sha256_hex(signed, prefix=prefix, upper=recipe.hex_case == "upper")
    links = pc.binary_join_element_wise(
        url, pa.scalar(f"&{CHECKSUM_PARAM}=", _LS), checksums, pa.scalar("", _LS)
    )
    return SignedLinks(
        links=pd.Series(links, index=index, dtype="str"),
        checksums=pd.Series(checksums, index=index, dtype="str"),
    )


@dataclass(frozen=True)
class ParsedLink:
    base: str
    params: list[tuple[str, str]]  # decoded values, in link order, without the checksum
    checksum: str
    encoded_prefix: str  # the link text exactly as it appears before "&checksum="


def parse_link(url: str) -> ParsedLink:
    """Split a signed link into base, decoded parameters and checksum.

    Values are percent-decoded but ``+`` is kept as ``+`` (a raw seed-style link such as
    ``user-phone=+15551234567`` means a plus sign, not a space).
    """
    url = url.strip()
    marker = f"&{CHECKSUM_PARAM}="
    if "?" not in url:
        raise ValueError("not a Skycore issuance link: it has no '?' query part")
    cut = url.rfind(marker)
    if cut < 0:
        raise ValueError(f"not a signed link: no '&{CHECKSUM_PARAM}=' parameter at the end")
    prefix, checksum = url[:cut], url[cut + len(marker) :]
    if "&" in checksum or not checksum:
        raise ValueError(f"'{CHECKSUM_PARAM}' must be the last parameter and non-empty")
    base, _, query = prefix.partition("?")
    params = []
    for part in query.split("&"):
        key, sep, value = part.partition("=")
        if not sep:
            raise ValueError(f"parameter {unquote(key)!r} has no '=value'")
        params.append((unquote(key), unquote(value)))
    return ParsedLink(base=base, params=params, checksum=checksum, encoded_prefix=prefix)


def expected_checksum(parsed: ParsedLink, *, salt: str | None, recipe: LinkRecipe) -> str:
    if recipe.hash_input == "encoded":
        text = parsed.encoded_prefix
    else:
        text = signing_string(parsed.base, parsed.params, encoded=False)
    return _checksum(text, salt, recipe)


def verify_link(url: str, *, salt: str | None = None, recipe: LinkRecipe = LinkRecipe()) -> bool:
    """True when the link's checksum matches the recipe (and salt)."""
    try:
        parsed = parse_link(url)
    except ValueError:
        return False
    return parsed.checksum == expected_checksum(parsed, salt=salt, recipe=recipe)


def all_recipes(salted: bool) -> list[LinkRecipe]:
    positions: tuple[Literal["append", "prepend"], ...] = ("append", "prepend") if salted else ("append",)
    return [
        LinkRecipe(salt_position=p, hex_case=c, hash_input=h)
        for p, c, h in itertools.product(positions, ("lower", "upper"), ("raw", "encoded"))
    ]


def matching_recipes(url: str, *, salt: str | None = None) -> list[LinkRecipe]:
    """Every recipe under which ``url`` verifies — to pick settings from one real Skycore link."""
    parsed = parse_link(url)
    return [
        r
        for r in all_recipes(bool(salt))
        if parsed.checksum == expected_checksum(parsed, salt=salt, recipe=r)
    ]
