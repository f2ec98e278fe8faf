"""Sandbox configuration and in-memory state: accounts, tokens, passes, limits, faults and counters.

Plain Python (no web framework) so the rules can be unit-tested and read in one place. The server runs
on one event loop, but a test may inspect :class:`SandboxState` from another thread (the thread
runner exposes it), so every mutation and every read of shared structures holds one lock. Nothing in
here awaits while holding it.
"""

from __future__ import annotations

import math
import secrets
import threading
import time
from collections import Counter, deque
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field

from passflow.providers.skycore.links import LinkRecipe

Endpoint = Literal[
    "any", "authenticate", "create", "get", "lookup", "update", "skycore_link", "skycore_update"
]
FaultKind = Literal[
    "status",
    "slow",
    "slow_after_commit",
    "drop",
    "drop_after_commit",
    "revoke",
    "malformed",
    "malformed_after_commit",
    "failure_body",
    "skycore_error",
]
#: Faults that let the endpoint do its work first, then spoil the response.
# The sandbox's built-in demo credentials (not secrets: they only open the local sandbox).
DEMO_ACCOUNT = "demo"
from passflow.providers.passmachine.sandbox import DEMO_PUBLIC_TOKEN, DEMO_SECRET_TOKEN  # noqa: E402

DEMO_SKYCORE_API_KEY = "sky-demo-key"

AFTER_COMMIT_KINDS = frozenset({"slow_after_commit", "drop_after_commit", "malformed_after_commit"})
#: Passmachine endpoints that are rate/in-flight limited and timed (not /authenticate).
LIMITED_ENDPOINTS = frozenset({"create", "get", "lookup", "update"})
SKYCORE_PASS_TYPES = frozenset({"coupon", "giftcard", "loyaltycard", "eventticket", "boardingpass"})


# --------------------------------------------------------------------------------------------------
# Configuration
# --------------------------------------------------------------------------------------------------


class Account(BaseModel):
    """A Passmachine account and the credentials that /authenticate accepts for it."""

    model_config = ConfigDict(extra="forbid")
    name: str
    public_token: str
    secret_token: str


class SkycoreLinkConfig(BaseModel):
    """How links of one Skycore link id are signed (salt and recipe, see ``skycore_links``)."""

    model_config = ConfigDict(extra="forbid")
    salt: str | None = None
    salt_position: Literal["append", "prepend"] = "append"
    hex_case: Literal["lower", "upper"] = "lower"
    hash_input: Literal["raw", "encoded"] = "raw"

    def recipe(self) -> LinkRecipe:
        return LinkRecipe(
            salt_position=self.salt_position, hex_case=self.hex_case, hash_input=self.hash_input
        )


class FaultRule(BaseModel):
    """One injected fault. Matching requests are numbered 1, 2, … per rule; the rule fires on request
    ``n`` when ``n > after``, ``(n - after) % every == 0`` and it has fired fewer than ``count`` times
    (``count`` ``None`` = no cap). A rule sees only requests that passed the limiter (429s are not
    counted). When several rules fire for one request the first in the list wins; all of them count it.
    """

    model_config = ConfigDict(extra="forbid")
    kind: FaultKind
    endpoint: Endpoint = "any"
    code: int = Field(500, ge=400, le=599, description="HTTP status for kind=status")
    delay_s: float = Field(5.0, ge=0, description="delay for slow / slow_after_commit")
    retry_after_s: int | None = Field(None, ge=0, description="Retry-After on a status fault (429 default 1)")
    error_code: str = Field(
        "E113", description="Skycore error-code for kind=skycore_error (E104, E106, E120 …)"
    )
    after: int = Field(0, ge=0)
    count: int | None = Field(None, ge=0)
    every: int = Field(1, ge=1)


def _default_accounts() -> list[Account]:
    return [Account(name=DEMO_ACCOUNT, public_token=DEMO_PUBLIC_TOKEN, secret_token=DEMO_SECRET_TOKEN)]


