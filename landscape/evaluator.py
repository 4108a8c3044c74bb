"""Evaluate one architecture at many weight points, never mutating the caller's module.

Two strategies give the same numbers (to float rounding, relative 1e-5 in the tests):
- ``loop``: one private copy of the model; each weight point is copied into it and evaluated with
  ordinary forward passes. Convolutional nets run in channels-last memory layout, which on CPU is
  about twice as fast as the default layout for the small images used here. With head-only noise
  (targets = the classifier's weight, the paper's setting) the body's features are computed once
  per point and every noise draw of every panel is one batched matmul on them.
- ``vmap``: ``torch.func.vmap`` over weight points (and, nested, over noise draws) of
  ``functional_call``. On CPU ``vmap`` over convolution weights becomes grouped convolutions, which
  profiling showed to be about 3x slower than the loop, so ``auto`` takes the loop on CPU and vmap
  on GPUs (where batching many small kernels pays).

Working memory is bounded by ``memory_budget`` bytes whatever the grid: samples per forward pass,
points per vmap call and alphas per batched head evaluation are all derived from it.
"""

from __future__ import annotations

import copy
from collections.abc import Mapping

import torch
from torch import nn
from torch.func import functional_call, vmap

from dat.errors import expected
from dat.evaluate import head_names, is_head_only

STRATEGIES = ("auto", "loop", "vmap")
DEFAULT_MEMORY_BUDGET = 1 << 30  # bytes of working memory for one piece of work (1 GiB)
MIN_MEMORY_BUDGET = 1 << 20      # 1 MiB: below this every piece would be a single sample


class _Features(nn.Module):
    """Exposes ``model.features`` as a forward pass so that ``functional_call`` can run it."""

    def __init__(self, model: nn.Module):
        super().__init__()
        self.model = model

    def forward(self, x):
        return self.model.features(x)


def _ce_and_correct(logits: torch.Tensor, y: torch.Tensor):
    """Sum over the last-but-one (sample) axis of cross-entropy and of correct predictions.

    logits [..., B, K], y [B]. Cross-entropy as logsumexp minus the target's logit, per sample (the
    same float32 rounding as F.cross_entropy), summed in float64; no [..., B] copy of y is made."""
    idx = y.reshape(*([1] * (logits.ndim - 2)), -1, 1).expand(*logits.shape[:-1], 1)
    per_sample = torch.logsumexp(logits, -1) - logits.gather(-1, idx).squeeze(-1)
    loss = per_sample.double().sum(-1)
    correct = (logits.argmax(-1) == y).sum(-1)
    return loss, correct.double()


def check_memory_budget(budget) -> int:
    if isinstance(budget, bool) or not isinstance(budget, (int, float)) or not budget >= MIN_MEMORY_BUDGET:
        raise expected("memory budget", f"a number of bytes >= {MIN_MEMORY_BUDGET} (1 MiB)", budget)
    return int(budget)


def resolve_strategy(strategy: str, device: torch.device) -> str:
    if strategy not in STRATEGIES:
        raise expected("strategy", f"one of {STRATEGIES}", repr(strategy))
    if strategy == "auto":
        return "vmap" if device.type == "cuda" else "loop"
    return strategy


def _activation_bytes(model: nn.Module, x: torch.Tensor) -> int:
    """Bytes of every module's output for one sample: an upper bound on a forward pass's peak."""
    total = 0

    def hook(_module, _inputs, out):
        nonlocal total
        for t in out if isinstance(out, (tuple, list)) else (out,):
            if isinstance(t, torch.Tensor):
                total += t.numel() * t.element_size()

    handles = [m.register_forward_hook(hook) for m in model.modules() if not list(m.children())]
    try:
        with torch.no_grad():
            model(x[:1])
    finally:
        for h in handles:
            h.remove()
    return max(total + x[:1].numel() * x.element_size(), 1)


