"""The export-format registry: one declarative :class:`ExportFormat` entry per CRM import.

An entry says everything the rest of passflow needs to know about a CRM's customer-attribute CSV:
its id column, which channel columns it matches contacts on, how files are named, and the CRM's
documented import limits (rows and bytes per file, characters per value). Its settings model is the
campaign file's ``[export.<id>]`` section. Adding a CRM is adding an entry to :data:`FORMATS`.

Sources (December 2026):

* MoEngage — https://help.moengage.com/hc/en-us/articles/19192630201620-Import-User-Data : UTF-8 CSV,
  a column mapped to ``ID``; attribute values at most 512 characters (longer ones are cut to 512 —
  for a signed link that is a broken checksum, so passflow refuses instead); files fetched from
  S3/SFTP must be named ``registered_user_data_…``.
* Bloomreach — https://documentation.bloomreach.com/engagement/docs/import-customers : hard id
  ``registered``, ``email``/``phone`` spelled so; one import at most 1,000,000 rows and 1 GB.
* Braze — https://www.braze.com/docs/user_guide/data/unification/user_data/import_users/csv/ and
  https://www.braze.com/docs/user_guide/data/activation/custom_data/data_types/ : identifier column
  ``external_id``; attribute files up to 500 MB; custom attribute strings 255 characters or fewer;
  times ISO 8601 (passflow's ``…_pass_gendate`` is ``YYYY-MM-DDTHH:MM:SSZ``). Braze names no row
  limit (assumption: none beyond the file size). Including ``email``/``phone`` overwrites the
  profile's values and costs data points, so the Braze file carries the pass attributes only.

"MB"/"GB" are read as powers of ten (the smaller reading), so a file is never over the CRM's limit.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from typing import Literal

from pydantic import BaseModel, ConfigDict, Field

from passflow.errors import ConfigError

__all__ = [
    "FORMATS",
    "BloomreachSettings",
    "BrazeSettings",
    "ExportFormat",
    "FormatSettings",
    "MoEngageSettings",
    "get_format",
    "known_formats",
    "safe_name",
]


class FormatSettings(BaseModel):
    """``[export.<format>]`` keys every format has. Limits may be lowered, never raised past the CRM's."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    id_column: str | None = Field(None, description="Header of the customer id column (default: the CRM's)")
    max_rows_per_file: int | None = Field(None, ge=1, description="Split files above this many rows")
    max_bytes_per_file: int | None = Field(None, ge=1024, description="Split files above this many bytes")
    max_value_chars: int | None = Field(None, ge=1, description="Reject rows with a longer attribute value")


class MoEngageSettings(FormatSettings):
    max_value_chars: int | None = Field(None, ge=1, le=512)
    file_naming: Literal["default", "s3_import"] = Field(
        "default", description="s3_import: names start registered_user_data_ (MoEngage S3/SFTP imports)"
    )


class BloomreachSettings(FormatSettings):
    max_rows_per_file: int | None = Field(None, ge=1, le=1_000_000)
    max_bytes_per_file: int | None = Field(None, ge=1024, le=1_000_000_000)


class BrazeSettings(FormatSettings):
    max_bytes_per_file: int | None = Field(None, ge=1024, le=500_000_000)
    max_value_chars: int | None = Field(None, ge=1, le=255)


@dataclass(frozen=True)
class FileStem:
    """The parts an export file name is made of (all already file-name safe)."""

    campaign: str
    provider: str
    stamp: str  # YYYYmmddTHHMMSSZ
    run: str  # first 8 characters of the run id


def _default_stem(fmt: ExportFormat, settings: FormatSettings, p: FileStem) -> str:
    return f"{p.campaign}-{p.provider}-{fmt.id}-{p.stamp}-{p.run}"


