"""Evaluate one architecture at many weight points, never mutating the caller's module.

Three strategies give the same numbers (to float rounding, relative 1e-5 in the tests):
- ``loop``: one private copy of the model; each weight point is copied into it and evaluated with
  ordinary forward passes. Convolutional nets run in channels-last memory layout, which on CPU is
  about twice as fast as the default layout for the small images used here.
- ``fused``: the same loop on a copy whose eval-mode BatchNorms are folded into the convolution or
  linear layer before them (``torch.fx``): per point, W' = W gamma / sqrt(var + eps) and
  b' = (b - mean) gamma / sqrt(var + eps) + beta are computed from the point's own weights and
  statistics, noise included, so the forward skips every BatchNorm pass over the activations.
- ``vmap``: ``torch.func.vmap`` over weight points (and, nested, over noise draws) of
  ``functional_call``. On CPU ``vmap`` over convolution weights becomes grouped convolutions, which
  profiling showed to be about 3x slower than the loop.
``auto`` takes vmap on GPUs (where batching many small kernels pays) and on CPU ``fused`` when the
model has a BatchNorm to fold (``loop`` otherwise). With head-only noise (dat.evaluate.is_head_only,
the paper's setting) every strategy computes the body's features once per point and evaluates all
noise draws of all panels as one batched matmul on them; 1D curves compute the features once in total.

Cross-entropy and accuracy are reduced over logits laid out [..., classes, samples]: the max,
argmax and sum over the (few) classes then run along contiguous samples, which profiling showed to
be about 5x faster than reducing a short last axis; cross-entropy is logsumexp minus the target's
logit, with the max taken once for both the logsumexp and the prediction.

Working memory is bounded by ``memory_budget`` bytes whatever the grid: samples per forward pass,
points per vmap call and alphas per batched head evaluation are all derived from it (the last also
kept within ``CACHE_BYTES`` so that each piece stays in the processor's cache).
"""

from __future__ import annotations

import copy
from collections.abc import Mapping

import torch
from torch import nn
from torch.func import functional_call, vmap

from dat.errors import UserError, expected
from dat.evaluate import head_names, is_head_only

STRATEGIES = ("auto", "loop", "fused", "vmap")
DEFAULT_MEMORY_BUDGET = 1 << 30  # bytes of working memory for one piece of work (1 GiB)
MIN_MEMORY_BUDGET = 1 << 20      # 1 MiB: below this every piece would be a single sample
CACHE_BYTES = 4 << 20            # logits per batched head piece: about a processor's L2/L3 share
_FOLDABLE = (nn.Conv1d, nn.Conv2d, nn.Conv3d, nn.Linear)


class _Features(nn.Module):
    """Exposes ``model.features`` as a forward pass so that ``functional_call`` can run it."""

    def __init__(self, model: nn.Module):
        super().__init__()
        self.model = model

    def forward(self, x):
        return self.model.features(x)


def _ce_and_correct(logits: torch.Tensor, y: torch.Tensor):
    """Sums over samples of cross-entropy and of correct predictions, per leading index.

    logits [..., K, B] (classes before samples), y [B]. Cross-entropy per sample is
    logsumexp_k(logits) minus the target's logit, with logsumexp as torch computes it (the max
    subtracted, an infinite max replaced by 0); the prediction is the first class of largest logit,
    as argmax. Sums over samples in float64."""
    m, pred = logits.max(-2)                                                     # [..., B]
    shift = m.masked_fill(m.abs() == float("inf"), 0.0)
    lse = (logits - shift.unsqueeze(-2)).exp_().sum(-2).log_().add_(shift)
    target = logits.gather(-2, y.expand(*logits.shape[:-2], 1, y.shape[0])).squeeze(-2)
    return (lse - target).double().sum(-1), (pred == y).sum(-1).double()


