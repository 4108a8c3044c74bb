"""The trainer: the Table I methods (and two baselines) on any dataset, with callbacks, cancel and resume.

Events sent to each callback ``cb(event, payload)``:
  "start"     {config, total_steps, epochs, start_epoch, checkpoint}
  "step"      {step, total_steps, epoch, epochs, loss}
  "epoch"     {epoch, epochs, step, total_steps, train_loss, train_acc, test_acc, lr, elapsed_s}
  "end"       {checkpoint, metrics, train_time_s}
  "cancelled" {epoch, step, total_steps, resume}  (the resume state of the last completed epoch stays)
  "diverged"  {epoch, step, total_steps, message}  (then TrainingDiverged is raised; nothing is written)

A run holds an exclusive lock on its checkpoint path (``<out>.lock``, see dat.fileio) from before
it reads its resume state until it returns, so a second run into the same path refuses at once.
"""

from __future__ import annotations

import functools
import math
import os
import time
from contextlib import ExitStack
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Callable, Iterable

import torch
import torch.nn.functional as F
from torch import nn
from torch.utils.data import DataLoader

from dat.checkpoint import default_run_name, default_trio_name, load_resume, save_checkpoint, save_resume, versions
from dat.config import TrainConfig
from dat.data import load_dataset
from dat.errors import UserError
from dat.eval_rule import recipe_for
from dat.evaluate import evaluate, evaluate_with_recipe, is_head_only
from dat.fileio import OutputLocked, exclusive_lock, workspace_root
from dat.models import build_model
from dat.optim import DAT, SAM, NoiseInjection
from dat.parallel import GradientSync, any_rank, from_rank0, local_slice, rank_and_world
from dat.noise.io import make_profile, resolve_device
from dat.noise.profile import NoiseProfile
from dat.noise.targets import Targets, find_targets
from dat.strength import calibrate_alpha
from dat.trio import ROLES

Callback = Callable[[str, dict], None]

# Fields that do not change the training trajectory: a resume may differ in these.
_RESUME_FREE = {"out", "resume", "eval_draws", "eval_device", "eval_batch_size", "eval_seed", "download", "num_workers",
                "data_root", "verify", "extra", "epochs", "name"}


class TrainingDiverged(UserError):
    """The loss or the weights became non-finite (inf or NaN): the run stopped and wrote nothing."""


@dataclass
class TrainResult:
    checkpoint_path: str | None  # None when the run was cancelled
    meta: dict
    metrics: dict


# -- one training step per method ---------------------------------------------------------------
class _FrozenBatchNormStats:
    """Within the block, forward passes in train mode leave the BatchNorm running statistics (and
    their batch counters) as they were: the perturbed passes of a step normalise with their own
    batch statistics, as usual, but only the step's first pass updates the running estimates."""

    def __init__(self, model: nn.Module):
        self.modules = [m for m in model.modules() if isinstance(m, nn.modules.batchnorm._BatchNorm)]

    def __enter__(self):
        self.saved = [{k: b.clone() for k, b in m.named_buffers(recurse=False)} for m in self.modules]
        return self

    def __exit__(self, *exc):
        with torch.no_grad():
            for m, saved in zip(self.modules, self.saved):
                for k, b in m.named_buffers(recurse=False):
                    b.copy_(saved[k])
        return False


def plain_step(model, optimizer, x, y, sync=None) -> tuple[torch.Tensor, torch.Tensor]:
    optimizer.zero_grad()
    logits = model(x)
    loss = F.cross_entropy(logits, y)
    loss.backward()
    if sync is not None:
        sync()                                                       # global-batch gradient
    optimizer.step()
    return loss.detach(), logits.detach()


