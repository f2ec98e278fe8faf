"""Pass objects from the campaign's ``[googlewallet.object]`` template, one JSON text per row.

The template is a nested table; its string leaves are Jinja templates over the row (rendered with
the other providers' machinery, vectorised where simple). ``id`` is ``<issuer id>.<object suffix>``
and ``classId`` ``<issuer id>.<class suffix>``; ``state`` defaults to ``ACTIVE`` (REST reference).
Leaves under a key named ``int`` are integers in the reference (``loyaltyPoints.balance.int``) and
are sent as such; a value that is not an integer rejects the row.
"""

from __future__ import annotations

import json
import re
from collections.abc import Mapping
from datetime import datetime
from typing import Any

import pandas as pd

from passflow.providers.base import compile_templates, render_fields
from passflow.providers.googlewallet.settings import SUFFIX_RE, GoogleWalletSettings
from passflow.templating import CompiledTemplate
from passflow.validate import Rejects

_SUFFIX = re.compile(SUFFIX_RE)
_INT_KEYS = {"int"}
_SEP = "."  # a leaf's template name is its dotted path (as in error messages)
SUFFIX_FIELD = "__object_suffix__"


def payload_key(class_type: str) -> str:
    """``payload.<type>Objects`` (JWT reference)."""
    return f"{class_type}Objects"


def resource(class_type: str) -> str:
    """The REST resource: ``…/walletobjects/v1/<type>Object``."""
    return f"{class_type}Object"


def _leaves(tree: Mapping[str, Any], prefix: tuple[str, ...] = ()) -> list[tuple[tuple[str, ...], Any]]:
    out: list[tuple[tuple[str, ...], Any]] = []
    for key, value in tree.items():
        path = (*prefix, key)
        if isinstance(value, Mapping):
            out.extend(_leaves(value, path))
        else:
            out.append((path, value))
    return out


def _put(tree: dict[str, Any], path: tuple[str, ...], value: Any) -> None:
    for key in path[:-1]:
        tree = tree.setdefault(key, {})
    tree[path[-1]] = value


class ObjectTemplate:
    """Renders objects for a frame of validated rows."""

    def __init__(
        self, settings: GoogleWalletSettings, *, campaign_vars: Mapping[str, Any], now: datetime
    ) -> None:
        self.settings = settings
        leaves = _leaves(settings.object)
        self._literal = [(p, v) for p, v in leaves if not isinstance(v, str)]
        self._paths = {_SEP.join(p): p for p, v in leaves if isinstance(v, str)}
        sources = {name: settings.object_suffix if name == SUFFIX_FIELD else _get(settings.object, self._paths[name])
                   for name in [SUFFIX_FIELD, *self._paths]}  # fmt: skip
        self.templates: dict[str, CompiledTemplate] = compile_templates(
            sources, section="googlewallet.object", campaign_vars=campaign_vars, now=now
        )
        self._prefix = settings.issuer_id + "."
        self._class_id = settings.class_id

    def columns(self) -> set[str]:
        return set().union(*(t.columns for t in self.templates.values()))

    def render(self, df: pd.DataFrame, rejects: Rejects) -> tuple[pd.DataFrame, pd.Series, pd.Series]:
        """(good rows, object ids, object JSON texts) — bad rows go to ``rejects`` with the reason."""
        df, values = render_fields(self.templates, df, rejects)
        suffix = values[SUFFIX_FIELD]
        bad = ~suffix.str.fullmatch(_SUFFIX.pattern).fillna(False).astype(bool)
        if bad.any():
            rejects.add(df, bad, "invalid_object_id", "object id suffix '" + suffix + "' must be non-empty and "
                        "only letters, digits, '.', '_' or '-' (Google Wallet id rule)")  # fmt: skip
            df, values, suffix = df.loc[~bad], values.loc[~bad], suffix.loc[~bad]
        ids = self._prefix + suffix
        texts: list[str | None] = []
        names = list(self._paths)
        cols = [values[n].tolist() for n in names]
        state_given = "state" in self.settings.object
        errors: list[str | None] = []
        for i, object_id in enumerate(ids.tolist()):
            obj: dict[str, Any] = {"id": object_id, "classId": self._class_id}
            if not state_given:
                obj["state"] = "ACTIVE"
            error = None
            for path, value in self._literal:
                _put(obj, path, value)
            for name, col in zip(names, cols, strict=True):
                path, value = self._paths[name], col[i]
                if path[-1] in _INT_KEYS:
                    try:
                        value = int(str(value).strip())
                    except ValueError:
                        error = f"{'.'.join(path)} must be an integer, got {value!r}"
                        break
                _put(obj, path, value)
            errors.append(error)
            texts.append(None if error else json.dumps(obj, separators=(",", ":"), ensure_ascii=False))
        err = pd.Series(errors, index=df.index, dtype="object")
        failed = err.notna().to_numpy()
        if failed.any():
            rejects.add(df, failed, "template_error", err.astype(str))
        keep = ~failed
        return df.loc[keep], ids.loc[keep], pd.Series(texts, index=df.index, dtype="str").loc[keep]


def _get(tree: Mapping[str, Any], path: tuple[str, ...]) -> Any:
    for key in path:
        tree = tree[key]
    return tree
