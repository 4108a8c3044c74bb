"""Print sizes for Plotly figures: one layout per width (journal single / double column, slide, screen).

Every figure of the project is built once (landscape.figures, dat.profile_figures) and tagged with
``layout.meta["figure"]`` (its kind and grid); ``for_width(fig, width)`` then lays out a copy for a
width: fonts in points at print size (>= 7 pt), margins, panel spacing, colour bars and legends in
proportion to the font, titles wrapped to the panel they name. Sizes are CSS pixels (Plotly's unit):
a figure exported ``w`` px wide and printed at ``WIDTHS_IN[width]`` inches has 96 px per inch, so a
font of ``p`` points is ``p * 96 / 72`` px.
"""

from __future__ import annotations

import re

import plotly.colors
import plotly.graph_objects as go

# Okabe & Ito's colour-blind-safe palette (black last: it is kept for reference lines).
PALETTE = ["#0072B2", "#D55E00", "#009E73", "#CC79A7", "#E69F00", "#56B4E9", "#000000"]
DASHES = ["solid", "dash", "dot", "dashdot", "longdash", "longdashdot"]
SYMBOLS = ["circle", "square", "diamond", "triangle-up", "triangle-down", "cross"]

WIDTHS_IN = {"single": 3.5, "double": 7.16, "slide": 13.33}  # IEEE columns; a 16:9 slide
FONT_PT = {"single": 7.5, "double": 8.5, "slide": 16.0, "screen": 10.0}
SCREEN_PX = 1100  # the width a wide Streamlit page gives a chart (used only to size margins)
CSS_PX_PER_IN = 96
MIN_FONT_PT = 7.0
CHAR_EM = 0.56  # average advance of Arial/Helvetica characters, in ems (for wrapping titles)
FONT_FAMILY = "Arial, Helvetica, Liberation Sans, sans-serif"


def font_px(width: str) -> float:
    if width not in FONT_PT:
        raise ValueError(f"width must be one of {sorted(FONT_PT)}, found {width!r}")
    return FONT_PT[width] * CSS_PX_PER_IN / 72


def width_px(width: str) -> int:
    return SCREEN_PX if width == "screen" else int(round(WIDTHS_IN[width] * CSS_PX_PER_IN))


def style(i: int) -> dict:
    """Colour, dash and marker symbol of the i-th line: distinct in colour and in greyscale."""
    return {"color": PALETTE[i % len(PALETTE)], "dash": DASHES[i % len(DASHES)], "symbol": SYMBOLS[i % len(SYMBOLS)]}


def rgba(hex_colour: str, alpha: float) -> str:
    """A "#rrggbb" colour with opacity alpha, as Plotly's "rgba(r,g,b,alpha)"."""
    r, g, b = plotly.colors.hex_to_rgb(hex_colour)
    return f"rgba({r},{g},{b},{alpha})"


def text_px(text: str, size: float) -> float:
    """Estimated width of one line of text in px (tags stripped)."""
    plain = re.sub(r"<[^>]+>", "", text)
    return len(plain) * CHAR_EM * size


def wrap(text: str, room_px: float, size: float) -> str:
    """``text`` broken with <br> at spaces so that no line is wider than ``room_px``. Breaks already
    in ``text`` are kept (a title's subtitle stays on its own line), and a line that is one
    <sup>/<sub>/<b>/<i>/<span ...> span is wrapped inside it (at 0.7 of ``size`` for <sup> and <sub>,
    Plotly's size for them) with the tag repeated on every line."""
    out = []
    for line in text.split("<br>"):
        span = re.fullmatch(r"<(sup|sub|b|i|span)((?: [^>]*)?)>(.*)</\1>", line)
        inner, tag_name = (span.group(3), span.group(1)) if span else (line, None)
        opening = f"<{tag_name}{span.group(2)}>" if span else ""
        scale = 0.7 if tag_name in ("sup", "sub") else 1.0
        lines = [""]
        for w in inner.split(" "):
            trial = f"{lines[-1]} {w}".strip()
            if lines[-1] and text_px(trial, scale * size) > room_px:
                lines.append(w)
            else:
                lines[-1] = trial
        out += [f"{opening}{x}</{tag_name}>" if tag_name else x for x in lines]
    return "<br>".join(out)


def tag(fig: go.Figure, kind: str, **info) -> go.Figure:
    """Record what ``for_width`` needs to lay the figure out (kind: curves | panels | surface3d | lines | maps)."""
    fig.update_layout(meta={"figure": {"kind": kind, **info}})
    return fig