def check_memory_budget(budget) -> int:
    if isinstance(budget, bool) or not isinstance(budget, (int, float)) or not budget >= MIN_MEMORY_BUDGET:
        raise expected("memory budget", f"a number of bytes >= {MIN_MEMORY_BUDGET} (1 MiB)", budget)
    return int(budget)


def resolve_strategy(strategy: str, device: torch.device) -> str:
    """The strategy ``auto`` means on ``device`` ("fused" may still fall back to "loop" for a model
    with nothing to fold; see ``Evaluator``)."""
    if strategy not in STRATEGIES:
        raise expected("strategy", f"one of {STRATEGIES}", repr(strategy))
    if strategy == "auto":
        return "vmap" if device.type == "cuda" else "fused"
    return strategy


def _fold_batchnorm(module: nn.Module):
    """A traced copy of ``module`` with every eval-mode BatchNorm that follows a convolution or
    linear layer (its only user) removed, and the list of (layer, batchnorm, eps, affine) names
    folded; ``fold_values`` gives the folded layer's weight and bias at any point. Returns None when
    torch.fx cannot trace the module or there is nothing to fold."""
    import torch.fx as fx

    try:
        gm = fx.symbolic_trace(copy.deepcopy(module))
    except (fx.proxy.TraceError, TypeError, NotImplementedError, RuntimeError, AttributeError):
        return None  # data-dependent control flow or an untraceable call: no folding
    mods = dict(gm.named_modules())
    pairs = []
    for node in list(gm.graph.nodes):
        bn = mods.get(node.target) if node.op == "call_module" else None
        if not isinstance(bn, nn.modules.batchnorm._BatchNorm) or not bn.track_running_stats \
                or bn.running_mean is None or len(node.args) != 1:
            continue
        prev = node.args[0]
        layer = mods.get(prev.target) if isinstance(prev, fx.Node) and prev.op == "call_module" else None
        if not isinstance(layer, _FOLDABLE) or len(prev.users) != 1:
            continue
        if layer.bias is None:
            layer.bias = nn.Parameter(torch.zeros(layer.weight.shape[0], dtype=layer.weight.dtype,
                                                  device=layer.weight.device), requires_grad=False)
        pairs.append((prev.target, node.target, float(bn.eps), bool(bn.affine)))
        node.replace_all_uses_with(prev)
        gm.graph.erase_node(node)
    if not pairs:
        return None
    gm.graph.lint()
    gm.recompile()
    gm.delete_all_unused_submodules()
    return gm.eval(), pairs


