"""Table I: one row per (device, model, method), mean ± std over seeds, as Markdown and CSV.

Rows come from checkpoint metadata. A checkpoint evaluated under another device than the one asked
for is re-evaluated (same draws count and seed as its config), so SGD models trained once serve the
rows of both devices.
"""

from __future__ import annotations

import csv
import io
import os
import statistics
import time
from collections import defaultdict
from typing import Callable, Iterable

from dat.checkpoint import list_checkpoints, load_checkpoint, read_meta
from dat.config import METHODS
from dat.fileio import atomic_write

METHOD_ORDER = METHODS  # Table I rows in the paper's order, then the two baselines
METHOD_LABEL = {"sgd": "SGD", "sgd-bn": "SGD-BN", "dat-fast": "DAT-Fast", "dat-full": "DAT-Full",
                "sam": "SAM", "noise-injection": "Noise injection"}
MODEL_LABEL = {"cnn6": "CNN (6-layer)", "resnet18": "ResNet18"}
QUANTITIES = ("train_clean", "train_noisy", "test_clean", "test_noisy", "train_time_min")


def metrics_under(meta: dict, device: str | None = None) -> dict:
    """A checkpoint's Table I numbers under ``device`` (None: the device it was evaluated with)."""
    metrics = meta["metrics"]
    if device is not None and str(metrics.get("eval_device")) != str(device):
        from dat.data import load_dataset
        from dat.evaluate import evaluate_splits
        from dat.profile_io import make_profile

        config = meta["config"]
        ckpt = load_checkpoint(meta["path"])
        targets = ckpt.noise_targets()
        bundle = load_dataset(config["dataset"], config["data_root"], verify=config.get("verify", True))
        metrics = {**evaluate_splits(ckpt.model, bundle, profile=make_profile(device, targets), targets=targets,
                                     draws=config["eval_draws"], seed=config["seed"],
                                     batch_size=config["eval_batch_size"]),
                   "train_time_s": meta["train_time_s"], "eval_device": str(device)}
    return metrics


def _values(meta: dict, metrics: dict) -> dict:
    return {"train_clean": 100 * metrics["train"]["clean"]["acc"],
            "train_noisy": 100 * metrics["train"]["noisy"]["acc_mean"],
            "test_clean": 100 * metrics["test"]["clean"]["acc"],
            "test_noisy": 100 * metrics["test"]["noisy"]["acc_mean"],
            "train_time_min": meta["train_time_s"] / 60}


def table_rows(metas: Iterable[dict], device: str | None = None) -> list[dict]:
    """Group checkpoints by (eval device, dataset, model, method) and average over seeds. Each row:
    device, dataset, model, method, seeds, and for every quantity its mean and std (0 for one seed)."""
    groups: dict[tuple, list[dict]] = defaultdict(list)
    for meta in metas:
        metrics = metrics_under(meta, device)
        key = (str(metrics.get("eval_device")), meta["dataset"]["dataset"], meta["arch"], meta["method"])
        groups[key].append({**_values(meta, metrics), "seed": meta["seed"]})
    rows = []
    for (dev, dataset, arch, method), items in groups.items():
        row = {"device": dev, "dataset": dataset, "model": arch, "method": method,
               "seeds": sorted(i["seed"] for i in items)}
        for q in QUANTITIES:
            values = [i[q] for i in items]
            row[q + "_mean"] = statistics.mean(values)
            row[q + "_std"] = statistics.stdev(values) if len(values) > 1 else 0.0
        rows.append(row)
    order = {m: i for i, m in enumerate(METHOD_ORDER)}
    rows.sort(key=lambda r: (r["device"], r["dataset"], r["model"], order.get(r["method"], 99)))
    return rows


def _pm(row: dict, q: str, digits: int = 1) -> str:
    return f"{row[q + '_mean']:.{digits}f} ± {row[q + '_std']:.{digits}f}"


