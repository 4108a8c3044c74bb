"""The dashboard in a real browser: `streamlit run app.py` on a free localhost port, driven by headless
Chromium through every page, one full flow (demo checkpoints -> 2D surface -> export download), and
the export of every figure kind (curves, Fig. 1 as contours and as a heatmap, the 3D panels, the
device comparison) at single and double column width: PNGs carry their DPI, the PDF's contour fills
are vector paths, and what stays raster (heatmaps, 3D scenes) is what reproduce.json documents.

Needs Debian's `chromium` and the `playwright` package (`make test` installs both). Without them the
test skips and says so, except under CI=true, where it fails instead: CI must run it.
Screenshots of every page go to artifacts/screenshots/; with DAT_UPDATE_SCREENSHOTS=1 the main ones
are also copied to docs/screenshots/ for the README (DAT_BROWSER_WORKSPACE may then name a workspace
with full-size demo checkpoints, made by `dat demo`, instead of the miniature one).
"""

import os
import shutil
import socket
import subprocess
import sys
import time
import json
import re
import struct
import urllib.request
import zipfile
import zlib
from pathlib import Path

import pytest

pytestmark = pytest.mark.browser

ROOT = Path(__file__).resolve().parent.parent
ARTIFACTS = ROOT / "artifacts" / "screenshots"
DOCS_SHOTS = ROOT / "docs" / "screenshots"
PAGES = {  # url path -> screenshot name
    "": "home",
    "Device_profiles": "device_profiles",
    "Train": "train",
    "Models": "models",
    "Noise_curves": "noise_curves",
    "Loss_surfaces": "loss_surfaces",
    "Compare_devices": "compare_devices",
}
CHROMIUM_ARGS = ["--no-sandbox", "--disable-gpu", "--disable-dev-shm-usage", "--disable-background-networking",
                 "--disable-component-update", "--disable-sync", "--no-first-run"]


def _missing_or_skip():
    """Chromium's path, or skip (fail under CI=true) with how to get what is missing."""
    chromium = shutil.which("chromium") or shutil.which("chromium-browser")
    try:
        import playwright.sync_api  # noqa: F401
    except ImportError:
        chromium_ok, why = False, "the 'playwright' Python package is not installed (pip install playwright)"
    else:
        chromium_ok, why = chromium is not None, "Debian's 'chromium' is not on PATH (apt-get install chromium)"
    if not chromium_ok:
        message = f"real-browser test needs Chromium and Playwright: {why}; `make test` installs both"
        if os.environ.get("CI") == "true":
            pytest.fail(message)
        pytest.skip(message)
    return chromium


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.fixture(scope="module")
def server(request, tmp_path_factory):
    chromium = _missing_or_skip()  # before the demo is trained: a skip should cost nothing
    source = Path(os.environ.get("DAT_BROWSER_WORKSPACE") or request.getfixturevalue("demo_workspace"))
    root = tmp_path_factory.mktemp("browser") / "ws"
    shutil.copytree(source, root, ignore=shutil.ignore_patterns("cache"))
    port = _free_port()
    log = open(root.parent / "streamlit.log", "wb")
    # `python -m streamlit` keeps the server in this very process id, so we stop exactly what we started.
    proc = subprocess.Popen(
        [sys.executable, "-m", "streamlit", "run", str(ROOT / "app.py"), "--server.headless", "true",
         "--server.address", "127.0.0.1", "--server.port", str(port), "--browser.gatherUsageStats", "false"],
        cwd=ROOT, env={**os.environ, "DAT_WORKSPACE": str(root)}, stdout=log, stderr=subprocess.STDOUT)
    url = f"http://127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + 60
        while True:
            try:
                with urllib.request.urlopen(f"{url}/_stcore/health", timeout=2) as r:
                    if r.status == 200:
                        break
            except OSError:
                pass
            if proc.poll() is not None or time.monotonic() > deadline:
                raise RuntimeError(f"streamlit did not start; see {root.parent / 'streamlit.log'}")
            time.sleep(0.5)
        yield {"url": url, "chromium": chromium, "root": root}
    finally:
        proc.terminate()
        try:
            proc.wait(timeout=15)
        except subprocess.TimeoutExpired:
            proc.kill()
        log.close()


