"""Transfer matrix: train on device X, test on device Y.

Rows are training set-ups (the baselines SGD and SGD-BN, and one DAT model per training device),
columns are test devices; each cell holds the test accuracy of every seed's model under R draws of
the column's device, evaluated with ``dat.evaluate.evaluate`` exactly as ``dat eval`` does (same
draws for the same seed), so the cell (DAT on X, X) is that model's ordinary noisy accuracy.

Device references (``DEVICE_SYNTAX``): a preset ("device-A"), a saved profile (.npz), or
"iid-wan2022" (i.i.d. programming noise alone at Wan et al. 2022's fitted magnitude, see
``IID_WAN2022``), each optionally followed by ":diagonal" or ":isotropic" for its twin
(``dat.noise.twins``). Every device of a run is written once as a profile file in ``<folder>/profiles``
and used by that path for training and for testing, so both see the identical device.
"""

from __future__ import annotations

import csv
import io
import math
import os
import time
from dataclasses import dataclass, field, replace
from pathlib import Path

import numpy as np

from dat.chips import chip_summary
from dat.config import TrainConfig
from dat.noise.crossbar import CrossbarParams
from dat.errors import expected

# I.i.d. programming noise alone: the Wan et al. (Nature 608, 504, 2022) ReRAM fit as used by IBM
# aihwkit's ReRamWan2022NoiseModel, interpolated to one hour after programming (dat.noise.crossbar.
# wan2022_prog_std: 7.3 % of g_max), no correlated part and no mean shift.
IID_WAN2022 = CrossbarParams(name="iid-wan2022", prog_noise=1.0, t_seconds=3600.0)
SPECIAL_DEVICES = {"iid-wan2022": IID_WAN2022}
DEVICE_SYNTAX = ("a preset (device-A, device-B), iid-wan2022, or a saved profile .npz, optionally with "
                 ":diagonal or :isotropic for its twin")
BASELINES = {"sgd": "SGD", "sgd-bn": "SGD-BN"}
METHOD_LABELS = {"dat-fast": "DAT-Fast", "dat-full": "DAT-Full", "noise-injection": "Noise injection", "sam": "SAM"}


def parse_device(ref: str) -> tuple[str, str | None]:
    """"device-A:diagonal" -> ("device-A", "diagonal"); "device-B" -> ("device-B", None)."""
    from dat.noise.twins import KINDS

    if not isinstance(ref, str) or not ref:
        raise expected("device", DEVICE_SYNTAX, repr(ref))
    base, sep, kind = ref.rpartition(":")
    if sep and kind in KINDS and base:
        return base, kind
    return ref, None


def base_device(spec: str):
    """The device object of a reference's base (no twin)."""
    from dat.noise.io import resolve_device

    if spec in SPECIAL_DEVICES:
        return SPECIAL_DEVICES[spec]
    try:
        return resolve_device(spec)[0]
    except ValueError as err:
        raise expected("device", DEVICE_SYNTAX, repr(spec)) from err


def _slug(text: str) -> str:
    return "".join(ch if ch.isalnum() or ch in "-_" else "-" for ch in text)


def config_targets(config: TrainConfig, bundle):
    """The noise targets a model trained with ``config`` has (its architecture built, not trained)."""
    from dat.models import build_model
    from dat.noise.targets import find_targets

    model = build_model(config.arch, config.uses_batchnorm, bundle.in_channels, bundle.image_size,
                        bundle.num_classes, width=config.width, hidden=config.hidden)
    return find_targets(model, config.targets, tile=(config.tile, config.tile), units=config.units)


def preset_profile(source: str, preset: str, *, data_root=None, name: str | None = None, **overrides):
    """(profile, targets): the device ``source`` (preset, saved file or twin reference) bound to the
    noise targets of a model the training ``preset`` (with ``overrides``) builds. The dataset's
    shapes come from the user's ``data_root`` (None: the configuration's own folder)."""
    from dat.config import resolve
    from dat.data import load_dataset_named_by
    from dat.noise.profile import bind

    config = resolve(preset, **overrides)
    bundle = load_dataset_named_by(config.dataset, config.data_root if data_root is None else data_root,
                                   source=f"training preset {preset}")
    targets = config_targets(config, bundle)
    return bind(base_device(source), targets, name=name), targets


def materialise(refs, targets, folder) -> dict[str, str]:
    """Write every referenced device as a profile file in ``folder``; {reference: path}."""
    from dat.noise.io import save_device
    from dat.noise.profile import bind
    from dat.noise.twins import save_twin

    folder = Path(folder)
    paths = {}
    for ref in refs:
        base, kind = parse_device(ref)
        device = base_device(base)
        path = folder / f"{_slug(ref)}.npz"
        if kind is None:
            save_device(path, device, name=ref, targets=targets)
        else:
            save_twin(path, bind(device, targets, name=base), kind, name=ref)
        paths[ref] = str(path)
    return paths


