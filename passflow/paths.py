"""Where a relative path given by a person (a campaign file, a segment override) is looked up.

One rule everywhere (CLI, flow forms, deployments, the inbox): the working directory first, then the
project directory: ``PASSFLOW_PROJECT_DIR`` if set, else the checkout this code runs from (a source
checkout or an editable install). A worker running an installed (non-editable) passflow has no
checkout: it sets ``PASSFLOW_PROJECT_DIR`` to the folder holding its ``data/campaigns`` (or starts in
that folder), and a deployment's default ``data/campaigns/x.toml`` resolves there.
"""

from __future__ import annotations

import os
from pathlib import Path

PROJECT_DIR_ENV = "PASSFLOW_PROJECT_DIR"
_CHECKOUT = Path(__file__).resolve().parents[1]


def project_root() -> Path:
    """The project directory (see the module docstring)."""
    configured = os.environ.get(PROJECT_DIR_ENV)
    if configured:
        return Path(configured).expanduser().resolve()
    if (_CHECKOUT / "pyproject.toml").exists():
        return _CHECKOUT
    return Path.cwd()


def resolve_user_path(value: str | Path) -> Path:
    """An absolute path as it is; a relative one against the working directory if it exists there, else
    against the project directory (where it may not exist either: the caller's error shows the path)."""
    path = Path(value).expanduser()
    if path.is_absolute() or path.exists():
        return path
    candidate = project_root() / path
    return candidate if candidate.exists() else path
