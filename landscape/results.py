"""The landscape results: 1D curves, 2D surfaces and the device comparison, each carrying its
metadata, with the arrays and labels they are saved as and read back from (``to_arrays``,
``labels``, ``from_arrays``). Computed by ``landscape.curves``, ``landscape.surfaces`` and
``landscape.summary``; written and read by ``landscape.cache`` and ``landscape.export``.
"""

from __future__ import annotations

import csv
import io
from collections.abc import Mapping
from dataclasses import dataclass, field, replace

import numpy as np

BANDS = ("std", "p10-p90")


def _band(values: np.ndarray, band: str, axis: int):
    if band == "std":
        mean = values.mean(axis)
        std = values.std(axis, ddof=1) if values.shape[axis] > 1 else np.zeros_like(mean)
        return mean - std, mean + std
    return np.percentile(values, 10, axis=axis), np.percentile(values, 90, axis=axis)


def _check_axes(array: np.ndarray, lengths: tuple, what: str) -> None:
    """Labels and arrays read back together must agree on every labelled axis's length."""
    if tuple(array.shape[: len(lengths)]) != tuple(lengths):
        raise ValueError(f"{what}: expected leading axes {tuple(lengths)} from its labels, found {array.shape}")


@dataclass(frozen=True)
class Curves:
    """g(alpha) along unit noise directions, per model, device and draw.

    ``alphas[d]`` is device d's alpha grid (the perturbation's Frobenius norm, weight units);
    ``loss`` / ``accuracy`` are [model, device, draw, alpha]; ``typical_norm`` [model, device] is
    sqrt(E||delta||^2) of the device on that model, and ``loss_at_typical`` [model, device, draw] the
    loss at alpha = typical_norm along each draw's own direction (that draw's physical size);
    ``clean_loss`` / ``clean_accuracy`` [model] are the values at alpha = 0.
    """

    models: tuple[str, ...]
    devices: tuple[str, ...]
    alphas: np.ndarray
    loss: np.ndarray
    accuracy: np.ndarray
    typical_norm: np.ndarray
    loss_at_typical: np.ndarray
    accuracy_at_typical: np.ndarray
    clean_loss: np.ndarray
    clean_accuracy: np.ndarray
    band: str = "std"
    meta: dict = field(default_factory=dict)

    kind = "curves"

    def mean(self, metric: str = "loss") -> np.ndarray:
        return self._metric(metric).mean(axis=2)

    def band_limits(self, metric: str = "loss") -> tuple[np.ndarray, np.ndarray]:
        return _band(self._metric(metric), self.band, axis=2)

    def _metric(self, metric: str) -> np.ndarray:
        if metric not in ("loss", "accuracy"):
            raise ValueError(f"metric must be 'loss' or 'accuracy', found {metric!r}")
        return self.loss if metric == "loss" else self.accuracy

    def to_arrays(self) -> dict[str, np.ndarray]:
        return {"alphas": self.alphas, "loss": self.loss, "accuracy": self.accuracy,
                "typical_norm": self.typical_norm, "loss_at_typical": self.loss_at_typical,
                "accuracy_at_typical": self.accuracy_at_typical, "clean_loss": self.clean_loss,
                "clean_accuracy": self.clean_accuracy}

    def labels(self) -> dict:
        return {"models": list(self.models), "devices": list(self.devices), "band": self.band}

    @classmethod
    def from_arrays(cls, arrays: Mapping[str, np.ndarray], labels: dict, meta: dict) -> "Curves":
        out = cls(tuple(labels["models"]), tuple(labels["devices"]), band=labels["band"], meta=meta,
                  **{k: np.asarray(arrays[k]) for k in ("alphas", "loss", "accuracy", "typical_norm",
                                                         "loss_at_typical", "accuracy_at_typical", "clean_loss",
                                                         "clean_accuracy")})
        _check_axes(out.loss, (len(out.models), len(out.devices)), "curves loss")
        _check_axes(out.typical_norm, (len(out.models), len(out.devices)), "curves typical_norm")
        return out