def fold_values(state: Mapping[str, torch.Tensor], pairs, strip: str = "") -> dict[str, torch.Tensor]:
    """Folded weight and bias of each (layer, batchnorm) pair at the weights and statistics of
    ``state`` (original state_dict names; the traced names carry the prefix ``strip``)."""
    out = {}
    for layer, bn, eps, affine in pairs:
        lay, b = layer[len(strip):], bn[len(strip):]
        w, bias = state[f"{lay}.weight"], state.get(f"{lay}.bias")
        scale = torch.rsqrt(state[f"{b}.running_var"] + eps)
        if affine:
            scale = scale * state[f"{b}.weight"]
        shift = -state[f"{b}.running_mean"] * scale if bias is None else (bias - state[f"{b}.running_mean"]) * scale
        if affine:
            shift = shift + state[f"{b}.bias"]
        out[f"{layer}.weight"] = w * scale.reshape(-1, *([1] * (w.ndim - 1)))
        out[f"{layer}.bias"] = shift
    return out


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
    strategy: "auto" | "loop" | "fused" | "vmap" (see the module doc; ``auto`` falls back from
    "fused" to "loop" for a model with no BatchNorm to fold, an explicit "fused" refuses such a
    model); memory_budget: bytes. ``self.strategy`` is the strategy used.
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
        self.channels_last = (self.strategy in ("loop", "fused") and X.ndim == 4
                              and any(isinstance(m, nn.Conv2d) for m in self.model.modules()))
        if self.channels_last:
            self.model = self.model.to(memory_format=torch.channels_last)
            X = X.contiguous(memory_format=torch.channels_last)
        self.X, self.Y = X, Y.to(device)
        self.n = int(Y.shape[0])
        self.head_w, self.head_b = head_names(self.model) or (None, None)
        self.body = _Features(self.model) if callable(getattr(self.model, "features", None)) else None
        # "fused": a BatchNorm-folded copy of the body (of the whole model when it has no linear
        # head), whose tensors are set per point from the point's own state. Built on first use by
        # a per-point evaluation (a 1D head-noise curve runs the body once and never needs it);
        # at once when asked for by name, so that a model with nothing to fold is refused early.
        self.fused, self.pairs, self.strip, self._fuse_pending = None, [], "", self.strategy == "fused"
        if strategy == "fused":
            self._fuse(required=True)
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

    def _fuse(self, required: bool = False) -> None:
        if not self._fuse_pending:
            return
        self._fuse_pending = False
        split = self.head_w is not None
        folded = _fold_batchnorm(self.body if split else self.model)
        if folded is None:
            if required:
                raise UserError("strategy 'fused' needs a BatchNorm right after a convolution or linear layer, "
                                "in a model torch.fx can trace; found none: use 'loop'")
            self.strategy = "loop"
            return
        gm, self.pairs = folded
        self.fused = gm.to(memory_format=torch.channels_last) if self.channels_last else gm
        self.strip = "model." if split else ""
        self.fused_live = dict(self.fused.state_dict(keep_vars=True))

    def _set(self, state: Mapping[str, torch.Tensor]) -> None:
        """Make the evaluated module compute at ``state`` (every state_dict name -> its value)."""
        if self.fused is None:
            self._load(state)
            return
        folded = fold_values(state, self.pairs, self.strip)
        cut = len(self.strip)
        for name, t in self.fused_live.items():
            t.copy_(folded[name] if name in folded else state[name[cut:]])

    def _features(self, xb: torch.Tensor) -> torch.Tensor:
        return self.model.features(xb) if self.fused is None else self.fused(xb)

    def _logits(self, xb: torch.Tensor, state: Mapping[str, torch.Tensor]) -> torch.Tensor:
        """[K, B] logits of the module set at ``state`` (by ``_set``)."""
        if self.head_w is None:
            return (self.model(xb) if self.fused is None else self.fused(xb)).transpose(0, 1)
        w, f = state[self.head_w], self._features(xb)
        return w @ f.T if self.head_b is None else torch.addmm(state[self.head_b][:, None], w, f.T)

    # -- many weight points (2D planes) --------------------------------------------------------------
    @torch.no_grad()
    def at_points(self, points: Mapping[str, torch.Tensor], deltas: Mapping[str, torch.Tensor] | None = None,
                  num_draws: int = 1):
        """Mean loss and accuracy [C, S] at C points (state name -> [C, *shape]) each perturbed by S
        target perturbations (name -> [C, S, *shape]; None: one unperturbed evaluation, S = 1)."""
        deltas = dict(deltas or {})
        self._fuse()
        if self.strategy in ("loop", "fused"):
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
            point = {k: v[c] for k, v in points.items()}
            if head:
                # Features once per point; all draws of all panels as one matmul on them.
                self._set(point)
                W = point[self.head_w] + deltas[self.head_w][c]                         # [S, K, F]
                b = point[self.head_b][:, None] if self.head_b is not None else None
                batch = self.batch_for(per_sample_extra=16 * W.shape[0] * W.shape[1])
                for xb, yb in self.batches(batch):
                    logits = torch.einsum("bf,skf->skb", self._features(xb), W)         # [S, K, B]
                    l, k = _ce_and_correct(logits if b is None else logits + b, yb)
                    loss[c] += l
                    correct[c] += k
                continue
            batch = self.batch_for()
            for s in range(num_draws if deltas else 1):
                state = {**point, **{n: point[n] + deltas[n][c, s] for n in deltas}} if deltas else point
                self._set(state)
                for xb, yb in self.batches(batch):
                    l, k = _ce_and_correct(self._logits(xb, state), yb)
                    loss[c, s if deltas else slice(None)] += l
                    correct[c, s if deltas else slice(None)] += k
        return loss, correct

    def _head_batch(self, points, deltas, num_draws, xb, yb):
        body = self.body

        def feats(p):
            return functional_call(body, {"model." + k: v for k, v in p.items()}, (xb,))

        f = vmap(feats, chunk_size=self._vmap_points(xb.shape[0]))(dict(points))  # [C, B, F]
        w = points[self.head_w].unsqueeze(1)                                    # [C, 1, K, F]
        if self.head_w in deltas:
            w = w + deltas[self.head_w]                                         # [C, S, K, F]
        logits = torch.einsum("cbf,cskf->cskb", f, w)                            # [C, S, K, B]
        if self.head_b is not None:
            logits = logits + points[self.head_b][:, None, :, None]
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
        return _ce_and_correct(logits.transpose(-1, -2), yb)

    # -- one model along many directions (1D curves) ----------------------------------------------
    @torch.no_grad()
    def along(self, directions: Mapping[str, Mapping[str, torch.Tensor]], alphas: Mapping[str, torch.Tensor]):
        """For each key g: mean loss and accuracy [S, A] of w + alphas[g][a] * directions[g][s].

        Head-only: the features and the clean logits are computed once per data batch for all keys;
        logits(w + alpha d) = logits(w) + alpha * f d^T, batched matmuls over as many alphas at a
        time as the memory budget holds.
        """
        keys = list(directions)
        self._set(self.state)
        if all(self.head_only(directions[g]) for g in keys):
            return self._along_head(directions, alphas, keys)
        return {g: self._along_full(directions[g], alphas[g]) for g in keys}

    def _along_head(self, directions, alphas, keys):
        S = max(directions[g][self.head_w].shape[0] for g in keys)
        K = self.num_classes
        batch = self.batch_for(per_sample_extra=16 * S * K)
        sums = {g: [0.0, 0.0] for g in keys}
        for xb, yb in self.batches(batch):
            f = self._features(xb)                                               # [B, F]
            w, bias = self.state[self.head_w], self.state.get(self.head_b) if self.head_b else None
            base = w @ f.T if bias is None else torch.addmm(bias[:, None], w, f.T)  # [K, B]
            # Logits and cross-entropy's temporaries for A alphas: about 16 * S * A * B * K bytes,
            # within half the budget and, piece by piece, within the cache.
            per_alpha = 16 * S * xb.shape[0] * K
            step = int(max(1, min(self.budget // 2, CACHE_BYTES) // max(per_alpha, 1)))
            for g in keys:
                d = directions[g][self.head_w]                                   # [S, K, F]
                a = alphas[g].to(device=f.device, dtype=f.dtype)
                proj = torch.einsum("bf,skf->skb", f, d)                         # [S, K, B]
                ls, cs = [], []
                for i in range(0, a.shape[0], step):
                    logits = torch.addcmul(base, a[None, i : i + step, None, None], proj[:, None])  # [S, A', K, B]
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
        self._fuse()
        if self.strategy in ("loop", "fused"):
            batch = self.batch_for()
            for s in range(num_s):
                for a in range(num_a):
                    moved = {**state, **{n: state[n] + alphas[a].to(t.dtype) * t[s] for n, t in d.items()}}
                    self._set(moved)
                    for xb, yb in self.batches(batch):
                        l, c = _ce_and_correct(self._logits(xb, moved), yb)
                        loss[s, a] += l.cpu()
                        correct[s, a] += c.cpu()
            self._set(state)
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
                l, c = _ce_and_correct(logits.transpose(-1, -2), yb)
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
