"""Paper bundles: figures as PNG / SVG / PDF at journal column widths, the numbers as CSV and NPZ, and a
reproduction JSON from which the numbers can be recomputed (``reproduce``).

Static export is Plotly's (kaleido >= 1), which drives a Chromium-based browser found on PATH
(Debian: ``apt-get install chromium``) or named by the BROWSER_PATH environment variable.
"""

from __future__ import annotations

import csv
import io
import json
import os
import warnings
import zipfile
from pathlib import Path

import numpy as np
import plotly.graph_objects as go
import plotly.io as pio

from dat.fileio import atomic_write_bytes

from dat import figure_layout as _layout

from .cache import npz_bytes
from .results import Curves, Surface
from .figures import default_figures, marker_rows, standard_error

FORMAT = "dat-landscape-bundle"
FORMAT_VERSION = 1
IMAGE_FORMATS = ("png", "svg", "pdf")
# Print widths in inches (IEEE two-column: 3.5 in single, 7.16 in double; a 16:9 slide 13.33 in).
WIDTHS_IN = dict(_layout.WIDTHS_IN)
CSS_PX_PER_IN = _layout.CSS_PX_PER_IN  # Plotly sizes are CSS pixels; Chrome prints 96 of them per inch
ZERO_WIDTH = ("\u200b", "\u200c", "\u200d", "\ufeff")  # Plotly pads some SVG text with these


class BrowserNotFoundError(RuntimeError):
    """No Chromium-based browser for Plotly's static export."""


def find_browser() -> str:
    """Path of the browser kaleido will drive, or a BrowserNotFoundError saying how to get one."""
    override = os.environ.get("BROWSER_PATH")
    if override:
        if os.path.isfile(override) and os.access(override, os.X_OK):
            return override
        raise BrowserNotFoundError(f"BROWSER_PATH={override!r} is not an executable file: point it at a "
                                   "Chromium or Chrome binary, or unset it to search PATH")
    from choreographer.browsers.chromium import Chromium

    found = Chromium.find_browser(skip_local=False)
    if not found:
        raise BrowserNotFoundError(
            "figure export (PNG/SVG/PDF) needs a Chromium-based browser and none was found. Install one, "
            "e.g. `sudo apt-get install chromium` (Debian/Ubuntu) or Google Chrome, or set BROWSER_PATH to "
            "its executable. The numbers (CSV, NPZ, JSON) can still be exported with formats=('csv', 'npz').")
    return found


def sized(fig: go.Figure, width: str) -> tuple[go.Figure, int, int]:
    """A copy of ``fig`` laid out for a print width ("single" | "double" | "slide"): (figure, width
    px, height px), fonts >= 7 pt once printed at that width (``dat.figure_layout.for_width``)."""
    if width not in WIDTHS_IN:
        raise ValueError(f"width must be one of {sorted(WIDTHS_IN)}, found {width!r}")
    return _layout.for_width(fig, width)


WEBGL_PIXEL_RATIO = 2  # Plotly's static export draws WebGL scenes at twice the CSS pixel grid


def raster_parts(fig: go.Figure, width: str) -> list[str]:
    """What a vector (SVG / PDF) export of ``fig`` at ``width`` holds as images, in words; empty
    when it is all vector.

    Filled contours, lines, markers and text are paths; a heatmap is an image with one pixel per
    grid point (the data's own resolution); a 3D scene is WebGL, an image at twice the CSS pixel
    grid (192 px per inch at print size), its title and colour bar vector.
    """
    out = []
    laid, w, h = sized(fig, width)
    for t in fig.data:
        if t.type == "heatmap":
            z = np.asarray(t.z, dtype=float)
            out.append(f"heatmap: one image pixel per grid point ({z.shape[1]} x {z.shape[0]})")
    if any(t.type in ("surface", "scatter3d", "mesh3d") for t in fig.data):
        m = laid.layout.margin
        dom = laid.layout.scene.domain
        sw = (w - (m.l or 0) - (m.r or 0)) * (dom.x[1] - dom.x[0]) * WEBGL_PIXEL_RATIO
        sh = (h - (m.t or 0) - (m.b or 0)) * (dom.y[1] - dom.y[0]) * WEBGL_PIXEL_RATIO
        out.append(f"3D scene: image of {round(sw)} x {round(sh)} px "
                   f"({WEBGL_PIXEL_RATIO * CSS_PX_PER_IN} dpi at print size); title and colour bar vector")
    return out


