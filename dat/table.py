"""Table I: one row per run definition and evaluation device, with statistics over seeds.

A *run* is everything that defines a training except its seed: the method, the resolved config
(minus where files go, how data is found and how the model is evaluated) and, for methods that
train with noise, the training device's name and content hash. Checkpoints of one run with
different seeds are its samples; checkpoints of different runs are never averaged: they are
separate rows, labelled with what differs (``run`` column).

Every number comes from the one evaluation rule of :mod:`dat.evaluate` (same draws, eval seed and
batch size as ``dat eval`` and the dashboard): a checkpoint's stored metrics are used when they
were made by that rule under the asked device, otherwise the checkpoint is re-evaluated.

Statistics per row (n = distinct seeds; checkpoints sharing a seed are averaged first): the mean,
the standard deviation and the 95 % t-interval over seeds (scipy.stats.t); noisy accuracy is each
model's mean over its R draws, ``test_noisy_p1`` and ``test_noisy_p5`` its 1st and 5th percentiles
over the draws (the worst chips, ``dat.chips``). Each method is compared with the SGD-BN run of the same settings by the paired difference
over common seeds (mean, 95 % t-interval, paired t-test p-value, scipy.stats.ttest_rel).
"""

from __future__ import annotations

import csv
import dataclasses
import io
import json
import math
import os
import time
from collections import defaultdict
from typing import Callable, Iterable

import numpy as np

from dat.checkpoint import list_checkpoints, read_meta
from dat.chips import chip_summary
from dat.config import METHODS
from dat.errors import UserError
from dat.fileio import atomic_write

METHOD_ORDER = METHODS  # Table I rows in the paper's order, then the two baselines
METHOD_LABEL = {"sgd": "SGD", "sgd-bn": "SGD-BN", "dat-fast": "DAT-Fast", "dat-full": "DAT-Full",
                "sam": "SAM", "noise-injection": "Noise injection"}
MODEL_LABEL = {"cnn6": "CNN (6-layer)", "resnet18": "ResNet18"}
QUANTITIES = ("train_clean", "train_noisy", "test_clean", "test_noisy", "test_noisy_p1", "test_noisy_p5",
              "train_time_min")
QUANTITY_LABEL = {"train_clean": "Train clean", "train_noisy": "Train noisy", "test_clean": "Test clean",
                  "test_noisy": "Test noisy", "test_noisy_p1": "Test noisy p1",
                  "test_noisy_p5": "Test noisy p5", "train_time_min": "Train time (min)"}
BASELINE = "sgd-bn"
PAIRED_QUANTITY = "test_noisy"
CONFIDENCE = 0.95
# Config fields that do not define a run: its seed, where files go, how data is found, how it is
# evaluated (evaluation follows dat.evaluate's rule, recorded per row).
NOT_RUN_DEFINING = frozenset({"seed", "out", "resume", "data_root", "download", "verify", "num_workers", "extra",
                              "eval_draws", "eval_device", "eval_batch_size", "eval_seed", "name"})
# Fields in which a method's run may differ from its SGD-BN baseline and still be paired with it.
METHOD_FIELDS = frozenset({"method", "batchnorm", "device", "alpha", "k", "p", "rho"})
INTERVAL_NOTE = ("± is the half-width of the 95 % confidence interval (t-interval) over the n seeds of the row "
                 "(n = 1: no interval)")


# -- what a run is -----------------------------------------------------------------------------
def _config(meta: dict) -> dict:
    """The checkpoint's resolved config, with fields it predates filled with today's defaults."""
    from dat.config import TrainConfig

    defaults = {f.name: f.default for f in dataclasses.fields(TrainConfig) if f.default is not dataclasses.MISSING}
    return {**defaults, **(meta.get("config") or {})}


def _trained_with_noise(meta: dict) -> bool:
    if "trained_with_noise" in meta:
        return bool(meta["trained_with_noise"])
    return meta.get("method") not in ("sgd", "sgd-bn", "sam")


def run_identity(meta: dict) -> tuple:
    """(training device name, its hash, config fields that define the run) of a checkpoint. Methods
    that never see a device while training (SGD, SGD-BN, SAM) have no training device."""
    fields = {k: v for k, v in _config(meta).items() if k not in NOT_RUN_DEFINING}
    fields["method"] = meta.get("method", fields.get("method"))
    device = meta.get("device") or {}
    if _trained_with_noise(meta):
        trained_on = (str(device.get("name", fields.get("device"))), str(device.get("hash", "")))
    else:
        trained_on = ("", "")
    fields.pop("device", None)
    return trained_on + (json.dumps(fields, sort_keys=True, default=str),)


