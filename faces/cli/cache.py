"""`dat cache`: list, prune or clear the on-disk cache of DAT-Full's Cholesky factors.

  dat cache list             every cached factor, its size and when it was last used
  dat cache prune            remove the least recently used factors until the cache fits its cap
  dat cache clear            remove every cached factor (the next DAT-Full run computes its own again)

The cache is the workspace's ``cache/cholesky/`` (``$DAT_WORKSPACE``, else the project folder); its
cap is 8 GiB unless ``$DAT_CHOLESKY_CACHE_MAX`` says otherwise (e.g. 20G). DAT-Full keeps it under the
cap by itself after each factor it writes; ``prune`` applies a changed cap at once.
"""

from __future__ import annotations

import argparse
from pathlib import Path

from dat import diskcache


def cholesky_folder(folder: str | None) -> Path:
    from dat.fileio import workspace_root

    return Path(folder) if folder else workspace_root() / "cache" / "cholesky"


def add_cache_parser(sub) -> None:
    """Register `dat cache list|prune|clear`."""
    p = sub.add_parser("cache", help="list, prune or clear the cached Cholesky factors of DAT-Full",
                       description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("action", choices=("list", "prune", "clear"), help="what to do")
    p.add_argument("--folder", default=None,
                   help="the cache folder (default: the workspace's cache/cholesky/)")
    p.add_argument("--max", dest="cap", default=None,
                   help=f"cap for prune, e.g. 8G (default: ${diskcache.CHOLESKY_CAP_ENV}, else 8G)")
    p.set_defaults(func=cmd_cache)


def _gb(n: int) -> str:
    return f"{n / 2**30:.2f} GiB" if n >= 2**28 else f"{n / 2**20:.1f} MiB"


def cmd_cache(args) -> int:
    folder = cholesky_folder(args.folder)
    cap = diskcache.parse_size(args.cap, "--max") if args.cap is not None else diskcache.cholesky_cap()
    if args.action == "list":
        rows = diskcache.entries(folder)
        for row in rows:
            print(f"{_gb(row['bytes']):>11}  used {diskcache.describe_age(row['last_used']):<13} {row['name']}")
        total = sum(r["bytes"] for r in rows)
        print(f"{len(rows)} cached factor(s), {_gb(total)} of a {_gb(cap)} cap, in {folder}")
    elif args.action == "prune":
        removed = diskcache.prune(folder, cap)
        left = sum(r["bytes"] for r in diskcache.entries(folder))
        print(f"removed {len(removed)} factor(s); {_gb(left)} left of a {_gb(cap)} cap, in {folder}")
    else:
        removed = diskcache.clear(folder)
        print(f"removed {len(removed)} file(s) from {folder}")
    return 0
