"""Delivery of committed export files to where a CRM imports them: an S3-compatible bucket or an
SFTP folder (``[export.deliver]``), through fsspec (``s3fs``, ``sshfs``).

* **Never a partial file under the final name**: each file is uploaded as ``.<name>.partial`` next
  to its final name, then moved into place — on SFTP a POSIX rename (atomic, replaces), on S3 a
  server-side copy (the object appears whole) and the temporary object is removed.
* **A failed upload fails the run loudly** (:class:`DeliveryError`), and **the rerun delivers the
  same files**: a committed file carries a hidden ``.<name>.undelivered`` marker beside it from
  before its rename until its delivery succeeded. Every run of the campaign delivers the marked
  files of earlier runs first. Delivering again writes the same name, so the CRM's folder holds
  one object per file however often a delivery was interrupted.
* **Secrets**: credentials are resolved from their references for the upload only; error text
  never carries them (and goes through :func:`passflow.secrets.redact`).
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any
from urllib.parse import urlsplit

from fsspec.callbacks import Callback

from passflow.errors import PassflowError
from passflow.exports.writer import export_file_prefix
from passflow.secrets import redact, resolve_secret
from passflow.shutdown import crash_point

if TYPE_CHECKING:
    from passflow.config import Campaign, DeliverSettings

__all__ = [
    "DeliveryError",
    "DeliveryTarget",
    "deliver_exports",
    "deliver_pending",
    "delivery_marker",
    "mark_undelivered",
    "open_target",
    "undelivered",
]

log = logging.getLogger("passflow")

_MARKER_SUFFIX = ".undelivered"
_TEMP_SUFFIX = ".partial"
_S3_PART_BYTES = 8 << 20  # multipart part size; parts go up in parallel


class DeliveryError(PassflowError):
    """An export could not be delivered; the run fails and the next run delivers the file again."""


def _marker(path: Path) -> Path:
    return path.with_name(f".{path.name}{_MARKER_SUFFIX}")


def mark_undelivered(paths: Iterable[Path]) -> None:
    """Mark files (by their final names, before they appear) as still to be delivered."""
    for path in paths:
        _marker(path).touch()


def undelivered(directory: Path, prefix: str = "") -> list[Path]:
    """Committed files under ``directory`` whose delivery has not succeeded yet, oldest first.
    A marker whose file never appeared (its run failed before the rename) is removed."""
    out: list[tuple[float, str, Path]] = []
    if not directory.is_dir():
        return []
    for marker in directory.glob(f".{prefix}*{_MARKER_SUFFIX}"):
        path = directory / marker.name[1 : -len(_MARKER_SUFFIX)]
        try:
            out.append((path.stat().st_mtime, path.name, path))
        except FileNotFoundError:
            marker.unlink(missing_ok=True)
    return [p for _, _, p in sorted(out)]


class _UploadProgress(Callback):  # type: ignore[misc]
    """Called between upload blocks: the crash test hook (``PASSFLOW_CRASH_AT=deliver_upload:n``)."""

    def call(self, *args: Any, **kwargs: Any) -> None:
        crash_point("deliver_upload")


@dataclass
class DeliveryTarget:
    """An opened destination: the filesystem, the folder in it, and how to name its objects."""

    fs: Any  # fsspec.AbstractFileSystem
    root: str  # folder path inside fs, without a trailing slash
    url: str  # the configured URL (no credentials in it)
    s3: bool

    def final_url(self, name: str) -> str:
        return f"{self.url}/{name}"

    def put(self, local: Path) -> str:
        """Upload one file under a temporary name, then move it into place; return its URL."""
        final = f"{self.root}/{local.name}"
        temp = f"{self.root}/.{local.name}{_TEMP_SUFFIX}"
        callback = _UploadProgress()
        if self.s3:
            self.fs.put_file(str(local), temp, callback=callback, chunksize=_S3_PART_BYTES)
            crash_point("deliver_move")
            self.fs.copy(temp, final)  # server-side: the final object appears complete or not at all
            self.fs.rm_file(temp)
        else:
            self.fs.put_file(str(local), temp, callback=callback)
            crash_point("deliver_move")
            self.fs.mv(temp, final)  # posix-rename@openssh.com: atomic, replaces an earlier copy
        return self.final_url(local.name)


def open_target(settings: DeliverSettings, *, file: str | None) -> DeliveryTarget:
    """Connect to ``[export.deliver]``'s destination (secrets resolved here, for this upload only)."""
    parts = urlsplit(settings.url)
    key = "export.deliver"
    try:
        if parts.scheme == "s3":
            import s3fs

            creds: dict[str, Any] = {}
            if settings.access_key_id and settings.secret_access_key:
                creds["key"] = resolve_secret(
                    settings.access_key_id, file=file, key=f"{key}.access_key_id"
                ).get_secret_value()
                creds["secret"] = resolve_secret(
                    settings.secret_access_key, file=file, key=f"{key}.secret_access_key"
                ).get_secret_value()
            client_kwargs: dict[str, Any] = {}
            if settings.region:
                client_kwargs["region_name"] = settings.region
            fs = s3fs.S3FileSystem(
                endpoint_url=settings.endpoint_url,
                client_kwargs=client_kwargs,
                config_kwargs={"connect_timeout": settings.timeout_s, "read_timeout": settings.timeout_s},
                skip_instance_cache=True,  # credentials are per campaign: never a cached client
                **creds,
            )
            root = f"{parts.netloc}{parts.path}".rstrip("/")
            return DeliveryTarget(fs=fs, root=root, url=settings.url, s3=True)
        import asyncssh
        from sshfs import SSHFileSystem

        auth: dict[str, Any] = {}
        if settings.password:
            auth["password"] = resolve_secret(settings.password, file=file, key=f"{key}.password").get_secret_value()
        if settings.private_key:
            text = resolve_secret(settings.private_key, file=file, key=f"{key}.private_key").get_secret_value()
            try:
                auth["client_keys"] = [asyncssh.import_private_key(text)]
            except (asyncssh.KeyImportError, ValueError):
                raise DeliveryError(
                    f"{file}: [{key}.private_key] is not a private key in OpenSSH or PEM form"
                ) from None
        known_hosts = Path(settings.known_hosts or "")
        if not known_hosts.is_file():
            raise DeliveryError(f"{file}: [{key}.known_hosts] {known_hosts} is not a readable file")
        fs = SSHFileSystem(
            parts.hostname,
            port=parts.port or 22,
            username=settings.username,
            known_hosts=str(known_hosts),
            connect_timeout=settings.timeout_s,
            skip_instance_cache=True,
            **auth,
        )
        return DeliveryTarget(fs=fs, root=parts.path.rstrip("/") or ".", url=settings.url, s3=False)
    except PassflowError:
        raise
    except Exception as exc:  # noqa: BLE001 - connection/auth errors: report them without secrets
        raise DeliveryError(f"cannot connect to {settings.url}: {_describe(exc)}") from None