def _comparison_identity(meta: dict) -> str:
    """The settings a method shares with the baseline it is paired with (no method-specific fields)."""
    fields = {k: v for k, v in _config(meta).items() if k not in NOT_RUN_DEFINING | METHOD_FIELDS}
    return json.dumps(fields, sort_keys=True, default=str)


# -- numbers of one checkpoint -----------------------------------------------------------------
def metrics_under(meta: dict, device: str | None = None, *, draws: int | None = None, eval_seed: int | None = None,
                  data_root=None, verify: bool = True) -> dict:
    """A checkpoint's evaluation by the one rule (:mod:`dat.evaluate`) under ``device`` (None: the
    device it was evaluated with). Stored metrics are used when the rule made them under that
    device; otherwise the checkpoint is re-evaluated from the user's ``data_root``."""
    from dat.eval_rule import recipe_for, recipe_matches, recorded_device

    path = meta["path"]
    recipe = recipe_for(meta.get("config") or {}, draws=draws, eval_seed=eval_seed)
    stored = meta.get("metrics") or {}
    if device is None:
        if recipe_matches(stored, recipe):
            return stored
        spec, ckpt = recorded_device(meta, str(path)), None
    else:
        # torch is imported here, where a model or a profile is needed: stored numbers are read without it.
        from dat.checkpoint import load_checkpoint
        from dat.noise.io import make_profile

        spec = str(device)
        ckpt = load_checkpoint(path)
        if recipe_matches(stored, recipe, spec, make_profile(spec, ckpt.noise_targets(), stress=(meta.get("config") or {}).get("stress", 1.0)).content_hash()):
            return stored
    from dat.evaluate import evaluate_checkpoint

    return evaluate_checkpoint(path, spec, data_root=data_root, verify=verify, draws=recipe["draws"],
                               eval_seed=recipe["eval_seed"], batch_size=recipe["batch_size"], checkpoint=ckpt)


def _seed(meta: dict) -> int:
    seed = meta.get("seed", (meta.get("config") or {}).get("seed"))
    if not isinstance(seed, int) or isinstance(seed, bool):
        raise UserError(f"{meta.get('path', 'checkpoint')}: expected an integer training seed in its metadata, "
                        f"found {seed!r}")
    return seed


def _values(meta: dict, metrics: dict) -> dict:
    try:
        return _percent_values(meta, metrics)
    except (KeyError, TypeError, ValueError) as err:
        raise UserError(f"{meta.get('path', 'checkpoint')}: expected train/test clean and noisy accuracies in its "
                        f"metrics, found a malformed entry ({type(err).__name__}: {err})") from None


def _percent_values(meta: dict, metrics: dict) -> dict:
    per_draw = metrics["test"]["noisy"].get("acc_per_draw") or [metrics["test"]["noisy"]["acc_mean"]]
    chips = chip_summary(per_draw)
    return {"train_clean": 100 * metrics["train"]["clean"]["acc"],
            "train_noisy": 100 * metrics["train"]["noisy"]["acc_mean"],
            "test_clean": 100 * metrics["test"]["clean"]["acc"],
            "test_noisy": 100 * metrics["test"]["noisy"]["acc_mean"],
            "test_noisy_p1": 100 * chips["p1"], "test_noisy_p5": 100 * chips["p5"],
            "train_time_min": float(meta.get("train_time_s", metrics.get("train_time_s", 0.0))) / 60}


# -- statistics --------------------------------------------------------------------------------
def mean_interval(values: Iterable[float], confidence: float = CONFIDENCE) -> dict:
    """Mean, sample standard deviation and the two-sided t-interval of the mean (scipy.stats.t);
    sd and the interval are None for fewer than two values."""
    x = np.asarray(list(values), dtype=np.float64)
    n = len(x)
    if n == 0:
        raise ValueError("mean_interval needs at least one value")
    mean = float(x.mean())
    if n < 2:
        return {"n": n, "mean": mean, "sd": None, "ci_low": None, "ci_high": None}
    from scipy import stats  # here: a table of single runs (the demo's) never needs it (1 s to import)

    sd = float(x.std(ddof=1))
    half = float(stats.t.ppf(0.5 + confidence / 2, n - 1)) * sd / math.sqrt(n)
    return {"n": n, "mean": mean, "sd": sd, "ci_low": mean - half, "ci_high": mean + half}


