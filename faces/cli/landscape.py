"""`dat landscape 1d | 2d | compare | reproduce`: the dashboard's landscapes, headless.

argparse lives here only; every command builds a LandscapeSpec, runs it through the cache, and writes
the same figures and bundle as the dashboard's export.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

import numpy as np

from dat.errors import UserError
from dat.trio import LABELS
from landscape.defaults import CURVE_DRAWS, CURVE_POINTS, CURVE_SPAN, SURFACE_DRAWS, SURFACE_RESOLUTION

DEFAULT_DEVICES = ["device-A=device-A", "device-B=device-B"]
DEFAULT_MEMORY_MB = 1024.0  # landscape.evaluator.DEFAULT_MEMORY_BUDGET in MiB


def _pairs(items, what: str) -> dict:
    out = {}
    for item in items or []:
        if "=" not in item:
            raise UserError(f"{what}: expected LABEL=VALUE, found {item!r}")
        label, value = item.split("=", 1)
        if not label or not value:
            raise UserError(f"{what}: expected LABEL=VALUE with both parts, found {item!r}")
        out[label] = value
    return out


def _common(p: argparse.ArgumentParser) -> None:
    p.add_argument("--device", action="append", metavar="LABEL=PRESET|FILE",
                   help="a device: preset name (device-A, device-B) or saved profile file; repeatable "
                        "(default: device-A and device-B)")
    p.add_argument("--dataset", default=None, help="digits, cifar10 or cifar100 (default: as the checkpoints were trained)")
    p.add_argument("--data-root", default=None, help="folder of the CIFAR data")
    p.add_argument("--split", default="train", choices=["train", "test"])
    p.add_argument("--max-samples", type=int, default=None, help="use the first N samples of the split")
    p.add_argument("--targets", default=None, choices=["last-linear", "all-analog"],
                   help="noise targets (default: as the checkpoints were trained)")
    p.add_argument("--tile", type=int, default=None, help="crossbar tile size T in cells (default: as trained)")
    p.add_argument("--draws", type=int, default=None,
                   help=f"noise draws (default {CURVE_DRAWS} directions per device for 1d, {SURFACE_DRAWS} per grid point for 2d)")
    p.add_argument("--seed", type=int, default=0, help="seed of the noise draws")
    p.add_argument("--sampler", default="full", choices=["full", "low-rank"])
    p.add_argument("--k", type=int, default=10, help="rank of the low-rank sampler")
    p.add_argument("--batch-size", type=int, default=None,
                   help="samples per forward pass (default: as many as --memory-mb allows)")
    p.add_argument("--memory-mb", type=float, default=DEFAULT_MEMORY_MB,
                   help=f"working memory for one piece of the grid, MiB (default {DEFAULT_MEMORY_MB:g}); "
                        "chunk and batch sizes are derived from it, so memory does not grow with the grid")
    p.add_argument("--allow-large", action="store_true",
                   help="run jobs of more than the limit of model evaluations (see docs/landscape.md)")
    p.add_argument("--out", required=True, help="output folder of the bundle")
    p.add_argument("--formats", default="png,svg,pdf", help="image formats among png,svg,pdf,html (or 'none')")
    p.add_argument("--widths", default="single,double", help="column widths: single (3.5 in), double (7.16 in)")
    p.add_argument("--dpi", type=int, default=300)
    p.add_argument("--cache-dir", default="cache/landscape", help="result cache folder")
    p.add_argument("--no-cache", action="store_true", help="always recompute")
    p.add_argument("--quiet", action="store_true", help="no progress bar")


def _grid(p: argparse.ArgumentParser) -> None:
    p.add_argument("--alpha-range", type=float, nargs=2, default=None, metavar=("LOW", "HIGH"))
    p.add_argument("--beta-range", type=float, nargs=2, default=None, metavar=("LOW", "HIGH"))
    p.add_argument("--resolution", type=int, nargs=2, default=list(SURFACE_RESOLUTION), metavar=("N_ALPHA", "N_BETA"))
    p.add_argument("--bn", default="interpolate", choices=["interpolate", "recalibrate"])
    p.add_argument("--recal-batches", type=int, default=None, help="train batches for BatchNorm recalibration")
    p.add_argument("--chunk-size", type=int, default=None,
                   help="grid points per evaluated chunk (default: as many as --memory-mb allows)")


def _trio(p: argparse.ArgumentParser, required: bool) -> None:
    p.add_argument("--sgd", required=required, help="checkpoint of the SGD model (plane origin)")
    p.add_argument("--dat-a", required=required, help="checkpoint of the model trained with DAT on device A")
    p.add_argument("--dat-b", required=required, help="checkpoint of the model trained with DAT on device B")


def _curve_args(p: argparse.ArgumentParser) -> None:
    p.add_argument("--alphas", default=None, help="explicit alpha grid, comma separated")
    p.add_argument("--span", type=float, default=CURVE_SPAN, help="default grid: alpha in [-span r, span r]")
    p.add_argument("--num-alphas", type=int, default=CURVE_POINTS)
    p.add_argument("--band", default="std", choices=["std", "p10-p90"])
    p.add_argument("--threshold", type=float, default=0.1, help="basin: loss within g(0) + threshold")


def add_landscape_parser(subparsers) -> argparse.ArgumentParser:
    """Register `landscape` with its sub-commands on the `dat` command's subparsers."""
    p = subparsers.add_parser("landscape", help="loss landscapes along device noise directions (paper Figs. 1, 2)")
    sub = p.add_subparsers(dest="landscape_command", required=True)
    one = sub.add_parser("1d", help="g(alpha) along noise directions: several models x devices (Fig. 2)")
    one.add_argument("--checkpoint", action="append", required=True, metavar="LABEL=PATH",
                     help="a model to plot; repeatable")
    _curve_args(one)
    _common(one)
    two = sub.add_parser("2d", help="g(alpha, beta) on the SGD / DAT-A / DAT-B plane, three panels (Fig. 1)")
    _trio(two, required=False)
    two.add_argument("--free", default=None, metavar="PATH",
                     help="instead of the trio: a free plane through one checkpoint (random filter-normalised directions)")
    two.add_argument("--direction-seed", type=int, default=0)
    _grid(two)
    _common(two)
    cmp_ = sub.add_parser("compare", help="devices A vs B: curves, surface, difference panel and summary numbers")
    _trio(cmp_, required=True)
    cmp_.add_argument("--probes", type=int, default=None,
                      help="Hutchinson probes of the device-sharpness prediction per model and device "
                           "(default 64; 0: no prediction)")
    _curve_args(cmp_)
    _grid(cmp_)
    _common(cmp_)
    rep = sub.add_parser("reproduce", help="recompute a bundle's numbers from its reproduce.json and compare")
    rep.add_argument("json", help="the bundle's reproduce.json")
    rep.add_argument("--cache-dir", default=None)
    rep.add_argument("--data-root", default=None, help="folder of the CIFAR data (the JSON's own folder is not used)")
    p.set_defaults(func=run_landscape_command)
    return p


