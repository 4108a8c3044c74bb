"""Background jobs for the dashboard: training runs that outlive a page, a rerun or a closed tab.

Streamlit re-executes a page script on every interaction, but it imports library modules once per
server process. So the registry of jobs lives here, at module level: a page submits a job, gets
its id, and later pages (or the same page after a rerun, or another browser tab) look it up again.

A job is a callable ``work(report, should_stop) -> dict``. It runs on a worker thread; ``report``
is a training callback (``cb(event, payload)``, the interface of ``dat.train.train``) that records
progress and metrics on the job; ``should_stop`` returns True once the user pressed cancel. What a
job returns (for training: the checkpoint paths it wrote) is kept on the job; work may return a pair
(that dict, an object kept in memory only as ``Job.output``). A job that raises is
marked failed with the error's message, and the dashboard shows it; nothing else is affected.

Every job that writes files gets its own output paths from :func:`reserve_path`, which never hands
out the same path twice in this process and never a path that already exists on disk, so two jobs
never write the same file.

A job submitted with a ``store`` (the workspace's ``jobs.json``) is kept on disk, rewritten
atomically at each change of state and after each epoch, so the list outlives the server. When a
restarted server reads the list (:meth:`JobRegistry.adopt`), jobs that were queued or running there
are "interrupted": no process runs them any more. A job submitted with a ``spec`` (a JSON
description of its work, e.g. the training config and output path) can be started again from that
description (:meth:`JobRegistry.resume`); training continues from its resume state. The list is one
server's: two dashboard servers on one workspace would overwrite each other's list (the outputs
stay safe: each training run holds the lock on its files).

Jobs run in lanes, each with its own worker: training in ``"train"``, landscape computations in
``"landscape"``, so a surface need not wait for a long training run (and each lane still runs one
job at a time). A job keeps in memory what its work made (``Job.output``, e.g. a computed surface)
next to the JSON ``result`` that goes into the file. Work that sees ``should_stop()`` between two
units of work may raise :class:`Stopped`: the job is then cancelled, not failed.
"""

from __future__ import annotations

import itertools
import json
import os
import secrets
import threading
import time
import traceback
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable

from dat.errors import UserError
from dat.fileio import atomic_write_bytes

# Job states, in the order a job moves through them.
QUEUED, RUNNING, DONE, FAILED, CANCELLED = "queued", "running", "done", "failed", "cancelled"
# A job that was queued or running when its server stopped (read back from the workspace's list).
INTERRUPTED = "interrupted"
FINISHED_STATES = (DONE, FAILED, CANCELLED, INTERRUPTED)
# States from which a job with a spec can be started again (training continues from its resume state).
RESUMABLE_STATES = (INTERRUPTED, CANCELLED)
STORE_FORMAT, STORE_VERSION = "dat-jobs", 1
# Lanes: each has its own worker thread (see the module's docstring).
TRAIN_LANE, LANDSCAPE_LANE = "train", "landscape"
LANES = (TRAIN_LANE, LANDSCAPE_LANE)


class Stopped(Exception):
    """Raised by a job's work when it stops on a cancel request between units of work."""

Report = Callable[[str, dict], None]
Work = Callable[[Report, Callable[[], bool]], dict | tuple[dict, object] | None]

# Keep at most this many numeric history points per job: enough for a smooth live curve,
# bounded so a long run cannot grow the server's memory without limit.
MAX_HISTORY = 5000
# The jobs file keeps every epoch point and at most this many step points per job, so that saving
# the list after each epoch stays cheap however many jobs it holds.
STORED_STEPS = 500


