"""Campaign files: TOML in, a validated :class:`Campaign` out — or a :class:`ConfigError` that names
the file, the key and what is expected, before anything is read or sent.

Relative paths (CSV files, SQLite URLs, export directory, ledger) resolve against the campaign
file's directory, so a campaign runs the same from any working directory, a deployment included.
Secrets are never literal values: they are ``{ env = "NAME" }`` or ``{ prefect_secret = "block" }``
references (see :mod:`passflow.secrets`).
"""

from __future__ import annotations

import os
import re
import tomllib
from pathlib import Path
from typing import Annotated, Any, Literal

from pydantic import (
    BaseModel,
    ConfigDict,
    Field,
    ValidationError,
    create_model,
    field_validator,
    model_validator,
)
from sqlalchemy.engine import make_url

from passflow.errors import ConfigError
from passflow.exports.formats import FORMATS, FormatSettings, check_format_names, known_formats
from passflow.secrets import SecretRef

PASS_TYPES = ("coupon", "giftcard", "loyaltycard", "eventticket", "boardingpass", "membership", "generic")
LEDGER_URL_ENV = "PASSFLOW_LEDGER_URL"
# Keys whose values are never echoed in errors: secrets, and URLs (they may carry a password).
SECRET_FIELDS = {
    "salt",
    "public_token",
    "secret_token",
    "api_key",
    "sql_url",
    "url",
    "secret",
    "password",
    "private_key",
    "access_key_id",
    "secret_access_key",
    "endpoint_url",
}


class StrictModel(BaseModel):
    """Base of every campaign-file section (providers' sections too)."""

    # Unknown keys are errors: a typo such as `max_per_secnd` must not be silently ignored.
    model_config = ConfigDict(extra="forbid", frozen=True)


_Model = StrictModel


class CampaignInfo(_Model):
    name: Annotated[str, Field(pattern=r"^[A-Za-z0-9][A-Za-z0-9_.-]{0,99}$")] = Field(
        description="Campaign id: letters, digits, '-', '_', '.'; used in the ledger and file names"
    )

    @field_validator("provider")
    @classmethod
    def _known_provider(cls, v: str) -> str:
        from passflow.providers import registry

        if v not in registry.names():
            raise ValueError(f"unknown provider; known providers: {', '.join(registry.names())}")
        return v

    provider: str = Field(description="A registered provider (passflow.providers.registry), e.g. skycore")
    pass_type: Literal[PASS_TYPES] = "coupon"  # type: ignore[valid-type]
    description: str = ""


class SourceSettings(_Model):
    csv: str | None = Field(None, description="Path of a CSV segment file")
    sql_url: str | None = Field(None, description="SQLAlchemy URL of the segment database")
    table: str | None = None
    query: str | None = None
    encoding: str = "auto"
    delimiter: Literal["auto", ",", ";", "\t", "|"] = "auto"
    # 50k rows: per-chunk overhead (2 Prefect task runs + the engine's spool/ledger/export fixed cost)
    # is ~12-14 % of a link run there and halves per doubling, while peak RSS grows with the chunk
    # (bench/bench_overhead.py, bench/README.md). API campaigns set ~1k: a row costs 1/rate there.
    chunk_size: int = Field(50_000, ge=1, le=1_000_000)

    @model_validator(mode="after")
    def _one_source(self) -> SourceSettings:
        if bool(self.csv) == bool(self.sql_url):
            raise ValueError('set exactly one of `csv = "path.csv"` or `sql_url = "dialect://…"`')
        if self.sql_url and bool(self.table) == bool(self.query):
            raise ValueError("with `sql_url`, set exactly one of `table` or `query`")
        if self.csv and (self.table or self.query):
            raise ValueError("`table`/`query` only apply to `sql_url` sources")
        return self


class ColumnMapping(_Model):
    """Which source columns hold the fields passflow itself needs."""

    customer_id: str = "customer_id"
    email: str | None = "email"
    phone: str | None = "phone"


class ValidationSettings(_Model):
    require_email: bool = False
    require_phone: bool = False
    default_phone_region: Annotated[str, Field(pattern=r"^[A-Z]{2}$")] = "US"
    max_reject_rate: float = Field(0.2, ge=0.0, le=1.0, description="Fail before issuing above this share")
    # email_validator rejects special-use domains (.test, .local, …); true lets *.test through (its
    # test_environment), for campaigns run against test inboxes
    allow_test_domains: bool = False


