"""Device sharpness: the curvature of the loss along a device's own noise.

For weights w and a device perturbation delta = w_scale * eta, eta ~ N(mu, Sigma), a second-order
expansion of the loss gives

    E[L(w + delta)] - L(w) ~ g.m + (1/2) (tr(H Sigma_w) + m^T H m),

with g and H the gradient and Hessian of the loss restricted to the noise targets, m = w_scale * mu
the mean shift and Sigma_w = S Sigma S the covariance in weight units (S the per-weight w_scale).
The *device sharpness* is the zero-mean part (1/2) tr(H Sigma_w). It is estimated by Hutchinson's
method with probes drawn from the device itself: for delta_0 ~ N(0, Sigma_w),
E[delta_0^T H delta_0] = tr(H Sigma_w). Each probe costs one Hessian-vector product (forward-over-
reverse with torch.func: jvp of grad), batched over probes with vmap; no n x n matrix is formed.
The estimate carries its standard error over probes, and splits exactly into per-layer parts
delta_l^T (H delta)_l (their expectations, tr of the layer's block of H Sigma_w, sum to the total).

For reference, the top eigenvalues of H on the targets come from Lanczos
(scipy.sparse.linalg.eigsh on a LinearOperator of HVPs).

The loss is the mean cross-entropy of the model in eval mode (BatchNorm with its running statistics),
as in the noisy evaluation.
"""

from __future__ import annotations

import copy
import math
import time
from dataclasses import dataclass, field

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn
from torch.func import functional_call, grad, jvp, vmap

from dat.errors import expected
from dat.evaluate import is_head_only


