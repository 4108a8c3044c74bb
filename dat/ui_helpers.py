"""The dashboard's glue that is not UI: device choices, uploads, background training, table rows.

Pages stay thin by calling these; each function is plain Python and tested without Streamlit.
"""

from __future__ import annotations

import os
import tempfile
from dataclasses import replace
from pathlib import Path

from dat import jobs
from dat.workspace import TRIO_ROLES, Workspace
TRIO_LABELS = {"sgd": "SGD", "dat-a": "DAT on device A", "dat-b": "DAT on device B"}
MEASUREMENT_SUFFIXES = (".npz", ".csv")
# Measurement files are small (a few hundred repeats of a 64 x 64 tile is about 10 MB as float64).
MAX_MEASUREMENT_BYTES = 50 * 1024 * 1024


# -- devices ------------------------------------------------------------------------------------
def device_choices(ws: Workspace) -> dict[str, str]:
    """Every device the user can pick: {label: spec}, spec being a preset name or a profile path
    (the form ``TrainConfig.device`` and ``dat.train.resolve_device`` accept)."""
    from dat.devices import PRESETS

    choices = {name: name for name in PRESETS}
    for row in ws.list_profiles():
        label = f"{row['name']} (saved)"
        choices[label] = row["path"]
    return choices


def load_device(spec: str):
    """The device object behind a spec from :func:`device_choices`."""
    from dat.profile_io import resolve_device

    return resolve_device(spec)[0]


def fit_measurements(filename: str, data: bytes, *, estimator: str = "ledoitwolf", k: int = 10,
                     name: str | None = None):
    """Fit a ``FittedTile`` from uploaded repeated programming maps (.npz or .csv bytes).

    The bytes go to a temporary file with the upload's suffix so that ``dat.measure.load_maps``
    reads them exactly as it reads a file on disk; .npz files are opened without pickle support.
    """
    from dat.measure import FittedTile, load_maps

    suffix = Path(str(filename)).suffix.lower()
    if suffix not in MEASUREMENT_SUFFIXES:
        raise ValueError(f"measurements must be a .npz or .csv file, found {filename!r}")
    if not data:
        raise ValueError(f"uploaded file {filename!r} is empty")
    if len(data) > MAX_MEASUREMENT_BYTES:
        raise ValueError(f"uploaded file {filename!r} is {len(data) / 1e6:.1f} MB; the limit is "
                         f"{MAX_MEASUREMENT_BYTES / 1e6:.0f} MB")
    fd, tmp = tempfile.mkstemp(suffix=suffix)
    try:
        with os.fdopen(fd, "wb") as fh:
            fh.write(data)
        try:
            maps = load_maps(tmp)
        except (ValueError, TypeError):
            raise
        except Exception as exc:  # a corrupt archive (zipfile, OSError): say which file and format
            raise ValueError(f"could not read {filename!r} as a {suffix} measurement file "
                             f"({type(exc).__name__}: {exc})") from exc
    finally:
        os.unlink(tmp)
    return FittedTile(estimator=estimator, k=k, name=name or Path(filename).stem).fit(maps)


# -- background training ------------------------------------------------------------------------
def _trio_reporter(report):
    """Turn per-run events of a trio into one overall progress (each run a third of the job)."""
    def cb(event: str, payload: dict) -> None:
        run = payload.get("run")
        if run in TRIO_ROLES:
            i = TRIO_ROLES.index(run)
            total, step = payload.get("total_steps"), payload.get("step", 0)
            frac = step / total if isinstance(total, (int, float)) and total else (1.0 if event == "end" else 0.0)
            payload = {**payload, "progress": (i + frac) / len(TRIO_ROLES),
                       "stage": f"{TRIO_LABELS[run]} ({i + 1}/{len(TRIO_ROLES)})"}
        report(event, payload)
    return cb