@pytest.fixture(scope="module")
def browser_page(server):
    from playwright.sync_api import sync_playwright

    with sync_playwright() as p:
        browser = p.chromium.launch(executable_path=server["chromium"], args=CHROMIUM_ARGS)
        context = browser.new_context(viewport={"width": 1400, "height": 1000}, accept_downloads=True)
        page = context.new_page()
        yield page
        context.close()
        browser.close()


def settle(page, timeout_ms: int = 120_000) -> None:
    """Wait until Streamlit has finished the current run: the page title is drawn and the status
    widget ("Running...") has stayed away for a second (it appears a moment after a run starts)."""
    page.wait_for_selector("h1", timeout=timeout_ms)
    status = page.locator('[data-testid="stStatusWidget"]')
    deadline = time.monotonic() + timeout_ms / 1000
    quiet_since = None
    while time.monotonic() < deadline:
        if status.count() == 0:
            quiet_since = quiet_since or time.monotonic()
            if time.monotonic() - quiet_since >= 1.0:
                return
        else:
            quiet_since = None
            status.first.wait_for(state="detached", timeout=timeout_ms)
        page.wait_for_timeout(200)
    raise TimeoutError(f"Streamlit still running after {timeout_ms} ms")


COMPUTE_FOR_DOCS = {"noise_curves": ("Compute curves", None), "compare_devices": ("Compare", 11)}


def compute(page, button: str, grid_points: int | None = 11) -> None:
    """Set the first two sliders of the page's form (the grid points along alpha and beta) and press
    its compute button."""
    sliders = page.locator('[data-testid="stSlider"] input[type="range"]')
    for i in range(min(2, sliders.count()) if grid_points is not None else 0):
        slider = sliders.nth(i)
        slider.focus()
        page.keyboard.press("Home")  # the slider's minimum, then step up to grid_points
        low = int(slider.get_attribute("min"))
        for _ in range(grid_points - low):
            page.keyboard.press("ArrowRight")
        settle(page)
    page.get_by_role("button", name=button).click()
    settle(page, timeout_ms=300_000)
    no_exception(page)


def no_exception(page) -> None:
    boxes = page.locator('[data-testid="stException"]')
    assert boxes.count() == 0, boxes.first.inner_text()


def shoot(page, name: str) -> None:
    ARTIFACTS.mkdir(parents=True, exist_ok=True)
    path = ARTIFACTS / f"{name}.png"
    # Streamlit scrolls its main block, not the window: grow the viewport to the content's height
    # for the shot (capped, so a runaway page cannot make a giant image), then put it back.
    size = page.viewport_size
    height = page.evaluate("""() => { const m = document.querySelector('[data-testid="stMain"]');
                                      if (m) { m.scrollTo(0, 0); } return m ? m.scrollHeight : 0; }""")
    page.set_viewport_size({"width": size["width"], "height": max(size["height"], min(int(height) + 40, 6000))})
    page.wait_for_timeout(800)  # Plotly redraws at the new size
    page.screenshot(path=str(path), full_page=True)
    page.set_viewport_size(size)
    if os.environ.get("DAT_UPDATE_SCREENSHOTS") == "1":
        DOCS_SHOTS.mkdir(parents=True, exist_ok=True)
        shutil.copy(path, DOCS_SHOTS / path.name)


def test_every_page_renders_without_an_exception(server, browser_page):
    for url_path, name in PAGES.items():
        started = time.monotonic()
        browser_page.goto(f"{server['url']}/{url_path}")
        settle(browser_page, timeout_ms=300_000)  # Device profiles computes spectra: minutes on a loaded machine
        print(f"{name}: {time.monotonic() - started:.1f} s")
        no_exception(browser_page)
        assert browser_page.locator("h1").count() >= 1
        if name == "loss_surfaces":  # shot after the flow below, with its figure
            continue
        if os.environ.get("DAT_UPDATE_SCREENSHOTS") == "1" and name in COMPUTE_FOR_DOCS:
            compute(browser_page, *COMPUTE_FOR_DOCS[name])  # README shots show figures, not empty forms
        shoot(browser_page, name)


