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
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

from safetensors import SafetensorError, safe_open

from dat.errors import UserError
from dat.fileio import atomic_write

if TYPE_CHECKING:  # annotations only
    import torch
    from torch import nn
# torch, dat.models and the noise targets (which need torch) are imported inside the functions that
# need them: reading headers (read_meta, list_checkpoints, names) stays free of torch, so the
# dashboard's home page and workspace listing render without waiting for torch to import.

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
        from dat.noise.targets import find_targets

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
    """The metadata of a checkpoint, read from the safetensors header only (safetensors checks the
    header and that the tensors cover the file; its reasons are translated into plain words)."""
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"checkpoint not found: {path}")
    size = path.stat().st_size
    try:
        with safe_open(str(path), framework="numpy") as f:  # the header only: no torch needed
            header = f.metadata() or {}
    except SafetensorError as err:
        reason = str(err)
        if "header too small" in reason:
            raise ValueError(f"{path} is not a checkpoint: {size} bytes, too short for a safetensors header") from None
        if "not fully covered" in reason:
            raise ValueError(f"{path} is truncated or damaged: its tensors do not end where the file does "
                             f"({size} bytes; safetensors: {reason})") from None
        raise ValueError(f"{path} is not a safetensors checkpoint (a foreign or damaged file; safetensors: "
                         f"{reason})") from None
    meta_json = header.get(META_KEY)
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


# -- names ------------------------------------------------------------------------------------------
# A run's name is data: shown in legends, tables and file names, never used as a path itself (file
# names derived from it go through name_slug). Checkpoints written before names existed get the
# readable default from their own metadata.
METHOD_NAMES = {"sgd": "SGD", "sgd-bn": "SGD-BN", "dat-fast": "DAT-Fast", "dat-full": "DAT-Full", "sam": "SAM",
                "noise-injection": "noise injection"}
ARCH_NAMES = {"cnn6": "CNN6", "resnet18": "ResNet18"}
DATASET_NAMES = {"digits": "digits", "cifar10": "CIFAR-10", "cifar100": "CIFAR-100"}
MAX_NAME_LENGTH = 80


def check_display_name(name, what: str = "name") -> str | None:
    """A user-chosen name, stripped: printable text of 1 to MAX_NAME_LENGTH characters; None or an
    empty text means "use the default" (None)."""
    if name is None:
        return None
    if not isinstance(name, str):
        raise UserError(f"{what}: expected text, found {type(name).__name__}")
    name = " ".join(name.split())  # tabs, newlines and runs of spaces become one space
    if not name:
        return None
    if len(name) > MAX_NAME_LENGTH or not name.isprintable():
        raise UserError(f"{what}: expected printable text of at most {MAX_NAME_LENGTH} characters, found {name!r} "
                        f"({len(name)} characters)")
    return name


def _setting(meta: dict, key: str, default=None):
    config = meta.get("config") if isinstance(meta.get("config"), dict) else {}
    value = meta.get(key, config.get(key, default))
    return value if value is not None else default


def _dataset_of(meta: dict) -> str:
    dataset = meta.get("dataset")
    name = dataset.get("dataset") if isinstance(dataset, dict) else dataset
    if not name:
        name = _setting(meta, "dataset", "")
    return str(name or "")


def _device_short(spec) -> str:
    """A device as a name shows it: a preset's name, or a saved profile's file stem."""
    return os.path.splitext(os.path.basename(str(spec)))[0]


def _model_words(meta: dict) -> str:
    dataset = _dataset_of(meta)
    model = meta.get("model") if isinstance(meta.get("model"), dict) else {}
    arch = str(_setting(meta, "arch", "") or model.get("arch", ""))
    words = [DATASET_NAMES.get(dataset, dataset), ARCH_NAMES.get(arch, arch)]
    return " ".join(w for w in words if w)


def _epochs_words(meta: dict) -> str:
    epochs = _setting(meta, "epochs")
    if epochs is None and isinstance(meta.get("history"), list):
        epochs = len(meta["history"]) or None
    return f"{epochs} epoch{'' if epochs == 1 else 's'}" if epochs is not None else ""