class SandboxConfig(BaseModel):
    """Everything the sandbox can be told. ``POST /_admin/config`` accepts any subset of these fields."""

    model_config = ConfigDict(extra="forbid")
    accounts: list[Account] = Field(default_factory=_default_accounts)
    skycore_api_keys: list[str] = Field(default_factory=lambda: [DEMO_SKYCORE_API_KEY])
    # Pass templates of the Skycore account (id -> pass type). Empty = any template id is accepted
    # (a sandbox assumption, so campaigns need no setup); getPassTemplates lists these plus used ones.
    skycore_templates: dict[str, str] = Field(default_factory=dict)
    latency_ms: float = Field(0.0, ge=0)
    jitter_ms: float = Field(0.0, ge=0)
    max_in_flight: int | None = Field(None, ge=1, description="per account; None = unlimited")
    max_per_second: int | None = Field(None, ge=1, description="per account, sliding 1 s; None = unlimited")
    retry_after: Literal["seconds", "http-date"] = "seconds"
    token_max_ttl_s: float = Field(3600.0, gt=0)
    customer_key: str = "registered"
    skycore_links: dict[str, SkycoreLinkConfig] = Field(default_factory=dict)
    faults: list[FaultRule] = Field(default_factory=list)
    # Vendor callbacks the sandbox sends (see passflow.sandbox.postbacks): where, and the env var
    # holding the shared secret (a name, so the secret never passes through the admin API).
    callback_urls: dict[Literal["skycore", "passmachine"], str] = Field(default_factory=dict)
    callback_secret_env: str | None = None


# --------------------------------------------------------------------------------------------------
# Pure helpers
# --------------------------------------------------------------------------------------------------


def max_in_window(times: Iterable[float], width: float = 1.0) -> int:
    """Most timestamps inside any half-open window ``[t, t + width)`` (two pointers over sorted times)."""
    ts = sorted(times)
    best = start = 0
    for end, t in enumerate(ts):
        while t - ts[start] >= width:
            start += 1
        best = max(best, end - start + 1)
    return best


def utc_iso(ts: float | None = None) -> str:
    dt = datetime.fromtimestamp(time.time() if ts is None else ts, UTC)
    return dt.isoformat(timespec="milliseconds").replace("+00:00", "Z")


def _index_value(value: Any) -> str | None:
    """The string a ``metadata.key=value`` query must equal; containers are not indexed."""
    if isinstance(value, str):
        return value
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, int | float):
        return str(value)
    return None


class SandboxError(Exception):
    """A request the sandbox refuses; the app turns it into the vendor's error shape."""

    def __init__(self, status: int, message: str) -> None:
        super().__init__(message)
        self.status = status
        self.message = message


# --------------------------------------------------------------------------------------------------
# Limits and timing
# --------------------------------------------------------------------------------------------------


@dataclass
class _AccountTraffic:
    """Limiter state and timing records of one account (replaced wholesale on reset)."""

    in_flight_all: int = 0
    in_flight_accepted: int = 0
    max_in_flight_all: int = 0
    max_in_flight_accepted: int = 0
    arrivals_all: list[float] = field(default_factory=list)
    arrivals_accepted: list[float] = field(default_factory=list)
    recent_accepted: deque[float] = field(default_factory=deque)  # accepted arrivals of the last 1 s

    def summary(self) -> dict[str, Any]:
        return {
            "arrivals": {"all": len(self.arrivals_all), "accepted": len(self.arrivals_accepted)},
            "max_in_flight": {"all": self.max_in_flight_all, "accepted": self.max_in_flight_accepted},
            "max_arrivals_1s": {
                "all": max_in_window(self.arrivals_all),
                "accepted": max_in_window(self.arrivals_accepted),
            },
            "in_flight_now": {"all": self.in_flight_all, "accepted": self.in_flight_accepted},
        }


@dataclass
class Admission:
    """The limiter's verdict on one request; hand it back to :meth:`SandboxState.finish`."""

    accepted: bool
    retry_after_s: float
    reason: str
    traffic: _AccountTraffic
    total: _AccountTraffic


@dataclass
class _FaultCounter:
    seen: int = 0
    fired: int = 0


@dataclass
class _Token:
    account: str
    valid_to: float
    revoked: bool = False


# --------------------------------------------------------------------------------------------------
# The state
# --------------------------------------------------------------------------------------------------