def submit_training(ws: Workspace, config) -> jobs.Job:
    """Train one model in the background into a fresh ``checkpoints/`` file of its own."""
    from dat.train import train

    config = config.validate()
    stem = f"{config.dataset}-{config.arch}-{config.method}"
    out = jobs.reserve_path(ws.checkpoints_dir, stem, ".safetensors")
    config = replace(config, out=str(out), resume=False)

    def work(report, should_stop):
        result = train(config, callbacks=[report], should_stop=should_stop)
        return {"checkpoints": [result.checkpoint_path] if result.checkpoint_path else [],
                "metrics": result.metrics if result.checkpoint_path else {}}

    return jobs.submit(work, label=f"train {config.method} on {config.dataset}", outputs=[str(out)])


def submit_trio(ws: Workspace, config, device_a: str = "device-A", device_b: str = "device-B") -> jobs.Job:
    """Train SGD, DAT on device A and DAT on device B (one architecture) into a new folder."""
    from dat.train import train_trio

    config = config.validate()
    folder = jobs.reserve_dir(ws.checkpoints_dir, f"trio-{config.dataset}-{config.arch}")

    def work(report, should_stop):
        results = train_trio(config, device_a, device_b, folder=str(folder),
                             callbacks=[_trio_reporter(report)], should_stop=should_stop)
        return {"folder": str(folder),
                "checkpoints": [r.checkpoint_path for r in results.values() if r.checkpoint_path]}

    return jobs.submit(work, label=f"trio on {config.dataset} ({config.arch})", outputs=[str(folder)])


DEMO_LABEL = "demo checkpoints"


