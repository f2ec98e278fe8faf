"""Customer-attribute exports that CRMs import, and their delivery.

* :mod:`~passflow.exports.formats` — the export-format registry (MoEngage, Bloomreach, Braze):
  id column, columns, file naming, the CRM's import limits; ``[export.<format>]`` settings.
* :mod:`~passflow.exports.writer` — the atomic, streaming CSV writer (the 1M-row hot path).
* :mod:`~passflow.exports.limits` — value-length rules, applied before anything is issued.
* :mod:`~passflow.exports.db` — the optional DB table export.
* :mod:`~passflow.exports.deliver` — upload of committed files to S3 / SFTP (``[export.deliver]``).
* :mod:`~passflow.exports.install_status` — install-status attributes of campaigns with callbacks.
"""

from __future__ import annotations

import importlib
from typing import Any

# Names resolved on first use (PEP 562), so that reading a campaign file (passflow.config imports
# the format registry) does not import pandas, pyarrow and SQLAlchemy's dialects.
_WHERE = {
    "DbAttributeExport": "db",
    "FORMATS": "formats",
    "ExportFormat": "formats",
    "get_format": "formats",
    "known_formats": "formats",
    "INSTALL_STATUS_ATTRS": "install_status",
    "install_status_columns": "install_status",
    "with_install_status": "install_status",
    "AttributeExport": "writer",
    "CsvCells": "writer",
    "cleanup_stale_partials": "writer",
    "export_file_prefix": "writer",
    "neutralise_formulas": "writer",
    "write_report_csv": "writer",
}


def __getattr__(name: str) -> Any:
    if name not in _WHERE:
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
    value = getattr(importlib.import_module(f"{__name__}.{_WHERE[name]}"), name)
    globals()[name] = value
    return value


__all__ = [
    "FORMATS",
    "INSTALL_STATUS_ATTRS",
    "AttributeExport",
    "CsvCells",
    "DbAttributeExport",
    "ExportFormat",
    "cleanup_stale_partials",
    "export_file_prefix",
    "get_format",
    "install_status_columns",
    "known_formats",
    "neutralise_formulas",
    "with_install_status",
    "write_report_csv",
]