def png_with_dpi(png: bytes, dpi: float) -> bytes:
    """The PNG with its physical resolution (pHYs) set, so that it places at its print width."""
    from PIL import Image

    with Image.open(io.BytesIO(png)) as im:
        buf = io.BytesIO()
        im.save(buf, format="PNG", dpi=(dpi, dpi), optimize=False)
    return buf.getvalue()


def clean_svg(svg: bytes) -> bytes:
    """SVG text without the zero-width characters Plotly inserts (they turn up in copied text)."""
    text = svg.decode("utf-8")
    for z in ZERO_WIDTH:
        text = text.replace(z, "")
    return text.encode("utf-8")


def render(fig: go.Figure, width: str, fmt: str, dpi: float = 300) -> bytes:
    """One image of ``fig`` laid out for ``width``: PNG at ``dpi`` (written into the file), SVG / PDF
    at the print width (see ``raster_parts`` for what stays an image there). Uses a running kaleido
    server, or starts a browser for this one image."""
    f, w, h = sized(fig, width)
    scale = dpi / CSS_PX_PER_IN if fmt == "png" else 1  # a larger scale would enlarge the SVG / PDF page
    data = pio.to_image(f, format=fmt, width=w, height=h, scale=scale)
    if fmt == "png":
        return png_with_dpi(data, dpi)
    if fmt == "svg":
        return clean_svg(data)
    return data


def _is_instrument(result) -> bool:
    """A research-instrument result (landscape.instruments): it writes its own numbers."""
    return all(hasattr(result, a) for a in ("kind", "meta", "labels", "to_arrays", "numbers_csv"))


def numbers_csv(result) -> str:
    """The figure's numbers in long form, one row per point."""
    if _is_instrument(result):
        return result.numbers_csv()
    buf = io.StringIO()
    wr = csv.writer(buf)
    if isinstance(result, Curves):
        mean_l, mean_a = result.mean("loss"), result.mean("accuracy")
        lo, hi = result.band_limits("loss")
        wr.writerow(["model", "device", "alpha", "loss_mean", f"loss_band_low_{result.band}",
                     f"loss_band_high_{result.band}", "accuracy_mean", "typical_norm"])
        for i, m in enumerate(result.models):
            for j, d in enumerate(result.devices):
                for a in range(result.alphas.shape[1]):
                    wr.writerow([m, d, repr(float(result.alphas[j, a])), repr(float(mean_l[i, j, a])),
                                 repr(float(lo[i, j, a])), repr(float(hi[i, j, a])), repr(float(mean_a[i, j, a])),
                                 repr(float(result.typical_norm[i, j]))])
    elif isinstance(result, Surface):
        # Grid points ("point" = grid), then each model's own point (its marker name); every
        # Monte-Carlo number with its SE over the panel's draws (0 without noise; empty if not kept).
        wr.writerow(["panel", "alpha", "beta", "loss", "loss_std", "accuracy", "point", "loss_se", "accuracy_std",
                     "accuracy_se"])
        se_l, se_a = standard_error(result, "loss"), standard_error(result, "accuracy")
        acc_std = result.accuracy_std if result.accuracy_std is not None else np.full(result.loss.shape, np.nan)
        num = lambda v: "" if not np.isfinite(v) else repr(float(v))  # noqa: E731
        for p, panel in enumerate(result.panels):
            for i, a in enumerate(result.alphas):
                for j, b in enumerate(result.betas):
                    wr.writerow([panel, repr(float(a)), repr(float(b)), repr(float(result.loss[p, i, j])),
                                 repr(float(result.loss_std[p, i, j])), repr(float(result.accuracy[p, i, j])), "grid",
                                 num(se_l[p, i, j]), num(acc_std[p, i, j]), num(se_a[p, i, j])])
        m_std = {k: getattr(result, f"marker_{k}_std") for k in ("loss", "accuracy")}
        for row in marker_rows(result):
            p, m = result.panels.index(row["panel"]), list(result.markers).index(row["model"])
            std = {k: (np.nan if v is None else v[p, m]) for k, v in m_std.items()}
            wr.writerow([row["panel"], repr(row["alpha"]), repr(row["beta"]), repr(row["loss"]), num(std["loss"]),
                         repr(row["accuracy"]), row["model"], num(row["loss_se"]), num(std["accuracy"]),
                         num(row["accuracy_se"])])
    else:
        raise TypeError(f"result must be Curves or Surface, found {type(result).__name__}")
    return buf.getvalue()


