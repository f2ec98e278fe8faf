"""Update actions: the campaign's ``[updates.actions.<name>]`` checked, then rendered per customer into
the exact request each vendor gets.

Each provider says (its ``UpdateSupport``, in ``passflow/providers/<name>/``) under which key an
action's values go (Skycore ``pass_data``, Passmachine ``template_variables``), which actions are
built in, and how one pass's request is built from the rendered values. ``changeMessage`` and the
like should use ``change_message(time)`` or ``in_days(7, 'Europe/Prague')`` from
:mod:`passflow.templating`, which get DST right where the seed's hand-written CET/CEST template does not.

Templates see the row as ``customer``: the segment's columns for ``--diff``; ``customer_id``,
``pass_id``, ``event`` and ``occurred_at`` for events and customer lists. A template that names a
column the row cannot have is a configuration error, raised before anything is sent.
"""

from __future__ import annotations

from datetime import datetime

import pandas as pd

from passflow.config import Campaign, UpdateAction, UpdateSettings
from passflow.errors import ConfigError, TemplateError
from passflow.providers import provider_of, update_support
from passflow.providers.base import campaign_vars
from passflow.secrets import resolve_secret
from passflow.templating import CompiledTemplate, compile_template


def update_settings(campaign: Campaign) -> UpdateSettings:
    return campaign.updates or UpdateSettings()


def actions_of(campaign: Campaign) -> dict[str, UpdateAction]:
    """The campaign's actions, over the provider's built-ins."""
    support = update_support(campaign)
    builtin = {
        name: UpdateAction.model_validate({support.action_values: dict(values)})
        for name, values in support.builtin_actions.items()
    }
    return {**builtin, **update_settings(campaign).actions}


def check_update_config(campaign: Campaign, *, action: str | None = None, diff: bool = False) -> None:
    """Stop before anything is read or sent when ``[updates]`` cannot do what was asked."""
    file = str(campaign.path) if campaign.path else None
    cfg = update_settings(campaign)
    support = update_support(campaign)
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
    if diff and support.diff_needs_action and not cfg.diff_action:
        raise ConfigError(
            "--diff needs the action whose values to send: set diff_action = \"<action>\" and define "
            f"[updates.actions.<action>.{support.action_values}]",
            file=file,
            key="updates.diff_action",
        )
    if cfg.diff_action and cfg.diff_action not in actions:
        raise ConfigError(f"diff_action {cfg.diff_action!r} is not defined; actions: {known}", file=file,
                          key="updates.diff_action")  # fmt: skip
    title = provider_of(campaign).title
    for name, act in actions.items():
        wrong = sorted(k for k in act.tables if k != support.action_values)
        if wrong:
            raise ConfigError(
                f"{title} updates are sent as {support.action_values}; move the values of "
                f"{', '.join(wrong)} there",
                file=file,
                key=f"updates.actions.{name}",
            )
    secrets = support.secrets or provider_of(campaign).secrets
    for key, ref in secrets(campaign).items():
        if ref is not None and ref.env:  # Prefect Secret blocks are resolved in the run itself
            resolve_secret(ref, file=file, key=key)
    if support.check is not None:
        support.check(campaign)


def diff_action(campaign: Campaign) -> str:
    return update_settings(campaign).diff_action or "refresh"


class ActionRenderer:
    """Renders actions over frames of rows; templates compiled once per run."""

    def __init__(self, campaign: Campaign, now: datetime) -> None:
        self.campaign = campaign
        self.support = update_support(campaign)
        self.now = now
        self.actions = actions_of(campaign)
        self._compiled: dict[str, dict[str, CompiledTemplate]] = {}

    def _templates(self, action: str) -> dict[str, CompiledTemplate]:
        if action not in self._compiled:
            act = self.actions[action]
            values = act.values(self.support.action_values)
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
        request = self.support.request
        requests = [
            None if isinstance(err, str) else request(self.campaign, pid, data, b)
            for pid, data, b, err in zip(rows["pass_id"].tolist(), datas, bases, errors.tolist(), strict=True)
        ]
        return pd.Series(requests, index=rows.index, dtype=object), errors

