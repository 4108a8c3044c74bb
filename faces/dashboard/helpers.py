"""The dashboard's glue that is not UI: device choices, uploads, background training and landscape
jobs, table rows.

Pages stay thin by calling these; each function is plain Python and tested without Streamlit.
"""

from __future__ import annotations

import io
import mimetypes
from dataclasses import replace
from pathlib import Path

from dat.trio import LABEL_OF, ROLES, TITLE_OF
from faces.dashboard import jobs
from faces.dashboard.workspace import Workspace

MEASUREMENT_SUFFIXES = (".npz", ".csv")
# Measurement files are small (a few hundred repeats of a 64 x 64 tile is about 10 MB as float64).
# One number for the library and the upload widget (Streamlit's MB are 2**20 bytes).
MAX_MEASUREMENT_MB = 50
MAX_MEASUREMENT_BYTES = MAX_MEASUREMENT_MB * 2**20


# -- devices ------------------------------------------------------------------------------------
def device_choices(ws: Workspace) -> dict[str, str]:
    """Every device the user can pick: {label: spec}, spec being a preset name or a profile path
    (the form ``TrainConfig.device`` and ``dat.train.resolve_device`` accept). Listed afresh at each
    call, so a profile saved on one page is a choice on every page at once. Each device once: a saved
    profile named like a preset that holds exactly that preset (the demo's ``profiles/device-A.npz``)
    is the preset, listed under the preset's name only; every other saved profile is "NAME (saved)"."""
    from dat.noise.crossbar import PRESETS

    choices = {name: name for name in PRESETS}
    for row in ws.list_profiles():
        if row["name"] in PRESETS and _holds_preset(row["path"], row["name"]):
            continue
        choices[f"{row['name']} (saved)"] = row["path"]
    return choices


def _holds_preset(path: str, name: str) -> bool:
    """Whether the saved profile at ``path`` is exactly the preset ``name``: a crossbar profile whose
    parameters are the preset's and that holds no arrays. Read from the file's header without torch (the
    forms that list devices draw before torch has loaded); an unreadable file is not the preset: it stays
    a choice, so that picking it shows why it cannot be read."""
    from dat.errors import UserError
    from dat.noise.crossbar import PRESETS
    from dat.noise.fileformat import read

    try:
        meta, arrays = read(path)
    except (UserError, OSError, ValueError):
        return False
    return meta.get("kind") == "crossbar" and not arrays and meta.get("parameters") == PRESETS[name].to_dict()


def _device_specs(ws: Workspace) -> set[str]:
    """Every spec a saved job may name: the choices, and every saved profile's path (also those
    listed under a preset's name)."""
    return set(device_choices(ws).values()) | {row["path"] for row in ws.list_profiles()}


# Each CrossbarParams field in words, with its unit, for forms.
PARAMETER_LABELS = {
    "name": "name",
    "kernel": "spatial kernel (shape of the correlation against cell distance)",
    "ell": "spatial correlation length (cells)",
    "sigma_spatial": "spatially correlated variation, std (fraction of g_max)",
    "sigma_row": "noise shared along a word line (row), std (fraction of g_max)",
    "sigma_col": "noise shared along a bit line (column), std (fraction of g_max)",
    "sigma_tile": "noise shared by the whole tile, std (fraction of g_max)",
    "prog_noise": "programming noise (multiple of the Wan et al. 2022 ReRAM std; 1 = as measured)",
    "relax_per_decade": "mean drift per decade of time since programming (fraction of g_max; negative = decay)",
    "grad_row": "mean gradient, first to last word line (fraction of g_max)",
    "grad_col": "mean gradient, first to last bit line (fraction of g_max)",
    "t_seconds": "time since programming (s)",
    "scale": "overall noise multiplier on every std (dimensionless)",
}

# Times since programming offered as presets on the Device profiles page (seconds).
TIME_PRESETS = {"1 s": 1.0, "1 hour": 3600.0, "1 day": 86400.0, "1 week": 604800.0}
OTHER_TIME = "other (seconds, below)"


def time_choice(t_seconds: float) -> str:
    """The preset label of a time since programming, or :data:`OTHER_TIME` when it is none of them."""
    return next((label for label, t in TIME_PRESETS.items() if t == float(t_seconds)), OTHER_TIME)


def time_since_programming(choice: str, other: float) -> float:
    """Seconds since programming from a preset label, or ``other`` when the choice is :data:`OTHER_TIME`."""
    from dat.errors import expected

    if choice in TIME_PRESETS:
        return TIME_PRESETS[choice]
    if choice != OTHER_TIME:
        raise expected("time since programming", f"one of {list(TIME_PRESETS) + [OTHER_TIME]}", repr(choice))
    if isinstance(other, bool) or not isinstance(other, (int, float)) or not other >= 1.0:
        raise expected("time since programming", "a number of seconds >= 1 (the fits start at 1 s)", repr(other))
    return float(other)