class Limits(_Model):
    max_in_flight: int = Field(
        10, ge=1, le=1000, description="Requests in flight at once (Bloomreach 'Limit')"
    )
    max_per_second: float | None = Field(10.0, gt=0, le=10_000, description="Request starts per second")
    max_attempts: int = Field(6, ge=1, le=20)
    timeout_s: float = Field(10.0, gt=0, le=300)
    failure_threshold: float = Field(0.5, gt=0, le=1.0, description="Stop when this share of calls fails…")
    failure_min_calls: int = Field(50, ge=1, description="…once at least this many calls were made")


class DbExportSettings(_Model):
    url: str
    table: Annotated[str, Field(pattern=r"^[A-Za-z_][A-Za-z0-9_]{0,62}$")]


class DeliverSettings(_Model):
    """``[export.deliver]``: where committed export files are uploaded for the CRM to import."""

    url: str = Field(description='"s3://bucket/prefix" or "sftp://host[:port]/path"')
    # S3 (and S3-compatible stores): without keys, the usual AWS credential chain applies
    access_key_id: SecretRef | None = None
    secret_access_key: SecretRef | None = None
    endpoint_url: str | None = Field(None, description="S3-compatible store, e.g. http://127.0.0.1:9000")
    region: str | None = None
    # SFTP: a password or a private key (its text, e.g. from a secret store), and the server's host key
    username: str | None = None
    password: SecretRef | None = None
    private_key: SecretRef | None = None
    known_hosts: str | None = Field(None, description="known_hosts file holding the SFTP server's key")
    timeout_s: float = Field(60.0, gt=0, le=3600)

    @field_validator("url")
    @classmethod
    def _target(cls, v: str) -> str:
        m = re.match(r"^(s3|sftp)://([^/\s]+)(/\S*)?$", v)
        if not m:
            raise ValueError('must be "s3://bucket/prefix" or "sftp://host[:port]/path"')
        if "@" in m.group(2):
            raise ValueError(
                "no user or password in the URL: set `username` and a `password`/`private_key` reference"
            )
        return v.rstrip("/")

    @field_validator("endpoint_url")
    @classmethod
    def _endpoint(cls, v: str | None) -> str | None:
        if v is not None and not re.match(r"^https?://\S+$", v):
            raise ValueError("must be an http(s) URL such as https://s3.eu-central-1.amazonaws.com")
        return v

    @model_validator(mode="after")
    def _credentials_fit(self) -> DeliverSettings:
        s3 = self.url.startswith("s3://")
        sftp_keys = [k for k in ("username", "password", "private_key", "known_hosts") if getattr(self, k)]
        s3_keys = [
            k for k in ("access_key_id", "secret_access_key", "endpoint_url", "region") if getattr(self, k)
        ]
        if s3 and sftp_keys:
            raise ValueError(f"{', '.join(sftp_keys)}: SFTP settings, but the url is s3://")
        if not s3 and s3_keys:
            raise ValueError(f"{', '.join(s3_keys)}: S3 settings, but the url is sftp://")
        if s3 and bool(self.access_key_id) != bool(self.secret_access_key):
            raise ValueError(
                "set both access_key_id and secret_access_key (or neither: the AWS credential chain)"
            )
        if not s3:
            if not self.username:
                raise ValueError("sftp:// needs `username`")
            if not (self.password or self.private_key):
                raise ValueError(
                    'sftp:// needs `password` or `private_key` (a reference, e.g. { env = "SFTP_KEY" })'
                )
            if not self.known_hosts:
                raise ValueError(
                    "sftp:// needs `known_hosts`: a file with the server's host key (ssh-keyscan HOST > file), "
                    "so the upload cannot go to an impostor"
                )
        return self


def _format_sections() -> type[_Model]:
    """One optional ``[export.<format>]`` section per registered export format."""
    return create_model(  # type: ignore[call-overload, no-any-return]
        "ExportFormatSections",
        __base__=_Model,
        **{f.id: (f.settings, Field(default_factory=f.settings)) for f in FORMATS.values()},
    )


