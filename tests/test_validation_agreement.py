"""The vectorised fast path agrees with the libraries it names, value by value: what passflow accepts
``phonenumbers.is_valid_number`` / ``email_validator.validate_email`` accept (with the same
normalised value), and the other way round."""

from __future__ import annotations

import numpy as np
import pandas as pd
import phonenumbers
import pyarrow as pa
import pytest
from email_validator import EmailNotValidError, validate_email
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from passflow.contact_rules import e164_fast_ok
from passflow.validate import FieldRules, Rejects, _normalise_email, _normalise_phone, validate_chunk

REGIONS = ["CZ", "US", "GB", "DE", "SK", "PL"]
CODES = sorted(phonenumbers.COUNTRY_CODE_TO_REGION_CODE)


def lib_phone(value: str, region: str) -> str | None:
    try:
        num = phonenumbers.parse(value, region)
    except phonenumbers.NumberParseException:
        return None
    if not phonenumbers.is_valid_number(num):
        return None
    return phonenumbers.format_number(num, phonenumbers.PhoneNumberFormat.E164)


def lib_email(value: str, allow_test: bool = False) -> str | None:
    try:
        return validate_email(value, check_deliverability=False, test_environment=allow_test).normalized
    except EmailNotValidError:
        return None


def assert_phones_agree(values: list[str], region: str) -> None:
    series = pd.Series(values, dtype="str")
    out, ok, _ = _normalise_phone(series, region)
    for v, o, good in zip(values, out, ok, strict=True):
        expected = lib_phone(v, region)
        assert (expected is not None) == bool(good), (v, region, expected)
        if good:
            assert o == expected, (v, region)
    # the fast path alone never accepts what the library rejects
    shaped = [
        v for v in values if v.startswith("+") and v[1:].isdigit() and 7 <= len(v) - 1 <= 15 and v[1] != "0"
    ]
    if shaped:
        fast = e164_fast_ok(pa.array(shaped))
        for v, f in zip(shaped, fast, strict=True):
            if f:
                assert lib_phone(v, region) == v, v


def assert_emails_agree(values: list[str], allow_test: bool = False) -> None:
    out, ok, _ = _normalise_email(pd.Series(values, dtype="str"), allow_test)
    for v, o, good in zip(values, out, ok, strict=True):
        expected = lib_email(v, allow_test)
        assert (expected is not None) == bool(good), (v, expected)
        if good:
            assert o == expected, v


# --------------------------------------------------------------------------------- tricky corpus

TRICKY_PHONES = [
    "+999123456789", "+10000000000", "+420601234567", "+420609123456", "+1 (202) 555-0143",
    "+44 7700 900123", "+44 7400 123456", "0044 7400 123456", "00420 601 234 567", "+4407400123456",
    "+7 912 345 67 89", "+7 701 123 4567", "+39 06 1234 5678", "+39 312 345 6789", "+800 1234 5678",
    "+882 1234 5678", "+1 684 733 1234", "+1 876 123 4567", "+1\t202 555 0143", "+1 202 555 0143 ext 5",
    "+49 30 123456", "+49 1512 3456789", "+33 6 12 34 56 78", "+33 06 12 34 56 78", "+421 901 234 567",
    "+48 512 345 678", "+36 20 123 4567", "+262 692 12 34 56", "+590 690 00 12 34", "12", "",
    "+", "++420601234567", "+420 601-234-567.", "(+420) 601 234 567", "+420\u00a0601\u00a0234\u00a0567",
    "+420\u2009601234567", "＋420601234567", "+0420601234567", "+1234567", "+123456789012345",
    "+61 4 1234 5678", "+55 11 91234 5678", "+52 1 55 1234 5678", "+54 9 11 1234 5678", "+86 138 0013 8000",
]  # fmt: skip


@pytest.mark.parametrize("region", REGIONS)
def test_tricky_phones_agree(region: str) -> None:
    assert_phones_agree(TRICKY_PHONES, region)


def test_every_regions_example_numbers_agree() -> None:
    values = []
    for region in sorted(phonenumbers.SUPPORTED_REGIONS):
        for kind in (phonenumbers.PhoneNumberType.MOBILE, phonenumbers.PhoneNumberType.FIXED_LINE):
            num = phonenumbers.example_number_for_type(region, kind)
            if num is not None:
                e164 = phonenumbers.format_number(num, phonenumbers.PhoneNumberFormat.E164)
                values += [e164, e164[:-1], e164 + "1", e164[:-1] + str((int(e164[-1]) + 5) % 10)]
    assert_phones_agree(values, "CZ")
    fast = e164_fast_ok(pa.array(values[::4]))
    assert fast.mean() > 0.8  # the common case stays on the fast path


