"""A provider defined only here, in the tests: the proof that a new provider is one package plus one
``register`` call, with no edit to ``passflow/``.

"Stamp" issues HMAC-signed links (pure computation, like Skycore), updates passes by POSTing JSON to
``[stamp] update_url`` (like an API vendor), and sends callbacks ``{"pass": id, "what": "installed"}``.
Load it with ``PASSFLOW_PROVIDERS=tests.providers.stamp`` (the repository root on ``PYTHONPATH``).
"""

from __future__ import annotations

import hashlib
import hmac
import json
from collections.abc import Mapping
from datetime import datetime
from typing import Any

import httpx
import pandas as pd
from pydantic import Field

from passflow.config import Campaign, StrictModel
from passflow.providers import registry
from passflow.providers.base import (
    OUTCOME_COLUMNS,
    DeliveryContext,
    Issuer,
    campaign_vars,
    compile_templates,
    render_fields,
)
from passflow.providers.callbacks import CallbackPayloadError, ParsedCallback, body_id, load_json_body
from passflow.providers.http.loop import BackgroundLoop
from passflow.providers.sender import Sender, SendResult
from passflow.providers.spec import CallbackSupport, Provider, UpdateSupport
from passflow.validate import ROW, Rejects


class StampSettings(StrictModel):
    link_base: str = "https://stamp.example/p"
    key: str = Field("not-a-secret", description="HMAC key (a test value)")
    fields: dict[str, str] = Field(default_factory=dict)
    update_url: str = ""


class StampIssuer(Issuer):
    provider = "stamp"
    extra_columns = ["pass_id", "pass_link"]

    def __init__(self, campaign: Campaign, now: datetime) -> None:
        self.settings: StampSettings = campaign.settings
        self.templates = compile_templates(
            self.settings.fields, section="stamp.fields", campaign_vars=campaign_vars(campaign.campaign), now=now
        )

    def template_columns(self) -> set[str]:
        return set().union(*(t.columns for t in self.templates.values())) if self.templates else set()

    def prepare(self, df: pd.DataFrame, rejects: Rejects) -> pd.DataFrame:
        df, values = render_fields(self.templates, df, rejects)
        pass_id = "ST" + df["customer_id"].astype(str)
        texts = [json.dumps(dict(zip(values.columns, row, strict=True)), sort_keys=True) for row in values.itertuples(index=False)]
        sig = [hmac.new(self.settings.key.encode(), f"{p}|{t}".encode(), hashlib.sha256).hexdigest()[:16] for p, t in zip(pass_id, texts, strict=True)]
        link = [f"{self.settings.link_base}/{p}?sig={s}" for p, s in zip(pass_id, sig, strict=True)]
        return pd.DataFrame(
            {ROW: df[ROW], "customer_id": df["customer_id"], "email": df["email"], "phone": df["phone"],
             "fingerprint": sig, "pass_id": pass_id, "pass_link": link},
            index=df.index,
        )  # fmt: skip

    def deliver(self, todo: pd.DataFrame, ctx: DeliveryContext) -> pd.DataFrame:
        out = todo[["customer_id", "pass_id", "pass_link", "fingerprint"]].copy()
        out["status"], out["last_error"], out["issued_at"] = "issued", None, ctx.now
        return out[OUTCOME_COLUMNS]


class StampSender(Sender):
    def __init__(self, campaign: Campaign, transport: httpx.AsyncBaseTransport | None) -> None:
        super().__init__(campaign, "Stamp")
        self._url = campaign.settings.update_url
        self._loop = BackgroundLoop("stamp-updates")
        self._client = self._loop.run(_client(transport))

    async def _one(self, pass_id: str, body: str) -> tuple[SendResult, str | None]:
        r = await self._client.post(self._url, content=body, headers={"content-type": "application/json"})
        ok = r.status_code == 200
        return SendResult(ok, None if ok else f"HTTP{r.status_code}", None if ok else r.text, 1), None

    def close(self) -> None:
        self._loop.run(self._client.aclose())
        self._loop.close()


async def _client(transport: httpx.AsyncBaseTransport | None) -> httpx.AsyncClient:
    return httpx.AsyncClient(transport=transport, timeout=5)


def update_request(campaign: Campaign, pass_id: str, data: Mapping[str, str], base: Mapping[str, Any] | None) -> str:
    return json.dumps({"pass": pass_id, "set": dict(data)})


def parse_callback(body: bytes, received_at: datetime, campaign: Campaign | None = None) -> ParsedCallback:
    doc = load_json_body(body)
    what = {"installed": "installed", "removed": "uninstalled"}.get(doc.get("what"))
    if what is None or not isinstance(doc.get("pass"), str):
        raise CallbackPayloadError("needs pass and what = installed | removed")
    return ParsedCallback(what, doc["pass"], None, body_id(body), received_at, doc)


PROVIDER = registry.register(
    Provider(
        name="stamp",
        title="Stamp (test provider)",
        settings=StampSettings,
        issuer=lambda campaign, now, dry_run: StampIssuer(campaign, now),
        calls_vendor=False,
        updates=UpdateSupport(
            sender=lambda campaign, now, transport: StampSender(campaign, transport),
            action_values="set",
            request=update_request,
            builtin_actions={"void": {"state": "void"}},
        ),
        callbacks=CallbackSupport(parse=parse_callback),
    )
)
