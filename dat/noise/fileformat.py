"""The profile file's format name, version and header reader, without torch (see `dat.noise.io` for
the format): the dashboard reads saved profiles' headers to list them before torch has loaded."""

from __future__ import annotations

import json

from dat.arrayfile import read_npz, text
from dat.errors import UserError

FORMAT = "dat-profile"
FORMAT_VERSION = 1


def read_metadata(path) -> dict:
    """The JSON metadata of a profile file, after checking format and version."""
    return read(path)[0]


def read(path) -> tuple[dict, dict]:
    """(metadata, arrays) of a profile file (read without pickle), after checking format and version."""
    arrays = read_npz(path, what="profile file")
    if "__meta__" not in arrays:
        raise UserError(
            f"{path}: expected a saved {FORMAT} file, found no '__meta__' entry (entries {list(arrays)}); "
            "a plain dense covariance is imported with `dat profile dense FILE`")
    try:
        meta = json.loads(text(arrays.pop("__meta__"), str(path), "__meta__"))
    except json.JSONDecodeError as err:
        raise UserError(f"{path}: expected '__meta__' to be JSON, found invalid JSON ({err})") from None
    if not isinstance(meta, dict) or meta.get("format") != FORMAT:
        found = meta.get("format") if isinstance(meta, dict) else type(meta).__name__
        raise UserError(f"{path}: expected format {FORMAT!r}, found {found!r}")
    if meta.get("format_version") != FORMAT_VERSION:
        raise UserError(
            f"{path}: {FORMAT} format_version {meta.get('format_version')!r} is not supported "
            f"(this version of dat reads format_version {FORMAT_VERSION})"
        )
    return meta, arrays
