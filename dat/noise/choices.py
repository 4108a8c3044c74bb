"""The names of the noise-target choices and of eta's units, without torch.

`dat.noise.targets` gives them their meaning; the configuration, the CLI and the dashboard's forms
offer them, and a form must be drawn before torch is imported (it takes seconds on a fresh server).
"""

# Which weights sit on crossbars ("last-linear": the paper's classifier head only).
CHOICES = ("last-linear", "all-analog")
# Units of eta: "relative" scales a layer's noise by max|W| (hardware maps max|W| to g_max).
UNITS = ("relative", "absolute")
