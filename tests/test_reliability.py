"""Training never loses data silently: a diverged run stops and keeps the good files, two runs never
share an output, a writer killed mid-write leaves nothing behind for long, and the dashboard's job
list survives a server restart. Driven through the CLI (in process and as subprocesses, exit code
and stderr), torchrun, the library and the Train page (AppTest)."""

import json
import os
import re
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from faces.dashboard import jobs
from faces.cli import main as cli_main
from dat.fileio import atomic_write_bytes, lock_path

ROOT = Path(__file__).resolve().parents[1]
TINY = ["--preset", "digits", "--epochs", "1", "--width", "4", "--hidden", "8", "--eval-draws", "1", "--quiet"]
ENV = {**os.environ, "PYTHONPATH": str(ROOT), "OMP_NUM_THREADS": "1"}


def _train(out, *extra) -> int:
    return cli_main(["train", *TINY, "--out", str(out), *extra])


def _wait_for(predicate, timeout: float = 180.0, what: str = "condition"):
    deadline = time.monotonic() + timeout
    while not predicate():
        if time.monotonic() > deadline:
            raise TimeoutError(f"{what} not reached in {timeout} s")
        time.sleep(0.02)


# -- item 5: a diverged run --------------------------------------------------------------------
def test_lr_1e6_stops_at_the_first_nan_and_keeps_the_good_checkpoint_and_resume_state(tmp_path, capsys):
    out = tmp_path / "model.safetensors"
    resume = Path(str(out) + ".resume.pt")
    assert _train(out) == 0                                   # the good model
    from dat.config import resolve
    from dat.train import train
    seen = []                                                 # a resume state of a 2-epoch run, cut after epoch 1
    train(resolve("digits", epochs=2, width=4, hidden=8, eval_draws=1, out=str(out)),
          callbacks=[lambda e, p: seen.append(e)], should_stop=lambda: "epoch" in seen)
    good, state = out.read_bytes(), resume.read_bytes()
    capsys.readouterr()

    assert _train(out, "--lr", "1e6", "--no-resume") == 2
    captured = capsys.readouterr()
    assert "training diverged at epoch 1/1, step " in captured.err
    assert "learning rate (lr = 1e+06)" in captured.err and "alpha = 30" in captured.err
    assert "Traceback" not in captured.err and "wrote" not in captured.out
    assert out.read_bytes() == good and resume.read_bytes() == state  # both untouched, bit for bit
    assert not lock_path(out).exists()


def test_the_run_stops_at_the_step_where_the_loss_first_stops_being_finite(tmp_path):
    import math

    from dat.config import resolve
    from dat.train import TrainingDiverged, train

    losses = []
    with pytest.raises(TrainingDiverged) as err:
        train(resolve("digits", lr=1e6, epochs=1, width=4, hidden=8, eval_draws=1, out=str(tmp_path / "m.safetensors")),
              callbacks=[lambda e, p: losses.append(p["loss"]) if e == "step" else None])
    assert all(math.isfinite(v) for v in losses)              # no step with a non-finite loss was reported
    assert f"step {len(losses) + 1}/" in str(err.value)       # it names the step that broke
    assert not (tmp_path / "m.safetensors").exists()


@pytest.mark.parametrize("option, value, message", [
    ("--lr", "inf", "Invalid lr: expected a finite number, found inf"),
    ("--lr", "nan", "Invalid lr"),
    ("--lr", "-0.1", "Invalid lr"),
    ("--lr", "0", "Invalid lr: expected a positive number"),
    ("--alpha", "inf", "Invalid alpha: expected a finite number"),
    ("--weight-decay", "1e400", "Invalid weight_decay: expected a finite number"),
    ("--momentum", "1.5", "Invalid momentum: expected a number in [0, 1)"),
    ("--epochs", "0", "Invalid epochs: expected a positive int"),
])
def test_invalid_hyperparameters_are_refused_before_anything_is_written(tmp_path, capsys, option, value, message):
    out = tmp_path / "m.safetensors"
    assert _train(out, option, value) == 2
    err = capsys.readouterr().err
    assert message in err and "Traceback" not in err
    assert list(tmp_path.iterdir()) == []


def test_the_cli_refuses_lr_inf_with_exit_2_and_no_traceback():
    run = subprocess.run([sys.executable, "-m", "faces.cli", "train", "--lr", "inf", "--out", "never.safetensors"],
                         cwd=ROOT, env=ENV, capture_output=True, text=True, timeout=300)
    assert run.returncode == 2
    assert "Invalid lr: expected a finite number, found inf" in run.stderr and "Traceback" not in run.stderr
    assert not (ROOT / "never.safetensors").exists()


def test_a_diverged_dashboard_job_is_failed_with_the_message_and_lists_no_model(tmp_path):
    from dat.config import resolve
    from faces.dashboard.helpers import submit_training
    from faces.dashboard.workspace import Workspace

    ws = Workspace(tmp_path)
    job = submit_training(ws, resolve("digits", lr=1e6, epochs=1, width=4, hidden=8, eval_draws=1))
    jobs.registry().wait(job.id, timeout=300)
    assert job.state == jobs.FAILED and "training diverged at epoch 1/1" in job.error
    assert ws.list_checkpoints() == []
    kept = json.loads(ws.jobs_file.read_text())["jobs"]
    assert [(j["id"], j["state"]) for j in kept] == [(job.id, "failed")]


