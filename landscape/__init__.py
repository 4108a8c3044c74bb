"""Loss landscapes along device noise directions: 1D curves, 2D (alpha, beta) surfaces, figures, export.

The names below are loaded on first use (PEP 562), so that importing a light module of the package
(`landscape.defaults`, `landscape.results`, `landscape.figures`) does not import torch: the
dashboard's pages draw their forms with those before torch has loaded.
"""

import importlib

__version__ = "0.1.0"

_WHERE = {"ResultCache": "cache", "noise_curves": "curves", "filter_normalized_direction": "directions",
          "noise_directions": "directions", "random_plane": "directions", "trio_plane": "directions",
          "Comparison": "results", "Curves": "results", "Surface": "results", "LandscapeSpec": "spec",
          "run_spec": "spec", "compare_devices": "summary", "evaluate_chunk": "surfaces", "free_plane": "surfaces",
          "plane_surface": "surfaces", "surface_on_plane": "surfaces"}

__all__ = list(_WHERE)


def __getattr__(name: str):
    if name not in _WHERE:
        raise AttributeError(f"module 'landscape' has no attribute {name!r}")
    value = getattr(importlib.import_module(f".{_WHERE[name]}", __name__), name)
    globals()[name] = value  # later lookups skip this function
    return value


def __dir__():
    return sorted(set(globals()) | set(_WHERE))
