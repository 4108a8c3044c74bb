"""Sweep DAT's alpha on digits: clean and noisy test accuracy of DAT-Fast for a handful of alphas,
two seeds, each device (train and test on the same device). The table in docs/training.md comes
from this script; it justifies the default alpha.

    .venv/bin/python bench/alpha_sweep.py [--alphas 0,10,30,100,300,1000] [--seeds 0,1] [--epochs 8]
"""

from __future__ import annotations

import argparse
import statistics
import tempfile
import time

import torch

from dat.config import resolve
from dat.train import train


def main(argv=None) -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--alphas", default="0,10,30,100,300,1000", help="comma-separated alphas")
    parser.add_argument("--seeds", default="0,1", help="comma-separated seeds")
    parser.add_argument("--devices", default="device-A,device-B", help="comma-separated device profiles")
    parser.add_argument("--epochs", type=int, default=None, help="epochs (default: the digits preset's)")
    parser.add_argument("--method", default="dat-fast", help="dat-fast or dat-full")
    args = parser.parse_args(argv)
    alphas = [float(a) for a in args.alphas.split(",")]
    seeds = [int(s) for s in args.seeds.split(",")]
    devices = args.devices.split(",")
    print(f"torch {torch.__version__}, threads {torch.get_num_threads()}")
    print("| device | alpha | test clean (%) | test noisy (%) | noisy - clean |")
    print("|---|---:|---:|---:|---:|")
    t0 = time.perf_counter()
    with tempfile.TemporaryDirectory() as tmp:
        for device in devices:
            for alpha in alphas:
                clean, noisy = [], []
                for seed in seeds:
                    result = train(resolve("digits", method=args.method, device=device, alpha=alpha, seed=seed,
                                           epochs=args.epochs, resume=False,
                                           out=f"{tmp}/{device}-{alpha}-{seed}.safetensors"))
                    clean.append(100 * result.metrics["test"]["clean"]["acc"])
                    noisy.append(100 * result.metrics["test"]["noisy"]["acc_mean"])
                def fmt(v):
                    return f"{statistics.mean(v):.1f} ± {statistics.stdev(v):.1f}" if len(v) > 1 else f"{v[0]:.1f}"
                gap = [n - c for n, c in zip(noisy, clean)]
                print(f"| {device} | {alpha:g} | {fmt(clean)} | {fmt(noisy)} | {fmt(gap)} |", flush=True)
    print(f"wall time {time.perf_counter() - t0:.0f} s")


if __name__ == "__main__":
    main()
