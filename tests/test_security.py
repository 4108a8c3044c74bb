"""What a checkpoint says is data: a crafted file cannot choose a data folder, switch off CIFAR's
md5 check, or make any evaluation path (dat eval, dat table, the dashboard) unpickle a file."""

import pickle
from pathlib import Path

import pytest

from dat.checkpoint import read_meta, save_checkpoint
from faces.cli import main
from dat.config import TrainConfig
from dat.errors import UserError
from dat.models import build_model

CIFAR10_FILES = [f"data_batch_{i}" for i in range(1, 6)] + ["test_batch", "batches.meta"]


class _WritesMarker:
    """Unpickling this runs code: it writes the marker file."""

    def __init__(self, marker: str):
        self.marker = marker

    def __reduce__(self):
        return (exec, (f"open({self.marker!r}, 'w').write('code ran')",))


@pytest.fixture
def crafted(tmp_path):
    """A valid safetensors checkpoint whose metadata says dataset=cifar10, data_root=<a folder of
    booby-trapped pickles>, verify=false; returns (checkpoint path, marker path)."""
    marker = tmp_path / "MARKER"
    evil = tmp_path / "evil"
    (evil / "cifar-10-batches-py").mkdir(parents=True)
    for name in CIFAR10_FILES:
        (evil / "cifar-10-batches-py" / name).write_bytes(pickle.dumps(_WritesMarker(str(marker))))
    # The trap works: unpickling one of these files writes the marker (checked in a scratch copy).
    probe = tmp_path / "probe"
    pickle.loads(pickle.dumps(_WritesMarker(str(probe))))
    assert probe.exists()

    model = build_model("cnn6", True, 3, 32, 10, width=2, hidden=8)
    config = {**TrainConfig(dataset="cifar10", width=2, hidden=8, method="sgd-bn").to_dict(),
              "data_root": str(evil), "verify": False, "download": False}
    split = {"clean": {"acc": 0.9, "loss": 0.1}, "noisy": {"acc_mean": 0.8, "acc_std": 0.0, "loss_mean": 0.2,
                                                           "loss_std": 0.0, "draws": 20}}
    meta = {"method": "sgd-bn", "arch": "cnn6", "batchnorm": True, "seed": 0, "config": config,
            "dataset": {"dataset": "cifar10", "in_channels": 3, "image_size": 32, "num_classes": 10},
            "device": {"name": "device-A", "spec": "device-A", "hash": "0" * 64}, "trained_with_noise": False,
            "metrics": {"train": split, "test": split, "eval_device": "device-A"}, "train_time_s": 1.0,
            "data_root": str(evil), "verify": False}
    path = tmp_path / "crafted.safetensors"
    save_checkpoint(path, model, meta)
    return path, marker


def _refused_clearly(text: str) -> None:
    assert "cifar10" in text and "never from a file" in text and "Traceback" not in text


@pytest.mark.parametrize("argv", [["eval", "{ckpt}"], ["eval", "{ckpt}", "--device", "device-B"],
                                  ["table", "{ckpt}"], ["table", "{ckpt}", "--device", "device-A"],
                                  ["table", "{ckpt}", "--device", "device-B"]])
def test_cli_never_reads_the_folder_a_checkpoint_names(crafted, argv, tmp_path, monkeypatch, capsys):
    path, marker = crafted
    monkeypatch.chdir(tmp_path)  # the user's default data folder (./data) holds no CIFAR
    assert main([a.format(ckpt=path) for a in argv]) == 2
    assert not marker.exists()
    _refused_clearly(capsys.readouterr().err)


def test_users_own_folder_is_md5_checked_before_anything_is_unpickled(crafted, capsys):
    path, marker = crafted
    evil = Path(read_meta(path)["config"]["data_root"])
    assert main(["eval", str(path), "--data-root", str(evil)]) == 2  # the user points at it themselves
    assert not marker.exists()
    assert "failed torchvision's check" in capsys.readouterr().err


def test_dashboard_helpers_use_the_workspace_folder(crafted, tmp_path):
    from faces.dashboard.helpers import evaluate_checkpoint, table_one

    path, marker = crafted
    meta = {**read_meta(path), "path": str(path)}
    workspace_data = tmp_path / "ws" / "data"
    for call in (lambda: evaluate_checkpoint(str(path), "device-A", data_root=workspace_data),
                 lambda: table_one([meta], "device-A", data_root=workspace_data),
                 lambda: table_one([meta], None, data_root=workspace_data)):
        with pytest.raises(UserError) as err:
            call()
        _refused_clearly(str(err.value))
        assert str(workspace_data) in str(err.value)
    assert not marker.exists()


def test_models_page_shows_an_error_and_runs_no_code(crafted, tmp_path, monkeypatch):
    from streamlit.testing.v1 import AppTest

    path, marker = crafted
    root = tmp_path / "ws"
    (root / "checkpoints").mkdir(parents=True)
    (root / "checkpoints" / "upload.safetensors").write_bytes(path.read_bytes())
    monkeypatch.setenv("DAT_WORKSPACE", str(root))
    app = str(Path(__file__).resolve().parent.parent / "app.py")
    at = AppTest.from_file(app, default_timeout=120).run()
    at.switch_page("pages/3_Models.py").run()
    assert not at.exception
    errors = " | ".join(e.value for e in at.error)
    assert "Could not build Table I" in errors and "never from a file" in errors
    assert not marker.exists()


def test_a_device_path_written_in_a_checkpoint_is_never_opened(tmp_path, capsys):
    """dat eval's default device comes from the checkpoint only when it is a preset name."""
    out = tmp_path / "m.safetensors"
    assert main(["train", "--epochs", "1", "--width", "4", "--hidden", "8", "--eval-draws", "2", "--quiet",
                 "--method", "sgd-bn", "--out", str(out)]) == 0
    meta = read_meta(out)
    meta["config"]["device"] = str(tmp_path / "elsewhere.npz")
    from dat.checkpoint import load_checkpoint
    save_checkpoint(out, load_checkpoint(out).model, meta)
    assert main(["eval", str(out)]) == 2
    assert "never opened" in capsys.readouterr().err
