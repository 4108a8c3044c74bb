"""Landscape speed on what users run, side by side in one run, as ratios (and a CSV).

    python bench/bench_landscape.py [--grid 21] [--cifar-grid 5] [--cifar-samples 64] [--repeat 1]
                                    [--threads N] [--csv FILE] [--quick]

``bench/run_all.py`` (``make bench``) prints these rows next to the training benchmark's.

Needs the `bench` extra (`pip install -e .[bench]`: loss-landscapes) for the library baseline.

Workloads:
- demo: the shipped trio (checkpoints/sgd, dat-a, dat-b) on the digits train split, the paper's grid
  ranges (alpha in [-0.5, 1.5], beta in [-0.3, 0.8]), ``--grid`` points per axis;
- cifar: a CIFAR-size CNN6 (32 x 32 x 3 inputs, width 64) with three random-weight models and
  ``--cifar-samples`` random images, ``--cifar-grid`` points per axis.

Per workload, each timed once in this process, one after the other:
- engine, noise-free plane: ``plane_surface(..., profiles={"none": None})`` (everything a user's
  call does: hashing for the cache key, copying the model, chunking);
- plain loop: per point build the state dict, ``load_state_dict`` into one model, one forward over the
  split (what a careful user writes by hand);
- loss-landscapes 3.0.6 ``planar_interpolation`` with the same number of steps on the same models
  (it moves parameters only, not BatchNorm buffers: the same cost per point, a different plane);
- engine, S = 8 noisy plane under device A (head-only noise, the paper's setting);
- 1D head-noise curve, 8 draws x 51 alphas: engine vs a loop that deep-copies the model per point.

Goals (issue 10): noise-free plane >= 1.2x faster than loss-landscapes and never slower than the plain
loop; S = 8 noisy plane <= 1.2x the noise-free one; 1D curve >= 150x faster than the deep-copy loop.
Absolute seconds depend on the machine and its load; ratios measured in one run are the point.
"""

from __future__ import annotations

import argparse
import copy
import csv
import time
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F

from dat.checkpoint import load_checkpoint
from dat.trio import ROLES
from dat.data import load_dataset
from dat.noise.crossbar import PRESETS
from dat.models import build_model
from dat.noise.profile import bind
from dat.noise.targets import find_targets
from landscape import noise_curves, plane_surface
from landscape.directions import noise_directions, target_weights, trio_plane

ROOT = Path(__file__).resolve().parent.parent


def _timed(fn):
    start = time.perf_counter()
    out = fn()
    return out, time.perf_counter() - start


def _rounds(fns: dict, repeat: int) -> tuple[dict, dict]:
    """Each function timed ``repeat`` times, interleaved (A B C A B C ...): min seconds and last output.
    Interleaving makes a change of machine load hit every method alike."""
    best, out = {k: float("inf") for k in fns}, {}
    for _ in range(repeat):
        for k, fn in fns.items():
            out[k], t = _timed(fn)
            best[k] = min(best[k], t)
    return best, out


@torch.no_grad()
def plain_loop_plane(trio, X, Y, alphas, betas):
    """The hand-written reference: per point a state dict, load_state_dict, one forward over the split."""
    plane = trio_plane(*trio)
    model = copy.deepcopy(trio[0]).eval()
    out = np.zeros((len(alphas), len(betas)))
    for i, a in enumerate(alphas):
        for j, b in enumerate(betas):
            state = {k: v[0] for k, v in plane.points(torch.tensor([[a, b]], dtype=torch.float64)).items()}
            model.load_state_dict(state)
            out[i, j] = F.cross_entropy(model(X), Y).item()
    return out


def loss_landscapes_plane(trio, X, Y, steps):
    import loss_landscapes
    from loss_landscapes.metrics import Loss

    metric = Loss(torch.nn.CrossEntropyLoss(), X, Y)
    return loss_landscapes.planar_interpolation(*trio, metric, steps=steps, deepcopy_model=True)