def _info(fig: go.Figure) -> dict:
    meta = fig.layout.meta
    if isinstance(meta, dict) and isinstance(meta.get("figure"), dict):
        return meta["figure"]
    return {"kind": "lines", "ncols": 1}


def for_width(fig: go.Figure, width: str = "screen") -> tuple[go.Figure, int, int]:
    """A copy of ``fig`` laid out for ``width`` ("single" | "double" | "slide" | "screen"):
    (figure, width px, height px). On screen the width is the container's (autosize)."""
    if width not in FONT_PT:
        raise ValueError(f"width must be one of {sorted(FONT_PT)}, found {width!r}")
    out = go.Figure(fig)
    info = _info(out)
    f, w = font_px(width), width_px(width)
    out.update_layout(font=dict(family=FONT_FAMILY, size=f, color="#222"), template="plotly_white",
                      hoverlabel=dict(font_size=max(f, 12)))
    out.update_annotations(font_size=f)
    # Text inside heat-map cells at the figure's size: Plotly's default ("auto") shrinks it to fit a
    # cell, below 7 pt at print widths.
    out.update_traces(textfont_size=f, selector=lambda t: t.type == "heatmap" and t.texttemplate)
    if info["kind"] == "surface3d":
        h = _surface3d(out, info, f, w)
        h = 480 if width == "screen" else h  # on screen the 3D views share a page row
    elif info["kind"] == "maps":
        h = _maps(out, info, f, w, 32 if width == "screen" else 0)
    else:
        h = _grid(out, info, f, w, width)
    if width == "screen":
        # The modebar sits in the top margin, above the panel titles; the width follows the page.
        out.update_layout(autosize=True, width=None, height=h, modebar=dict(orientation="h"))
    else:
        out.update_layout(width=w, height=h)
    return out, w, h


def _axes(fig: go.Figure, letter: str) -> list[str]:
    return sorted((k for k in fig.layout.to_plotly_json() if re.fullmatch(letter + r"axis\d*", k)),
                  key=lambda k: int(k[5:] or 1))


def _legend_rows(fig: go.Figure, f: float, room: float) -> int:
    """Rows a horizontal legend takes at font ``f`` in ``room`` px (entries packed left to right),
    its title wrapped to the room and counted too."""
    entries = [t.name for t in fig.data if t.name and
               (t.showlegend if t.showlegend is not None else t.type in ("scatter", "scattergl", "bar"))]
    rows, used = 1, 0.0
    for name in entries:
        wide = text_px(name, f) + 3.6 * f + 8
        if used and used + wide > room:
            rows, used = rows + 1, 0.0
        used += wide
    title = fig.layout.legend.title.text if fig.layout.legend.title else None
    if title:
        fig.layout.legend.title.text = wrap(title, room, f)
        rows += fig.layout.legend.title.text.count("<br>") + 1
    return rows


def _below(info: dict, f: float, legend_rows: int = 0) -> tuple[float, float]:
    """(px from the plot's bottom edge to the top of what sits under the axis titles, px it needs)."""
    axis = (3.2 + 1.25 * (info.get("tick_lines", 1) - 1)) * f  # tick labels (tick_lines lines) and the axis title
    need = 0.0
    if info.get("colorbars") == "below":
        need += 0.8 * f + 0.9 * f + 1.6 * f + 1.45 * f * info.get("colorbar_title_lines", 2)
    if info.get("legend"):
        need += legend_rows * 1.9 * f + 0.4 * f  # Plotly's legend rows are about 1.9 em
    return axis, need