ESTIMATOR_NAMES = {"ledoitwolf": "Ledoit-Wolf shrinkage", "oas": "OAS (oracle approximating shrinkage)"}


def fit_summary(fitted) -> list[dict]:
    """A fitted tile's report as rows {"quantity", "value"} in words, for a small table: the estimator,
    the shrinkage intensity, the samples against the cells, Sigma's condition number (largest over
    smallest eigenvalue), the variance the top k eigenvectors capture, the mean per-cell std and mean."""
    import numpy as np
    import torch

    rep = fitted.report()
    rows, cols = rep["tile_shape"]
    m, n = rows * cols, rep["n_samples"]
    evals = torch.linalg.eigvalsh(torch.from_numpy(fitted.sigma_)).numpy()
    cond = float(evals.max() / evals.min()) if evals.min() > 0 else float("inf")
    samples = f"{n} repeated maps of a {rows} x {cols} tile ({m} cells)"
    if n < m:
        samples += "; fewer maps than cells, so the shrinkage carries much of the fit"
    return [
        {"quantity": "estimator", "value": ESTIMATOR_NAMES.get(rep["estimator"], rep["estimator"])},
        {"quantity": "shrinkage intensity",
         "value": f"{rep['shrinkage']:.3f} (0: the sample covariance, 1: a scaled identity)"},
        {"quantity": "samples", "value": samples},
        {"quantity": "condition number of Sigma", "value": f"{cond:.3g} (largest / smallest eigenvalue)"},
        {"quantity": "variance captured", "value": f"{100 * rep['captured_variance']:.1f} % by the top k = {rep['k']} "
                                                   "eigenvectors"},
        {"quantity": "mean per-cell std", "value": f"{rep['mean_std']:.4f} (fraction of g_max)"},
        {"quantity": "mean", "value": f"{float(np.mean(fitted.mu_)):.4f} (fraction of g_max, averaged over cells)"},
    ]


def fit_sentence(fitted) -> str:
    """One line saying what was fitted, for the confirmation after a fit."""
    rep = fitted.report()
    rows, cols = rep["tile_shape"]
    return (f"Fitted '{fitted.name}' from {rep['n_samples']} maps of a {rows} x {cols} tile "
            f"({ESTIMATOR_NAMES.get(rep['estimator'], rep['estimator'])}).")


def load_device(spec: str):
    """The device object behind a spec from :func:`device_choices`. A preset needs no file and no torch
    (the Device profiles page draws its forms before torch has loaded); a saved profile is read by
    ``dat.noise.io``."""
    from dat.noise.crossbar import PRESETS

    if spec in PRESETS:
        return PRESETS[spec]
    from dat.noise.io import resolve_device

    return resolve_device(spec)[0]


def fit_measurements(filename: str, data: bytes, *, estimator: str = "ledoitwolf", k: int = 10,
                     name: str | None = None):
    """Fit a ``FittedTile`` from uploaded repeated programming maps (.npz or .csv bytes).

    The bytes are read in memory by ``dat.noise.fitted.load_maps`` (no pickle, no temporary file), so
    every message names the uploaded file as the user knows it.
    """
    from dat.errors import UserError, expected
    from dat.noise.fitted import FittedTile, load_maps

    suffix = Path(str(filename)).suffix.lower()
    if suffix not in MEASUREMENT_SUFFIXES:
        raise UserError(f"measurements must be a .npz or .csv file, found {filename!r}")
    if not data:
        raise expected(f"uploaded file {filename!r}", "measurements", "an empty file")
    if len(data) > MAX_MEASUREMENT_BYTES:
        raise UserError(f"uploaded file {filename!r} is {len(data) / 2**20:.1f} MB; the limit is "
                        f"{MAX_MEASUREMENT_MB} MB")
    maps = load_maps(io.BytesIO(data), name=str(filename))
    return FittedTile(estimator=estimator, k=k, name=name or Path(filename).stem).fit(maps)


# -- background training ------------------------------------------------------------------------
def _trio_reporter(report):
    """Turn per-run events of a trio into one overall progress (each run a third of the job)."""
    def cb(event: str, payload: dict) -> None:
        run = payload.get("run")
        if run in ROLES:
            i = ROLES.index(run)
            total, step = payload.get("total_steps"), payload.get("step", 0)
            frac = step / total if isinstance(total, (int, float)) and total else (1.0 if event == "end" else 0.0)
            payload = {**payload, "progress": (i + frac) / len(ROLES),
                       "stage": f"{TITLE_OF[run]} ({i + 1}/{len(ROLES)})"}
        report(event, payload)
    return cb


