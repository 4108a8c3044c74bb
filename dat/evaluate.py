"""Clean and noisy evaluation: accuracy and loss on a split, without noise and under R draws of a
device profile applied to the noise targets (mean and standard deviation over the draws).

The profile used here is independent of the one a model was trained with, so a model trained on
device A can be tested on device B.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn
from torch.func import functional_call
from torch.utils.data import DataLoader, Dataset

from dat.eval_rule import recipe_for, recorded_device


def _loader(dataset: Dataset, batch_size: int) -> DataLoader:
    return DataLoader(dataset, batch_size=batch_size, shuffle=False)


def _model_device(model: nn.Module) -> torch.device:
    return next(model.parameters()).device


def head_names(model: nn.Module) -> tuple[str, str | None] | None:
    """state_dict names (weight, bias or None) of the model's classifier when the model splits as
    ``forward(x) == classifier(features(x))`` with a linear ``classifier`` (every model of
    dat.models); None when it does not."""
    head = getattr(model, "classifier", None)
    if not isinstance(head, nn.Linear) or not callable(getattr(model, "features", None)):
        return None
    for prefix, module in model.named_modules():
        if module is head:
            pre = f"{prefix}." if prefix else ""
            return f"{pre}weight", (f"{pre}bias" if head.bias is not None else None)
    return None


def is_head_only(model: nn.Module, targets) -> bool:
    """The one rule for "head-only noise": True when the noise targets (a NoiseTargets, or the
    state_dict names of the noisy tensors) are exactly the weight of the model's linear classifier,
    so the noise-free body's features serve every noise draw. Training (one body forward per step),
    evaluation and the landscape evaluator all decide by it."""
    if targets is None:
        return False
    names = {layer.name for layer in targets.layers} if hasattr(targets, "layers") else set(targets)
    head = head_names(model)
    return head is not None and names == {head[0]}


def _summary(correct: torch.Tensor, loss_sum: torch.Tensor, count: int) -> dict:
    """Per-draw totals [R] -> mean and std (unbiased, over draws; 0 for one draw)."""
    acc, loss = correct.double() / count, loss_sum.double() / count
    std = (lambda t: float(t.std()) if t.numel() > 1 else 0.0)
    return {"acc_mean": float(acc.mean()), "acc_std": std(acc), "loss_mean": float(loss.mean()),
            "loss_std": std(loss), "draws": int(acc.numel()), "acc_per_draw": acc.tolist()}


@torch.no_grad()
def evaluate(model: nn.Module, dataset: Dataset, profile=None, targets=None, draws: int = 20, seed: int = 0,
             batch_size: int = 512, sampler=None) -> dict:
    """Accuracy and mean cross-entropy of ``model`` (in eval mode) on ``dataset``.

    Returns ``{"clean": {"acc", "loss"}, "noisy": {...} or None, "n": N}``. The noisy part needs
    ``targets`` and either ``profile`` (its exact sampler, ``profile.sampler("full")``) or a
    ``sampler``; ``draws`` weight draws eta_r come from ``torch.Generator().manual_seed(seed)`` and
    each is applied as delta_r = w_scale * eta_r to the clean weights.
    """
    if not isinstance(draws, int) or draws < 1:
        raise ValueError(f"Invalid draws: expected a positive int, found {draws!r}")
    noisy = profile is not None or sampler is not None
    if noisy and targets is None:
        raise ValueError("noisy evaluation needs the noise targets (dat.noise.targets.find_targets(model, ...))")
    if noisy and sampler is None:
        sampler = profile.sampler("full")
    was_training = model.training
    model.eval()
    try:
        device = _model_device(model)
        dtype = next(model.parameters()).dtype
        deltas = None
        if noisy:
            params = dict(model.named_parameters())
            weights = {layer.name: params[layer.name].detach() for layer in targets.layers}
            generator = torch.Generator().manual_seed(seed)
            etas = sampler.sample(draws, generator).to(device=device, dtype=dtype)  # [R, n]
            deltas = targets.eta_to_deltas(etas, weights)                           # {name: [R, *shape]}
        if noisy and is_head_only(model, targets):
            result = _evaluate_head(model, dataset, deltas[head_names(model)[0]], batch_size, device)
        else:
            result = _evaluate_general(model, dataset, deltas, batch_size, device)
    finally:
        model.train(was_training)
    return result


@torch.no_grad()
def _evaluate_head(model, dataset, delta_w: torch.Tensor, batch_size: int, device) -> dict:
    """Head-only noise: the body runs once per batch, and the R noisy heads reuse its features:
    logits_r = classifier(f) + f (delta_W_r)^T (the classifier is linear in its weight), so a zero
    draw gives exactly the clean logits."""
    R = delta_w.shape[0]
    clean_correct, clean_loss = torch.zeros((), dtype=torch.float64), torch.zeros((), dtype=torch.float64)
    correct, loss_sum, count = torch.zeros(R, dtype=torch.float64), torch.zeros(R, dtype=torch.float64), 0
    for x, y in _loader(dataset, batch_size):
        x, y = x.to(device), y.to(device)
        feats = model.features(x)
        logits = model.classifier(feats)                                  # [B, C]
        clean_correct += (logits.argmax(1) == y).sum().cpu()
        clean_loss += F.cross_entropy(logits, y, reduction="sum").double().cpu()
        noisy = logits.unsqueeze(0) + torch.einsum("bi,roi->rbo", feats, delta_w)  # [R, B, C]
        correct += (noisy.argmax(2) == y).sum(1).double().cpu()
        loss_sum += F.cross_entropy(noisy.flatten(0, 1), y.repeat(R), reduction="none").view(R, -1).sum(1).double().cpu()
        count += len(y)
    return {"clean": {"acc": float(clean_correct / count), "loss": float(clean_loss / count)},
            "noisy": _summary(correct, loss_sum, count), "n": count}


@torch.no_grad()
def _evaluate_general(model, dataset, deltas, batch_size: int, device) -> dict:
    """Noise on any layers (or none): one pass over the data per draw, each at w + delta_r through
    torch.func.functional_call (the model itself is never modified)."""
    params = dict(model.named_parameters())
    buffers = dict(model.named_buffers())
    R = 0 if deltas is None else next(iter(deltas.values())).shape[0]
    clean_correct = clean_loss = 0.0
    correct, loss_sum = torch.zeros(R, dtype=torch.float64), torch.zeros(R, dtype=torch.float64)
    count = 0
    for x, y in _loader(dataset, batch_size):
        x, y = x.to(device), y.to(device)
        logits = model(x)
        clean_correct += float((logits.argmax(1) == y).sum())
        clean_loss += float(F.cross_entropy(logits, y, reduction="sum"))
        for r in range(R):
            moved = {**params, **buffers, **{name: params[name] + d[r] for name, d in deltas.items()}}
            out = functional_call(model, moved, (x,))
            correct[r] += float((out.argmax(1) == y).sum())
            loss_sum[r] += float(F.cross_entropy(out, y, reduction="sum"))
        count += len(y)
    return {"clean": {"acc": clean_correct / count, "loss": clean_loss / count},
            "noisy": _summary(correct, loss_sum, count) if R else None, "n": count}


def evaluate_splits(model: nn.Module, bundle, profile=None, targets=None, draws: int = 20, seed: int = 0,
                    batch_size: int = 512, sampler=None) -> dict:
    """One Table I row's numbers: ``{"train": evaluate(...), "test": evaluate(...)}`` (train without
    augmentation). Both splits use the same draws (same seed)."""
    if sampler is None and profile is not None:
        sampler = profile.sampler("full")  # one sampler (set-up) for both splits
    kwargs = dict(profile=profile, targets=targets, draws=draws, seed=seed, batch_size=batch_size, sampler=sampler)
    return {"train": evaluate(model, bundle.train_eval, **kwargs), "test": evaluate(model, bundle.test, **kwargs)}


# -- the one evaluation rule: its settings and matching live in dat.eval_rule (torch-free) -----------
def evaluate_with_recipe(model: nn.Module, bundle, profile, targets, recipe: dict, device_spec: str) -> dict:
    """:func:`evaluate_splits` under ``recipe`` (see :func:`recipe_for`), with the recipe, the
    device spec and the profile's content hash recorded next to the numbers."""
    metrics = evaluate_splits(model, bundle, profile=profile, targets=targets, draws=recipe["draws"],
                              seed=recipe["eval_seed"], batch_size=recipe["batch_size"])
    metrics.update(eval_device=str(device_spec), eval_profile_hash=profile.content_hash(),
                   eval_seed=recipe["eval_seed"], eval_batch_size=recipe["batch_size"])
    return metrics


