"""The `dat` command: train, eval, table, demo, profile, landscape.

    dat train --preset digits --method dat-fast --device device-A
    dat eval checkpoints/dat-a.safetensors --device device-B
    dat table checkpoints/ --markdown table.md --csv table.csv
    dat table --reproduce digits
    dat demo
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import sys
import types
import typing

from dat.errors import UserError
from dat.config import METHODS, PRESETS, TARGET_CHOICES, TrainConfig, resolve

def _flag_type(hint) -> type:
    """The scalar type a flag parses to, from a field's real type: bool, int, float or str (an
    Optional's None dropped)."""
    args = [a for a in typing.get_args(hint) if a is not type(None)] if typing.get_origin(hint) in (
        typing.Union, types.UnionType) else [hint]
    if len(args) != 1 or args[0] not in (bool, int, float, str):
        raise TypeError(f"a command-line flag needs a bool, int, float or str field, found {hint!r}")
    return args[0]


def train_flags() -> dict:
    """{field name: (flag type, help)} of every TrainConfig field that is a `dat train` flag."""
    hints = typing.get_type_hints(TrainConfig)
    return {f.name: (_flag_type(hints[f.name]), f.metadata["help"]) for f in dataclasses.fields(TrainConfig)
            if f.metadata.get("flag", True)}


def _add_train_options(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--preset", default="digits", choices=sorted(PRESETS),
                        help="named settings to start from (default: digits); every option below overrides it")
    for name, (kind, text) in train_flags().items():
        flag = "--" + name.replace("_", "-")
        if kind is bool:
            parser.add_argument(flag, dest=name, action=argparse.BooleanOptionalAction, default=None, help=text)
        else:
            parser.add_argument(flag, dest=name, type=kind, default=None, help=text)


def _config_from(args) -> TrainConfig:
    overrides = {name: getattr(args, name) for name in train_flags() if getattr(args, name, None) is not None}
    return resolve(args.preset, **overrides)


