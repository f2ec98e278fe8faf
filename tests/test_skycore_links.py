"""Skycore signed links: the seed's recipe, salted variants, percent-encoding, recipe discovery."""

from __future__ import annotations

import hashlib
from urllib.parse import parse_qsl, urlsplit

import pandas as pd
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from passflow.providers.skycore.links import (
    LinkRecipe,
    all_recipes,
    build_link,
    build_links,
    matching_recipes,
    parse_link,
    verify_link,
)

BASE = "https://d2c.skycore.com/wallet/gc/5f2a9c1e7b"


def seed_pass_link(email: str, phone: str, first_name: str) -> str:
    """The seed's MoEngage template, transcribed literally (its link prefix restored)."""
    return (
        BASE
        + "?user-email="
        + email
        + "&user-phone="
        + phone
        + "&pass-id=MOED"
        + first_name
        + "2022&barcode-value=MOED"
        + first_name
        + "2022&message4=Enter this coupon code while checking out."
    )


SEED_PARAMS = [
    ("user-email", "john@example.com"),
    ("user-phone", "+15551234567"),
    ("pass-id", "MOEDJohn2022"),
    ("barcode-value", "MOEDJohn2022"),
    ("message4", "Enter this coupon code while checking out."),
]


def test_checksum_reproduces_the_seed_exactly() -> None:
    seed = seed_pass_link("john@example.com", "+15551234567", "John")
    expected = hashlib.sha256(seed.encode()).hexdigest()
    link = build_link(BASE, SEED_PARAMS)
    assert link.endswith("&checksum=" + expected)
    # The emitted URL is encoded (the '+' of the phone survives a click), the hash is over raw values.
    assert "user-phone=%2B15551234567" in link
    assert "message4=Enter%20this%20coupon%20code%20while%20checking%20out." in link
    assert verify_link(link)


def test_known_vector_is_stable() -> None:
    # A fixed vector so an accidental change of the recipe shows up as a failing test.
    link = build_link(BASE, [("pass-id", "ABC123")])
    assert link == (
        BASE + "?pass-id=ABC123&checksum=" + hashlib.sha256((BASE + "?pass-id=ABC123").encode()).hexdigest()
    )


@pytest.mark.parametrize("position", ["append", "prepend"])
@pytest.mark.parametrize("case", ["lower", "upper"])
def test_salted_variants(position: str, case: str) -> None:
    salt = "s4lt-Value"
    recipe = LinkRecipe(salt_position=position, hex_case=case)  # type: ignore[arg-type]
    link = build_link(BASE, SEED_PARAMS, salt=salt, recipe=recipe)
    raw = seed_pass_link("john@example.com", "+15551234567", "John")
    text = raw + salt if position == "append" else salt + raw
    digest = hashlib.sha256(text.encode()).hexdigest()
    assert link.rsplit("&checksum=", 1)[1] == (digest.upper() if case == "upper" else digest)
    assert verify_link(link, salt=salt, recipe=recipe)
    assert not verify_link(link, salt="wrong", recipe=recipe)
    assert not verify_link(link, recipe=recipe)  # salt missing


def test_encoded_hash_input_hashes_the_url_text() -> None:
    recipe = LinkRecipe(hash_input="encoded")
    link = build_link(BASE, [("user-email", "a+b@x.com"), ("message4", "50% & more")], recipe=recipe)
    prefix = link.rsplit("&checksum=", 1)[0]
    assert link.endswith(hashlib.sha256(prefix.encode()).hexdigest())
    assert verify_link(link, recipe=recipe)
    assert not verify_link(link)  # the raw recipe disagrees because the values needed encoding


def test_percent_encoding_survives_a_click() -> None:
    values = [("user-email", "jane+wallet@example.com"), ("message4", "Tom & Jerry: 50% off = deal #1?")]
    link = build_link(BASE, values)
    # What a browser/server does with the query string (form decoding turns a raw '+' into a space).
    decoded = parse_qsl(urlsplit(link).query, keep_blank_values=True)
    assert decoded[:2] == values
    assert decoded[2][0] == "checksum"


@settings(max_examples=200, deadline=None)
@given(
    st.lists(
        st.tuples(st.sampled_from(["user-email", "pass-id", "message4", "x y", "ü"]), st.text(max_size=40)),
        min_size=1,
        max_size=5,
    ),
    st.one_of(st.none(), st.text(min_size=1, max_size=10)),
)
def test_round_trip_and_vectorised_equals_reference(params: list[tuple[str, str]], salt: str | None) -> None:
    for recipe in all_recipes(bool(salt)):
        link = build_link(BASE, params, salt=salt, recipe=recipe)
        parsed = parse_link(link)
        assert parsed.params == params
        assert verify_link(link, salt=salt, recipe=recipe)
        cols = [(k, pd.Series([v, v + "x"], dtype="str")) for k, v in params]
        fast = build_links(BASE, cols, salt=salt, recipe=recipe).links
        assert fast.iloc[0] == link


def test_matching_recipes_identifies_the_recipe() -> None:
    salt = "pepper"
    params = [("user-email", "a+b@example.com"), ("pass-id", "X1")]
    for recipe in all_recipes(True):
        link = build_link(BASE, params, salt=salt, recipe=recipe)
        found = matching_recipes(link, salt=salt)
        assert recipe in found
        # hex case and salt position are always told apart; raw vs encoded only when encoding mattered
        assert all(f.hex_case == recipe.hex_case and f.salt_position == recipe.salt_position for f in found)
    assert matching_recipes(build_link(BASE, params, salt=salt), salt="other") == []


@pytest.mark.parametrize(
    "bad",
    ["https://x/y", "https://x/y?a=1", "https://x/y?a=1&checksum=", "https://x/y?a&checksum=00"],
)
def test_parse_rejects_malformed_links(bad: str) -> None:
    with pytest.raises(ValueError):
        parse_link(bad)
    assert not verify_link(bad)


def test_vectorised_build_is_fast_enough() -> None:
    import time

    n = 100_000
    emails = pd.Series([f"user{i}+tag@example.com" for i in range(n)], dtype="str")
    msg = pd.Series(["Enter this coupon code while checking out."] * n, dtype="str")
    t0 = time.perf_counter()
    out = build_links(BASE, [("user-email", emails), ("message4", msg)])
    elapsed = time.perf_counter() - t0
    assert len(out.links) == n and verify_link(out.links.iloc[-1])
    assert elapsed < 3.0, f"{n} links took {elapsed:.2f}s"