def paired_difference(x: dict, y: dict, confidence: float = CONFIDENCE) -> dict | None:
    """x - y over the seeds both {seed: value} hold: mean, t-interval and the paired t-test p-value
    (scipy.stats.ttest_rel; None below two pairs or when every difference is the same)."""
    seeds = sorted(set(x) & set(y))
    if not seeds:
        return None
    a, b = np.array([x[s] for s in seeds]), np.array([y[s] for s in seeds])
    out = {**mean_interval(a - b, confidence), "seeds": seeds, "p": None}
    if len(seeds) >= 2 and out["sd"]:
        from scipy import stats

        out["p"] = float(stats.ttest_rel(a, b).pvalue)
    return out


# -- the table ---------------------------------------------------------------------------------
def table_rows(metas: Iterable[dict], device: str | None = None, *, draws: int | None = None,
               eval_seed: int | None = None, data_root=None, verify: bool = True) -> list[dict]:
    """Group checkpoints by (evaluation device and its profile hash, dataset, model, run identity,
    evaluation recipe) and summarise each group over its distinct seeds (see the module doc).
    Rows of one (device, dataset, model, method) that differ in their run get a ``run`` label
    naming the differing settings."""
    groups: dict[tuple, dict] = {}
    for meta in metas:
        metrics = metrics_under(meta, device, draws=draws, eval_seed=eval_seed, data_root=data_root, verify=verify)
        trained_name, trained_hash, fields = run_identity(meta)
        dataset = (meta.get("dataset") or {}).get("dataset") if isinstance(meta.get("dataset"), dict) else meta.get("dataset")
        key = (str(metrics.get("eval_device")), str(metrics.get("eval_profile_hash", "")), str(dataset),
               str(meta.get("arch")), str(meta.get("method")), trained_name, trained_hash, fields,
               int(metrics["test"]["noisy"]["draws"]), metrics.get("eval_seed"))
        group = groups.setdefault(key, {"per_seed": defaultdict(list), "paths": [], "meta": meta})
        group["per_seed"][_seed(meta)].append(_values(meta, metrics))
        group["paths"].append(str(meta.get("path", "")))
        group.setdefault("names", set()).add(_chosen_name(meta))
        group.setdefault("alphas", []).append(meta.get("alpha"))
    rows = []
    for key, group in groups.items():
        dev, dev_hash, dataset, arch, method, trained_name, trained_hash, fields, n_draws, seed = key
        per_seed = {s: {q: float(np.mean([v[q] for v in vals])) for q in QUANTITIES}
                    for s, vals in sorted(group["per_seed"].items())}
        row = {"device": dev, "device_hash": dev_hash, "dataset": dataset, "model": arch, "method": method,
               "trained_on": trained_name, "trained_on_hash": trained_hash, "run": "", "_fields": json.loads(fields),
               "_comparison": _comparison_identity(group["meta"]), "n_seeds": len(per_seed),
               "seeds": sorted(per_seed), "n_checkpoints": len(group["paths"]), "draws": n_draws, "eval_seed": seed,
               "per_seed": per_seed,
               "_name": next(iter(group["names"])) if len(group["names"]) == 1 else None}
        # DAT's strength (a stated fraction of the device's noise norm) and the alpha it resolved to
        # per seed (calibrated at the start of each run): a table says at what strength it compared.
        alphas = [float(a) for a in group["alphas"] if isinstance(a, (int, float)) and not isinstance(a, bool)]
        dat_like = method in ("dat-fast", "dat-full")
        row["strength"] = row["_fields"].get("strength") if dat_like else None
        row["alpha_mean"] = float(np.mean(alphas)) if dat_like and alphas else None
        for q in QUANTITIES:
            stats = mean_interval(v[q] for v in per_seed.values())
            row.update({f"{q}_mean": stats["mean"], f"{q}_sd": stats["sd"], f"{q}_ci95_low": stats["ci_low"],
                        f"{q}_ci95_high": stats["ci_high"]})
        rows.append(row)
    _label_runs(rows)
    _pair_with_baseline(rows)
    order = {m: i for i, m in enumerate(METHOD_ORDER)}
    rows.sort(key=lambda r: (r["device"], r["dataset"], r["model"], order.get(r["method"], 99), r["trained_on"],
                             r["run"]))
    return rows


def _chosen_name(meta: dict) -> str | None:
    """The name a user gave the run (``dat.checkpoint.display_name``), None for a default name."""
    from dat.checkpoint import default_run_name, display_name

    name = display_name(meta)
    return None if name == default_run_name(meta) else name


