"""Loss landscapes along device noise directions: 1D curves, 2D (alpha, beta) surfaces, figures, export."""

__version__ = "0.1.0"

from .cache import ResultCache  # noqa: E402
from .curves import noise_curves  # noqa: E402
from .directions import filter_normalized_direction, noise_directions, random_plane, trio_plane  # noqa: E402
from .results import Comparison, Curves, Surface  # noqa: E402
from .spec import LandscapeSpec, run_spec  # noqa: E402
from .summary import compare_devices  # noqa: E402
from .surfaces import evaluate_chunk, free_plane, plane_surface, surface_on_plane  # noqa: E402

__all__ = ["Curves", "Surface", "ResultCache", "noise_curves", "plane_surface", "free_plane", "surface_on_plane",
           "evaluate_chunk", "trio_plane", "random_plane", "noise_directions", "filter_normalized_direction",
           "LandscapeSpec", "run_spec", "Comparison", "compare_devices"]
