"""Update actions: the campaign's ``[updates.actions.<name>]`` checked, then rendered per customer into
the exact request each vendor gets.

* Skycore: ``{"pass-id", "pass-template-id", "pass-data": {...}}`` for the pass update API. Built in
  (override them in the campaign file): ``void`` = ``{"pass-status": "voided"}``, ``expire`` =
  ``{"pass-status": "expired"}``.
* Passmachine: an RFC 6902 JSON Patch — one ``replace /templateVariables/<name>`` per template
  variable (the seed's ``fieldValue`` / ``changeMessage`` notification). ``changeMessage`` should use
  ``change_message(time)`` or ``in_days(7, 'Europe/Prague')`` from :mod:`passflow.templating`, which
  get DST right where the seed's hand-written CET/CEST template does not.

Templates see the row as ``customer``: the segment's columns for ``--diff``; ``customer_id``,
``pass_id``, ``event`` and ``occurred_at`` for events and customer lists. A template that names a
column the row cannot have is a configuration error, raised before anything is sent.
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from datetime import datetime
from typing import Any

import pandas as pd

from passflow.config import Campaign, UpdateAction, UpdateSettings
from passflow.errors import ConfigError, TemplateError
from passflow.issuers.base import campaign_vars
from passflow.secrets import resolve_secret
from passflow.templating import CompiledTemplate, compile_template

SKYCORE_BUILTIN = {
    "void": UpdateAction(pass_data={"pass-status": "voided"}),
    "expire": UpdateAction(pass_data={"pass-status": "expired"}),
}


def update_settings(campaign: Campaign) -> UpdateSettings:
    return campaign.updates or UpdateSettings()


# Passmachine's --diff re-sends every template variable; "refresh" adds nothing to that by default.
PASSMACHINE_BUILTIN = {"refresh": UpdateAction()}


def actions_of(campaign: Campaign) -> dict[str, UpdateAction]:
    """The campaign's actions, over the provider's built-ins."""
    builtin = SKYCORE_BUILTIN if campaign.provider == "skycore" else PASSMACHINE_BUILTIN
    return {**builtin, **update_settings(campaign).actions}


def check_update_config(campaign: Campaign, *, action: str | None = None, diff: bool = False) -> None:
    """Stop before anything is read or sent when ``[updates]`` cannot do what was asked."""
    file = str(campaign.path) if campaign.path else None
    cfg = update_settings(campaign)
    actions = actions_of(campaign)
    known = ", ".join(sorted(actions)) or "(none defined)"
    for event, name in cfg.rules.items():
        if name not in actions:
            raise ConfigError(
                f"rule {event!r} maps to action {name!r}, which is not defined; actions: {known}. "
                f"Add [updates.actions.{name}] or fix the rule",
                file=file,
                key=f"updates.rules.{event}",
            )
    if action is not None and action not in actions:
        raise ConfigError(
            f"unknown update action {action!r}; actions: {known}. Define it under [updates.actions.{action}]",
            file=file,
            key="updates.actions",
        )
    if diff and campaign.provider == "skycore" and not cfg.diff_action:
        raise ConfigError(
            "--diff needs the action whose values to send: set diff_action = \"<action>\" and define "
            "[updates.actions.<action>.pass_data]",
            file=file,
            key="updates.diff_action",
        )
    if cfg.diff_action and cfg.diff_action not in actions:
        raise ConfigError(f"diff_action {cfg.diff_action!r} is not defined; actions: {known}", file=file,
                          key="updates.diff_action")  # fmt: skip
    for name, act in actions.items():
        wrong = act.template_variables if campaign.provider == "skycore" else act.pass_data
        if wrong:
            right = "pass_data" if campaign.provider == "skycore" else "template_variables"
            raise ConfigError(
                f"{campaign.provider} updates are sent as {right}; move the values there",
                file=file,
                key=f"updates.actions.{name}",
            )
    refs = {"updates.api_key": cfg.api_key}
    if campaign.passmachine is not None:
        refs |= {"passmachine.public_token": campaign.passmachine.public_token,
                 "passmachine.secret_token": campaign.passmachine.secret_token}  # fmt: skip
    for key, ref in refs.items():
        if ref is not None and ref.env:  # Prefect Secret blocks are resolved in the run itself
            resolve_secret(ref, file=file, key=key)
    if campaign.provider == "skycore":
        for key in ("api_base_url", "api_key", "pass_template_id"):
            if not getattr(cfg, key):
                raise ConfigError(
                    "Skycore updates need api_base_url, api_key = { env = \"SKYCORE_API_KEY\" } and "
                    "pass_template_id under [updates]",
                    file=file,
                    key=f"updates.{key}",
                )


def diff_action(campaign: Campaign) -> str:
    return update_settings(campaign).diff_action or "refresh"


def json_pointer(name: str) -> str:
    """RFC 6901 escaping of one path segment."""
    return name.replace("~", "~0").replace("/", "~1")


class ActionRenderer:
    """Renders actions over frames of rows; templates compiled once per run."""

    def __init__(self, campaign: Campaign, now: datetime) -> None:
        self.campaign = campaign
        self.provider = campaign.provider
        self.now = now
        self.actions = actions_of(campaign)
        self._compiled: dict[str, dict[str, CompiledTemplate]] = {}
        cfg = update_settings(campaign)
        self.pass_template_id = cfg.pass_template_id

    def _templates(self, action: str) -> dict[str, CompiledTemplate]:
        if action not in self._compiled:
            act = self.actions[action]
            values = act.pass_data if self.provider == "skycore" else act.template_variables
            section = f"updates.actions.{action}"
            self._compiled[action] = {
                k: compile_template(v, name=f"{section}.{k}", campaign=campaign_vars(self.campaign.campaign),
                                    now=self.now)
                for k, v in values.items()
            }  # fmt: skip
        return self._compiled[action]

    def check(self, action: str, available: set[str]) -> None:
        """Stop when the action's templates read a column the rows will not have (before any send)."""
        missing = sorted(set().union(*(t.columns for t in self._templates(action).values())) - available)
        if missing:
            raise ConfigError(
                f"action {action!r} uses column(s) {', '.join(map(repr, missing))} that these rows do not have; "
                f"available: {', '.join(sorted(available))}",
                file=str(self.campaign.path),
                key=f"updates.actions.{action}",
            )

    def render(self, action: str, rows: pd.DataFrame, base: pd.Series | None = None) -> tuple[pd.Series, pd.Series]:
        """(request JSON, error or None) per row of ``rows`` (needs ``pass_id``). ``base``: Passmachine
        template variables (dicts) to replace before the action's own (the ``--diff`` refresh)."""
        templates = self._templates(action)
        values: dict[str, pd.Series] = {}
        errors = pd.Series([None] * len(rows), index=rows.index, dtype=object)
        for name, tpl in templates.items():
            try:
                result = tpl.render_frame(rows)
            except TemplateError as exc:
                raise ConfigError(str(exc), file=str(self.campaign.path), key=f"updates.actions.{action}") from None
            values[name] = result.values
            bad = result.errors.notna() & errors.isna()
            errors[bad] = f"template {name!r}: " + result.errors[bad].astype(str)
        names = list(values)
        if names:
            datas = [dict(zip(names, vals, strict=True)) for vals in zip(*(values[n].tolist() for n in names), strict=True)]
        else:
            datas = [{} for _ in range(len(rows))]
        bases = [None] * len(rows) if base is None else base.tolist()
        requests = [
            None if isinstance(err, str) else self._request(pid, data, b)
            for pid, data, b, err in zip(rows["pass_id"].tolist(), datas, bases, errors.tolist(), strict=True)
        ]
        return pd.Series(requests, index=rows.index, dtype=object), errors

    def _request(self, pass_id: str, data: Mapping[str, str], base: Mapping[str, Any] | None) -> str:
        if self.provider == "skycore":
            body = {"pass-id": pass_id, "pass-template-id": self.pass_template_id, "pass-data": dict(data)}
            return json.dumps(body, ensure_ascii=False)
        variables = {**(base or {}), **data}
        ops = [{"op": "replace", "path": f"/templateVariables/{json_pointer(k)}", "value": v} for k, v in variables.items()]
        return json.dumps(ops, ensure_ascii=False)