def _torchrun():
    torchrun = shutil.which("torchrun", path=os.path.dirname(sys.executable))
    if torchrun is None:
        pytest.skip("torchrun is not installed next to this Python")
    return torchrun


def test_under_torchrun_every_rank_stops_at_the_diverged_step_and_none_writes(tmp_path):
    out = tmp_path / "ddp.safetensors"
    run = subprocess.run([_torchrun(), "--standalone", "--nproc_per_node=2", "-m", "faces.cli", "train", *TINY,
                          "--lr", "1e6", "--out", str(out)], cwd=ROOT, env=ENV, capture_output=True, text=True,
                         timeout=300)
    assert run.returncode != 0
    steps = re.findall(r"dat train: error: training diverged at epoch 1/1, step (\d+)/", run.stderr)
    assert len(steps) == 2 and steps[0] == steps[1], run.stderr  # both ranks, at the same step
    assert not out.exists() and not Path(str(out) + ".resume.pt").exists()


# -- item 6: one run per output ----------------------------------------------------------------
def test_a_second_run_into_a_live_runs_output_refuses_and_a_killed_runs_lock_does_not_block(tmp_path, capsys):
    out = tmp_path / "shared.safetensors"
    first = subprocess.Popen([sys.executable, "-m", "faces.cli", "train", "--preset", "digits", "--epochs", "200",
                              "--width", "4", "--hidden", "8", "--quiet", "--out", str(out)],
                             cwd=ROOT, env=ENV, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    try:
        lock = lock_path(out)
        _wait_for(lambda: lock.exists() and lock.read_text().strip() == str(first.pid), what="the first run's lock")
        assert _train(out) == 2
        err = capsys.readouterr().err
        assert str(out) in err and f"process {first.pid}" in err and str(lock) in err and "--out" in err
        assert _train(out, "--no-resume") == 2                # starting over must not clobber it either
        assert first.poll() is None and not out.exists()     # the first run goes on, nothing was written
    finally:
        first.kill()                                          # kill -9: no chance to tidy up
        first.wait(timeout=60)
    assert lock.exists()                                      # the dead run's lock file stays ...
    assert _train(out, "--no-resume") == 0                    # ... and does not block the next run
    assert out.exists() and not lock.exists()


def test_a_lock_held_in_this_process_refuses_a_run_and_is_released_after_it(tmp_path):
    from dat.config import resolve
    from dat.fileio import OutputLocked, exclusive_lock
    from dat.train import train

    config = resolve("digits", epochs=1, width=4, hidden=8, eval_draws=1, out=str(tmp_path / "m.safetensors"))
    with exclusive_lock(config.out):
        with pytest.raises(OutputLocked, match=r"this process"):
            train(config)
    Path(str(lock_path(config.out))).write_text("999999999\n")  # a stale file: no process holds it
    assert train(config).checkpoint_path == config.out
    assert not lock_path(config.out).exists()


def test_under_torchrun_a_held_lock_stops_every_rank(tmp_path):
    from dat.fileio import exclusive_lock

    out = tmp_path / "ddp.safetensors"
    with exclusive_lock(out):
        run = subprocess.run([_torchrun(), "--standalone", "--nproc_per_node=2", "-m", "faces.cli", "train", *TINY,
                              "--out", str(out)], cwd=ROOT, env=ENV, capture_output=True, text=True, timeout=300)
    assert run.returncode != 0
    # Count the refusals, not lines: the two ranks write stderr at once and their lines can run together.
    assert run.stderr.count(f"process {os.getpid()}") == 2, run.stderr  # rank 0 refused, rank 1 heard it
    assert not out.exists()


def test_the_dashboards_training_jobs_respect_the_lock(tmp_path):
    from dat.fileio import exclusive_lock
    from faces.dashboard.helpers import submit_demo
    from faces.dashboard.workspace import Workspace

    ws = Workspace(tmp_path)
    with exclusive_lock(ws.checkpoints_dir / "sgd.safetensors"):  # e.g. `dat demo` in a terminal
        job = submit_demo(ws, epochs=1, width=4, hidden=8, eval_draws=1)
        jobs.registry().wait(job.id, timeout=300)
    assert job.state == jobs.FAILED and "is in use by another run" in job.error
    assert not (ws.checkpoints_dir / "sgd.safetensors").exists()


# -- item 11: killed writers and a restarted server --------------------------------------------
def test_a_temporary_file_of_a_writer_killed_mid_write_is_removed_by_the_next_write(tmp_path):
    script = ("import sys, time\nfrom dat.fileio import atomic_write\n"
              "def write(tmp):\n    open(tmp, 'wb').write(b'half a file')\n    print('writing', flush=True)\n"
              "    time.sleep(600)\n"
              f"atomic_write({str(tmp_path / 'result.npz')!r}, write)\n")
    writer = subprocess.Popen([sys.executable, "-c", script], cwd=ROOT, env=ENV, stdout=subprocess.PIPE, text=True)
    try:
        assert writer.stdout.readline().strip() == "writing"
        left = [p.name for p in tmp_path.iterdir()]
        assert len(left) == 1 and left[0].startswith(f".result.npz.{writer.pid}.")
        atomic_write_bytes(tmp_path / "other.json", b"{}")   # its writer is alive: kept
        assert (tmp_path / left[0]).exists()
    finally:
        writer.send_signal(signal.SIGKILL)
        writer.wait(timeout=60)
    assert (tmp_path / left[0]).exists()                     # kill -9 leaves it behind ...
    atomic_write_bytes(tmp_path / "other.json", b"{}")
    assert sorted(p.name for p in tmp_path.iterdir()) == ["other.json"]  # ... the next write removes it


SERVER = """
import json, os, signal, sys, time
from dat.config import resolve
from faces.dashboard.helpers import submit_training
from faces.dashboard.workspace import Workspace
ws = Workspace.default()
job = submit_training(ws, resolve("digits", epochs=3, width=4, hidden=8, eval_draws=1, lr_decay_every=1))
while True:  # once the jobs file shows a finished epoch, the server dies (kill -9)
    try:
        kept = json.loads(ws.jobs_file.read_text())["jobs"]
    except (FileNotFoundError, json.JSONDecodeError):
        kept = []
    if any(h.get("event") == "epoch" for j in kept for h in j["history"]):
        os.kill(os.getpid(), signal.SIGKILL)
    time.sleep(0.005)
"""


def test_a_job_of_a_killed_server_is_shown_interrupted_and_resumes_on_the_train_page(tmp_path, monkeypatch):
    from streamlit.testing.v1 import AppTest

    monkeypatch.setenv("DAT_WORKSPACE", str(tmp_path))
    server = subprocess.run([sys.executable, "-c", SERVER], cwd=ROOT, env={**ENV, "DAT_WORKSPACE": str(tmp_path)},
                            capture_output=True, text=True, timeout=300)
    assert server.returncode == -signal.SIGKILL, server.stderr
    (job_id, out), = [(j["id"], j["outputs"][0]) for j in json.loads((tmp_path / "jobs.json").read_text())["jobs"]]
    assert os.path.exists(out + ".resume.pt") and not os.path.exists(out)

    at = AppTest.from_file(str(ROOT / "app.py"), default_timeout=240).run()
    assert not at.exception
    assert {m.label: m.value for m in at.metric}["Jobs running or queued"] == "0"
    assert "1 job(s) were interrupted" in " ".join(w.value for w in at.warning)
    at.switch_page("pages/2_Train.py").run()
    assert not at.exception
    assert "Interrupted" in " ".join(w.value for w in at.warning)
    at.button(key=f"resume_{job_id}").click().run()
    assert not at.exception and not at.error
    job = jobs.registry().wait(job_id, timeout=300)
    assert job.state == jobs.DONE, job.error
    assert job.result["checkpoints"] == [out] and not os.path.exists(out + ".resume.pt")
    epochs = [h["epoch"] for h in job.history if h["event"] == "epoch"]
    assert epochs == sorted(set(epochs)) and epochs[-1] == 3  # continued, not started over
    assert json.loads((tmp_path / "jobs.json").read_text())["jobs"][0]["state"] == "done"
    from dat.checkpoint import load_checkpoint
    assert load_checkpoint(out).meta["config"]["epochs"] == 3


@pytest.mark.parametrize("change, message", [
    ({"out": "/tmp/elsewhere/evil.safetensors"}, "expected an output inside"),
    ({"device": "/tmp/elsewhere/profile.npz"}, "expected a device among"),
    ({"eval_device": "../profile.npz"}, "expected a eval_device among"),
    ({"no_such_field": 1}, "expected a training config"),
])
def test_a_tampered_jobs_file_cannot_choose_where_a_resumed_job_reads_or_writes(tmp_path, change, message):
    from dat.config import resolve
    from dat.errors import UserError
    from faces.dashboard.helpers import resume_job
    from faces.dashboard.workspace import Workspace

    ws = Workspace(tmp_path)
    config = {**resolve("digits", out=str(ws.checkpoints_dir / "m.safetensors")).to_dict(), **change}
    entry = {"id": "job0001-abcdef", "label": "train", "state": "running", "progress": 0.5, "submitted": 1.0,
             "spec": {"kind": "train", "config": config}}
    ws.jobs_file.write_text(json.dumps({"format": "dat-jobs", "version": 1, "jobs": [entry]}))
    (job,) = ws.list_jobs()  # the same id in every case: a copied workspace's job is given its own
    assert job.state == jobs.INTERRUPTED and job.resumable
    with pytest.raises(UserError, match=message):
        resume_job(ws, job.id)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["jobs.json"]
    assert not Path("/tmp/elsewhere").exists() and job.state == jobs.INTERRUPTED