def head_step(model, optimizer, x, y, sync=None) -> tuple[torch.Tensor, torch.Tensor]:
    """Noise only on the classifier: one body forward (BatchNorm statistics move once), the gradient
    at w for the head alone on detached features, then one backward through the shared features at
    the perturbed head. With e only on the head, d/d(body) L(body, head + e) is exactly what a
    backward through the shared features gives."""
    optimizer.zero_grad()
    feats = model.features(x)
    head = model.classifier
    logits = F.linear(feats.detach(), head.weight, head.bias)   # clean logits at w (no body graph)
    loss = F.cross_entropy(logits, y)
    if optimizer.needs_first_grad:
        (head.weight.grad,) = torch.autograd.grad(loss, [head.weight])  # g on the target only
        if sync is not None:
            sync([head.weight])                                      # g of the global batch
    optimizer.first_step(zero_grad=True)                             # head -> w + e_1
    for j in range(optimizer.p):
        if j > 0:
            optimizer.next_perturbation(zero_grad=True)              # head -> w + e_j
        perturbed = F.cross_entropy(head(feats), y)
        perturbed.backward(retain_graph=j < optimizer.p - 1)
        if sync is not None:
            sync()                                                   # before the optimizer banks it
    optimizer.second_step(zero_grad=False)
    return loss.detach(), logits.detach()


def two_pass_step(model, optimizer, x, y, sync=None) -> tuple[torch.Tensor, torch.Tensor]:
    """Noise on any layers: the plain SAM-style passes. Only the first forward of the step updates
    the BatchNorm running statistics (at w; for noise injection, which has no pass at w, at w + e)."""
    optimizer.zero_grad()
    first = 0
    if optimizer.needs_first_grad:
        logits = model(x)
        loss = F.cross_entropy(logits, y)
        loss.backward()                                     # g = grad L(w)
        if sync is not None:
            sync()
        first = 1
    optimizer.first_step(zero_grad=True)                    # w + e_1
    for j in range(optimizer.p):
        if j > 0:
            optimizer.next_perturbation(zero_grad=True)     # w + e_j
        if first:
            with _FrozenBatchNormStats(model):
                F.cross_entropy(model(x), y).backward()
        else:
            logits = model(x)                               # noise injection reports the noisy pass
            loss = F.cross_entropy(logits, y)
            loss.backward()
            first = 1
        if sync is not None:
            sync()                                          # before the optimizer banks it
    optimizer.second_step(zero_grad=False)
    return loss.detach(), logits.detach()


# The largest head DAT-Full accepts: the ResNet18 CIFAR-100 head (n = 51,200) needs a 21 GB float64
# Sigma during set-up; beyond that use dat-fast.
DAT_FULL_MAX_N = 60_000


# -- building a run -----------------------------------------------------------------------------
@dataclass
class Run:
    """What a config builds: the model, its noise targets, the training device's profile (None for
    SGD and SAM), the optimizer (a DAT / SAM / noise-injection wrapper, or plain SGD), the SGD under it
    (whose state a resume restores), the learning-rate schedule, the generator of noise draws and the
    step function (``step(model, optimizer, x, y, sync=None) -> (loss, logits)``)."""

    model: nn.Module
    targets: Targets
    profile: NoiseProfile | None
    optimizer: torch.optim.Optimizer
    base_optimizer: torch.optim.Optimizer
    scheduler: torch.optim.lr_scheduler.LRScheduler
    noise_gen: torch.Generator
    step: Callable