def _saved_config(ws: Workspace, data: dict, paths: list[str]):
    """The TrainConfig of a job read back from the workspace's jobs file. The file is data: its
    output paths must lie in ``checkpoints/``, its devices must be choices the form offers, and the
    data settings are this server's own, never the file's."""
    import dataclasses
    from dat.config import TrainConfig
    from dat.errors import UserError

    names = {f.name for f in dataclasses.fields(TrainConfig)}
    if not isinstance(data, dict) or set(data) - names:
        raise UserError(f"saved job: expected a training config, found "
                        f"{sorted(set(data) - names) if isinstance(data, dict) else type(data).__name__}")
    home = ws.checkpoints_dir.resolve()
    for path in paths:
        if not isinstance(path, str) or not Path(path).resolve().is_relative_to(home):
            raise UserError(f"saved job: expected an output inside {home}, found {path!r}")
    allowed = _device_specs(ws)
    for key in ("device", "eval_device"):
        if data.get(key) is not None and data[key] not in allowed:
            raise UserError(f"saved job: expected a {key} among {sorted(allowed)}, found {data[key]!r}")
    defaults = TrainConfig()
    own = {**{k: getattr(defaults, k) for k in ("download", "verify")},
           "data_root": str(workspace_data_root(ws))}  # where the Train page's new jobs read data too
    return TrainConfig(**{**data, **own}).validate()


def _training_work(ws: Workspace, spec: dict, config=None, resuming: bool = False):
    """The work of a training job from its spec ({"kind": "train" | "trio" | "demo", ...}).
    ``config``: the validated config of a new job (None: a saved job's, read from ``spec``).
    ``resuming``: continue each model from its resume state and keep the models already finished."""
    from dat.errors import UserError
    from dat.train import completed, make_demo, train, train_trio

    kind = spec.get("kind") if isinstance(spec, dict) else None
    if kind == "train":
        if config is None:
            config = _saved_config(ws, spec.get("config"), [(spec.get("config") or {}).get("out")])
        config = replace(config, resume=True) if resuming else config

        def work(report, should_stop):
            result = (completed(config.checkpoint_path) if resuming else None) or train(
                config, callbacks=[report], should_stop=should_stop)
            return {"checkpoints": [result.checkpoint_path] if result.checkpoint_path else [],
                    "metrics": result.metrics if result.checkpoint_path else {}}
    elif kind == "trio":
        devices = [spec.get("device_a"), spec.get("device_b")]
        if config is None:
            config = _saved_config(ws, spec.get("config"), [spec.get("folder")])
            if not set(devices) <= _device_specs(ws):
                raise UserError(f"saved job: expected trio devices among the choices, found {devices}")
        config = replace(config, resume=True) if resuming else config

        def work(report, should_stop):
            results = train_trio(config, *devices, folder=spec["folder"], callbacks=[_trio_reporter(report)],
                                 should_stop=should_stop, keep_finished=resuming)
            return {"folder": spec["folder"],
                    "checkpoints": [r.checkpoint_path for r in results.values() if r.checkpoint_path]}
    elif kind == "demo":
        overrides = dict(spec.get("overrides") or {})
        if not all(isinstance(v, (int, float)) and not isinstance(v, bool)
                   for v in overrides.values()):  # numbers only: a saved job names no paths
            raise UserError(f"saved job: expected numeric demo settings, found {overrides}")

        def work(report, should_stop):
            results = make_demo(folder=str(ws.checkpoints_dir), profiles_folder=str(ws.profiles_dir),
                                callbacks=[_trio_reporter(report)], should_stop=should_stop,
                                keep_finished=resuming, **overrides)
            return {"checkpoints": [r.checkpoint_path for r in results.values() if r.checkpoint_path]}
    else:
        raise UserError(f"saved job: expected a kind among ('train', 'trio', 'demo'), found {kind!r}")
    return work


def submit_training(ws: Workspace, config) -> jobs.Job:
    """Train one model in the background into a fresh ``checkpoints/`` file of its own, named after
    the run (``config.name``, else its readable default; the file name is a slug of it)."""
    from dat.checkpoint import default_run_name, name_slug

    config = config.validate()
    name = config.name or default_run_name(config.to_dict())
    out = jobs.reserve_path(ws.checkpoints_dir, name_slug(name), ".safetensors")
    config = replace(config, out=str(out), resume=False)
    spec = {"kind": "train", "config": config.to_dict()}
    return jobs.submit(_training_work(ws, spec, config), label=f"train {name}",
                       outputs=[str(out)], spec=spec, store=ws.jobs_file)


