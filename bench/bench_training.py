"""Per-step cost of the training methods, as ratios measured in one run (timings on a shared or busy
machine are meaningless in absolute terms; ratios taken side by side are what this reports).

1. dat-fast / sgd-bn per step, noise on the last layer only (goal <= 1.05: the body's forward is
   shared and the first gradient is the head's alone).
2. dat-fast / sgd-bn per step, noise on all analog layers (goal <= 2.2: two passes per step).
3. dat-full / dat-fast as the head grows (n = hidden x classes), with a dense Sigma (a device
   given as N(mu, Sigma), the paper's DAT-Full setting): the one-time set-up (Cholesky for full,
   top-k eigenpairs for fast) is reported apart from the per-step cost. Sizes beyond --max-n are
   extrapolated with the exponent fitted to the measured set-up times.
4. (--paper) dat-full / dat-fast per step at the paper's CNN6 CIFAR-100 head (hidden 256 x 100
   classes, n = 25,600; 32 x 32 x 3 inputs, width 64, batch 128) as the trainer runs them: the
   Cholesky set-up, the same set-up read back from the disk cache (a second run), the cost of a
   draw alone and inside a bank, and the per-step ratio with banked draws (goal <= 1.1) and with
   one draw at a time (what every exact draw cost before banks).

DAT-Full's draws come from a bank (B draws in one GEMM, consumed over the next B steps), so a
step's cost is the timed step (no refill inside the timed blocks) plus the bank's cost / B,
measured apart; both parts are printed.

    .venv/bin/python bench/bench_training.py [--steps 30] [--image-size 8] [--max-n 5120]
    .venv/bin/python bench/bench_training.py --only-paper [--paper-steps 12]     # n = 25,600
    .venv/bin/python bench/bench_training.py --only-paper --paper-hidden 64 --paper-classes 40 \
        --paper-image-size 8 --paper-width 16                                    # quick check, n = 2,560
"""

from __future__ import annotations

import argparse
import math
import statistics
import tempfile
import time

import numpy as np
import torch

