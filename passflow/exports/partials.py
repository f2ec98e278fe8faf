"""Hidden `.partial` temp files of the local exports, and removing the ones killed runs left.

A writer holds an exclusive advisory lock (``flock``) on its temp file from creation to rename, so
a cleanup in another process — another shard of the same campaign writing into the same folder, or
an unrelated run — can tell a file being written from one a killed run left: it removes a file only
when it can take that lock itself. Where ``flock`` does not exist, only the age rule protects.
"""

from __future__ import annotations

import glob
import os
import time
from pathlib import Path
from typing import BinaryIO

try:  # POSIX; elsewhere the age rule alone decides
    import fcntl
except ImportError:  # pragma: no cover - not on the platforms passflow runs on
    fcntl = None  # type: ignore[assignment]

PARTIAL_SUFFIX = ".partial"


def partial_path(final: Path) -> Path:
    """Where the rows of ``final`` are written before it is renamed into place."""
    return final.with_name(f".{final.name}{PARTIAL_SUFFIX}")


def open_partial(path: Path, *, exclusive_create: bool = True) -> BinaryIO:
    """Open a temp file for writing and hold its lock until the file is closed."""
    while True:
        f = open(path, "xb" if exclusive_create else "wb")  # noqa: SIM115 - the caller closes it
        if fcntl is None:
            return f
        fcntl.flock(f.fileno(), fcntl.LOCK_EX)
        # A cleanup may have locked and removed the file between our open and our lock: then the
        # name no longer leads to our file, and we create it again.
        try:
            if os.stat(path).st_ino == os.fstat(f.fileno()).st_ino:
                return f
        except FileNotFoundError:
            pass
        f.close()


def _being_written(path: Path) -> bool:
    if fcntl is None:
        return False
    try:
        fd = os.open(path, os.O_RDONLY)
    except FileNotFoundError:
        return False
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
        return True
    finally:
        os.close(fd)  # closing drops the lock if we took it
    return False


def cleanup_stale_partials(
    directory: Path | str, *, min_age_seconds: float = 3600.0, prefix: str = ""
) -> list[Path]:
    """Remove hidden `.*.csv.partial` files left in `directory` by killed export processes.

    A file another process is still writing (it holds the file's lock) is always left alone. Without
    locks (non-POSIX) only files not modified for `min_age_seconds` are removed; `min_age_seconds=0`
    with `prefix` (the file-name start of a campaign whose run lock you hold) removes the campaign's
    leftovers at once. Returns the removed paths.
    """
    directory = Path(directory)
    if not directory.is_dir():
        return []
    cutoff = time.time() - min_age_seconds
    removed: list[Path] = []
    for path in sorted(directory.glob(f".{glob.escape(prefix)}*.csv{PARTIAL_SUFFIX}")):
        try:
            if not path.is_file() or path.stat().st_mtime > cutoff or _being_written(path):
                continue
            path.unlink()
            removed.append(path)
        except FileNotFoundError:  # removed concurrently: fine, it is gone either way
            continue
    return removed
