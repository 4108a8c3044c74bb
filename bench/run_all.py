"""Every speed ratio of the project, each measured side by side in one run: one table, one CSV.

    python bench/run_all.py [--quick] [--paper] [--csv FILE] [--threads N]      (or: make bench)

Each module of BENCHES (in bench/) exposes ``rows(quick: bool = False) -> list[dict]`` with the keys
of COLUMNS; a module's ``rows`` may also take ``paper`` (--paper: the paper's sizes, long). Adding a
benchmark is adding its module name to BENCHES. ``--quick`` runs tiny sizes, to check that every
benchmark still runs; its ratios mean nothing. Absolute seconds depend on the machine and its load;
each ratio compares two timings taken one after the other in this process.
"""

from __future__ import annotations

import argparse
import csv
import importlib
import inspect
import io
import os
import platform
import sys
import time
from pathlib import Path

from dat.fileio import atomic_write_bytes

HERE = Path(__file__).resolve().parent
BENCHES = ["bench_landscape", "bench_training", "bench_dashboard"]
COLUMNS = ("what", "ours_s", "baseline", "baseline_s", "ratio", "goal", "met")


def machine() -> str:
    """The CPU model, core count and torch's thread count, for the table's caption."""
    import torch

    cpu = platform.processor() or platform.machine()
    try:
        with open("/proc/cpuinfo") as fh:
            names = [line.split(":", 1)[1].strip() for line in fh if line.startswith("model name")]
        cpu = names[0] if names else cpu
    except OSError:
        pass
    return f"{cpu}, {os.cpu_count()} cores, torch {torch.__version__} with {torch.get_num_threads()} threads"


def collect(names, quick: bool = False, paper: bool = False) -> list[dict]:
    """The rows of every named bench module, in order; a row missing a column is an error."""
    if str(HERE) not in sys.path:
        sys.path.insert(0, str(HERE))
    out = []
    for name in names:
        module = importlib.import_module(name)
        options = {"quick": quick, "paper": paper}
        accepted = inspect.signature(module.rows).parameters
        started = time.perf_counter()
        rows = module.rows(**{k: v for k, v in options.items() if k in accepted})
        print(f"[{name}: {time.perf_counter() - started:.0f} s]", flush=True)
        for row in rows:
            missing = [c for c in COLUMNS if c not in row]
            if missing:
                raise ValueError(f"{name}.rows(): expected the columns {COLUMNS}, found a row without {missing}")
            out.append({c: row[c] for c in COLUMNS})
    return out


def _fmt(value) -> str:
    return f"{value:.3g}" if isinstance(value, float) else str(value)


def table(rows: list[dict]) -> str:
    """The rows as a Markdown table (seconds and ratios to 3 significant digits)."""
    head = ["what", "ours (s)", "baseline", "baseline (s)", "ratio", "goal", "met"]
    lines = ["| " + " | ".join(head) + " |", "|" + "|".join(["---", "---:", "---", "---:", "---:", "---", "---"]) + "|"]
    lines += ["| " + " | ".join(_fmt(r[c]) for c in COLUMNS) + " |" for r in rows]
    return "\n".join(lines)


def write_csv(rows: list[dict], path, caption: str) -> None:
    """The rows and the machine they were measured on, as CSV, written atomically."""
    buf = io.StringIO()
    writer = csv.DictWriter(buf, fieldnames=[*COLUMNS, "machine"], lineterminator="\n")
    writer.writeheader()
    writer.writerows({**r, "machine": caption} for r in rows)
    atomic_write_bytes(path, buf.getvalue().encode())


def main(argv=None, benches=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--quick", action="store_true", help="tiny sizes: check that every benchmark runs")
    ap.add_argument("--paper", action="store_true", help="DAT-Full vs DAT-Fast at the paper's n = 25,600 (long)")
    ap.add_argument("--csv", default="bench_results.csv", help="where the table is written as CSV")
    ap.add_argument("--threads", type=int, default=None, help="torch threads (default: torch's own choice)")
    args = ap.parse_args(argv)
    import torch

    if args.threads:
        torch.set_num_threads(args.threads)
    rows = collect(BENCHES if benches is None else benches, quick=args.quick, paper=args.paper)
    caption = machine()
    print(f"\nMeasured on {caption}" + (" (--quick: sizes too small for the ratios to mean anything)" if args.quick
                                         else ""))
    print(table(rows))
    write_csv(rows, args.csv, caption)
    print(f"wrote {Path(args.csv).resolve()}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
