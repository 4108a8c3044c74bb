"""Benchmark noise-profile sampling: set-up and per-draw time, top-k time and peak memory.

For growing n (linear heads OUT x IN on 64 x 64 tiles, up to 100 x 512 = 51,200, the ResNet18
CIFAR-100 head), with device-B:
  low-rank  parametric: top-k eigenpairs (Lanczos per tile shape) -> eta = mu + A_k z
  full      parametric: exact structured sampling per tile (never forms Sigma)
  dense     the same Sigma formed as an n x n matrix, Cholesky, eta = mu + L z (paper's DAT-Full);
            only up to --dense-max-n, as memory allows
Each measurement runs in a fresh subprocess, so its peak resident memory (ru_maxrss above the
process's level after imports) is its own. The script asserts that the parametric low-rank path
never allocates anything near an n x n float32 matrix.

Usage: python bench/bench_profiles.py [--max-n 51200] [--dense-max-n 12800] [--draws 20] [-k 10]
Timings are only comparable within one run on an otherwise idle machine.
"""

from __future__ import annotations

import argparse
import json
import resource
import subprocess
import sys
import time

LAYOUTS = [(10, 256), (10, 512), (100, 128), (100, 256), (100, 512)]  # n = 2560 ... 51,200


def _rss_kb() -> int:
    with open("/proc/self/status") as fh:
        for line in fh:
            if line.startswith("VmRSS:"):
                return int(line.split()[1])
    return 0


def measure_one(out: int, inp: int, method: str, k: int, draws: int) -> dict:
    import torch

    from dat.noise.crossbar import PRESETS
    from dat.noise.dense import DenseDevice
    from dat.noise.profile import bind
    from dat.noise.targets import Targets

    torch.set_num_threads(1)  # comparable numbers on a shared machine
    targets = Targets([("head", (out, inp))], tile=(64, 64))
    base_kb = _rss_kb()
    g = torch.Generator().manual_seed(0)
    res = {"n": targets.n, "method": method}
    t0 = time.perf_counter()
    prof = bind(PRESETS["device-B"], targets)
    if method == "low-rank":
        t1 = time.perf_counter()
        prof.eig(k)
        res["topk_s"] = time.perf_counter() - t1
        sampler = prof.sampler("low-rank", k=k)
        res["captured_variance"] = prof.captured_variance(k)
    elif method == "full":
        sampler = prof.sampler("full")
    else:
        dense = DenseDevice(prof.mean().numpy(), prof.dense(max_n=10**9).numpy())
        dprof = bind(dense, targets)
        t1 = time.perf_counter()
        dprof.eig(k)
        res["topk_s"] = time.perf_counter() - t1
        t1 = time.perf_counter()
        sampler = dprof.sampler("full")
        res["cholesky_s"] = time.perf_counter() - t1
    res["setup_s"] = time.perf_counter() - t0
    sampler.sample(1, g)  # warm-up
    t0 = time.perf_counter()
    for _ in range(draws):
        sampler.sample(1, g)
    res["draw_s"] = (time.perf_counter() - t0) / draws
    res["peak_extra_mb"] = max(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss - base_kb, 0) / 1024
    res["nxn_float32_mb"] = targets.n**2 * 4 / 2**20
    return res


def main(argv=None):
    ap = argparse.ArgumentParser(description="Benchmark noise-profile sampling.")
    ap.add_argument("--max-n", type=int, default=51200, help="largest n to run")
    ap.add_argument("--dense-max-n", type=int, default=12800, help="largest n for the dense n x n path")
    ap.add_argument("--draws", type=int, default=20, help="draws timed per measurement")
    ap.add_argument("-k", type=int, default=10, help="rank of the low-rank sampler")
    ap.add_argument("--one", nargs=3, metavar=("OUT", "IN", "METHOD"), help=argparse.SUPPRESS)
    args = ap.parse_args(argv)
    if args.one:
        print(json.dumps(measure_one(int(args.one[0]), int(args.one[1]), args.one[2], args.k, args.draws)))
        return
    rows = []
    print(f"{'n':>7} {'method':>9} {'setup s':>9} {'top-k s':>9} {'draw ms':>9} {'peak MB':>9} {'nxn MB':>9}")
    for out, inp in LAYOUTS:
        n = out * inp
        if n > args.max_n:
            break
        for method in ("low-rank", "full", "dense"):
            if method == "dense" and n > args.dense_max_n:
                continue
            cmd = [sys.executable, __file__, "--one", str(out), str(inp), method, "-k", str(args.k),
                   "--draws", str(args.draws)]
            r = json.loads(subprocess.run(cmd, check=True, capture_output=True, text=True).stdout.splitlines()[-1])
            rows.append(r)
            print(f"{n:>7} {method:>9} {r['setup_s']:>9.3f} {r.get('topk_s', float('nan')):>9.3f} "
                  f"{1e3 * r['draw_s']:>9.3f} {r['peak_extra_mb']:>9.1f} {r['nxn_float32_mb']:>9.1f}")
            if method == "low-rank" and n >= 10_000:
                # the parametric low-rank path must not allocate an n x n matrix
                assert r["peak_extra_mb"] < 0.1 * r["nxn_float32_mb"], r
    print("\nratios (dense / low-rank, full / low-rank):")
    by = {(r["n"], r["method"]): r for r in rows}
    for n in sorted({r["n"] for r in rows}):
        lr = by[(n, "low-rank")]
        parts = [f"n={n}"]
        for m in ("full", "dense"):
            if (n, m) in by:
                r = by[(n, m)]
                parts.append(f"{m}: setup x{r['setup_s'] / lr['setup_s']:.2f}, draw x{r['draw_s'] / lr['draw_s']:.2f}, "
                             f"memory x{max(r['peak_extra_mb'], 0.1) / max(lr['peak_extra_mb'], 0.1):.1f}")
        parts.append(f"captured variance (k={args.k}) {lr['captured_variance']:.3f}")
        print("  " + "; ".join(parts))
    print(json.dumps(rows))


if __name__ == "__main__":
    main()