def test_demo_checkpoints_to_surface_to_export_download(server, browser_page, tmp_path):
    page = browser_page
    page.goto(f"{server['url']}/Loss_surfaces")
    settle(page)
    no_exception(page)
    compute(page, "Compute surface", grid_points=11)  # quick, and still reads as a surface
    assert page.locator('[data-testid="stSlider"] input[type="range"]').first.get_attribute("aria-valuetext") == "11"
    # The figure is what the run ends with: wait for it rather than trusting the status widget alone.
    page.wait_for_selector('[data-testid="stPlotlyChart"]', timeout=300_000)
    settle(page)
    assert page.get_by_text("Loss at the models").count() == 1

    page.get_by_role("button", name="Prepare figure files").click()
    settle(page, timeout_ms=180_000)
    no_exception(page)
    with page.expect_download(timeout=60_000) as info:
        page.get_by_role("button", name="Download everything (zip)").click()
    target = tmp_path / "bundle.zip"
    info.value.save_as(target)
    with zipfile.ZipFile(target) as z:
        names = set(z.namelist())
    assert {"numbers.csv", "numbers.npz", "reproduce.json"} <= names
    assert {n.rsplit(".", 1)[-1] for n in names} >= {"png", "svg", "pdf"}
    shoot(page, "loss_surfaces")


# -- the export of every figure kind ------------------------------------------------------------
WIDTH_LABELS = {"single": "single column (3.5 in)", "double": "double column (7.16 in)"}
WIDTH_IN = {"single": 3.5, "double": 7.16}
DPI = 300  # the export form's default


def png_dpi(png: bytes) -> tuple[float, float, int]:
    """(dpi x, dpi y, width px) read from a PNG's pHYs and IHDR chunks (AssertionError without pHYs)."""
    assert png[:8] == b"\x89PNG\r\n\x1a\n", "not a PNG"
    pos, width, phys = 8, None, None
    while pos < len(png):
        (length,), kind = struct.unpack(">I", png[pos:pos + 4]), png[pos + 4:pos + 8]
        data = png[pos + 8:pos + 8 + length]
        if kind == b"IHDR":
            width = struct.unpack(">I", data[:4])[0]
        elif kind == b"pHYs":
            phys = struct.unpack(">IIB", data)
        pos += 12 + length
    assert phys is not None, "the PNG has no pHYs chunk (no physical resolution)"
    x, y, unit = phys
    assert unit == 1, f"pHYs unit {unit}: expected 1 (pixels per metre)"
    return x * 0.0254, y * 0.0254, width


def pdf_parts(pdf: bytes) -> dict:
    """What a PDF draws with: images (``/Subtype /Image`` in any object, compressed object streams
    included) and path fills (the fill operators f, f*, B, B*, b, b* in its content streams)."""
    assert pdf[:5] == b"%PDF-", "not a PDF"
    texts = [pdf]
    for m in re.finditer(rb"stream\r?\n", pdf):
        try:
            texts.append(zlib.decompressobj().decompress(pdf[m.end():m.end() + 50_000_000]))
        except zlib.error:
            continue  # not a Flate stream
    images = sum(len(re.findall(rb"/Subtype\s*/Image", t)) for t in texts)
    fills = sum(len(re.findall(rb"(?<![A-Za-z*])(?:f\*?|B\*?|b\*?)(?=\s)", t)) for t in texts[1:])
    return {"images": images, "fills": fills}


def choose(page, group: str, option: str) -> None:
    """Pick ``option`` of the radio group labelled ``group`` and wait for the rerun."""
    radio = page.locator('[data-testid="stRadio"]', has=page.get_by_text(group, exact=True)).first
    radio.get_by_text(option, exact=True).click()
    settle(page)