def build_run(config: TrainConfig, bundle, device: torch.device) -> Run:
    """The model, targets, optimizer, scheduler, noise generator and step function of a config."""
    with torch.random.fork_rng(devices=[]):  # initialisation from the seed, leaving global RNG alone
        torch.manual_seed(config.seed)
        model = build_model(config.arch, config.uses_batchnorm, bundle.in_channels, bundle.image_size,
                            bundle.num_classes, width=config.width, hidden=config.hidden).to(device)
    targets = find_targets(model, config.targets, tile=(config.tile, config.tile), units=config.units)
    params = dict(model.named_parameters())
    target_params = {layer.name: params[layer.name] for layer in targets.layers}
    noise_gen = torch.Generator().manual_seed(config.seed + 1)  # noise draws, separate from data order
    base = dict(lr=config.lr, momentum=config.momentum, weight_decay=config.weight_decay)
    profile = None
    if config.method in ("sgd", "sgd-bn"):
        optimizer = torch.optim.SGD(model.parameters(), **base)
        step_fn, base_optimizer = plain_step, optimizer
    else:
        if config.method == "sam":
            optimizer = SAM(model.parameters(), torch.optim.SGD, target_params=target_params, rho=config.rho, **base)
        else:
            profile = make_profile(config.device, targets, stress=config.stress)
            if config.method == "noise-injection":
                optimizer = NoiseInjection(model.parameters(), torch.optim.SGD, targets=targets,
                                           sampler=profile.sampler("full"), target_params=target_params,
                                           p=config.p, generator=noise_gen, **base)
            else:
                # DAT-Fast: eta = mu + A_k z. DAT-Full: eta = mu + L z with the Cholesky factor of the
                # dense Sigma, as in the paper (O(n^3) set-up, n x n memory; n up to DAT_FULL_MAX_N).
                sampler = (profile.sampler("low-rank", k=config.k, lowrank=config.lowrank)
                           if config.method == "dat-fast"
                           # The Cholesky factor is kept in the workspace's cache/, so a second run skips the set-up.
                           else profile.sampler("cholesky", max_n=DAT_FULL_MAX_N,
                                                cache_dir=workspace_root() / "cache" / "cholesky"))
                calibration = None
                if config.strength is not None:  # alpha from the strength, at the initial weights
                    calibration = calibrate_alpha(model, targets, sampler, profile, bundle.train_eval,
                                                  config.strength, seed=config.seed + 2,
                                                  batch_size=min(config.batch_size, 64))
                optimizer = DAT(model.parameters(), torch.optim.SGD, targets=targets, sampler=sampler,
                                target_params=target_params, p=config.p, generator=noise_gen, **base,
                                alpha=calibration.alpha if calibration else config.alpha)
                optimizer.strength_calibration = calibration
        step_fn = head_step if is_head_only(model, targets) else two_pass_step
        base_optimizer = optimizer.base_optimizer
    scheduler = torch.optim.lr_scheduler.StepLR(base_optimizer, step_size=config.lr_decay_every, gamma=config.lr_decay)
    return Run(model, targets, profile, optimizer, base_optimizer, scheduler, noise_gen, step_fn)


def _strength_report(optimizer) -> dict | None:
    """The strength calibration of a DAT run (strength, resolved alpha, r, ...), or None."""
    cal = getattr(optimizer, "strength_calibration", None)
    return cal.to_dict() if cal is not None else None


def _lowrank_report(optimizer) -> dict | None:
    """DAT-Fast's low-rank factor: mode, k, k_used (ties kept whole), captured fractions."""
    lr = getattr(getattr(optimizer, "sampler", None), "lowrank", None)
    return lr.report() if lr is not None else None


def _resume_path(checkpoint_path: str) -> str:
    return checkpoint_path + ".resume.pt"


def _trajectory_fields(config: TrainConfig) -> dict:
    return {k: v for k, v in config.to_dict().items() if k not in _RESUME_FREE}


def _non_finite(loss_value: float, model: nn.Module) -> str | None:
    """What is not finite after a step: the loss, or the first parameter or buffer holding inf or
    NaN (one host sync for all tensors); None when everything is finite."""
    if not math.isfinite(loss_value):
        return f"the loss is {loss_value}"
    named = [(n, t) for n, t in (*model.named_parameters(), *model.named_buffers()) if t.is_floating_point()]
    finite = torch.stack([torch.isfinite(t).all() for _, t in named])
    if bool(finite.all()):
        return None
    return f"{named[int((~finite).nonzero()[0])][0]} holds non-finite values"


def _divergence_message(config: TrainConfig, what: str, epoch: int, step_in_epoch: int, steps_per_epoch: int,
                        resume_path: str) -> str:
    """Where the run diverged, the likely cause, and what was kept."""
    causes = [f"the learning rate (lr = {config.lr:g})"]
    if config.method in ("dat-fast", "dat-full"):
        causes.append(f"the DAT strength (alpha = {config.alpha:g})")
    elif config.method == "sam":
        causes.append(f"the SAM radius (rho = {config.rho:g})")
    ckpt = config.checkpoint_path
    kept = [f"the previous checkpoint {ckpt} is unchanged" if os.path.exists(ckpt) else f"{ckpt} was not written"]
    if os.path.exists(resume_path):
        kept.append(f"the resume state {resume_path} still holds the last completed epoch")
    return (f"training diverged at epoch {epoch}/{config.epochs}, step {step_in_epoch}/{steps_per_epoch}: {what}. "
            f"Likely cause: {' or '.join(causes)} is too large for this model; try a smaller value. "
            + "; ".join(kept) + ".")


