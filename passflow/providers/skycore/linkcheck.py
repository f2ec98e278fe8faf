"""Checking signed links: one link against every recipe, or every link of an export file."""

from __future__ import annotations

import csv
import os
from pathlib import Path

from passflow.errors import ConfigError, PassflowError
from passflow.providers.skycore.links import LinkRecipe, matching_recipes, parse_link, verify_link
from passflow.secrets import register_secret, resolve_secret


def recipe_and_salt(*, campaign: Path | None, salt_env: str | None) -> tuple[LinkRecipe, str | None]:
    """The recipe and salt to check with: a campaign's settings, or defaults plus a salt from the env."""
    salt = None
    recipe = LinkRecipe()
    if campaign is not None:
        from passflow.config import load_campaign
        from passflow.providers.skycore.settings import SkycoreSettings

        c = load_campaign(campaign)
        sky = c.provider_sections.get("skycore")
        if not isinstance(sky, SkycoreSettings):
            raise ConfigError("not a Skycore campaign: it has no [skycore] section", file=str(campaign))
        recipe = LinkRecipe(salt_position=sky.salt_position, hex_case=sky.hex_case, hash_input=sky.hash_input)
        if sky.salt:
            salt = resolve_secret(sky.salt, file=str(campaign), key="skycore.salt").get_secret_value()
    if salt_env:
        salt = os.environ.get(salt_env)
        if not salt:
            raise PassflowError(f"environment variable {salt_env} (given by --salt-env) is not set")
        register_secret(salt)
    return recipe, salt


def explain_link(link: str, *, salt: str | None, recipe: LinkRecipe | None) -> tuple[str, bool]:
    """A short report for one link; ``recipe=None`` means "find every recipe that matches"."""
    try:
        parsed = parse_link(link)
    except ValueError as exc:
        return f"invalid link: {exc}", False
    params = ", ".join(f"{k}={v!r}" for k, v in parsed.params)
    head = f"link to {parsed.base}\n  parameters: {params}\n  checksum: {parsed.checksum}"
    if recipe is not None:
        ok = verify_link(link, salt=salt, recipe=recipe)
        return head + f"\n  {'VALID' if ok else 'INVALID'} under {recipe.describe()}", ok
    matches = matching_recipes(link, salt=salt)
    if not matches:
        hint = "" if salt else " (if the link is salted, pass --salt-env VAR with the salt in VAR)"
        return head + f"\n  INVALID: no recipe matches{hint}", False
    lines = [head, "  VALID under:"] + [f"    {m.describe()}" for m in matches]
    lines.append(
        "  set these in the campaign's [skycore] section (salt_position / hex_case / hash_input)"
    )
    return "\n".join(lines), True


def check_export(path: Path, *, salt: str | None, recipe: LinkRecipe) -> tuple[int, list[tuple[int, str]], int]:
    """Verify every link of an export file. Returns (valid, [(row, reason)], total)."""
    if not path.exists():
        raise PassflowError(f"{path}: file not found")
    ok, bad, total = 0, [], 0
    with path.open(newline="", encoding="utf-8") as f:
        reader = csv.DictReader(f)
        cols = [c for c in (reader.fieldnames or []) if c.endswith("_pass_link")]
        if not cols:
            raise PassflowError(f"{path}: no *_pass_link column (columns: {', '.join(reader.fieldnames or [])})")
        for i, row in enumerate(reader, start=2):
            total += 1
            if verify_link(row[cols[0]], salt=salt, recipe=recipe):
                ok += 1
            else:
                bad.append((i, "checksum does not match"))
    return ok, bad, total