class ExportSettings(_format_sections()):  # type: ignore[misc]
    directory: str = "exports"
    formats: list[str] = Field(
        default_factory=lambda: ["moengage", "bloomreach"],
        description=f"Any of: {', '.join(known_formats())}",
    )
    mode: Literal["snapshot", "changes"] = Field(
        "snapshot", description="snapshot: every customer holding a pass; changes: those issued in this run"
    )
    max_rows_per_file: int = Field(1_000_000, ge=1)
    db: DbExportSettings | None = None
    deliver: DeliverSettings | None = None

    @model_validator(mode="before")
    @classmethod
    def _old_bloomreach_key(cls, data: Any) -> Any:
        """``bloomreach_id_column`` (campaign files in the wild) = ``[export.bloomreach] id_column``."""
        if not isinstance(data, dict) or "bloomreach_id_column" not in data:
            return data
        data = dict(data)
        old = data.pop("bloomreach_id_column")
        section = dict(data.get("bloomreach") or {})
        if section.get("id_column", old) != old:
            raise ValueError(
                "bloomreach_id_column and [export.bloomreach] id_column disagree; keep only id_column"
            )
        section["id_column"] = old
        data["bloomreach"] = section
        return data

    @field_validator("formats")
    @classmethod
    def _known_formats(cls, v: list[str]) -> list[str]:
        return check_format_names(v)

    def format_settings(self, name: str) -> FormatSettings:
        """The ``[export.<name>]`` section of a registered format (its defaults when absent)."""
        return getattr(self, name)  # type: ignore[no-any-return]

    @property
    def bloomreach_id_column(self) -> str:
        """The old key's value, for code that still reads it."""
        return FORMATS["bloomreach"].id_column_for(self.format_settings("bloomreach"))


class CallbackSettings(_Model):
    """Vendor callbacks (``passflow callbacks``): how they authenticate and what they trigger."""

    secret: SecretRef = Field(description="Shared secret the vendor signs callbacks with")
    auth: list[Literal["signature", "token"]] = Field(
        default_factory=lambda: ["signature"],
        min_length=1,
        description="signature: HMAC-SHA256 over timestamp + body; token: the secret in a header",
    )
    max_age_s: float = Field(300.0, gt=0, le=86_400, description="Replay window for signed callbacks")
    emit_events: bool = Field(True, description="Emit passflow.pass.<event> Prefect events")


class LedgerSettings(_Model):
    url: str = "sqlite:///state/ledger.db"


class ScheduleSettings(_Model):
    """When a deployment runs this campaign (``passflow serve`` / ``passflow deploy``)."""

    cron: str = Field(description="Cron expression, e.g. '0 6 * * MON' (06:00 every Monday)")
    timezone: str = Field("UTC", description="IANA time zone the cron is read in, e.g. 'Europe/Prague'")
    active: bool = Field(True, description="false keeps the deployment but pauses its schedule")
    dry_run: bool = Field(False, description="Whether the scheduled runs are dry runs")
    manual_dry_run: bool = Field(
        True, description="Default of 'Dry run' for runs started by hand (the UI's Run button); false: real runs"
    )

    @field_validator("cron")
    @classmethod
    def _cron(cls, v: str) -> str:
        from datetime import datetime

        from cronsim import CronSim, CronSimError

        if len(v.split()) != 5:
            raise ValueError(
                "must be a 5-field cron expression (minute hour day month weekday), e.g. '0 6 * * MON'"
            )
        try:
            CronSim(v, datetime(2026, 1, 1))
        except CronSimError as exc:
            raise ValueError(f"not a valid cron expression: {exc}") from None
        return v

    @field_validator("timezone")
    @classmethod
    def _tz(cls, v: str) -> str:
        from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

        try:
            ZoneInfo(v)
        except (ZoneInfoNotFoundError, ValueError):
            raise ValueError("unknown time zone; use an IANA name such as 'Europe/Prague' or 'UTC'") from None
        return v


class UpdateAction(_Model):
    """What one update action sends (see :mod:`passflow.updates`): one table of value templates, under
    the key the campaign's provider reads (Skycore ``pass_data``, Passmachine ``template_variables``;
    see the provider's ``UpdateSupport.action_values``). Values are templates over the row: the
    segment's columns for ``--diff``; ``customer_id``, ``pass_id``, ``event``, ``occurred_at`` for
    events and customer lists."""

    # The key is the provider's, so it cannot be a fixed field; check_update_config names the right one.
    model_config = ConfigDict(extra="allow", frozen=True)

    @model_validator(mode="after")
    def _tables_of_text(self) -> UpdateAction:
        for key, table in (self.model_extra or {}).items():
            if not isinstance(table, dict) or not all(
                isinstance(k, str) and isinstance(v, str) for k, v in table.items()
            ):
                raise ValueError(f'[..{key}] must be a table of name = "template" strings')
        return self

    @property
    def tables(self) -> dict[str, dict[str, str]]:
        """Every value table of the action, by key (normally just the provider's)."""
        return dict(self.model_extra or {})

    def values(self, key: str) -> dict[str, str]:
        return dict((self.model_extra or {}).get(key, {}))


