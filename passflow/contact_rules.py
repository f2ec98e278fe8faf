"""Vectorised contact checks built from the libraries' own metadata, so they agree with them.

The fast path may only *accept* what ``phonenumbers.is_valid_number`` / ``email_validator`` accept
(with the same normalised value); anything it does not accept goes to the library, once per
distinct value. So the result is the library's, value by value (tests/test_validation_agreement.py),
at vectorised speed for the common case.

Phones: ``+<country code><national number>`` is checked per country calling code with the
patterns and possible lengths of phonenumbers' metadata, the way ``_number_type_helper`` and the
region choice of ``region_code_for_number`` do (general description, then any number type).
Numbers the library would parse differently (a national prefix it might strip, non-geographic
codes, patterns RE2 cannot take) are left to the library.

Emails: the dot-atom / LDH syntax plus email_validator's length limits, with its special-use
domains (``email_validator.SPECIAL_USE_DOMAIN_NAMES``; ``.test`` allowed by
``[validation] allow_test_domains``, its ``test_environment``) and anything unusual (punycode, ``--``
at a label's 3rd/4th place, non-ASCII) left to the library.
"""

from __future__ import annotations

import functools
from dataclasses import dataclass

import email_validator
import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
from phonenumbers import COUNTRY_CODE_TO_REGION_CODE, PhoneMetadata

_TYPES = (
    "premium_rate", "toll_free", "shared_cost", "voip", "personal_number", "pager", "uan", "voicemail",
    "fixed_line", "mobile",
)  # fmt: skip
_NON_GEO = "001"

EMAIL_FAST = (
    r"^[A-Za-z0-9!#$%&'*+/=?^_`{|}~-]{1,64}(?:\.[A-Za-z0-9!#$%&'*+/=?^_`{|}~-]+)*"
    r"@(?:[A-Za-z0-9](?:[A-Za-z0-9-]{0,61}[A-Za-z0-9])?\.)+[A-Za-z]{2,63}$"
)
_EMAIL_UNUSUAL = r"(?:^|[@.])[^.@]{2}--"  # xn-- and other "ab--" labels: the library decides


def special_use_domains(allow_test_domains: bool) -> list[str]:
    """email_validator's special-use domains, as its ``test_environment`` applies them."""
    return [d for d in email_validator.SPECIAL_USE_DOMAIN_NAMES if not (allow_test_domains and d == "test")]


def email_fast_ok(arr: pa.Array, allow_test_domains: bool) -> np.ndarray:
    """Values the fast path accepts (trimmed ASCII addresses the library accepts as they are)."""
    ok = pc.match_substring_regex(arr, EMAIL_FAST)
    ok = pc.and_(ok, pc.less_equal(pc.utf8_length(arr), 254))
    at = pc.find_substring(arr, "@")
    ok = pc.and_(ok, pc.less_equal(pc.utf8_length(pc.utf8_slice_codeunits(arr, 0, 65)), 64))
    ok = pc.and_(ok, pc.less_equal(at, 64))
    ok = pc.and_(ok, pc.invert(pc.match_substring_regex(arr, _EMAIL_UNUSUAL)))
    special = "|".join(d.replace(".", r"\.") for d in special_use_domains(allow_test_domains))
    if special:
        ok = pc.and_(ok, pc.invert(pc.match_substring_regex(arr, rf"[@.](?:{special})$", ignore_case=True)))
    return ok.to_numpy(zero_copy_only=False)


@dataclass(frozen=True)
class _Desc:
    pattern: str  # RE2, anchored
    lengths: tuple[int, ...]


@dataclass(frozen=True)
class _Region:
    general: _Desc
    types: tuple[_Desc, ...]
    leading_digits: str | None


@dataclass(frozen=True)
class _CountryRules:
    regions: tuple[_Region, ...]
    national_prefix_for_parsing: str | None


def _desc(d: object) -> _Desc | None:
    if d is None or getattr(d, "national_number_pattern", None) is None:
        return None
    return _Desc("^(?:" + d.national_number_pattern + ")$", tuple(d.possible_length or ()))


