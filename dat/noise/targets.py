"""Noise targets and the crossbar layout: eta <-> per-layer weight perturbations.

A noise vector eta (length n) holds one value per weight of the *noise targets*. Each target
weight W (out x in; a conv weight [out, in, kh, kw] is flattened to out x in*kh*kw) is placed on
crossbar tiles of R x C cells with inputs on rows (word lines) and outputs on columns (bit lines):
cell (r, c) of tile (tr, tc) holds W[tc*C + c, tr*R + r].

eta ordering (the one index map of the project, see `Targets.locate` / `Targets.eta_index`):
layer by layer in model order; within a layer, tile by tile, tile-row-block major
(tile (tr, tc) comes before (tr, tc + 1)); within a tile, cell (r, c) row-major over its used
cells (index r * cols_used + c). Tiles on the right or bottom edge of a layer may be partial.

Units: the perturbation of a layer is delta_W = w_scale * eta with w_scale = max|W| of that layer
at the moment of use ("relative", as hardware maps max|W| to g_max) or 1 ("absolute").
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Mapping

import torch
from torch import nn

from dat.noise.choices import CHOICES, UNITS  # which weights sit on crossbars, eta's units (torch-free)


@dataclass(frozen=True)
class TargetLayer:
    """One target weight: `name` in `model.named_parameters()`, `shape` its parameter shape,
    `rows` its fan-in (word lines), `cols` its fan-out (bit lines), `offset` its start in eta."""

    name: str
    shape: tuple[int, ...]
    rows: int
    cols: int
    offset: int

    @property
    def size(self) -> int:
        return self.rows * self.cols


@dataclass(frozen=True)
class Tile:
    """One crossbar tile of a layer: grid position (tile_row, tile_col), used cells rows x cols,
    and the start of its block in eta."""

    layer: str
    tile_row: int
    tile_col: int
    rows: int
    cols: int
    offset: int

    @property
    def size(self) -> int:
        return self.rows * self.cols


def _check_tile(tile) -> tuple[int, int]:
    if (
        not isinstance(tile, (tuple, list))
        or len(tile) != 2
        or not all(isinstance(t, int) and not isinstance(t, bool) and t > 0 for t in tile)
    ):
        raise ValueError(f"tile must be a pair of positive ints (rows, cols), found {tile!r}")
    return int(tile[0]), int(tile[1])


class Targets:
    """The noise targets of a model and their crossbar layout (no reference to the model kept)."""

    def __init__(self, layers, tile=(64, 64), units="relative", choice="custom"):
        self.tile_shape = _check_tile(tile)
        if units not in UNITS:
            raise ValueError(f"units must be one of {UNITS}, found {units!r}")
        self.units = units
        self.choice = choice
        built, offset = [], 0
        for name, shape in layers:
            shape = tuple(int(s) for s in shape)
            if len(shape) < 2 or any(s <= 0 for s in shape):
                raise ValueError(
                    f"target {name!r}: expected a weight of shape [out, in, ...] with positive "
                    f"sizes, found {shape}"
                )
            rows, cols = math.prod(shape[1:]), shape[0]
            built.append(TargetLayer(name, shape, rows, cols, offset))
            offset += rows * cols
        if not built:
            raise ValueError("targets need at least one weight, found none")
        self.layers: tuple[TargetLayer, ...] = tuple(built)
        self.n = offset
        self._tiles = self._build_tiles()
        # Per layer: weight_index[i] = flat index into W.reshape(out, -1) of the layer's i-th eta
        # value. It is a permutation, so the inverse map is its argsort.
        self._weight_index = [self._layer_weight_index(l) for l in self.layers]
        self._eta_of_weight = [torch.argsort(w) for w in self._weight_index]

    # -- layout ----------------------------------------------------------------------------
    def _layer_tiles(self, layer: TargetLayer, offset: int) -> list[Tile]:
        R, C = self.tile_shape
        out = []
        for tr in range(math.ceil(layer.rows / R)):
            for tc in range(math.ceil(layer.cols / C)):
                r_used = min(R, layer.rows - tr * R)
                c_used = min(C, layer.cols - tc * C)
                out.append(Tile(layer.name, tr, tc, r_used, c_used, offset))
                offset += r_used * c_used
        return out

    def _build_tiles(self) -> list[Tile]:
        tiles = []
        for layer in self.layers:
            tiles.extend(self._layer_tiles(layer, layer.offset))
        return tiles

    def _layer_weight_index(self, layer: TargetLayer) -> torch.Tensor:
        R, C = self.tile_shape
        parts = []
        for t in self._tiles:
            if t.layer != layer.name:
                continue
            r = torch.arange(t.rows).repeat_interleave(t.cols) + t.tile_row * R
            c = torch.arange(t.cols).repeat(t.rows) + t.tile_col * C
            # cell (r, c) holds W[c_global, r_global]; W.reshape(out, rows) is row-major.
            parts.append(c * layer.rows + r)
        return torch.cat(parts)

    def tiles(self) -> list[Tile]:
        return list(self._tiles)

    def layer(self, name: str) -> TargetLayer:
        for l in self.layers:
            if l.name == name:
                return l
        raise ValueError(f"no target layer named {name!r}; targets are {[l.name for l in self.layers]}")

    def locate(self, i: int) -> dict:
        """Where eta[i] lives: layer name, tile index (into `tiles()`), cell (r, c) in the tile,
        and the flat index into the layer's weight (W.reshape(out, -1), row-major)."""
        if not 0 <= i < self.n:
            raise ValueError(f"eta index must be in [0, {self.n}), found {i}")
        for k, t in enumerate(self._tiles):
            if t.offset <= i < t.offset + t.size:
                li = [l.name for l in self.layers].index(t.layer)
                layer = self.layers[li]
                r, c = divmod(i - t.offset, t.cols)
                return {
                    "layer": t.layer,
                    "tile": k,
                    "r": r,
                    "c": c,
                    "weight_index": int(self._weight_index[li][i - layer.offset]),
                }
        raise AssertionError("tiles do not cover eta")  # unreachable: tiles partition [0, n)

    def eta_index(self, layer: str, weight_index: int) -> int:
        """Inverse of `locate`: the eta index of flat weight `weight_index` of `layer`."""
        li = [l.name for l in self.layers].index(self.layer(layer).name)
        size = self.layers[li].size
        if not 0 <= weight_index < size:
            raise ValueError(f"weight index of {layer!r} must be in [0, {size}), found {weight_index}")
        return self.layers[li].offset + int(self._eta_of_weight[li][weight_index])

    def describe(self) -> dict:
        return {
            "choice": self.choice,
            "units": self.units,
            "tile": list(self.tile_shape),
            "n": self.n,
            "layers": [
                {"name": l.name, "shape": list(l.shape), "rows": l.rows, "cols": l.cols, "offset": l.offset}
                for l in self.layers
            ],
        }

    def __repr__(self) -> str:
        names = ", ".join(l.name for l in self.layers)
        return f"Targets(n={self.n}, layers=[{names}], tile={self.tile_shape}, units={self.units!r})"

    def remove_output_means(self, x: torch.Tensor) -> torch.Tensor:
        """P x for x [n] or [n, m] in eta order: on the classifier layer (the last target layer,
        whose outputs are the logits), each input's values minus their mean over the layer's
        outputs, P = (I - 11^T / C) on the output side; other layers unchanged. A perturbation
        equal on every output for a given input shifts all logits of that input equally, which
        softmax cross-entropy (and the argmax) cannot see: P removes exactly those directions."""
        if not isinstance(x, torch.Tensor) or x.ndim not in (1, 2) or x.shape[0] != self.n:
            raise ValueError(f"x must be a tensor of shape [{self.n}] or [{self.n}, m], "
                             f"found {tuple(getattr(x, 'shape', ())) or type(x).__name__}")
        layer, inv = self.layers[-1], self._eta_of_weight[-1]
        cols = x.reshape(self.n, -1)
        pos = self._on(inv, x.device) + layer.offset  # eta index of each flat weight W[c, i]
        w = cols[pos].reshape(layer.cols, layer.rows, -1)  # [out, in, m]
        out = cols.clone()
        out[pos] = (w - w.mean(0, keepdim=True)).reshape(layer.size, -1)
        return out.reshape(x.shape)

    def classifier_cells(self) -> torch.Tensor:
        """The eta index of every classifier weight (the last target layer) as [in, out]: row i holds
        input i's cells over all outputs, the cells P averages over (`remove_output_means`)."""
        layer = self.layers[-1]
        pos = self._eta_of_weight[-1] + layer.offset  # eta index of each flat weight W[c, i]
        return pos.reshape(layer.cols, layer.rows).T.contiguous()

    # -- units -------------------------------------------------------------------------------
    def _w_scale(self, layer: TargetLayer, weights: Mapping[str, torch.Tensor]) -> torch.Tensor:
        if layer.name not in weights:
            raise ValueError(f"weights must contain target {layer.name!r}; found keys {sorted(weights)}")
        w = weights[layer.name]
        nd = len(layer.shape)
        if w.ndim < nd or tuple(w.shape[w.ndim - nd :]) != layer.shape:
            raise ValueError(f"weight {layer.name!r}: expected shape {layer.shape} (after any leading point "
                             f"dims), found {tuple(w.shape)}")
        lead = w.shape[: w.ndim - nd]  # several weight points at once (e.g. a chunk of a landscape grid)
        if self.units == "absolute":
            return torch.ones(lead, dtype=w.dtype, device=w.device)
        # max|W| is the hardware's mapping to g_max, not a trainable path: no gradient through it.
        return w.detach().abs().amax(dim=tuple(range(w.ndim - nd, w.ndim))) if lead else w.detach().abs().max()

    def _check_eta(self, eta: torch.Tensor) -> None:
        if not isinstance(eta, torch.Tensor):
            raise TypeError(f"eta must be a torch.Tensor, found {type(eta).__name__}")
        if eta.ndim < 1 or eta.shape[-1] != self.n:
            raise ValueError(
                f"eta must have shape [..., {self.n}] for these targets, found {tuple(eta.shape)}"
            )

    def _on(self, index: torch.Tensor, device: torch.device) -> torch.Tensor:
        """An index map on ``device``, copied there once (not once per call: a step may map p draws)."""
        if index.device == device:
            return index
        cache = self.__dict__.setdefault("_index_copies", {})
        key = (id(index), device)
        if key not in cache:
            cache[key] = index.to(device)
        return cache[key]

    def eta_to_deltas(self, eta: torch.Tensor, weights: Mapping[str, torch.Tensor]) -> dict[str, torch.Tensor]:
        """Weight perturbations (already times w_scale) from eta [..., n]: {name: [..., *shape]}.

        ``weights`` may carry leading dims of their own ([P, *shape]: P weight points, each with its
        own max|W|); the result is then [P, ..., *shape], every draw mapped at every point."""
        self._check_eta(eta)
        lead = eta.shape[:-1]
        out = {}
        for layer, inv in zip(self.layers, self._eta_of_weight):
            scale = self._w_scale(layer, weights).to(eta.dtype)
            block = eta[..., layer.offset : layer.offset + layer.size]
            flat = block.index_select(-1, self._on(inv, eta.device))
            scale = scale.reshape(*scale.shape, *[1] * (len(lead) + len(layer.shape)))
            out[layer.name] = flat.reshape(*lead, *layer.shape) * scale
        return out

    def deltas_to_eta(self, deltas: Mapping[str, torch.Tensor], weights: Mapping[str, torch.Tensor]) -> torch.Tensor:
        """The exact inverse of `eta_to_deltas`: {name: [..., *shape]} -> eta [..., n]."""
        parts, lead = [], None
        for layer, widx in zip(self.layers, self._weight_index):
            if layer.name not in deltas:
                raise ValueError(f"deltas must contain target {layer.name!r}; found keys {sorted(deltas)}")
            d = deltas[layer.name]
            nd = len(layer.shape)
            if d.ndim < nd or tuple(d.shape[d.ndim - nd :]) != layer.shape:
                raise ValueError(
                    f"delta {layer.name!r}: expected shape [..., {', '.join(map(str, layer.shape))}], "
                    f"found {tuple(d.shape)}"
                )
            this_lead = d.shape[: d.ndim - nd]
            if lead is not None and this_lead != lead:
                raise ValueError(f"deltas disagree on leading dims: {tuple(lead)} vs {tuple(this_lead)}")
            lead = this_lead
            scale = self._w_scale(layer, weights)
            if scale.ndim != 0:
                raise ValueError(f"deltas_to_eta takes one set of weights; {layer.name!r} has leading dims "
                                 f"{tuple(scale.shape)}")
            if float(scale) == 0.0:
                raise ValueError(f"weight {layer.name!r} is all zeros: relative units are undefined")
            flat = d.reshape(*lead, layer.size)
            parts.append(flat.index_select(-1, self._on(widx, d.device)) / scale.to(d.dtype))
        return torch.cat(parts, dim=-1)


def find_targets(model: nn.Module, choice: str = "last-linear", tile=(64, 64), units: str = "relative") -> Targets:
    """Enumerate a model's noise targets.

    "last-linear": the weight of the last `nn.Linear` in module order (the paper's default).
    "all-analog": every Linear and Conv weight (biases and BatchNorm stay digital).
    """
    if not isinstance(model, nn.Module):
        raise TypeError(f"model must be a torch.nn.Module, found {type(model).__name__}")
    if choice not in CHOICES:
        raise ValueError(f"choice must be one of {CHOICES}, found {choice!r}")
    analog = (nn.Linear,) if choice == "last-linear" else (nn.Linear, nn.modules.conv._ConvNd)
    found, seen = [], set()
    for mod_name, mod in model.named_modules():
        if isinstance(mod, analog) and id(mod.weight) not in seen:
            seen.add(id(mod.weight))
            found.append((f"{mod_name}.weight" if mod_name else "weight", tuple(mod.weight.shape)))
    if not found:
        raise ValueError(f"model has no {'nn.Linear' if choice == 'last-linear' else 'Linear/Conv'} layer to target")
    if choice == "last-linear":
        found = found[-1:]
    return Targets(found, tile=tile, units=units, choice=choice)