def _ci95(per_seed: np.ndarray) -> tuple[float, float]:
    """Student-t 95 % interval of the mean over seeds (NaN with one seed)."""
    from scipy import stats

    x = np.asarray(per_seed, dtype=np.float64)
    if x.size < 2:
        return float("nan"), float("nan")
    half = float(stats.t.ppf(0.975, x.size - 1) * x.std(ddof=1) / math.sqrt(x.size))
    return float(x.mean() - half), float(x.mean() + half)


def seed_statistics(acc: np.ndarray) -> dict:
    """Statistics of accuracies [seed, draw]: mean over seeds of the per-seed means with its 95 %
    interval over seeds, the standard error from the draws (sqrt(sum_s var_s / R) / S), and the
    worst chips (1st, 5th percentile) over all draws of all seeds (``dat.chips.chip_summary``)."""
    acc = np.asarray(acc, dtype=np.float64)
    per_seed = acc.mean(1)
    lo, hi = _ci95(per_seed)
    S, R = acc.shape
    se_draws = float(math.sqrt((acc.var(1, ddof=1) / R).sum()) / S) if R > 1 else 0.0
    chips = chip_summary(acc)
    return {"mean": float(per_seed.mean()), "ci95_low": lo, "ci95_high": hi, "se_draws": se_draws,
            "p1": chips["p1"], "p5": chips["p5"], "seeds": S, "draws": R}


@dataclass(frozen=True)
class TransferResult:
    """``acc`` [row, column, seed, draw] and ``loss`` [row, column, seed] (mean over draws) on the
    test split; ``clean_acc`` [row, seed]; ``checkpoints`` [row][seed] paths."""

    rows: tuple[str, ...]
    columns: tuple[str, ...]
    seeds: tuple[int, ...]
    acc: np.ndarray
    loss: np.ndarray
    clean_acc: np.ndarray
    checkpoints: tuple[tuple[str, ...], ...]
    meta: dict = field(default_factory=dict)

    kind = "transfer"

    def cell(self, row: str, column: str) -> dict:
        return seed_statistics(self.acc[self.rows.index(row), self.columns.index(column)])

    def summary(self) -> list[dict]:
        out = []
        for i, r in enumerate(self.rows):
            for j, c in enumerate(self.columns):
                out.append({"train": r, "test": c, **seed_statistics(self.acc[i, j]),
                            "loss_mean": float(self.loss[i, j].mean()), "clean_acc": float(self.clean_acc[i].mean())})
        return out

    def labels(self) -> dict:
        return {"rows": list(self.rows), "columns": list(self.columns), "seeds": list(self.seeds)}

    def to_arrays(self) -> dict[str, np.ndarray]:
        return {"acc": self.acc, "loss": self.loss, "clean_acc": self.clean_acc}

    def numbers_csv(self) -> str:
        return rows_csv(self.summary())


def rows_csv(rows: list[dict]) -> str:
    """A list of flat dicts as CSV (columns in first-row order, floats written exactly)."""
    buf = io.StringIO()
    if rows:
        w = csv.DictWriter(buf, fieldnames=list(rows[0]))
        w.writeheader()
        for r in rows:
            w.writerow({k: repr(v) if isinstance(v, float) else v for k, v in r.items()})
    return buf.getvalue()


def _train_or_reuse(config: TrainConfig, callbacks) -> str:
    """Train ``config`` unless its checkpoint exists with exactly this config (a rerun reuses it)."""
    from dat.checkpoint import read_meta
    from dat.train import train

    path = config.checkpoint_path
    if os.path.isfile(path):
        try:
            saved = read_meta(path).get("config")
        except ValueError:
            saved = None
        if saved == config.validate().to_dict():
            return path
    result = train(config, callbacks=callbacks)
    if result.checkpoint_path is None:
        raise RuntimeError(f"training of {path} was cancelled")
    return result.checkpoint_path


def noisy_accuracy(checkpoint_path: str, device_path: str, *, draws: int, seed: int, split: str = "test",
                   data_root=None) -> dict:
    """The ordinary noisy evaluation of a checkpoint (what `dat eval` computes for that split)."""
    from dat.checkpoint import load_checkpoint
    from dat.data import load_dataset
    from dat.evaluate import evaluate
    from dat.noise.io import make_profile

    ckpt = load_checkpoint(checkpoint_path)
    config = ckpt.meta.get("config", {})
    targets = ckpt.noise_targets()
    bundle = load_dataset(config.get("dataset", "digits"), data_root or config.get("data_root"),
                          verify=config.get("verify", True))
    data = bundle.test if split == "test" else bundle.train_eval
    return evaluate(ckpt.model, data, profile=make_profile(device_path, targets), targets=targets, draws=draws,
                    seed=seed)