def submit_demo(ws: Workspace, **overrides) -> jobs.Job:
    """``dat demo`` in the background: saved device-A / device-B profiles and the demo trio."""
    from dat.train import make_demo

    if any(j.label == DEMO_LABEL for j in jobs.registry().active()):
        raise ValueError("the demo checkpoints are already being made; wait for that job to finish")

    def work(report, should_stop):
        results = make_demo(folder=str(ws.checkpoints_dir), profiles_folder=str(ws.profiles_dir),
                            callbacks=[_trio_reporter(report)], should_stop=should_stop, **overrides)
        return {"checkpoints": [r.checkpoint_path for r in results.values() if r.checkpoint_path]}

    outputs = [str(ws.checkpoints_dir / f"{role}.safetensors") for role in TRIO_ROLES]
    return jobs.submit(work, label=DEMO_LABEL, outputs=outputs)


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
    """One flat row per checkpoint for the Models table (metadata and headline metrics)."""
    rows = []
    for meta in checkpoints:
        metrics = meta.get("metrics") or {}
        test = metrics.get("test") or {}
        clean, noisy = test.get("clean") or {}, test.get("noisy") or {}
        device = meta.get("device") or {}
        dataset = meta.get("dataset") or {}
        rows.append({
            "name": meta.get("name", Path(meta.get("path", "")).name),
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
        name = TRIO_LABELS.get(run, "model")
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


def evaluate_checkpoint(path: str, device_spec: str | None = None, *, draws: int = 20, seed: int = 0) -> dict:
    """Clean and noisy accuracy and loss of a checkpoint on its own dataset's train and test splits,
    under any device (``device_spec`` from :func:`device_choices`; None: clean only). The noise
    targets, tile and units are the ones the model was trained with (from its saved config)."""
    from dat.checkpoint import load_checkpoint
    from dat.data import load_dataset
    from dat.evaluate import evaluate_splits
    from dat.profile_io import make_profile

    ckpt = load_checkpoint(path)
    config = ckpt.meta.get("config") or {}
    dataset = ckpt.meta.get("dataset") or {}
    name = dataset.get("dataset") if isinstance(dataset, dict) else dataset
    if not name:
        raise ValueError(f"{path}: its metadata does not name a dataset; found keys {sorted(ckpt.meta)}")
    targets = ckpt.noise_targets()
    bundle = load_dataset(name, config.get("data_root") or "data")
    profile = make_profile(device_spec, targets, stress=config.get("stress", 1.0)) if device_spec else None
    return evaluate_splits(ckpt.model, bundle, profile=profile, targets=targets, draws=draws, seed=seed)


def evaluation_row(name: str, device: str | None, result: dict) -> dict:
    """One table row from :func:`evaluate_checkpoint`: accuracies in percent, noisy as mean +- std."""
    row = {"model": name, "device": device or "(none)"}
    for split in ("train", "test"):
        part = result[split]
        row[f"{split} acc clean (%)"] = round(100 * part["clean"]["acc"], 2)
        noisy = part.get("noisy")
        row[f"{split} acc noisy (%)"] = (f"{100 * noisy['acc_mean']:.2f} ± {100 * noisy['acc_std']:.2f}"
                                         if noisy else "")
    return row


# -- landscapes ---------------------------------------------------------------------------------
SURFACE_LABELS = {"sgd": "SGD", "dat-a": "DAT-A", "dat-b": "DAT-B"}  # trio role -> plane marker


def landscape_spec(kind: str, checkpoints: dict[str, str], devices: dict[str, str], **settings):
    """A ``landscape.spec.LandscapeSpec`` for checkpoints {label: path} under devices {label: spec}.

    The dataset, noise targets, tile and units come from the checkpoints' own metadata, so the
    landscape perturbs exactly what training perturbed; all checkpoints must share a dataset.
    The spec travels into every exported bundle, from which ``landscape.export.reproduce`` redoes it.
    """
    from dat.checkpoint import read_meta
    from landscape.spec import LandscapeSpec

    if not checkpoints:
        raise ValueError("pick at least one checkpoint")
    if len(set(devices.values())) != len(devices):
        raise ValueError(f"pick a different device for each panel, found {devices}")
    metas = {label: read_meta(path) for label, path in checkpoints.items()}
    datasets = {label: (m.get("dataset") or {}).get("dataset") for label, m in metas.items()}
    if len(set(datasets.values())) != 1:
        raise ValueError(f"the checkpoints must come from one dataset, found {datasets}")
    config = metas[next(iter(metas))].get("config") or {}
    return LandscapeSpec(kind=kind, checkpoints={k: str(v) for k, v in checkpoints.items()},
                         devices=dict(devices), dataset=next(iter(datasets.values())),
                         data_root=config.get("data_root"), targets=config.get("targets", "last-linear"),
                         tile=int(config.get("tile", 64)), units=config.get("units", "relative"), **settings)


def trio_spec(trio: dict[str, str], devices: dict[str, str], **settings):
    """The Fig. 1 spec of a trio {"sgd", "dat-a", "dat-b": path}."""
    missing = [r for r in TRIO_ROLES if r not in trio]
    if missing:
        raise ValueError(f"a trio needs checkpoints for {list(TRIO_ROLES)}, missing {missing}")
    return landscape_spec("surface", {SURFACE_LABELS[r]: trio[r] for r in TRIO_ROLES}, devices, **settings)


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


MIME = {"png": "image/png", "svg": "image/svg+xml", "pdf": "application/pdf", "csv": "text/csv",
        "npz": "application/octet-stream", "json": "application/json", "zip": "application/zip",
        "html": "text/html"}


def mime_of(name: str) -> str:
    return MIME.get(name.rsplit(".", 1)[-1], "application/octet-stream")


def model_labels(checkpoints: list[dict]) -> dict[str, str]:
    """A short label per checkpoint name: trio members are SGD / DAT-A / DAT-B (with their folder
    unless they are the demo's), anything else its file name."""
    out = {}
    for row in checkpoints:
        stem = Path(row["path"]).stem
        if stem in SURFACE_LABELS:
            out[row["name"]] = SURFACE_LABELS[stem] + (f" [{row['group']}]" if row.get("group") else "")
        else:
            out[row["name"]] = row["name"]
    return out


def table_one(checkpoints: list[dict], device: str | None = None) -> dict:
    """Table I of the paper for checkpoint metadata (``Workspace.list_checkpoints`` rows):
    {"rows", "markdown", "csv"}. ``device`` (a spec from :func:`device_choices`) evaluates every
    model under that device; None keeps each model's own evaluation device."""
    from dat import table

    rows = table.table_rows(checkpoints, device=device)
    return {"rows": rows, "markdown": table.to_markdown(rows), "csv": table.to_csv(rows)}
