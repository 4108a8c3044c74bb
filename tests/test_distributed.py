"""A 2D surface computed by two torchrun ranks (gloo, CPU) equals the single-process surface."""

import os
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch

from dat.checkpoint import save_checkpoint
from faces.cli import main as cli_main
from dat.models import build_model
from dat.parallel import rank_and_world
from landscape.parallel import map_chunks

ROOT = Path(__file__).resolve().parents[1]


def test_map_chunks_without_a_process_group_is_a_plain_map():
    assert rank_and_world() == (0, 1)
    seen = []
    out = map_chunks(lambda c: sum(c), [[1, 2], [3], [4, 5, 6]], lambda d, t: seen.append((d, t)))
    assert out == [3, 3, 15] and seen[-1] == (6, 6)


def test_two_torchrun_ranks_give_the_single_process_surface(tmp_path):
    torchrun = shutil.which("torchrun", path=os.path.dirname(sys.executable))
    if torchrun is None:
        pytest.skip("torchrun is not installed next to this Python")
    paths = {}
    for seed, label in enumerate(("sgd", "dat-a", "dat-b")):
        torch.manual_seed(seed)
        model = build_model("cnn6", batchnorm=True, in_channels=1, image_size=8, num_classes=10, width=4, hidden=16)
        paths[label] = str(save_checkpoint(tmp_path / f"{label}.safetensors", model, {"method": label}))
    args = ["landscape", "2d", "--sgd", paths["sgd"], "--dat-a", paths["dat-a"], "--dat-b", paths["dat-b"],
            "--dataset", "digits", "--split", "test", "--max-samples", "64", "--draws", "2", "--resolution", "5", "4",
            "--formats", "none", "--no-cache", "--quiet"]
    assert cli_main([*args, "--out", str(tmp_path / "one")]) == 0
    env = {**os.environ, "OMP_NUM_THREADS": "1", "PYTHONPATH": str(ROOT)}
    run = subprocess.run([torchrun, "--standalone", "--nproc_per_node=2", "-m", "faces.cli", *args,
                          "--out", str(tmp_path / "two")], cwd=ROOT, env=env, capture_output=True, text=True,
                         timeout=240)
    assert run.returncode == 0, run.stderr[-3000:]
    one, two = np.load(tmp_path / "one" / "numbers.npz"), np.load(tmp_path / "two" / "numbers.npz")
    assert set(one.files) == set(two.files)
    for key in one.files:
        np.testing.assert_allclose(two[key], one[key], rtol=1e-6, atol=1e-7, err_msg=key)


def test_dat_train_under_torchrun_learns_and_rank_zero_writes_one_checkpoint(tmp_path):
    """End to end: `dat train` on two ranks (gloo) trains DAT-Fast on digits and writes the
    checkpoint once. The maths of the data-parallel step is checked exactly in float64 below."""
    from dat.checkpoint import list_checkpoints

    torchrun = shutil.which("torchrun", path=os.path.dirname(sys.executable))
    if torchrun is None:
        pytest.skip("torchrun is not installed next to this Python")
    env = {**os.environ, "OMP_NUM_THREADS": "1", "PYTHONPATH": str(ROOT)}
    run = subprocess.run([torchrun, "--standalone", "--nproc_per_node=2", "-m", "faces.cli", "train", "--preset",
                          "digits", "--method", "dat-fast", "--epochs", "4", "--eval-draws", "2", "--quiet",
                          "--out", str(tmp_path / "ddp.safetensors")], cwd=ROOT, env=env, capture_output=True,
                         text=True, timeout=240)
    assert run.returncode == 0, run.stderr[-3000:]
    assert run.stdout.count("wrote ") == 1
    (meta,) = list_checkpoints(tmp_path)
    assert meta["world_size"] == 2
    assert meta["metrics"]["test"]["clean"]["acc"] > 0.8


@pytest.mark.parametrize("choice", ["last-linear", "all-analog"])
def test_data_parallel_dat_steps_equal_whole_batch_steps_in_float64(choice):
    torchrun = shutil.which("torchrun", path=os.path.dirname(sys.executable))
    if torchrun is None:
        pytest.skip("torchrun is not installed next to this Python")
    env = {**os.environ, "OMP_NUM_THREADS": "1", "PYTHONPATH": str(ROOT)}
    run = subprocess.run([torchrun, "--standalone", "--nproc_per_node=2", str(ROOT / "tests" / "ddp_step_check.py"),
                          choice], cwd=ROOT, env=env, capture_output=True, text=True, timeout=240)
    assert run.returncode == 0, (run.stdout + run.stderr)[-3000:]
    assert run.stdout.count("largest difference") == 2