def _progress_callback(quiet: bool):
    """A tqdm progress bar subscribed to the trainer's events."""
    from tqdm import tqdm

    state = {"bar": None}

    def callback(event: str, payload: dict) -> None:
        label = payload.get("run", "")
        if event == "start":
            state["bar"] = tqdm(total=payload["total_steps"], initial=payload["start_epoch"] * (
                payload["total_steps"] // max(payload["epochs"], 1)), desc=label or "train", disable=quiet,
                unit="step", file=sys.stderr)
        elif event == "step" and state["bar"] is not None:
            state["bar"].update(1)
            state["bar"].set_postfix(loss=f"{payload['loss']:.3f}", refresh=False)
        elif event == "epoch" and state["bar"] is not None and not quiet:
            state["bar"].write(f"{label + ' ' if label else ''}epoch {payload['epoch']}/{payload['epochs']}: "
                               f"loss {payload['train_loss']:.4f}, train acc {payload['train_acc']:.3f}, "
                               f"test acc {payload['test_acc']:.3f}, lr {payload['lr']:.4g}")
        elif event in ("end", "cancelled", "diverged") and state["bar"] is not None:
            state["bar"].close()
            state["bar"] = None
    return callback


def _summary(metrics: dict) -> str:
    parts = []
    for split in ("train", "test"):
        m = metrics[split]
        noisy = m.get("noisy")
        text = f"{split}: clean {100 * m['clean']['acc']:.2f}%"
        if noisy:
            text += f", noisy {100 * noisy['acc_mean']:.2f} ± {100 * noisy['acc_std']:.2f}% ({noisy['draws']} draws)"
        parts.append(text)
    return "; ".join(parts)


def cmd_train(args) -> int:
    from dat.parallel import init_from_env
    from dat.train import train

    config = _config_from(args)
    # Under torchrun, data-parallel over the ranks; rank 0 reports and writes the checkpoint.
    rank, _ = init_from_env()
    result = train(config, callbacks=[_progress_callback(args.quiet or rank != 0)])
    if rank != 0:
        return 0
    print(f"wrote {result.checkpoint_path} ({result.metrics['train_time_s']:.1f} s of training), named "
          f"{result.meta['display_name']!r}")
    print(_summary(result.metrics) + f" under {result.metrics['eval_device']}")
    return 0


def cmd_eval(args) -> int:
    from dat.checkpoint import load_checkpoint
    from dat.chips import chip_summary
    from dat.eval_rule import recorded_device
    from dat.evaluate import evaluate_checkpoint

    # One evaluation rule (dat.evaluate): the same numbers as dat table and the dashboard. The data
    # folder and the md5 check are the user's settings; the checkpoint's own are never used.
    ckpt = load_checkpoint(args.checkpoint)
    device = args.device or recorded_device(ckpt.meta, args.checkpoint, key="train")
    metrics = evaluate_checkpoint(args.checkpoint, device, data_root=args.data_root, verify=args.verify,
                                  draws=args.draws, eval_seed=args.eval_seed, batch_size=args.batch_size,
                                  targets_choice=args.targets, checkpoint=ckpt)
    chosen = ["train", "test"] if args.split == "both" else [args.split]
    for s in chosen:  # worst chips: each draw is one programmed chip (dat.chips)
        chips = chip_summary(metrics[s]["noisy"].pop("acc_per_draw"))
        metrics[s]["noisy"].update(acc_se=chips["se"], acc_p1=chips["p1"], acc_p5=chips["p5"])
    stress = float((ckpt.meta.get("config") or {}).get("stress", 1.0))
    under = device if stress == 1.0 else f"{device} at stress {stress:g}"
    recipe = {k: metrics[k] for k in ("eval_seed", "eval_batch_size", "eval_profile_hash")}
    if args.json:
        print(json.dumps({"checkpoint": args.checkpoint, "device": device, "stress": stress, **recipe,
                          "draws": metrics["test"]["noisy"]["draws"], "metrics": {s: metrics[s] for s in chosen}},
                         indent=1))
    else:
        for s in chosen:
            m, n = metrics[s], metrics[s]["noisy"]
            print(f"{s}: clean acc {100 * m['clean']['acc']:.2f}% loss {m['clean']['loss']:.4f}; under {under}: "
                  f"acc {100 * n['acc_mean']:.2f} ± {100 * n['acc_std']:.2f}% (SE {100 * n['acc_se']:.2f}; worst "
                  f"chips p1 {100 * n['acc_p1']:.2f}%, p5 {100 * n['acc_p5']:.2f}%) loss {n['loss_mean']:.4f} ± "
                  f"{n['loss_std']:.4f} (mean ± std over {n['draws']} draws, eval seed {recipe['eval_seed']})")
    return 0


def cmd_table(args) -> int:
    from dat import table

    if args.reproduce:
        seeds = _int_list(args.seeds, "--seeds")
        methods = [m.strip() for m in args.methods.split(",") if m.strip()]
        unknown = sorted(set(methods) - set(METHODS))
        if unknown or not methods:
            raise UserError(f"--methods: expected a comma-separated list from {', '.join(METHODS)}, found {args.methods!r}")
        overrides = {"epochs": args.epochs} if args.epochs else {}
        if args.stress is not None:  # the named stress knob (off = 1 unless asked), recorded in every row
            overrides["stress"] = args.stress
        result = table.reproduce(args.reproduce, seeds=seeds, folder=args.folder, methods=methods,
                                 draws=args.draws or table.DEFAULT_DRAWS, threads=args.threads,
                                 eval_seed=args.eval_seed, callbacks=[_progress_callback(args.quiet)], **overrides)
        print(result["markdown"])
        if args.markdown or args.csv:
            table.write_table(result["rows"], args.markdown, args.csv)
        if args.latex:
            table.write_layout(table.layout_table(result["rows"]), latex=args.latex)
        print(f"wrote {args.folder}/table1.md, table1.csv, table1.tex and table1.json; wall time {result['wall_time_s']:.1f} s "
              f"({result['wall_time_s'] / 60:.1f} min) with {result['threads']} torch thread(s)")
        return 0
    if not args.checkpoints:
        raise UserError("dat table: expected checkpoint files or folders, or --reproduce digits; found neither")
    rows = table.table_rows(table.load_metas(args.checkpoints), device=args.device, draws=args.draws,
                            eval_seed=args.eval_seed, data_root=args.data_root, verify=args.verify)
    table.write_table(rows, args.markdown, args.csv)
    if args.latex:
        table.write_layout(table.layout_table(rows), latex=args.latex)
    print(table.to_markdown(rows))
    return 0


def _int_list(text: str, flag: str) -> list[int]:
    try:
        return [int(s) for s in text.split(",") if s.strip()]
    except ValueError:
        raise UserError(f"{flag}: expected comma-separated integers, found {text!r}") from None


def cmd_demo(args) -> int:
    from dat.train import make_demo

    overrides = {"epochs": args.epochs} if args.epochs else {}
    if args.name is not None:
        overrides["name"] = args.name
    results = make_demo(args.folder, args.profiles, callbacks=[_progress_callback(args.quiet)], **overrides)
    for label, result in results.items():
        print(f"{label}: {result.checkpoint_path}  {_summary(result.metrics)}")
    trio = next(iter(results.values())).meta.get("trio") if results else None
    if trio:
        print(f"trio: {trio['name']}")
    return 0


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="dat", description="Device-Aware Training (DAT) for ReRAM crossbars: "
                                     "train, evaluate, tabulate, make profiles and loss landscapes.",
                                     formatter_class=argparse.RawDescriptionHelpFormatter, epilog=__doc__)
    sub = parser.add_subparsers(dest="command", required=True)

    p = sub.add_parser("train", help="train one model (SGD, SGD-BN, DAT-Fast, DAT-Full, SAM, noise injection)",
                       description="Train one model and write a checkpoint with its clean and noisy accuracy.")
    _add_train_options(p)
    p.add_argument("--quiet", action="store_true", help="no progress bar")
    p.set_defaults(func=cmd_train)

    p = sub.add_parser("eval", help="clean and noisy accuracy of a checkpoint under any device",
                       description="Evaluate a checkpoint without noise and under R draws of a device profile.")
    p.add_argument("checkpoint", help="a .safetensors checkpoint written by dat train")
    p.add_argument("--device", default=None, help="profile: preset or .npz (default: the one it was trained with)")
    p.add_argument("--draws", type=int, default=None, help="noise draws R (default: the checkpoint's eval_draws)")
    p.add_argument("--eval-seed", "--seed", dest="eval_seed", type=int, default=0,
                   help="seed of the noise draws (default 0: the rule dat table and the dashboard use)")
    p.add_argument("--split", choices=("train", "test", "both"), default="both", help="which split(s)")
    p.add_argument("--targets", choices=TARGET_CHOICES, default=None, help="noise targets (default: as trained)")
    p.add_argument("--data-root", default=None,
                   help="CIFAR folder (default: data); a checkpoint's own data_root is never used")
    p.add_argument("--verify", action=argparse.BooleanOptionalAction, default=True,
                   help="check CIFAR files against the official md5 sums (--no-verify only for a folder you built)")
    p.add_argument("--batch-size", type=int, default=None, help="images per evaluation batch (default: as trained)")
    p.add_argument("--json", action="store_true", help="print JSON")
    p.set_defaults(func=cmd_eval)

    p = sub.add_parser("table", help="Table I from checkpoints (Markdown and CSV), or reproduce it on digits",
                       description="Table I rows (one per run definition; mean and 95 % t-interval over seeds, "
                       "paired differences to SGD-BN) from checkpoints, or --reproduce digits.")
    p.add_argument("checkpoints", nargs="*", help="checkpoint files or folders")
    p.add_argument("--device", default=None, help="evaluate every row under this profile (re-evaluates as needed)")
    p.add_argument("--draws", type=int, default=None,
                   help="noise draws R per model (default: each checkpoint's eval_draws; --reproduce: 100)")
    p.add_argument("--eval-seed", type=int, default=0, help="seed of the noise draws (default 0, as dat eval)")
    p.add_argument("--data-root", default=None, help="CIFAR folder for re-evaluations (default: data)")
    p.add_argument("--verify", action=argparse.BooleanOptionalAction, default=True,
                   help="check CIFAR files against the official md5 sums")
    p.add_argument("--markdown", default=None, help="write the Markdown table here")
    p.add_argument("--csv", default=None, help="write the CSV table here")
    p.add_argument("--latex", default=None,
                   help="write Table I in the paper's layout as LaTeX (booktabs) here: methods as rows, per "
                   "evaluation device test accuracy without / with noise")
    p.add_argument("--reproduce", choices=("digits",), default=None,
                   help="train the methods for device A and B over the seeds, then tabulate")
    p.add_argument("--seeds", default="0,1,2,3,4,5,6,7,8,9", help="seeds for --reproduce (comma-separated)")
    p.add_argument("--methods", default="sgd,sgd-bn,dat-fast,dat-full", help="methods for --reproduce")
    p.add_argument("--stress", type=float, default=None,
                   help="multiply every device std by this for --reproduce (a named experiment knob; default: "
                        "the preset's, 1 = the physical devices)")
    p.add_argument("--threads", type=int, default=1,
                   help="torch threads inside --reproduce (fixed so the numbers do not depend on the machine's)")
    p.add_argument("--epochs", type=int, default=None, help="epochs for --reproduce (default: the preset's)")
    p.add_argument("--folder", default="runs/table1", help="where --reproduce writes checkpoints and the table")
    p.add_argument("--quiet", action="store_true", help="no progress bar")
    p.set_defaults(func=cmd_table)

    p = sub.add_parser("demo", help="demo profiles and checkpoints (SGD, DAT-A, DAT-B on digits)",
                       description="Save profiles/device-A.npz and device-B.npz and train the three demo models.")
    p.add_argument("--folder", default="checkpoints", help="checkpoint folder")
    p.add_argument("--profiles", default="profiles", help="profile folder")
    p.add_argument("--epochs", type=int, default=None, help="epochs (default: the digits preset's)")
    p.add_argument("--name", default=None, help="the trio's name in legends and tables (default: 'digits CNN6 "
                   "trio, 20 epochs', from the settings)")
    p.add_argument("--quiet", action="store_true", help="no progress bar")
    p.set_defaults(func=cmd_demo)

    from faces.cli.profile import add_profile_parser
    add_profile_parser(sub)
    from faces.cli.landscape import add_landscape_parser
    add_landscape_parser(sub)
    from faces.cli.instruments import add_instrument_parsers
    add_instrument_parsers(sub)  # dat transfer | aging | sharpness
    from faces.cli.cache import add_cache_parser
    add_cache_parser(sub)  # dat cache list | prune | clear
    return parser


def main(argv=None) -> int:
    from dat.parallel import shutdown

    args = build_parser().parse_args(argv)
    try:
        code = args.func(args)
    except (UserError, ValueError, FileNotFoundError) as err:
        print(f"dat {args.command}: error: {err}", file=sys.stderr)
        return 2  # under torchrun the launcher stops the other ranks
    shutdown()  # ranks of a torchrun leave the process group together
    return code

