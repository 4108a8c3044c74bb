"""`dat transfer`, `dat aging`, `dat sharpness`: the research instruments on the command line.

  dat transfer --epochs 5 --seeds 0,1 --out runs/transfer/bundle
  dat aging --model SGD-BN=runs/transfer/checkpoints/SGD-BN-s0.safetensors --devices device-A device-B
  dat sharpness --model DAT-A=checkpoints/dat-a.safetensors --model SGD=checkpoints/sgd.safetensors

Each prints its table (Markdown) and, with --out, writes the bundle: figures (PNG, unless
--no-figures), numbers.csv, numbers.npz and reproduce.json (the command and every input's hash).
"""

from __future__ import annotations

import argparse
import math
import shlex
import sys
from pathlib import Path

from dat.errors import expected

DEFAULT_DEVICES = ["device-A", "device-B", "device-A:diagonal", "device-B:diagonal", "iid-wan2022"]


def _fmt(v) -> str:
    if isinstance(v, float):
        return "–" if math.isnan(v) else f"{v:.4g}"
    return str(v)


def markdown_table(rows: list[dict], columns: list[str]) -> str:
    lines = ["| " + " | ".join(columns) + " |", "|" + "---|" * len(columns)]
    lines += ["| " + " | ".join(_fmt(r[c]) for c in columns) + " |" for r in rows]
    return "\n".join(lines)


def _pct(rows: list[dict], keys) -> list[dict]:
    """Accuracies as percentages (rounded for display only)."""
    return [{**r, **{k: round(100 * r[k], 1) for k in keys if isinstance(r.get(k), float) and not math.isnan(r[k])}}
            for r in rows]


def _models(items, positional) -> dict[str, list[str]]:
    """--model LABEL=PATH[,PATH...] (one path per seed) and positional paths (label: file stem)."""
    out: dict[str, list[str]] = {}
    for item in items or ():
        label, sep, paths = item.partition("=")
        if not sep or not label or not paths:
            raise expected("--model", "LABEL=PATH[,PATH...]", repr(item))
        out[label] = [p for p in paths.split(",") if p]
    for path in positional or ():
        out[Path(path).stem] = [path]
    if not out:
        raise expected("models", "--model LABEL=PATH[,PATH...] or checkpoint paths", "none")
    for label, paths in out.items():
        missing = [p for p in paths if not Path(p).is_file()]
        if missing:
            raise expected(f"checkpoints of {label!r}", "existing .safetensors files", missing)
    return out


def _command(name: str, args, options: dict, positional=()) -> str:
    """The canonical command line that reruns this instrument (recorded in reproduce.json)."""
    parts = ["dat", name, *positional]
    for flag, value in options.items():
        if value is None or value is False or value == []:
            continue
        if value is True:
            parts.append(flag)
        elif isinstance(value, (list, tuple)):
            if flag == "--model":
                for v in value:
                    parts += [flag, v]
            else:
                parts += [flag, *map(str, value)]
        else:
            parts += [flag, str(value)]
    return shlex.join(parts)


def _device_labels(specs) -> dict[str, str]:
    """{label: spec}: a saved profile is labelled by its file name, a preset by its name."""
    return {Path(s).stem if s.endswith(".npz") else s: s for s in specs}


def _write_bundle(args, result, command: str, figures: dict, extra=None) -> None:
    from landscape.instruments import export_bundle

    if not args.out:
        return
    formats = ("csv", "npz") if args.no_figures else ("png", "csv", "npz")
    paths = export_bundle(result, args.out, command=command, figures={} if args.no_figures else figures,
                          formats=formats, widths=("double",), extra=extra)
    print(f"wrote {len(paths)} files to {args.out}")


def _progress(quiet: bool, unit: str):
    from tqdm import tqdm

    state = {}

    def cb(done: int, total: int) -> None:
        if "bar" not in state:
            state["bar"] = tqdm(total=total, unit=unit, disable=quiet, file=sys.stderr)
        state["bar"].update(done - state["bar"].n)
        if done >= total:
            state["bar"].close()
    return cb


