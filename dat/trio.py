"""The trio of paper Fig. 1, defined once: SGD, DAT on device A, DAT on device B.

Each member has a role (the key of `dat.train.train_trio`'s result and the file stem of its
checkpoint, "sgd.safetensors"), a label (its name on the plane and in landscape specs), a title (what
the dashboard calls it) and its marker: where the plane through the three puts it, in (alpha, beta)
coordinates (u = w_DAT-A - w_SGD, v = 2 w_DAT-B - w_DAT-A - w_SGD).
"""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class Member:
    role: str
    label: str
    title: str
    marker: tuple[float, float]


TRIO = (Member("sgd", "SGD", "SGD", (0.0, 0.0)),
        Member("dat-a", "DAT-A", "DAT on device A", (1.0, 0.0)),
        Member("dat-b", "DAT-B", "DAT on device B", (0.5, 0.5)))
ROLES = tuple(m.role for m in TRIO)                       # ("sgd", "dat-a", "dat-b")
LABELS = tuple(m.label for m in TRIO)                     # ("SGD", "DAT-A", "DAT-B")
LABEL_OF = {m.role: m.label for m in TRIO}                # role -> label
TITLE_OF = {m.role: m.title for m in TRIO}                # role -> title
MARKERS = {m.label: m.marker for m in TRIO}               # label -> (alpha, beta) on the plane
