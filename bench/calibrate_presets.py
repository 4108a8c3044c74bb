"""Calibrate the `scale` of the device presets on the embedded digits model.

Trains the digits CNN (CNN6 without BatchNorm when `dat.models` is available, else a small CNN
with a linear head) with plain SGD (lr 0.05, momentum 0.9, batch 64, 15 epochs, seed 0, stratified
75/25 split of load_digits), then measures test accuracy without noise and under 20 draws of each
preset's noise on the last linear layer (relative units, exact sampler), for a grid of `scale`
values. A preset's scale should cost plain SGD at least 5 points of accuracy.

Usage: python bench/calibrate_presets.py [--epochs 15] [--scales 0.5,1,1.5,2,3]
"""

from __future__ import annotations

import argparse
import json
import time

import numpy as np
import torch
from sklearn.datasets import load_digits
from sklearn.model_selection import train_test_split
from torch import nn

from dat.devices import PRESETS
from dat.profiles import bind
from dat.targets import find_targets


def build_digits_model() -> nn.Module:
    try:
        from dat.models import build_model
    except ImportError:
        build_model = None
    if build_model is not None:
        return build_model("cnn6", batchnorm=False, in_channels=1, image_size=8, num_classes=10)

    class SmallCNN(nn.Module):
        def __init__(self):
            super().__init__()
            self.body = nn.Sequential(
                nn.Conv2d(1, 32, 3, padding=1), nn.ReLU(), nn.MaxPool2d(2),
                nn.Conv2d(32, 64, 3, padding=1), nn.ReLU(), nn.MaxPool2d(2),
                nn.Flatten(), nn.Linear(256, 128), nn.ReLU(),
            )
            self.classifier = nn.Linear(128, 10)

        def features(self, x):
            return self.body(x)

        def forward(self, x):
            return self.classifier(self.features(x))

    return SmallCNN()


def digits_split(seed: int = 0):
    d = load_digits()
    x = (d.images / 16.0).astype(np.float32)[:, None]
    xtr, xte, ytr, yte = train_test_split(x, d.target, test_size=0.25, stratify=d.target, random_state=seed)
    return (torch.from_numpy(xtr), torch.from_numpy(ytr).long(), torch.from_numpy(xte), torch.from_numpy(yte).long())


def train_sgd(model, xtr, ytr, epochs: int, seed: int = 0):
    g = torch.Generator().manual_seed(seed)
    opt = torch.optim.SGD(model.parameters(), lr=0.05, momentum=0.9)
    loss_fn = nn.CrossEntropyLoss()
    for _ in range(epochs):
        perm = torch.randperm(len(xtr), generator=g)
        for i in range(0, len(xtr), 64):
            idx = perm[i : i + 64]
            opt.zero_grad()
            loss_fn(model(xtr[idx]), ytr[idx]).backward()
            opt.step()
    return model


@torch.no_grad()
def noisy_accuracy(model, targets, profile, xte, yte, draws: int = 20, seed: int = 0):
    """Accuracy under `draws` noise draws on the last linear layer, sharing the body's forward."""
    feats = model.features(xte)
    weights = {"classifier.weight": model.classifier.weight}
    eta = profile.sampler("full").sample(draws, torch.Generator().manual_seed(seed))
    dW = targets.eta_to_deltas(eta, weights)["classifier.weight"]  # [draws, out, in]
    logits = torch.einsum("nf,rof->rno", feats, model.classifier.weight + dW) + model.classifier.bias
    acc = (logits.argmax(-1) == yte).float().mean(1)
    return float(acc.mean()), float(acc.std())


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--epochs", type=int, default=15, help="SGD epochs on digits")
    ap.add_argument("--scales", default="0.5,1,1.5,2,3", help="comma-separated scale values to try")
    ap.add_argument("--draws", type=int, default=20, help="noise draws per evaluation")
    args = ap.parse_args(argv)
    torch.manual_seed(0)
    xtr, ytr, xte, yte = digits_split(0)
    model = build_digits_model()
    t0 = time.perf_counter()
    train_sgd(model, xtr, ytr, args.epochs).eval()
    train_s = time.perf_counter() - t0
    with torch.no_grad():
        clean = float((model(xte).argmax(1) == yte).float().mean())
    targets = find_targets(model, "last-linear")
    rows = []
    for name, base in PRESETS.items():
        for s in [float(v) for v in args.scales.split(",")]:
            prof = bind(base.replace(scale=s), targets)
            m, sd = noisy_accuracy(model, targets, prof, xte, yte, args.draws)
            rows.append({"device": name, "scale": s, "noisy_acc": m, "noisy_std": sd, "drop_points": 100 * (clean - m)})
            print(f"{name:9s} scale={s:<5g} noisy acc {100 * m:6.2f} +- {100 * sd:5.2f}  drop {100 * (clean - m):6.2f} pts")
    print(json.dumps({"model": type(model).__name__, "n": targets.n, "clean_acc": clean,
                      "train_seconds": train_s, "epochs": args.epochs, "rows": rows}, indent=1))


if __name__ == "__main__":
    main()
