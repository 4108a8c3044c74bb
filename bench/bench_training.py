"""Per-step cost of the training methods, as ratios measured in one run (timings on a shared or busy
machine are meaningless in absolute terms; ratios taken side by side are what this reports).

1. dat-fast / sgd-bn per step, noise on the last layer only (goal <= 1.05: the body's forward is
   shared and the first gradient is the head's alone).
2. dat-fast / sgd-bn per step, noise on all analog layers (goal <= 2.2: two passes per step).
3. dat-full / dat-fast as the head grows (n = hidden x classes), with a dense Sigma (a device
   given as N(mu, Sigma), the paper's DAT-Full setting): the one-time set-up (Cholesky for full,
   top-k eigenpairs for fast) is reported apart from the per-step cost. Sizes beyond --max-n are
   extrapolated with the exponent fitted to the measured set-up times.

    .venv/bin/python bench/bench_training.py [--steps 30] [--image-size 8] [--max-n 5120]
"""

from __future__ import annotations

import argparse
import math
import statistics
import time

import numpy as np
import torch

from dat.data import load_dataset
from dat.devices import PRESETS, DenseDevice
from dat.models import build_model
from dat.optim import DAT
from dat.profiles import bind
from dat.targets import find_targets
from dat.train import head_step, plain_step, two_pass_step


def _batches(image_size: int, batch: int, count: int, channels: int):
    """Real digits images (upsampled when a larger geometry is asked for), fixed for every method."""
    x, y = load_dataset("digits").train.tensors
    if image_size != 8:
        x = torch.nn.functional.interpolate(x, size=image_size, mode="bilinear", align_corners=False)
    x = x.repeat(1, channels, 1, 1)
    g = torch.Generator().manual_seed(0)
    out = []
    for _ in range(count):
        idx = torch.randint(0, len(y), (batch,), generator=g)
        out.append((x[idx], y[idx]))
    return out


def _runner(method: str, choice: str, args, hidden: int | None = None, sampler_cache: dict | None = None):
    torch.manual_seed(0)
    model = build_model("cnn6", True, args.channels, args.image_size, 10, width=args.width,
                        hidden=hidden or args.hidden)
    model.train()
    base = dict(lr=0.01, momentum=0.9, weight_decay=2e-4)
    if method == "sgd-bn":
        opt = torch.optim.SGD(model.parameters(), **base)
        return lambda x, y: plain_step(model, opt, x, y), None
    targets = find_targets(model, choice)
    params = dict(model.named_parameters())
    if sampler_cache is not None and method in sampler_cache:
        sampler = sampler_cache[method]
    else:
        sampler = bind(PRESETS["device-A"], targets).sampler("low-rank" if method == "dat-fast" else "full", k=10)
    opt = DAT(model.parameters(), torch.optim.SGD, targets=targets, sampler=sampler,
              target_params={l.name: params[l.name] for l in targets.layers}, alpha=100.0,
              generator=torch.Generator().manual_seed(1), **base)
    step = head_step if choice == "last-linear" else two_pass_step
    return lambda x, y: step(model, opt, x, y), targets


