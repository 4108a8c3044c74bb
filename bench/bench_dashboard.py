"""Dashboard latency in a real browser: first render of every page on a fresh server, and a cached rerun.

For each page (the home page and pages/*), a fresh `streamlit run app.py` starts on a temporary
workspace holding a miniature demo trio and the saved device-A / device-B profiles (the state after
`dat demo`); once `/_stcore/health` answers, headless Chromium (Debian's, driven by Playwright) opens
the page. Measured from the navigation's start:
  first render   until the server says the page's script finished (the `script_finished` message on
                 the page's websocket): every element drawn, every figure computed;
  cached rerun   the same page opened again (a new session on the same server: modules imported,
                 st.cache_data / st.cache_resource filled).
The baseline, measured side by side in the same run: a bare Streamlit page (a title only) on a fresh
server of its own, first visit and reload: what any page costs on this machine (server warm-up,
JavaScript bundle, websocket). Goals (issue 10): first render <= 2 s, cached <= 1 s.

Usage: python bench/bench_dashboard.py [--quick]   (quick: home and Device profiles only)
Needs the `playwright` package and Debian's `chromium` on PATH. Timings are only comparable within
one run on an otherwise idle machine.
"""

from __future__ import annotations

import argparse
import os
import shutil
import socket
import subprocess
import sys
import tempfile
import time
import urllib.request
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
# url path -> what the table calls it; "" is the home page.
PAGES = {"": "Home", "Device_profiles": "Device profiles", "Train": "Train", "Models": "Models",
         "Noise_curves": "Noise curves", "Loss_surfaces": "Loss surfaces", "Compare_devices": "Compare devices",
         "Instruments": "Instruments"}
QUICK_PAGES = ("", "Device_profiles")
FIRST_GOAL_S, CACHED_GOAL_S = 2.0, 1.0
CHROMIUM_ARGS = ["--no-sandbox", "--disable-gpu", "--disable-dev-shm-usage", "--disable-background-networking",
                 "--disable-component-update", "--disable-sync", "--no-first-run"]
BARE_PAGE = 'import streamlit as st\n\nst.title("A bare page")\n'


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class Server:
    """`python -m streamlit run SCRIPT` on a free localhost port (the server is this very process
    id, so stopping it stops exactly what was started)."""

    def __init__(self, script: Path, workspace: Path, log: Path):
        self.port = _free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        self.log = open(log, "ab")
        self.proc = subprocess.Popen(
            [sys.executable, "-m", "streamlit", "run", str(script), "--server.headless", "true",
             "--server.address", "127.0.0.1", "--server.port", str(self.port),
             "--browser.gatherUsageStats", "false", "--server.fileWatcherType", "none"],
            cwd=script.parent, env={**os.environ, "DAT_WORKSPACE": str(workspace),
                                    "PYTHONPATH": os.pathsep.join(filter(None, [str(ROOT), os.environ.get("PYTHONPATH")]))},
            stdout=self.log, stderr=subprocess.STDOUT)
        deadline = time.monotonic() + 120
        while True:
            try:
                with urllib.request.urlopen(f"{self.url}/_stcore/health", timeout=2) as r:
                    if r.status == 200:
                        return
            except OSError:
                pass
            if self.proc.poll() is not None or time.monotonic() > deadline:
                self.stop()
                raise RuntimeError(f"streamlit did not start; see {log}")
            time.sleep(0.1)

    def stop(self) -> None:
        self.proc.terminate()
        try:
            self.proc.wait(timeout=15)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait()
        self.log.close()


def _script_finished(payload) -> bool:
    """Whether a websocket frame is Streamlit's "script finished" message."""
    from streamlit.proto.ForwardMsg_pb2 import ForwardMsg

    if isinstance(payload, str):
        return False
    msg = ForwardMsg()
    try:
        msg.ParseFromString(payload)
    except Exception:  # a frame that is not a ForwardMsg (protobuf's DecodeError): not ours
        return False
    return msg.WhichOneof("type") == "script_finished"


# A page that has not finished by then is reported as taking this long (and missing its goal).
TIMEOUT_S = 600.0