def to_markdown(rows: list[dict]) -> str:
    lines = ["| Device | Dataset | Model | Method | Train acc. % (wo / w noise) | Test acc. % (wo / w noise) "
             "| Train time (min) | Seeds |", "|---|---|---|---|---|---|---:|---:|"]
    for r in rows:
        lines.append(f"| {r['device']} | {r['dataset']} | {MODEL_LABEL.get(r['model'], r['model'])} | "
                     f"{METHOD_LABEL.get(r['method'], r['method'])} | {_pm(r, 'train_clean')} / {_pm(r, 'train_noisy')} | "
                     f"{_pm(r, 'test_clean')} / {_pm(r, 'test_noisy')} | {_pm(r, 'train_time_min', 3)} | {len(r['seeds'])} |")
    return "\n".join(lines) + "\n"


def to_csv(rows: list[dict]) -> str:
    fields = ["device", "dataset", "model", "method", "seeds"] + [q + s for q in QUANTITIES for s in ("_mean", "_std")]
    buf = io.StringIO()
    writer = csv.DictWriter(buf, fieldnames=fields)
    writer.writeheader()
    for r in rows:
        writer.writerow({**{k: r[k] for k in fields if k != "seeds"}, "seeds": " ".join(map(str, r["seeds"]))})
    return buf.getvalue()


def write_table(rows: list[dict], markdown: str | None = None, csv_path: str | None = None) -> None:
    for path, text in ((markdown, to_markdown(rows)), (csv_path, to_csv(rows))):
        if path:
            def write(tmp, text=text):
                with open(tmp, "w", encoding="utf-8") as f:
                    f.write(text)
            atomic_write(path, write)


def load_metas(paths: Iterable[str]) -> list[dict]:
    """Metadata of checkpoint files and of every checkpoint inside folders."""
    metas = []
    for path in paths:
        if os.path.isdir(path):
            metas.extend(list_checkpoints(path))
        else:
            metas.append({**read_meta(path), "path": str(path)})
    return metas


def reproduce(dataset: str = "digits", seeds: Iterable[int] = (0, 1, 2), devices=("device-A", "device-B"),
              folder: str = "runs/table1", methods=("sgd", "sgd-bn", "dat-fast", "dat-full"),
              callbacks: Iterable[Callable] = (), **overrides) -> dict:
    """Table I on ``dataset``: each method x seed (DAT methods also x device) is trained into
    ``folder``; SGD rows are trained once per seed and evaluated under each device. Returns
    {"rows", "markdown", "csv", "wall_time_s"} and writes table1.md / table1.csv into ``folder``."""
    from dat.config import resolve
    from dat.train import train

    if dataset not in ("digits",) and "preset" not in overrides:
        raise ValueError(f"reproduce knows the 'digits' presets; for {dataset!r} pass preset=... (e.g. cifar10-cnn6)")
    preset = overrides.pop("preset", "digits")
    t0 = time.perf_counter()
    metas: dict[str, list[dict]] = {str(d): [] for d in devices}
    for seed in seeds:
        for method in methods:
            trained_on = devices if method.startswith("dat") or method == "noise-injection" else devices[:1]
            for dev in trained_on:
                tag = f"{method}-{os.path.splitext(os.path.basename(str(dev)))[0]}" if len(trained_on) > 1 else method
                cfg = resolve(preset, method=method, device=str(dev), seed=seed,
                              out=os.path.join(folder, f"{tag}-s{seed}.safetensors"), **overrides)
                result = train(cfg, callbacks=callbacks)
                meta = {**result.meta, "path": result.checkpoint_path}
                for d in (devices if len(trained_on) == 1 else [dev]):
                    metas[str(d)].append(meta)
    rows = []
    for d, group in metas.items():
        rows.extend(table_rows(group, device=d))
    md, csv_text = to_markdown(rows), to_csv(rows)
    write_table(rows, os.path.join(folder, "table1.md"), os.path.join(folder, "table1.csv"))
    return {"rows": rows, "markdown": md, "csv": csv_text, "wall_time_s": time.perf_counter() - t0}
