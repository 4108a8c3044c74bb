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

from dat.noise.crossbar import PRESETS, CrossbarParams, preset
from dat.noise.dense import DenseDevice
from dat.errors import UserError
from dat.fileio import check_name
from dat.noise.fitted import ESTIMATORS, FittedTile, fit_file
from dat.noise.fileformat import read_metadata
from dat.noise.io import load_dense, load_device, save_device
from dat.noise.profile import bind
from dat.noise.choices import CHOICES
from dat.noise.targets import Targets, find_targets

# Input shape and classes of each dataset, to build a model for `inspect` without loading data.
DATASET_SHAPES = {"digits": (1, 8, 10), "cifar10": (3, 32, 10), "cifar100": (3, 32, 100)}


def _positive_int(text: str) -> int:
    """argparse type for counts (-k, --top): an integer >= 1."""
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a positive integer, found {text!r}") from None
    if value < 1:
        raise argparse.ArgumentTypeError(f"expected a positive integer, found {value}")
    return value


def profile_name(name: str, source: str = "--name") -> str:
    """A profile name under the workspace's rule (`dat.fileio.check_name`): it becomes the file
    name profiles/NAME.npz, so it can never hold a folder or leave profiles/."""
    try:
        return check_name(name, f"profile name ({source})")
    except (TypeError, ValueError) as err:
        raise UserError(str(err)) from None


def _parse_overrides(items) -> dict:
    fields = {f.name: f for f in dataclasses.fields(CrossbarParams)}
    out = {}
    for item in items or ():
        if "=" not in item:
            raise UserError(f"--set expects field=value, found {item!r}")
        key, value = (s.strip() for s in item.split("=", 1))
        if key not in fields:
            raise UserError(f"--set: unknown CrossbarParams field {key!r}; fields are {sorted(fields)}")
        if isinstance(fields[key].default, str):
            out[key] = value
        else:
            try:
                out[key] = float(value)
            except ValueError:
                raise UserError(f"--set {key}: expected a number, found {value!r}") from None
    return out


def _parse_pair(text: str, what: str) -> tuple[int, int]:
    try:
        a, b = (int(v) for v in text.lower().split("x"))
    except ValueError:
        raise UserError(f"{what}: expected ROWSxCOLS such as 64x64, found {text!r}") from None
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
    f.add_argument("-k", type=_positive_int, default=10, help="rank for the captured-variance report (default: 10)")
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
    i.add_argument("-k", type=_positive_int, default=10, help="rank for the captured variance (default: 10)")
    i.add_argument("--top", type=_positive_int, default=10, help="how many top eigenvalues to print (default: 10)")
    i.add_argument("--repair", action="store_true", help="for a dense profile, clip negative eigenvalues")
    from faces.cli.twin import add_twin_parser
    add_twin_parser(sub)  # dat profile twin
    p.set_defaults(func=run_profile_command)
    return p


def _out_path(args, name: str) -> Path:
    """-o as given, else profiles/NAME.npz for a name under the profile-name rule."""
    if args.out:
        return Path(args.out)
    return Path("profiles") / f"{profile_name(name, '--name, or the file name it defaults to')}.npz"


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
            overrides["name"] = profile_name(args.name)
        elif "name" in overrides:
            overrides["name"] = profile_name(overrides["name"], "--set name=")
        try:
            dev = preset(args.preset, **overrides)
        except (TypeError, ValueError) as err:  # a value CrossbarParams refuses, e.g. --set ell=0
            raise UserError(f"--set: {err}") from None
        out = _out_path(args, dev.name)
        save_device(out, dev)
        print(f"saved {dev.name} to {out}")
        print(json.dumps(dev.to_dict(), indent=1))
    elif cmd == "fit":
        name = profile_name(args.name) if args.name else Path(args.measurements).stem
        dev = fit_file(args.measurements, estimator=args.estimator, k=args.k, name=name)
        out = _out_path(args, dev.name)
        save_device(out, dev)
        print(f"saved {dev.name} to {out}")
        print(json.dumps(dev.report(), indent=1))
    elif cmd == "dense":
        name = profile_name(args.name) if args.name else Path(args.file).stem
        dev = load_dense(args.file, repair=args.repair, name=name)
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
        for mode in modes:
            try:
                lr = prof.lowrank(k, mode)
            except UserError as err:  # e.g. the outputs do not fit on one tile column: say so, keep the rest
                print(f"{mode} low rank: not available here ({err})")
                continue
            tie = f", tie at k: {lr.tie['size']} tied ({lr.tie['first']}-{lr.tie['last']}) kept" if lr.tie else ""
            print(f"{mode} low rank (k = {k}, k_used = {lr.k_used}{tie}): captured variance "
                  f"{lr.captured_variance:.4f}, captured loss-relevant variance {lr.captured_relevant_variance:.4f}")
    elif cmd == "twin":
        from faces.cli.twin import run_twin_command
        return run_twin_command(args)
    else:  # argparse enforces the choice; reaching here is a programming error
        raise ValueError(f"unknown profile command {cmd!r}")
    return 0