@functools.cache
def country_rules(cc: int) -> _CountryRules | None:
    """The metadata of calling code ``cc`` (None: not a code, non-geographic, or not RE2-able)."""
    codes = COUNTRY_CODE_TO_REGION_CODE.get(cc)
    if not codes or _NON_GEO in codes:
        return None
    regions = []
    for code in codes:
        md = PhoneMetadata.metadata_for_region(code, None)
        if md is None:
            return None
        general = _desc(md.general_desc)
        if general is None:
            return None
        types = tuple(t for t in (_desc(getattr(md, name)) for name in _TYPES) if t is not None)
        regions.append(_Region(general, types, md.leading_digits))
    main = PhoneMetadata.metadata_for_region(codes[0], None)
    rules = _CountryRules(tuple(regions), main.national_prefix_for_parsing if main else None)
    try:  # RE2 must take every pattern, or the library decides for this code
        probe = pa.array(["1"])
        for r in rules.regions:
            for d in (r.general, *r.types):
                pc.match_substring_regex(probe, d.pattern)
            if r.leading_digits:
                pc.match_substring_regex(probe, "^(?:" + r.leading_digits + ")")
        if rules.national_prefix_for_parsing:
            pc.match_substring_regex(probe, "^(?:" + rules.national_prefix_for_parsing + ")")
    except pa.ArrowInvalid:
        return None
    return rules


def _matches(nsn: pa.Array, lengths: np.ndarray, d: _Desc) -> np.ndarray:
    ok = pc.match_substring_regex(nsn, d.pattern).to_numpy(zero_copy_only=False)
    if d.lengths:  # phonenumbers: a length outside possible_length never matches
        ok &= np.isin(lengths, d.lengths)
    return ok


def national_numbers_valid(nsn: pa.Array, rules: _CountryRules) -> np.ndarray:
    """Which national significant numbers of one calling code phonenumbers calls valid, for sure."""
    lengths = pc.binary_length(nsn).to_numpy(zero_copy_only=False)
    n = len(nsn)
    valid = np.zeros(n, dtype=bool)
    decided = np.zeros(n, dtype=bool)
    single = len(rules.regions) == 1
    for region in rules.regions:
        ok = _matches(nsn, lengths, region.general)
        if ok.any():
            typed = np.zeros(n, dtype=bool)
            for d in region.types:
                typed |= _matches(nsn, lengths, d)
            ok &= typed
        if single:
            chosen = np.ones(n, dtype=bool)
        elif region.leading_digits:
            chosen = pc.match_substring_regex(nsn, "^(?:" + region.leading_digits + ")").to_numpy(
                zero_copy_only=False
            )
            chosen &= ~decided
        else:
            chosen = ok & ~decided
        valid |= chosen & ok
        decided |= chosen
    if rules.national_prefix_for_parsing:  # the parser might strip it: not for sure
        strip = pc.match_substring_regex(nsn, "^(?:" + rules.national_prefix_for_parsing + ")")
        valid &= ~strip.to_numpy(zero_copy_only=False)
    return valid


def e164_fast_ok(e164: pa.Array) -> np.ndarray:
    """For ``+[1-9]\\d{6,14}`` strings: which ones phonenumbers calls valid, for sure."""
    n = len(e164)
    out = np.zeros(n, dtype=bool)
    if not n:
        return out
    digits = pc.utf8_slice_codeunits(e164, 1)
    ccs = np.zeros(n, dtype=np.int64)
    for k in (1, 2, 3):  # calling codes are prefix-free
        head = pc.utf8_slice_codeunits(digits, 0, k).to_numpy(zero_copy_only=False)
        found = np.isin(head, [str(c) for c in COUNTRY_CODE_TO_REGION_CODE if len(str(c)) == k])
        ccs = np.where((ccs == 0) & found, head.astype(np.int64, copy=False) if found.any() else 0, ccs)
    for cc in np.unique(ccs[ccs > 0]):
        rules = country_rules(int(cc))
        if rules is None:
            continue
        idx = np.flatnonzero(ccs == cc)
        nsn = pc.utf8_slice_codeunits(pc.take(digits, pa.array(idx)), len(str(cc)))
        out[idx] = national_numbers_valid(nsn, rules)
    return out
