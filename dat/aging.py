"""Accuracy against time since programming.

A crossbar device's noise depends on the time t since its weights were programmed, through its
``t_seconds`` parameter (``dat.noise.crossbar.CrossbarParams``): the programming-noise std follows the
Wan et al. 2022 fits (1 s, 1 day, 2 days; held at the 2-day value beyond, where there are no data)
and the mean relaxes linearly in log10(t). ``device_at`` is that device with ``t_seconds = t`` and
nothing else changed, so the profile at each time point is exactly the preset made with that time.

Each model (one checkpoint per seed) is evaluated at every time point with the ordinary noisy
evaluation (``dat.evaluate.evaluate``, the draws of ``dat eval`` for the same seed).
"""

from __future__ import annotations

import math
import time
from dataclasses import dataclass, field

import numpy as np

from dat.noise.crossbar import CrossbarParams
from dat.errors import expected

# (label, seconds): a month is 1/12 of a Julian year (30.44 days), a year 365.25 days.
TIME_POINTS = (("1 s", 1.0), ("1 min", 60.0), ("1 h", 3600.0), ("1 day", 86400.0), ("1 week", 604800.0),
               ("1 month", 2629800.0), ("1 year", 31557600.0))


def device_at(spec, t_seconds: float) -> CrossbarParams:
    """The device ``spec`` (preset name, saved crossbar profile, or CrossbarParams) at time t."""
    from dat.noise.io import resolve_device

    device, name = resolve_device(spec)
    if not isinstance(device, CrossbarParams):
        raise expected(f"device {name!r} for accuracy against time", "a parametric crossbar device (it has a "
                       "time parameter t_seconds)", type(device).__name__)
    return device.replace(t_seconds=float(t_seconds))


def profile_at(spec, targets, t_seconds: float):
    """``device_at`` bound to the targets."""
    from dat.noise.profile import bind

    return bind(device_at(spec, t_seconds), targets)


@dataclass(frozen=True)
class AgingResult:
    """``acc`` [model, device, time, seed, draw] and ``loss`` [model, device, time, seed] (mean over
    draws) on the test split, ``clean_acc`` [model, seed]; ``times`` in seconds."""

    models: tuple[str, ...]
    devices: tuple[str, ...]
    time_labels: tuple[str, ...]
    times: np.ndarray
    acc: np.ndarray
    loss: np.ndarray
    clean_acc: np.ndarray
    meta: dict = field(default_factory=dict)

    kind = "aging"

    def summary(self) -> list[dict]:
        from dat.transfer import seed_statistics

        out = []
        for i, m in enumerate(self.models):
            for j, d in enumerate(self.devices):
                for k, (label, t) in enumerate(zip(self.time_labels, self.times)):
                    lo_l, hi_l = _band(self.loss[i, j, k])
                    out.append({"model": m, "device": d, "time": label, "t_seconds": float(t),
                                **seed_statistics(self.acc[i, j, k]), "loss_mean": float(self.loss[i, j, k].mean()),
                                "loss_seed_min": lo_l, "loss_seed_max": hi_l,
                                "clean_acc": float(self.clean_acc[i].mean())})
        return out

    def labels(self) -> dict:
        return {"models": list(self.models), "devices": list(self.devices), "times": list(self.time_labels)}

    def to_arrays(self) -> dict[str, np.ndarray]:
        return {"times": self.times, "acc": self.acc, "loss": self.loss, "clean_acc": self.clean_acc}

    def numbers_csv(self) -> str:
        from dat.transfer import rows_csv

        return rows_csv(self.summary())


def _band(x: np.ndarray) -> tuple[float, float]:
    return float(np.min(x)), float(np.max(x))


def accuracy_vs_time(models: dict, devices: dict, *, times=TIME_POINTS, draws: int = 20, seed: int = 0,
                     split: str = "test", data_root=None, progress=None) -> AgingResult:
    """``models``: label -> list of checkpoint paths (one per seed, the same count for every model);
    ``devices``: label -> crossbar device reference (preset, saved crossbar profile or CrossbarParams).
    Evaluates every checkpoint under every device at every time point with ``draws`` draws."""
    from dat.checkpoint import load_checkpoint, versions
    from dat.data import load_dataset
    from dat.evaluate import evaluate

    started = time.perf_counter()
    if not models or not devices:
        raise expected("accuracy against time", "at least one model and one device", f"{len(models)} and {len(devices)}")
    counts = {m: len(p) for m, p in models.items()}
    if len(set(counts.values())) != 1 or 0 in counts.values():
        raise expected("checkpoints per model", "the same number (one per seed) for every model", counts)
    times = tuple((str(label), float(t)) for label, t in times)
    for label, t in times:
        if not (math.isfinite(t) and t >= 1.0):
            raise expected(f"time point {label!r}", "a number of seconds >= 1", t)
    if split not in ("train", "test"):
        raise expected("split", "train or test", repr(split))
    m_labels, d_labels = tuple(models), tuple(devices)
    S = next(iter(counts.values()))
    acc = np.zeros((len(m_labels), len(d_labels), len(times), S, draws))
    loss = np.zeros(acc.shape[:-1])
    clean = np.zeros((len(m_labels), S))
    hashes, done, total = {}, 0, len(m_labels) * S
    for i, m in enumerate(m_labels):
        for s, path in enumerate(models[m]):
            ckpt = load_checkpoint(path)
            config = ckpt.meta.get("config", {})
            bundle = load_dataset(config.get("dataset", "digits"), data_root or config.get("data_root"),
                                  verify=config.get("verify", True))
            data = bundle.test if split == "test" else bundle.train_eval
            targets = ckpt.noise_targets()
            for j, d in enumerate(d_labels):
                for k, (label, t) in enumerate(times):
                    profile = profile_at(devices[d], targets, t)
                    hashes[f"{d} @ {label}"] = profile.content_hash()
                    res = evaluate(ckpt.model, data, profile=profile, targets=targets, draws=draws, seed=seed)
                    acc[i, j, k, s] = res["noisy"]["acc_per_draw"]
                    loss[i, j, k, s] = res["noisy"]["loss_mean"]
                    clean[i, s] = res["clean"]["acc"]
            done += 1
            if progress is not None:
                progress(done, total)
    meta = {"inputs": {"models": {m: list(map(str, models[m])) for m in m_labels},
                       "devices": {d: str(getattr(devices[d], "name", devices[d])) for d in d_labels},
                       "times": [list(t) for t in times], "draws": draws, "seed": seed, "split": split,
                       "profile_hashes": hashes},
            "wall_time_s": time.perf_counter() - started, "versions": versions()}
    return AgingResult(m_labels, d_labels, tuple(t[0] for t in times), np.array([t[1] for t in times]),
                       acc, loss, clean, meta)

