"""`dat profile twin`, `dat aging`, `dat sharpness` end to end on the committed demo checkpoints
(tiny budgets), and bad input as a clear error with exit status 2."""

import json
from pathlib import Path

import numpy as np
import pytest

from faces.cli import main

ROOT = Path(__file__).resolve().parent.parent
SGD = str(ROOT / "checkpoints" / "sgd.safetensors")
DAT_B = str(ROOT / "checkpoints" / "dat-b.safetensors")


def test_profile_twin_writes_a_trainable_device_with_the_same_cell_variances(tmp_path, capsys):
    from dat.config import resolve
    from dat.data import load_dataset
    from dat.noise.crossbar import PRESETS
    from dat.noise.io import load_device
    from dat.noise.profile import bind
    from dat.transfer import config_targets

    out = tmp_path / "a-diag.npz"
    assert main(["profile", "twin", "device-A", "--kind", "diagonal", "-o", str(out)]) == 0
    assert "n = 640" in capsys.readouterr().out  # the digits preset's head: 64 x 10
    targets = config_targets(resolve("digits"), load_dataset("digits"))
    twin = bind(load_device(out), targets)
    full = bind(PRESETS["device-A"], targets)
    assert np.array_equal(twin.variance().numpy(), full.variance().numpy())


def test_aging_prints_one_row_per_time_point_and_writes_the_bundle(tmp_path, capsys):
    out = tmp_path / "bundle"
    assert main(["aging", "--model", f"SGD-BN={SGD}", "--devices", "device-B", "--times", "1", "86400",
                 "--draws", "2", "--out", str(out), "--no-figures", "--quiet"]) == 0
    text = capsys.readouterr().out
    assert text.count("| SGD-BN | device-B |") == 2
    record = json.loads((out / "reproduce.json").read_text())
    assert record["kind"] == "aging" and record["spec"]["command"].startswith("dat aging --model SGD-BN=")
    assert record["labels"]["times"] == ["1 s", "86400 s"]


def test_sharpness_prints_the_rank_correlation_and_eigenvalues(tmp_path, capsys):
    assert main(["sharpness", "--model", f"SGD-BN={SGD}", "--model", f"DAT-B={DAT_B}", "--devices", "device-A",
                 "device-B", "--probes", "2", "--draws", "2", "--samples", "64", "--eigenvalues", "1",
                 "--out", str(tmp_path / "s"), "--no-figures", "--quiet"]) == 0
    text = capsys.readouterr().out
    assert "Spearman rank correlation of sharpness" in text and "(p = " in text
    assert "SGD-BN: top Hessian eigenvalues on the targets" in text
    rows = (tmp_path / "s" / "numbers.csv").read_text().splitlines()
    assert rows[0].startswith("layer,model,device,sharpness,se") and len(rows) == 1 + 4 + 4  # totals + per layer


@pytest.mark.parametrize("argv, message", [
    (["aging", "--model", "x"], "LABEL=PATH"),
    (["aging", "--model", f"m={SGD}", "--devices", "nope"], "Invalid device"),
    (["sharpness", "--model", "m=missing.safetensors"], "existing .safetensors"),
])
def test_bad_input_is_a_clear_error(argv, message, capsys):
    assert main(argv) == 2
    assert message in capsys.readouterr().err


@pytest.mark.parametrize("command", ["transfer", "aging", "sharpness"])
def test_help_prints_without_error(command, capsys):
    """argparse expands % in help strings: a bare "%" once made `dat transfer --help` crash."""
    with pytest.raises(SystemExit) as exit_:
        main([command, "--help"])
    assert exit_.value.code == 0
    assert "usage: " in capsys.readouterr().out