def _moengage_stem(fmt: ExportFormat, settings: FormatSettings, p: FileStem) -> str:
    if getattr(settings, "file_naming", "default") == "s3_import":
        # MoEngage's S3/SFTP import picks up files by this prefix
        return f"registered_user_data_{p.campaign}-{p.provider}-{p.stamp}-{p.run}"
    return _default_stem(fmt, settings, p)


@dataclass(frozen=True)
class ExportFormat:
    """One CRM's customer-attribute CSV import, as the CRM documents it."""

    id: str  # the name in `[export] formats` and in file names
    title: str  # for messages
    id_column: str  # header of the customer id column
    settings: type[FormatSettings]  # the `[export.<id>]` section
    pass_through: tuple[str, ...] = ()  # input columns exported under their own names when present
    max_rows_per_file: int | None = None  # the CRM's documented limits (None: none documented)
    max_bytes_per_file: int | None = None
    max_value_chars: int | None = None  # characters per attribute value
    stem: Callable[[ExportFormat, FormatSettings, FileStem], str] = _default_stem

    def file_stem(self, settings: FormatSettings | None, parts: FileStem) -> str:
        return self.stem(self, settings or self.settings(), parts)

    def id_column_for(self, settings: FormatSettings | None) -> str:
        return (settings.id_column if settings is not None else None) or self.id_column

    def rows_limit(self, settings: FormatSettings | None, campaign_limit: int | None = None) -> int | None:
        """Rows per file: the smallest of the CRM's limit, the section's and ``[export] max_rows_per_file``."""
        return _smallest(self.max_rows_per_file, settings and settings.max_rows_per_file, campaign_limit)

    def bytes_limit(self, settings: FormatSettings | None) -> int | None:
        return _smallest(self.max_bytes_per_file, settings and settings.max_bytes_per_file)

    def value_chars_limit(self, settings: FormatSettings | None) -> int | None:
        return _smallest(self.max_value_chars, settings and settings.max_value_chars)


def _smallest(*limits: int | None) -> int | None:
    present = [x for x in limits if x]
    return min(present) if present else None


FORMATS: dict[str, ExportFormat] = {
    f.id: f
    for f in (
        ExportFormat(
            id="moengage",
            title="MoEngage",
            id_column="ID",
            settings=MoEngageSettings,
            max_value_chars=512,
            stem=_moengage_stem,
        ),
        ExportFormat(
            id="bloomreach",
            title="Bloomreach",
            id_column="registered",
            settings=BloomreachSettings,
            pass_through=("email", "phone"),
            max_rows_per_file=1_000_000,
            max_bytes_per_file=1_000_000_000,
        ),
        ExportFormat(
            id="braze",
            title="Braze",
            id_column="external_id",
            settings=BrazeSettings,
            max_bytes_per_file=500_000_000,
            max_value_chars=255,
        ),
    )
}


def known_formats() -> list[str]:
    return sorted(FORMATS)


def get_format(name: str, *, file: str | None = None, key: str = "export.formats") -> ExportFormat:
    """The registry entry, or a configuration error listing the known formats."""
    try:
        return FORMATS[name]
    except KeyError:
        raise ConfigError(
            f"unknown export format {name!r}; known formats: {', '.join(known_formats())}", file=file, key=key
        ) from None


def check_format_names(names: Iterable[str]) -> list[str]:
    """``[export] formats`` as given, or ValueError naming the unknown/repeated ones and the known ones."""
    names = list(names)
    unknown = [n for n in names if n not in FORMATS]
    if unknown:
        raise ValueError(
            f"unknown export format(s) {', '.join(map(repr, unknown))}; known formats: {', '.join(known_formats())}"
        )
    repeated = sorted({n for n in names if names.count(n) > 1})
    if repeated:
        raise ValueError(f"export format(s) listed more than once: {', '.join(repeated)}")
    return names


def safe_name(value: str, fallback: str) -> str:
    """A file-name-safe token: no path separators, no leading dot (that would hide the file)."""
    cleaned = re.sub(r"[^A-Za-z0-9._-]+", "_", value).strip("._-")
    return cleaned or fallback
