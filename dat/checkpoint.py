"""Checkpoints: weights in safetensors plus JSON metadata, written atomically, loaded without unpickling.

The metadata (method, architecture, dataset geometry, profile name and hash, alpha, k, seed, the
resolved config, metrics, train time, library versions) lives in the safetensors header under the
key ``"dat"``, so one file carries everything and ``list_checkpoints`` reads only headers.
Resume states (model, optimizer, scheduler, RNG states) are ``torch.save`` files loaded with
``weights_only=True``.
"""

from __future__ import annotations

import json
import os
import platform
import struct
from dataclasses import dataclass
from pathlib import Path

from dat.errors import UserError
from dat.fileio import atomic_write

# torch and dat.models are imported inside the functions that need them: reading headers
# (read_meta, list_checkpoints) stays free of torch, so listing a workspace is fast.

FORMAT = "dat-checkpoint"
FORMAT_VERSION = 1
META_KEY = "dat"
CHECKPOINT_SUFFIX = ".safetensors"


@dataclass
class Checkpoint:
    model: nn.Module
    meta: dict

    def noise_targets(self, choice: str | None = None):
        """The model's noise targets as it was trained: target choice (unless ``choice`` overrides
        it), tile and units from its saved config."""
        from dat.targets import find_targets

        config = self.meta.get("config") or {}
        tile = int(config.get("tile", 64))
        return find_targets(self.model, choice or config.get("targets", "last-linear"), tile=(tile, tile),
                            units=config.get("units", "relative"))


def versions() -> dict:
    """Library versions recorded in every result."""
    import numpy
    import torch

    import dat
    return {"python": platform.python_version(), "torch": torch.__version__, "numpy": numpy.__version__,
            "dat": dat.__version__}


def save_checkpoint(path: str | os.PathLike, model: nn.Module, meta: dict) -> Path:
    """Write the model's state (parameters and buffers) and ``meta`` (JSON-able; must hold the
    model's ``spec``, added from ``model.spec`` when absent) to ``path`` atomically."""
    from safetensors.torch import save_file

    meta = dict(meta)
    if "model" not in meta:
        if not hasattr(model, "spec"):
            raise ValueError("meta has no 'model' spec and the model has no .spec: build it with dat.models.build_model")
        meta["model"] = dict(model.spec)
    meta.setdefault("versions", versions())
    meta["format"], meta["format_version"] = FORMAT, FORMAT_VERSION
    header = {META_KEY: json.dumps(meta, sort_keys=True)}
    # safetensors refuses shared or non-contiguous storage; clone each tensor to its own memory.
    tensors = {name: t.detach().to("cpu").contiguous().clone() for name, t in model.state_dict().items()}
    atomic_write(path, lambda tmp: save_file(tensors, tmp, metadata=header))
    return Path(path)


def read_meta(path: str | os.PathLike) -> dict:
    """The metadata of a checkpoint, read from the safetensors header only."""
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"checkpoint not found: {path}")
    size = path.stat().st_size
    with open(path, "rb") as f:
        head = f.read(8)
        if len(head) < 8:
            raise ValueError(f"{path} is not a checkpoint: {size} bytes, too short for a safetensors header")
        (header_len,) = struct.unpack("<Q", head)
        if header_len > size - 8 or header_len > 100_000_000:
            raise ValueError(f"{path} is not a safetensors checkpoint (header length {header_len} does not fit "
                             f"the file size {size}; a foreign or truncated file)")
        try:
            header = json.loads(f.read(header_len))
        except (UnicodeDecodeError, json.JSONDecodeError) as err:
            raise ValueError(f"{path} is not a safetensors checkpoint: its header is not JSON ({err})") from None
    if not isinstance(header, dict):
        raise ValueError(f"{path} is not a safetensors checkpoint: header is {type(header).__name__}, expected an object")
    # Truncation: the data section must reach the end of the last tensor.
    ends = [v["data_offsets"][1] for k, v in header.items() if k != "__metadata__" and isinstance(v, dict)]
    expected = 8 + header_len + (max(ends) if ends else 0)
    if size < expected:
        raise ValueError(f"{path} is truncated: {size} bytes, the header describes {expected}")
    meta_json = (header.get("__metadata__") or {}).get(META_KEY)
    if meta_json is None:
        raise ValueError(f"{path} is a safetensors file without DAT metadata (no '{META_KEY}' entry in its header): "
                         "not a checkpoint written by dat.checkpoint.save_checkpoint")
    meta = json.loads(meta_json)
    if meta.get("format") != FORMAT or "model" not in meta:
        raise ValueError(f"{path}: metadata lacks format '{FORMAT}' or the model spec; found keys {sorted(meta)}")
    if meta.get("format_version", 0) > FORMAT_VERSION:
        raise ValueError(f"{path}: checkpoint format version {meta['format_version']} is newer than this "
                         f"library's {FORMAT_VERSION}; upgrade the dat package")
    return meta