def reproduction_record(result, spec=None, files=()) -> dict:
    """What the bundle's JSON holds: the result's inputs (hashes, grid, seeds), versions, and the spec
    (files and names) from which ``reproduce`` recomputes it."""
    return {"format": FORMAT, "format_version": FORMAT_VERSION, "kind": result.kind, "labels": result.labels(),
            "inputs": result.meta.get("inputs", {}), "versions": result.meta.get("versions", {}),
            "spec": None if spec is None else spec.to_dict(), "files": sorted(files),
            "how_to_reproduce": "landscape.export.reproduce('reproduce.json') or "
                                "`dat landscape reproduce reproduce.json`"}


def bundle_files(result, *, figures: dict | None = None, formats=IMAGE_FORMATS + ("csv", "npz"),
                 widths=("single", "double"), dpi: int = 300, spec=None, comparison=None) -> dict[str, bytes]:
    """The bundle as {file name: bytes} in memory (arguments as ``export_bundle``); the numbers
    (numbers.csv, numbers.npz, summary.csv with a comparison) and reproduce.json are always there,
    images only for the figures given (``figures={}``: numbers alone, no browser needed)."""
    if not isinstance(result, (Curves, Surface)) and not _is_instrument(result):
        raise TypeError(f"result must be Curves or Surface, found {type(result).__name__}")
    bad = [f for f in formats if f not in IMAGE_FORMATS + ("csv", "npz", "html")]
    if bad:
        raise ValueError(f"formats must be among {IMAGE_FORMATS + ('csv', 'npz', 'html')}, found {bad}")
    if not (isinstance(dpi, (int, float)) and dpi > 0):
        raise ValueError(f"dpi must be a positive number, found {dpi!r}")
    files: dict[str, bytes] = {}
    files["numbers.csv"] = numbers_csv(result).encode()
    files["numbers.npz"] = npz_bytes(result.to_arrays())
    if comparison is not None:
        files["summary.csv"] = comparison.to_csv().encode()
    images = [f for f in formats if f in IMAGE_FORMATS]
    figures = default_figures(result) if figures is None else dict(figures)
    if "html" in formats:
        for name, fig in figures.items():
            files[f"{name}.html"] = fig.to_html(include_plotlyjs="cdn", full_html=True).encode()
    raster: dict[str, list[str]] = {}
    if images and figures:
        find_browser()
        import kaleido

        # One browser for the whole batch: each separate export would start its own (seconds each).
        kaleido.start_sync_server(silence_warnings=True)
        try:
            with warnings.catch_warnings():
                # Plotly passes its browser options again per image; the running server has them already.
                warnings.filterwarnings("ignore", message="The kopts argument is ignored")
                for name, fig in figures.items():
                    for width in widths:
                        for fmt in images:
                            files[f"{name}_{width}.{fmt}"] = render(fig, width, fmt, dpi)
                        if {"svg", "pdf"} & set(images):
                            parts = raster_parts(fig, width)
                            if parts:
                                raster[f"{name}_{width}"] = parts
        finally:
            kaleido.stop_sync_server(silence_warnings=True)
    record = reproduction_record(result, spec, list(files) + ["reproduce.json"])
    record["export"] = {"formats": list(formats), "widths_in": {w: WIDTHS_IN[w] for w in widths}, "dpi": dpi,
                        # Everything else in the SVG / PDF files is vector (paths and text).
                        "raster_in_vector_files": raster}
    # Insertion order kept: the spec's label order is the order of the arrays' axes.
    files["reproduce.json"] = json.dumps(record, indent=1).encode()
    return files