class SandboxState:
    """All mutable sandbox state behind one lock."""

    def __init__(self, config: SandboxConfig | None = None) -> None:
        self._lock = threading.Lock()
        self._initial = (config or SandboxConfig()).model_copy(deep=True)
        self.config = self._initial.model_copy(deep=True)
        self._clear()

    # ----- lifecycle ------------------------------------------------------------------------------

    def _clear(self) -> None:
        self._traffic: dict[str, _AccountTraffic] = {}
        self._total = _AccountTraffic()  # all accounts together (limits are per account)
        self._fault_counters = [_FaultCounter() for _ in self.config.faults]
        self._tokens: dict[str, _Token] = {}
        self.tokens_issued = 0
        self._passes: dict[str, tuple[str, dict[str, Any]]] = {}  # id -> (account, document)
        self._index: dict[tuple[str, str, str], list[str]] = {}  # (account, key, value) -> ids
        self._per_customer: Counter[str] = Counter()
        self.passes_without_key = 0
        self._updates_per_pass: Counter[str] = Counter()
        self._requests: dict[str, Counter[str]] = {}
        self._sky_passes: dict[str, dict[str, Any]] = {}
        self._sky_updates: list[dict[str, Any]] = []
        self._sky_generated = 0
        self._sky_links: Counter[str] = Counter()

    def reset(self, *, keep_config: bool = False) -> None:
        """Forget everything observed; also restore the start-up config unless ``keep_config``."""
        with self._lock:
            if not keep_config:
                self.config = self._initial.model_copy(deep=True)
            self._clear()

    def configure(self, changes: dict[str, Any]) -> SandboxConfig:
        """Replace the given top-level config fields (validated as a whole). New faults restart counting."""
        with self._lock:
            merged = self.config.model_dump() | changes
            new = SandboxConfig.model_validate(merged)
            if "faults" in changes:
                self._fault_counters = [_FaultCounter() for _ in new.faults]
            self.config = new
            return new

    # ----- limiter --------------------------------------------------------------------------------

    def admit(self, account: str) -> Admission:
        """Record an arrival for a limited Passmachine endpoint and decide 429 or go."""
        now = time.monotonic()
        cfg = self.config
        with self._lock:
            tr = self._traffic.get(account)
            if tr is None:
                tr = self._traffic[account] = _AccountTraffic()
            total = self._total
            for t in (tr, total):
                t.arrivals_all.append(now)
                t.in_flight_all += 1
                t.max_in_flight_all = max(t.max_in_flight_all, t.in_flight_all)
            recent = tr.recent_accepted
            while recent and now - recent[0] >= 1.0:
                recent.popleft()
            if cfg.max_in_flight is not None and tr.in_flight_accepted >= cfg.max_in_flight:
                # No way to know when a slot frees up; 1 s is the smallest integer hint.
                reason = f"more than {cfg.max_in_flight} requests in flight"
                return Admission(False, 1.0, reason, tr, total)
            if cfg.max_per_second is not None and len(recent) >= cfg.max_per_second:
                wait = 1.0 - (now - recent[0])  # until the oldest accepted arrival leaves the window
                reason = f"more than {cfg.max_per_second} requests per second"
                return Admission(False, wait, reason, tr, total)
            recent.append(now)
            for t in (tr, total):
                t.arrivals_accepted.append(now)
                t.in_flight_accepted += 1
                t.max_in_flight_accepted = max(t.max_in_flight_accepted, t.in_flight_accepted)
            return Admission(True, 0.0, "", tr, total)

    def finish(self, admission: Admission) -> None:
        """The request's response is out (or dropped). After a reset this updates detached records."""
        with self._lock:
            for t in (admission.traffic, admission.total):
                t.in_flight_all -= 1
                if admission.accepted:
                    t.in_flight_accepted -= 1

    def count_request(self, endpoint: str, status: int | str) -> None:
        with self._lock:
            self._requests.setdefault(endpoint, Counter())[str(status)] += 1

    # ----- faults ---------------------------------------------------------------------------------

    def pick_fault(self, endpoint: str) -> FaultRule | None:
        with self._lock:
            chosen: FaultRule | None = None
            for rule, ctr in zip(self.config.faults, self._fault_counters, strict=True):
                if rule.endpoint not in ("any", endpoint):
                    continue
                ctr.seen += 1
                n = ctr.seen - rule.after
                due = n > 0 and n % rule.every == 0 and (rule.count is None or ctr.fired < rule.count)
                if due and chosen is None:
                    ctr.fired += 1
                    chosen = rule
            return chosen

    # ----- tokens ---------------------------------------------------------------------------------

    def issue_token(self, public: str, secret: str, valid_to: float) -> tuple[str, float]:
        """A new opaque token for the account owning these credentials; ``valid_to`` is capped."""
        account = next(
            (
                a.name
                for a in self.config.accounts
                if secrets.compare_digest(a.public_token, public)
                and secrets.compare_digest(a.secret_token, secret)
            ),
            None,
        )
        if account is None:
            raise SandboxError(401, "invalid credentials")
        now = time.time()
        if valid_to <= now:
            raise SandboxError(400, "validTo must be in the future (unix seconds)")
        valid_to = min(valid_to, now + self.config.token_max_ttl_s)
        token = secrets.token_urlsafe(32)
        with self._lock:
            self._tokens[token] = _Token(account, valid_to)
            self.tokens_issued += 1
        return token, valid_to

    def check_token(self, token: str | None, account: str) -> None:
        if not token:
            raise SandboxError(401, "missing bearer token")
        with self._lock:
            tok = self._tokens.get(token)
        if tok is None:
            raise SandboxError(401, "invalid token")
        if tok.revoked:
            raise SandboxError(401, "token revoked")
        if time.time() >= tok.valid_to:
            raise SandboxError(401, "token expired")
        if tok.account != account:
            raise SandboxError(403, f"token is not valid for account {account!r}")

    def revoke_token(self, token: str | None) -> None:
        with self._lock:
            tok = self._tokens.get(token or "")
            if tok is not None:
                tok.revoked = True

    def revoke_all(self, account: str | None = None) -> int:
        with self._lock:
            hit = [t for t in self._tokens.values() if account is None or t.account == account]
            for t in hit:
                t.revoked = True
            return len(hit)

    # ----- Passmachine passes ---------------------------------------------------------------------

    def _index_add(self, account: str, pass_id: str, metadata: dict[str, Any]) -> None:
        for key, value in metadata.items():
            v = _index_value(value)
            if v is not None:
                self._index.setdefault((account, key, v), []).append(pass_id)

    def _index_remove(self, account: str, pass_id: str, metadata: dict[str, Any]) -> None:
        for key, value in metadata.items():
            v = _index_value(value)
            ids = self._index.get((account, key, v)) if v is not None else None
            if ids and pass_id in ids:
                ids.remove(pass_id)

    def create_pass(
        self, account: str, template_id: str, variables: dict[str, Any], metadata: dict[str, Any], site: str
    ) -> dict[str, Any]:
        pass_id = secrets.token_hex(12)
        doc = {
            "id": pass_id,
            "templateId": template_id,
            "templateVariables": variables,
            "metadata": metadata,
            "createdAt": utc_iso(),
            "ro": {"microsite": {"url": f"{site}{pass_id}"}},
        }
        customer = _index_value(metadata.get(self.config.customer_key))
        with self._lock:
            self._passes[pass_id] = (account, doc)
            self._index_add(account, pass_id, metadata)
            if customer is None:
                self.passes_without_key += 1
            else:
                self._per_customer[customer] += 1
        return doc

    def get_pass(self, account: str, pass_id: str) -> dict[str, Any]:
        with self._lock:
            found = self._passes.get(pass_id)
        if found is None or found[0] != account:
            raise SandboxError(404, f"pass {pass_id!r} not found")
        return found[1]

    def find_pass(self, pass_id: str) -> dict[str, Any] | None:
        with self._lock:
            found = self._passes.get(pass_id)
        return found[1] if found else None

    def lookup(self, account: str, filters: Sequence[tuple[str, str]]) -> list[dict[str, Any]]:
        """Passes whose metadata matches every ``(key, value)`` filter, oldest first."""
        with self._lock:
            candidates: list[str] | None = None
            for key, value in filters:
                ids = self._index.get((account, key, value), [])
                candidates = list(ids) if candidates is None else [i for i in candidates if i in ids]
            return [self._passes[i][1] for i in candidates or []]

    def replace_pass(self, account: str, pass_id: str, doc: dict[str, Any]) -> None:
        with self._lock:
            old = self._passes[pass_id][1]
            self._index_remove(account, pass_id, old["metadata"])
            self._passes[pass_id] = (account, doc)
            self._index_add(account, pass_id, doc["metadata"])
            self._updates_per_pass[pass_id] += 1

    def all_passes(self, account: str | None = None) -> list[dict[str, Any]]:
        with self._lock:
            return [d for a, d in self._passes.values() if account is None or a == account]

    # ----- Skycore --------------------------------------------------------------------------------

    def skycore_link_config(self, link_id: str) -> SkycoreLinkConfig:
        return self.config.skycore_links.get(link_id) or SkycoreLinkConfig()

    def count_link(self, ok: bool) -> None:
        with self._lock:
            self._sky_links["ok" if ok else "bad"] += 1

    def _sky_pass(self, pass_id: str) -> dict[str, Any]:
        rec = self._sky_passes.get(pass_id)
        if rec is None:
            rec = self._sky_passes[pass_id] = {
                "pass-id": pass_id,
                "installs": 0,
                "registered": False,
                "voided": False,
                "updates": 0,
                "data": {},
            }
        return rec

    def record_install(self, link_id: str, pass_id: str, params: dict[str, str]) -> None:
        with self._lock:
            rec = self._sky_pass(pass_id)
            rec["installs"] += 1
            rec["link-id"] = link_id
            rec["params"] = params

    def register_skycore_passes(self, pass_ids: Iterable[str]) -> int:
        with self._lock:
            n = 0
            for pid in pass_ids:
                self._sky_pass(pid)["registered"] = True
                n += 1
            return n

    def skycore_update(
        self, pass_type: str, pass_id: str, template_id: str | None, data: dict[str, Any], voids: bool
    ) -> dict[str, Any] | None:
        """Apply an update to an existing pass; ``None`` when the pass does not exist (E808)."""
        with self._lock:
            entry = {
                "pass_type": pass_type,
                "pass-id": pass_id,
                "pass-template-id": template_id,
                "pass-data": data,
            }
            rec = self._sky_passes.get(pass_id)
            entry["result"] = "success" if rec is not None else "E808"
            self._sky_updates.append(entry)
            if rec is None:
                return None
            rec["updates"] += 1
            rec["data"].update(data)
            rec["voided"] = rec["voided"] or voids
            return dict(rec)

    def skycore_generate(self, pass_id: str, template_id: str, data: dict[str, Any], ref: Any) -> bool:
        """``generatepass``: a new pass; ``False`` when the pass-id is taken (Skycore refuses reuse)."""
        with self._lock:
            if pass_id in self._sky_passes:
                return False
            rec = self._sky_pass(pass_id)
            rec.update({"registered": True, "pass-template-id": template_id, "reference-data": ref})
            rec["data"].update(data)
            self._sky_generated += 1
            return True

    def skycore_pass(self, pass_id: str) -> dict[str, Any] | None:
        with self._lock:
            rec = self._sky_passes.get(pass_id)
            return None if rec is None else {**rec, "data": dict(rec["data"])}

    def skycore_templates_used(self) -> dict[str, str | None]:
        with self._lock:
            used = {u.get("pass-template-id") for u in self._sky_updates} | {
                v.get("pass-template-id") for v in self._sky_passes.values()
            }
            return {t: None for t in used if isinstance(t, str)}

    def record_skycore_failure(self, pass_type: str, body: Any, code: str) -> None:
        with self._lock:
            self._sky_updates.append({"pass_type": pass_type, "body": body, "result": code})

    def skycore_passes(self) -> dict[str, dict[str, Any]]:
        with self._lock:
            return {k: dict(v) for k, v in self._sky_passes.items()}

    def skycore_updates(self) -> list[dict[str, Any]]:
        with self._lock:
            return list(self._sky_updates)

    # ----- stats ----------------------------------------------------------------------------------

    def arrival_times(self) -> list[float]:
        """Accepted arrivals at the limited endpoints, all accounts (monotonic seconds, sorted):
        benchmarks compute steady-state rates and the chart of achieved rate from them."""
        with self._lock:
            return list(self._total.arrivals_accepted)

    def stats(self, *, per_customer: bool = True) -> dict[str, Any]:
        with self._lock:
            dupes = sorted(k for k, n in self._per_customer.items() if n > 1)
            out: dict[str, Any] = {
                "passes_created": len(self._passes),
                "customers": len(self._per_customer),
                "duplicates": len(dupes),
                "duplicate_keys": dupes[:1000],
                "passes_without_customer_key": self.passes_without_key,
                "tokens_issued": self.tokens_issued,
                "updates_applied": sum(self._updates_per_pass.values()),
                "passes_updated": len(self._updates_per_pass),
                **self._total.summary(),
                "by_account": {name: t.summary() for name, t in self._traffic.items()},
                "requests": {ep: dict(c) for ep, c in self._requests.items()},
                "faults": [
                    {"rule": r.model_dump(), "seen": c.seen, "fired": c.fired}
                    for r, c in zip(self.config.faults, self._fault_counters, strict=True)
                ],
                "skycore": {
                    "links": {"ok": self._sky_links["ok"], "bad": self._sky_links["bad"]},
                    "installs": {k: v["installs"] for k, v in self._sky_passes.items() if v["installs"]},
                    "updates": sum(1 for u in self._sky_updates if u["result"] == "success"),
                    "updates_by_result": dict(Counter(u["result"] for u in self._sky_updates)),
                    "voided": sorted(k for k, v in self._sky_passes.items() if v["voided"]),
                    "generated": self._sky_generated,
                },
            }
            if per_customer:
                out["passes_per_customer"] = dict(self._per_customer)
            return out


def retry_after_seconds(wait_s: float) -> int:
    """Integer seconds for a ``Retry-After`` header, never telling a client to come back early."""
    return max(1, math.ceil(wait_s))