@dataclass(frozen=True)
class Surface:
    """g(alpha, beta) on a plane, one panel per noise condition.

    ``loss`` / ``accuracy`` / ``loss_std`` are [panel, alpha, beta]: the expected value over the
    panel's draws (a single evaluation for the noise-free panel, whose std is 0).
    ``marker_loss`` / ``marker_accuracy`` are [panel, marker], evaluated exactly at the markers.
    ``accuracy_std`` [panel, alpha, beta] and ``marker_loss_std`` / ``marker_accuracy_std`` [panel,
    marker] are the std over the same draws (0 for the noise-free panel; None in results saved
    before they were kept), so every Monte-Carlo number has its standard error std / sqrt(draws).
    """

    alphas: np.ndarray
    betas: np.ndarray
    panels: tuple[str, ...]
    loss: np.ndarray
    accuracy: np.ndarray
    loss_std: np.ndarray
    markers: dict
    marker_loss: np.ndarray
    marker_accuracy: np.ndarray
    meta: dict = field(default_factory=dict)
    accuracy_std: np.ndarray | None = None
    marker_loss_std: np.ndarray | None = None
    marker_accuracy_std: np.ndarray | None = None

    kind = "surface"
    SPREADS = ("accuracy_std", "marker_loss_std", "marker_accuracy_std")

    def to_arrays(self) -> dict[str, np.ndarray]:
        return {"alphas": self.alphas, "betas": self.betas, "loss": self.loss, "accuracy": self.accuracy,
                "loss_std": self.loss_std, "marker_loss": self.marker_loss,
                "marker_accuracy": self.marker_accuracy,
                **{k: getattr(self, k) for k in self.SPREADS if getattr(self, k) is not None}}

    def labels(self) -> dict:
        # Markers as a list of [name, alpha, beta] rows, not a mapping: the row order is the order of
        # marker_loss's axis, and a list keeps it whatever a JSON writer does with keys.
        return {"panels": list(self.panels),
                "markers": [[k, float(v[0]), float(v[1])] for k, v in self.markers.items()]}

    @classmethod
    def from_arrays(cls, arrays: Mapping[str, np.ndarray], labels: dict, meta: dict) -> "Surface":
        rows = labels["markers"]
        if not isinstance(rows, list):
            raise ValueError(f"surface markers must be a list of [name, alpha, beta] rows, found {type(rows).__name__}")
        out = cls(panels=tuple(labels["panels"]), markers={str(n): (float(a), float(b)) for n, a, b in rows},
                  meta=meta, **{k: np.asarray(arrays[k]) for k in ("alphas", "betas", "loss", "accuracy", "loss_std",
                                                                    "marker_loss", "marker_accuracy")},
                  **{k: np.asarray(arrays[k]) for k in cls.SPREADS if k in arrays})
        _check_axes(out.loss, (len(out.panels), len(out.alphas), len(out.betas)), "surface loss")
        _check_axes(out.marker_loss, (len(out.panels), len(out.markers)), "surface marker_loss")
        return out


# The columns a device-sharpness prediction adds to each row of a comparison (Comparison.with_prediction).
PREDICTION_COLUMNS = ("sharpness", "sharpness_se", "predicted_increase", "predicted_increase_se", "probes")


@dataclass(frozen=True)
class Comparison:
    """Per model and device rows of ``landscape.summary.compare_devices``, with the threshold used and
    which compared differences the draws resolve."""

    rows: list
    threshold: float
    meta: dict = field(default_factory=dict)
    separation: list = field(default_factory=list)
    prediction: object = None  # a landscape.sharpness.Prediction, once with_prediction has added it

    def with_prediction(self, prediction) -> "Comparison":
        """This comparison with the device-sharpness prediction (``landscape.sharpness.
        predicted_vs_measured``) beside each row: sharpness, its SE, the predicted increase, and the
        rank correlation across all rows (repeated per row, so summary.csv carries it)."""
        by_pair = {(p["model"], p["device"]): p for p in prediction.rows}
        missing = [(r["model"], r["device"]) for r in self.rows if (r["model"], r["device"]) not in by_pair]
        if missing:
            raise ValueError(f"prediction: expected every model-device pair of the comparison, found none for {missing}")
        c = prediction.correlation
        rows = [{**r, **{k: by_pair[(r["model"], r["device"])][k] for k in PREDICTION_COLUMNS},
                 "prediction_spearman": c["spearman"], "prediction_p_value": c["p_value"],
                 "prediction_pairs": c["pairs"]} for r in self.rows]
        return replace(self, rows=rows, prediction=prediction)

    @property
    def warnings(self) -> list[str]:
        """One sentence per compared pair whose difference the draws cannot resolve."""
        return [s["message"] for s in self.separation if not s["separated"]]

    def to_csv(self) -> str:
        buf = io.StringIO()
        if self.rows:
            writer = csv.DictWriter(buf, fieldnames=list(self.rows[0]))
            writer.writeheader()
            writer.writerows(self.rows)
        return buf.getvalue()