def _grid(fig: go.Figure, info: dict, f: float, w: int, width: str) -> int:
    """One row of panels (curves, 2D maps, comparison, profile line plots)."""
    xs = _axes(fig, "x")
    n = max(1, len(xs))
    title = fig.layout.title.text if fig.layout.title and fig.layout.title.text else None
    left = (info.get("left_em", 4.2)) * f
    right = 1.2 * f + (info.get("right_em", 0.0) * f)
    if info.get("colorbars") == "right":
        right += 5.5 * f
    # Room between panels for the neighbours' outermost x tick labels (shared y: no y labels between).
    gap = (info.get("gap_em", 2.6 if info.get("shared_y", True) else 5.0)) * f
    inner = w - left - right
    pw = (inner - gap * (n - 1)) / n
    # Panel titles wrapped to their panel; the tallest sets the top margin.
    titles = [a for a in fig.layout.annotations if (a.name or "").startswith("panel-title")]
    lines = 1
    for a in titles:
        a.text = wrap(a.text, pw, f)
        lines = max(lines, a.text.count("<br>") + 1)
    top = (1.3 * lines * f if titles else 0) + 0.8 * f
    if title:
        # A <sup> subtitle would print at 0.7 of the title's size, under 7 pt: it gets the body size.
        title = re.sub(r"<sup>(.*?)</sup>", lambda m: f'<span style="font-size: {f:.2f}px">{m.group(1)}</span>', title)
        fig.layout.title.text = wrap(title, w - 2 * f, 1.15 * f)
        extra = fig.layout.title.text.count("<br>")
        top += (extra + 1) * 1.5 * f
        # Plotly anchors a multi-line title's top at its first line's middle: half a line more per
        # extra line keeps the first line inside the figure.
        fig.update_layout(title=dict(font_size=1.15 * f, x=0.5, xanchor="center", y=1, yref="container",
                                     yanchor="top", pad=dict(t=(0.5 + 0.75 * extra) * f)))
        top += (0.5 + 0.75 * extra) * f
    if width == "screen":
        top += 32  # a row for Plotly's modebar above the panel titles, so it covers none of them
    ph = pw * info.get("aspect", 0.8)
    if width != "screen":
        ph = min(ph, 0.75 * w)
    else:
        ph = min(max(ph, 260), 520)
    ph = max(ph, info.get("min_plot_em", 0.0) * f)  # room for text inside the plot (heat-map cells)
    rows = _legend_rows(fig, f, w - left - 2 * f) if info.get("legend") else 0
    if info.get("colorbars") == "below":
        info = dict(info, colorbar_title_lines=_wrap_colorbar_titles(fig, info, xs, inner, pw, gap, f))
    axis, need = _below(info, f, rows)
    bottom = axis + need + 0.6 * f
    # Domains in paper fractions of the plot area (w - left - right).
    for k, ax in enumerate(xs):
        x0 = k * (pw + gap) / inner
        fig.layout[ax].domain = [x0, min(1.0, x0 + pw / inner)]
    for a in titles:
        k = int(a.name.rsplit("-", 1)[-1])
        dom = fig.layout[xs[k]].domain
        a.update(x=(dom[0] + dom[1]) / 2, y=1.0, yanchor="bottom", yshift=0.2 * f)
    ticks = int(info.get("nticks_per_100px", 4) * pw / 100) + 1
    fig.update_xaxes(nticks=max(3, min(ticks, 8)), tickfont_size=f, title_font_size=f, title_standoff=0.3 * f,
                     automargin=False)
    fig.update_yaxes(tickfont_size=f, title_font_size=f, title_standoff=0.3 * f, automargin=False)
    if info.get("colorbars") == "below":
        for t in fig.data:
            if "colorbar" in t and t.showscale is not False and getattr(t, "colorbar", None) is not None:
                span = info.get("colorbar_spans", {}).get(t.uid or "", [0, n - 1])
                d0, d1 = fig.layout[xs[span[0]]].domain[0], fig.layout[xs[span[1]]].domain[1]
                bar = (d1 - d0) * 0.9
                t.colorbar.update(orientation="h", x=(d0 + d1) / 2, xanchor="center", len=bar,
                                  lenmode="fraction", y=-(axis + 0.8 * f) / ph, yanchor="top",
                                  thickness=0.9 * f, tickangle=0, tickfont_size=f, title_font_size=f,
                                  title_side="bottom", outlinewidth=0, ypad=0, xpad=0,
                                  nticks=max(3, int(5 * (d1 - d0) * inner / 300)))
    elif info.get("colorbars") == "right":
        for t in fig.data:
            if getattr(t, "colorbar", None) is not None:
                t.colorbar.update(thickness=0.9 * f, len=1.0, tickfont_size=f, title_font_size=f,
                                  title_side="right", xpad=0.6 * f)
    if info.get("legend"):
        ly = -(axis + 0.4 * f) / ph
        fig.update_layout(legend=dict(orientation="h", x=0, xanchor="left", y=ly, yanchor="top",
                                      font_size=f, title_font_size=f, itemwidth=30,
                                      tracegroupgap=0, entrywidthmode="pixels"))
    else:
        fig.update_layout(showlegend=False)
    _place_marker_labels(fig, f, pw, ph)
    for a in fig.layout.annotations:
        if a.name == "row-axis-title":
            a.update(yshift=-1.5 * f, font_size=f)
    fig.update_traces(textfont_size=f, selector=dict(mode="markers+text"))
    _line_weights(fig, f)
    fig.update_layout(margin=dict(l=left, r=right, t=top, b=bottom, pad=0, autoexpand=False))
    return int(round(top + ph + bottom))


