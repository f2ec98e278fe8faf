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
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Literal
from urllib.parse import quote, unquote

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.compute as pc

# Characters left as they are in query values: RFC 3986 unreserved plus "@", ":" and "/", which are
# legal in a query and keep emails readable. "+", "&", "=", "#", "%", space and anything non-ASCII
# are percent-encoded.
_SAFE = "@:/"
_NEEDS_QUOTING = r"[^A-Za-z0-9_.~\-@:/]"
# Printable ASCII that ``quote(safe=_SAFE)`` escapes; '%' must come first.
_RESERVED_ASCII = "%" + "".join(
    c for c in map(chr, range(0x20, 0x7F)) if c != "%" and not (c.isalnum() or c in "_.~-" + _SAFE)
)
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
    base: str, params: Sequence[tuple[str, str]], *, salt: str | None = None, recipe: LinkRecipe = LinkRecipe()
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


def _encode_series(values: pd.Series) -> pd.Series:
    """Percent-encode a column without a per-row ``quote`` call where it can be avoided.

    Printable-ASCII values (phones with '+', messages with spaces) are encoded with one vectorised
    replace per reserved character present; only values with other characters (non-ASCII, control)
    go through ``quote``, once per distinct value.
    """
    needs = values.str.contains(_NEEDS_QUOTING, regex=True)
    if not needs.any():
        return values
    out = values.copy()
    todo = values[needs]
    ascii_ok = todo.str.fullmatch(r"[\x20-\x7e]*")
    simple = todo[ascii_ok]
    if len(simple):
        arr = pa.array(simple, type=pa.large_string())
        present = _bytes_present(arr)
        for ch in _RESERVED_ASCII:  # '%' first, so escapes added later are not re-escaped
            if present[ord(ch)]:
                arr = pc.replace_substring(arr, ch, f"%{ord(ch):02X}")
        out.loc[simple.index] = pd.Series(arr, dtype="str", index=simple.index)
    other = todo[~ascii_ok]
    if len(other):
        codes, uniques = pd.factorize(other)
        encoded = pd.Series([encode_value(u) for u in uniques], dtype="str")
        out.loc[other.index] = encoded.take(codes).to_numpy()
    return out


def _join(base: str, columns: Sequence[tuple[str, pd.Series]], encoded: bool) -> pd.Series:
    """Vectorised ``base?k1=v1&k2=v2…`` over a chunk (pyarrow-backed string concatenation)."""
    text: pd.Series | None = None
    for i, (key, values) in enumerate(columns):
        k = encode_value(key) if encoded else key
        prefix = f"{base}?{k}=" if i == 0 else f"&{k}="
        v = _encode_series(values) if encoded else values
        text = (prefix + v) if text is None else (text + prefix + v)
    assert text is not None, "a link needs at least one parameter"
    return text


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

    String building is vectorised; hashing is one tight ``hashlib`` call per row, which is the
    irreducible cost (~0.5 µs/row here).
    """
    if not columns:
        raise ValueError("a Skycore link needs at least one parameter")
    url = _join(base, columns, encoded=True)
    signed = url if recipe.hash_input == "encoded" else _join(base, columns, encoded=False)
    salt_bytes = (salt or "").encode("utf-8")
    upper = recipe.hex_case == "upper"
    sha = hashlib.sha256
    texts = signed.tolist()
    if not salt_bytes:
        sums = [sha(t.encode("utf-8")).hexdigest() for t in texts]
    elif recipe.salt_position == "append":
        sums = [sha(t.encode("utf-8") + salt_bytes).hexdigest() for t in texts]
    else:
        sums = [sha(salt_bytes + t.encode("utf-8")).hexdigest() for t in texts]
    checksums = pd.Series(sums, index=url.index, dtype="str")
    if upper:
        checksums = checksums.str.upper()
    return SignedLinks(links=url + f"&{CHECKSUM_PARAM}=" + checksums, checksums=checksums)


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
