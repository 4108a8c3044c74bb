"""Landscape speed: the vectorised engine against a plain reference, as ratios measured in one run.

    python bench/bench_landscape.py [--width 64] [--draws 10] [--alphas 21] [--grid 11]

1. 1D curve, head-only noise: engine vs a loop that deep-copies the model, sets the classifier
   weight for each (draw, alpha) and evaluates (goal: >= 20x faster).
2. 2D surface averaged over S = 8 noise draws vs the noise-free surface (goal: <= 1.5x the time).
3. Noise-free 2D surface vs a loop that loads each grid point's weights into a copy (goal: no slower).

Absolute times depend on the machine and its load; the ratios are the point.
"""

from __future__ import annotations

import argparse
import copy
import time

import torch
import torch.nn.functional as F

from dat.data import load_dataset
from dat.devices import PRESETS
from dat.models import build_model
from dat.profiles import bind
from dat.targets import find_targets
from landscape import noise_curves, plane_surface
from landscape.directions import noise_directions, target_weights


def _timed(fn):
    start = time.perf_counter()
    out = fn()
    return out, time.perf_counter() - start


@torch.no_grad()
def _ref_eval(model, state, X, Y, batch_size):
    m = copy.deepcopy(model)
    m.load_state_dict(state)
    m.eval()
    loss = 0.0
    for i in range(0, len(Y), batch_size):
        loss += F.cross_entropy(m(X[i : i + batch_size]), Y[i : i + batch_size], reduction="sum").item()
    return loss / len(Y)


def reference_curve(model, profile, targets, X, Y, alphas, draws, seed, batch_size):
    eta = profile.sampler("full").sample(draws, torch.Generator().manual_seed(seed))
    dirs = noise_directions(eta, targets, target_weights(model, targets))
    name = targets.layers[0].name
    base = model.state_dict()
    out = torch.zeros(draws, len(alphas))
    for s in range(draws):
        for a_i, a in enumerate(alphas):
            state = {k: v.clone() for k, v in base.items()}
            state[name] += float(a) * dirs[name][s]
            out[s, a_i] = _ref_eval(model, state, X, Y, batch_size)
    return out


def reference_surface(trio, X, Y, alphas, betas, batch_size):
    s, a, b = (m.state_dict() for m in trio)
    out = torch.zeros(len(alphas), len(betas))
    for i, al in enumerate(alphas):
        for j, be in enumerate(betas):
            state = {k: (s[k] + al * (a[k] - s[k]) + be * (2 * b[k] - a[k] - s[k])) if s[k].is_floating_point() else s[k]
                     for k in s}
            for k in state:
                if k.endswith("running_var"):
                    state[k] = state[k].clamp_min(0.0)
            out[i, j] = _ref_eval(trio[0], state, X, Y, batch_size)
    return out


def main(argv=None) -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--width", type=int, default=32, help="CNN6 first-stage channels")
    ap.add_argument("--draws", type=int, default=5)
    ap.add_argument("--alphas", type=int, default=21)
    ap.add_argument("--grid", type=int, default=9, help="surface resolution per axis")
    ap.add_argument("--batch-size", type=int, default=512)
    args = ap.parse_args(argv)

    bundle = load_dataset("digits")
    X, Y = bundle.train_eval.tensors
    trio = []
    for seed in range(3):
        torch.manual_seed(seed)
        trio.append(build_model("cnn6", True, 1, 8, 10, width=args.width).eval())
    targets = find_targets(trio[0])
    prof_a = bind(PRESETS["device-A"], targets)
    prof_a.sampler("full")  # the one-time Cholesky is set-up, not part of either timing
    print(f"digits train split: {len(Y)} samples; CNN6 width {args.width}; torch threads {torch.get_num_threads()}")

    # 1. 1D curve with head-only noise
    res, t_fast = _timed(lambda: noise_curves({"m": trio[0]}, {"A": prof_a}, (X, Y), num_alphas=args.alphas,
                                              draws=args.draws, batch_size=args.batch_size))
    ref, t_ref = _timed(lambda: reference_curve(trio[0], prof_a, targets, X, Y, res.alphas[0], args.draws, 0,
                                                args.batch_size))
    err = float((torch.as_tensor(res.loss[0, 0]) - ref.double()).abs().max())
    print(f"1D curve ({args.draws} draws x {args.alphas} alphas): engine {t_fast:.2f} s, reference {t_ref:.2f} s, "
          f"speed-up {t_ref / t_fast:.1f}x (goal >= 20x); max |diff| {err:.1e}")

    # 2. noise-averaged vs noise-free surface (same engine)
    kw = dict(resolution=args.grid, batch_size=args.batch_size)
    clean, t_clean = _timed(lambda: plane_surface(*trio, (X, Y), profiles={"none": None}, **kw))
    _, t_noisy = _timed(lambda: plane_surface(*trio, (X, Y), profiles={"A": prof_a}, draws=8, **kw))
    print(f"2D surface {args.grid}x{args.grid}: noise-free {t_clean:.2f} s, S=8 noise-averaged {t_noisy:.2f} s, "
          f"ratio {t_noisy / t_clean:.2f}x (goal <= 1.5x)")

    # 3. full-plane surface vs reference loop
    ref_s, t_ref_s = _timed(lambda: reference_surface(trio, X, Y, clean.alphas, clean.betas, args.batch_size))
    err = float((torch.as_tensor(clean.loss[0]) - ref_s.double()).abs().max())
    print(f"2D surface vs reference loop: engine {t_clean:.2f} s, reference {t_ref_s:.2f} s, "
          f"speed-up {t_ref_s / t_clean:.2f}x (goal >= 1x); max |diff| {err:.1e}")


if __name__ == "__main__":
    main()