def run_transfer(config: TrainConfig, devices, *, test_devices=None, seeds=(0, 1), baselines=("sgd", "sgd-bn"),
                 draws: int = 20, eval_seed: int = 0, folder: str = "runs/transfer", callbacks=(),
                 progress=None) -> TransferResult:
    """Train one DAT model (``config.method``) per training device and seed, plus the baselines, and
    test each under every test device (default: the training devices).

    ``config``: the shared training settings (e.g. ``dat.config.resolve("digits", epochs=5)``);
    ``progress(done, total)`` is called after each trained or evaluated model."""
    started = time.perf_counter()
    devices = list(devices)
    test_devices = list(test_devices) if test_devices is not None else list(devices)
    if not devices and not baselines:
        raise expected("transfer rows", "at least one training device or baseline", "none")
    if not test_devices:
        raise expected("test devices", "at least one", "none")
    seeds = tuple(int(s) for s in seeds)
    if not seeds or len(set(seeds)) != len(seeds):
        raise expected("seeds", "distinct seeds", list(seeds))
    bad = [b for b in baselines if b not in BASELINES]
    if bad:
        raise expected("baselines", f"among {sorted(BASELINES)}", bad)
    from dat.data import load_dataset

    bundle = load_dataset(config.dataset, config.data_root, verify=config.verify)
    dat_config = config.validate()
    if dat_config.method in BASELINES:
        raise expected("training method of the device rows", "a device-aware method (e.g. dat-fast)", repr(dat_config.method))
    targets = config_targets(dat_config, bundle)
    folder = Path(folder)
    paths = materialise(list(dict.fromkeys(devices + test_devices)), targets, folder / "profiles")
    plan = [(BASELINES[b], replace(config, method=b, batchnorm=None, device=paths[test_devices[0]])) for b in baselines]
    plan += [(f"{METHOD_LABELS.get(config.method, config.method)} on {d}", replace(config, device=paths[d])) for d in devices]
    total, done = len(plan) * len(seeds) * (1 + len(test_devices)), 0
    ckpts = []
    for label, run in plan:
        row = []
        for s in seeds:
            out = folder / "checkpoints" / f"{_slug(label)}-s{s}.safetensors"
            row.append(_train_or_reuse(replace(run, seed=s, out=str(out)), callbacks))
            done += 1
            if progress is not None:
                progress(done, total)
        ckpts.append(tuple(row))
    acc = np.zeros((len(plan), len(test_devices), len(seeds), draws))
    loss = np.zeros((len(plan), len(test_devices), len(seeds)))
    clean = np.zeros((len(plan), len(seeds)))
    for i in range(len(plan)):
        for k in range(len(seeds)):
            for j, d in enumerate(test_devices):
                res = noisy_accuracy(ckpts[i][k], paths[d], draws=draws, seed=eval_seed)
                acc[i, j, k] = res["noisy"]["acc_per_draw"]
                loss[i, j, k] = res["noisy"]["loss_mean"]
                clean[i, k] = res["clean"]["acc"]
                done += 1
                if progress is not None:
                    progress(done, total)
    from dat.checkpoint import versions
    from dat.noise.fileformat import read_metadata

    meta = {"inputs": {"config": config.to_dict(), "devices": devices, "test_devices": test_devices,
                       "seeds": list(seeds), "baselines": list(baselines), "draws": draws, "eval_seed": eval_seed,
                       "split": "test", "profile_hashes": {d: read_metadata(paths[d])["content_hash"] for d in paths},
                       "per_cell_std": {d: _per_cell_std(paths[d], targets) for d in paths}},
            "wall_time_s": time.perf_counter() - started, "versions": versions()}
    return TransferResult(tuple(p[0] for p in plan), tuple(test_devices), seeds, acc, loss, clean, tuple(ckpts), meta)


def _per_cell_std(path: str, targets) -> float:
    """RMS per-cell std of a device on the targets (fraction of g_max): sqrt(trace / n)."""
    from dat.noise.io import make_profile

    p = make_profile(path, targets)
    return math.sqrt(p.trace() / p.n)


def correlation_ablation(result: TransferResult, baseline: str = "SGD-BN") -> list[dict]:
    """Does correlation matter? For every full device X of the run whose twins are also in it (as
    training devices and test devices): DAT trained and tested on X and on each twin, the baseline
    tested on each, and DAT's gain over the baseline (paired over seeds, with its 95 % interval)."""
    if baseline not in result.rows:
        raise expected("ablation baseline", f"a row of the result {list(result.rows)}", repr(baseline))
    b = result.rows.index(baseline)
    out = []
    for col in result.columns:
        base, kind = parse_device(col)
        if kind is not None:
            continue
        variants = [v for v in (col, f"{col}:diagonal", f"{col}:isotropic") if v in result.columns]
        if len(variants) < 2:
            continue
        for v in variants:
            j = result.columns.index(v)
            row = next((i for i, r in enumerate(result.rows) if r.endswith(f" on {v}")), None)
            if row is None:
                continue
            dat_seed, base_seed = result.acc[row, j].mean(1), result.acc[b, j].mean(1)
            lo, hi = _ci95(dat_seed - base_seed)
            (dlo, dhi), (blo, bhi) = _ci95(dat_seed), _ci95(base_seed)
            out.append({"device": col, "variant": v, "dat_acc": float(dat_seed.mean()), "dat_ci95_low": dlo,
                        "dat_ci95_high": dhi, "baseline_acc": float(base_seed.mean()), "baseline_ci95_low": blo,
                        "baseline_ci95_high": bhi, "gain": float((dat_seed - base_seed).mean()),
                        "gain_ci95_low": lo, "gain_ci95_high": hi, "seeds": len(result.seeds)})
    return out
