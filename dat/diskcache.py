"""Housekeeping of an on-disk cache folder: a size cap, least recently used files out first.

A cache file holds a result that can always be computed again (the DAT-Full Cholesky factors in the
workspace's ``cache/cholesky/``, 2.6 GB each at the paper's n = 25,600), so the cache may drop any
file to stay under its cap. "Used" means written or read: a reader calls :func:`touch`, which sets
the file's modification time to now, and :func:`prune` removes the files with the oldest times
until the rest fit the cap.

Safety:
- Only finished files are ever removed: the cache's files are written by ``dat.fileio.atomic_write``
  under a hidden temporary name (``.NAME.PID.RANDOM.tmp``) that no cache pattern matches, and only
  renamed into place when complete. :func:`clear` also removes temporary files, but only those whose
  writer has died (``dat.fileio.clean_stale_temps``).
- The files named in ``keep`` (the one just written or read) are never removed, even when one of
  them alone is larger than the cap.
- Removing a file that another process is reading is safe on POSIX: the reader keeps its open file.

The cap of the Cholesky cache: ``DEFAULT_CHOLESKY_CAP`` (8 GiB: three factors at the paper's size),
overridden by the environment variable ``DAT_CHOLESKY_CACHE_MAX`` (bytes, or with a K, M, G or T
suffix in powers of 1024, e.g. ``20G``; ``0`` keeps only the factor in use).
"""

from __future__ import annotations

import os
import re
import time
from pathlib import Path

from dat.errors import UserError
from dat.fileio import clean_stale_temps

CHOLESKY_PATTERN = "cholesky-*.safetensors"
CHOLESKY_CAP_ENV = "DAT_CHOLESKY_CACHE_MAX"
DEFAULT_CHOLESKY_CAP = 8 * 2**30
_UNITS = {"": 1, "K": 2**10, "M": 2**20, "G": 2**30, "T": 2**40}
_SIZE = re.compile(r"^\s*([0-9]+(?:\.[0-9]+)?)\s*([KMGT]?)(?:I?B)?\s*$", re.IGNORECASE)


def parse_size(text: str, what: str = "size") -> int:
    """Bytes from ``"8589934592"``, ``"8G"``, ``"512M"``, ``"1.5GiB"`` (units are powers of 1024)."""
    match = _SIZE.match(str(text))
    if match is None:
        raise UserError(f"{what}: expected a number of bytes, optionally with a K, M, G or T suffix "
                        f"(e.g. 8G), found {text!r}")
    return int(float(match[1]) * _UNITS[match[2].upper()])


def cholesky_cap() -> int:
    """The Cholesky cache's cap in bytes: ``$DAT_CHOLESKY_CACHE_MAX`` if set, else 8 GiB."""
    text = os.environ.get(CHOLESKY_CAP_ENV)
    return DEFAULT_CHOLESKY_CAP if text in (None, "") else parse_size(text, CHOLESKY_CAP_ENV)


def entries(folder: str | os.PathLike, pattern: str = CHOLESKY_PATTERN) -> list[dict]:
    """The cache's finished files, most recently used first: name, path, bytes, last_used (epoch s)."""
    folder = Path(folder)
    if not folder.is_dir():
        return []
    rows = []
    for path in folder.glob(pattern):
        try:
            st = path.stat()
        except FileNotFoundError:  # removed meanwhile by another process
            continue
        if path.is_file():
            rows.append({"name": path.name, "path": path, "bytes": st.st_size, "last_used": st.st_mtime})
    rows.sort(key=lambda r: (-r["last_used"], r["name"]))
    return rows


def touch(path: str | os.PathLike) -> None:
    """Mark a cache file as used now (a read-only or vanished file is left as it is)."""
    try:
        os.utime(path)
    except OSError:
        pass


def prune(folder: str | os.PathLike, cap_bytes: int, pattern: str = CHOLESKY_PATTERN,
          keep: tuple = ()) -> list[Path]:
    """Remove the least recently used files matching ``pattern`` until the folder's files total at
    most ``cap_bytes`` (the files in ``keep`` count but are never removed); returns what was removed."""
    if cap_bytes < 0:
        raise UserError(f"cache cap: expected a size >= 0 bytes, found {cap_bytes}")
    keep = {Path(p).resolve() for p in keep}
    rows = entries(folder, pattern)
    total = sum(r["bytes"] for r in rows)
    removed = []
    for row in reversed(rows):  # oldest first
        if total <= cap_bytes:
            break
        if row["path"].resolve() in keep:
            continue
        try:
            row["path"].unlink()
        except FileNotFoundError:  # another process pruned it first
            pass
        except OSError:  # not ours to remove (permissions): it stays, and keeps counting
            continue
        total -= row["bytes"]
        removed.append(row["path"])
    return removed


def clear(folder: str | os.PathLike, pattern: str = CHOLESKY_PATTERN) -> list[Path]:
    """Remove every finished cache file and the temporary files of dead writers; a file being
    written by a live process stays (it is still a temporary file)."""
    removed = [row["path"] for row in entries(folder, pattern)]
    for path in removed:
        try:
            path.unlink()
        except FileNotFoundError:
            pass
    return removed + clean_stale_temps(folder)


def describe_age(last_used: float, now: float | None = None) -> str:
    """'3 min ago', '2.5 h ago', '4 days ago': how long ago a file was used, for listings."""
    age = max(0.0, (time.time() if now is None else now) - last_used)
    if age < 120:
        return f"{age:.0f} s ago"
    if age < 7200:
        return f"{age / 60:.0f} min ago"
    if age < 172800:
        return f"{age / 3600:.1f} h ago"
    return f"{age / 86400:.0f} days ago"