def cmd_transfer(args) -> int:
    from dat.config import resolve
    from dat.transfer import correlation_ablation, rows_csv, run_transfer

    from landscape.instruments import ablation_figure, transfer_figure

    overrides = {k: getattr(args, k) for k in ("epochs", "method", "alpha", "width", "hidden") if getattr(args, k) is not None}
    config = resolve(args.preset, **overrides)
    seeds = [int(s) for s in args.seeds.split(",") if s.strip()]
    result = run_transfer(config, args.devices, test_devices=args.test_devices, seeds=seeds, draws=args.draws,
                          eval_seed=args.eval_seed, folder=args.folder, progress=_progress(args.quiet, "model"))
    rows = _pct(result.summary(), ("mean", "ci95_low", "ci95_high", "p1", "p5"))
    print(markdown_table(rows, ["train", "test", "mean", "ci95_low", "ci95_high", "p1", "p5", "seeds", "draws"]))
    ablation = correlation_ablation(result) if "SGD-BN" in result.rows else []
    if ablation:
        print()
        print(markdown_table(_pct(ablation, ("dat_acc", "baseline_acc", "gain", "gain_ci95_low", "gain_ci95_high")),
                             ["variant", "dat_acc", "baseline_acc", "gain", "gain_ci95_low", "gain_ci95_high", "seeds"]))
    figures = {"transfer_matrix": transfer_figure(result)}
    if ablation:
        figures["correlation_ablation"] = ablation_figure(ablation)
    command = _command("transfer", args, {"--devices": args.devices, "--test-devices": args.test_devices,
                                          "--preset": args.preset, **{f"--{k}": v for k, v in overrides.items()},
                                          "--seeds": args.seeds, "--draws": args.draws, "--eval-seed": args.eval_seed,
                                          "--folder": args.folder})
    _write_bundle(args, result, command, figures, {"ablation.csv": rows_csv(ablation)} if ablation else None)
    return 0


def cmd_aging(args) -> int:
    from dat.aging import TIME_POINTS, accuracy_vs_time

    from landscape.instruments import aging_figure

    models = _models(args.model, args.checkpoints)
    times = TIME_POINTS if not args.times else tuple((f"{t:g} s", t) for t in args.times)
    result = accuracy_vs_time(models, _device_labels(args.devices), times=times, draws=args.draws, seed=args.seed,
                              progress=_progress(args.quiet, "checkpoint"))
    rows = _pct(result.summary(), ("mean", "ci95_low", "ci95_high", "p1", "p5"))
    print(markdown_table(rows, ["model", "device", "time", "mean", "ci95_low", "ci95_high", "p1", "p5", "loss_mean",
                                "seeds", "draws"]))
    figures = {"accuracy_vs_time": aging_figure(result, "acc"), "loss_vs_time": aging_figure(result, "loss")}
    command = _command("aging", args, {"--model": [f"{m}={','.join(p)}" for m, p in models.items()],
                                       "--devices": args.devices, "--times": args.times, "--draws": args.draws,
                                       "--seed": args.seed})
    _write_bundle(args, result, command, figures)
    return 0


def cmd_sharpness(args) -> int:
    from landscape.instruments import sharpness_figure
    from landscape.sharpness import sharpness_study, study_inputs

    paths = _models(args.model, args.checkpoints)
    for label, files in paths.items():
        if len(files) != 1:
            raise expected(f"--model {label}", "one checkpoint (sharpness is per model)", f"{len(files)} paths")
    models, X, Y = study_inputs({label: files[0] for label, files in paths.items()}, samples=args.samples)
    result = sharpness_study(models, _device_labels(args.devices), X, Y, probes=args.probes, draws=args.draws,
                             seed=args.seed, eigenvalues=args.eigenvalues, progress=_progress(args.quiet, "pair"))
    print(markdown_table(list(result.rows), ["model", "device", "sharpness", "se", "predicted_increase",
                                             "measured_increase", "measured_se", "typical_norm"]))
    for key, c in result.correlation.items():
        print(f"Spearman rank correlation of {key} with the measured increase: {_fmt(c['spearman'])} "
              f"(p = {_fmt(c['p_value'])}, {c['pairs']} pairs)")
    for m, vals in result.eigenvalues.items():
        print(f"{m}: top Hessian eigenvalues on the targets: " + ", ".join(f"{v:.4g}" for v in vals))
    command = _command("sharpness", args, {"--model": [f"{m}={p[0]}" for m, p in paths.items()],
                                           "--devices": args.devices, "--probes": args.probes, "--draws": args.draws,
                                           "--samples": args.samples, "--eigenvalues": args.eigenvalues,
                                           "--seed": args.seed})
    _write_bundle(args, result, command, {"device_sharpness": sharpness_figure(result)})
    return 0


