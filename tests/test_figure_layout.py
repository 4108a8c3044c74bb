"""Every figure kind at every print width: no two texts overlap, nothing leaves the page, fonts >= 7 pt.

The figures are exported to SVG through Plotly's static export (the positions are Plotly's own
layout, as a reader gets it); each <text> element's box is its anchor point and baseline from the
SVG, with its width measured with Liberation Sans (metric-compatible with the Arial the figures
ask for) and its height from the font size. ``full_figure_for_development`` checks the fonts the
layout resolves to, including the 3D scene's (drawn by WebGL, not in the SVG as text).
"""

import re
import xml.etree.ElementTree as ET
from pathlib import Path

import numpy as np
import pytest

from dat import figure_layout as fl
from dat import profile_figures as pf
from dat.noise.crossbar import CrossbarParams
from landscape import figures
from landscape.spec import LandscapeSpec, run_spec

pytest.importorskip("kaleido")
SVG = "{http://www.w3.org/2000/svg}"
FONT_FILE = next(iter(Path("/usr/share/fonts").rglob("LiberationSans-Regular.ttf")), None)
WIDTHS = ("single", "double", "slide")


def _measure(text: str, size: float) -> float:
    if FONT_FILE is None:
        return len(text) * 0.6 * size
    from PIL import ImageFont

    return ImageFont.truetype(str(FONT_FILE), max(1, round(size * 4))).getlength(text) / 4


def _matrix(transform: str | None) -> np.ndarray:
    m = np.eye(3)
    for op, args in re.findall(r"(\w+)\(([^)]*)\)", transform or ""):
        v = [float(a) for a in re.split(r"[\s,]+", args.strip()) if a]
        if op == "translate":
            t = np.array([[1, 0, v[0]], [0, 1, v[1] if len(v) > 1 else 0], [0, 0, 1]])
        elif op == "scale":
            t = np.diag([v[0], v[1] if len(v) > 1 else v[0], 1])
        elif op == "rotate":
            a = np.deg2rad(v[0])
            cx, cy = (v[1], v[2]) if len(v) == 3 else (0, 0)
            c, s = np.cos(a), np.sin(a)
            t = np.array([[c, -s, cx - c * cx + s * cy], [s, c, cy - s * cx - c * cy], [0, 0, 1]])
        elif op == "matrix":
            t = np.array([[v[0], v[2], v[4]], [v[1], v[3], v[5]], [0, 0, 1]])
        else:
            raise AssertionError(f"unexpected SVG transform {op}")
        m = m @ t
    return m


def _font_px(el, inherited: float) -> float:
    m = re.search(r"font-size:\s*([\d.]+)(px|%)", el.get("style", ""))
    if not m:
        return inherited
    return float(m.group(1)) * (inherited / 100 if m.group(2) == "%" else 1)


def text_boxes(svg: bytes) -> list[dict]:
    """Every visible text of an SVG as {text, box: (x0, y0, x1, y1) in px, font_px}."""
    root = ET.fromstring(svg)
    out = []

    def walk(el, m, hidden):
        m = m @ _matrix(el.get("transform"))
        hidden = hidden or "display: none" in (el.get("style") or "") or el.get("opacity") == "0"
        if el.tag == SVG + "text" and not hidden:
            out.extend(_text(el, m))
            return
        for child in el:
            walk(child, m, hidden)

    walk(root, np.eye(3), False)
    return out


def _text(el, m) -> list[dict]:
    size = _font_px(el, 12.0)
    anchor = el.get("text-anchor", "start")
    x0, y0 = float(el.get("x", 0)), float(el.get("y", 0)) + _em(el.get("dy"), size)
    lines = [l for l in el if l.tag == SVG + "tspan" and "line" in (l.get("class") or "")] or [el]
    boxes, y = [], y0
    for k, line in enumerate(lines):
        if line is not el:
            x0 = float(line.get("x", x0))
            if line.get("y") is not None:  # Plotly gives each line the text's y and its offset from it
                y = float(line.get("y")) + _em(el.get("dy"), size) + _em(line.get("dy") or f"{1.3 * k}em", size)
            elif k:
                y += _em(line.get("dy") or "1.3em", size)
        runs = [(t.replace("\u200b", ""), sz) for t, sz in _runs(line, size, line is el)]
        text = "".join(t for t, _ in runs).strip()
        if not text:
            continue
        width = sum(_measure(t, sz) for t, sz in runs)  # each run at its own size (sub/superscripts)
        small = [sz for t, sz in runs if t.strip()]
        left = x0 - {"start": 0, "middle": width / 2, "end": width}[anchor]
        corners = np.array([[left, y - 0.78 * size, 1], [left + width, y - 0.78 * size, 1],
                            [left, y + 0.22 * size, 1], [left + width, y + 0.22 * size, 1]]).T
        p = m @ corners
        boxes.append({"text": text, "box": (p[0].min(), p[1].min(), p[0].max(), p[1].max()),
                      "font_px": min([size] + small)})
    return boxes