class UpdateEventsSettings(_Model):
    """Where events come from: a CSV file, a SQL table, or (``table`` alone) a table in the ledger DB,
    e.g. the vendor callbacks table ``passflow_pass_events``."""

    csv: str | None = None
    sql_url: str | None = None
    table: str | None = None
    customer_id_column: str = "customer_id"
    event_column: str = "event"
    time_column: str = "occurred_at"
    id_column: str | None = Field("event_id", description="Column with a unique event id, if any")

    @model_validator(mode="after")
    def _one_source(self) -> UpdateEventsSettings:
        if self.csv and (self.sql_url or self.table):
            raise ValueError('set either `csv = "events.csv"` or `table = "name"` (with optional `sql_url`)')
        if not self.csv and not self.table:
            raise ValueError('set `csv = "events.csv"` or `table = "passflow_pass_events"`')
        return self


class UpdateSettings(_Model):
    """``[updates]``: how passes of this campaign are updated after issuance."""

    api_base_url: str | None = Field(None, description="Skycore API base URL (the sandbox: …/skycore)")
    api_key: SecretRef | None = Field(None, description="Skycore X-Api-Key reference")
    pass_template_id: str | None = Field(None, description="Skycore pass-template-id")
    diff_action: str | None = Field(None, description="Action whose values are sent with --diff")
    chunk_size: int = Field(1000, ge=1, le=100_000, description="Customers per update task")
    actions: dict[str, UpdateAction] = Field(default_factory=dict)
    rules: dict[str, str] = Field(default_factory=dict, description="event name = action name")
    events: UpdateEventsSettings | None = None
    schedule: ScheduleSettings | None = Field(
        None, description="When the update-passes deployment runs (events source, else --diff)"
    )

    @field_validator("api_base_url")
    @classmethod
    def _api_url(cls, v: str | None) -> str | None:
        if v is not None and not re.match(r"^https?://\S+$", v):
            raise ValueError("must be an http(s) URL, e.g. the sandbox's http://127.0.0.1:8765/skycore")
        return v.rstrip("/") if v else v


class Campaign(_Model):
    campaign: CampaignInfo
    source: SourceSettings
    columns: ColumnMapping = ColumnMapping()
    validation: ValidationSettings = ValidationSettings()
    limits: Limits = Limits()
    export: ExportSettings = ExportSettings()
    ledger: LedgerSettings = LedgerSettings()
    schedule: ScheduleSettings | None = None
    callbacks: CallbackSettings | None = None
    updates: UpdateSettings | None = None
    #: the ``[<provider>]`` sections present, each validated by its provider's model (the registry's)
    provider_sections: dict[str, Any] = Field(default_factory=dict)
    # Set by the loader, not the file: where the campaign came from (for messages and paths).
    path: Path | None = Field(None, exclude=True)

    @model_validator(mode="before")
    @classmethod
    def _take_provider_sections(cls, data: Any) -> Any:
        """Move ``[<provider>]`` tables into ``provider_sections``, validated by their provider's model."""
        if not isinstance(data, dict) or "provider_sections" in data:
            return data
        from passflow.providers import registry

        data = dict(data)
        sections: dict[str, Any] = {}
        for provider in registry.all_providers():
            if provider.name in data:
                raw = data.pop(provider.name)
                try:
                    sections[provider.name] = provider.settings.model_validate(raw)
                except ValidationError as exc:
                    raise ProviderSectionError(provider.name, exc) from None
        data["provider_sections"] = sections
        return data

    @model_validator(mode="after")
    def _provider_section(self) -> Campaign:
        p = self.campaign.provider
        if p not in self.provider_sections:
            raise ValueError(f"campaign.provider is {p!r} but the [{p}] section is missing")
        return self

    @property
    def settings(self) -> Any:
        """The campaign's ``[<provider>]`` section (the provider's settings model)."""
        return self.provider_sections[self.campaign.provider]

    @property
    def name(self) -> str:
        return self.campaign.name

    @property
    def provider(self) -> str:
        return self.campaign.provider


def _resolve_path(value: str, base: Path) -> str:
    p = Path(value).expanduser()
    return str(p if p.is_absolute() else (base / p).resolve())


def resolve_db_url(url: str, base: Path) -> str:
    """Make a relative SQLite file path relative to ``base`` (SQLAlchemy would use the cwd)."""
    parsed = make_url(url)
    if parsed.get_backend_name() == "sqlite" and parsed.database and parsed.database != ":memory:":
        db = Path(parsed.database)
        if not db.is_absolute():
            return parsed.set(database=str((base / db).resolve())).render_as_string(hide_password=False)
    return url


class ProviderSectionError(Exception):
    """A provider's section failed its model (raised through pydantic, so the keys keep their section)."""

    def __init__(self, section: str, error: ValidationError) -> None:
        super().__init__(str(error))
        self.section = section
        self.error = error


