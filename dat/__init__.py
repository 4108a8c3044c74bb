"""Device-Aware Training (DAT) for ReRAM crossbar hardware.

The library behind the dashboard and the `dat` command: device noise profiles, the four Table I
training methods plus two baselines, noisy evaluation and checkpoints.
"""

__version__ = "0.1.0"
