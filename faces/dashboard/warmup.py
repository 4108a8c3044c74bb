"""Loading the heavy libraries in the background, once per server process.

A page draws its forms with light modules only (Streamlit, numpy, the metadata readers), so that a
first visit shows them at once; torch and the modules built on it take seconds to import on a fresh
server. `start()` (called by app.py after each page has drawn) imports them in a daemon thread while
the user reads the page, so that the first Compute, Train or Device profiles figure does not wait
for them. Python's import locks make a page that needs one of them meanwhile wait for that import
to finish; the project's modules import each other without cycles (tests/test_layers.py), so the
two threads cannot deadlock.
"""

from __future__ import annotations

import importlib
import threading

# What the pages' computations import, in the order they are first needed.
MODULES = ("torch", "dat.noise.io", "dat.profile_figures", "dat.evaluate", "dat.train", "landscape.spec",
           "landscape.surfaces", "landscape.curves")

_lock = threading.Lock()
_thread: threading.Thread | None = None


def _load(names) -> None:
    for name in names:
        try:
            importlib.import_module(name)
        except Exception:  # noqa: BLE001 - the page that needs it imports it again and shows the error
            return


def start() -> threading.Thread | None:
    """Start the background import once per process (later calls return the same thread); None when
    MODULES is empty."""
    global _thread
    with _lock:
        if _thread is None and MODULES:
            _thread = threading.Thread(target=_load, args=(tuple(MODULES),), name="dat-warm-up", daemon=True)
            _thread.start()
        return _thread
