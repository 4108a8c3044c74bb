"""The dashboard's workspace: where profiles, checkpoints and caches live, and what is in them.

One folder (the project root by default, or ``$DAT_WORKSPACE``) holds ``profiles/`` (saved device
profiles), ``checkpoints/`` (trained models, the demo trio among them), ``cache/`` (landscape
results) and ``jobs.json`` (the dashboard's background jobs, kept across server restarts). Pages ask this module what is there instead of globbing folders themselves, so the
rules (which names are allowed, how uploads are stored) live in one tested place.
"""

from __future__ import annotations

import os
import re
from dataclasses import dataclass
from pathlib import Path

from faces.dashboard import jobs
from dat.errors import UserError
from dat.fileio import check_name, clean_stale_temps, temp_file, workspace_root
from dat.trio import ROLES

# Uploaded checkpoints larger than this are refused before anything is written: the digits and
# CIFAR CNN6 models are a few MB, ResNet18 about 45 MB.
MAX_UPLOAD_BYTES = 200 * 1024 * 1024
@dataclass(frozen=True)
class Workspace:
    """The folders the dashboard reads and writes, under one root."""

    root: Path

    @classmethod
    def default(cls) -> "Workspace":
        """``$DAT_WORKSPACE`` if set (tests point it at a temporary folder), else the project root."""
        return cls(workspace_root())

    @property
    def profiles_dir(self) -> Path:
        return self.root / "profiles"

    @property
    def checkpoints_dir(self) -> Path:
        return self.root / "checkpoints"

    @property
    def cache_dir(self) -> Path:
        return self.root / "cache"

    @property
    def jobs_file(self) -> Path:
        return self.root / "jobs.json"

    def clean_stale_temps(self) -> list[Path]:
        """Remove the temporary files that writers killed mid-write left in the workspace's folders
        (``dat.fileio.clean_stale_temps``); returns what was removed."""
        folders = [self.root, self.profiles_dir]
        for top in (self.checkpoints_dir, self.cache_dir):
            folders.append(top)
            if top.is_dir():
                folders += sorted(p for p in top.iterdir() if p.is_dir() and not p.name.startswith("."))
        return [path for folder in folders for path in clean_stale_temps(folder)]

    # -- jobs ----------------------------------------------------------------------------------
    def list_jobs(self) -> list[jobs.Job]:
        """The dashboard's jobs in this workspace, newest first: those of this server and those kept
        in ``jobs.json`` by an earlier one (queued or running then: "interrupted" now)."""
        jobs.registry().adopt(self.jobs_file)
        return jobs.registry().jobs(self.jobs_file)

    # -- profiles ------------------------------------------------------------------------------
    def profile_path(self, name: str) -> Path:
        return self.profiles_dir / f"{check_name(name, 'profile name')}.npz"

    def list_profiles(self) -> list[dict]:
        """Saved profiles: name, path, size, modified time; sorted by name."""
        if not self.profiles_dir.is_dir():
            return []
        rows = []
        for p in sorted(self.profiles_dir.glob("*.npz")):
            st = p.stat()
            rows.append({"name": p.stem, "path": str(p), "bytes": st.st_size, "modified": st.st_mtime})
        return rows

    def save_profile(self, name: str, device, *, overwrite: bool = False, **meta) -> Path:
        """Save a device under ``profiles/NAME.npz`` (atomic, through ``dat.noise.io``)."""
        from dat.noise.io import save_device

        path = self.profile_path(name)
        if path.exists() and not overwrite:
            raise FileExistsError(f"a profile named {name!r} already exists at {path}; pick another name")
        self.profiles_dir.mkdir(parents=True, exist_ok=True)
        save_device(path, device, **meta)
        return path

    # -- checkpoints ---------------------------------------------------------------------------
    def list_checkpoints(self) -> list[dict]:
        """Every checkpoint in ``checkpoints/`` and its direct subfolders (a trained trio lives in a
        folder of its own), with its metadata (``dat.checkpoint``) plus ``name`` (the path relative
        to ``checkpoints/``) and ``group`` (the subfolder, "" for top level)."""
        from dat.checkpoint import list_checkpoints

        if not self.checkpoints_dir.is_dir():
            return []
        self.clean_stale_temps()
        folders = [self.checkpoints_dir] + sorted(p for p in self.checkpoints_dir.iterdir()
                                                  if p.is_dir() and not p.name.startswith("."))
        rows = []
        for folder in folders:
            for meta in list_checkpoints(folder):
                rel = Path(meta["path"]).relative_to(self.checkpoints_dir)
                rows.append({**meta, "name": rel.as_posix(),
                             "group": rel.parent.as_posix() if rel.parent != Path(".") else ""})
        return rows

    def trios(self, rows: list[dict] | None = None) -> dict[str, dict[str, str]]:
        """Folders holding a complete trio: {group: {"sgd": path, "dat-a": path, "dat-b": path}}.

        ``train_trio`` and ``make_demo`` write ``sgd``, ``dat-a`` and ``dat-b`` checkpoints side by
        side; the top-level folder (the demo) is the group "" shown as "demo". ``rows``: a listing
        already made (``list_checkpoints()``), so a page reads the headers once."""
        found: dict[str, dict[str, str]] = {}
        for row in self.list_checkpoints() if rows is None else rows:
            role = Path(row["path"]).stem
            if role in ROLES:
                found.setdefault(row["group"], {})[role] = row["path"]
        return {g: roles for g, roles in found.items() if len(roles) == len(ROLES)}

    def checkpoint_path(self, name: str) -> Path:
        """Path of a checkpoint by its name relative to ``checkpoints/`` (at most one subfolder),
        refusing anything that would leave ``checkpoints/``."""
        if not isinstance(name, str):
            raise TypeError(f"checkpoint name must be a string, found {type(name).__name__}")
        parts = name.split("/")
        if len(parts) > 2:
            raise ValueError(f"checkpoint name must be FILE or FOLDER/FILE, found {name!r}")
        for part in parts:
            check_name(part, "checkpoint name part")
        path = self.checkpoints_dir.joinpath(*parts)
        if not path.is_file():
            raise FileNotFoundError(f"checkpoint {name!r} not found in {self.checkpoints_dir}")
        return path

    def store_checkpoint_upload(self, filename: str, data: bytes,
                                max_bytes: int = MAX_UPLOAD_BYTES) -> Path:
        """Validate an uploaded checkpoint and store it under a fresh name in ``checkpoints/``.

        The bytes go to a hidden temporary file first; ``dat.checkpoint.load_checkpoint`` must
        build a model from them (it never unpickles), and only then is the file moved into place
        with ``os.replace``. Anything wrong raises ``ValueError`` naming what was expected.
        """
        from dat.checkpoint import CHECKPOINT_SUFFIX, load_checkpoint

        if not isinstance(data, (bytes, bytearray)):
            raise TypeError(f"upload data must be bytes, found {type(data).__name__}")
        if len(data) == 0:
            raise ValueError(f"uploaded file {filename!r} is empty")
        if len(data) > max_bytes:
            raise ValueError(f"uploaded file {filename!r} is {len(data) / 2**20:.1f} MB; the limit is "
                             f"{max_bytes / 2**20:.1f} MB")  # Streamlit's MB, as the upload widget says
        stem, suffix = os.path.splitext(os.path.basename(str(filename)))
        if suffix != CHECKPOINT_SUFFIX:
            raise ValueError(f"expected a {CHECKPOINT_SUFFIX} checkpoint, found {filename!r}")
        stem = re.sub(r"[^A-Za-z0-9_.-]", "_", stem).lstrip("._-")[:40] or "upload"
        self.checkpoints_dir.mkdir(parents=True, exist_ok=True)
        tmp = temp_file(self.checkpoints_dir, "upload")  # named after this process: see clean_stale_temps
        try:
            with open(tmp, "wb") as fh:
                fh.write(bytes(data))
            try:
                load_checkpoint(tmp)
            except Exception as exc:  # any failure to build a model means: not a valid checkpoint
                reason = str(exc).replace(str(tmp), str(filename))  # the user's name, not our temporary one
                raise ValueError(f"uploaded file {filename!r} is not a valid checkpoint: {reason}") from exc
            final = jobs.reserve_path(self.checkpoints_dir, stem, CHECKPOINT_SUFFIX)
            os.replace(tmp, final)
            return final
        finally:
            if os.path.exists(tmp):
                os.unlink(tmp)

    # -- the whole picture ---------------------------------------------------------------------
    def summary(self) -> dict:
        """Counts for the home page: profiles, checkpoints, this workspace's running or queued jobs,
        its interrupted and failed ones (``jobs_error``: why its jobs file could not be read)."""
        self.clean_stale_temps()
        checkpoints = self.list_checkpoints()  # unreadable files are skipped by dat.checkpoint
        try:
            listed, jobs_error = self.list_jobs(), None
        except UserError as exc:  # a damaged jobs.json: say so, count this server's jobs only
            listed, jobs_error = jobs.registry().jobs(self.jobs_file), str(exc)
        active = [j for j in listed if j.active]
        return {"root": str(self.root), "profiles": len(self.list_profiles()),
                "checkpoints": len(checkpoints), "jobs_running": len(active),
                "job_labels": [j.label for j in active],
                "jobs_interrupted": sum(j.state == jobs.INTERRUPTED for j in listed),
                "jobs_failed": sum(j.state == jobs.FAILED for j in listed), "jobs_error": jobs_error}
