"""Background jobs: they finish, record progress, fail cleanly, cancel, and never share a file."""

import threading
import time

import pytest

from faces.dashboard import jobs


@pytest.fixture
def reg():
    return jobs.JobRegistry(max_workers=1)


def test_job_runs_to_done_and_records_progress_and_history(reg):
    def work(report, should_stop):
        for step in range(1, 6):
            report("step", {"step": step, "total_steps": 5, "loss": 1.0 / step, "flag": True})
        return {"answer": 42}

    job = reg.wait(reg.submit(work, label="count").id, timeout=10)
    assert job.state == jobs.DONE
    assert job.result == {"answer": 42}
    assert job.progress == 1.0
    assert [h["step"] for h in job.history] == [1, 2, 3, 4, 5]
    assert [h["loss"] for h in job.history] == [1.0, 0.5, 1 / 3, 0.25, 0.2]
    assert all("flag" not in h for h in job.history)  # booleans are not metrics


def test_progress_is_read_from_epoch_payloads(reg):
    seen, submitted = [], threading.Event()
    holder = {}

    def work(report, should_stop):
        submitted.wait(5)
        report("epoch", {"epoch": 1, "epochs": 4})
        seen.append(holder["job"].progress)
        return None

    holder["job"] = reg.submit(work, label="epochs")
    submitted.set()
    reg.wait(holder["job"].id, timeout=10)
    assert seen == [0.25] and holder["job"].progress == 1.0


def test_failed_job_records_its_error_and_the_registry_keeps_working(reg):
    def boom(report, should_stop):
        raise ValueError("architecture mismatch: expected cnn6, found resnet18")

    bad = reg.wait(reg.submit(boom, label="bad").id, timeout=10)
    assert bad.state == jobs.FAILED
    assert bad.error == "ValueError: architecture mismatch: expected cnn6, found resnet18"
    assert "Traceback" in bad.traceback
    good = reg.wait(reg.submit(lambda r, s: {"ok": 1}, label="good").id, timeout=10)
    assert good.state == jobs.DONE


def test_cancel_stops_a_running_job_at_its_next_check(reg):
    started = threading.Event()

    def loop(report, should_stop):
        started.set()
        steps = 0
        while not should_stop():
            steps += 1
            time.sleep(0.005)
        return {"steps": steps}

    job = reg.submit(loop, label="loop")
    assert started.wait(5)
    job.cancel()
    reg.wait(job.id, timeout=10)
    assert job.state == jobs.CANCELLED
    assert job.result["steps"] >= 1


def test_a_job_cancelled_in_the_queue_never_starts(reg):
    gate = threading.Event()
    ran = []
    first = reg.submit(lambda r, s: gate.wait(5) and {}, label="blocker")
    second = reg.submit(lambda r, s: ran.append(1), label="queued")
    assert second.state == jobs.QUEUED
    second.cancel()
    gate.set()
    reg.wait(first.id, timeout=10)
    reg.wait(second.id, timeout=10)
    assert second.state == jobs.CANCELLED and ran == []


def test_jobs_listing_is_newest_first_and_forget_finished_drops_only_finished(reg):
    gate = threading.Event()
    a = reg.wait(reg.submit(lambda r, s: {}, label="a").id, timeout=10)
    b = reg.submit(lambda r, s: gate.wait(5) and {}, label="b")
    assert [j.label for j in reg.jobs()] == ["b", "a"]
    assert reg.forget_finished() == 1
    assert [j.id for j in reg.jobs()] == [b.id]
    gate.set()
    reg.wait(b.id, timeout=10)
    assert a.state == jobs.DONE