def export_bundle(page, width: str, target: Path) -> dict[str, bytes]:
    """Prepare the figure files at ``width`` in the page's export form and download the zip."""
    choose(page, "Print width", WIDTH_LABELS[width])
    page.get_by_role("button", name="Prepare figure files").click()
    from playwright.sync_api import TimeoutError as PlaywrightTimeout

    try:
        settle(page, timeout_ms=300_000)
    except (TimeoutError, PlaywrightTimeout):
        shoot(page, f"timeout_{target.stem}")  # what the page showed when it did not finish
        raise
    no_exception(page)
    with page.expect_download(timeout=120_000) as info:
        page.get_by_role("button", name="Download everything (zip)").click()
    info.value.save_as(target)
    with zipfile.ZipFile(target) as z:
        return {n: z.read(n) for n in z.namelist()}


def check_bundle(files: dict[str, bytes], width: str, kinds: dict[str, str]) -> list[str]:
    """Every figure of ``kinds`` ({name prefix: "vector" | "raster"}) as PNG / SVG / PDF at ``width``:
    the PNG carries DPI and places at the print width; a "vector" figure's PDF has no image and
    draws with path fills; a "raster" one's image is listed in reproduce.json. Returns the figures."""
    record = json.loads(files["reproduce.json"])
    documented = record["export"]["raster_in_vector_files"]
    seen = []
    for prefix, kind in kinds.items():
        names = sorted({n.rsplit(".", 1)[0] for n in files if n.startswith(prefix) and n.endswith(f"_{width}.png")})
        assert names, f"no {prefix}* figure at {width} width in {sorted(files)}"
        for stem in names:
            assert {f"{stem}.svg", f"{stem}.pdf"} <= set(files), stem
            dx, dy, px = png_dpi(files[f"{stem}.png"])
            assert round(dx) == round(dy) == DPI, (stem, dx, dy)
            assert px / dx == pytest.approx(WIDTH_IN[width], rel=0.01), (stem, px, dx)  # places at its width
            parts = pdf_parts(files[f"{stem}.pdf"])
            if kind == "vector":
                assert parts["images"] == 0, f"{stem}.pdf embeds {parts['images']} image(s)"
                assert stem not in documented, (stem, documented.get(stem))
                assert parts["fills"] > 0, f"{stem}.pdf has no path fills"
            else:
                assert parts["images"] > 0 and documented.get(stem), (stem, parts, documented)
            seen.append(stem)
    return seen


def test_every_figure_kind_exports_at_single_and_double_width(server, browser_page, tmp_path):
    page, exported = browser_page, []
    flows = [("Noise_curves", "Compute curves", 5, [(None, {"curves_": "vector"})]),
             ("Loss_surfaces", "Compute surface", 5, [("contour", {"fig1_contour": "vector"}),
                                                      ("heatmap", {"fig1_heatmap": "raster"}),
                                                      ("3D", {"surface3d_": "raster"})]),
             ("Compare_devices", "Compare", 5, [(None, {"compare_devices": "vector"})])]
    for url_path, button, grid, views in flows:
        page.goto(f"{server['url']}/{url_path}")
        settle(page)
        compute(page, button, grid_points=grid)
        page.wait_for_selector('[data-testid="stPlotlyChart"]', timeout=300_000)
        for view, kinds in views:
            if view is not None:
                choose(page, "View", view)
                no_exception(page)
            for width in ("single", "double"):
                started = time.monotonic()
                files = export_bundle(page, width, tmp_path / f"{url_path}-{view}-{width}.zip")
                exported += check_bundle(files, width, kinds)
                print(f"{url_path} {view or ''} {width}: {time.monotonic() - started:.1f} s")
            shoot(page, f"export_{url_path.lower()}{'_' + view.lower() if view else ''}")
    assert len(exported) == 2 * (1 + 1 + 1 + 3 + 1), exported  # the 3D view exports one figure per panel