def load_checkpoint(path: str | os.PathLike, map_location: str = "cpu") -> Checkpoint:
    """Rebuild the model from the metadata and load the weights strictly. Raises ValueError naming
    the tensor on an architecture mismatch, and for truncated, foreign or metadata-less files."""
    from safetensors.torch import load_file

    from dat.models import model_from_spec

    meta = read_meta(path)
    model = model_from_spec(meta["model"])
    try:
        state = load_file(str(path), device=map_location)
    except Exception as err:  # safetensors raises its own error type for malformed files
        raise ValueError(f"{path}: cannot read the weights ({err})") from err
    check_state(model, state, str(path))
    model.load_state_dict(state, strict=True)
    model.eval()
    return Checkpoint(model, meta)


def check_state(model: nn.Module, state: dict[str, torch.Tensor], source: str) -> None:
    """Strict comparison of a state dict with a model, with messages that name the tensor."""
    expected = model.state_dict()
    missing = sorted(set(expected) - set(state))
    unexpected = sorted(set(state) - set(expected))
    if missing or unexpected:
        raise ValueError(f"{source} does not match the architecture {getattr(model, 'spec', '')}: "
                         f"missing tensors {missing[:5]}{'...' if len(missing) > 5 else ''}, "
                         f"unexpected tensors {unexpected[:5]}{'...' if len(unexpected) > 5 else ''}")
    for name, tensor in expected.items():
        if tuple(state[name].shape) != tuple(tensor.shape):
            raise ValueError(f"{source}: tensor {name!r} has shape {tuple(state[name].shape)}, "
                             f"the architecture expects {tuple(tensor.shape)}")


def list_checkpoints(folder: str | os.PathLike = "checkpoints") -> list[dict]:
    """Metadata of every readable checkpoint in ``folder`` (sorted by file name), each with its
    ``path``. Files that are not checkpoints are skipped."""
    folder = Path(folder)
    if not folder.is_dir():
        return []
    out = []
    for path in sorted(folder.glob("*" + CHECKPOINT_SUFFIX)):
        try:
            meta = read_meta(path)
        except ValueError:
            continue
        out.append({**meta, "path": str(path)})
    return out


def save_resume(path: str | os.PathLike, state: dict) -> None:
    """Atomic torch.save of a resume state (tensors, numbers, strings, lists, dicts only)."""
    import torch

    atomic_write(path, lambda tmp: torch.save(state, tmp))


# What dat.train reads back from a resume state; anything else is optional.
RESUME_KEYS = ("trajectory", "model", "optimizer", "scheduler", "data_gen", "noise_gen", "torch_rng", "epoch",
               "history", "train_time_s")


def load_resume(path: str | os.PathLike, required: tuple = RESUME_KEYS) -> dict:
    """Load a resume state without unpickling arbitrary objects; it must hold the ``required`` keys."""
    import torch

    try:
        state = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as err:  # torch raises its own types for truncated, foreign or pickled files
        raise UserError(f"{path} is not a readable resume state ({type(err).__name__}: {err}); "
                        f"delete it or train with --no-resume") from err
    missing = [k for k in required if not isinstance(state, dict) or k not in state]
    if missing:
        found = sorted(state) if isinstance(state, dict) else type(state).__name__
        raise UserError(f"{path} is not a resume state of this version: expected the keys {list(required)}, "
                        f"missing {missing} (found {found}); delete it or train with --no-resume")
    return state
