"""Dashboard latency in a real browser: first render of every page on a fresh server, and a cached rerun.

For each page (the home page and pages/*), a fresh `streamlit run app.py` starts on a temporary
workspace holding a miniature demo trio and the saved device-A / device-B profiles (the state after
`dat demo`); once `/_stcore/health` answers, headless Chromium (Debian's, driven by Playwright) opens
the page. Measured from the navigation's start:
  usable         until the page's form is on screen: the control the user came for (MARKERS: the
                 Compute / Train button, Device profiles' parameter forms) is visible; the page may
                 still be computing below it (a spinner says so);
  complete       until the server says the page's script finished (the `script_finished` message on
                 the page's websocket): every element drawn, every figure computed;
  cached rerun   the same page opened again once the server is idle (a new session on the same
                 server: modules imported, the background import of torch that follows a first
                 visit ended, st.cache_data / st.cache_resource filled), until complete.
The baseline, measured side by side in the same run: a bare Streamlit page (a title only) on a fresh
server of its own, first visit and reload: what any page costs on this machine (server warm-up,
JavaScript bundle, websocket). Goals (issue 10): first render (usable) <= 2 s, cached <= 1 s; the
complete first render is reported beside them.

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

    def wait_idle(self, quiet_s: float = 1.0, busy_below: float = 0.05, timeout_s: float = 120.0) -> float:
        """Wait until the server has used under ``busy_below`` of a core for ``quiet_s`` (its background
        import of torch after a first visit, `faces.dashboard.warmup`, has ended); returns the wait."""
        tick = os.sysconf("SC_CLK_TCK")

        def cpu() -> float:
            with open(f"/proc/{self.proc.pid}/stat") as fh:
                fields = fh.read().rsplit(")", 1)[1].split()
            return (int(fields[11]) + int(fields[12])) / tick  # utime + stime

        t0 = time.monotonic()
        while time.monotonic() - t0 < timeout_s:
            before = cpu()
            time.sleep(quiet_s)
            if cpu() - before < busy_below * quiet_s:
                break
        return time.monotonic() - t0

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
# url path -> (role, name) of the control whose appearance makes the page usable ("text": any element).
MARKERS = {"": ("text", "Workspace folder"), "Device_profiles": ("text", "Change device B's parameters"),
           "Train": ("button", "Train the trio (SGD, DAT-A, DAT-B)"), "Models": ("button", "Evaluate"),
           "Noise_curves": ("button", "Compute curves"), "Loss_surfaces": ("button", "Compute surface"),
           "Compare_devices": ("button", "Compare"), "Instruments": ("button", "Make twin")}


def visit(page, url: str, marker: tuple[str, str] | None = None, timeout_s: float = TIMEOUT_S) -> tuple[float, float]:
    """(seconds until ``marker`` is visible, seconds until the page's script has finished its first
    run) from navigating to ``url`` (``timeout_s`` for what has not happened by then; without a
    marker, both are the script's end); raises if the page shows an exception."""
    finished: list[float] = []

    def on_socket(ws):
        ws.on("framereceived", lambda payload: _script_finished(payload) and finished.append(time.perf_counter()))

    page.on("websocket", on_socket)
    if marker is not None:
        role, name = marker
        control = (page.get_by_role("button", name=name, exact=True) if role == "button"
                   else page.get_by_text(name, exact=False)).first
    usable = None
    try:
        t0 = time.perf_counter()
        page.goto(url, wait_until="commit")
        while not finished or usable is None:
            now = time.perf_counter()
            if usable is None and (marker is None and finished or marker is not None and control.is_visible()):
                usable = (finished[0] if marker is None else now) - t0
            if now - t0 > timeout_s:
                print(f"{url}: not {'usable' if usable is None else 'finished'} within {timeout_s:g} s", file=sys.stderr)
                return (timeout_s if usable is None else usable), timeout_s
            page.wait_for_timeout(10)
    finally:
        page.remove_listener("websocket", on_socket)
    boxes = page.locator('[data-testid="stException"]')
    if boxes.count():
        raise RuntimeError(f"{url} shows an exception: {boxes.first.inner_text()[:500]}")
    return min(usable, finished[0] - t0), finished[0] - t0


def measure(script: Path, workspace: Path, path: str, browser, log: Path) -> tuple[float, float, float]:
    """(usable and complete on a fresh server, complete on a second visit to the same server) of one page."""
    server = Server(script, workspace, log)
    try:
        context = browser.new_context(viewport={"width": 1400, "height": 1000})
        try:
            page = context.new_page()
            usable, first = visit(page, f"{server.url}/{path}", MARKERS.get(path) if script.name == "app.py" else None)
            server.wait_idle()  # a cached rerun: every module imported, the background warm-up over
            second = visit(page, f"{server.url}/{path}")[1]
        finally:
            context.close()
    finally:
        server.stop()
    return usable, first, second


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
                _, base_first, base_cached = measure(bare, workspace, "", browser, log)
                for path, title in pages.items():
                    usable, first, cached = measure(ROOT / "app.py", workspace, path, browser, log)
                    for kind, ours, base, goal in (
                            ("first render (form usable), fresh server", usable, base_first, FIRST_GOAL_S),
                            ("first render complete, fresh server", first, base_first, None),
                            ("cached rerun", cached, base_cached, CACHED_GOAL_S)):
                        out.append({"what": f"dashboard {title}: {kind}", "ours_s": round(ours, 3),
                                    "baseline": f"bare Streamlit page: {'cached rerun' if kind == 'cached rerun' else 'first render, fresh server'}",
                                    "baseline_s": round(base, 3), "ratio": round(ours / base, 2),
                                    "goal": f"<= {goal:g} s" if goal else "", "met": "" if goal is None else "yes" if ours <= goal else "NO"})
            finally:
                browser.close()
    return out


def main(argv=None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--quick", action="store_true", help="the home page and Device profiles only")
    args = parser.parse_args(argv)
    table = rows(quick=args.quick)
    print(f"{'what':<72} {'ours_s':>7} {'bare_s':>7} {'ratio':>6}  {'goal':<8} met")
    for r in table:
        print(f"{r['what']:<72} {r['ours_s']:>7.2f} {r['baseline_s']:>7.2f} {r['ratio']:>6.2f}  {r['goal']:<8} {r['met']}")


if __name__ == "__main__":
    sys.path.insert(0, str(ROOT))
    main()
