"""`dat profile`: make, fit, import and inspect device noise profiles.

  dat profile make device-A --set ell=3 --t-seconds 86400 -o profiles/a-1day.npz
  dat profile fit data/example_measurement.npz --estimator oas -o profiles/measured.npz
  dat profile dense my_sigma.npz --repair -o profiles/dense.npz
  dat profile inspect profiles/a-1day.npz --model cnn6 --dataset digits -k 10
"""

from __future__ import annotations

import argparse
import dataclasses
import json
from pathlib import Path

from dat.devices import PRESETS, CrossbarParams, DenseDevice, preset
from dat.measure import ESTIMATORS, FittedTile, fit_file
from dat.profile_io import load_dense, load_device, read_metadata, save_device
from dat.profiles import bind
from dat.targets import CHOICES, Targets, find_targets

# Input shape and classes of each dataset, to build a model for `inspect` without loading data.
DATASET_SHAPES = {"digits": (1, 8, 10), "cifar10": (3, 32, 10), "cifar100": (3, 32, 100)}


def _parse_overrides(items) -> dict:
    fields = {f.name: f for f in dataclasses.fields(CrossbarParams)}
    out = {}
    for item in items or ():
        if "=" not in item:
            raise ValueError(f"--set expects field=value, found {item!r}")
        key, value = (s.strip() for s in item.split("=", 1))
        if key not in fields:
            raise ValueError(f"unknown CrossbarParams field {key!r}; fields are {sorted(fields)}")
        if isinstance(fields[key].default, str):
            out[key] = value
        else:
            try:
                out[key] = float(value)
            except ValueError:
                raise ValueError(f"--set {key}: expected a number, found {value!r}") from None
    return out


def _parse_pair(text: str, what: str) -> tuple[int, int]:
    try:
        a, b = (int(v) for v in text.lower().split("x"))
    except ValueError:
        raise ValueError(f"{what} must look like 64x64, found {text!r}") from None
    return a, b