def evaluate_checkpoint(path, device_spec: str | None = None, *, data_root=None, verify: bool = True,
                        draws: int | None = None, eval_seed: int | None = None, batch_size: int | None = None,
                        targets_choice: str | None = None, checkpoint=None) -> dict:
    """Clean and noisy numbers of the checkpoint at ``path`` on its dataset's train and test splits,
    by the one evaluation rule. ``device_spec``: a preset name or profile path chosen by the user;
    None means the device recorded in the checkpoint, allowed only when it is a preset name (a
    file never chooses a path to read). ``data_root``/``verify``: the user's data settings (the
    checkpoint's own are ignored). Returns the metrics dict of :func:`evaluate_with_recipe`."""
    from dat.checkpoint import load_checkpoint
    from dat.data import dataset_named_by, load_dataset_named_by
    from dat.noise.io import make_profile

    ckpt = load_checkpoint(path) if checkpoint is None else checkpoint
    config = ckpt.meta.get("config") or {}
    spec = device_spec if device_spec is not None else recorded_device(ckpt.meta, str(path))
    recipe = recipe_for(config, draws=draws, eval_seed=eval_seed, batch_size=batch_size)
    targets = ckpt.noise_targets(targets_choice)
    bundle = load_dataset_named_by(dataset_named_by(ckpt.meta, str(path)), data_root, source=f"checkpoint {path}",
                                   verify=verify, claimed_root=config.get("data_root"))
    # The stress the model was trained with is part of its experiment (a number, validated by make_profile).
    profile = make_profile(spec, targets, stress=config.get("stress", 1.0))
    return evaluate_with_recipe(ckpt.model, bundle, profile, targets, recipe, spec)