def _line_weights(fig: go.Figure, f: float) -> None:
    """Line widths and marker sizes in proportion to the font, so a slide's lines are as heavy as a
    column's (set absolutely, so laying out an already laid-out figure changes nothing)."""
    for t in fig.data:
        if t.type != "scatter":
            continue
        if t.name == "models":  # the models' crosses on a map
            t.marker.update(size=0.85 * f, line_width=0.2 * f)
        elif t.mode and "lines" in t.mode:
            edge = t.hoverinfo == "skip"  # band edges
            t.line.width = (0.06 if edge else 0.16) * f
            if "markers" in t.mode:
                t.marker.size = 0.5 * f
        elif t.mode == "markers":
            t.marker.size = 0.7 * f
            if t.error_y and t.error_y.array is not None:
                t.error_y.update(thickness=0.1 * f, width=0.3 * f)
    for shape in fig.layout.shapes:
        shape.line.width = 0.08 * f


def _colorbar_traces(fig: go.Figure) -> list:
    return [t for t in fig.data if getattr(t, "colorbar", None) is not None and t.showscale is not False
            and t.type in ("contour", "heatmap", "surface")]


def _wrap_colorbar_titles(fig, info, xs, inner, pw, gap, f) -> int:
    """Wrap each colour bar's title to the bar's width; the most lines any takes."""
    lines = 1
    n = len(xs)
    for t in _colorbar_traces(fig):
        span = info.get("colorbar_spans", {}).get(t.uid or "", [0, n - 1])
        room = ((span[1] - span[0] + 1) * pw + (span[1] - span[0]) * gap) * 0.95
        if t.colorbar.title.text:
            t.colorbar.title.text = wrap(t.colorbar.title.text, room, f)
            lines = max(lines, t.colorbar.title.text.count("<br>") + 1)
    return lines


SIDES = [(0, 1), (0, -1), (1, 0), (-1, 0), (1, 1), (-1, 1), (1, -1), (-1, -1)]


def _place_marker_labels(fig: go.Figure, f: float, pw: float, ph: float) -> None:
    """Place each marker label (annotations named ``marker:<sx>:<sy>:<label>``, the preferred side
    first) on the first side around its marker where the label stays inside its panel and meets
    neither another label nor a marker."""
    panels: dict[str, list] = {}
    for a in fig.layout.annotations:
        if (a.name or "").startswith("marker:"):
            panels.setdefault(a.xref, []).append(a)
    for xref, labels in panels.items():
        xa = fig.layout["xaxis" + xref[1:]]
        ya = fig.layout["yaxis" + labels[0].yref[1:]]
        if xa.range is None or ya.range is None:
            continue
        (x0, x1), (y0, y1) = xa.range, ya.range

        def px(a):
            return (a.x - x0) / (x1 - x0) * pw, (a.y - y0) / (y1 - y0) * ph

        marks = [px(a) for a in labels]
        placed = [(mx - 0.5 * f, my - 0.5 * f, mx + 0.5 * f, my + 0.5 * f) for mx, my in marks]
        shift = 0.55 * f
        for a, (mx, my) in zip(labels, marks):
            _, sx, sy, text = a.name.split(":", 3)
            w, h = text_px(text, f) + 0.3 * f, 1.25 * f
            best = None
            for side in [(int(sx), int(sy))] + SIDES:
                cx = mx + side[0] * (shift + w / 2)
                cy = my + side[1] * (shift + h / 2)
                box = (cx - w / 2, cy - h / 2, cx + w / 2, cy + h / 2)
                inside = box[0] >= 0 and box[2] <= pw and box[1] >= 0 and box[3] <= ph
                free = all(min(box[2], b[2]) <= max(box[0], b[0]) or min(box[3], b[3]) <= max(box[1], b[1])
                           for b in placed)
                if best is None:
                    best = (side, box)
                if inside and free:
                    best = (side, box)
                    break
            (bx, by), box = best
            placed.append(box)
            a.update(font_size=f, xanchor={-1: "right", 0: "center", 1: "left"}[bx],
                     yanchor={-1: "top", 0: "middle", 1: "bottom"}[by], xshift=shift * bx, yshift=shift * by,
                     borderpad=0.1 * f, bgcolor="rgba(255,255,255,0.8)")