@dataclass
class Job:
    """One background job and everything the dashboard shows about it."""

    id: str
    label: str
    state: str = QUEUED
    progress: float = 0.0  # fraction done, 0..1
    stage: str = ""  # e.g. "dat-fast on device-A (2/3)"
    history: list[dict] = field(default_factory=list)  # numeric payloads of "step"/"epoch" events
    result: dict | None = None  # what the work returned (for training: checkpoint paths, metrics)
    error: str | None = None  # message of the exception that failed the job
    traceback: str | None = None
    outputs: list[str] = field(default_factory=list)  # paths reserved for this job's files
    submitted: float = field(default_factory=time.time)
    started: float | None = None
    finished: float | None = None
    spec: dict | None = None  # JSON description of the work, from which it can be started again
    store: str | None = None  # the jobs file that keeps this job on disk (None: memory only)
    lane: str = TRAIN_LANE  # which worker runs it
    output: object = field(default=None, repr=False)  # what the work made, in memory only (not in the file)
    _stop: threading.Event = field(default_factory=threading.Event, repr=False)
    # Clear while a worker owns the job: set once its final state is also on disk.
    _settled: threading.Event = field(default_factory=threading.Event, repr=False)

    def __post_init__(self):
        self._settled.set()

    @property
    def active(self) -> bool:
        return self.state in (QUEUED, RUNNING)

    @property
    def resumable(self) -> bool:
        """Interrupted (or cancelled) with a spec to start it again from."""
        return self.spec is not None and self.state in RESUMABLE_STATES

    def to_json(self) -> dict:
        """What the jobs file keeps of this job (everything but the store and the cancel flag)."""
        data = {k: getattr(self, k) for k in _STORED_FIELDS}
        history = list(self.history)  # a copy: the worker thread appends to it
        steps = [i for i, h in enumerate(history) if h.get("event") == "step"]
        if len(steps) > STORED_STEPS:  # evenly thinned, the last step kept
            dropped = set(steps) - {steps[round(j * (len(steps) - 1) / (STORED_STEPS - 1))]
                                    for j in range(STORED_STEPS)}
            history = [h for i, h in enumerate(history) if i not in dropped]
        data["history"] = history
        return data

    def cancel(self) -> None:
        """Ask the job to stop at its next ``should_stop`` check (a queued job never starts)."""
        self._stop.set()

    @property
    def cancel_requested(self) -> bool:
        return self._stop.is_set()

    def elapsed(self) -> float:
        """Seconds the job has run (so far, or in total once finished)."""
        if self.started is None:
            return 0.0
        return (self.finished or time.time()) - self.started


_STORED_FIELDS = ("id", "label", "state", "progress", "stage", "history", "result", "error", "traceback", "outputs",
                  "submitted", "started", "finished", "spec", "lane")
_STATES = (QUEUED, RUNNING, DONE, FAILED, CANCELLED, INTERRUPTED)


def _job_from_json(entry, store: str, where: str) -> Job:
    """A job read back from a jobs file, its fields checked (the file is data, not trusted code)."""
    if not isinstance(entry, dict):
        raise UserError(f"{where}: expected a job object, found {type(entry).__name__}")
    for key, kinds in (("id", str), ("label", str), ("state", str), ("progress", (int, float)),
                       ("submitted", (int, float))):
        if not isinstance(entry.get(key), kinds) or isinstance(entry.get(key), bool):
            raise UserError(f"{where}: expected field {key!r} of type {kinds}, found {entry.get(key)!r}")
    if entry["state"] not in _STATES:
        raise UserError(f"{where}: expected a state in {_STATES}, found {entry['state']!r}")
    if entry.get("lane", TRAIN_LANE) not in LANES:
        raise UserError(f"{where}: expected a lane in {LANES}, found {entry.get('lane')!r}")
    for key, kinds in (("history", list), ("outputs", list), ("result", (dict, type(None))),
                       ("spec", (dict, type(None)))):
        if key in entry and not isinstance(entry[key], kinds):
            raise UserError(f"{where}: expected field {key!r} of type {kinds}, found {type(entry[key]).__name__}")
    known = {k: entry[k] for k in _STORED_FIELDS if k in entry}
    return Job(**known, store=store)


def _progress_from(payload: dict) -> float | None:
    """Fraction done from a training payload: its "progress" if given (a multi-run job computes
    its own overall fraction), else step/total_steps or epoch/epochs."""
    progress = payload.get("progress")
    if isinstance(progress, (int, float)) and not isinstance(progress, bool):
        return min(max(float(progress), 0.0), 1.0)
    for done_key, total_key in (("step", "total_steps"), ("epoch", "epochs")):
        done, total = payload.get(done_key), payload.get(total_key)
        if isinstance(done, (int, float)) and isinstance(total, (int, float)) and total > 0:
            return min(max(float(done) / float(total), 0.0), 1.0)
    return None