def submit_trio(ws: Workspace, config, device_a: str = "device-A", device_b: str = "device-B") -> jobs.Job:
    """Train SGD, DAT on device A and DAT on device B (one architecture) into a new folder named
    after the trio (``config.name``, else its readable default; the folder name is a slug of it)."""
    from dat.checkpoint import default_trio_name, name_slug

    config = config.validate()
    name = config.name or default_trio_name(config.to_dict())
    folder = jobs.reserve_dir(ws.checkpoints_dir, name_slug(name, "trio"))
    spec = {"kind": "trio", "config": config.to_dict(), "device_a": device_a, "device_b": device_b,
            "folder": str(folder)}
    return jobs.submit(_training_work(ws, spec, config), label=f"trio: {name}",
                       outputs=[str(folder)], spec=spec, store=ws.jobs_file)


DEMO_LABEL = "demo checkpoints"


def submit_demo(ws: Workspace, **overrides) -> jobs.Job:
    """``dat demo`` in the background: saved device-A / device-B profiles and the demo trio."""
    if any(j.label == DEMO_LABEL for j in jobs.registry().active()):
        raise ValueError("the demo checkpoints are already being made; wait for that job to finish")
    spec = {"kind": "demo", "overrides": overrides}
    outputs = [str(ws.checkpoints_dir / f"{role}.safetensors") for role in ROLES]
    return jobs.submit(_training_work(ws, spec), label=DEMO_LABEL, outputs=outputs, spec=spec, store=ws.jobs_file)


def resume_job(ws: Workspace, job_id: str) -> jobs.Job:
    """Start an interrupted (or cancelled) job of this workspace again: each model of a training job
    continues from its resume state (``<checkpoint>.resume.pt``), models already finished are kept;
    a landscape job computes only the grid chunks its cache does not hold yet."""
    from dat.errors import UserError

    job = next((j for j in ws.list_jobs() if j.id == job_id), None)
    if job is None or job.spec is None:
        raise UserError(f"job {job_id}: expected a job of this workspace with a saved description, found "
                        f"{'none' if job is None else 'a job without one'}")
    if job.spec.get("kind") == LANDSCAPE_KIND:  # computes what its chunk store does not hold yet
        return jobs.registry().resume(job_id, _landscape_work(ws, landscape_specs_of(ws, job.spec),
                                                              predict=job.spec.get("page") == COMPARE_PAGE))
    return jobs.registry().resume(job_id, _training_work(ws, job.spec, resuming=True))


def job_curves(job: jobs.Job) -> dict[str, list[dict]]:
    """A job's history split into per-step losses and per-epoch metrics, with a running index so
    that the three runs of a trio follow each other on one axis."""
    steps, epochs = [], []
    for i, h in enumerate(list(job.history)):
        row = {**h, "index": i, "run": h.get("run", "")}
        (steps if h.get("event") == "step" else epochs).append(row)
    return {"steps": steps, "epochs": epochs}


# -- tables -------------------------------------------------------------------------------------
def checkpoint_rows(checkpoints: list[dict]) -> list[dict]:
    """One flat row per checkpoint for the Models table (its name, trio and file, metadata and
    headline metrics)."""
    from dat.checkpoint import display_name, trio_name

    rows = []
    for meta in checkpoints:
        metrics = meta.get("metrics") or {}
        test = metrics.get("test") or {}
        clean, noisy = test.get("clean") or {}, test.get("noisy") or {}
        device = meta.get("device") or {}
        dataset = meta.get("dataset") or {}
        rows.append({
            "name": display_name(meta),
            "trio": trio_name(meta) or "",
            "file": meta.get("name", Path(meta.get("path", "")).name),
            "method": meta.get("method", ""),
            "arch": meta.get("arch", ""),
            "batchnorm": meta.get("batchnorm", ""),
            "dataset": dataset.get("dataset", "") if isinstance(dataset, dict) else str(dataset),
            "device": device.get("name", "") if isinstance(device, dict) else str(device),
            "alpha": meta.get("alpha", ""),
            "k": meta.get("k", ""),
            "seed": meta.get("seed", ""),
            "test acc (clean)": clean.get("acc", ""),
            "test acc (noisy)": noisy.get("acc_mean", noisy.get("acc", "")),
            **_worst_chips(noisy.get("acc_per_draw"), "test acc (noisy {})", scale=1.0, digits=None),
            "train time (s)": meta.get("train_time_s", ""),
        })
    return rows