def _surface3d(fig: go.Figure, info: dict, f: float, w: int) -> int:
    h = int(round(w * 0.72))
    cb_px = 6.0 * f
    title = fig.layout.title.text if fig.layout.title and fig.layout.title.text else None
    top = 0.6 * f
    if title:
        fig.layout.title.text = wrap(title, w - 2 * f - 60, 1.15 * f)  # clear of the modebar on screen
        top += (fig.layout.title.text.count("<br>") + 1) * 1.5 * f
        fig.update_layout(title=dict(font_size=1.15 * f, x=0.5, xanchor="center", y=1, yref="container",
                                     yanchor="top", pad=dict(t=0.5 * f)))
        top += 0.5 * f
    axis = dict(tickfont_size=f, title_font_size=f, nticks=5)
    fig.update_scenes(domain=dict(x=[0, 1 - cb_px / w], y=[0, 1]), xaxis=axis, yaxis=axis, zaxis=axis,
                      aspectmode="manual", aspectratio=dict(x=1, y=1, z=0.7),
                      # From the front-left and above: the whole box in view, with room for its labels.
                      camera=dict(eye=dict(x=-1.35, y=-1.8, z=1.5), center=dict(x=0, y=0, z=-0.12)))
    for t in fig.data:
        if getattr(t, "colorbar", None) is not None and t.type == "surface":
            t.colorbar.update(thickness=0.9 * f, len=0.8, tickfont_size=f, title_font_size=f, title_side="right",
                              x=1 - cb_px / w + 0.1 * f / w, xanchor="left", xpad=0)
    fig.update_traces(textfont_size=f, selector=dict(type="scatter3d", mode="text"))
    fig.update_layout(margin=dict(l=0, r=0, t=top, b=0, autoexpand=False))
    return h


def _maps(fig: go.Figure, info: dict, f: float, w: int, modebar: float = 0) -> int:
    """A grid of square maps (rows x cols), one colour bar on the right."""
    rows, cols = info.get("rows", 1), info.get("cols", 1)
    left, right, gap = 0.8 * f, 6.0 * f, 0.8 * f
    inner = w - left - right
    side = (inner - gap * (cols - 1)) / cols
    titles = [a for a in fig.layout.annotations if (a.name or "").startswith("panel-title")]
    lines = 1
    for a in titles:
        a.text = wrap(a.text, side + gap, f)
        lines = max(lines, a.text.count("<br>") + 1)
    row_title = 1.3 * lines * f + 0.3 * f
    xs, ys = _axes(fig, "x"), _axes(fig, "y")
    height = rows * (side + row_title) + 0.6 * f
    for k, (xa, ya) in enumerate(zip(xs, ys)):
        r, c = divmod(k, cols)
        x0 = c * (side + gap) / inner
        fig.layout[xa].domain = [x0, min(1.0, x0 + side / inner)]
        y1 = 1 - (r * (side + row_title) + row_title) / (height - 0.6 * f)
        fig.layout[ya].domain = [max(0.0, y1 - side / (height - 0.6 * f)), y1]
    for a in titles:
        k = int(a.name.rsplit("-", 1)[-1])
        xd, yd = fig.layout[xs[k]].domain, fig.layout[ys[k]].domain
        a.update(x=(xd[0] + xd[1]) / 2, y=yd[1], yanchor="bottom", yshift=0.2 * f)
    fig.update_yaxes(scaleanchor=None)
    for t in fig.data:
        if getattr(t, "colorbar", None) is not None:
            t.colorbar.update(thickness=0.9 * f, len=min(1.0, 2.5 * side / (height - 0.6 * f)), y=1, yanchor="top",
                              tickfont_size=f, title_font_size=f, title_side="right", xpad=0.6 * f)
    fig.update_layout(margin=dict(l=left, r=right, t=0.2 * f + modebar, b=0.6 * f, autoexpand=False))
    return int(round(height + 0.2 * f + modebar))


def name_panel_titles(fig: go.Figure, count: int) -> go.Figure:
    """Name the first ``count`` annotations (make_subplots' titles) so for_width can wrap and place them."""
    for k, a in enumerate(fig.layout.annotations[:count]):
        a.name = f"panel-title-{k}"
    return fig