def _holding_output_lock(run):
    """Run ``train`` while holding the exclusive lock on its checkpoint path, which covers the
    resume state next to it: a second run into the same path refuses at once (naming the holder's
    process id) instead of overwriting the first run's files. The lock is taken before the resume
    state is read, so the advice given for a resume state from other settings can never concern a
    live run. Under torchrun rank 0, the one that writes, holds it; every rank learns the outcome."""

    @functools.wraps(run)
    def locked(config: TrainConfig, *args, **kwargs):
        config = config.validate()
        with ExitStack() as held:
            refused = None
            if rank_and_world()[0] == 0:
                try:
                    held.enter_context(exclusive_lock(config.checkpoint_path, advice=(
                        "wait for it to finish, or train into another output path (--out)")))
                except OutputLocked as exc:
                    refused = str(exc)
            refused = from_rank0(refused)
            if refused is not None:
                raise OutputLocked(refused)
            return run(config, *args, **kwargs)

    return locked


@_holding_output_lock
def train(config: TrainConfig, callbacks: Iterable[Callback] = (), should_stop: Callable[[], bool] | None = None,
          *, trio: dict | None = None) -> TrainResult:
    """Train ``config`` to the end (or until ``should_stop()`` says so), evaluate clean and noisy,
    and write the checkpoint. A resume state is written after every epoch, so an interrupted run
    continues from its last completed epoch along the same trajectory. The checkpoint's name is
    ``config.name`` (default: ``dat.checkpoint.default_run_name``); ``trio``: {"name", "role"} of the
    trio the run belongs to, stored with it."""
    config = config.validate()
    callbacks = list(callbacks)
    rank, world = rank_and_world()  # under torchrun: data-parallel over the ranks (dat/parallel.py)

    def emit(event: str, payload: dict) -> None:
        if rank != 0:  # one progress report, from rank 0
            return
        for cb in callbacks:
            cb(event, payload)

    device = torch.device(config.torch_device)
    bundle = load_dataset(config.dataset, config.data_root, download=config.download, verify=config.verify)
    run = build_run(config, bundle, device)
    model, targets, profile, optimizer = run.model, run.targets, run.profile, run.optimizer
    data_gen = torch.Generator().manual_seed(config.seed)
    sync = GradientSync(model) if world > 1 else None
    # Every rank reads the same global batches and takes its slice. A last batch too small to give
    # every rank one sample (two with BatchNorm, which needs a batch statistic) is dropped.
    remainder = len(bundle.train) % config.batch_size
    per_rank = 2 if config.uses_batchnorm else 1
    loader = DataLoader(bundle.train, batch_size=config.batch_size, shuffle=True, generator=data_gen,
                        num_workers=config.num_workers, drop_last=0 < remainder < per_rank * world)
    steps_per_epoch, ckpt = len(loader), config.checkpoint_path
    total_steps = steps_per_epoch * config.epochs
    start_epoch, history, train_time = 0, [], 0.0
    resume_path = _resume_path(ckpt)
    if config.resume and os.path.exists(resume_path):
        state = load_resume(resume_path)
        if state["trajectory"] != _trajectory_fields(config):
            # This run holds the output lock, so the resume state is no live run's: replacing it is safe.
            ours = _trajectory_fields(config)
            diff = "; ".join(f"{k}: expected {state['trajectory'].get(k)!r}, found {ours.get(k)!r}"
                             for k in sorted(set(state["trajectory"]) | set(ours))
                             if state["trajectory"].get(k) != ours.get(k))
            raise UserError(f"{resume_path} holds a run with other settings ({diff}); train with its settings "
                            f"to continue it, or with resume=False (--no-resume) to start over and replace it")
        model.load_state_dict(state["model"])
        run.base_optimizer.load_state_dict(state["optimizer"])
        run.scheduler.load_state_dict(state["scheduler"])
        data_gen.set_state(state["data_gen"])
        if state.get("draw_bank") and hasattr(optimizer, "load_draw_bank_state"):
            optimizer.load_draw_bank_state(state["draw_bank"])  # DAT-Full's bank of draws, mid-way
        run.noise_gen.set_state(state["noise_gen"])
        torch.set_rng_state(state["torch_rng"])  # CIFAR augmentation draws from the global generator
        start_epoch, history, train_time = int(state["epoch"]), list(state["history"]), float(state["train_time_s"])
    step = start_epoch * steps_per_epoch
    emit("start", {"config": config.to_dict(), "total_steps": total_steps, "epochs": config.epochs,
                   "start_epoch": start_epoch, "checkpoint": ckpt})
    for epoch in range(start_epoch, config.epochs):
        model.train()
        t0 = time.perf_counter()
        loss_sum, correct, seen = 0.0, 0, 0
        for x, y in loader:
            if sync is not None:
                x, y, n_global = local_slice(x, y)
                sync.set_batch(len(y), n_global)
            x, y = x.to(device), y.to(device)
            loss, logits = run.step(model, optimizer, x, y, sync=sync)
            if sync is not None:
                sync.broadcast_buffers()
            loss_value = float(loss)  # one host sync per step
            problem = _non_finite(loss_value, model)
            if any_rank(problem is not None, device):  # every rank stops at the same step
                message = _divergence_message(config, problem or "non-finite values on another rank", epoch + 1,
                                              step + 1 - epoch * steps_per_epoch, steps_per_epoch, resume_path)
                emit("diverged", {"epoch": epoch + 1, "step": step + 1, "total_steps": total_steps,
                                  "message": message})
                raise TrainingDiverged(message)
            loss_sum += loss_value * len(y)
            correct += int((logits.argmax(1) == y).sum())
            seen += len(y)
            step += 1
            emit("step", {"step": step, "total_steps": total_steps, "epoch": epoch + 1, "epochs": config.epochs,
                          "loss": loss_value})
            if should_stop is not None and should_stop():
                emit("cancelled", {"epoch": epoch, "step": step, "total_steps": total_steps,
                                   "resume": resume_path if os.path.exists(resume_path) else None})
                return TrainResult(None, {"cancelled": True, "config": config.to_dict()}, {"history": history})
        run.scheduler.step()
        train_time += time.perf_counter() - t0
        if sync is not None:  # epoch statistics over the whole training set, not this rank's slices
            totals = torch.tensor([loss_sum, correct, seen], dtype=torch.float64, device=device)
            torch.distributed.all_reduce(totals)
            loss_sum, correct, seen = float(totals[0]), int(totals[1]), int(totals[2])
        test_acc = evaluate(model, bundle.test, batch_size=config.eval_batch_size)["clean"]["acc"]
        record = {"epoch": epoch + 1, "train_loss": loss_sum / seen, "train_acc": correct / seen,
                  "test_acc": test_acc, "lr": run.base_optimizer.param_groups[0]["lr"], "elapsed_s": train_time}
        history.append(record)
        if rank == 0:
            save_resume(resume_path, {
                "trajectory": _trajectory_fields(config), "epoch": epoch + 1, "history": history,
                "train_time_s": train_time, "model": model.state_dict(), "optimizer": run.base_optimizer.state_dict(),
                "scheduler": run.scheduler.state_dict(), "data_gen": data_gen.get_state(),
                "noise_gen": run.noise_gen.get_state(), "torch_rng": torch.get_rng_state(),
                "draw_bank": optimizer.draw_bank_state() if hasattr(optimizer, "draw_bank_state") else {}})
        emit("epoch", {**record, "epochs": config.epochs, "step": step, "total_steps": total_steps})

    # Table I numbers, under the evaluation profile (the training device unless told otherwise).
    eval_spec = config.eval_device or config.device
    same = profile is not None and str(eval_spec) == str(config.device)
    eval_profile = profile if same else make_profile(eval_spec, targets, stress=config.stress)
    # One evaluation rule everywhere (dat.eval_rule.recipe_for): draws seeded by eval_seed, not the training seed.
    recipe = recipe_for(config.to_dict(), eval_seed=config.eval_seed)
    metrics = evaluate_with_recipe(model, bundle, eval_profile, targets, recipe, str(eval_spec))
    metrics.update(train_time_s=train_time)
    meta = {
        "method": config.method, "arch": config.arch, "batchnorm": config.uses_batchnorm,
        "dataset": bundle.geometry(), "model": dict(model.spec),
        "device": {"name": resolve_device(config.device)[1], "spec": str(config.device),
                   "hash": profile.content_hash() if profile is not None else eval_profile.content_hash()},
        "trained_with_noise": profile is not None,
        "targets": targets.describe(), "alpha": getattr(optimizer, "alpha", config.alpha), "k": config.k,
        "p": config.p, "rho": config.rho, "stress": config.stress, "lowrank": _lowrank_report(optimizer),
        "strength": _strength_report(optimizer),
        "seed": config.seed, "config": config.to_dict(), "metrics": metrics, "history": history,
        "train_time_s": train_time, "versions": versions(),
    }
    meta["world_size"] = world
    meta["display_name"] = config.name or default_run_name(meta)
    if trio is not None:
        meta["trio"] = dict(trio)
    if rank == 0:  # every rank holds the same model; one of them writes it
        save_checkpoint(ckpt, model, meta)
        if os.path.exists(resume_path):
            os.unlink(resume_path)  # the run is complete; its checkpoint replaces the resume state
    emit("end", {"checkpoint": ckpt, "metrics": metrics, "train_time_s": train_time})
    return TrainResult(ckpt, meta, metrics)


