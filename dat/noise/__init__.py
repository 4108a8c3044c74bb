"""The noise profile: a device's N(mu, Sigma) over a model's noise targets (layer 1 of the library)."""