def default_run_name(meta: dict) -> str:
    """The readable default name of a run from its metadata (or a resolved config's ``to_dict()``):
    "SGD-BN digits CNN6, 20 epochs", "DAT-Fast (device-A) digits CNN6, 20 epochs"."""
    method = str(_setting(meta, "method", ""))
    head = METHOD_NAMES.get(method, method) or "model"
    if method in ("dat-fast", "dat-full", "noise-injection"):
        device = meta.get("device") if isinstance(meta.get("device"), dict) else {}
        spec = device.get("name") or device.get("spec") or _setting(meta, "device", "")
        head = f"{head} ({_device_short(spec)})" if spec else head
    tail = ", ".join(w for w in (_model_words(meta), _epochs_words(meta)) if w)
    return f"{head} {tail}".strip() if tail else head


def default_trio_name(config: dict) -> str:
    """The readable default name of a trio from its config (``TrainConfig.to_dict()``): "digits CNN6
    trio, 20 epochs"."""
    return ", ".join(w for w in (f"{_model_words(config)} trio".strip(), _epochs_words(config)) if w)


def display_name(meta: dict) -> str:
    """A checkpoint's name: the one it was trained under (``meta["display_name"]``), else the default."""
    try:
        given = check_display_name(meta.get("display_name"))
    except UserError:
        given = None  # a malformed name in a file is ignored, not shown
    return given or default_run_name(meta)


def trio_name(meta: dict) -> str | None:
    """The name of the trio a checkpoint was trained in (``meta["trio"]["name"]``), else None."""
    trio = meta.get("trio")
    if not isinstance(trio, dict):
        return None
    try:
        return check_display_name(trio.get("name"))
    except UserError:
        return None


def name_slug(name: str, fallback: str = "run") -> str:
    """A file-name part made from a name: lower-case letters, digits and '-', at most 48 characters,
    checked by ``dat.fileio.check_name``; ``fallback`` when nothing is left."""
    from dat.fileio import check_name

    slug = "".join(ch if ch.isascii() and ch.isalnum() else "-" for ch in str(name).lower())
    slug = "-".join(part for part in slug.split("-") if part)[:48].strip("-")
    return check_name(slug or fallback, "file name")


# -- which checkpoints can share a landscape ----------------------------------------------------------
def compatibility(meta: dict) -> dict:
    """What checkpoints must share to span one landscape plane and be perturbed alike: the model
    (architecture and its sizes, BatchNorm, input and class counts), the dataset, and the noise
    targets as trained (choice, tile, units) with the device's stress."""
    config = meta.get("config") if isinstance(meta.get("config"), dict) else {}
    return {"model": meta.get("model"), "dataset": _dataset_of(meta),
            "targets": config.get("targets", "last-linear"), "tile": int(config.get("tile", 64)),
            "units": config.get("units", "relative"), "stress": float(config.get("stress", 1.0))}


def compatible(meta: dict, other: dict) -> bool:
    """Whether two checkpoints' metadata can be compared on one landscape (:func:`compatibility`)."""
    return compatibility(meta) == compatibility(other)


def check_trio(paths, metas: dict | None = None) -> None:
    """Refuse a trio {role: checkpoint path} before any computing: the same file in two roles, or
    checkpoints that do not share their :func:`compatibility` (raises UserError naming both).
    ``metas``: {role: metadata} already read (else each header is read here)."""
    paths = {role: str(p) for role, p in dict(paths).items()}
    seen: dict[str, str] = {}
    for role, path in paths.items():
        key = os.path.realpath(path)
        if key in seen:
            raise UserError(f"a trio needs three different checkpoints, found {path} as both {seen[key]} and {role}")
        seen[key] = role
    metas = dict(metas) if metas is not None else {role: read_meta(p) for role, p in paths.items()}
    roles = list(paths)
    first = compatibility(metas[roles[0]])
    for role in roles[1:]:
        other = compatibility(metas[role])
        differ = [k for k in first if first[k] != other[k]]
        if differ:
            k = differ[0]
            raise UserError(f"the checkpoints of a trio must share their {', '.join(differ)}: expected {k} "
                            f"{first[k]!r} (as {roles[0]}, {paths[roles[0]]}), found {other[k]!r} ({role}, "
                            f"{paths[role]})")