def completed(checkpoint_path: str) -> TrainResult | None:
    """The result of a run into ``checkpoint_path`` that already finished (its checkpoint exists and
    no resume state is left), read from the checkpoint's header; None otherwise."""
    from dat.checkpoint import read_meta

    if not os.path.exists(checkpoint_path) or os.path.exists(_resume_path(checkpoint_path)):
        return None
    meta = read_meta(checkpoint_path)
    return TrainResult(checkpoint_path, meta, meta.get("metrics", {}))


def train_trio(config: TrainConfig, device_a="device-A", device_b="device-B", folder: str = "checkpoints",
               callbacks: Iterable[Callback] = (), should_stop: Callable[[], bool] | None = None,
               keep_finished: bool = False) -> dict:
    """Three models on one architecture (so they span the landscape plane): SGD (with BatchNorm when
    the DAT models have it, i.e. the sgd-bn row), DAT on device A and DAT on device B. Returns
    {"sgd": TrainResult, "dat-a": ..., "dat-b": ...}. ``keep_finished``: continuing an interrupted
    trio, keep the models it already finished (see :func:`completed`) instead of training them again.
    ``config.name`` is the trio's name (default: ``dat.checkpoint.default_trio_name``), stored in each
    model's metadata as ``trio`` {"name", "role"}; each model is named by its own settings."""
    dat_method = config.method if config.method in ("dat-fast", "dat-full") else "dat-fast"
    sgd_method = "sgd-bn" if config.uses_batchnorm else "sgd"
    plan = dict(zip(ROLES, ((sgd_method, device_a), (dat_method, device_a), (dat_method, device_b))))
    # config.name names the trio; each model gets its readable default name and the trio's.
    name = config.validate().name or default_trio_name(config.to_dict())
    runs = {role: replace(config, method=method, device=str(device), batchnorm=config.uses_batchnorm,
                          out=os.path.join(folder, f"{role}.safetensors"), name=None)
            for role, (method, device) in plan.items()}  # roles: dat.trio.ROLES
    results = {}
    for label, run in runs.items():
        tagged = [lambda event, payload, label=label, cb=cb: cb(event, {**payload, "run": label}) for cb in callbacks]
        result = completed(run.checkpoint_path) if keep_finished else None
        if result is None:
            result = train(run, callbacks=tagged, should_stop=should_stop, trio={"name": name, "role": label})
        results[label] = result
        if result.checkpoint_path is None:
            break  # cancelled
    return results


def make_demo(folder: str = "checkpoints", profiles_folder: str = "profiles", callbacks: Iterable[Callback] = (),
              should_stop: Callable[[], bool] | None = None, keep_finished: bool = False, **overrides) -> dict:
    """The demo set: profiles/device-A.npz and profiles/device-B.npz (the presets, saved), and three
    small digits models in ``folder``: sgd (SGD-BN architecture), dat-a, dat-b. ``overrides`` go to
    the "digits" preset (e.g. epochs=1 for a quick run; name="..." names the trio)."""
    from dat.config import resolve
    from dat.noise.crossbar import PRESETS
    from dat.noise.io import save_device

    Path(profiles_folder).mkdir(parents=True, exist_ok=True)
    paths = {}
    for name in ("device-A", "device-B"):
        paths[name] = os.path.join(profiles_folder, f"{name}.npz")
        save_device(paths[name], PRESETS[name])
    config = resolve("digits", **{"method": "dat-fast", "batchnorm": True, **overrides})
    return train_trio(config, "device-A", "device-B", folder=folder, callbacks=callbacks, should_stop=should_stop,
                      keep_finished=keep_finished)
