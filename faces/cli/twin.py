"""`dat profile twin`: save the diagonal or isotropic twin of a device, bound to a training run's targets.

  dat profile twin device-A --kind diagonal -o profiles/device-A-diag.npz
  dat train --preset digits --method dat-fast --device profiles/device-A-diag.npz

A twin depends on the targets (n and layout), so it is bound to the model that
`dat train --preset P --targets T --tile N` builds (the same options here).
"""

from __future__ import annotations

from pathlib import Path

from dat.noise.choices import CHOICES
from dat.noise.twins import KINDS


def add_twin_parser(sub) -> None:
    """Register `twin` on the `dat profile` subparsers."""
    from dat.config import PRESETS

    t = sub.add_parser("twin", help="save the diagonal or isotropic twin of a device (correlation ablation)",
                       description=__doc__)
    t.add_argument("source", help="a preset (device-A, device-B), iid-wan2022, or a saved profile .npz")
    t.add_argument("--kind", choices=KINDS, default="diagonal",
                   help="diagonal: same per-cell variances, no correlation; isotropic: same total variance, even")
    t.add_argument("--preset", choices=sorted(PRESETS), default="digits", help="training preset whose model it binds to")
    t.add_argument("--targets", choices=CHOICES, default="last-linear", help="noise targets of that model")
    t.add_argument("--tile", type=int, default=64, help="crossbar tile size T of that run")
    t.add_argument("--name", help="profile name (default: <source>:<kind>)")
    t.add_argument("-o", "--out", help="output .npz (default: profiles/<source>-<kind>.npz)")


def run_twin_command(args) -> int:
    from dat.transfer import preset_profile
    from dat.noise.twins import save_twin

    profile, targets = preset_profile(args.source, args.preset, name=Path(args.source).stem, targets=args.targets,
                                      tile=args.tile)
    name = args.name or f"{Path(args.source).stem}:{args.kind}"
    out = Path(args.out) if args.out else Path("profiles") / f"{Path(args.source).stem}-{args.kind}.npz"
    meta = save_twin(out, profile, args.kind, name=name)
    print(f"saved {name} (n = {profile.n}, {args.kind} twin of {args.source} on "
          f"{', '.join(l.name for l in targets.layers)}) to {out}; hash {meta['content_hash'][:12]}")
    return 0