def _label_runs(rows: list[dict]) -> None:
    """Rows that share (device, dataset, model, method) but not their run: the names the user gave
    the runs where they tell the rows apart, else what differs in their settings."""
    by_cell = defaultdict(list)
    for r in rows:
        by_cell[(r["device"], r["dataset"], r["model"], r["method"])].append(r)
    for cell in by_cell.values():
        if len(cell) < 2:
            continue
        names = [r.get("_name") for r in cell]
        if all(names) and len(set(names)) == len(cell):
            for r in cell:
                r["run"] = r["_name"]
            continue
        keys = sorted({k for r in cell for k in r["_fields"]})
        differing = [k for k in keys if len({json.dumps(r["_fields"].get(k), default=str) for r in cell}) > 1]
        for r in cell:
            parts = [f"{k}={r['_fields'].get(k)}" for k in differing]
            if len({(x["trained_on"], x["trained_on_hash"]) for x in cell}) > 1 and \
                    len({x["trained_on"] for x in cell}) == 1:
                parts.append(f"device hash {r['trained_on_hash'][:8]}")
            if len({x["device_hash"] for x in cell}) > 1:
                parts.append(f"eval profile {r['device_hash'][:8]}")
            if len({x["draws"] for x in cell}) > 1 or len({x["eval_seed"] for x in cell}) > 1:
                parts.append(f"R={r['draws']}, eval seed {r['eval_seed']}")
            r["run"] = ", ".join(parts)


def _pair_with_baseline(rows: list[dict]) -> None:
    """Each non-baseline row gets its paired difference to the one SGD-BN row with the same
    evaluation (device, profile, draws, eval seed), dataset, model and shared settings."""
    def where(r):
        return (r["device"], r["device_hash"], r["dataset"], r["model"], r["draws"], r["eval_seed"], r["_comparison"])
    baselines = defaultdict(list)
    for r in rows:
        if r["method"] == BASELINE:
            baselines[where(r)].append(r)
    for r in rows:
        r["paired"] = None
        if r["method"] == BASELINE:
            continue
        partners = baselines.get(where(r), [])
        if len(partners) == 1:
            q = PAIRED_QUANTITY
            r["paired"] = paired_difference({s: v[q] for s, v in r["per_seed"].items()},
                                            {s: v[q] for s, v in partners[0]["per_seed"].items()})


# -- output ------------------------------------------------------------------------------------
def _pm(row: dict, q: str, digits: int = 1) -> str:
    mean, low = row[f"{q}_mean"], row[f"{q}_ci95_low"]
    if low is None:
        return f"{mean:.{digits}f}"
    return f"{mean:.{digits}f} ± {row[f'{q}_ci95_high'] - mean:.{digits}f}"


def _draws_note(rows: list[dict]) -> str:
    draws = sorted({r["draws"] for r in rows})
    seeds = sorted({str(r["eval_seed"]) for r in rows})
    return (f"Noisy: each model's mean accuracy over R = {'/'.join(map(str, draws))} noise draws (simulated chips; "
            f"eval seed {'/'.join(seeds)}, the same chips for every model); p1, p5: its 1st and 5th percentiles "
            f"over the draws (the worst chips). Accuracy in %.{stress_note(rows)}")


def stress_note(rows: list[dict]) -> str:
    """" Devices at stress S ..." when any row's devices were stressed (the named knob), else ""."""
    stresses = sorted({float(r["_fields"].get("stress", 1.0)) for r in rows if "_fields" in r})
    if stresses in ([], [1.0]):
        return ""
    return (f" Devices at stress {'/'.join(f'{s:g}' for s in stresses)} (every device std multiplied by it: an "
            f"experiment knob, not the physical device; 1 = the device as it is).")


def _strength(r: dict) -> str:
    """"s (alpha a)": the strength and the mean alpha it resolved to over the row's seeds; a raw
    alpha alone when no strength was set; "-" for methods without a DAT perturbation."""
    if r.get("alpha_mean") is None:
        return "-"
    return f"{r['strength']:g} (alpha {r['alpha_mean']:.3g})" if r.get("strength") else f"alpha {r['alpha_mean']:.3g}"


