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