def _spec_kwargs(args, kind: str) -> dict:
    devices = _pairs(args.device or DEFAULT_DEVICES, "--device")
    if not (np.isfinite(args.memory_mb) and args.memory_mb >= 1):
        raise UserError(f"--memory-mb: expected a number of MiB >= 1, found {args.memory_mb:g}")
    kw = dict(devices=devices, dataset=args.dataset, data_root=args.data_root, split=args.split,
              max_samples=args.max_samples, targets=args.targets, tile=args.tile, seed=args.seed,
              sampler=args.sampler, k=args.k, batch_size=args.batch_size)
    # --draws 0 is refused (by the spec), not taken as "use the default".
    if kind == "curves":
        alphas = None
        if args.alphas:
            try:
                alphas = [float(a) for a in args.alphas.split(",")]
            except ValueError:
                raise UserError(f"--alphas: expected comma-separated numbers, found {args.alphas!r}") from None
        kw.update(draws=args.draws, span=args.span, num_alphas=args.num_alphas,
                  band=args.band, alphas=alphas)
    else:
        free = kind == "free-plane"
        kw.update(draws=args.draws, resolution=tuple(args.resolution), bn=args.bn,
                  recal_batches=args.recal_batches, chunk_size=args.chunk_size,
                  alpha_range=args.alpha_range and tuple(args.alpha_range),
                  beta_range=args.beta_range and tuple(args.beta_range))  # None: landscape.defaults by kind
        if free:
            kw["direction_seed"] = args.direction_seed
    return kw


def _progress(args, what: str):
    if args.quiet:
        return None, lambda: None
    from tqdm import tqdm

    bar = tqdm(desc=what, unit="pt", file=sys.stderr)

    def cb(done: int, total: int) -> None:
        bar.total = total
        bar.n = done
        bar.refresh()

    return cb, bar.close


def _run(spec, args, what: str, inputs=None):
    from landscape.inputs import MAX_EVALUATIONS
    from landscape.spec import check_size, run_spec

    check_size(spec, None if args.allow_large else MAX_EVALUATIONS)  # before a progress bar shows
    cb, close = _progress(args, what)
    try:
        return run_spec(spec, progress=cb, cache=None if args.no_cache else args.cache_dir, inputs=inputs,
                        memory_budget=int(args.memory_mb * (1 << 20)), allow_large=args.allow_large)
    finally:
        close()


