"""On-disk cache of landscape results, keyed by a hash of every input that determines them.

A key is the SHA-256 of a canonical JSON of the inputs (weight hashes, profile hashes, data hash,
grid, seeds, draws, BatchNorm mode, ...) plus the code version (the package version and a hash of
the computing modules' source), so editing the maths invalidates old entries. Each entry is
``<key>.npz`` (the arrays) + ``<key>.json`` (labels and metadata), both written atomically.

Labels are written in the order of the arrays' axes and never re-sorted: an entry's JSON is written
without ``sort_keys``, and labels whose order is an axis are lists (a surface's markers are
[name, alpha, beta] rows), so a cached result has each value under the same model, device, panel
and marker as the fresh one. Only the key's hash sorts keys, where order carries no meaning (the
inputs record every ordered axis as a list as well).

A surface in progress keeps its completed chunks of grid points in ``partial/<key>-c<size>x<count>/``
(:class:`ChunkStore`, one ``<index>.npz`` per chunk, written atomically): a computation stopped by a
crash, a restart or a cancel starts again from the chunks it has, and the finished result removes
them. The folder is keyed like the result plus the chunking, since a chunk's points depend on it.
"""

from __future__ import annotations

import hashlib
import json
import os
import platform
import shutil
import zipfile
from pathlib import Path

import numpy as np
import torch
from torch import nn
from dat.fileio import atomic_write_bytes

DEFAULT_FOLDER = Path("cache") / "landscape"
_CODE_FILES = ("results.py", "inputs.py", "curves.py", "surfaces.py", "directions.py", "evaluator.py", "cache.py")
FORMAT_VERSION = 2  # 2: labels kept in axis order (format 1 sorted marker names; its entries are never read)


def tensor_hash(tensors) -> str:
    """SHA-256 over names, dtypes, shapes and bytes of a mapping of tensors (sorted by name)."""
    h = hashlib.sha256()
    for name in sorted(tensors):
        t = torch.as_tensor(tensors[name]).detach().cpu().contiguous()
        h.update(f"{name}|{t.dtype}|{tuple(t.shape)}|".encode())
        h.update(t.reshape(-1).view(torch.uint8).numpy().tobytes() if t.numel() else b"")
    return h.hexdigest()


def state_hash(model: nn.Module) -> str:
    """Content hash of a model's weights and buffers (the checkpoint's identity)."""
    return tensor_hash(model.state_dict())


def code_version() -> str:
    from . import __version__

    h = hashlib.sha256()
    here = Path(__file__).parent
    for name in _CODE_FILES:
        h.update((here / name).read_bytes())
    return f"{__version__}+{h.hexdigest()[:12]}"


def versions() -> dict:
    import numpy
    import plotly

    return {"landscape": code_version(), "torch": torch.__version__, "numpy": numpy.__version__,
            "plotly": plotly.__version__, "python": platform.python_version()}


def key_of(inputs: dict) -> str:
    # sort_keys here only makes the hash canonical; it never touches what is stored.
    text = json.dumps({"inputs": inputs, "code": code_version(), "format": FORMAT_VERSION}, sort_keys=True,
                      separators=(",", ":"))
    return hashlib.sha256(text.encode()).hexdigest()


def npz_bytes(arrays: dict) -> bytes:
    import io

    buf = io.BytesIO()
    np.savez(buf, **{k: np.asarray(v) for k, v in arrays.items()})
    return buf.getvalue()


class ResultCache:
    """Curves / Surface results on disk under ``folder`` (default cache/landscape)."""

    def __init__(self, folder: str | os.PathLike = DEFAULT_FOLDER):
        self.folder = Path(folder)

    def paths(self, inputs: dict) -> tuple[Path, Path]:
        key = key_of(inputs)
        return self.folder / f"{key}.npz", self.folder / f"{key}.json"

    def load(self, inputs: dict, cls):
        """The stored result for these inputs, or None. Never unpickles (allow_pickle=False)."""
        npz, js = self.paths(inputs)
        if not (npz.exists() and js.exists()):
            return None
        record = json.loads(js.read_text())
        if (record.get("kind") != cls.kind or record.get("key") != npz.stem
                or record.get("format_version") != FORMAT_VERSION):
            return None
        with np.load(npz, allow_pickle=False) as f:
            arrays = {k: f[k] for k in f.files}
        meta = dict(record["meta"], cache={"hit": True, "key": npz.stem})
        return cls.from_arrays(arrays, record["labels"], meta)

    def partial(self, inputs: dict, chunk_size: int, count: int) -> "ChunkStore":
        """The store of completed chunks of the result for ``inputs`` when computed in ``count``
        chunks of ``chunk_size`` points."""
        return ChunkStore(self.folder / "partial" / f"{key_of(inputs)}-c{int(chunk_size)}x{int(count)}")

    def save(self, inputs: dict, result) -> Path:
        npz, js = self.paths(inputs)
        # Arrays first, then the JSON that makes the entry visible to `load`.
        atomic_write_bytes(npz, npz_bytes(result.to_arrays()))
        record = {"kind": result.kind, "key": npz.stem, "format_version": FORMAT_VERSION,
                  "labels": result.labels(), "meta": result.meta}
        # No sort_keys: the labels' order is the order of the arrays' axes.
        atomic_write_bytes(js, json.dumps(record, indent=1).encode())
        # The whole result is stored: its partial chunks (any chunking) are no longer needed.
        partial = self.folder / "partial"
        if partial.is_dir():
            for folder in partial.glob(f"{npz.stem}-c*"):
                shutil.rmtree(folder, ignore_errors=True)
        return npz


class ChunkStore:
    """Completed chunks of one computation: ``load(j, n)`` gives chunk j's arrays (each with n points
    along its last axis) or None, ``save(j, arrays)`` keeps them. Read without pickle; a chunk file
    that cannot be read or has the wrong shape counts as missing and is computed again."""

    def __init__(self, folder: str | os.PathLike):
        self.folder = Path(folder)

    def _path(self, j: int) -> Path:
        return self.folder / f"{int(j):06d}.npz"

    def load(self, j: int, points: int) -> dict | None:
        path = self._path(j)
        if not path.is_file():
            return None
        try:
            with np.load(path, allow_pickle=False) as f:
                arrays = {k: f[k] for k in f.files}
        except (OSError, ValueError, zipfile.BadZipFile):
            return None
        if not arrays or any(a.ndim < 1 or a.shape[-1] != int(points) for a in arrays.values()):
            return None
        return arrays

    def save(self, j: int, arrays: dict) -> None:
        atomic_write_bytes(self._path(j), npz_bytes(arrays))

    def completed(self) -> list[int]:
        """Indices of the chunks on disk."""
        if not self.folder.is_dir():
            return []
        return sorted(int(p.stem) for p in self.folder.glob("*.npz") if p.stem.isdigit())


def as_cache(cache) -> ResultCache | None:
    """None -> no caching; a ResultCache as is; a str / path -> a ResultCache in that folder."""
    if cache is None or isinstance(cache, ResultCache):
        return cache
    if isinstance(cache, (str, os.PathLike)):
        return ResultCache(cache)
    raise TypeError(f"cache must be None, a folder path or a ResultCache, found {type(cache).__name__}")