from dat.data import load_dataset
from dat.noise.crossbar import PRESETS
from dat.noise.dense import DenseDevice
from dat.models import build_model
from dat.optim import DAT
from dat.noise.profile import DEFAULT_BANK_SIZE, bind
from dat.noise.targets import find_targets
from dat.train import DAT_FULL_MAX_N, head_step, plain_step, two_pass_step


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
    print("\nDAT-Full vs DAT-Fast with a dense Sigma (device-A's, formed densely), set-up apart from steps;")
    print(f"full step = timed step + bank of {DEFAULT_BANK_SIZE} draws / {DEFAULT_BANK_SIZE}:")
    print("| n | Cholesky set-up (s) | eig k=10 set-up (s) | draw in bank (ms) | full step (ms) | fast step (ms) "
          "| full/fast per step |")
    print("|---:|---:|---:|---:|---:|---:|---:|")
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
        full = profile.sampler("cholesky", max_n=n)  # as dat-full trains (banked draws), without a disk cache
        t_chol = time.perf_counter() - t0
        per_draw = _bank_cost(full, full.bank_size)
        t0 = time.perf_counter()
        fast = profile.sampler("low-rank", k=10)
        t_eig = time.perf_counter() - t0
        cache = {"dat-full": full, "dat-fast": fast}
        runners = {m: _runner(m, "last-linear", args, hidden=hidden, sampler_cache=cache)[0] for m in ("dat-full", "dat-fast")}
        t = _time_interleaved(runners, batches, max(2, args.rounds // 2))
        t["dat-full"] += per_draw  # p = 1: one banked draw per step
        print(f"| {n} | {t_chol:.3f} | {t_eig:.3f} | {1e3 * per_draw:.2f} | {1e3 * t['dat-full']:.1f} | "
              f"{1e3 * t['dat-fast']:.1f} | {t['dat-full'] / t['dat-fast']:.2f} |", flush=True)
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


def _bank_cost(sampler, size: int, repeats: int = 3) -> float:
    """Seconds per draw when ``size`` draws are made at once (one GEMM), median of ``repeats``."""
    g = torch.Generator().manual_seed(7)
    times = []
    for _ in range(repeats):
        t0 = time.perf_counter()
        sampler.sample(size, g)
        times.append((time.perf_counter() - t0) / size)
    return statistics.median(times)


def _paper_runner(method: str, sampler, args, classes: int):
    """One CNN6 at the paper's geometry training with DAT (head-only noise, as the trainer does)."""
    torch.manual_seed(0)
    model = build_model("cnn6", True, 3, args.paper_image_size, classes, width=args.paper_width,
                        hidden=args.paper_hidden)
    model.train()
    targets = find_targets(model, "last-linear")
    params = dict(model.named_parameters())
    opt = DAT(model.parameters(), torch.optim.SGD, targets=targets, sampler=sampler,
              target_params={l.name: params[l.name] for l in targets.layers}, alpha=30.0,
              generator=torch.Generator().manual_seed(1), lr=0.015, momentum=0.9, weight_decay=2e-4)
    return lambda x, y: head_step(model, opt, x, y)


def paper_size(args) -> None:
    """DAT-Full vs DAT-Fast per step at the CNN6 CIFAR-100 head, set-up apart (see the module doc)."""
    hidden, classes = args.paper_hidden, args.paper_classes
    n = hidden * classes
    model = build_model("cnn6", True, 3, args.paper_image_size, classes, width=args.paper_width, hidden=hidden)
    targets = find_targets(model, "last-linear")
    print(f"\nDAT-Full vs DAT-Fast at n = {hidden} x {classes} = {n} (CNN6 width {args.paper_width}, "
          f"3x{args.paper_image_size}x{args.paper_image_size} inputs, batch {args.batch_size}; device-A; digits "
          f"images resized, labels 0-9 of {classes} classes: the cost does not depend on the labels)", flush=True)
    with tempfile.TemporaryDirectory(prefix="dat-bench-cache-") as cache:
        t0 = time.perf_counter()
        full = bind(PRESETS["device-A"], targets).sampler("cholesky", max_n=DAT_FULL_MAX_N, cache_dir=cache)
        t_chol = time.perf_counter() - t0
        t0 = time.perf_counter()  # a second run: a new profile object, the factor read from the cache
        again = bind(PRESETS["device-A"], targets).sampler("cholesky", max_n=DAT_FULL_MAX_N, cache_dir=cache)
        t_cached = time.perf_counter() - t0
        assert (full.source, again.source) == ("computed", "cache") and torch.equal(full.A, again.A)
        del again
    t0 = time.perf_counter()
    fast = bind(PRESETS["device-A"], targets).sampler("low-rank", k=10)
    t_eig = time.perf_counter() - t0
    print(f"set-up: Cholesky (dense Sigma formed and factored, written to the cache) {t_chol:.1f} s; "
          f"the same read back from the cache (second run) {t_cached:.1f} s; DAT-Fast's top-10 eigenpairs "
          f"{t_eig:.2f} s", flush=True)
    bank = args.bank_size
    alone = _bank_cost(full, 1)
    banked = _bank_cost(full, bank)
    print(f"one exact draw alone {1e3 * alone:.1f} ms; inside a bank of {bank} {1e3 * banked:.2f} ms "
          f"({alone / banked:.1f}x cheaper)", flush=True)
    unbanked = bind(PRESETS["device-A"], targets).sampler("cholesky", max_n=DAT_FULL_MAX_N)
    unbanked.A = full.A  # the same factor, drawn one at a time (bank_size 1: no bank)
    unbanked.bank_size = 1
    full.bank_size = bank
    batches = _batches(args.paper_image_size, args.batch_size, args.paper_steps + 2, 3)
    runners = {"dat-fast": _paper_runner("dat-fast", fast, args, classes),
               "dat-full": _paper_runner("dat-full", full, args, classes),
               "dat-full, one draw at a time": _paper_runner("dat-full", unbanked, args, classes)}
    # The banked runner draws its bank during the warm-up and does not refill within paper_steps < bank
    # steps: its timed steps exclude the bank, which is added below as its cost per draw.
    assert args.paper_steps + 4 <= bank  # 2 warm-up steps + paper_steps + 2 timed steps
    t = _time_interleaved(runners, batches, args.paper_rounds or len(batches))
    full_step = t["dat-full"] + banked
    print(f"per step: dat-fast {1e3 * t['dat-fast']:.0f} ms; dat-full {1e3 * full_step:.0f} ms "
          f"({1e3 * t['dat-full']:.0f} ms step + {1e3 * banked:.1f} ms its draw's share of the bank); "
          f"dat-full one draw at a time {1e3 * t['dat-full, one draw at a time']:.0f} ms")
    print(f"dat-full / dat-fast per step: {full_step / t['dat-fast']:.3f} with banked draws (goal <= 1.1); "
          f"{t['dat-full, one draw at a time'] / t['dat-fast']:.3f} one draw at a time")
    steps = 200 * math.ceil(50_000 / 128)  # the paper's CIFAR schedule: 200 epochs of batch 128
    total_full, total_fast = t_chol + steps * full_step, t_eig + steps * t["dat-fast"]
    print(f"over the paper's {steps} steps: dat-full / dat-fast = {total_full / total_fast:.3f} "
          f"(set-up {100 * t_chol / total_full:.2f} % of dat-full's time; with a cached factor "
          f"{(t_cached + steps * full_step) / total_fast:.3f})", flush=True)
    return {"n": n, "setup_cholesky_s": t_chol, "setup_cached_s": t_cached, "setup_eig_s": t_eig,
            "full_step_s": full_step, "fast_step_s": t["dat-fast"],
            "full_one_draw_step_s": t["dat-full, one draw at a time"]}


# The short default of ``rows``: the quick-check geometry of the module doc (n = 64 x 40 = 2,560).
SHORT = ["--paper-hidden", "64", "--paper-classes", "40", "--paper-image-size", "8", "--paper-width", "16"]
TINY = SHORT + ["--paper-steps", "2", "--bank-size", "8", "--batch-size", "16"]


def rows(quick: bool = False, paper: bool = False) -> list[dict]:
    """DAT-Full vs DAT-Fast per step (banked exact draws; set-up apart) as table rows (keys what,
    ours_s, baseline, baseline_s, ratio, goal, met). Default: a short size (n = 2,560); ``paper``:
    the paper's CNN6 CIFAR-100 head (n = 25,600, minutes); ``quick``: tiny, to check that it runs."""
    argv = [] if paper else TINY if quick else SHORT
    r = paper_size(_parser().parse_args(argv))
    ratio = r["full_step_s"] / r["fast_step_s"]
    return [{"what": f"DAT-Full / DAT-Fast time per training step, n = {r['n']:,} (set-up apart)",
             "ours_s": r["full_step_s"], "baseline": "DAT-Fast step", "baseline_s": r["fast_step_s"],
             "ratio": ratio, "goal": "<= 1.1", "met": "yes" if ratio <= 1.1 else "NO"},
            {"what": f"DAT-Full set-up at n = {r['n']:,}: Cholesky read from the cache vs computed",
             "ours_s": r["setup_cached_s"], "baseline": "computed", "baseline_s": r["setup_cholesky_s"],
             "ratio": r["setup_cholesky_s"] / max(r["setup_cached_s"], 1e-9), "goal": "", "met": ""}]


def _parser() -> argparse.ArgumentParser:
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
    parser.add_argument("--paper", action="store_true", help="also DAT-Full vs DAT-Fast at the paper's size")
    parser.add_argument("--only-paper", action="store_true", help="only DAT-Full vs DAT-Fast at the paper's size")
    parser.add_argument("--paper-hidden", type=int, default=256, help="CNN6 hidden width (head = hidden x classes)")
    parser.add_argument("--paper-classes", type=int, default=100)
    parser.add_argument("--paper-image-size", type=int, default=32)
    parser.add_argument("--paper-width", type=int, default=64)
    parser.add_argument("--paper-steps", type=int, default=12, help="timed steps per method at the paper's size")
    parser.add_argument("--paper-rounds", type=int, default=None,
                        help="interleaving blocks at the paper's size (default: one step per block)")
    parser.add_argument("--bank-size", type=int, default=DEFAULT_BANK_SIZE, help="DAT-Full draws per bank")
    return parser


def main(argv=None) -> None:
    args = _parser().parse_args(argv)
    print(f"torch {torch.__version__}, {torch.get_num_threads()} threads, numpy {np.__version__}; "
          f"CNN6 width {args.width}, image {args.channels}x{args.image_size}x{args.image_size}, batch {args.batch_size}")
    if not args.only_paper:
        step_ratios(args)
        if not args.skip_full:
            full_vs_fast(args)
    if args.paper or args.only_paper:
        paper_size(args)


if __name__ == "__main__":
    main()
