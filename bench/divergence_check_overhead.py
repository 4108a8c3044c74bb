"""Cost of the per-step divergence check (dat.train._non_finite) relative to one DAT-Fast training
step, measured side by side (interleaved) in one run, on the digits presets. Prints the ratio.

    PYTHONPATH=. python bench/divergence_check_overhead.py
"""

import time

import torch

from dat.config import resolve
from dat.data import load_dataset
from dat.train import _non_finite, build_run


def main(repeats: int = 30) -> None:
    for preset in ("digits", "digits-resnet18"):
        config = resolve(preset, method="dat-fast")
        bundle = load_dataset(config.dataset)
        run = build_run(config, bundle, torch.device("cpu"))
        model, optimizer, step_fn = run.model, run.optimizer, run.step
        x, y = bundle.train.tensors[0][: config.batch_size], bundle.train.tensors[1][: config.batch_size]
        step_s, check_s = [], []
        for _ in range(repeats):
            t0 = time.perf_counter()
            loss, _ = step_fn(model, optimizer, x, y)
            t1 = time.perf_counter()
            _non_finite(float(loss), model)
            t2 = time.perf_counter()
            step_s.append(t1 - t0)
            check_s.append(t2 - t1)
        step, check = sorted(step_s)[repeats // 2], sorted(check_s)[repeats // 2]
        print(f"{preset}: median step {1e3 * step:.2f} ms, median check {1e3 * check:.3f} ms, "
              f"check / step = {check / step:.4f} ({repeats} interleaved repeats, {torch.get_num_threads()} threads)")


if __name__ == "__main__":
    main()