def test_reserved_paths_are_unique_across_threads_and_skip_existing_files(tmp_path):
    got, lock = [], threading.Lock()

    def grab():
        for _ in range(50):
            p = jobs.reserve_path(tmp_path, "sgd", ".safetensors")
            with lock:
                got.append(p)

    threads = [threading.Thread(target=grab) for _ in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert len(got) == 200 and len(set(got)) == 200
    assert all(p.parent == tmp_path and p.name.startswith("sgd-") for p in got)
    assert all(not p.exists() for p in got)


@pytest.mark.parametrize("stem,suffix", [("../evil", ".pt"), ("", ".pt"), (".hidden", ".pt"), ("ok", "pt")])
def test_reserve_path_rejects_bad_names(tmp_path, stem, suffix):
    with pytest.raises(ValueError, match="must"):
        jobs.reserve_path(tmp_path, stem, suffix)


def test_submit_validates_its_arguments(reg):
    with pytest.raises(TypeError, match="callable"):
        reg.submit("not a function", label="x")
    with pytest.raises(ValueError, match="label"):
        reg.submit(lambda r, s: {}, label=" ")
    with pytest.raises(ValueError, match="max_workers"):
        jobs.JobRegistry(max_workers=0)


def test_the_process_wide_registry_is_one_object():
    assert jobs.registry() is jobs.registry()


# -- the job list on disk ----------------------------------------------------------------------
def _kept(store):
    import json

    return {j["id"]: j for j in json.loads(store.read_text())["jobs"]}


def test_jobs_with_a_store_are_kept_on_disk_at_every_change_of_state(reg, tmp_path):
    store = tmp_path / "jobs.json"
    gate, started = threading.Event(), threading.Event()

    def work(report, should_stop):
        report("epoch", {"epoch": 1, "epochs": 2, "train_loss": 0.5})
        started.set()
        gate.wait(10)
        return {"checkpoints": ["a.safetensors"]}

    job = reg.submit(work, label="train", spec={"kind": "train"}, store=store)
    assert started.wait(10)
    kept = _kept(store)[job.id]
    assert kept["state"] == jobs.RUNNING and kept["history"] == [{"epoch": 1, "epochs": 2, "train_loss": 0.5,
                                                                  "event": "epoch"}]
    gate.set()
    reg.wait(job.id, timeout=10)
    kept = _kept(store)[job.id]
    assert kept["state"] == jobs.DONE and kept["result"] == {"checkpoints": ["a.safetensors"]}
    assert kept["spec"] == {"kind": "train"} and kept["label"] == "train"
    plain = reg.wait(reg.submit(lambda r, s: {}, label="memory only").id, timeout=10)
    assert plain.id not in _kept(store)                       # no store: not written anywhere


def test_a_restarted_registry_shows_queued_and_running_jobs_as_interrupted_and_resumes_them(tmp_path):
    store = tmp_path / "jobs.json"
    old = jobs.JobRegistry(max_workers=1)
    gate = threading.Event()
    running = old.submit(lambda r, s: gate.wait(10) and {}, label="running", spec={"kind": "train", "n": 1},
                         store=store)
    queued = old.submit(lambda r, s: {}, label="queued", spec={"kind": "train", "n": 2}, store=store)
    bare = old.submit(lambda r, s: {}, label="no spec", store=store)
    _wait = time.monotonic() + 10
    while _kept(store)[running.id]["state"] != jobs.RUNNING and time.monotonic() < _wait:
        time.sleep(0.01)
    # The server dies here (the old registry's work never reports again); a new one reads the file.
    new = jobs.JobRegistry(max_workers=1)
    adopted = {j.id: j for j in new.adopt(store)}
    assert adopted[running.id].state == jobs.INTERRUPTED and adopted[queued.id].state == jobs.INTERRUPTED
    assert adopted[running.id].resumable and adopted[running.id].spec == {"kind": "train", "n": 1}
    assert adopted[bare.id].state == jobs.INTERRUPTED and not adopted[bare.id].resumable  # no spec
    assert new.active(store) == [] and _kept(store)[running.id]["state"] == jobs.INTERRUPTED
    assert new.adopt(store) and len(new.jobs(store)) == 3     # reading again adds nothing

    resumed = new.resume(running.id, lambda r, s: {"resumed": True})
    new.wait(resumed.id, timeout=10)
    assert resumed.state == jobs.DONE and resumed.result == {"resumed": True}
    assert _kept(store)[running.id]["state"] == jobs.DONE
    with pytest.raises(ValueError, match="expected an interrupted or cancelled job"):
        new.resume(running.id, lambda r, s: {})
    assert new.forget_finished(store) == 3 and _kept(store) == {}
    gate.set()


@pytest.mark.parametrize("content, message", [
    (b"{not json", "unreadable content"),
    (b'{"format": "something else", "jobs": []}', "expected a JSON object with format 'dat-jobs'"),
    (b'{"format": "dat-jobs", "jobs": [{"id": 3}]}', "expected field 'id'"),
    (b'{"format": "dat-jobs", "jobs": [{"id": "a", "label": "x", "state": "exploded", "progress": 0, '
     b'"submitted": 0}]}', "expected a state"),
    (b"\xff\xfe binary", "unreadable content"),
])
def test_a_damaged_jobs_file_is_reported_and_never_overwritten(reg, tmp_path, content, message):
    from dat.errors import UserError

    store = tmp_path / "jobs.json"
    store.write_bytes(content)
    with pytest.raises(UserError, match=message):
        reg.adopt(store)
    with pytest.raises(UserError, match=message):
        reg.submit(lambda r, s: {}, label="x", store=store)
    assert store.read_bytes() == content


def test_the_jobs_file_keeps_every_epoch_and_a_bounded_number_of_steps(reg, tmp_path):
    store = tmp_path / "jobs.json"

    def work(report, should_stop):
        for step in range(1, 2001):
            report("step", {"step": step, "total_steps": 2000, "loss": 1.0 / step})
            if step % 100 == 0:
                report("epoch", {"epoch": step // 100, "epochs": 20})
        return {}

    job = reg.wait(reg.submit(work, label="long", store=store).id, timeout=30)
    kept = _kept(store)[job.id]["history"]
    steps = [h["step"] for h in kept if h["event"] == "step"]
    assert len(job.history) == 2020 and [h["epoch"] for h in kept if h["event"] == "epoch"] == list(range(1, 21))
    assert len(steps) == jobs.STORED_STEPS and steps[0] == 1 and steps[-1] == 2000 and steps == sorted(steps)


# -- landscape jobs -----------------------------------------------------------------------------
def test_lanes_run_side_by_side_and_stopped_work_is_cancelled_not_failed(reg):
    gate = threading.Event()
    training = reg.submit(lambda r, s: gate.wait(10) and {}, label="long training")
    landscape = reg.submit(lambda r, s: ({"n": 1}, object()), label="surface", lane=jobs.LANDSCAPE_LANE)
    reg.wait(landscape.id, timeout=10)  # does not wait behind the training lane's job
    assert landscape.state == jobs.DONE and landscape.result == {"n": 1} and landscape.output is not None
    assert "output" not in landscape.to_json()  # kept in memory only
    assert training.state == jobs.RUNNING
    gate.set()

    def stops(report, should_stop):
        raise jobs.Stopped()

    stopped = reg.wait(reg.submit(stops, label="stops", lane=jobs.LANDSCAPE_LANE).id, timeout=10)
    assert stopped.state == jobs.CANCELLED and stopped.error is None
    with pytest.raises(ValueError, match="lane"):
        reg.submit(lambda r, s: {}, label="x", lane="elsewhere")


@pytest.fixture
def ws(demo_workspace, tmp_path, monkeypatch):
    """A private copy of the miniature demo workspace (the trio and the saved profiles)."""
    import shutil

    from faces.dashboard.workspace import Workspace

    root = tmp_path / "ws"
    shutil.copytree(demo_workspace, root)
    monkeypatch.setenv("DAT_WORKSPACE", str(root))
    return Workspace(root)


def _count_points(monkeypatch, after=None, then=None):
    """Count the plane points the evaluator is asked for (one call per chunk); ``then()`` runs once
    ``after`` chunks have been evaluated."""
    from landscape.evaluator import Evaluator

    seen = {"calls": 0, "points": 0}
    real = Evaluator.at_points

    def counting(self, points, *args, **kwargs):
        out = real(self, points, *args, **kwargs)
        seen["calls"] += 1
        seen["points"] += int(next(iter(points.values())).shape[0])
        if after is not None and seen["calls"] == after:
            then()
        return out

    monkeypatch.setattr(Evaluator, "at_points", counting)
    return seen


def test_a_landscape_job_stopped_mid_grid_resumes_from_its_cached_chunks(ws, monkeypatch):
    import numpy as np

    from faces.dashboard import helpers
    from landscape.spec import run_spec

    spec = helpers.trio_spec(ws.trios()[""], {"device-A": "device-A"}, resolution=(3, 3), draws=2,
                             max_samples=64, chunk_size=2)  # 9 grid points + 3 markers = 6 chunks of 2

    def cancel_landscape_jobs():
        for job in jobs.registry().active(ws.jobs_file):
            if job.lane == jobs.LANDSCAPE_LANE:
                job.cancel()

    seen = _count_points(monkeypatch, after=2, then=cancel_landscape_jobs)
    job = helpers.submit_landscape(ws, "test", {"surface": spec}, "surface for the test")
    jobs.registry().wait(job.id, timeout=120)
    assert job.state == jobs.CANCELLED and job.error is None, job.error
    assert seen == {"calls": 2, "points": 4}  # stopped after its second chunk
    assert job.resumable

    seen = _count_points(monkeypatch)
    resumed = helpers.resume_job(ws, job.id)
    jobs.registry().wait(resumed.id, timeout=120)
    assert resumed.state == jobs.DONE, resumed.error
    assert seen == {"calls": 4, "points": 8}  # only the four chunks the store did not hold
    assert not list((ws.cache_dir / "landscape" / "partial").glob("*/*.npz"))  # the whole result replaced them

    # Reference: the same spec computed in one go without any cache.
    seen = _count_points(monkeypatch)
    fresh = run_spec(spec)
    assert seen == {"calls": 6, "points": 12}
    got = resumed.output["surface"]
    for name, array in fresh.to_arrays().items():
        np.testing.assert_array_equal(got.to_arrays()[name], array, err_msg=name)


def test_a_crashed_landscape_job_fails_with_its_error_and_a_new_one_resumes(ws, monkeypatch):
    from faces.dashboard import helpers

    spec = helpers.trio_spec(ws.trios()[""], {"device-B": "device-B"}, resolution=(3, 3), draws=2,
                             max_samples=64, chunk_size=4)  # 12 points in 3 chunks

    def crash():
        raise RuntimeError("the machine went away")

    _count_points(monkeypatch, after=2, then=crash)
    job = helpers.submit_landscape(ws, "test", {"surface": spec}, "surface for the test")
    jobs.registry().wait(job.id, timeout=120)
    assert job.state == jobs.FAILED and "the machine went away" in job.error
    seen = _count_points(monkeypatch)
    again = helpers.submit_landscape(ws, "test", {"surface": spec}, "surface for the test")
    assert again.id != job.id  # a failed job is not reused
    jobs.registry().wait(again.id, timeout=120)
    assert again.state == jobs.DONE and seen["points"] == 8  # the first chunk was kept (the crash was in the second)
    # The same specs again: the finished job is followed, nothing computed.
    assert helpers.submit_landscape(ws, "test", {"surface": spec}, "surface for the test") is again


def test_a_saved_landscape_job_naming_files_outside_the_workspace_is_refused(ws):
    from dat.errors import UserError
    from faces.dashboard import helpers

    spec = helpers.trio_spec(ws.trios()[""], {"device-A": "device-A"}, resolution=(3, 3), draws=1)
    job_spec = helpers.landscape_job_spec("test", {"surface": spec})
    good = helpers.landscape_specs_of(ws, job_spec)["surface"]
    assert good.checkpoints == spec.checkpoints and good.data_root == str(ws.root / "data")
    outside = {**job_spec["specs"]["surface"], "checkpoints": {**spec.checkpoints, "SGD": "/etc/passwd"}}
    with pytest.raises(UserError, match="inside"):
        helpers.landscape_specs_of(ws, {**job_spec, "specs": {"surface": outside}})
    strange = {**job_spec["specs"]["surface"], "devices": {"device-A": "/tmp/elsewhere.npz"}}
    with pytest.raises(UserError, match="devices among"):
        helpers.landscape_specs_of(ws, {**job_spec, "specs": {"surface": strange}})
    with pytest.raises(UserError, match="not a landscape spec"):
        helpers.landscape_specs_of(ws, {**job_spec, "specs": {"surface": {"kind": "nonsense"}}})


def test_a_chunk_file_that_cannot_be_read_or_has_the_wrong_shape_is_computed_again(tmp_path):
    import numpy as np

    from landscape.cache import ChunkStore

    store = ChunkStore(tmp_path / "chunks")
    store.save(0, {"loss": np.ones((3, 2))})
    assert store.load(0, 2)["loss"].shape == (3, 2) and store.completed() == [0]
    assert store.load(0, 5) is None  # another chunking's points
    (tmp_path / "chunks" / "000001.npz").write_bytes(b"not a zip")
    assert store.load(1, 2) is None and store.load(2, 2) is None


def test_a_landscape_job_runs_even_when_the_jobs_file_is_damaged_and_leaves_the_file_alone(ws):
    from faces.dashboard import helpers

    ws.jobs_file.write_bytes(b"{damaged")
    spec = helpers.trio_spec(ws.trios()[""], {"device-A": "device-A"}, resolution=(2, 2), draws=1, max_samples=32)
    job = helpers.submit_landscape(ws, "test", {"surface": spec}, "surface for the test")
    jobs.registry().wait(job.id, timeout=120)
    assert job.state == jobs.DONE and job.output["surface"].loss.shape == (2, 2, 2)
    assert ws.jobs_file.read_bytes() == b"{damaged"  # kept for the user to look at, never overwritten