def to_markdown(rows: list[dict]) -> str:
    """Table I (with n and a note on what ± is over) and the paired differences to SGD-BN."""
    if not rows:
        return "No checkpoints to tabulate.\n"
    lines = [f"Table I. Mean over seeds; {INTERVAL_NOTE}. {_draws_note(rows)}", "",
             "| Device | Trained on | Dataset | Model | Method | Run | n (seeds) | Train acc. (wo / w noise) "
             "| Test acc. (wo / w noise) | Test noisy p1 | Test noisy p5 | Train time (min) | DAT strength (alpha) |",
             "|---|---|---|---|---|---|---:|---|---|---|---|---:|---|"]
    for r in rows:
        lines.append(f"| {r['device']} | {r['trained_on'] or '-'} | {r['dataset']} | "
                     f"{MODEL_LABEL.get(r['model'], r['model'])} | {METHOD_LABEL.get(r['method'], r['method'])} | "
                     f"{r['run'] or '-'} | {r['n_seeds']} | {_pm(r, 'train_clean')} / {_pm(r, 'train_noisy')} | "
                     f"{_pm(r, 'test_clean')} / {_pm(r, 'test_noisy')} | {_pm(r, 'test_noisy_p1')} | "
                     f"{_pm(r, 'test_noisy_p5')} | "
                     f"{_pm(r, 'train_time_min', 3)} | {_strength(r)} |")
    paired = [r for r in rows if r.get("paired")]
    if paired:
        lines += ["", f"Paired difference to {METHOD_LABEL[BASELINE]} in test accuracy under noise (points), over the "
                  "seeds both rows share: mean [95 % t-interval over the n pairs], p from the paired t-test.", "",
                  "| Device | Dataset | Model | Method | Run | n (pairs) | Difference [95 % CI] | p |",
                  "|---|---|---|---|---|---:|---|---:|"]
        for r in paired:
            d = r["paired"]
            ci = f" [{d['ci_low']:+.1f}, {d['ci_high']:+.1f}]" if d["ci_low"] is not None else ""
            p = "-" if d["p"] is None else (f"{d['p']:.2g}" if d["p"] >= 1e-4 else "<1e-4")
            lines.append(f"| {r['device']} | {r['dataset']} | {MODEL_LABEL.get(r['model'], r['model'])} | "
                         f"{METHOD_LABEL.get(r['method'], r['method'])} | {r['run'] or '-'} | {d['n']} | "
                         f"{d['mean']:+.1f}{ci} | {p} |")
    return "\n".join(lines) + "\n"


CSV_FIELDS = (["device", "device_hash", "trained_on", "trained_on_hash", "dataset", "model", "method", "run",
               "strength", "alpha_mean", "n_seeds", "seeds", "n_checkpoints", "interval", "draws", "eval_seed", "noisy_over"]
              + [f"{q}_{s}" for q in QUANTITIES for s in ("mean", "sd", "ci95_low", "ci95_high")]
              + [f"diff_vs_sgd_bn_{PAIRED_QUANTITY}_{s}" for s in ("n", "mean", "ci95_low", "ci95_high", "p")])


def to_csv(rows: list[dict]) -> str:
    """One line per row; ``interval`` and ``noisy_over`` say what the intervals and the noisy means are over."""
    buf = io.StringIO()
    writer = csv.DictWriter(buf, fieldnames=CSV_FIELDS, extrasaction="ignore")
    writer.writeheader()
    for r in rows:
        line = {**r, "seeds": " ".join(map(str, r["seeds"])),
                "interval": "95% t-interval of the mean over the n_seeds seeds (blank for one seed)",
                "noisy_over": f"mean over {r['draws']} noise draws per model (eval seed {r['eval_seed']})"}
        d = r.get("paired")
        if d:
            prefix = f"diff_vs_sgd_bn_{PAIRED_QUANTITY}_"
            line.update({prefix + "n": d["n"], prefix + "mean": d["mean"], prefix + "ci95_low": d["ci_low"],
                         prefix + "ci95_high": d["ci_high"], prefix + "p": d["p"]})
        writer.writerow({k: ("" if v is None else v) for k, v in line.items() if k in CSV_FIELDS})
    return buf.getvalue()


def _write_text(path: str, text: str) -> None:
    def write(tmp):
        with open(tmp, "w", encoding="utf-8") as f:
            f.write(text)
    atomic_write(path, write)


def write_table(rows: list[dict], markdown: str | None = None, csv_path: str | None = None,
                header: str = "") -> None:
    for path, text in ((markdown, header + to_markdown(rows)), (csv_path, to_csv(rows))):
        if path:
            _write_text(path, text)


# -- Table I in the paper's layout -------------------------------------------------------------
LAYOUT_QUANTITIES = (("test_clean", "w/o noise"), ("test_noisy", "w/ noise"), ("test_noisy_p1", "p1"),
                     ("test_noisy_p5", "p5"))


def profile_name(spec: str) -> str:
    """A device as the table shows it: a preset's name, or a saved profile's file name without its
    folder and extension (never an absolute path)."""
    text = str(spec)
    if os.sep in text or "/" in text or text.endswith((".npz", ".json")):
        return os.path.splitext(os.path.basename(text.rstrip("/" + os.sep)))[0] or text
    return text