def training_figure(job: jobs.Job):
    """Live curves of a job: loss per step (left axis) and test accuracy per epoch (right axis),
    one colour per model of a trio."""
    import plotly.graph_objects as go
    from plotly.subplots import make_subplots

    curves = job_curves(job)
    fig = make_subplots(rows=1, cols=2, subplot_titles=("training loss per step", "accuracy per epoch"))
    palette = {"": "#1f77b4", "sgd": "#7f7f7f", "dat-a": "#1f77b4", "dat-b": "#d62728"}
    for run in dict.fromkeys(r["run"] for r in curves["steps"] + curves["epochs"]):
        name = TITLE_OF.get(run, "model")
        steps = [r for r in curves["steps"] if r["run"] == run]
        epochs = [r for r in curves["epochs"] if r["run"] == run]
        colour = palette.get(run, "#2ca02c")
        fig.add_trace(go.Scatter(x=[r["index"] for r in steps], y=[r.get("loss") for r in steps],
                                 mode="lines", name=f"{name}: loss", line=dict(color=colour)), row=1, col=1)
        for key, dash in (("train_acc", "dot"), ("test_acc", "solid")):
            fig.add_trace(go.Scatter(x=[r["epoch"] for r in epochs], y=[r.get(key) for r in epochs],
                                     mode="lines+markers", name=f"{name}: {key.replace('_', ' ')}",
                                     line=dict(color=colour, dash=dash)), row=1, col=2)
    fig.update_xaxes(title="step (runs one after another)", row=1, col=1)
    fig.update_xaxes(title="epoch", row=1, col=2)
    fig.update_yaxes(range=[0, 1.02], row=1, col=2)
    fig.update_layout(height=340, margin=dict(l=10, r=10, t=40, b=10))
    return fig


def workspace_data_root(ws: Workspace) -> Path:
    """The dashboard's data folder (CIFAR): the workspace's ``data/``. Data folders come from the
    user's own configuration, never from a checkpoint's metadata."""
    return ws.root / "data"


def missing_data_message(dataset: str, root) -> str | None:
    """None when ``dataset``'s files are in the data folder ``root`` (digits is embedded: always None);
    otherwise one sentence naming the folder, the missing files and how to get them, for the Train
    page to say before a job is submitted that would fail on them."""
    import os

    from dat.config import DATASETS
    from dat.errors import expected

    if dataset not in DATASETS:
        raise expected("dataset", f"one of {DATASETS}", repr(dataset))
    if dataset == "digits":
        return None
    from torchvision.datasets import CIFAR10, CIFAR100

    cls = CIFAR10 if dataset == "cifar10" else CIFAR100
    folder = Path(root) / cls.base_folder
    needed = [n for n, _ in cls.train_list + cls.test_list] + [cls.meta["filename"]]
    missing = [n for n in needed if not os.path.isfile(folder / n)]
    if not missing:
        return None
    return (f"{dataset} is not in the data folder: expected {', '.join(missing)} in {folder}. Unpack the "
            f"python-version archive from https://www.cs.toronto.edu/~kriz/cifar.html into {Path(root)} "
            f"(it holds {cls.base_folder}/), or let the command line fetch it (`dat train --dataset {dataset} --download --data-root "
            f"{Path(root)}` downloads it before training); a job submitted now fails.")


def evaluate_checkpoint(path: str, device_spec: str | None = None, *, draws: int | None = None, seed: int = 0,
                        data_root=None) -> dict:
    """Clean and noisy accuracy and loss of a checkpoint on its own dataset's train and test splits,
    under ``device_spec`` (from :func:`device_choices`; None: clean only), by the one evaluation
    rule of ``dat.evaluate`` (``seed`` is the eval seed; ``draws`` None: the checkpoint's own), so
    the numbers equal ``dat eval``'s and Table I's. ``data_root``: the workspace's data folder."""
    from dat.checkpoint import load_checkpoint
    from dat.data import dataset_named_by, load_dataset_named_by
    from dat.eval_rule import recipe_for
    from dat.evaluate import evaluate_checkpoint as evaluate_by_rule, evaluate_splits

    if device_spec:
        return evaluate_by_rule(path, device_spec, data_root=data_root, draws=draws, eval_seed=seed)
    ckpt = load_checkpoint(path)
    config = ckpt.meta.get("config") or {}
    bundle = load_dataset_named_by(dataset_named_by(ckpt.meta, str(path)), data_root, source=f"checkpoint {path}",
                                   claimed_root=config.get("data_root"))
    recipe = recipe_for(config, draws=draws, eval_seed=seed)
    return evaluate_splits(ckpt.model, bundle, targets=ckpt.noise_targets(), batch_size=recipe["batch_size"])


def _worst_chips(per_draw, column: str, scale: float = 100.0, digits: int | None = 2) -> dict:
    """The worst chips of a noisy accuracy, its 1st and 5th percentile over the draws (``dat.chips``),
    as two columns named by ``column`` (a format with one ``{}``: p1, p5); blank without per-draw values."""
    from dat.chips import chip_summary

    if not per_draw:
        return {column.format("p1"): "", column.format("p5"): ""}
    chips = chip_summary(per_draw)
    return {column.format(q): scale * chips[q] if digits is None else round(scale * chips[q], digits)
            for q in ("p1", "p5")}


