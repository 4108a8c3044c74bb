"""Reading numeric arrays from files a user hands us (.npz archives, .npy arrays).

Every reader of profiles, measurements and dense covariances goes through here, so that
- no code runs from a file: numpy is called with allow_pickle=False, and an entry holding
  Python objects is refused with our own message (numpy's advice to "load it unsafely" never
  reaches a user);
- an empty, truncated or foreign file (a PNG renamed .npz, a zip that is not a numpy archive)
  raises `dat.errors.UserError` naming the file and what was expected, never EOFError,
  BadZipFile or KeyError.

`source` is a path or a binary file object (an upload held in memory); `name` is what messages
call it (the user's own file name, never an internal temporary path).
"""

from __future__ import annotations

import os
import zipfile
from pathlib import Path

import numpy as np

from dat.errors import UserError

_ZIP_MAGIC = (b"PK\x03\x04", b"PK\x05\x06")  # a zip with entries, an empty zip
_NPY_MAGIC = b"\x93NUMPY"
# What a file that is not ours most likely is, from its first bytes (for the message only).
_SIGNATURES = ((b"\x89PNG", "a PNG image"), (b"\xff\xd8\xff", "a JPEG image"), (b"%PDF", "a PDF document"),
               (b"\x1f\x8b", "a gzip archive"), (b"\x80", "a Python pickle"), (b"PK", "a zip archive"),
               (_NPY_MAGIC, "a single .npy array"))


def display_name(source, name: str | None = None) -> str:
    """What messages call a source: ``name`` if given, else the path as the user wrote it."""
    if name:
        return str(name)
    if isinstance(source, (str, os.PathLike)):
        return os.fspath(source)
    return getattr(source, "name", None) or "the uploaded file"


def _head(source, n: int = 8) -> bytes:
    if isinstance(source, (str, os.PathLike)):
        with open(source, "rb") as fh:
            return fh.read(n)
    pos = source.tell()
    head = source.read(n)
    source.seek(pos)
    return head


def _describe(head: bytes) -> str:
    if not head:
        return "an empty file"
    for magic, what in _SIGNATURES:
        if head.startswith(magic):
            return what
    return f"a file starting with {head!r}"


def _check_source(source, label: str, what: str) -> None:
    if isinstance(source, (str, os.PathLike)) and not Path(source).is_file():
        raise UserError(f"{what} not found: {label}")


def numeric(arr: np.ndarray, label: str, key: str) -> np.ndarray:
    """``arr`` if it holds numbers (bool, int or float), else an expected-vs-found UserError."""
    if arr.dtype.kind not in "biuf":
        raise UserError(f"{label}: expected '{key}' to hold numbers, found dtype {arr.dtype}")
    return arr


def text(arr: np.ndarray, label: str, key: str) -> str:
    """The string held by a 0-d text array (e.g. JSON metadata), else a UserError."""
    if arr.dtype.kind != "U" or arr.ndim != 0:
        raise UserError(f"{label}: expected '{key}' to be a string, found an array of dtype {arr.dtype} "
                        f"and shape {arr.shape}")
    return str(arr)


def read_npz(source, name: str | None = None, *, what: str = "file") -> dict[str, np.ndarray]:
    """Every entry of a .npz archive as an array, in the archive's order. Callers check the
    entries they use with `numeric` or `text`."""
    label = display_name(source, name)
    _check_source(source, label, what)
    head = _head(source)
    if not head.startswith(_ZIP_MAGIC):
        raise UserError(f"{label}: expected a .npz archive (a zip of numpy arrays), found {_describe(head)}")
    out = {}
    try:
        with np.load(source, allow_pickle=False) as z:
            for key in z.files:
                try:
                    value = z[key]
                except ValueError as err:
                    if "allow_pickle" in str(err) or "pickle" in str(err):
                        raise UserError(f"{label}: entry '{key}' holds Python objects (pickled data), which are "
                                        f"never loaded; expected a numeric array") from None
                    raise
                if not isinstance(value, np.ndarray):  # a zip member that is not a .npy array
                    raise UserError(f"{label}: expected a .npz archive of numpy arrays, found entry {key!r} "
                                    f"that is not a numpy array (a zip file from another program?)")
                out[key] = value
    except UserError:
        raise
    except (zipfile.BadZipFile, zipfile.LargeZipFile, EOFError, OSError, ValueError, KeyError,
            NotImplementedError) as err:  # truncated or corrupted archive, bad .npy header
        raise UserError(f"{label}: expected a complete .npz archive, found a truncated or corrupted one "
                        f"({type(err).__name__}: {_short(err)})") from None
    return out


def read_npy(source, name: str | None = None, *, what: str = "file") -> np.ndarray:
    """The numeric array of a .npy file."""
    label = display_name(source, name)
    _check_source(source, label, what)
    head = _head(source)
    if not head.startswith(_NPY_MAGIC):
        raise UserError(f"{label}: expected a .npy array, found {_describe(head)}")
    try:
        arr = np.load(source, allow_pickle=False)
    except ValueError as err:
        if "pickle" in str(err):
            raise UserError(f"{label}: holds Python objects (pickled data), which are never loaded; "
                            f"expected a numeric array") from None
        raise UserError(f"{label}: expected a complete .npy array, found a truncated or corrupted one "
                        f"({_short(err)})") from None
    except (EOFError, OSError) as err:
        raise UserError(f"{label}: expected a complete .npy array, found a truncated or corrupted one "
                        f"({type(err).__name__}: {_short(err)})") from None
    return numeric(arr, label, "the array")


def read_bytes(source, name: str | None = None, *, what: str = "file") -> bytes:
    """The raw bytes of a path or binary file object."""
    label = display_name(source, name)
    _check_source(source, label, what)
    if isinstance(source, (str, os.PathLike)):
        return Path(source).read_bytes()
    return source.read()


def _short(err: BaseException, limit: int = 160) -> str:
    text = str(err).splitlines()[0] if str(err) else ""
    return text if len(text) <= limit else text[:limit] + "..."