@dataclasses.dataclass
class LaidOutTable:
    """Table I as the paper lays it out: one row per method run, per evaluation device the test
    accuracy without and with noise and its worst chips (1st and 5th percentile over the draws; each
    mean ± 95 % t-interval half-width over the n seeds, and n),
    then training time, epochs and training device.

    ``columns`` are the short headers in order, ``cells`` the displayed strings (one list per row),
    ``values`` the numbers behind them ({column: {"mean", "half", "n"}}; half is None for one seed),
    ``devices`` the evaluation device labels, ``caption`` what ± is over and the noise draws."""
    columns: list[str]
    cells: list[list[str]]
    values: list[dict]
    devices: list[str]
    caption: str
    digits: int = 1


def _half(row: dict, q: str) -> float | None:
    high = row[f"{q}_ci95_high"]
    return None if high is None else high - row[f"{q}_mean"]


def _fmt(mean: float, half: float | None, digits: int) -> str:
    return f"{mean:.{digits}f}" if half is None else f"{mean:.{digits}f} ± {half:.{digits}f}"


def layout_table(rows: list[dict], digits: int = 1) -> LaidOutTable:
    """Lay :func:`table_rows` out as the paper's Table I (see :class:`LaidOutTable`). Rows of one
    run under several evaluation devices become one line; a run never evaluated under a device has
    empty cells there. Devices are shown by name; two profiles sharing a name are told apart by
    their content hash."""
    names = defaultdict(set)
    for r in rows:
        names[profile_name(r["device"])].add(r["device_hash"])
    device_label, devices = {}, []
    for r in rows:
        key = (r["device"], r["device_hash"])
        if key in device_label:
            continue
        name = profile_name(r["device"])
        label = name if len(names[name]) == 1 else f"{name} [{r['device_hash'][:8]}]"
        device_label[key] = label
        devices.append(label)
    devices.sort()
    several_models = len({(r["dataset"], r["model"]) for r in rows}) > 1
    any_run = any(r["run"] for r in rows)
    lines: dict[tuple, dict] = {}
    order = {m: i for i, m in enumerate(METHOD_ORDER)}
    for r in rows:
        key = (r["dataset"], r["model"], order.get(r["method"], 99), r["method"], r["trained_on"],
               r["trained_on_hash"], json.dumps(r["_fields"], sort_keys=True, default=str), r["draws"],
               r["eval_seed"])
        line = lines.setdefault(key, {"rows": {}, "first": r})
        line["rows"][device_label[(r["device"], r["device_hash"])]] = r
    columns = (["Model"] if several_models else []) + ["Method"] + (["Run"] if any_run else [])
    for dev in devices:
        columns += [f"{dev} {label}" for _, label in LAYOUT_QUANTITIES] + [f"{dev} n"]
    columns += ["Time (min)", "Epochs", "Trained on"]
    # Training time to as many decimals as its smallest mean needs (digits trains in seconds).
    least = min((r["train_time_min_mean"] for r in rows), default=1.0)
    time_digits = max(digits, 1 if least >= 1 else 2 if least >= 0.1 else 3)
    cells, values = [], []
    for key in sorted(lines):
        line = lines[key]
        first = line["first"]
        # Training time over the most seeds any device's row holds (the rows share checkpoints).
        timed = max(line["rows"].values(), key=lambda r: r["n_seeds"])
        text, numbers = [], {}
        if several_models:
            text.append(f"{first['dataset']} {MODEL_LABEL.get(first['model'], first['model'])}")
        text.append(METHOD_LABEL.get(first["method"], first["method"]))
        if any_run:
            runs = {r["run"] for r in line["rows"].values() if r["run"]}
            text.append("; ".join(sorted(runs)) or "-")
        for dev in devices:
            r = line["rows"].get(dev)
            for q, label in LAYOUT_QUANTITIES:
                col = f"{dev} {label}"
                if r is None:
                    text.append("")
                    continue
                numbers[col] = {"mean": r[f"{q}_mean"], "half": _half(r, q), "n": r["n_seeds"]}
                text.append(_fmt(r[f"{q}_mean"], _half(r, q), digits))
            text.append("" if r is None else str(r["n_seeds"]))
            if r is not None:
                numbers[f"{dev} n"] = {"mean": r["n_seeds"], "half": None, "n": r["n_seeds"]}
        half = _half(timed, "train_time_min")
        numbers["Time (min)"] = {"mean": timed["train_time_min_mean"], "half": half, "n": timed["n_seeds"]}
        text.append(_fmt(timed["train_time_min_mean"], half, time_digits))
        epochs = first["_fields"].get("epochs")
        text.append("" if epochs is None else str(epochs))
        text.append(profile_name(first["trained_on"]) if first["trained_on"] else "-")
        cells.append(text)
        values.append(numbers)
    draws = sorted({r["draws"] for r in rows})
    seeds = sorted({str(r["eval_seed"]) for r in rows})
    caption = ("Test accuracy (%) without (w/o) and with (w/) noise under each evaluation device; mean over the n "
               "training seeds ± the half-width of the 95 % t-interval over those n seeds (no ± for n = 1). "
               f"With noise: each model's mean over R = {'/'.join(map(str, draws))} noise draws (simulated chips, "
               f"eval seed {'/'.join(seeds)}, the same chips for every model); p1, p5: the worst chips, the 1st and 5th "
               "percentiles of each model's accuracy over its draws, with the same statistics over seeds. "
               "Time: training time in minutes, "
               f"same statistics.{stress_note(rows)}") if rows else "No checkpoints to tabulate."
    return LaidOutTable(columns, cells, values, devices, caption, digits)