def deliver_pending(
    directory: Path,
    prefix: str,
    settings: DeliverSettings,
    *,
    file: str | None,
    first: Sequence[Path] = (),
    earlier_before: float | None = None,
) -> list[str]:
    """Deliver the undelivered files of ``directory`` whose names start with ``prefix``: those of
    earlier, failed deliveries (oldest first), then ``first`` (a run's own files); return their URLs.

    ``earlier_before``: only files older than this (epoch seconds; the run's start) count as earlier
    ones — so runs going on at the same time (the shards of a run) never upload the same file at
    once; each delivers its own. Each file's marker goes only after its upload succeeded. Stops at
    the first failure with a :class:`DeliveryError` naming the file; what was delivered stays so."""
    files = undelivered(directory, prefix)
    own = {p.name for p in first}
    earlier = [
        p for p in files if p.name not in own and (earlier_before is None or p.stat().st_mtime < earlier_before)
    ]
    ordered = earlier + [p for p in files if p.name in own]
    if not ordered:
        return []
    target = open_target(settings, file=file)
    urls: list[str] = []
    for path in ordered:
        try:
            urls.append(target.put(path))
        except Exception as exc:  # noqa: BLE001 - any upload failure fails the run, loudly
            raise DeliveryError(
                f"delivery of {path.name} to {settings.url} failed: {_describe(exc)}. The file is kept in "
                f"{directory} and the next run of this campaign delivers it again."
            ) from None
        _marker(path).unlink(missing_ok=True)
        if path.name not in own:
            log.warning("delivered %s, left undelivered by an earlier run", path.name)
    return urls


def delivery_marker(campaign: Campaign) -> Callable[[Iterable[Path]], None] | None:
    """What an export's commit calls with its final paths before the renames: marks them as
    undelivered when the campaign delivers its exports (``[export.deliver]``), else nothing."""
    return mark_undelivered if campaign.export.deliver is not None else None


def deliver_exports(
    campaign: Campaign, files: Sequence[str], *, run_started: float, earlier_too: bool = True
) -> list[str]:
    """A run's delivery: its committed ``files`` and, with ``earlier_too``, the files earlier runs
    of the campaign left undelivered. Returns the delivered URLs ([] without ``[export.deliver]``)."""
    settings = campaign.export.deliver
    if settings is None:
        return []
    return deliver_pending(
        Path(campaign.export.directory),
        export_file_prefix(campaign.name),
        settings,
        file=str(campaign.path),
        first=[Path(f) for f in files],
        earlier_before=run_started if earlier_too else 0.0,
    )


def _describe(exc: BaseException) -> str:
    text = (str(exc).strip().splitlines() or [""])[0]
    return redact(f"{type(exc).__name__}: {text}" if text else type(exc).__name__)