def _time_interleaved(runners: dict, batches, rounds: int) -> dict:
    """Median per-step seconds of each runner; the runners take turns in short blocks so that a
    change in machine load hits all of them alike."""
    times = {name: [] for name in runners}
    for name, run in runners.items():  # warm-up
        for x, y in batches[:2]:
            run(x, y)
    block = max(1, len(batches) // rounds)
    for r in range(rounds):
        for name, run in runners.items():
            chunk = batches[r * block:(r + 1) * block]
            t0 = time.perf_counter()
            for x, y in chunk:
                run(x, y)
            times[name].append((time.perf_counter() - t0) / len(chunk))
    return {name: statistics.median(v) for name, v in times.items()}


def step_ratios(args) -> None:
    batches = _batches(args.image_size, args.batch_size, args.steps, args.channels)
    for choice, goal in (("last-linear", 1.05), ("all-analog", 2.2)):
        runners = {"sgd-bn": _runner("sgd-bn", choice, args)[0], "dat-fast": _runner("dat-fast", choice, args)[0]}
        t = _time_interleaved(runners, batches, args.rounds)
        ratio = t["dat-fast"] / t["sgd-bn"]
        print(f"dat-fast / sgd-bn per step, noise on {choice}: {ratio:.3f}  (goal <= {goal}; "
              f"sgd-bn {1e3 * t['sgd-bn']:.1f} ms, dat-fast {1e3 * t['dat-fast']:.1f} ms)", flush=True)


def full_vs_fast(args) -> None:
    print("\nDAT-Full vs DAT-Fast with a dense Sigma (device-A's, formed densely), set-up apart from steps:")
    print("| n | Cholesky set-up (s) | eig k=10 set-up (s) | full step (ms) | fast step (ms) | full/fast per step |")
    print("|---:|---:|---:|---:|---:|---:|")
    ns, chol = [], []
    batches = _batches(args.image_size, args.batch_size, max(8, args.steps // 3), args.channels)
    hidden = 64
    while hidden * 10 <= args.max_n:
        n = hidden * 10
        torch.manual_seed(0)
        model = build_model("cnn6", True, args.channels, args.image_size, 10, width=args.width, hidden=hidden)
        targets = find_targets(model, "last-linear")
        parametric = bind(PRESETS["device-A"], targets)
        dense = DenseDevice(parametric.mean().numpy(), parametric.dense(max_n=n).numpy(), name="device-A-dense")
        profile = bind(dense, targets)
        t0 = time.perf_counter()
        full = profile.sampler("full")
        t_chol = time.perf_counter() - t0
        t0 = time.perf_counter()
        fast = profile.sampler("low-rank", k=10)
        t_eig = time.perf_counter() - t0
        cache = {"dat-full": full, "dat-fast": fast}
        runners = {m: _runner(m, "last-linear", args, hidden=hidden, sampler_cache=cache)[0] for m in ("dat-full", "dat-fast")}
        t = _time_interleaved(runners, batches, max(2, args.rounds // 2))
        print(f"| {n} | {t_chol:.3f} | {t_eig:.3f} | {1e3 * t['dat-full']:.1f} | {1e3 * t['dat-fast']:.1f} | "
              f"{t['dat-full'] / t['dat-fast']:.2f} |", flush=True)
        ns.append(n)
        chol.append(t_chol)
        hidden *= 2
    if len(ns) >= 2:
        # Fit set-up time ~ c n^e on the two largest sizes (the small ones are overhead-bound).
        e = math.log(chol[-1] / chol[-2]) / math.log(ns[-1] / ns[-2])
        for n in (25_600, 51_200):
            est = chol[-1] * (n / ns[-1]) ** e
            print(f"extrapolated Cholesky set-up at n = {n}: {est:.0f} s (fitted exponent {e:.2f}); "
                  f"dense float32 Sigma {n * n * 4 / 1e9:.1f} GB")


def main(argv=None) -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--steps", type=int, default=30, help="timed steps per method")
    parser.add_argument("--rounds", type=int, default=5, help="interleaving blocks")
    parser.add_argument("--batch-size", type=int, default=128)
    parser.add_argument("--image-size", type=int, default=8, help="8 (digits) or 32 (CIFAR geometry)")
    parser.add_argument("--channels", type=int, default=1)
    parser.add_argument("--width", type=int, default=16)
    parser.add_argument("--hidden", type=int, default=64)
    parser.add_argument("--max-n", type=int, default=5120, help="largest dense head measured")
    parser.add_argument("--skip-full", action="store_true", help="only the step ratios")
    args = parser.parse_args(argv)
    print(f"torch {torch.__version__}, {torch.get_num_threads()} threads, numpy {np.__version__}; "
          f"CNN6 width {args.width}, image {args.channels}x{args.image_size}x{args.image_size}, batch {args.batch_size}")
    step_ratios(args)
    if not args.skip_full:
        full_vs_fast(args)


if __name__ == "__main__":
    main()