_LATEX_SPECIAL = {"\\": r"\textbackslash{}", "&": r"\&", "%": r"\%", "$": r"\$", "#": r"\#", "_": r"\_",
                  "{": r"\{", "}": r"\}", "~": r"\textasciitilde{}", "^": r"\textasciicircum{}"}


def latex_escape(text: str) -> str:
    """``text`` with LaTeX's special characters escaped (``±`` as ``$\\pm$``)."""
    out = "".join(_LATEX_SPECIAL.get(c, c) for c in str(text))
    return out.replace("±", r"$\pm$")


def to_latex(table: LaidOutTable, label: str = "tab:table1") -> str:
    """A booktabs ``table`` environment: the devices as column groups (w/o noise, w/ noise, the p1 and p5 worst chips, n),
    one row per method, the caption saying what ± is over and how many noise draws."""
    lead = [c for c in table.columns if not any(c.startswith(f"{d} ") for d in table.devices)]
    head, tail = lead[:len(lead) - 3], lead[-3:]
    per_dev = len(LAYOUT_QUANTITIES) + 1
    spec = "l" * len(head) + "r" * (per_dev * len(table.devices)) + "rrl"
    lines = [r"\begin{table}[t]", r"\centering", rf"\caption{{{latex_escape(table.caption)}}}",
             rf"\label{{{label}}}", rf"\begin{{tabular}}{{{spec}}}", r"\toprule"]
    if table.devices:
        groups, rules, col = [], [], len(head) + 1
        for dev in table.devices:
            groups.append(rf"\multicolumn{{{per_dev}}}{{c}}{{{latex_escape(dev)}}}")
            rules.append(rf"\cmidrule(lr){{{col}-{col + per_dev - 1}}}")
            col += per_dev
        lines.append(" & ".join([""] * len(head) + groups + [""] * len(tail)) + r" \\")
        lines.append(" ".join(rules))
    sub = [label for _, label in LAYOUT_QUANTITIES] + ["n"]
    lines.append(" & ".join([latex_escape(c) for c in head] + [latex_escape(s) for _ in table.devices for s in sub]
                            + [latex_escape(c) for c in tail]) + r" \\")
    lines.append(r"\midrule")
    for row in table.cells:
        lines.append(" & ".join(latex_escape(c) for c in row) + r" \\")
    lines += [r"\bottomrule", r"\end{tabular}", r"\end{table}"]
    return "\n".join(lines) + "\n"


def layout_to_csv(table: LaidOutTable) -> str:
    """The laid-out table as CSV: the short headers in order, then the displayed cells."""
    buf = io.StringIO()
    writer = csv.writer(buf)
    writer.writerow(table.columns)
    writer.writerows(table.cells)
    return buf.getvalue()


def layout_to_markdown(table: LaidOutTable) -> str:
    """The laid-out table as a Markdown table under its caption."""
    def cell(text):
        return str(text).replace("|", r"\|") or " "
    align = ["---:" if c.endswith((" n", "noise", " p1", " p5", "(min)")) or c == "Epochs" else "---"
             for c in table.columns]
    lines = [f"Table I. {table.caption}", "", "| " + " | ".join(cell(c) for c in table.columns) + " |",
             "|" + "|".join(align) + "|"]
    lines += ["| " + " | ".join(cell(c) for c in row) + " |" for row in table.cells]
    return "\n".join(lines) + "\n"


def write_layout(table: LaidOutTable, latex: str | None = None, csv_path: str | None = None,
                 markdown: str | None = None) -> None:
    """Write the laid-out table atomically as LaTeX, CSV and/or Markdown."""
    for path, text in ((latex, to_latex(table) if latex else ""), (csv_path, layout_to_csv(table) if csv_path else ""),
                       (markdown, layout_to_markdown(table) if markdown else "")):
        if path:
            _write_text(path, text)