def _common(p: argparse.ArgumentParser) -> None:
    p.add_argument("--out", default=None, help="write the bundle (figure, numbers.csv/npz, reproduce.json) here")
    p.add_argument("--no-figures", action="store_true", help="numbers only (no browser needed for PNG export)")
    p.add_argument("--quiet", action="store_true", help="no progress bar")


def add_instrument_parsers(subparsers) -> None:
    """Register `transfer`, `aging` and `sharpness` on the `dat` subparsers."""
    from dat.config import PRESETS

    from dat.transfer import DEVICE_SYNTAX

    p = subparsers.add_parser("transfer", help="transfer matrix: train on device X, test on device Y",
                              description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--devices", nargs="+", default=DEFAULT_DEVICES, help=f"training devices: {DEVICE_SYNTAX}")
    p.add_argument("--test-devices", nargs="+", default=None, help="test devices (default: the training devices)")
    p.add_argument("--preset", default="digits", choices=sorted(PRESETS), help="training settings to start from")
    p.add_argument("--epochs", type=int, default=5, help="epochs per model (default 5: a small budget)")
    p.add_argument("--method", default="dat-full",
                   help="device-aware method of the device rows (default dat-full: exact draws; a twin's flat "
                        "spectrum leaves dat-fast's k = 10 eigenpairs a few %% of its variance)")
    p.add_argument("--alpha", type=float, default=None, help="DAT strength (default: the preset's)")
    p.add_argument("--width", type=int, default=None, help="CNN width (default: the preset's)")
    p.add_argument("--hidden", type=int, default=None, help="hidden width (default: the preset's)")
    p.add_argument("--seeds", default="0,1", help="training seeds, comma-separated (CIs need two or more)")
    p.add_argument("--draws", type=int, default=20, help="noise draws (chips) per evaluation")
    p.add_argument("--eval-seed", type=int, default=0, help="seed of the evaluation draws (as dat eval --seed)")
    p.add_argument("--folder", default="runs/transfer", help="profiles and checkpoints of the run (reused on rerun)")
    _common(p)
    p.set_defaults(func=cmd_transfer)

    p = subparsers.add_parser("aging", help="accuracy against time since programming (1 s to 1 year)",
                              description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("checkpoints", nargs="*", help="checkpoints (label: file name); or use --model")
    p.add_argument("--model", action="append", metavar="LABEL=PATH[,PATH...]", help="a model, one checkpoint per seed")
    p.add_argument("--devices", nargs="+", default=["device-A", "device-B"],
                   help="crossbar devices (presets or saved crossbar profiles)")
    p.add_argument("--times", nargs="+", type=float, default=None,
                   help="time points in seconds (default: 1 s, 1 min, 1 h, 1 day, 1 week, 1 month, 1 year)")
    p.add_argument("--draws", type=int, default=20, help="noise draws (chips) per evaluation")
    p.add_argument("--seed", type=int, default=0, help="seed of the draws (as dat eval --seed)")
    _common(p)
    p.set_defaults(func=cmd_aging)

    p = subparsers.add_parser("sharpness", help="device sharpness (1/2) tr(H Sigma_w) against the measured loss increase",
                              description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("checkpoints", nargs="*", help="checkpoints (label: file name); or use --model")
    p.add_argument("--model", action="append", metavar="LABEL=PATH", help="a model (one checkpoint)")
    p.add_argument("--devices", nargs="+", default=["device-A", "device-B"], help="devices (presets or saved profiles)")
    p.add_argument("--probes", type=int, default=32, help="Hutchinson probes drawn from each device")
    p.add_argument("--draws", type=int, default=20, help="noise directions for the measured increase")
    p.add_argument("--samples", type=int, default=512, help="training images used (0: all)")
    p.add_argument("--eigenvalues", type=int, default=5, help="top Hessian eigenvalues by Lanczos (0: none)")
    p.add_argument("--seed", type=int, default=0, help="seed of the probes and draws")
    _common(p)
    p.set_defaults(func=cmd_sharpness)