@torch.no_grad()
def deep_copy_curve(model, profile, targets, X, Y, alphas, draws, seed):
    eta = profile.sampler("full").sample(draws, torch.Generator().manual_seed(seed))
    dirs = noise_directions(eta, targets, target_weights(model, targets))
    name = targets.layers[0].name
    base = model.state_dict()
    out = np.zeros((draws, len(alphas)))
    for s in range(draws):
        for a_i, a in enumerate(alphas):
            m = copy.deepcopy(model)
            state = {k: v.clone() for k, v in base.items()}
            state[name] += float(a) * dirs[name][s]
            m.load_state_dict(state)
            m.eval()
            out[s, a_i] = F.cross_entropy(m(X), Y).item()
    return out


def _row(what, ours_s, baseline, baseline_s, ratio, goal) -> dict:
    op, value = goal.split()
    met = ratio >= float(value) if op == ">=" else ratio <= float(value)
    return {"what": what, "ours_s": ours_s, "baseline": baseline, "baseline_s": baseline_s, "ratio": ratio,
            "goal": goal, "met": "yes" if met else "NO"}


def run_workload(name, trio, X, Y, grid, repeat=1, curve_alphas: int = 51) -> list[dict]:
    """The plane ratios on one trio (and, with ``curve_alphas``, the 1D curve ratio), as table rows."""
    targets = find_targets(trio[0])
    prof_a = bind(PRESETS["device-A"], targets)
    prof_a.sampler("full")  # the one-time Cholesky is set-up, not part of any timing
    kw = dict(alpha_range=(-0.5, 1.5), beta_range=(-0.3, 0.8), resolution=grid)
    print(f"\n[{name}] {len(Y)} samples of {tuple(X.shape[1:])}; {grid} x {grid} plane; "
          f"torch threads {torch.get_num_threads()}", flush=True)

    axes = (np.linspace(-0.5, 1.5, grid), np.linspace(-0.3, 0.8, grid))
    fns = {"clean": lambda: plane_surface(*trio, (X, Y), profiles={"none": None}, **kw),
           "loop": lambda: plain_loop_plane(trio, X, Y, *axes),
           "noisy": lambda: plane_surface(*trio, (X, Y), profiles={"A": prof_a}, draws=8, **kw)}
    try:
        import loss_landscapes  # noqa: F401

        fns["lib"] = lambda: loss_landscapes_plane(trio, X, Y, grid)
    except ImportError:
        print("loss-landscapes is not installed (pip install -e .[bench]): library column skipped")
    t, out = _rounds(fns, repeat)
    t_clean, t_loop, t_noisy = t["clean"], t["loop"], t["noisy"]
    diff = float(np.max(np.abs(out["clean"].loss[0] - out["loop"]) / np.abs(out["loop"])))
    if not diff <= 1e-5:
        raise AssertionError(f"{name}: the engine's plane differs from the plain loop's by {diff:.1e} (relative)")
    print(f"noise-free plane: engine {t_clean:.2f} s | plain loop {t_loop:.2f} s ({t_loop / t_clean:.2f}x, goal >= 1); "
          f"max rel diff to the loop {diff:.1e}")
    plane = f"{name}, {grid}x{grid} noise-free plane"
    rows = [_row(f"{plane}: speed-up over a plain loop", t_clean, "plain loop", t_loop, t_loop / t_clean, ">= 1")]
    if "lib" in t:
        print(f"  loss-landscapes {t['lib']:.2f} s ({t['lib'] / t_clean:.2f}x, goal >= 1.2)")
        rows.append(_row(f"{plane}: speed-up over loss-landscapes", t_clean, "loss-landscapes", t["lib"],
                         t["lib"] / t_clean, ">= 1.2"))
    print(f"S = 8 noisy plane: {t_noisy:.2f} s = {t_noisy / t_clean:.2f}x the noise-free one (goal <= 1.2)", flush=True)
    rows.append(_row(f"{name}, {grid}x{grid} S=8 noisy plane: time / noise-free time", t_noisy, "noise-free plane",
                     t_clean, t_noisy / t_clean, "<= 1.2"))
    if not curve_alphas:
        return rows
    alphas = np.linspace(-3.0, 3.0, curve_alphas)
    t, out = _rounds({"engine": lambda: noise_curves({"m": trio[0]}, {"A": prof_a}, (X, Y), alphas=alphas, draws=8),
                      "copy": lambda: deep_copy_curve(trio[0], prof_a, targets, X, Y, alphas, 8, 0)}, repeat)
    (res, ref_c), (t_curve, t_copy) = (out["engine"], out["copy"]), (t["engine"], t["copy"])
    diff = float(np.max(np.abs(res.loss[0, 0] - ref_c) / np.abs(ref_c)))
    if not diff <= 1e-5:
        raise AssertionError(f"{name}: the engine's curve differs from the deep-copy loop's by {diff:.1e} (relative)")
    print(f"1D head-noise curve (8 draws x {curve_alphas} alphas): engine {t_curve:.3f} s | deep-copy loop "
          f"{t_copy:.2f} s ({t_copy / t_curve:.0f}x, goal >= 150); max rel diff {diff:.1e}", flush=True)
    rows.append(_row(f"{name}, 1D head-noise curve 8 draws x {curve_alphas} alphas: speed-up over a deep-copy loop",
                     t_curve, "deep-copy loop", t_copy, t_copy / t_curve, ">= 150"))
    return rows