def _em(dy: str | None, size: float) -> float:
    if not dy:
        return 0.0
    return float(dy[:-2]) * size if dy.endswith("em") else float(dy.rstrip("px"))


def _runs(el, size: float, top: bool):
    """(text, font px) pieces of a line; the <text> element itself yields only its direct text."""
    yield el.text or "", size
    for child in el:
        if top and "line" in (child.get("class") or ""):
            continue
        yield from _runs(child, _font_px(child, size), False)
        yield child.tail or "", size


def overlaps(boxes, tol: float = 0.5) -> list[tuple[str, str]]:
    bad = []
    for i, a in enumerate(boxes):
        for b in boxes[i + 1:]:
            ax0, ay0, ax1, ay1 = a["box"]
            bx0, by0, bx1, by1 = b["box"]
            if min(ax1, bx1) - max(ax0, bx0) > tol and min(ay1, by1) - max(ay0, by0) > tol:
                bad.append((a["text"], b["text"]))
    return bad


# -- the figures -------------------------------------------------------------------------------
SMALL = dict(dataset="digits", split="test", max_samples=60, batch_size=256)


@pytest.fixture(scope="module")
def results(tiny_trio):
    paths = tiny_trio
    s = run_spec(LandscapeSpec(kind="surface", checkpoints=paths, resolution=(5, 5), draws=2, **SMALL))
    c = run_spec(LandscapeSpec(kind="curves", checkpoints=paths, num_alphas=7, draws=3, **SMALL))
    return s, c


def all_figures(surface, curves) -> dict:
    a, b = pf.tile_profile(CrossbarParams(sigma_spatial=0.03, ell=2.0), (8, 8)), \
        pf.tile_profile(CrossbarParams(sigma_row=0.02, name="device-B"), (8, 8))
    return {
        "curves_loss": figures.curves_figure(curves, "loss"),
        "curves_accuracy": figures.curves_figure(curves, "accuracy"),
        # Models by their readable default names (dat.checkpoint.default_run_name), as the dashboard shows them.
        "curves_named": figures.curves_figure(curves, "loss", names={
            "SGD": "SGD-BN digits CNN6, 20 epochs", "DAT-A": "DAT-Fast (device-A) digits CNN6, 20 epochs",
            "DAT-B": "DAT-Fast (device-B) digits CNN6, 20 epochs"}),
        "fig1_contour": figures.fig1_figure(surface, "contour"),
        "fig1_heatmap": figures.fig1_figure(surface, "heatmap", "accuracy"),
        "panel_contour": figures.surface_figure(surface, "device-A", "contour"),
        "surface3d": figures.surface_figure(surface, "device-B", "surface3d"),
        "compare_contour": figures.comparison_figure(surface),
        "compare_heatmap": figures.comparison_figure(surface, kind="heatmap"),
        "profile_maps": pf.noise_maps_figure({"device-A": pf.noise_maps(a, 3), "device-B": pf.noise_maps(b, 3)}),
        "profile_sigma": pf.sigma_figure(pf.sigma_window(a, 16), "device-A: Σ of the first 16 cells"),
        "profile_correlation": pf.correlation_figure({"device-A": pf.correlation_profile(a),
                                                      "device-B": pf.correlation_profile(b)}),
        "profile_spectrum": pf.spectrum_figure({"device-A": a.spectrum(10), "device-B": b.spectrum(10)}, k=4),
        **instrument_figures(),
    }


def instrument_figures() -> dict:
    """The transfer matrix and the aging figure on results of their shape (the figures read only these
    fields): the longest row and column names `dat instruments` makes, and p1 lines under the band."""
    from types import SimpleNamespace

    from landscape.instruments import aging_figure, transfer_figure

    rows = ["SGD-BN", "DAT-Full on device-A", "DAT-Full on device-A:diagonal", "DAT-Full on device-B"]
    cols = ["device-A", "device-A:diagonal", "device-B", "device-B:diagonal"]
    cell = {"mean": 0.931, "ci95_low": 0.918, "ci95_high": 0.944, "p1": 0.658, "p5": 0.801}
    transfer = SimpleNamespace(rows=rows, columns=cols, seeds=[0, 1, 2, 3, 4], cell=lambda r, c: cell)
    t = np.array([1.0, 3600.0, 86400.0, 3.15e7])
    acc = np.random.default_rng(0).uniform(0.85, 0.95, size=(2, 2, len(t), 40))
    aging = SimpleNamespace(times=t, time_labels=["1 s", "1 h", "1 d", "1 y"], models=["SGD-BN", "DAT-Fast"],
                            devices=["device-A", "device-B"], acc=acc)
    return {"transfer": transfer_figure(transfer), "aging": aging_figure(aging)}


