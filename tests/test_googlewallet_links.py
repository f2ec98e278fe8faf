"""Google Wallet save links: JWT claims and objects as the JWT and REST references publish them,
signatures that verify with the public key (PyJWT, an independent implementation), tampering
detected, bad rows rejected with reasons, and no key material in errors."""

from __future__ import annotations

import base64
import json
from datetime import UTC, datetime
from pathlib import Path

import jwt as pyjwt
import pandas as pd
import pytest

from passflow.config import load_campaign
from passflow.errors import ConfigError
from passflow.providers.googlewallet import jwts
from passflow.providers.googlewallet.issuer import SaveLinkIssuer
from passflow.providers.googlewallet.keys import parse_key
from passflow.providers.googlewallet.sandbox import demo_key_json
from passflow.validate import ROW, Rejects

NOW = datetime(2026, 12, 1, 9, 30, tzinfo=UTC)
KEY = parse_key(demo_key_json())
CONTRACTS = Path(__file__).parent / "contracts" / "googlewallet"
OBJECTS = {  # per class type: the [googlewallet.object] TOML the reference's required fields need
    "loyalty": 'accountId = "{{ customer.customer_id }}"\n[googlewallet.object.loyaltyPoints.balance]\nint = "{{ customer.points }}"',
    "offer": 'barcode = { type = "QR_CODE", value = "{{ customer.customer_id }}" }',
    "giftCard": 'cardNumber = "GC{{ customer.customer_id }}"',
    "eventTicket": 'ticketHolderName = "{{ customer.name }}"',
    "generic": 'cardTitle = { defaultValue = { language = "en-US", value = "Club" } }\n'
    'header = { defaultValue = { language = "en-US", value = "{{ customer.name }}" } }',
}


def campaign(tmp_path: Path, class_type: str = "loyalty", extra: str = "", obj: str | None = None):  # noqa: ANN201
    (tmp_path / "seg.csv").write_text("customer_id,email,name,points\nC1,a@example.com,Ann,5\n")
    text = f"""
[campaign]
name = "gw-test"
provider = "googlewallet"
[source]
csv = "seg.csv"
[googlewallet]
issuer_id = "3388000000022200000"
class_suffix = "club"
class_type = "{class_type}"
service_account_key = {{ env = "GW_TEST_KEY" }}
origins = ["https://shop.example"]
{extra}
[googlewallet.object]
{OBJECTS[class_type] if obj is None else obj}
"""
    path = tmp_path / "c.toml"
    path.write_text(text)
    return load_campaign(path)


def rows(*ids: str, points: str = "5") -> pd.DataFrame:
    return pd.DataFrame(
        {ROW: range(2, 2 + len(ids)), "customer_id": list(ids), "email": "a@example.com", "phone": "",
         "name": "Ann", "points": points}
    )  # fmt: skip


