"""Generate data/example_measurement.npz (+ a .csv excerpt) from a documented synthetic crossbar.

The synthetic device is the parametric crossbar model (dat.noise.crossbar) with the parameters in
EXAMPLE below, on one 16 x 16 tile. 200 repeated programmings are drawn with the model's exact
sampler (torch.Generator seeded with 0), as deviations from target in fractions of g_max. The
.npz holds them under "maps" [200, 16, 16] and the generating parameters as JSON under "source";
the .csv holds the first 40 samples in the layout `dat.noise.fitted.load_maps` reads.

Usage: python scripts/make_example_measurement.py [--out data/example_measurement.npz]
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

import numpy as np
import torch

from dat.noise.crossbar import CrossbarParams
from dat.fileio import atomic_write
from dat.noise.profile import bind
from dat.noise.targets import Targets

EXAMPLE = CrossbarParams(
    name="example-16x16",
    kernel="exponential",
    ell=3.0,  # cells
    sigma_spatial=0.03,  # fractions of g_max
    sigma_row=0.01,
    sigma_col=0.015,
    sigma_tile=0.005,
    prog_noise=1.0,  # x Wan et al. 2022 programming noise at t_seconds
    grad_col=0.01,
    t_seconds=60.0,
    scale=1.0,
)
TILE = (16, 16)
N_SAMPLES = 200
CSV_SAMPLES = 40
SEED = 0


def _with_file(path: str, write) -> None:
    # np.savez on a bare path would append ".npz" to the temporary name: write through a handle.
    with open(path, "wb") as fh:
        write(fh)


def make_maps(params: CrossbarParams = EXAMPLE, n_samples: int = N_SAMPLES, seed: int = SEED) -> np.ndarray:
    # One target of shape [cols, rows] fills exactly one tile, so eta is the tile's row-major cells.
    targets = Targets([("tile", (TILE[1], TILE[0]))], tile=TILE)
    eta = bind(params, targets).sampler("full").sample(n_samples, torch.Generator().manual_seed(seed))
    return eta.double().numpy().reshape(n_samples, *TILE)


def main(argv=None):
    ap = argparse.ArgumentParser(description="Generate the example measurement files.")
    ap.add_argument("--out", default="data/example_measurement.npz", help="output .npz (the .csv goes beside it)")
    args = ap.parse_args(argv)
    out = Path(args.out)
    out.parent.mkdir(parents=True, exist_ok=True)
    maps = make_maps()
    source = json.dumps({"generator": "scripts/make_example_measurement.py", "params": EXAMPLE.to_dict(),
                         "tile": list(TILE), "n_samples": N_SAMPLES, "seed": SEED})
    atomic_write(out, lambda tmp: _with_file(tmp, lambda fh: np.savez(fh, maps=maps.astype(np.float32),
                                                                     source=np.array(source))))

    def write_csv(fh):
        fh.write(f"# rows={TILE[0]} cols={TILE[1]}\n".encode())
        np.savetxt(fh, maps[:CSV_SAMPLES].reshape(CSV_SAMPLES, -1).astype(np.float32), fmt="%.7g", delimiter=",")

    atomic_write(out.with_suffix(".csv"), lambda tmp: _with_file(tmp, write_csv))
    print(f"wrote {out} ({N_SAMPLES} x {TILE[0]} x {TILE[1]}) and {out.with_suffix('.csv')} ({CSV_SAMPLES} samples)")


if __name__ == "__main__":
    main()
