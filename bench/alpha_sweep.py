"""DAT on digits at equal strength: DAT-Fast (plain and loss-relevant low rank) against DAT-Full.

For each device, strength and method, trains the `digits` preset (every other setting as there,
stress included) for each seed and reports test accuracy clean and under noise (the preset's
evaluation: `eval_draws` exact draws, seeded by the training seed), as mean ± std over seeds, the
alpha each strength resolved to (mean over seeds), and each method's paired difference under noise
to DAT-Full (same seed; mean ± std over seeds). SGD-BN is trained once per seed as the baseline.
One thread is used (set inside), so the numbers do not depend on the core count.

    PYTHONPATH=. python bench/alpha_sweep.py [--strengths 1,3] [--seeds 0,1,2] [--devices device-A,device-B]

Raw alphas (the optimizer's knob) can still be swept with --alphas 10,30,100 (then no strength).
"""

from __future__ import annotations

import argparse
import statistics
import tempfile
import time

import torch

from dat.config import resolve
from dat.train import train

METHODS = {"dat-fast": dict(method="dat-fast", lowrank="plain"),
           "dat-fast-relevant": dict(method="dat-fast", lowrank="relevant"),
           "dat-full": dict(method="dat-full")}


def fmt(v) -> str:
    return f"{statistics.mean(v):.1f} ± {statistics.stdev(v):.1f}" if len(v) > 1 else f"{v[0]:.1f}"


def main(argv=None) -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--strengths", default="1,3", help="comma-separated DAT strengths (fraction of r)")
    parser.add_argument("--alphas", default=None, help="comma-separated raw alphas instead of strengths")
    parser.add_argument("--seeds", default="0,1,2", help="comma-separated seeds")
    parser.add_argument("--devices", default="device-A,device-B", help="comma-separated device profiles")
    parser.add_argument("--methods", default=",".join(METHODS), help=f"comma-separated, from {list(METHODS)}")
    parser.add_argument("--epochs", type=int, default=None, help="epochs (default: the digits preset's)")
    parser.add_argument("--stress", type=float, default=2.0,
                        help="the stress knob (default 2: the Table I experiment; 1 = the physical devices)")
    args = parser.parse_args(argv)
    torch.set_num_threads(1)
    seeds = [int(s) for s in args.seeds.split(",")]
    knob = "alpha" if args.alphas else "strength"
    values = [float(a) for a in (args.alphas or args.strengths).split(",")]
    base = resolve("digits", stress=args.stress)
    print(f"torch {torch.__version__}, 1 thread; digits preset: width {base.width}, hidden {base.hidden}, "
          f"targets {base.targets}, stress {base.stress:g}, epochs {args.epochs or base.epochs}, "
          f"momentum {base.momentum}, eval_draws {base.eval_draws}; seeds {seeds}")
    t0 = time.perf_counter()
    with tempfile.TemporaryDirectory() as tmp:
        def run(seed, device, **kw):
            r = train(resolve("digits", seed=seed, device=device, epochs=args.epochs, resume=False, stress=args.stress,
                              out=f"{tmp}/run.safetensors", **kw))
            return (100 * r.metrics["test"]["clean"]["acc"], 100 * r.metrics["test"]["noisy"]["acc_mean"],
                    r.meta["alpha"])

        print(f"| device | method | {knob} | alpha (mean) | test clean (%) | test noisy (%) | noisy - DAT-Full (paired) |")
        print("|---|---|---:|---:|---:|---:|---:|")
        for device in args.devices.split(","):
            base_rows = [run(seed, device, method="sgd-bn") for seed in seeds]
            print(f"| {device} | sgd-bn | - | - | {fmt([r[0] for r in base_rows])} | "
                  f"{fmt([r[1] for r in base_rows])} | |", flush=True)
            for value in values:
                res = {m: [run(seed, device, **METHODS[m], **{knob: value}) for seed in seeds]
                       for m in args.methods.split(",")}
                for m, rows in res.items():
                    diff = ("" if m == "dat-full" or "dat-full" not in res else
                            fmt([a[1] - b[1] for a, b in zip(rows, res["dat-full"])]))
                    print(f"| {device} | {m} | {value:g} | {statistics.mean(r[2] for r in rows):.3g} | "
                          f"{fmt([r[0] for r in rows])} | {fmt([r[1] for r in rows])} | {diff} |", flush=True)
    print(f"wall time {time.perf_counter() - t0:.0f} s")


if __name__ == "__main__":
    main()
