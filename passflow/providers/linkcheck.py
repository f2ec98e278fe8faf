"""``passflow verify-link`` for providers that describe their links (:class:`LinkCheckSupport`):
which provider a link or an export column belongs to, without naming any provider here."""

from __future__ import annotations

import csv
from pathlib import Path

from passflow.errors import PassflowError
from passflow.providers import registry
from passflow.providers.spec import LinkCheckSupport


def _campaign(path: Path | None):  # noqa: ANN202
    if path is None:
        return None
    from passflow.config import load_campaign

    return load_campaign(path)


def support_for_link(link: str) -> LinkCheckSupport | None:
    for p in registry.all_providers():
        if p.links is not None and p.links.recognises(link):
            return p.links
    return None


def explain_any(link: str, campaign: Path | None) -> tuple[str, bool] | None:
    """A report for a link some provider recognises, else None (the caller's own check applies)."""
    support = support_for_link(link)
    return None if support is None else support.explain(link, _campaign(campaign))


def check_export_any(path: Path, campaign: Path | None) -> tuple[int, list[tuple[int, str]], int] | None:
    """(valid, [(row, reason)], total) for an export whose ``<provider>_pass_link`` column belongs to a
    provider with a link check, else None."""
    if not path.exists():
        raise PassflowError(f"{path}: file not found")
    with path.open(newline="", encoding="utf-8") as f:
        reader = csv.DictReader(f)
        cols = [c for c in (reader.fieldnames or []) if c.endswith("_pass_link")]
        names = {p.name: p for p in registry.all_providers() if p.links is not None}
        col = next((c for c in cols if c.removesuffix("_pass_link") in names), None)
        if col is None:
            return None
        check = names[col.removesuffix("_pass_link")].links.checker(_campaign(campaign))  # type: ignore[union-attr]
        ok, bad, total = 0, [], 0
        for i, row in enumerate(reader, start=2):
            total += 1
            reason = check(row[col])
            if reason is None:
                ok += 1
            else:
                bad.append((i, reason))
    return ok, bad, total