TRICKY_EMAILS = [
    "a@example.test", "b@foo.local", "c@localhost", "d@x.onion", "e@1.in-addr.arpa", "f@ex.invalid",
    "g@example.com", "Mixed.Case@Example.COM", "x+tag@sub.example.co.uk", "a" * 64 + "@example.com",
    "a" * 65 + "@example.com", "a@" + "b" * 63 + ".com", "a@" + "b" * 64 + ".com",
    "a@" + ".".join(["b" * 60] * 4) + ".com", "a@xn--bcher-kva.de", "a@ab--cd.com", "a@xn--.com",
    "zoë@exämple.cz", "a..b@example.com", ".a@example.com", "a.@example.com", "a@-example.com",
    "a@example-.com", "a@example.c", "a@example.123", "a@example", '"quoted"@example.com',
    "a@[127.0.0.1]", "a@example.com.", "a@EXAMPLE.TEST", "a@foo.Local", "not-an-email", "jan@@example.com",
    "", "a@b.co", "postmaster@example.org", "a!#$%&'*+/=?^_`{|}~-@example.com",
]  # fmt: skip


@pytest.mark.parametrize("allow_test", [False, True])
def test_tricky_emails_agree(allow_test: bool) -> None:
    assert_emails_agree(TRICKY_EMAILS, allow_test)


def test_issue_values_are_rejected_with_reasons() -> None:
    df = pd.DataFrame(
        {
            "customer_id": ["1", "2", "3", "4", "5"],
            "email": [
                "a@example.test",
                "b@foo.local",
                "ok@example.com",
                "ok2@example.com",
                "ok3@example.com",
            ],
            "phone": ["", "", "+999123456789", "+10000000000", "+420601234567"],
            "__row__": np.arange(2, 7),
        },
        dtype="str",
    ).astype({"__row__": "int64"})
    rules = FieldRules("customer_id", "email", "phone", False, False, "CZ")
    rejects = Rejects()
    good = validate_chunk(df, rules, None, rejects)
    assert good["customer_id"].tolist() == ["5"]
    rej = rejects.frame()
    assert rej["reason_code"].tolist() == ["invalid_email", "invalid_email", "invalid_phone", "invalid_phone"]
    assert "special-use" in rej["reason"].iloc[0] and "special-use" in rej["reason"].iloc[1]
    assert "+999123456789" in rej["reason"].iloc[2] and "plus-sign" in rej["reason"].iloc[2]
    assert "(+1, US)" in rej["reason"].iloc[3]
    # the campaign switch lets test domains through, as email_validator's test_environment does
    allowed = validate_chunk(
        df, FieldRules("customer_id", "email", "phone", False, False, "CZ", True), None, Rejects()
    )
    assert allowed["customer_id"].tolist() == ["1", "5"]


# ------------------------------------------------------------------------------ property tests

digits = st.text(alphabet="0123456789", min_size=3, max_size=14)
separators = st.sampled_from(["", " ", "-", ".", "(", ")", "/", "\u00a0", "\t"])


@st.composite
def phones(draw: st.DrawFn) -> str:
    cc = str(draw(st.sampled_from(CODES)))
    body = draw(digits)
    prefix = draw(st.sampled_from(["+", "+", "+", "00", "", "0"]))
    text = prefix + cc + body
    if draw(st.booleans()):  # separators at random places
        chars = list(text)
        for _ in range(draw(st.integers(0, 4))):
            chars.insert(draw(st.integers(1, len(chars))), draw(separators))
        text = "".join(chars)
    return text


@settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(st.lists(phones(), min_size=1, max_size=40), st.sampled_from(REGIONS))
def test_phone_agreement_property(values: list[str], region: str) -> None:
    assert_phones_agree(values, region)


label = st.from_regex(r"[A-Za-z0-9](?:[A-Za-z0-9-]{0,8}[A-Za-z0-9])?", fullmatch=True)
local = st.from_regex(r"[A-Za-z0-9!#$%&'*+/=?^_`{|}~.-]{1,20}", fullmatch=True)
tld = st.sampled_from(
    ["com", "cz", "test", "local", "localhost", "onion", "invalid", "arpa", "c", "co", "x1", "Test"]
)


@st.composite
def emails(draw: st.DrawFn) -> str:
    labels = draw(st.lists(label, min_size=0, max_size=3))
    return draw(local) + "@" + ".".join([*labels, draw(tld)])


@settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(st.lists(emails(), min_size=1, max_size=40), st.booleans())
def test_email_agreement_property(values: list[str], allow_test: bool) -> None:
    assert_emails_agree(values, allow_test)