class TargetLoss:
    """Mean cross-entropy over (X, Y) as a function of the noise targets' weights alone, with its
    gradient and Hessian-vector products (the rest of the model fixed at its current state)."""

    def __init__(self, model: nn.Module, targets, X: torch.Tensor, Y: torch.Tensor, *, batch_size: int = 512,
                 probe_chunk: int | None = 16):
        if not isinstance(model, nn.Module):
            raise expected("model", "a torch.nn.Module", type(model).__name__)
        self.model = copy.deepcopy(model).eval()
        for p in self.model.parameters():
            p.requires_grad_(False)
        self.names = [layer.name for layer in targets.layers]
        self.targets = targets
        state = {**dict(self.model.named_parameters()), **dict(self.model.named_buffers())}
        missing = [n for n in self.names if n not in state]
        if missing:
            raise expected("noise targets", f"weights of the model ({sorted(state)[:6]}...)", missing)
        self.state = {k: v.detach() for k, v in state.items()}
        self.theta = {n: self.state[n] for n in self.names}
        self.head = is_head_only(self.model, targets)
        self.probe_chunk = probe_chunk
        device = next(iter(self.state.values())).device
        X, Y = X.to(device), Y.to(device)
        self.n = int(Y.shape[0])
        with torch.no_grad():  # head-only: the body runs once, the loss depends on the head alone
            self.batches = [(self.model.features(X[i:i + batch_size]) if self.head else X[i:i + batch_size],
                             Y[i:i + batch_size]) for i in range(0, self.n, batch_size)]

    def _batch_loss(self, theta: dict, inp: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
        if self.head:
            logits = F.linear(inp, theta["classifier.weight"], self.state.get("classifier.bias"))
        else:
            logits = functional_call(self.model, {**self.state, **theta}, (inp,))
        return F.cross_entropy(logits, y, reduction="sum")

    def loss(self, theta: dict | None = None) -> float:
        theta = self.theta if theta is None else theta
        with torch.no_grad():
            return float(sum(self._batch_loss(theta, x, y) for x, y in self.batches)) / self.n

    def gradient(self) -> dict[str, torch.Tensor]:
        out = {n: torch.zeros_like(t) for n, t in self.theta.items()}
        for x, y in self.batches:
            g = grad(self._batch_loss)(self.theta, x, y)
            out = {n: out[n] + g[n] for n in out}
        return {n: v / self.n for n, v in out.items()}

    def hvp(self, V: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
        """H v for a batch of vectors: V maps each target name to [R, *shape]; same shape out."""
        out = None
        for x, y in self.batches:
            def one(v, x=x, y=y):
                return jvp(lambda th: grad(self._batch_loss)(th, x, y), (self.theta,), (v,))[1]

            hv = vmap(one, chunk_size=self.probe_chunk)(V)
            out = hv if out is None else {n: out[n] + hv[n] for n in out}
        return {n: v / self.n for n, v in out.items()}

    # flat views (float64 numpy) for scipy
    @property
    def size(self) -> int:
        return sum(t.numel() for t in self.theta.values())

    def _unflatten(self, x: np.ndarray) -> dict[str, torch.Tensor]:
        out, i = {}, 0
        for n, t in self.theta.items():
            out[n] = torch.as_tensor(x[i:i + t.numel()], dtype=t.dtype, device=t.device).reshape(1, *t.shape)
            i += t.numel()
        return out

    def _flatten(self, d: dict[str, torch.Tensor]) -> np.ndarray:
        return torch.cat([d[n].reshape(-1) for n in self.names]).detach().cpu().double().numpy()


def _deltas(targets, eta: torch.Tensor, weights: dict) -> dict[str, torch.Tensor]:
    first = next(iter(weights.values()))
    return targets.eta_to_deltas(eta.to(device=first.device, dtype=first.dtype), weights)


def device_sharpness(model: nn.Module, profile, targets, X: torch.Tensor, Y: torch.Tensor, *, probes: int = 32,
                     seed: int = 0, batch_size: int = 512, loss: TargetLoss | None = None) -> dict:
    """(1/2) tr(H Sigma_w) by Hutchinson with ``probes`` zero-mean device draws (seeded by ``seed``).

    Returns {"sharpness", "se" (standard error over probes), "per_layer": {name: {"sharpness", "se"}},
    "trace" (= 2 x sharpness), "first_order" (g.m), "mean_curvature" (m^T H m), "predicted_increase"
    (g.m + (tr + m^T H m) / 2), "probes", "clean_loss"}."""
    if not isinstance(probes, int) or isinstance(probes, bool) or probes < 2:
        raise expected("probes", "an int >= 2 (a standard error needs two)", repr(probes))
    if profile.n != targets.n:
        raise expected("profile size", f"n = {targets.n} (the targets')", f"n = {profile.n}")
    f = loss if loss is not None else TargetLoss(model, targets, X, Y, batch_size=batch_size)
    generator = torch.Generator().manual_seed(seed)
    mu = profile.mean()
    eta = profile.sampler("full").sample(probes, generator).double() - mu  # zero-mean draws, [R, n]
    D = _deltas(targets, eta, f.theta)
    HD = f.hvp(D)
    per = {n: (D[n] * HD[n]).reshape(probes, -1).sum(1).double() for n in f.names}  # delta_l . (H delta)_l
    q = sum(per.values())                                                              # delta . H delta

    def half(v):  # (1/2) mean and its standard error over probes
        return 0.5 * float(v.mean()), 0.5 * float(v.std() / math.sqrt(probes))

    m = _deltas(targets, mu[None], f.theta)
    g, Hm = f.gradient(), f.hvp(m)
    first = float(sum((g[n] * m[n][0]).sum() for n in f.names))
    mean_curv = float(sum((m[n] * Hm[n]).sum() for n in f.names))
    s, se = half(q)
    return {"sharpness": s, "se": se, "trace": 2 * s,
            "per_layer": {n: dict(zip(("sharpness", "se"), half(per[n]))) for n in f.names},
            "first_order": first, "mean_curvature": mean_curv, "predicted_increase": first + s + 0.5 * mean_curv,
            "probes": probes, "clean_loss": f.loss()}


def hessian_top_eigenvalues(model: nn.Module, targets, X: torch.Tensor, Y: torch.Tensor, *, k: int = 5,
                            batch_size: int = 512, tol: float = 1e-6, loss: TargetLoss | None = None) -> np.ndarray:
    """The k largest (algebraic) eigenvalues of the Hessian on the targets, descending, by Lanczos
    (scipy.sparse.linalg.eigsh) on Hessian-vector products; the start vector is fixed (reproducible)."""
    import scipy.sparse.linalg as spla

    f = loss if loss is not None else TargetLoss(model, targets, X, Y, batch_size=batch_size)
    n = f.size
    if not isinstance(k, int) or not 1 <= k < n:
        raise expected("k (eigenvalues)", f"an int between 1 and {n - 1}", repr(k))

    def matvec(x):
        return f._flatten({name: v[0] for name, v in f.hvp(f._unflatten(np.asarray(x).reshape(-1))).items()})

    op = spla.LinearOperator((n, n), matvec=matvec, dtype=np.float64)
    v0 = np.random.default_rng(0).standard_normal(n)
    vals = spla.eigsh(op, k=k, which="LA", v0=v0, tol=tol, return_eigenvectors=False)
    return np.sort(vals)[::-1]


@dataclass(frozen=True)
class SharpnessResult:
    """Per model and device: device sharpness (total and per layer) and the measured loss increase
    at the typical noise norm; the rank correlation between them; top Hessian eigenvalues per model."""

    rows: tuple[dict, ...]
    layer_rows: tuple[dict, ...]
    eigenvalues: dict
    correlation: dict
    meta: dict = field(default_factory=dict)

    kind = "sharpness"

    def labels(self) -> dict:
        return {"models": list(dict.fromkeys(r["model"] for r in self.rows)),
                "devices": list(dict.fromkeys(r["device"] for r in self.rows)), "correlation": self.correlation}

    def to_arrays(self) -> dict[str, np.ndarray]:
        keys = ("sharpness", "se", "predicted_increase", "measured_increase", "measured_se", "typical_norm")
        out = {k: np.array([r[k] for r in self.rows]) for k in keys}
        if self.eigenvalues:
            out["top_eigenvalues"] = np.array([self.eigenvalues[m] for m in self.eigenvalues])
        return out

    def numbers_csv(self) -> str:
        from dat.transfer import rows_csv

        rows = [{"layer": "all", **r} for r in self.rows]
        keys = list(rows[0]) if rows else []
        rows += [{k: lr.get(k, "") for k in keys} for lr in self.layer_rows]
        return rows_csv(rows)


def rank_correlation(x, y) -> dict:
    """Spearman's rank correlation (scipy.stats.spearmanr) with its p-value; NaN below 3 pairs."""
    from scipy import stats

    x, y = np.asarray(x, float), np.asarray(y, float)
    if x.size < 3:
        return {"spearman": float("nan"), "p_value": float("nan"), "pairs": int(x.size)}
    res = stats.spearmanr(x, y)
    return {"spearman": float(res.statistic), "p_value": float(res.pvalue), "pairs": int(x.size)}


def study_inputs(paths: dict, *, samples: int | None = None, data_root=None):
    """The inputs of :func:`sharpness_study` from checkpoint files {label: path}: ({label: (model,
    its trained noise targets)}, X, Y), the first ``samples`` images of their one dataset's
    un-augmented training split, read from the user's ``data_root`` (never the checkpoint's)."""
    from dat.checkpoint import load_checkpoint
    from dat.data import dataset_named_by, load_dataset_named_by
    from dat.errors import expected

    from .inputs import as_tensors

    if not paths:
        raise expected("models", "at least one checkpoint", "none")
    models, names = {}, {}
    for label, path in paths.items():
        ckpt = load_checkpoint(path)
        models[label] = (ckpt.model, ckpt.noise_targets())
        names[label] = dataset_named_by(ckpt.meta, f"checkpoint {path}")
    if len(set(names.values())) != 1:
        raise expected("models' datasets", "one dataset for every model", names)
    name = next(iter(names.values()))
    bundle = load_dataset_named_by(name, data_root, source="the sharpness models")
    X, Y = as_tensors(bundle.train_eval, samples or None)
    return models, X, Y


def sharpness_study(models: dict, devices: dict, X: torch.Tensor, Y: torch.Tensor, *, probes: int = 32,
                    draws: int = 20, seed: int = 0, eigenvalues: int = 5, batch_size: int = 512,
                    progress=None) -> SharpnessResult:
    """``models``: label -> (model, targets); ``devices``: label -> device reference (preset, file or
    device object). For every pair: ``device_sharpness`` and the measured loss increase at the
    device's typical noise norm (``landscape.curves.noise_curves``, ``draws`` directions: the value
    the Compare page shows), then Spearman's rank correlation between them across all pairs."""
    from dat.checkpoint import versions
    from dat.noise.io import make_profile

    from .curves import noise_curves

    started = time.perf_counter()
    if not models or not devices:
        raise expected("sharpness study", "at least one model and one device", f"{len(models)} and {len(devices)}")
    rows, layer_rows, eig, hashes = [], [], {}, {}
    total, done = len(models) * len(devices), 0
    for m, (model, targets) in models.items():
        f = TargetLoss(model, targets, X, Y, batch_size=batch_size)
        if eigenvalues:
            eig[m] = hessian_top_eigenvalues(model, targets, X, Y, k=min(eigenvalues, f.size - 1), loss=f).tolist()
        for d, spec in devices.items():
            profile = make_profile(spec, targets, name=d)
            hashes[f"{m} / {d}"] = profile.content_hash()
            s = device_sharpness(model, profile, targets, X, Y, probes=probes, seed=seed, loss=f)
            curves = noise_curves({m: model}, {d: profile}, (X, Y), num_alphas=3, draws=draws, seed=seed,
                                  targets=targets, batch_size=batch_size)
            inc = curves.loss_at_typical[0, 0] - curves.clean_loss[0]
            rows.append({"model": m, "device": d, "sharpness": s["sharpness"], "se": s["se"],
                         "first_order": s["first_order"], "mean_curvature": s["mean_curvature"],
                         "predicted_increase": s["predicted_increase"], "measured_increase": float(inc.mean()),
                         "measured_se": float(inc.std(ddof=1) / math.sqrt(inc.size)) if inc.size > 1 else 0.0,
                         "typical_norm": float(curves.typical_norm[0, 0]), "clean_loss": s["clean_loss"],
                         "probes": probes, "draws": draws})
            for name, v in s["per_layer"].items():
                layer_rows.append({"layer": name, "model": m, "device": d, "sharpness": v["sharpness"], "se": v["se"]})
            done += 1
            if progress is not None:
                progress(done, total)
    measured = [r["measured_increase"] for r in rows]
    correlation = {"sharpness": rank_correlation([r["sharpness"] for r in rows], measured),
                   "predicted_increase": rank_correlation([r["predicted_increase"] for r in rows], measured)}
    meta = {"inputs": {"models": list(models), "devices": {d: str(getattr(v, "name", v)) for d, v in devices.items()},
                       "probes": probes, "draws": draws, "seed": seed, "n_samples": int(Y.shape[0]),
                       "eigenvalues": eigenvalues, "profile_hashes": hashes},
            "wall_time_s": time.perf_counter() - started, "versions": versions()}
    return SharpnessResult(tuple(rows), tuple(layer_rows), eig, correlation, meta)


# ----------------------------------------------------------------------------------------------
# The prediction next to the measured increase (Compare page and `dat landscape compare`)
# ----------------------------------------------------------------------------------------------
PREDICTION_PROBES = 64  # Hutchinson probes per model and device: a standard error of ~5-10 % on the demo trio


@dataclass(frozen=True)
class DeviceSharpness:
    """(1/2) tr(H Sigma_w) per model and device ([model, device] arrays) with its standard error over
    probes, and the second-order predicted increase (with the device's mean shift); the cacheable
    part of :class:`Prediction`."""

    models: tuple
    devices: tuple
    sharpness: np.ndarray
    se: np.ndarray
    predicted_increase: np.ndarray
    meta: dict = field(default_factory=dict)

    kind = "device-sharpness"

    def labels(self) -> dict:
        return {"models": list(self.models), "devices": list(self.devices)}

    def to_arrays(self) -> dict[str, np.ndarray]:
        return {"sharpness": self.sharpness, "se": self.se, "predicted_increase": self.predicted_increase}

    @classmethod
    def from_arrays(cls, arrays: dict, labels: dict, meta: dict) -> "DeviceSharpness":
        shape = (len(labels["models"]), len(labels["devices"]))
        out = {k: np.asarray(arrays[k], dtype=np.float64) for k in ("sharpness", "se", "predicted_increase")}
        bad = [k for k, v in out.items() if v.shape != shape]
        if bad:
            raise expected("cached device sharpness", f"arrays of shape {shape}", {k: out[k].shape for k in bad})
        return cls(tuple(labels["models"]), tuple(labels["devices"]), meta=meta, **out)


@dataclass(frozen=True)
class Prediction:
    """Per model and device: the predicted loss increase (1/2) tr(H Sigma_w) +- its standard error
    over probes next to the measured increase at the typical noise norm +- its standard error over
    draws, and how well the prediction ranks the pairs (Spearman over models x devices)."""

    rows: tuple[dict, ...]
    correlation: dict
    meta: dict = field(default_factory=dict)

    def to_csv(self) -> str:
        from dat.transfer import rows_csv

        return rows_csv(list(self.rows))

    def sentence(self) -> str:
        c = self.correlation
        if c["pairs"] < 3:
            return f"Spearman rank correlation: needs 3 or more model-device pairs, found {c['pairs']}."
        return (f"Spearman rank correlation of the predicted with the measured increase: "
                f"{c['spearman']:.2f} (p = {c['p_value']:.2g}, n = {c['pairs']} model-device pairs).")


def _source_hash() -> str:
    import hashlib
    from pathlib import Path

    return hashlib.sha256(Path(__file__).read_bytes()).hexdigest()[:12]


def device_sharpness_table(models: dict, profiles: dict, targets_of, X: torch.Tensor, Y: torch.Tensor, *,
                           probes: int = PREDICTION_PROBES, seed: int = 0, cache=None,
                           progress=None) -> DeviceSharpness:
    """:func:`device_sharpness` for every model (label -> module) and device (label -> profile bound
    to the models' targets), ``targets_of(model)`` giving a model's noise targets; cached on disk under
    the models', profiles' and data's hashes, the probes, the seed and this module's source."""
    from . import cache as _cache

    started = time.perf_counter()
    m_labels, d_labels = tuple(models), tuple(profiles)
    inputs = {"what": "device sharpness", "source": _source_hash(),
              "models": {m: _cache.state_hash(models[m]) for m in m_labels},
              "profiles": {d: profiles[d].content_hash() for d in d_labels},
              "data": {"n": int(Y.shape[0]), "hash": _cache.tensor_hash({"X": X, "Y": Y})},
              "model_order": list(m_labels), "device_order": list(d_labels), "probes": int(probes), "seed": int(seed)}
    store = _cache.as_cache(cache)
    if store is not None:
        hit = store.load(inputs, DeviceSharpness)
        if hit is not None:
            return hit
    shape = (len(m_labels), len(d_labels))
    s, se, pred = np.zeros(shape), np.zeros(shape), np.zeros(shape)
    for i, m in enumerate(m_labels):
        targets = targets_of(models[m])
        f = TargetLoss(models[m], targets, X, Y)
        for j, d in enumerate(d_labels):
            r = device_sharpness(models[m], profiles[d], targets, X, Y, probes=probes, seed=seed, loss=f)
            s[i, j], se[i, j], pred[i, j] = r["sharpness"], r["se"], r["predicted_increase"]
            if progress is not None:
                progress(i * len(d_labels) + j + 1, len(m_labels) * len(d_labels))
    result = DeviceSharpness(m_labels, d_labels, s, se, pred,
                             {"inputs": inputs, "seconds": round(time.perf_counter() - started, 3)})
    if store is not None:
        store.save(inputs, result)
    return result


def predicted_vs_measured(spec, comparison, inputs=None, *, probes: int = PREDICTION_PROBES, cache=None,
                          progress=None) -> Prediction:
    """The device-sharpness prediction next to a device comparison's measured increases: one recipe
    for the Compare page and `dat landscape compare`.

    ``spec``: the comparison's landscape spec (curves or surface of the trio: the same checkpoints,
    devices, data and samples); ``comparison``: ``landscape.summary.compare_devices`` of its curves;
    ``inputs``: ``landscape.spec.load_inputs(spec)`` if already loaded. The probes are seeded with the
    spec's seed, and the data are the curves' own (checked by hash), so the prediction and the
    measurement see the same loss."""
    from dat.noise.targets import find_targets

    from . import cache as _cache
    from .inputs import as_tensors
    from .spec import load_inputs

    if not comparison.rows:
        raise expected("comparison", "at least one model and device", "no rows")
    inputs = load_inputs(spec) if inputs is None else inputs
    X, Y = as_tensors(inputs.data, spec.max_samples)
    measured_data = (comparison.meta.get("curves") or {}).get("data", {}).get("hash")
    if measured_data is not None and measured_data != _cache.tensor_hash({"X": X, "Y": Y}):
        raise expected("data of the prediction", "the samples the comparison measured on (same split and "
                       "max_samples)", f"other samples ({int(Y.shape[0])} of split {spec.split!r})")
    m_labels = list(dict.fromkeys(r["model"] for r in comparison.rows))
    d_labels = list(dict.fromkeys(r["device"] for r in comparison.rows))
    missing = [m for m in m_labels if m not in inputs.models] + [d for d in d_labels if d not in inputs.profiles]
    if missing:
        raise expected("models and devices of the comparison", f"in the spec ({list(inputs.models)}, "
                       f"{list(inputs.profiles)})", missing)
    table = device_sharpness_table({m: inputs.models[m] for m in m_labels}, {d: inputs.profiles[d] for d in d_labels},
                                   lambda model: find_targets(model, spec.targets, tile=(spec.tile, spec.tile),
                                                              units=spec.units),
                                   X, Y, probes=probes, seed=spec.seed, cache=cache, progress=progress)
    rows = []
    for r in comparison.rows:
        i, j = m_labels.index(r["model"]), d_labels.index(r["device"])
        rows.append({"model": r["model"], "device": r["device"], "typical_norm": r["typical_norm"],
                     "sharpness": float(table.sharpness[i, j]), "sharpness_se": float(table.se[i, j]),
                     "predicted_increase": float(table.predicted_increase[i, j]),
                     "predicted_increase_se": float(table.se[i, j]),
                     "measured_increase": r["loss_increase_at_typical"],
                     "measured_increase_se": r["loss_increase_at_typical_se"],
                     "probes": int(probes), "draws": r["draws"]})
    correlation = rank_correlation([r["predicted_increase"] for r in rows], [r["measured_increase"] for r in rows])
    return Prediction(tuple(rows), correlation, {"inputs": table.meta.get("inputs", {}), "samples": int(Y.shape[0]),
                                                 "seconds": table.meta.get("seconds"),
                                                 "cache_hit": bool(table.meta.get("cache", {}).get("hit"))})