def export_bundle(result, folder, *, figures: dict | None = None, formats=IMAGE_FORMATS + ("csv", "npz"),
                  widths=("single", "double"), dpi: int = 300, spec=None, comparison=None) -> list[Path]:
    """Write the whole bundle into ``folder``; each file atomically. Returns the paths written.

    figures: name -> plotly Figure (default: ``figures.default_figures(result)``); formats: image
    formats among png/svg/pdf (plus html for interactive copies); the numbers (numbers.csv,
    numbers.npz) and reproduce.json are always written. PNG is rasterised at ``dpi`` for the print
    width and carries that dpi; SVG and PDF are vector at the print width except heatmaps and 3D
    scenes, which reproduce.json lists under export.raster_in_vector_files (``raster_parts``).
    """
    files = bundle_files(result, figures=figures, formats=formats, widths=widths, dpi=dpi, spec=spec,
                         comparison=comparison)
    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    out = []
    for name, data in files.items():
        atomic_write_bytes(folder / name, data)
        out.append(folder / name)
    return out


def zip_bytes(files: dict[str, bytes]) -> bytes:
    """A zip archive of {name: bytes} in memory."""
    buf = io.BytesIO()
    with zipfile.ZipFile(buf, "w", zipfile.ZIP_DEFLATED) as z:
        for name, data in files.items():
            z.writestr(name, data)
    return buf.getvalue()


def reproduce(record, progress=None, cache=None, data_root=None):
    """Recompute a bundle's result from its reproduction JSON (a path or the parsed dict).
    ``data_root``: the user's data folder (the JSON's own is never used: a file does not choose a
    folder to read).

    Raises ValueError when the JSON has no spec, or when a checkpoint, profile or the data no longer
    hash to what the bundle recorded (the files changed since the figure was made).
    """
    from .spec import LandscapeSpec, run_spec

    if isinstance(record, (str, os.PathLike)):
        record = json.loads(Path(record).read_text())
    if not isinstance(record, dict) or record.get("format") != FORMAT:
        raise ValueError(f"expected a {FORMAT} reproduction JSON, found {str(record)[:80]!r}")
    if record.get("spec") is None:
        raise ValueError("this bundle was exported without a spec (files and names), so it records the inputs' "
                         "hashes but not where to load them from: export with spec=LandscapeSpec(...)")
    spec = LandscapeSpec.from_dict({**record["spec"], "data_root": None if data_root is None else str(data_root)})
    result = run_spec(spec, progress=progress, cache=cache)
    want, got = record.get("inputs", {}), result.meta.get("inputs", {})
    for key in ("models", "profiles", "data"):
        if key in want and want[key] != got.get(key):
            raise ValueError(f"the {key} differ from those the bundle was made with: recorded {want[key]}, "
                             f"found {got.get(key)}")
    return result


def load_numbers(folder) -> dict[str, np.ndarray]:
    """The arrays of a bundle's numbers.npz (never unpickled)."""
    with np.load(Path(folder) / "numbers.npz", allow_pickle=False) as f:
        return {k: f[k] for k in f.files}