def add_profile_parser(subparsers) -> argparse.ArgumentParser:
    """Register `profile` and its sub-commands on an argparse subparsers object."""
    p = subparsers.add_parser("profile", help="make, fit, import and inspect device noise profiles",
                              description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    sub = p.add_subparsers(dest="profile_command", required=True)

    m = sub.add_parser("make", help="save a parametric crossbar device from a preset")
    m.add_argument("preset", choices=sorted(PRESETS), help="the preset to start from")
    m.add_argument("--set", action="append", metavar="FIELD=VALUE",
                   help="override a CrossbarParams field (repeatable), e.g. --set ell=3 --set scale=2")
    m.add_argument("--t-seconds", type=float, help="time since programming in seconds (>= 1)")
    m.add_argument("--name", help="profile name (default: the preset's)")
    m.add_argument("-o", "--out", help="output .npz (default: profiles/<name>.npz)")

    f = sub.add_parser("fit", help="fit a tile's N(mu, Sigma) from repeated programming maps")
    f.add_argument("measurements", help=".npz with 'maps' [n_samples, rows, cols], or .csv (one sample per line)")
    f.add_argument("--estimator", choices=sorted(ESTIMATORS), default="ledoitwolf",
                   help="shrinkage covariance estimator (default: ledoitwolf)")
    f.add_argument("-k", type=int, default=10, help="rank for the captured-variance report (default: 10)")
    f.add_argument("--name", help="profile name (default: the file's stem)")
    f.add_argument("-o", "--out", help="output .npz (default: profiles/<name>.npz)")

    d = sub.add_parser("dense", help="validate a plain dense covariance file and save it as a profile")
    d.add_argument("file", help=".npz with 'sigma' (and optionally 'mu'), or .npy of Sigma")
    d.add_argument("--repair", action="store_true",
                   help="clip negative eigenvalues (and report the change) instead of refusing")
    d.add_argument("--name", help="profile name (default: the file's stem)")
    d.add_argument("-o", "--out", help="output .npz (default: profiles/<name>.npz)")

    i = sub.add_parser("inspect", help="print a profile's parameters, n, captured variance and eigenvalues")
    i.add_argument("file", help="a saved profile (.npz)")
    i.add_argument("--model", choices=("cnn6", "resnet18"), default="cnn6", help="model whose targets to bind to")
    i.add_argument("--dataset", choices=sorted(DATASET_SHAPES), default="digits", help="input shape and classes of the model")
    i.add_argument("--batchnorm", action="store_true", help="build the model with BatchNorm")
    i.add_argument("--layout", help="bind to one linear layer OUTxIN instead of a model, e.g. 10x256")
    i.add_argument("--targets", choices=CHOICES, default="last-linear", help="which weights are noise targets")
    i.add_argument("--tile", default="64x64", help="crossbar tile ROWSxCOLS (fitted profiles use their own)")
    i.add_argument("-k", type=int, default=10, help="rank for the captured variance (default: 10)")
    i.add_argument("--top", type=int, default=10, help="how many top eigenvalues to print (default: 10)")
    i.add_argument("--repair", action="store_true", help="for a dense profile, clip negative eigenvalues")
    p.set_defaults(func=run_profile_command)
    return p


def _out_path(args, name: str) -> Path:
    return Path(args.out) if args.out else Path("profiles") / f"{name}.npz"


def _targets_for(args, device) -> Targets:
    tile = device.tile_shape_ if isinstance(device, FittedTile) else _parse_pair(args.tile, "--tile")
    if isinstance(device, DenseDevice) and not args.layout:
        return Targets([("eta", (1, device.n))], tile=tile, choice="dense")
    if args.layout:
        out, inp = _parse_pair(args.layout, "--layout")
        return Targets([("weight", (out, inp))], tile=tile, choice="layout")
    from dat.models import build_model

    cin, size, classes = DATASET_SHAPES[args.dataset]
    model = build_model(args.model, batchnorm=args.batchnorm, in_channels=cin, image_size=size, num_classes=classes)
    return find_targets(model, args.targets, tile=tile)


def run_profile_command(args) -> int:
    cmd = args.profile_command
    if cmd == "make":
        overrides = _parse_overrides(args.set)
        if args.t_seconds is not None:
            overrides["t_seconds"] = args.t_seconds
        if args.name:
            overrides["name"] = args.name
        dev = preset(args.preset, **overrides)
        out = _out_path(args, dev.name)
        save_device(out, dev)
        print(f"saved {dev.name} to {out}")
        print(json.dumps(dev.to_dict(), indent=1))
    elif cmd == "fit":
        dev = fit_file(args.measurements, estimator=args.estimator, k=args.k, name=args.name)
        out = _out_path(args, dev.name)
        save_device(out, dev)
        print(f"saved {dev.name} to {out}")
        print(json.dumps(dev.report(), indent=1))
    elif cmd == "dense":
        dev = load_dense(args.file, repair=args.repair, name=args.name)
        rep = dev.repair_report
        if rep["repaired"]:
            print(f"clipped {rep['clipped_eigenvalues']} negative eigenvalue(s) (most negative "
                  f"{rep['most_negative_eigenvalue']:.4g}); Frobenius change {rep['frobenius_change']:.4g} "
                  f"({100 * rep['relative_change']:.3g}% of ||Sigma||)")
        out = _out_path(args, dev.name)
        save_device(out, dev)
        print(f"saved {dev.name} (n = {dev.n}) to {out}")
    elif cmd == "inspect":
        meta = read_metadata(args.file)
        dev = load_device(args.file, repair=args.repair)
        targets = _targets_for(args, dev)
        prof = bind(dev, targets)
        k = min(args.k, prof.n)
        print(f"{meta['name']}: kind {meta['kind']}, format_version {meta['format_version']}, "
              f"hash {meta['content_hash'][:12]}")
        print("parameters: " + json.dumps(meta["parameters"]))
        print(f"targets: {', '.join(l.name for l in targets.layers)}, tile {targets.tile_shape}, n = {prof.n}")
        print(f"mean variance {prof.trace() / prof.n:.4g}, captured variance (k = {k}) {prof.captured_variance(k):.4f}")
        vals = prof.spectrum(args.top)["eigenvalues"]
        print("top eigenvalues: " + ", ".join(f"{v:.4g}" for v in vals))
        # plain top-k against the loss-relevant top-k (this project's extension; docs/device_model.md)
        modes = ("plain", "relevant") if targets.layers[-1].cols > 1 else ("plain",)  # 1 output: no logits to shift
        for mode, lr in ((m, prof.lowrank(k, m)) for m in modes):
            tie = f", tie at k: {lr.tie['size']} tied ({lr.tie['first']}-{lr.tie['last']}) kept" if lr.tie else ""
            print(f"{mode} low rank (k = {k}, k_used = {lr.k_used}{tie}): captured variance "
                  f"{lr.captured_variance:.4f}, captured loss-relevant variance {lr.captured_relevant_variance:.4f}")
    else:  # argparse enforces the choice; reaching here is a programming error
        raise ValueError(f"unknown profile command {cmd!r}")
    return 0


def main(argv=None) -> int:
    """`python -m dat.profile_cli inspect ...`: the same as `dat profile inspect ...`."""
    import sys

    argv = list(sys.argv[1:] if argv is None else argv)
    ap = argparse.ArgumentParser(prog="dat")
    add_profile_parser(ap.add_subparsers(dest="command", required=True))
    return run_profile_command(ap.parse_args(argv if argv[:1] == ["profile"] else ["profile", *argv]))


if __name__ == "__main__":
    raise SystemExit(main())