def _export(result, args, folder, spec, comparison=None, figures=None):
    from landscape.export import export_bundle
    from dat.parallel import rank_and_world

    if rank_and_world()[0] != 0:  # every rank holds the whole result; one of them writes it
        return []
    formats = [] if args.formats == "none" else [f for f in args.formats.split(",") if f]
    paths = export_bundle(result, folder, figures=figures, formats=tuple(formats),
                          widths=tuple(w for w in args.widths.split(",") if w), dpi=args.dpi, spec=spec,
                          comparison=comparison)
    print(f"wrote {len(paths)} files to {folder}")
    return paths


def run_landscape_command(args) -> int:
    from dat.checkpoint import check_trio
    from dat.parallel import init_from_env
    from landscape.spec import load_inputs, spec_from_checkpoints
    from landscape.summary import compare_devices

    cmd = args.landscape_command
    # Under torchrun the surface's grid is shared between the ranks; rank 0 alone writes and prints.
    if init_from_env()[0] != 0:
        args.quiet = True
    if cmd == "reproduce":
        return _reproduce(args)
    out = Path(args.out)
    if cmd == "1d":
        spec = spec_from_checkpoints("curves", _pairs(args.checkpoint, "--checkpoint"), **_spec_kwargs(args, "curves"))
        curves = _run(spec, args, "1D curves")
        comparison = compare_devices(curves, threshold=args.threshold)
        _export(curves, args, out, spec, comparison)
        print(comparison.to_csv(), end="")
        return 0
    if cmd == "2d":
        if args.free:
            if any((args.sgd, args.dat_a, args.dat_b)):
                raise SystemExit("use either --free PATH or --sgd/--dat-a/--dat-b, not both")
            spec = spec_from_checkpoints("free-plane", {"model": args.free}, **_spec_kwargs(args, "free-plane"))
        else:
            if not all((args.sgd, args.dat_a, args.dat_b)):
                raise SystemExit("2d needs --sgd, --dat-a and --dat-b (or --free PATH for a free plane)")
            trio = dict(zip(LABELS, (args.sgd, args.dat_a, args.dat_b)))
            check_trio(trio)  # one file twice, or models that cannot share a plane: refused before computing
            spec = spec_from_checkpoints("surface", trio, **_spec_kwargs(args, "surface"))
        _export(_run(spec, args, "2D surface"), args, out, spec)
        return 0
    # compare: both landscapes of the trio, the A-vs-B figure and the summary table.
    trio = dict(zip(LABELS, (args.sgd, args.dat_a, args.dat_b)))
    check_trio(trio)
    c_spec = spec_from_checkpoints("curves", trio, **_spec_kwargs(args, "curves"))
    s_spec = spec_from_checkpoints("surface", trio, **_spec_kwargs(args, "surface"))
    inputs = load_inputs(c_spec)  # the trio, its data and devices, loaded once for both landscapes
    curves = _run(c_spec, args, "1D curves", inputs)
    surface = _run(s_spec, args, "2D surface", inputs)
    comparison = compare_devices(curves, surface, threshold=args.threshold)
    prediction = _prediction(args, c_spec, comparison, inputs)
    if prediction is not None:
        comparison = comparison.with_prediction(prediction)
    _export(curves, args, out / "curves", c_spec, comparison)
    _export(surface, args, out / "surface", s_spec, comparison)
    print(comparison.to_csv(), end="")
    if prediction is not None:
        print(prediction.sentence())
    return 0


def _prediction(args, spec, comparison, inputs):
    """The device-sharpness prediction beside the measured increases (the Compare page's recipe)."""
    from landscape.sharpness import PREDICTION_PROBES, predicted_vs_measured

    probes = PREDICTION_PROBES if args.probes is None else args.probes
    if probes == 0:
        return None
    if probes < 2:
        raise UserError(f"--probes: expected 0 (no prediction) or an int >= 2, found {probes}")
    return predicted_vs_measured(spec, comparison, inputs, probes=probes,
                                 cache=None if args.no_cache else args.cache_dir)


def _reproduce(args) -> int:
    from landscape.export import load_numbers, reproduce

    path = Path(args.json)
    record = json.loads(path.read_text())
    result = reproduce(record, cache=args.cache_dir, data_root=args.data_root)
    stored = load_numbers(path.parent)
    worst = 0.0
    for key, arr in result.to_arrays().items():
        if key in stored:
            worst = max(worst, float(np.nanmax(np.abs(np.asarray(arr, dtype=float) - stored[key]))) if arr.size else 0.0)
    print(f"recomputed {record['kind']}: largest absolute difference from the bundle's numbers {worst:.3g}")
    return 0

