"""Atomic file writing and exclusive output locks: every file the project writes goes through here.

``atomic_write``: a reader (or a crash) never sees half a file. Write to a temporary file in the
target's folder, then os.replace, which is atomic on one file system. The temporary file's name
carries its writer's process id (``.NAME.PID.RANDOM.tmp``), so one left behind by a writer that was
killed (``kill -9``, a power cut) is recognised and removed the next time anything is written into
that folder (or the dashboard lists its workspace): :func:`clean_stale_temps`.

``exclusive_lock``: a long run (training) holds ``<path>.lock`` with ``fcntl.flock`` while it owns
``path``, so a second run into the same path refuses at once instead of overwriting the first run's
files. The operating system releases the lock when its holder exits or dies, so a lock file left by
a dead process never blocks anyone. flock locks are local to one machine; two machines writing to
one network folder are not covered.
"""

from __future__ import annotations

import fcntl
import os
import re
import tempfile
import time
from contextlib import contextmanager
from pathlib import Path
from typing import Callable, Iterator

from dat.errors import UserError

# A user-chosen name becomes part of a file name (profiles/NAME.npz, checkpoint stems): one rule.
_NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.-]{0,63}$")


def check_name(name: str, what: str = "name") -> str:
    """A user-chosen file name part: letters, digits, '-', '_', '.', at most 64, no path parts."""
    if not isinstance(name, str):
        raise TypeError(f"{what} must be a string, found {type(name).__name__}")
    name = name.strip()
    if not _NAME.match(name) or ".." in name:
        raise ValueError(
            f"{what} must be 1-64 characters from letters, digits, '-', '_' and '.', starting with "
            f"a letter or digit (no folders), found {name!r}")
    return name


# .NAME.PID.RANDOM.tmp, RANDOM being tempfile.mkstemp's 8 characters.
_TEMP = re.compile(r"^\..+\.(?P<pid>[0-9]+)\.[a-z0-9_]{8}\.tmp$")
# Temporary files of older versions carried no process id (.NAME.RANDOM.tmp, .upload-RANDOM.part):
# they are removed once they are this old, long after any writer of them could still be running.
LEGACY_TEMP_AGE_S = 24 * 3600
_LEGACY_TEMP = re.compile(r"^\.(.+\.[a-z0-9_]{8}\.tmp|upload-[a-z0-9_]{8}\.part)$")


def pid_alive(pid: int) -> bool:
    """Whether a process with this id exists on this machine (signal 0 checks without sending)."""
    if pid <= 0:
        return False
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:  # it exists, under another user
        return True
    return True


def temp_file(folder: str | os.PathLike, name: str) -> str:
    """Create an empty private temporary file ``folder/.NAME.PID.RANDOM.tmp`` and return its path."""
    fd, tmp = tempfile.mkstemp(prefix=f".{name}.{os.getpid()}.", suffix=".tmp", dir=folder)
    os.close(fd)
    return tmp


def clean_stale_temps(folder: str | os.PathLike) -> list[Path]:
    """Remove the temporary files in ``folder`` whose writer is dead; returns the removed paths.

    A temporary file whose process id is alive (this process included) is kept: its writer may
    still be writing it."""
    folder = Path(folder)
    removed: list[Path] = []
    try:
        names = [n for n in os.listdir(folder) if n.startswith(".")]
    except (FileNotFoundError, NotADirectoryError):
        return removed
    now = time.time()
    for name in names:
        path = folder / name
        match = _TEMP.match(name)
        try:
            if match is not None:
                stale = not pid_alive(int(match["pid"]))
            elif _LEGACY_TEMP.match(name):
                stale = now - path.stat().st_mtime > LEGACY_TEMP_AGE_S
            else:
                continue
            if stale and path.is_file():
                path.unlink()
                removed.append(path)
        except OSError:  # removed meanwhile by someone else, or not ours to remove: leave it
            continue
    return removed


def atomic_write(path: str | os.PathLike, write: Callable[[str], None], mode: int = 0o644) -> Path:
    """Call ``write(tmp_path)`` on a temporary file next to ``path``, then rename it over ``path``.
    On any failure the temporary file is removed and ``path`` is left as it was. Temporary files
    that dead writers left in the folder are removed first."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    clean_stale_temps(path.parent)
    tmp = temp_file(path.parent, path.name)
    try:
        write(tmp)
        os.chmod(tmp, mode)  # mkstemp makes 0600 files; results are shared data
        os.replace(tmp, path)
    except BaseException:
        if os.path.exists(tmp):
            os.unlink(tmp)
        raise
    return path


def atomic_write_bytes(path: str | os.PathLike, data: bytes) -> Path:
    """Write ``data`` to ``path`` atomically."""
    return atomic_write(path, lambda tmp: Path(tmp).write_bytes(data))


class OutputLocked(UserError):
    """Another live process (or another job of this one) holds the lock on an output path."""


def lock_path(path: str | os.PathLike) -> Path:
    """The lock file of ``path``: ``<path>.lock`` next to the real file (symbolic links resolved,
    so two spellings of one file share one lock)."""
    return Path(os.path.realpath(path) + ".lock")


def _holder(fd: int) -> str:
    """The process id written in a lock file, as text ("unknown" in the instant before it is written)."""
    text = os.pread(fd, 32, 0).decode("ascii", "replace").strip()
    return text if text.isdigit() else "unknown"


@contextmanager
def exclusive_lock(path: str | os.PathLike, advice: str = "wait for it to finish") -> Iterator[Path]:
    """Hold ``<path>.lock`` exclusively for the block, or raise :class:`OutputLocked` at once (no
    waiting) with a message naming ``path``, the lock file, the holder's process id and ``advice``.

    The lock file holds the holder's process id and is removed when the block ends. A file left by
    a dead process is not locked (the OS released its lock), so it is simply taken over."""
    lock = lock_path(path)
    lock.parent.mkdir(parents=True, exist_ok=True)
    while True:
        fd = os.open(lock, os.O_RDWR | os.O_CREAT, 0o644)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            holder = _holder(fd)
            os.close(fd)
            mine = " (this process)" if holder == str(os.getpid()) else ""
            raise OutputLocked(f"{path} is in use by another run (process {holder}{mine}, which holds "
                               f"{lock}); {advice}") from None
        # The previous holder may have removed the file between our open and our flock, leaving us a
        # lock on a file nobody else will open: take the lock again on the file now at that path.
        try:
            now = os.stat(lock)
            held = os.fstat(fd)
            if (now.st_dev, now.st_ino) == (held.st_dev, held.st_ino):
                break
        except FileNotFoundError:
            pass
        os.close(fd)
    try:
        os.ftruncate(fd, 0)
        os.pwrite(fd, f"{os.getpid()}\n".encode("ascii"), 0)
        yield lock
    finally:
        try:
            os.unlink(lock)  # while still holding it, so nobody can be locking this file meanwhile
        except FileNotFoundError:
            pass
        os.close(fd)  # releases the flock


PROJECT_ROOT = Path(__file__).resolve().parent.parent


def workspace_root() -> Path:
    """The user's workspace folder: ``$DAT_WORKSPACE`` if set (tests point it at a temporary
    folder), else the project root. It holds profiles/, checkpoints/, cache/ and jobs.json."""
    return Path(os.environ.get("DAT_WORKSPACE") or PROJECT_ROOT).resolve()