def _format_validation_error(exc: ValidationError, file: str, prefix: tuple[str, ...] = ()) -> ConfigError:
    lines = []
    for err in exc.errors():
        key = ".".join(str(p) for p in (*prefix, *err["loc"])) or "(top level)"
        msg = err["msg"].removeprefix("Value error, ")
        if err["type"] == "extra_forbidden":
            msg = "unknown key (check the spelling; see data/campaigns/*.toml for the keys)"
        elif err["type"] == "missing":
            msg = "required key is missing"
        got = err.get("input")
        # Never echo what was written where a secret belongs: it may be the secret itself.
        secret_field = any(str(p) in SECRET_FIELDS for p in err["loc"])
        if (
            not secret_field
            and err["type"] not in ("missing", "extra_forbidden")
            and not isinstance(got, dict | list)
        ):
            msg += f" (got {got!r})"
        lines.append(f"  [{key}] {msg}")
    return ConfigError("invalid campaign file:\n" + "\n".join(lines), file=file)


def load_campaign(path: str | Path, overrides: dict[str, Any] | None = None) -> Campaign:
    """Read and validate a campaign file. ``overrides`` are dotted keys, e.g. ``{"source.csv": "x.csv"}``."""
    path = Path(path)
    file = str(path)
    try:
        raw = tomllib.loads(path.read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise ConfigError("campaign file not found", file=file) from None
    except UnicodeDecodeError:
        raise ConfigError("campaign file is not UTF-8 text", file=file) from None
    except tomllib.TOMLDecodeError as exc:
        raise ConfigError(f"not valid TOML: {exc}", file=file) from None

    for dotted, value in (overrides or {}).items():
        node = raw
        *parents, leaf = dotted.split(".")
        for part in parents:
            node = node.setdefault(part, {})
        node[leaf] = value

    base = path.resolve().parent
    try:
        campaign = Campaign.model_validate(raw)
    except ValidationError as exc:
        raise _format_validation_error(exc, file) from None
    except ProviderSectionError as exc:
        raise _format_validation_error(exc.error, file, (exc.section,)) from None

    # Resolve relative locations against the campaign file's directory.
    src = campaign.source
    updates: dict[str, Any] = {}
    try:
        if src.csv:
            updates["source"] = src.model_copy(update={"csv": _resolve_path(src.csv, base)})
        else:
            updates["source"] = src.model_copy(update={"sql_url": resolve_db_url(src.sql_url or "", base)})
    except Exception as exc:  # noqa: BLE001 - make_url errors name the URL format
        raise ConfigError(
            f"not a valid database URL ({type(exc).__name__})", file=file, key="source.sql_url"
        ) from None
    ledger_url = os.environ.get(LEDGER_URL_ENV) or campaign.ledger.url
    try:
        updates["ledger"] = LedgerSettings(url=resolve_db_url(ledger_url, base))
    except Exception:  # noqa: BLE001
        raise ConfigError("not a valid database URL", file=file, key="ledger.url") from None
    export = campaign.export.model_copy(update={"directory": _resolve_path(campaign.export.directory, base)})
    if export.db:
        export = export.model_copy(
            update={"db": export.db.model_copy(update={"url": resolve_db_url(export.db.url, base)})}
        )
    if export.deliver is not None and export.deliver.known_hosts:
        known_hosts = _resolve_path(export.deliver.known_hosts, base)
        if not Path(known_hosts).is_file():
            raise ConfigError(
                f"{known_hosts} is not a file; write the SFTP server's host key there "
                "(ssh-keyscan -p PORT HOST > known_hosts) before the run",
                file=file,
                key="export.deliver.known_hosts",
            )
        export = export.model_copy(
            update={"deliver": export.deliver.model_copy(update={"known_hosts": known_hosts})}
        )
    updates["export"] = export
    if campaign.updates is not None:
        updates["updates"] = _resolve_update_paths(campaign.updates, base, file)
    return campaign.model_copy(update={**updates, "path": path.resolve()})


def _resolve_update_paths(settings: UpdateSettings, base: Path, file: str) -> UpdateSettings:
    """Relative event CSV paths and SQLite URLs of ``[updates.events]``, against the campaign's directory."""
    ev = settings.events
    if ev is None:
        return settings
    try:
        ev = ev.model_copy(
            update={
                "csv": _resolve_path(ev.csv, base) if ev.csv else None,
                "sql_url": resolve_db_url(ev.sql_url, base) if ev.sql_url else None,
            }
        )
    except Exception:  # noqa: BLE001 - make_url errors name the URL format
        raise ConfigError("not a valid database URL", file=file, key="updates.events.sql_url") from None
    return settings.model_copy(update={"events": ev})