class JobRegistry:
    """Runs jobs on a small thread pool and remembers them for the life of the process.

    ``max_workers`` (per lane) defaults to 1: training already uses every core through torch's
    intra-op threads, so two concurrent runs would only slow each other down; later jobs of a lane
    wait in its queue.
    """

    def __init__(self, max_workers: int = 1):
        if not isinstance(max_workers, int) or max_workers < 1:
            raise ValueError(f"max_workers must be a positive int, found {max_workers!r}")
        self._pools = {lane: ThreadPoolExecutor(max_workers=max_workers, thread_name_prefix=f"dat-{lane}")
                       for lane in LANES}
        self._jobs: dict[str, Job] = {}
        self._lock = threading.Lock()
        self._save_lock = threading.Lock()  # one writer per jobs file at a time
        self._adopted: set[str] = set()  # jobs files read into this registry
        self._unreadable: dict[str, str] = {}  # jobs files that could not be read: never overwritten
        self._counter = itertools.count(1)

    # -- submitting and looking up -------------------------------------------------------------
    def submit(self, work: Work, *, label: str, outputs: list[str] | tuple = (), spec: dict | None = None,
               store: str | os.PathLike | None = None, lane: str = TRAIN_LANE) -> Job:
        """Queue ``work`` in ``lane`` and return its :class:`Job` at once. ``store``: keep the job in
        this jobs file (read in first, see :meth:`adopt`); ``spec``: a JSON-able description of
        ``work`` that :meth:`resume` can start again after an interruption."""
        if lane not in LANES:
            raise ValueError(f"lane must be one of {LANES}, found {lane!r}")
        if not callable(work):
            raise TypeError(f"work must be callable, found {type(work).__name__}")
        if not isinstance(label, str) or not label.strip():
            raise ValueError(f"label must be a non-empty string, found {label!r}")
        if spec is not None:
            json.dumps(spec, allow_nan=False)  # refuse at once what the jobs file could not keep
        if store is not None:
            store = str(store)
            self.adopt(store)
        with self._lock:
            job_id = f"job{next(self._counter):04d}-{secrets.token_hex(3)}"
            job = Job(id=job_id, label=label, outputs=[str(p) for p in outputs], spec=spec, store=store, lane=lane)
            job._settled.clear()
            self._jobs[job_id] = job
        self._save(job.store)
        self._pools[lane].submit(self._run, job, work)
        return job

    def resume(self, job_id: str, work: Work) -> Job:
        """Start an interrupted (or cancelled) job again with ``work``, rebuilt from its spec by the
        caller; the job keeps its id, label and curves."""
        with self._lock:
            job = self._jobs.get(job_id)
            if job is None or not job.resumable:
                state = "unknown" if job is None else job.state
                raise UserError(f"job {job_id}: expected an interrupted or cancelled job with a saved "
                                f"description, found {state}{'' if job is None or job.spec else ' without one'}")
            job.state, job.error, job.traceback, job.finished, job.output = QUEUED, None, None, None, None
            job._stop = threading.Event()
            job._settled.clear()
        self._save(job.store)
        self._pools[job.lane].submit(self._run, job, work)
        return job

    # -- the jobs file -------------------------------------------------------------------------
    def adopt(self, store: str | os.PathLike) -> list[Job]:
        """Read the jobs kept in ``store`` into this registry (once per file per process) and return
        them. Jobs the file lists as queued or running belong to a server that is gone: they become
        "interrupted". An unreadable file raises UserError and is never overwritten."""
        store = str(store)
        with self._lock:
            if store in self._adopted:
                return [j for j in self._jobs.values() if j.store == store]
        path = Path(store)
        entries, interrupted = [], False
        if path.exists():
            try:
                data = json.loads(path.read_bytes().decode("utf-8"))
                if not isinstance(data, dict) or data.get("format") != STORE_FORMAT or not isinstance(
                        data.get("jobs"), list):
                    raise UserError(f"jobs file {store}: expected a JSON object with format {STORE_FORMAT!r} "
                                    f"and a list of jobs, found {type(data).__name__}"
                                    f"{' with format ' + repr(data.get('format')) if isinstance(data, dict) else ''}")
                stopped_at = path.stat().st_mtime
                for i, entry in enumerate(data["jobs"]):
                    job = _job_from_json(entry, store, f"jobs file {store}, job {i}")
                    if job.state in (QUEUED, RUNNING):
                        job.state, job.finished, interrupted = INTERRUPTED, stopped_at, True
                    entries.append(job)
            except (UnicodeDecodeError, json.JSONDecodeError, TypeError) as exc:
                error = UserError(f"jobs file {store}: expected the dashboard's JSON job list, found "
                                  f"unreadable content ({type(exc).__name__}: {exc}); move it away to start a new list")
                self._unreadable[store] = str(error)
                raise error from exc
            except UserError as exc:
                self._unreadable[store] = str(exc)
                raise
        with self._lock:
            if store in self._adopted:  # another thread read it meanwhile
                return [j for j in self._jobs.values() if j.store == store]
            for job in entries:
                if job.id in self._jobs:  # a copied workspace repeats ids: the copy's job gets its own
                    job.id, interrupted = f"{job.id}-{secrets.token_hex(3)}", True
                self._jobs[job.id] = job
            self._adopted.add(store)
            self._unreadable.pop(store, None)
        if interrupted:  # states (or ids) changed
            self._save(store)
        return [j for j in self._jobs.values() if j.store == store]

    def _save(self, store: str | None) -> None:
        """Write every job of ``store`` to it, atomically (never over a file that could not be read)."""
        if store is None or store in self._unreadable:
            return
        with self._save_lock:
            with self._lock:
                snapshot = [j.to_json() for j in sorted(self._jobs.values(), key=lambda j: j.submitted)
                            if j.store == store]
                data = json.dumps({"format": STORE_FORMAT, "version": STORE_VERSION, "jobs": snapshot})
            atomic_write_bytes(store, data.encode("utf-8"))

    def get(self, job_id: str) -> Job:
        with self._lock:
            if job_id not in self._jobs:
                raise KeyError(f"no job with id {job_id!r}; known: {sorted(self._jobs)}")
            return self._jobs[job_id]

    def jobs(self, store: str | os.PathLike | None = None) -> list[Job]:
        """All jobs (or those kept in ``store``), newest first."""
        with self._lock:
            chosen = [j for j in self._jobs.values() if store is None or j.store == str(store)]
        return sorted(chosen, key=lambda j: j.submitted, reverse=True)

    def active(self, store: str | os.PathLike | None = None) -> list[Job]:
        return [j for j in self.jobs(store) if j.active]

    def forget_finished(self, store: str | os.PathLike | None = None) -> int:
        """Drop finished (and interrupted) jobs from the list, or from ``store``'s part of it (their
        files stay); returns how many were dropped."""
        with self._lock:
            done = [k for k, j in self._jobs.items()
                    if j.state in FINISHED_STATES and (store is None or j.store == str(store))]
            stores = {self._jobs[k].store for k in done}
            for k in done:
                del self._jobs[k]
        for changed in stores:
            self._save(changed)
        return len(done)

    def wait(self, job_id: str, timeout: float = 60.0, poll: float = 0.02) -> Job:
        """Block until the job finishes and its final state is saved (for the CLI and tests); raises
        TimeoutError otherwise."""
        job = self.get(job_id)
        deadline = time.monotonic() + timeout
        while job.active or not job._settled.is_set():
            if time.monotonic() > deadline:
                raise TimeoutError(f"job {job_id} still {job.state} after {timeout} s")
            time.sleep(poll)
        return job

    # -- the worker side -----------------------------------------------------------------------
    def _run(self, job: Job, work: Work) -> None:
        if job.cancel_requested:  # cancelled while still in the queue
            job.state, job.finished = CANCELLED, time.time()
            try:
                self._save(job.store)
            finally:
                job._settled.set()
            return
        job.state, job.started = RUNNING, time.time()
        self._save(job.store)

        def report(event: str, payload: dict | None = None) -> None:
            payload = dict(payload or {})
            if "stage" in payload and isinstance(payload["stage"], str):
                job.stage = payload["stage"]
            progress = _progress_from(payload)
            if progress is not None:
                job.progress = progress
            numeric = {k: v for k, v in payload.items()
                       if isinstance(v, (int, float)) and not isinstance(v, bool)}
            if event in ("step", "epoch") and numeric:
                numeric["event"] = event
                if isinstance(payload.get("run"), str):  # which model of a trio
                    numeric["run"] = payload["run"]
                if len(job.history) >= MAX_HISTORY:
                    # Thin the older half rather than drop the start of the curve.
                    job.history[:] = job.history[: MAX_HISTORY // 2 : 2] + job.history[MAX_HISTORY // 2 :]
                job.history.append(numeric)
            if event in ("start", "epoch", "end"):  # the file follows the run epoch by epoch
                self._save(job.store)

        try:
            result = work(report, job._stop.is_set)
        except Stopped:  # stopped between two units of work on a cancel request
            job.state = CANCELLED
        except Exception as exc:  # the job's own failure: recorded, shown, never re-raised
            job.error = f"{type(exc).__name__}: {exc}"
            job.traceback = traceback.format_exc()
            job.state = FAILED
        else:
            if isinstance(result, tuple):  # (JSON result for the file, object kept in memory)
                result, job.output = result
            job.result = dict(result) if result is not None else {}
            job.state = CANCELLED if job.cancel_requested else DONE
            if job.state == DONE:
                job.progress = 1.0
        finally:
            job.finished = time.time()
            try:
                self._save(job.store)
            finally:
                job._settled.set()


# Reserved output paths of this process: two jobs submitted in the same instant still differ.
_reserved: set[str] = set()
_reserved_lock = threading.Lock()


def reserve_path(folder: str | os.PathLike, stem: str, suffix: str) -> Path:
    """A fresh path ``folder/stem-<time>-<random><suffix>`` that no other job will get.

    The time makes listings sort by creation; the random part and the reservation set make the
    path unique within this process, and the existence check makes it unique on disk.
    """
    if not stem or any(ch in stem for ch in "/\\\0") or stem.startswith("."):
        raise ValueError(f"stem must be a plain file name part, found {stem!r}")
    if not suffix.startswith("."):
        raise ValueError(f"suffix must start with '.', found {suffix!r}")
    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    with _reserved_lock:
        while True:
            name = f"{stem}-{time.strftime('%Y%m%d-%H%M%S')}-{secrets.token_hex(3)}{suffix}"
            path = folder / name
            if str(path) not in _reserved and not path.exists():
                _reserved.add(str(path))
                return path


def reserve_dir(folder: str | os.PathLike, stem: str) -> Path:
    """A fresh, empty folder ``folder/stem-<time>-<random>`` created for one job alone.

    ``os.mkdir`` fails if the folder exists, so even two processes cannot be handed the same one.
    """
    path = reserve_path(folder, stem, ".d")
    path = path.with_suffix("")
    while True:
        try:
            os.mkdir(path)
            return path
        except FileExistsError:
            path = reserve_path(folder, stem, ".d").with_suffix("")


_registry: JobRegistry | None = None
_registry_lock = threading.Lock()


def registry() -> JobRegistry:
    """The process-wide registry shared by every page and every browser session."""
    global _registry
    with _registry_lock:
        if _registry is None:
            _registry = JobRegistry(max_workers=1)
        return _registry


def submit(work: Work, *, label: str, outputs: list[str] | tuple = (), spec: dict | None = None,
           store: str | os.PathLike | None = None, lane: str = TRAIN_LANE) -> Job:
    """Submit to the process-wide registry."""
    return registry().submit(work, label=label, outputs=outputs, spec=spec, store=store, lane=lane)


def describe_jobs(jobs: list[Job]) -> list[dict]:
    """One row per job for a table: id, label, state, progress, stage, elapsed, error."""
    return [{"id": j.id, "label": j.label, "state": j.state, "progress": round(j.progress, 3),
             "stage": j.stage, "elapsed_s": round(j.elapsed(), 1), "error": j.error or ""}
            for j in jobs]
