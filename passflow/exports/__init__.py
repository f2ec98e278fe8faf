"""Customer-attribute exports that CRMs import, and their delivery.

* :mod:`~passflow.exports.formats` — the export-format registry (MoEngage, Bloomreach, Braze):
  id column, columns, file naming, the CRM's import limits; ``[export.<format>]`` settings.
* :mod:`~passflow.exports.writer` — the atomic, streaming CSV writer (the 1M-row hot path).
* :mod:`~passflow.exports.limits` — value-length rules, applied before anything is issued.
* :mod:`~passflow.exports.db` — the optional DB table export.
* :mod:`~passflow.exports.deliver` — upload of committed files to S3 / SFTP (``[export.deliver]``).
* :mod:`~passflow.exports.install_status` — install-status attributes of campaigns with callbacks.
"""

from passflow.exports.db import DbAttributeExport
from passflow.exports.formats import FORMATS, ExportFormat, get_format, known_formats
from passflow.exports.install_status import INSTALL_STATUS_ATTRS, install_status_columns, with_install_status
from passflow.exports.writer import (
    AttributeExport,
    CsvCells,
    cleanup_stale_partials,
    export_file_prefix,
    neutralise_formulas,
    write_report_csv,
)

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
