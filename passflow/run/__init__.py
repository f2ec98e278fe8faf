"""An issuance run, top-down: :mod:`.sequence` (the order) → :mod:`.issue` (the run's stages) →
:mod:`.plan` (pure planning against the ledger) and :mod:`.journal` (the run's lock and ledger writes).
The provider-specific part is the issuer (``passflow/providers/<name>/issuer.py``).

The names below load on first use, so that lower modules (the staging pool imports
:mod:`.journal`) can import a part of this package without the whole run.
"""

from __future__ import annotations

import importlib
from typing import Any

_EXPORTS = {
    "IssueRun": "passflow.run.issue",
    "RunCounts": "passflow.run.issue",
    "RunResult": "passflow.run.issue",
    "new_run_id": "passflow.run.issue",
    "run_issue": "passflow.run.sequence",
    "run_sequence": "passflow.run.sequence",
}
__all__ = sorted(_EXPORTS)


def __getattr__(name: str) -> Any:
    if name in _EXPORTS:
        return getattr(importlib.import_module(_EXPORTS[name]), name)
    raise AttributeError(f"module 'passflow.run' has no attribute {name!r}")