def evaluation_row(name: str, device: str | None, result: dict) -> dict:
    """One table row from :func:`evaluate_checkpoint`: accuracies in percent; noisy as mean ± standard
    deviation over the R draws (named in the row with the eval seed)."""
    row = {"model": name, "device": device or "(none)"}
    for split in ("train", "test"):
        part = result[split]
        row[f"{split} acc clean (%)"] = round(100 * part["clean"]["acc"], 2)
        noisy = part.get("noisy")
        row[f"{split} acc noisy (%)"] = (f"{100 * noisy['acc_mean']:.2f} ± {100 * noisy['acc_std']:.2f}"
                                         if noisy else "")
    noisy = result["test"].get("noisy")
    row.update(_worst_chips((noisy or {}).get("acc_per_draw"), "test noisy {} (%)"))
    row["± over"] = f"std over {noisy['draws']} draws" if noisy else ""
    row["eval seed"] = result.get("eval_seed", "") if noisy else ""
    return row


# -- landscapes ---------------------------------------------------------------------------------
def landscape_spec(kind: str, checkpoints: dict[str, str], devices: dict[str, str], **settings):
    """A ``landscape.spec.LandscapeSpec`` for checkpoints {label: path} under devices {label: spec},
    by the library's one recipe (``landscape.spec.spec_from_checkpoints``: dataset, targets, tile,
    units and stress as trained), with the workspace's data folder unless a caller names one. The
    spec travels into every exported bundle, from which ``landscape.export.reproduce`` redoes it.
    """
    from landscape.spec import spec_from_checkpoints

    root = settings.pop("data_root", None) or str(workspace_data_root(Workspace.default()))
    return spec_from_checkpoints(kind, checkpoints, devices, data_root=root, **settings)


def trio_spec(trio: dict[str, str], devices: dict[str, str], **settings):
    """The Fig. 1 spec of a trio {"sgd", "dat-a", "dat-b": path}; a trio with one file twice or with
    models that cannot share a plane is refused first (``dat.checkpoint.check_trio``, UserError)."""
    from dat.checkpoint import check_trio

    missing = [r for r in ROLES if r not in trio]
    if missing:
        raise ValueError(f"a trio needs checkpoints for {list(ROLES)}, missing {missing}")
    labelled = {LABEL_OF[r]: trio[r] for r in ROLES}
    check_trio(labelled)
    return landscape_spec("surface", labelled, devices, **settings)


def compute_landscape(ws: Workspace, spec, progress=None, inputs=None):
    """Run a spec through ``landscape.spec.run_spec`` with the workspace's on-disk cache, so the
    same inputs (checkpoint and profile hashes, grid, seeds) are computed once. ``inputs``: a
    ``landscape.spec.load_inputs`` result shared by specs of the same trio."""
    from landscape.spec import run_spec

    return run_spec(spec, progress=progress, cache=ws.cache_dir / "landscape", inputs=inputs)


def data_files(result, spec=None, comparison=None) -> dict[str, bytes]:
    """The numbers of a result, available at once without a browser: CSV, NPZ, reproduction JSON."""
    from landscape.export import bundle_files

    return bundle_files(result, figures={}, formats=("csv", "npz"), widths=(), spec=spec, comparison=comparison)


def figure_files(result, figures: dict, *, spec=None, comparison=None, width: str = "double",
                 formats=("png", "svg", "pdf"), dpi: int = 300) -> dict[str, bytes]:
    """The paper bundle for these figures, in memory for download buttons: images at the column
    width, numbers and reproduce.json."""
    from landscape.export import bundle_files

    return bundle_files(result, figures=figures, formats=tuple(formats), widths=(width,), dpi=dpi, spec=spec,
                        comparison=comparison)


def zip_files(files: dict[str, bytes]) -> bytes:
    """A zip archive of {name: bytes} in memory."""
    from landscape.export import zip_bytes

    return zip_bytes(files)


# The standard library's own table (not the system's mime.types, which varies between machines);
# Markdown (RFC 7763) joined that table only in Python 3.13.
_MIME_TYPES = mimetypes.MimeTypes()
_MIME_TYPES.add_type("text/markdown", ".md")


def mime_of(name: str) -> str:
    """The MIME type of a file name for a download button ("application/octet-stream" when unknown)."""
    return _MIME_TYPES.guess_type(name)[0] or "application/octet-stream"


def model_labels(checkpoints: list[dict]) -> dict[str, str]:
    """A label per checkpoint (``Workspace.list_checkpoints`` rows, by ``name``): its name
    (``dat.checkpoint.display_name``: the one it was trained under, else the readable default).
    Labels are unique: a name shared by several checkpoints is followed by the name of the trio
    each belongs to, and where that is not enough, by its file."""
    from collections import Counter

    from dat.checkpoint import display_name, trio_name

    out = {row["name"]: display_name(row) for row in checkpoints}
    counts = Counter(out.values())
    for row in checkpoints:
        trio = trio_name(row)
        if counts[out[row["name"]]] > 1 and trio:
            out[row["name"]] = f"{out[row['name']]} · {trio}"
    counts = Counter(out.values())
    return {n: f"{label} · {n}" if counts[label] > 1 else label for n, label in out.items()}