@pytest.fixture(scope="module")
def rendered(results):
    import kaleido
    import plotly.io as pio

    figs = all_figures(*results)
    kaleido.start_sync_server(silence_warnings=True)
    try:
        out = {}
        for name, fig in figs.items():
            for width in WIDTHS:
                f, w, h = fl.for_width(fig, width)
                out[name, width] = (f, w, h, pio.to_image(f, format="svg", width=w, height=h))
        full = {name: figs[name] for name in ("surface3d", "compare_contour")}
        fulls = {(n, w): fl.for_width(f, w)[0].full_figure_for_development(warn=False)
                 for n, f in full.items() for w in ("single",)}
    finally:
        kaleido.stop_sync_server(silence_warnings=True)
    return out, fulls


@pytest.mark.parametrize("width", WIDTHS)
def test_no_two_texts_overlap_and_all_stay_on_the_page(rendered, width):
    problems = {}
    for (name, w), (_, wpx, hpx, svg) in rendered[0].items():
        if w != width:
            continue
        boxes = text_boxes(svg)
        assert boxes, name
        bad = overlaps(boxes)
        off = [b["text"] for b in boxes if b["box"][0] < -1 or b["box"][1] < -1
               or b["box"][2] > wpx + 1 or b["box"][3] > hpx + 1]
        if bad or off:
            problems[name] = {"overlap": bad[:5], "off the page": off[:5]}
    assert not problems, problems


@pytest.mark.parametrize("width", WIDTHS)
def test_fonts_are_at_least_7_pt_at_print_size(rendered, width):
    for (name, w), (_, wpx, _, svg) in rendered[0].items():
        if w != width:
            continue
        inches = fl.WIDTHS_IN[width]
        for b in text_boxes(svg):
            pt = b["font_px"] * (inches / wpx) * 72  # px -> inches at print width -> points
            assert pt >= fl.MIN_FONT_PT - 1e-6, (name, b["text"], round(pt, 2))
    # The 3D scene's labels are WebGL, not SVG text: check the fonts its layout resolves to.
    for (name, width), full in rendered[1].items():
        scale = fl.WIDTHS_IN[width] * 72 / fl.width_px(width)
        sizes = [full.layout.font.size]
        for scene in [full.layout[k] for k in full.layout.to_plotly_json() if k.startswith("scene")]:
            sizes += [scene[a].tickfont.size for a in ("xaxis", "yaxis", "zaxis")]
            sizes += [scene[a].title.font.size for a in ("xaxis", "yaxis", "zaxis")]
        assert min(sizes) * scale >= fl.MIN_FONT_PT - 1e-6, (name, sizes)


def test_the_overlap_check_finds_overlaps():
    """The checker itself: two labels at one spot overlap, a rotated title is measured rotated."""
    svg = (b'<svg xmlns="http://www.w3.org/2000/svg" width="200" height="100">'
           b'<text x="50" y="50" style="font-size: 10px">overlap</text>'
           b'<text x="55" y="52" style="font-size: 10px">here</text>'
           b'<text x="150" y="50" text-anchor="middle" transform="rotate(-90,150,50)" style="font-size: 10px">'
           b'vertical title</text></svg>')
    boxes = text_boxes(svg)
    assert overlaps(boxes) == [("overlap", "here")]
    x0, y0, x1, y1 = boxes[2]["box"]
    assert y1 - y0 > 3 * (x1 - x0)


def test_layout_is_sized_to_the_print_width(rendered):
    for (name, width), (f, w, h, _) in rendered[0].items():
        assert w == round(fl.WIDTHS_IN[width] * 96) and f.layout.width == w and f.layout.height == h
        assert f.layout.font.size * 0.75 >= fl.MIN_FONT_PT


def test_on_screen_the_modebar_row_is_above_every_panel_title(results):
    """Plotly's modebar (about 30 px at the top right) must not cover the right panel's title."""
    for name, fig in all_figures(*results).items():
        f, _, h = fl.for_width(fig, "screen")
        m, size = f.layout.margin, f.layout.font.size
        for a in f.layout.annotations:
            if (a.name or "").startswith("panel-title"):
                lines = a.text.count("<br>") + 1
                # the title's top edge in px from the top of the figure (anchored at its bottom)
                top = m.t + (1 - a.y) * (h - m.t - m.b) - (a.yshift or 0) - 1.3 * lines * size
                assert top >= 30, (name, a.text, top)


def test_colours_and_download_types_come_from_the_libraries():
    """rgba through Plotly's hex_to_rgb, MIME types from the standard library's table: the same
    strings as the hand-written conversions they replace (each hex pair read by hand here)."""
    from faces.dashboard.helpers import mime_of

    for colour in fl.PALETTE:
        r, g, b = (int(colour[i:i + 2], 16) for i in (1, 3, 5))
        assert fl.rgba(colour, 0.35) == f"rgba({r},{g},{b},0.35)"
    assert {ext: mime_of(f"fig.{ext}") for ext in ("png", "svg", "pdf", "csv", "json", "zip", "html", "npz", "md")} == {
        "png": "image/png", "svg": "image/svg+xml", "pdf": "application/pdf", "csv": "text/csv",
        "json": "application/json", "zip": "application/zip", "html": "text/html",
        "npz": "application/octet-stream", "md": "text/markdown"}