def _demo():
    trio = [load_checkpoint(ROOT / "checkpoints" / f"{n}.safetensors").model.eval() for n in ROLES]
    X, Y = load_dataset("digits").train_eval.tensors
    return trio, X, Y


def _cifar(samples: int):
    """Three random-weight CNN6 (32 x 32 x 3, width 64) and ``samples`` random images: timing only."""
    gen = torch.Generator().manual_seed(0)
    trio = []
    for seed in range(3):
        torch.manual_seed(seed)
        trio.append(build_model("cnn6", True, 3, 32, 10, width=64).eval())
    return trio, torch.randn(samples, 3, 32, 32, generator=gen), torch.randint(0, 10, (samples,), generator=gen)


def rows(quick: bool = False, grid: int = 21, cifar_grid: int = 5, cifar_samples: int = 64,
         repeat: int = 1) -> list[dict]:
    """Every landscape ratio of issue 10 as table rows (keys what, ours_s, baseline, baseline_s, ratio,
    goal, met): the demo trio at ``grid`` (plane and 1D curve) and the CIFAR-size CNN6 at ``cifar_grid``
    (plane; 0 skips it). ``quick``: tiny sizes, to check that the benchmark runs."""
    if quick:
        grid, cifar_grid, cifar_samples, repeat = 3, 2, 16, 1
    trio, X, Y = _demo()
    out = run_workload("demo trio, digits", trio, X, Y, grid, repeat, curve_alphas=11 if quick else 51)
    if cifar_grid:
        trio, X, Y = _cifar(cifar_samples)
        out += run_workload(f"CNN6 32x32x3 width 64 ({cifar_samples} random images)", trio, X, Y, cifar_grid,
                            repeat, curve_alphas=0)
    return out


def main(argv=None) -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--grid", type=int, default=21, help="demo plane points per axis (issue 10: 21)")
    ap.add_argument("--cifar-grid", type=int, default=5, help="CIFAR-size plane points per axis (0: skip)")
    ap.add_argument("--cifar-samples", type=int, default=64, help="random 32 x 32 x 3 images")
    ap.add_argument("--csv", default="bench_landscape.csv", help="where the rows are written")
    ap.add_argument("--repeat", type=int, default=1, help="rounds of interleaved timings; the minimum is kept")
    ap.add_argument("--threads", type=int, default=None, help="torch threads (default: torch's own choice)")
    ap.add_argument("--quick", action="store_true", help="tiny sizes: check that it runs")
    args = ap.parse_args(argv)
    if args.threads:
        torch.set_num_threads(args.threads)
    table = rows(args.quick, args.grid, args.cifar_grid, args.cifar_samples, args.repeat)
    print()
    for r in table:
        print(f"{r['what']} | {r['ratio']:.2f} | goal {r['goal']} | met {r['met']}")
    with open(args.csv, "w", newline="") as fh:
        w = csv.DictWriter(fh, fieldnames=list(table[0]))
        w.writeheader()
        w.writerows(table)
    print(f"wrote {args.csv}")


if __name__ == "__main__":
    main()
