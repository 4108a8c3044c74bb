"""Every number the docs quote about the device presets, from one command.

For each preset (at scale 1: the physical device) it prints
  1. the per-cell std of each component and in total (fraction of g_max) at the preset's
     t_seconds, and the Wan et al. 2022 programming-noise std at 1 s, 1 h, 1 day;
  2. on the head of the digits model (the `digits` training preset's CNN6: its last linear layer),
     the top-k captured variance and captured loss-relevant variance of the plain and the
     loss-relevant low-rank factors (k_used and ties included);
  3. the accuracy cost of the device on that model: plain SGD and SGD-BN are trained with the
     `digits` preset (every setting printed), then evaluated on the test split clean and under
     `--draws` exact draws of each preset at each stress in `--stresses` on the preset's noise
     targets. Drops are in points (clean - noisy), mean ± std over the training seeds.

    PYTHONPATH=. python bench/calibrate_presets.py [--seeds 0,1,2] [--stresses 1,2,2.5,3] [--draws 20]

One thread is used (set inside), so the numbers do not depend on the machine's core count.
"""

from __future__ import annotations

import argparse
import json
import statistics
import tempfile
import time

import torch

from dat.checkpoint import load_checkpoint
from dat.config import resolve
from dat.data import load_dataset
from dat.noise.crossbar import PRESETS, per_cell_std, wan2022_prog_std
from dat.noise.io import apply_stress
from dat.evaluate import evaluate
from dat.noise.profile import bind
from dat.noise.targets import find_targets
from dat.train import train


def _fmt(values) -> str:
    if len(values) == 1:
        return f"{values[0]:.1f}"
    return f"{statistics.mean(values):.1f} ± {statistics.stdev(values):.1f}"


def main(argv=None) -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--preset", default="digits", help="training preset the drops are measured on")
    ap.add_argument("--seeds", default="0,1,2", help="comma-separated training seeds")
    ap.add_argument("--stresses", default="1,2,2.5,3", help="comma-separated stress factors to evaluate")
    ap.add_argument("--draws", type=int, default=20, help="exact noise draws per evaluation")
    ap.add_argument("-k", type=int, default=10, help="rank of the low-rank factors")
    args = ap.parse_args(argv)
    torch.set_num_threads(1)
    seeds = [int(s) for s in args.seeds.split(",")]
    stresses = [float(s) for s in args.stresses.split(",")]
    t_start = time.perf_counter()

    print("## Per-cell std of the presets (fraction of g_max, scale 1)")
    print("Wan et al. 2022 programming-noise std: " + ", ".join(
        f"{label} {wan2022_prog_std(t):.4f}" for label, t in (("1 s", 1.0), ("1 h", 3600.0), ("1 day", 86400.0))))
    for name, dev in PRESETS.items():
        parts = ", ".join(f"{k} {v:.4f}" for k, v in dev.stds().items())
        print(f"{name}: t = {dev.t_seconds:g} s, scale {dev.scale:g}: {parts}; total {per_cell_std(dev):.4f}; "
              f"mean shift {dev.relaxation():+.4f}")

    base = resolve(args.preset)
    print(f"\n## Model: preset {args.preset!r}: arch {base.arch}, width {base.width}, hidden {base.hidden}, "
          f"targets {base.targets}, epochs {base.epochs}, lr {base.lr}, momentum {base.momentum}, "
          f"batch {base.batch_size}, stress in the preset {base.stress:g}")
    bundle = load_dataset(base.dataset)
    with tempfile.TemporaryDirectory() as tmp:
        models = {}
        for method in ("sgd", "sgd-bn"):
            for seed in seeds:
                out = f"{tmp}/{method}-{seed}.safetensors"
                train(resolve(args.preset, method=method, seed=seed, out=out, resume=False, eval_draws=1))
                models[(method, seed)] = load_checkpoint(out).model

        model = models[("sgd-bn", seeds[0])]
        targets = find_targets(model, base.targets, tile=(base.tile, base.tile), units=base.units)
        print(f"\n## Low-rank factors on the noise targets ({', '.join(l.name for l in targets.layers)}, "
              f"n = {targets.n}, k = {args.k})")
        print("| device | factor | k_used | tie at k | captured variance | captured loss-relevant variance |")
        print("|---|---|---:|---|---:|---:|")
        captured = {}
        for name, dev in PRESETS.items():
            prof = bind(dev, targets)
            c = prof.captured(args.k)
            captured[name] = c
            for mode in ("plain", "relevant"):
                r = c[mode]
                tie = f"{r['tie']['size']} tied ({r['tie']['first']}-{r['tie']['last']})" if r["tie"] else "-"
                print(f"| {name} | {mode} | {r['k_used']} | {tie} | {r['captured_variance']:.4f} | "
                      f"{r['captured_relevant_variance']:.4f} |")

        print(f"\n## Accuracy cost on the test split (points, clean - noisy, mean ± std over seeds {seeds}; "
              f"{args.draws} exact draws per model)")
        print("| method | clean (%) | " + " | ".join(f"{d} x{s:g}" for s in stresses for d in PRESETS) + " |")
        print("|---|---:|" + "---:|" * (len(stresses) * len(PRESETS)))
        rows = {}
        for method in ("sgd", "sgd-bn"):
            clean, drops = [], {(d, s): [] for s in stresses for d in PRESETS}
            for seed in seeds:
                m = models[(method, seed)]
                tg = find_targets(m, base.targets, tile=(base.tile, base.tile), units=base.units)
                for s in stresses:
                    for d, dev in PRESETS.items():
                        e = evaluate(m, bundle.test, profile=bind(apply_stress(dev, s), tg), targets=tg,
                                     draws=args.draws, seed=seed)
                        drops[(d, s)].append(100 * (e["clean"]["acc"] - e["noisy"]["acc_mean"]))
                clean.append(100 * e["clean"]["acc"])
            rows[method] = {"clean": clean, "drops": {f"{d} x{s:g}": v for (d, s), v in drops.items()}}
            print(f"| {method} | {_fmt(clean)} | " + " | ".join(_fmt(drops[(d, s)]) for s in stresses for d in PRESETS) + " |")
    print(f"\nwall time {time.perf_counter() - t_start:.0f} s, torch {torch.__version__}, 1 thread")
    print(json.dumps({"preset": args.preset, "seeds": seeds, "draws": args.draws, "captured": captured,
                      "rows": rows}, default=float))


if __name__ == "__main__":
    main()