def trio_labels(trios: dict[str, dict[str, str]], rows: list[dict]) -> dict[str, str]:
    """A label per trio folder of ``Workspace.trios``: the trio's name (as trained, else the readable
    default from its models' settings), followed by its folder where two trios share a name."""
    from collections import Counter

    from dat.checkpoint import default_trio_name, trio_name

    by_path = {row["path"]: row for row in rows}
    out = {}
    for group, roles in trios.items():
        meta = by_path.get(roles.get("dat-a")) or by_path.get(roles.get("sgd")) or {}
        out[group] = trio_name(meta) or default_trio_name({**(meta.get("config") or {}), **{
            k: meta[k] for k in ("dataset", "arch", "model") if k in meta}})
    counts = Counter(out.values())
    return {g: f"{label} ({g or 'checkpoints/'})" if counts[label] > 1 else label for g, label in out.items()}


def trio_role_choices(rows: list[dict], trio: dict[str, str]) -> list[str]:
    """The checkpoints (``name`` of ``rows``) a role of ``trio`` {role: path} may take: those that can
    share a landscape plane with the trio's models (``dat.checkpoint.compatible``: architecture,
    dataset, noise targets), in the listing's order."""
    from dat.checkpoint import compatible

    by_path = {row["path"]: row for row in rows}
    members = [by_path[p] for p in trio.values() if p in by_path]
    return [row["name"] for row in rows if all(compatible(row, m) for m in members)]


def table_one(checkpoints: list[dict], device: str | None = None, *, data_root=None) -> dict:
    """Table I of the paper for checkpoint metadata (``Workspace.list_checkpoints`` rows):
    {"rows", "markdown", "csv"}. ``device`` (a spec from :func:`device_choices`) evaluates every
    model under that device; None keeps each model's own evaluation device. Re-evaluations read
    data from ``data_root`` (the workspace's, :func:`workspace_data_root`), never from a checkpoint's metadata."""
    from dat import table

    rows = table.table_rows(checkpoints, device=device, data_root=data_root)
    return {"rows": rows, "markdown": table.to_markdown(rows), "csv": table.to_csv(rows)}


# -- landscape jobs -----------------------------------------------------------------------------
LANDSCAPE_KIND = "landscape"
# What load_inputs reads: specs equal in these fields can share one load (a trio's surface and curves).
_INPUT_FIELDS = ("checkpoints", "devices", "dataset", "data_root", "split", "targets", "tile", "units", "stress")


def landscape_job_spec(page: str, specs: dict) -> dict:
    """The JSON description of a landscape job: the page that asked for it and its specs {name: spec},
    as the jobs file keeps it (so that a job of equal spec is found again, :func:`find_landscape_job`)."""
    import json

    return json.loads(json.dumps({"kind": LANDSCAPE_KIND, "page": page,
                                  "specs": {name: spec.to_dict() for name, spec in specs.items()}}))


def landscape_specs_of(ws: Workspace, spec: dict) -> dict:
    """The LandscapeSpecs of a landscape job read back from the jobs file. The file is data: its
    checkpoints must lie in ``checkpoints/``, its devices must be choices the pages offer, and the
    data folder is this server's own, never the file's."""
    from dat.errors import UserError
    from landscape.spec import LandscapeSpec

    saved = spec.get("specs") if isinstance(spec, dict) else None
    if not isinstance(saved, dict) or not saved:
        raise UserError(f"saved job: expected landscape specs {{name: spec}}, found {type(saved).__name__}")
    home, allowed, out = ws.checkpoints_dir.resolve(), _device_specs(ws), {}
    for name, data in saved.items():
        if not isinstance(data, dict):
            raise UserError(f"saved job: expected spec {name!r} as an object, found {type(data).__name__}")
        try:
            one = LandscapeSpec.from_dict({**data, "data_root": str(workspace_data_root(ws))})
        except (ValueError, TypeError) as exc:
            raise UserError(f"saved job: spec {name!r} is not a landscape spec: {exc}") from exc
        for path in one.checkpoints.values():
            if not isinstance(path, str) or not Path(path).resolve().is_relative_to(home):
                raise UserError(f"saved job: expected checkpoints inside {home}, found {path!r}")
        if not set(map(str, one.devices.values())) <= allowed:
            raise UserError(f"saved job: expected devices among {sorted(allowed)}, found {one.devices}")
        out[str(name)] = one
    return out


