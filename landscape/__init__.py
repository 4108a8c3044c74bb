"""Loss landscapes along device noise directions: 1D curves, 2D (alpha, beta) surfaces, figures, export."""
