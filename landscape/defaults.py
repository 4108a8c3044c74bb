"""Default grids and draw counts of the landscapes, in one place: the landscape spec, the CLI and the
dashboard's pages all start from these.

- Surface (paper Fig. 1): alpha in [-0.5, 1.5] and beta in [-0.3, 0.8] (the paper's ranges) at
  21 x 23 points, steps of 0.1 and 0.05, so that all three markers (0, 0), (1, 0) and (0.5, 0.5)
  are grid points; S = 8 noise draws per grid point (each point's mean carries its standard error).
- Free plane: alpha and beta in [-1, 1], the same grid and draws.
- Curves (paper Fig. 2): 61 points over [-3 r, 3 r] (r the device's typical noise norm), 20 noise
  directions per device.
"""

SURFACE_ALPHA_RANGE = (-0.5, 1.5)
SURFACE_BETA_RANGE = (-0.3, 0.8)
FREE_PLANE_RANGE = (-1.0, 1.0)
SURFACE_RESOLUTION = (21, 23)   # (points along alpha, points along beta)
SURFACE_DRAWS = 8               # noise draws S per grid point
CURVE_SPAN = 3.0                # the alpha grid is [-span r, span r]
CURVE_POINTS = 61               # points of that grid
CURVE_DRAWS = 20                # noise directions per device


def default_ranges(kind: str) -> tuple[tuple[float, float], tuple[float, float]]:
    """(alpha range, beta range) of a surface ("surface") or a free plane ("free-plane")."""
    if kind == "free-plane":
        return FREE_PLANE_RANGE, FREE_PLANE_RANGE
    return SURFACE_ALPHA_RANGE, SURFACE_BETA_RANGE


def default_draws(kind: str) -> int:
    """Noise draws of a landscape kind: directions per device for curves, S per point otherwise."""
    return CURVE_DRAWS if kind == "curves" else SURFACE_DRAWS