def _evaluations(spec) -> int:
    """Model evaluations of a spec (the count ``landscape.spec.check_size`` limits), to share a
    progress bar between the specs of one job in proportion to their work."""
    if spec.kind == "curves":
        num_a = len(spec.alphas) if spec.alphas is not None else int(spec.num_alphas)
        return len(spec.checkpoints) * len(spec.devices) * spec.draws * (num_a + 2)
    na, nb = spec.resolution
    return (na * nb + 3) * (1 + len(spec.devices) * spec.draws)


# The page whose job compares two devices: its job also predicts each loss increase from curvature.
COMPARE_PAGE = "compare"


def _landscape_work(ws: Workspace, specs: dict, predict: bool = False):
    """The work of a landscape job: each spec through :func:`compute_landscape` (the workspace's
    cache, so a stopped surface resumes from its completed chunks), one progress bar over all of
    them, stopping between two chunks on a cancel request. Returns ({name: what was computed} for
    the jobs file, {name: result} kept in memory). ``predict`` (a device comparison: specs "curves"
    and "surface"): also the curvature prediction next to the measured increases
    (``landscape.sharpness.predicted_vs_measured``, the recipe of ``dat landscape compare``, its
    Hessian products cached on disk) as "prediction", or its failure as "prediction_error" (the
    comparison itself stands)."""
    from landscape.spec import load_inputs

    def work(report, should_stop):
        weights = {name: _evaluations(s) for name, s in specs.items()}
        total, before, results, shared = sum(weights.values()), 0, {}, None
        for name, spec in specs.items():
            if should_stop():
                raise jobs.Stopped()
            lo, width = before / total, weights[name] / total
            unit = "grid points" if spec.kind != "curves" else "model-device pairs"

            def progress(done, count, lo=lo, width=width, name=name, unit=unit):
                report("progress", {"progress": lo + width * done / count, "stage": f"{name}: {done} of {count} {unit}"})
                if should_stop() and done < count:
                    raise jobs.Stopped()

            first = next(iter(results), None)
            if shared is None or any(getattr(spec, f) != getattr(specs[first], f) for f in _INPUT_FIELDS):
                shared = load_inputs(spec)
            report("progress", {"progress": lo, "stage": f"{name}: starting"})
            results[name] = compute_landscape(ws, spec, progress=progress, inputs=shared)
            before += weights[name]
        summary = {name: {"kind": r.kind, "cached": bool(r.meta.get("cache", {}).get("hit")),
                          "seconds": r.meta.get("seconds")} for name, r in results.items()}
        if predict:
            results.update(_prediction(ws, specs["surface"], results, shared, report, should_stop))
        return {"kind": LANDSCAPE_KIND, "results": summary}, results
    return work


def _prediction(ws: Workspace, spec, results: dict, inputs, report, should_stop) -> dict:
    """{"prediction": Prediction} of a comparison's curves and surface, or {"prediction_error": why}.
    The measured increases do not depend on the basin threshold, so the default one serves."""
    from landscape.sharpness import predicted_vs_measured
    from landscape.summary import compare_devices

    def progress(done, count):
        report("progress", {"progress": 1.0, "stage": f"curvature prediction: {done} of {count} model-device pairs"})
        if should_stop() and done < count:
            raise jobs.Stopped()

    try:
        comparison = compare_devices(results["curves"], results["surface"])
        return {"prediction": predicted_vs_measured(spec, comparison, inputs, cache=ws.cache_dir / "landscape",
                                                    progress=progress)}
    except (ValueError, TypeError, FileNotFoundError) as exc:
        return {"prediction_error": str(exc)}


def find_landscape_job(ws: Workspace, job_spec: dict) -> jobs.Job | None:
    """This server's job for exactly ``job_spec`` that is queued, running, or done with its result in
    memory (newest first); None when there is none, so the caller submits one."""
    for job in jobs.registry().jobs():
        if job.store not in (None, str(ws.jobs_file)):
            continue
        if job.spec == job_spec and (job.active or (job.state == jobs.DONE and job.output is not None)):
            return job
    return None


def submit_landscape(ws: Workspace, page: str, specs: dict, label: str) -> jobs.Job:
    """Compute ``specs`` {name: LandscapeSpec} in the background (the landscape lane, so it never
    waits for training), kept in the workspace's jobs file. A job for the same specs already queued,
    running or done is returned instead of a new one, so a page that is opened again (or a shared
    link) follows it rather than computing twice."""
    job_spec = landscape_job_spec(page, specs)
    found = find_landscape_job(ws, job_spec)
    if found is not None:
        return found
    from dat.errors import UserError

    work = _landscape_work(ws, dict(specs), predict=page == COMPARE_PAGE)
    try:
        return jobs.submit(work, label=label, spec=job_spec, store=ws.jobs_file, lane=jobs.LANDSCAPE_LANE)
    except UserError:  # a damaged jobs file (the home page says so): the job runs, kept in memory only
        return jobs.submit(work, label=label, spec=job_spec, lane=jobs.LANDSCAPE_LANE)