@pytest.fixture(autouse=True)
def _key_env(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("GW_TEST_KEY", demo_key_json())


@pytest.mark.parametrize("class_type", list(OBJECTS))
def test_claims_and_object_follow_the_references(tmp_path: Path, class_type: str) -> None:
    issuer = SaveLinkIssuer(campaign(tmp_path, class_type), NOW)
    rejects = Rejects()
    out = issuer.prepare(rows("C1", "C2"), rejects)
    assert not rejects.frames and len(out) == 2
    link = out["pass_link"].iloc[0]
    assert link.startswith("https://pay.google.com/gp/v/save/")
    claims = jwts.verify(jwts.token_of(link), KEY.private_key.public_key())
    assert claims["iss"] == KEY.client_email and claims["aud"] == "google" and claims["typ"] == "savetowallet"
    assert claims["iat"] == int(NOW.timestamp()) and claims["origins"] == ["https://shop.example"]
    assert list(claims["payload"]) == [f"{class_type}Objects"]  # JWT reference: payload.<type>Objects
    (obj,) = claims["payload"][f"{class_type}Objects"]
    assert obj["id"] == "3388000000022200000.C1" == out["pass_id"].iloc[0]
    assert obj["classId"] == "3388000000022200000.club" and obj["state"] == "ACTIVE"
    header = json.loads(base64.urlsafe_b64decode(jwts.token_of(link).split(".")[0] + "=="))
    assert header == {"alg": "RS256", "kid": KEY.private_key_id, "typ": "JWT"}
    if class_type == "loyalty":
        assert obj["loyaltyPoints"]["balance"]["int"] == 5  # an integer, as the reference types it


def test_documented_jwt_example_shape() -> None:
    """The JWT reference's example (tests/contracts/googlewallet/jwt-example.json) has exactly our claims."""
    example = {
        k: v for k, v in json.loads((CONTRACTS / "jwt-example.json").read_text()).items() if k[0] != "_"
    }
    ours = json.loads(
        jwts.claims_json(iss="x@y", iat=1, origins=[], payload_key="loyaltyObjects", objects_json="{}")
    )
    assert set(ours) == set(example) and set(ours["payload"]) <= set(example["payload"])


def test_every_link_verifies_and_tampering_is_detected(tmp_path: Path) -> None:
    out = SaveLinkIssuer(campaign(tmp_path), NOW).prepare(rows(*[f"C{i}" for i in range(50)]), Rejects())
    public = KEY.private_key.public_key()
    for link in out["pass_link"]:
        jwts.verify(jwts.token_of(link), public)
    head, body, sig = jwts.token_of(out["pass_link"].iloc[0]).split(".")
    forged = json.loads(base64.urlsafe_b64decode(body + "=="))
    forged["payload"]["loyaltyObjects"][0]["loyaltyPoints"]["balance"]["int"] = 99999
    tampered = f"{head}.{jwts.b64url(json.dumps(forged).encode())}.{sig}"
    with pytest.raises(pyjwt.InvalidSignatureError):
        jwts.verify(tampered, public)
    other = parse_key(
        json.dumps(
            __import__("passflow.providers.googlewallet.keys", fromlist=["x"]).generate_key_info("a@b.c", "k")
        )
    )
    with pytest.raises(pyjwt.InvalidSignatureError):
        jwts.verify(jwts.token_of(out["pass_link"].iloc[0]), other.private_key.public_key())


def test_fingerprint_ignores_iat_so_reruns_are_unchanged(tmp_path: Path) -> None:
    c = campaign(tmp_path)
    a = SaveLinkIssuer(c, NOW).prepare(rows("C1"), Rejects())
    b = SaveLinkIssuer(c, datetime(2027, 1, 1, tzinfo=UTC)).prepare(rows("C1"), Rejects())
    assert (
        a["fingerprint"].iloc[0] == b["fingerprint"].iloc[0]
        and a["pass_link"].iloc[0] != b["pass_link"].iloc[0]
    )
    changed = SaveLinkIssuer(c, NOW).prepare(rows("C1", points="6"), Rejects())
    assert changed["fingerprint"].iloc[0] != a["fingerprint"].iloc[0]


def test_bad_rows_are_rejected_with_reasons(tmp_path: Path) -> None:
    issuer = SaveLinkIssuer(campaign(tmp_path, extra='object_suffix = "{{ customer.name }}"'), NOW)
    df = rows("C1", "C2", "C3")
    df["name"] = ["ok-1", "bad id!", "ok-1"]
    rejects = Rejects()
    out = issuer.prepare(df, rejects)
    got = pd.concat(rejects.frames)
    assert list(out["customer_id"]) == ["C1"]
    assert dict(zip(got["customer_id"], got["reason_code"], strict=True)) == {
        "C2": "invalid_object_id", "C3": "duplicate_pass_id"}  # fmt: skip
    rejects = Rejects()
    SaveLinkIssuer(campaign(tmp_path), NOW).prepare(rows("C1", points="lots"), rejects)
    assert "must be an integer" in pd.concat(rejects.frames)["reason"].iloc[0]


def test_too_long_links_are_rejected_before_signing(tmp_path: Path) -> None:
    issuer = SaveLinkIssuer(campaign(tmp_path, extra="max_link_chars = 900"), NOW)
    df = rows("C1", "C2")
    issuer_long = SaveLinkIssuer(campaign(tmp_path, extra="max_link_chars = 900",
                                          obj='accountName = "{{ customer.name }}"'), NOW)  # fmt: skip
    df["name"] = ["Ann", "A" * 600]
    rejects = Rejects()
    out = issuer_long.prepare(df, rejects)
    got = pd.concat(rejects.frames)
    assert list(out["customer_id"]) == ["C1"] and list(got["reason_code"]) == ["link_too_long"]
    assert "over max_link_chars = 900" in got["reason"].iloc[0]
    assert (out["pass_link"].str.len() <= 900).all()
    # the length computed before signing is the signed link's length
    prefix = len(issuer.prefix)
    token = jwts.token_of(out["pass_link"].iloc[0])
    claims_bytes = len(base64.urlsafe_b64decode(token.split(".")[1] + "=="))
    assert jwts.link_length(prefix, len(token.split(".")[0]), claims_bytes) == len(out["pass_link"].iloc[0])


def test_config_errors_name_the_key_and_never_echo_it(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    with pytest.raises(Exception, match="giftCard object needs cardNumber"):
        campaign(tmp_path, "giftCard", obj='barcode = { type = "QR_CODE", value = "x" }')
    info = json.loads(demo_key_json())
    info["private_key"] = info["private_key"].replace("A", "B", 40)
    monkeypatch.setenv("GW_TEST_KEY", json.dumps(info))
    with pytest.raises(ConfigError) as err:
        SaveLinkIssuer(campaign(tmp_path), NOW)
    assert "service_account_key" in str(err.value) and "PRIVATE KEY" not in str(err.value)
    monkeypatch.setenv("GW_TEST_KEY", "not json " + info["private_key"][40:80])
    with pytest.raises(ConfigError) as err:
        SaveLinkIssuer(campaign(tmp_path), NOW)
    assert "not JSON" in str(err.value) and info["private_key"][40:80] not in str(err.value)
