"""Evaluate one architecture at many weight points at once (torch.func), never mutating a module.

Two paths give the same numbers:
- head-only noise (targets = the classifier's weight, the paper's setting): the body's features are
  computed once per weight point and every noise draw / alpha is a batched matmul on them;
- general: ``vmap`` over weight points (and, nested, over noise draws) of ``functional_call``.
"""

from __future__ import annotations

import copy
from collections.abc import Mapping

import torch
import torch.nn.functional as F
from torch import nn
from torch.func import functional_call, vmap


class _Features(nn.Module):
    """Exposes ``model.features`` as a forward pass so that ``functional_call`` can run it."""

    def __init__(self, model: nn.Module):
        super().__init__()
        self.model = model

    def forward(self, x):
        return self.model.features(x)


def head_names(model: nn.Module) -> tuple[str | None, str | None]:
    """state_dict names of the classifier's weight and bias (None when the model has no classifier)."""
    head = getattr(model, "classifier", None)
    if not isinstance(head, nn.Linear):
        return None, None
    for prefix, module in model.named_modules():
        if module is head:
            w = f"{prefix}.weight" if prefix else "weight"
            b = (f"{prefix}.bias" if prefix else "bias") if head.bias is not None else None
            return w, b
    return None, None


def _ce_and_correct(logits: torch.Tensor, y: torch.Tensor):
    """Sum over the last-but-one (sample) axis of cross-entropy and of correct predictions."""
    lead = logits.shape[:-2]
    k = logits.shape[-1]
    flat = logits.reshape(-1, k)
    yy = y.repeat(flat.shape[0] // y.shape[0])
    loss = F.cross_entropy(flat, yy, reduction="none").reshape(*lead, -1).sum(-1)
    correct = (flat.argmax(-1) == yy).reshape(*lead, -1).sum(-1)
    return loss.double(), correct.double()


class Evaluator:
    """Mean loss and accuracy of ``model``'s architecture over (X, Y) at batches of weight points."""

    def __init__(self, model: nn.Module, X: torch.Tensor, Y: torch.Tensor, *, batch_size: int = 512,
                 vmap_chunk: int | None = None):
        if not isinstance(model, nn.Module):
            raise TypeError(f"model must be a torch.nn.Module, found {type(model).__name__}")
        if batch_size < 1:
            raise ValueError(f"batch_size must be >= 1, found {batch_size}")
        # A private copy in eval mode: the caller's module is never touched.
        self.model = copy.deepcopy(model).eval()
        for p in self.model.parameters():
            p.requires_grad_(False)
        # Data follow the model (a GPU model evaluates on the GPU).
        device = next(iter(self.model.state_dict().values())).device
        self.X, self.Y = X.to(device), Y.to(device)
        self.n = int(Y.shape[0])
        self.batch_size = int(batch_size)
        self.vmap_chunk = vmap_chunk
        self.head_w, self.head_b = head_names(self.model)
        self.body = _Features(self.model) if callable(getattr(self.model, "features", None)) else None
        self.state = {k: v.detach() for k, v in self.model.state_dict().items()}

    def head_only(self, target_names) -> bool:
        return self.body is not None and self.head_w is not None and set(target_names) <= {self.head_w}

    def batches(self):
        for i in range(0, self.n, self.batch_size):
            yield self.X[i : i + self.batch_size], self.Y[i : i + self.batch_size]

    # -- many weight points (2D planes) --------------------------------------------------------------
    @torch.no_grad()
    def at_points(self, points: Mapping[str, torch.Tensor], deltas: Mapping[str, torch.Tensor] | None = None,
                  num_draws: int = 1):
        """Mean loss and accuracy [C, S] at C points (state name -> [C, *shape]) each perturbed by S
        target perturbations (name -> [C, S, *shape]; None: one unperturbed evaluation, S = 1)."""
        deltas = dict(deltas or {})
        loss = correct = 0.0
        if self.head_only(deltas):
            for xb, yb in self.batches():
                l, c = self._head_batch(points, deltas, num_draws, xb, yb)
                loss, correct = loss + l, correct + c
        else:
            for xb, yb in self.batches():
                l, c = self._full_batch(points, deltas, num_draws, xb, yb)
                loss, correct = loss + l, correct + c
        return (loss / self.n).cpu(), (correct / self.n).cpu()

    def _head_batch(self, points, deltas, num_draws, xb, yb):
        body = self.body

        def feats(p):
            return functional_call(body, {"model." + k: v for k, v in p.items()}, (xb,))

        f = vmap(feats, chunk_size=self.vmap_chunk)(dict(points))             # [C, B, F]
        w = points[self.head_w].unsqueeze(1)                                    # [C, 1, K, F]
        if self.head_w in deltas:
            w = w + deltas[self.head_w]                                         # [C, S, K, F]
        logits = torch.einsum("cbf,cskf->csbk", f, w)
        if self.head_b is not None:
            logits = logits + points[self.head_b][:, None, None, :]
        if logits.shape[1] != num_draws:
            logits = logits.expand(-1, num_draws, -1, -1)
        return _ce_and_correct(logits, yb)

    def _full_batch(self, points, deltas, num_draws, xb, yb):
        model = self.model

        def one(p, d):
            q = dict(p)
            for name, dn in d.items():
                q[name] = p[name] + dn
            return functional_call(model, q, (xb,))

        if deltas:
            # Outer vmap over points, inner over draws: no [C * S] copy of the whole state is made.
            inner = lambda p, d: vmap(one, in_dims=(None, 0), chunk_size=self.vmap_chunk)(p, d)  # noqa: E731
            logits = vmap(inner, chunk_size=self.vmap_chunk)(dict(points), deltas)      # [C, S, B, K]
        else:
            logits = vmap(lambda p: one(p, {}), chunk_size=self.vmap_chunk)(dict(points)).unsqueeze(1)
            if num_draws != 1:
                logits = logits.expand(-1, num_draws, -1, -1)
        return _ce_and_correct(logits, yb)

    # -- one model along many directions (1D curves) ----------------------------------------------
    @torch.no_grad()
    def along(self, directions: Mapping[str, Mapping[str, torch.Tensor]], alphas: Mapping[str, torch.Tensor]):
        """For each key g: mean loss and accuracy [S, A] of w + alphas[g][a] * directions[g][s].

        Head-only: the features and the clean logits are computed once per data batch for all keys;
        logits(w + alpha d) = logits(w) + alpha * f d^T, one batched matmul per key.
        """
        keys = list(directions)
        out = {}
        if all(self.head_only(directions[g]) for g in keys):
            sums = {g: (0.0, 0.0) for g in keys}
            for xb, yb in self.batches():
                f = self.model.features(xb)                                      # [B, F]
                base = self.model.classifier(f)                                  # [B, K]
                for g in keys:
                    d = directions[g][self.head_w]                               # [S, K, F]
                    a = alphas[g].to(device=f.device, dtype=f.dtype)
                    proj = torch.einsum("bf,skf->sbk", f, d)                     # [S, B, K]
                    logits = base + a[None, :, None, None] * proj[:, None]       # [S, A, B, K]
                    l, c = _ce_and_correct(logits, yb)
                    sums[g] = (sums[g][0] + l, sums[g][1] + c)
            for g in keys:
                out[g] = ((sums[g][0] / self.n).cpu(), (sums[g][1] / self.n).cpu())
            return out
        for g in keys:
            out[g] = self._along_full(directions[g], alphas[g])
        return out

    def _along_full(self, d: Mapping[str, torch.Tensor], alphas: torch.Tensor):
        num_s = next(iter(d.values())).shape[0]
        num_a = alphas.shape[0]
        pairs = [(s, a) for s in range(num_s) for a in range(num_a)]
        chunk = self.vmap_chunk or 64
        loss = torch.zeros(num_s, num_a, dtype=torch.float64)
        correct = torch.zeros(num_s, num_a, dtype=torch.float64)
        model, state = self.model, self.state

        for i in range(0, len(pairs), chunk):
            sel = pairs[i : i + chunk]
            s_idx = torch.tensor([s for s, _ in sel])
            a_val = alphas[torch.tensor([a for _, a in sel])].to(self.X.device)
            moved = {n: state[n] + a_val.to(t.dtype).reshape(-1, *([1] * (t.ndim - 1))) * t[s_idx]
                     for n, t in d.items()}

            def one(p, xb):
                return functional_call(model, {**state, **p}, (xb,))

            acc_l = acc_c = 0.0
            for xb, yb in self.batches():
                logits = vmap(one, in_dims=(0, None))(moved, xb)                 # [P, B, K]
                l, c = _ce_and_correct(logits, yb)
                acc_l, acc_c = acc_l + l, acc_c + c
            acc_l, acc_c = acc_l.cpu(), acc_c.cpu()
            for j, (s, a) in enumerate(sel):
                loss[s, a] = acc_l[j] / self.n
                correct[s, a] = acc_c[j] / self.n
        return loss, correct

    # -- BatchNorm recalibration -------------------------------------------------------------------
    @torch.no_grad()
    def recalibrate(self, points: Mapping[str, torch.Tensor], X: torch.Tensor, max_batches: int | None = None):
        """Replace BatchNorm running statistics at each point by those of the point's own weights.

        Per point: reset the statistics, run forward passes in train mode over X with a cumulative
        average (momentum=None), as one would after programming new weights. Runs point by point
        (BatchNorm's in-place statistics updates cannot be batched by vmap) on a private copy.
        """
        X = X.to(self.X.device)
        model = copy.deepcopy(self.model)
        bns = [(name, m) for name, m in model.named_modules() if isinstance(m, nn.modules.batchnorm._BatchNorm)]
        if not bns:
            return dict(points)
        for _, m in bns:
            m.momentum = None  # cumulative average over the recalibration batches
        model.train()
        num_points = next(iter(points.values())).shape[0]
        out = {k: v.clone() for k, v in points.items()}
        for c in range(num_points):
            state = {k: v[c].clone() for k, v in points.items()}
            for name, m in bns:
                pre = f"{name}." if name else ""
                if m.track_running_stats:
                    state[pre + "running_mean"].zero_()
                    state[pre + "running_var"].fill_(1.0)
                    state[pre + "num_batches_tracked"].zero_()
            for i, start in enumerate(range(0, X.shape[0], self.batch_size)):
                if max_batches is not None and i >= max_batches:
                    break
                functional_call(model, state, (X[start : start + self.batch_size],))
            for k in out:
                out[k][c] = state[k]
        return out