def visit(page, url: str, timeout_s: float = TIMEOUT_S) -> float:
    """Seconds from navigating to ``url`` until the page's script has finished its first run
    (``timeout_s`` if it has not by then); raises if the page shows an exception."""
    finished: list[float] = []

    def on_socket(ws):
        ws.on("framereceived", lambda payload: _script_finished(payload) and finished.append(time.perf_counter()))

    page.on("websocket", on_socket)
    try:
        t0 = time.perf_counter()
        page.goto(url, wait_until="commit")
        while not finished:
            if time.perf_counter() - t0 > timeout_s:
                print(f"{url}: not finished within {timeout_s:g} s", file=sys.stderr)
                return timeout_s
            page.wait_for_timeout(10)
    finally:
        page.remove_listener("websocket", on_socket)
    boxes = page.locator('[data-testid="stException"]')
    if boxes.count():
        raise RuntimeError(f"{url} shows an exception: {boxes.first.inner_text()[:500]}")
    return finished[0] - t0


def measure(script: Path, workspace: Path, path: str, browser, log: Path) -> tuple[float, float]:
    """(first render on a fresh server, a second visit on the same server) of one page."""
    server = Server(script, workspace, log)
    try:
        context = browser.new_context(viewport={"width": 1400, "height": 1000})
        try:
            page = context.new_page()
            first = visit(page, f"{server.url}/{path}")
            second = visit(page, f"{server.url}/{path}")
        finally:
            context.close()
    finally:
        server.stop()
    return first, second


def demo_workspace(root: Path) -> Path:
    """A workspace as `dat demo` leaves it, with a miniature trio (one epoch, narrow CNN) so that
    making it takes seconds: page latency depends on what is listed, not on the models' size."""
    from dat.train import make_demo

    make_demo(folder=str(root / "checkpoints"), profiles_folder=str(root / "profiles"),
              epochs=1, width=4, hidden=8, eval_draws=2)
    return root


def rows(quick: bool = False) -> list[dict]:
    """One row per page and measurement: what, ours_s, baseline, baseline_s, ratio, goal, met."""
    from playwright.sync_api import sync_playwright

    chromium = shutil.which("chromium") or shutil.which("chromium-browser")
    if chromium is None:
        raise RuntimeError("bench_dashboard needs Debian's chromium on PATH (apt-get install chromium)")
    pages = {p: PAGES[p] for p in (QUICK_PAGES if quick else PAGES)}
    out = []
    with tempfile.TemporaryDirectory(prefix="dat-bench-dashboard-") as tmp:
        tmp = Path(tmp)
        workspace = demo_workspace(tmp / "ws")
        bare = tmp / "bare" / "bare.py"
        bare.parent.mkdir()
        bare.write_text(BARE_PAGE)
        log = tmp / "streamlit.log"
        with sync_playwright() as p:
            browser = p.chromium.launch(executable_path=chromium, args=CHROMIUM_ARGS)
            try:
                measure(bare, workspace, "", browser, log)  # the browser's own first start, not counted
                base_first, base_cached = measure(bare, workspace, "", browser, log)
                for path, title in pages.items():
                    first, cached = measure(ROOT / "app.py", workspace, path, browser, log)
                    for kind, ours, base, goal in (("first render, fresh server", first, base_first, FIRST_GOAL_S),
                                                   ("cached rerun", cached, base_cached, CACHED_GOAL_S)):
                        out.append({"what": f"dashboard {title}: {kind}", "ours_s": round(ours, 3),
                                    "baseline": f"bare Streamlit page: {kind}", "baseline_s": round(base, 3),
                                    "ratio": round(ours / base, 2), "goal": f"<= {goal:g} s",
                                    "met": bool(ours <= goal)})
            finally:
                browser.close()
    return out


def main(argv=None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--quick", action="store_true", help="the home page and Device profiles only")
    args = parser.parse_args(argv)
    table = rows(quick=args.quick)
    print(f"{'what':<58} {'ours_s':>7} {'bare_s':>7} {'ratio':>6}  {'goal':<8} met")
    for r in table:
        print(f"{r['what']:<58} {r['ours_s']:>7.2f} {r['baseline_s']:>7.2f} {r['ratio']:>6.2f}  {r['goal']:<8} "
              f"{'yes' if r['met'] else 'NO'}")


if __name__ == "__main__":
    sys.path.insert(0, str(ROOT))
    main()
