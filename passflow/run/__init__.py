"""An issuance run, top-down: :mod:`.sequence` (the order) → :mod:`.issue` (the run's stages) →
:mod:`.plan` (pure planning against the ledger) and :mod:`.journal` (the run's lock and ledger writes).
The provider-specific part is the issuer (``passflow/providers/<name>/issuer.py``)."""

from passflow.run.issue import IssueRun, RunCounts, RunResult, new_run_id
from passflow.run.sequence import run_issue, run_sequence

__all__ = ["IssueRun", "RunCounts", "RunResult", "new_run_id", "run_issue", "run_sequence"]
