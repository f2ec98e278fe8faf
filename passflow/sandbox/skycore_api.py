"""The sandbox's Skycore Mobile Wallet API v3, as published: one account API URL, ``POST`` with a JSON
body whose ``action`` picks the function, key in header ``X-Api-Key`` or body field ``api-key``,
answers ``{"status": "success", ...}`` or ``{"status": "failure", "error-code", "error-info"}``.

Where Skycore's documents are silent the choices here are assumptions (docs/sandbox-protocol.md):
failures come with HTTP 200; the success bodies of getpassdata / getPassIds / getPassTemplates /
generatepass carry the fields named below; a reused pass-id on generatepass is E830.
"""

from __future__ import annotations

import re
from typing import Any

from passflow.sandbox.state import SandboxState

_PASS_ID_RE = re.compile(r"^[A-Za-z0-9]+$")
_ACTIONS = ("updatepassdata", "generatepass", "getpassdata", "getPassIds", "getPassTemplates")
# Sandbox origin of the pass URLs generatepass returns (an assumption: the field is `pass-url`).
PASS_URL_BASE = "https://d2c.skycore.com/wallet/p/"


def failure(code: str, info: str) -> dict[str, Any]:
    return {"status": "failure", "error-code": code, "error-info": info}


def authenticate(state: SandboxState, header_key: str | None, body: Any) -> dict[str, Any] | None:
    """A failure body when the key is missing (E102) or refused (E104), else None."""
    key = header_key or (body.get("api-key") if isinstance(body, dict) else None)
    if not key:
        return failure("E102", "API key required (header X-Api-Key or body api-key)")
    if key not in state.config.skycore_api_keys:
        return failure("E104", "authentication failed")
    return None


def _template(state: SandboxState, body: dict[str, Any]) -> tuple[str | None, dict[str, Any] | None]:
    tid = body.get("pass-template-id")
    if not isinstance(tid, str) or not tid:
        return None, failure("E801", "pass-template-id required")
    known = state.config.skycore_templates
    if known and tid not in known:
        return None, failure("E802", f"pass-template-id {tid} invalid")
    return tid, None


def _pass_id(body: dict[str, Any]) -> tuple[str | None, dict[str, Any] | None]:
    pid = body.get("pass-id")
    if not isinstance(pid, str) or not pid:
        return None, failure("E807", "pass-id required")
    if not _PASS_ID_RE.match(pid):
        return None, failure("E808", "pass-id invalid (a-zA-Z0-9)")
    return pid, None


def handle(state: SandboxState, header_key: str | None, body: Any) -> dict[str, Any]:
    """One API call's answer body."""
    if not isinstance(body, dict):
        state.record_skycore_failure("", body, "E108")
        return failure("E108", "request body is not a JSON object")
    denied = authenticate(state, header_key, body)
    if denied:
        state.record_skycore_failure("", None, denied["error-code"])
        return denied
    action = body.get("action")
    if action not in _ACTIONS:
        state.record_skycore_failure("", body, "E101")
        return failure("E101", "'action' required" if not action else f"invalid action {action!r}")
    if action == "getPassTemplates":
        templates = state.config.skycore_templates or state.skycore_templates_used()
        return {
            "status": "success",
            "pass-templates": [
                {"pass-template-id": t, "pass-type": ty} for t, ty in sorted(templates.items())
            ],
        }
    tid, bad = _template(state, body)
    if action == "getPassIds":
        if bad:
            return bad
        ids = sorted(k for k, v in state.skycore_passes().items() if v.get("pass-template-id") in (tid, None))
        return {"status": "success", "pass-template-id": tid, "pass-ids": ids}
    pid, bad_id = _pass_id(body)
    if action == "getpassdata":
        if bad_id:
            return bad_id
        rec = state.skycore_pass(pid or "")
        if rec is None:
            return failure("E808", f"pass-id {pid} invalid (deleted or not this account's)")
        return {
            "status": "success",
            "pass-id": pid,
            "pass-template-id": rec.get("pass-template-id") or tid,
            "pass-data": rec["data"],
            "reference-data": rec.get("reference-data") or {},
        }
    problem = bad or bad_id
    data = body.get("pass-data", {})
    if problem is None and not isinstance(data, dict):
        problem = failure("E100", "pass-data must be a JSON object")
    if problem:
        state.record_skycore_failure("", body, problem["error-code"])
        return problem
    assert pid is not None and tid is not None
    if action == "generatepass":
        if not state.skycore_generate(pid, tid, data, body.get("reference-data")):
            return failure("E830", f"pass not generated: pass-id {pid} already used")
        return {"status": "success", "pass-id": pid, "pass-url": PASS_URL_BASE + pid}
    # updatepassdata; `expired` is the documented end-of-life status ("voided" accepted as well)
    ends = data.get("void") is True or data.get("pass-status") in ("expired", "voided")
    pass_type = state.config.skycore_templates.get(tid)
    rec = state.skycore_update(pass_type or "", pid, tid, data, ends)
    if rec is None:
        return failure("E808", f"pass-id {pid} invalid (deleted or not this account's)")
    return {"status": "success", "pass-id": pid, "pass-status": "expired" if rec["voided"] else "active"}