def load_metas(paths: Iterable[str]) -> list[dict]:
    """Metadata of checkpoint files and of every checkpoint inside folders."""
    metas = []
    for path in paths:
        if os.path.isdir(path):
            metas.extend(list_checkpoints(path))
        else:
            metas.append({**read_meta(path), "path": str(path)})
    return metas


# -- reproduction ------------------------------------------------------------------------------
DEFAULT_SEEDS = tuple(range(10))
DEFAULT_DRAWS = 100
DEFAULT_THREADS = 1


def reproduce(dataset: str = "digits", seeds: Iterable[int] = DEFAULT_SEEDS, devices=("device-A", "device-B"),
              folder: str = "runs/table1", methods=("sgd", "sgd-bn", "dat-fast", "dat-full"),
              callbacks: Iterable[Callable] = (), draws: int = DEFAULT_DRAWS, threads: int = DEFAULT_THREADS,
              eval_seed: int = 0, **overrides) -> dict:
    """Table I on ``dataset``: each method x seed (methods that train with noise also x device) is
    trained into ``folder`` and evaluated with ``draws`` noise draws; SGD rows are trained once per
    seed and evaluated under each device. Runs with ``torch.set_num_threads(threads)`` (restored
    afterwards), so the numbers are bit-identical whatever the machine's thread settings.
    Returns {"rows", "markdown", "csv", "wall_time_s", "threads", ...} and writes table1.md,
    table1.csv, table1.tex (the paper's layout, :func:`to_latex`) and table1.json into ``folder``."""
    import torch

    from dat.checkpoint import versions
    from dat.config import resolve
    from dat.train import train

    if dataset not in ("digits",) and "preset" not in overrides:
        raise UserError(f"reproduce: expected dataset 'digits' or an explicit preset=... (e.g. cifar10-cnn6), "
                        f"found {dataset!r}")
    if not isinstance(threads, int) or isinstance(threads, bool) or threads < 1:
        raise UserError(f"reproduce: threads expected a positive int, found {threads!r}")
    seeds = list(seeds)
    if not seeds or len(set(seeds)) != len(seeds):
        raise UserError(f"reproduce: seeds expected distinct integers, found {seeds}")
    preset = overrides.pop("preset", "digits")
    draws = overrides.pop("eval_draws", draws)
    t0 = time.perf_counter()
    previous = torch.get_num_threads()
    torch.set_num_threads(threads)
    try:
        metas: dict[str, list[dict]] = {str(d): [] for d in devices}
        for seed in seeds:
            for method in methods:
                trained_on = devices if method.startswith("dat") or method == "noise-injection" else devices[:1]
                for dev in trained_on:
                    tag = f"{method}-{os.path.splitext(os.path.basename(str(dev)))[0]}" if len(trained_on) > 1 else method
                    cfg = resolve(preset, method=method, device=str(dev), seed=seed, eval_draws=draws,
                                  eval_seed=eval_seed, out=os.path.join(folder, f"{tag}-s{seed}.safetensors"),
                                  **overrides)
                    result = train(cfg, callbacks=callbacks)
                    meta = {**result.meta, "path": result.checkpoint_path}
                    for d in (devices if len(trained_on) == 1 else [dev]):
                        metas[str(d)].append(meta)
        rows = []
        for d, group in metas.items():
            rows.extend(table_rows(group, device=d, draws=draws, eval_seed=eval_seed))
    finally:
        torch.set_num_threads(previous)
    wall = time.perf_counter() - t0
    header = (f"`dat table --reproduce {dataset}`: {len(seeds)} seeds ({', '.join(map(str, seeds))}), {draws} noise "
              f"draws per model, eval seed {eval_seed}, torch threads {threads}, torch {torch.__version__}; "
              f"wall time {wall:.0f} s.\n\n")
    md, csv_text = header + to_markdown(rows), to_csv(rows)
    os.makedirs(folder, exist_ok=True)
    _write_text(os.path.join(folder, "table1.md"), md)
    _write_text(os.path.join(folder, "table1.csv"), csv_text)
    _write_text(os.path.join(folder, "table1.tex"), to_latex(layout_table(rows)))
    settings = {"dataset": dataset, "preset": preset, "seeds": seeds, "devices": [str(d) for d in devices],
                "methods": list(methods), "draws": draws, "eval_seed": eval_seed, "threads": threads,
                "overrides": overrides, "versions": versions(), "wall_time_s": wall}
    _write_text(os.path.join(folder, "table1.json"), json.dumps(
        {"settings": settings, "rows": [{k: v for k, v in r.items() if not k.startswith("_")} for r in rows]},
        indent=1, default=str))
    return {"rows": rows, "markdown": md, "csv": csv_text, "wall_time_s": wall, "threads": threads,
            "settings": settings}