class Evaluator:
    """Mean loss and accuracy of ``model``'s architecture over (X, Y) at batches of weight points.

    batch_size: samples per forward pass (None: as many as ``memory_budget`` allows);
    strategy: "auto" | "loop" | "vmap" (see the module doc); memory_budget: bytes.
    """

    def __init__(self, model: nn.Module, X: torch.Tensor, Y: torch.Tensor, *, batch_size: int | None = None,
                 vmap_chunk: int | None = None, strategy: str = "auto", memory_budget: int = DEFAULT_MEMORY_BUDGET):
        if not isinstance(model, nn.Module):
            raise TypeError(f"model must be a torch.nn.Module, found {type(model).__name__}")
        if batch_size is not None and int(batch_size) < 1:
            raise expected("batch_size", "an integer >= 1 (samples per forward pass)", batch_size)
        self.budget = check_memory_budget(memory_budget)
        # A private copy in eval mode: the caller's module is never touched.
        self.model = copy.deepcopy(model).eval()
        for p in self.model.parameters():
            p.requires_grad_(False)
        # Data follow the model (a GPU model evaluates on the GPU).
        device = next(iter(self.model.state_dict().values())).device
        self.strategy = resolve_strategy(strategy, device)
        X = X.to(device)
        self.channels_last = (self.strategy == "loop" and X.ndim == 4
                              and any(isinstance(m, nn.Conv2d) for m in self.model.modules()))
        if self.channels_last:
            self.model = self.model.to(memory_format=torch.channels_last)
            X = X.contiguous(memory_format=torch.channels_last)
        self.X, self.Y = X, Y.to(device)
        self.n = int(Y.shape[0])
        self.head_w, self.head_b = head_names(self.model) or (None, None)
        self.body = _Features(self.model) if callable(getattr(self.model, "features", None)) else None
        # The private module's own tensors: a point is evaluated by copying its values into them.
        self.live = {k: v for k, v in self.model.state_dict(keep_vars=True).items()}
        self.state = {k: v.detach().clone() for k, v in self.live.items()}
        self.state_bytes = sum(v.numel() * v.element_size() for v in self.state.values())
        self.act_bytes = _activation_bytes(self.model, self.X)
        self.num_classes = int(self.model(self.X[:1]).shape[-1]) if self.head_w is None else \
            int(self.state[self.head_w].shape[0])
        self.fixed_batch = None if batch_size is None else int(batch_size)
        self.vmap_chunk = vmap_chunk

    # -- sizes from the memory budget -----------------------------------------------------------------
    def batch_for(self, per_sample_extra: int = 0, copies: int = 1) -> int:
        """Samples per forward pass: ``batch_size`` if given, else as many as the budget holds when
        ``copies`` forward passes run at once and each sample needs ``per_sample_extra`` more bytes."""
        if self.fixed_batch is not None:
            return self.fixed_batch
        per = copies * self.act_bytes + per_sample_extra
        return int(max(1, min(self.n, self.budget // max(per, 1))))

    def points_per_chunk(self, num_draws: int, target_numel: int) -> int:
        """Grid points per chunk: their states and noise perturbations take at most half the budget."""
        per_point = self.state_bytes + num_draws * target_numel * 4
        return int(max(1, min(4096, (self.budget // 2) // max(per_point, 1))))

    def _vmap_points(self, batch: int) -> int:
        if self.vmap_chunk is not None:
            return int(self.vmap_chunk)
        return int(max(1, (self.budget // 2) // max(batch * self.act_bytes + self.state_bytes, 1)))

    def batches(self, batch: int):
        for i in range(0, self.n, batch):
            yield self.X[i : i + batch], self.Y[i : i + batch]

    def head_only(self, target_names) -> bool:
        """Noise on the classifier's weight only (dat.evaluate.is_head_only, the one rule)."""
        return is_head_only(self.model, target_names)

    def _load(self, values: Mapping[str, torch.Tensor]) -> None:
        for k, v in values.items():
            self.live[k].copy_(v)

    # -- many weight points (2D planes) --------------------------------------------------------------
    @torch.no_grad()
    def at_points(self, points: Mapping[str, torch.Tensor], deltas: Mapping[str, torch.Tensor] | None = None,
                  num_draws: int = 1):
        """Mean loss and accuracy [C, S] at C points (state name -> [C, *shape]) each perturbed by S
        target perturbations (name -> [C, S, *shape]; None: one unperturbed evaluation, S = 1)."""
        deltas = dict(deltas or {})
        if self.strategy == "loop":
            loss, correct = self._loop_points(points, deltas, num_draws)
        else:
            head = self.head_only(deltas)
            # vmap runs C points x S draws of a forward at once: the batch shrinks to fit.
            batch = self.batch_for(per_sample_extra=16 * num_draws * self.num_classes, copies=1)
            loss = correct = 0.0
            for xb, yb in self.batches(batch):
                fn = self._head_batch if head else self._full_batch
                l, c = fn(points, deltas, num_draws, xb, yb)
                loss, correct = loss + l, correct + c
        return (loss / self.n).cpu(), (correct / self.n).cpu()

    def _loop_points(self, points, deltas, num_draws):
        C = next(iter(points.values())).shape[0]
        loss = torch.zeros(C, num_draws, dtype=torch.float64, device=self.X.device)
        correct = torch.zeros_like(loss)
        head = self.head_only(deltas)
        for c in range(C):
            self._load({k: v[c] for k, v in points.items()})
            if head:
                # Features once per point; all draws of all panels as one matmul on them.
                w = self.live[self.head_w]
                W = w + deltas[self.head_w][c] if deltas else w.unsqueeze(0)              # [S, K, F]
                b = self.live[self.head_b] if self.head_b is not None else None
                batch = self.batch_for(per_sample_extra=16 * W.shape[0] * W.shape[1])
                for xb, yb in self.batches(batch):
                    logits = torch.einsum("bf,skf->sbk", self.model.features(xb), W)     # [S, B, K]
                    if b is not None:
                        logits = logits + b
                    l, k = _ce_and_correct(logits, yb)
                    loss[c] += l if l.shape[0] == num_draws else l.expand(num_draws)
                    correct[c] += k if k.shape[0] == num_draws else k.expand(num_draws)
                continue
            batch = self.batch_for()
            base = {n: self.live[n].clone() for n in deltas}
            for s in range(num_draws if deltas else 1):
                if deltas:
                    self._load({n: base[n] + deltas[n][c, s] for n in deltas})
                for xb, yb in self.batches(batch):
                    l, k = _ce_and_correct(self.model(xb).unsqueeze(0), yb)
                    loss[c, s if deltas else slice(None)] += l[0]
                    correct[c, s if deltas else slice(None)] += k[0]
        return loss, correct

    def _head_batch(self, points, deltas, num_draws, xb, yb):
        body = self.body

        def feats(p):
            return functional_call(body, {"model." + k: v for k, v in p.items()}, (xb,))

        f = vmap(feats, chunk_size=self._vmap_points(xb.shape[0]))(dict(points))  # [C, B, F]
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
        chunk = self._vmap_points(xb.shape[0])

        def one(p, d):
            q = dict(p)
            for name, dn in d.items():
                q[name] = p[name] + dn
            return functional_call(model, q, (xb,))

        if deltas:
            # Outer vmap over points, inner over draws: no [C * S] copy of the whole state is made.
            inner = lambda p, d: vmap(one, in_dims=(None, 0), chunk_size=chunk)(p, d)  # noqa: E731
            logits = vmap(inner, chunk_size=max(1, chunk // max(num_draws, 1)))(dict(points), deltas)  # [C, S, B, K]
        else:
            logits = vmap(lambda p: one(p, {}), chunk_size=chunk)(dict(points)).unsqueeze(1)
            if num_draws != 1:
                logits = logits.expand(-1, num_draws, -1, -1)
        return _ce_and_correct(logits, yb)

    # -- one model along many directions (1D curves) ----------------------------------------------
    @torch.no_grad()
    def along(self, directions: Mapping[str, Mapping[str, torch.Tensor]], alphas: Mapping[str, torch.Tensor]):
        """For each key g: mean loss and accuracy [S, A] of w + alphas[g][a] * directions[g][s].

        Head-only: the features and the clean logits are computed once per data batch for all keys;
        logits(w + alpha d) = logits(w) + alpha * f d^T, batched matmuls over as many alphas at a
        time as the memory budget holds.
        """
        keys = list(directions)
        self._load(self.state)
        if all(self.head_only(directions[g]) for g in keys):
            return self._along_head(directions, alphas, keys)
        return {g: self._along_full(directions[g], alphas[g]) for g in keys}

    def _along_head(self, directions, alphas, keys):
        S = max(directions[g][self.head_w].shape[0] for g in keys)
        K = self.num_classes
        batch = self.batch_for(per_sample_extra=16 * S * K)
        sums = {g: [0.0, 0.0] for g in keys}
        for xb, yb in self.batches(batch):
            f = self.model.features(xb)                                          # [B, F]
            base = self.model.classifier(f)                                      # [B, K]
            # Logits and cross-entropy's temporaries for A alphas: about 16 * S * A * B * K bytes.
            per_alpha = 16 * S * xb.shape[0] * K
            step = int(max(1, (self.budget // 2) // max(per_alpha, 1)))
            for g in keys:
                d = directions[g][self.head_w]                                   # [S, K, F]
                a = alphas[g].to(device=f.device, dtype=f.dtype)
                proj = torch.einsum("bf,skf->sbk", f, d)                         # [S, B, K]
                ls, cs = [], []
                for i in range(0, a.shape[0], step):
                    logits = torch.addcmul(base, a[None, i : i + step, None, None], proj[:, None])  # [S, A', B, K]
                    l, c = _ce_and_correct(logits, yb)
                    ls.append(l)
                    cs.append(c)
                sums[g][0] = sums[g][0] + torch.cat(ls, 1)
                sums[g][1] = sums[g][1] + torch.cat(cs, 1)
        return {g: ((sums[g][0] / self.n).cpu(), (sums[g][1] / self.n).cpu()) for g in keys}

    def _along_full(self, d: Mapping[str, torch.Tensor], alphas: torch.Tensor):
        num_s = next(iter(d.values())).shape[0]
        num_a = alphas.shape[0]
        loss = torch.zeros(num_s, num_a, dtype=torch.float64)
        correct = torch.zeros(num_s, num_a, dtype=torch.float64)
        state = self.state
        if self.strategy == "loop":
            batch = self.batch_for()
            for s in range(num_s):
                for a in range(num_a):
                    self._load({n: state[n] + alphas[a].to(t.dtype) * t[s] for n, t in d.items()})
                    for xb, yb in self.batches(batch):
                        l, c = _ce_and_correct(self.model(xb).unsqueeze(0), yb)
                        loss[s, a] += l[0].cpu()
                        correct[s, a] += c[0].cpu()
            self._load(state)
            return loss / self.n, correct / self.n
        pairs = [(s, a) for s in range(num_s) for a in range(num_a)]
        batch = self.batch_for()
        chunk = self._vmap_points(batch)
        model = self.model

        def one(p, xb):
            return functional_call(model, {**state, **p}, (xb,))

        for i in range(0, len(pairs), chunk):
            sel = pairs[i : i + chunk]
            s_idx = torch.tensor([s for s, _ in sel])
            a_val = alphas[torch.tensor([a for _, a in sel])].to(self.X.device)
            moved = {n: state[n] + a_val.to(t.dtype).reshape(-1, *([1] * (t.ndim - 1))) * t[s_idx]
                     for n, t in d.items()}
            acc_l = acc_c = 0.0
            for xb, yb in self.batches(batch):
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
        if self.channels_last:
            X = X.contiguous(memory_format=torch.channels_last)
        batch = self.fixed_batch or 512  # the recalibration's batches are part of its definition
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
            for i, start in enumerate(range(0, X.shape[0], batch)):
                if max_batches is not None and i >= max_batches:
                    break
                functional_call(model, state, (X[start : start + batch],))
            for k in out:
                out[k][c] = state[k]
        return out
