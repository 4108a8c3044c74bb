"""Checkpoints: round trip, listing, and a clear error for each kind of bad file."""

import json
import os

import pytest
import torch
from safetensors.torch import save_file

from dat.checkpoint import (list_checkpoints, load_checkpoint, load_resume, read_meta, save_checkpoint,
                            save_resume)
from dat.models import build_model


def _model(width=4, seed=0):
    torch.manual_seed(seed)
    model = build_model("cnn6", True, 1, 8, 10, width=width, hidden=16)
    # Move the BatchNorm buffers away from their defaults, so the round trip checks them too.
    model.train()
    model(torch.randn(8, 1, 8, 8))
    return model.eval()


def test_round_trip_restores_weights_buffers_and_metadata(tmp_path):
    model = _model()
    meta = {"method": "dat-fast", "alpha": 300.0, "metrics": {"test": {"clean": {"acc": 0.5}}}}
    path = save_checkpoint(tmp_path / "m.safetensors", model, meta)
    loaded = load_checkpoint(path)
    for (name, a), b in zip(model.state_dict().items(), loaded.model.state_dict().values()):
        assert torch.equal(a, b), name
    assert loaded.meta["method"] == "dat-fast" and loaded.meta["alpha"] == 300.0
    assert loaded.meta["model"] == model.spec
    assert {"python", "torch", "numpy", "dat"} <= set(loaded.meta["versions"])
    x = torch.randn(4, 1, 8, 8)
    assert torch.equal(model(x), loaded.model(x))
    # Atomic write: no temporary file is left next to the checkpoint.
    assert sorted(os.listdir(tmp_path)) == ["m.safetensors"]


def test_list_checkpoints_reads_metadata_and_skips_foreign_files(tmp_path):
    save_checkpoint(tmp_path / "a.safetensors", _model(), {"method": "sgd"})
    save_checkpoint(tmp_path / "b.safetensors", _model(seed=1), {"method": "dat-full"})
    (tmp_path / "junk.safetensors").write_bytes(b"not a checkpoint")
    rows = list_checkpoints(tmp_path)
    assert [(os.path.basename(r["path"]), r["method"]) for r in rows] == [("a.safetensors", "sgd"), ("b.safetensors", "dat-full")]
    assert list_checkpoints(tmp_path / "missing") == []


def test_other_architecture_names_the_tensor(tmp_path):
    path = save_checkpoint(tmp_path / "m.safetensors", _model(width=4), {"method": "sgd"})
    # Rewrite the metadata to claim another width: the stored tensors no longer fit.
    from safetensors.torch import load_file
    tensors, meta = load_file(str(path)), read_meta(path)
    meta["model"]["width"] = 8
    save_file(tensors, str(path), metadata={"dat": json.dumps(meta)})
    with pytest.raises(ValueError, match=r"body\.0\.weight.*\(4, 1, 3, 3\).*\(8, 1, 3, 3\)"):
        load_checkpoint(path)


def test_truncated_file_is_reported(tmp_path):
    path = save_checkpoint(tmp_path / "m.safetensors", _model(), {"method": "sgd"})
    data = path.read_bytes()
    path.write_bytes(data[: len(data) - 100])
    with pytest.raises(ValueError, match="truncated"):
        load_checkpoint(path)
    path.write_bytes(data[:5])
    with pytest.raises(ValueError, match="too short"):
        load_checkpoint(path)


def test_foreign_file_is_reported(tmp_path):
    path = tmp_path / "f.safetensors"
    path.write_bytes(b"PK\x03\x04" + os.urandom(200))  # a zip, e.g. a torch.save pickle archive
    with pytest.raises(ValueError, match="not a safetensors checkpoint"):
        load_checkpoint(path)


def test_missing_metadata_is_reported(tmp_path):
    path = tmp_path / "plain.safetensors"
    save_file({"w": torch.zeros(3)}, str(path))
    with pytest.raises(ValueError, match="without DAT metadata"):
        load_checkpoint(path)
    save_file({"w": torch.zeros(3)}, str(path), metadata={"dat": json.dumps({"method": "sgd"})})
    with pytest.raises(ValueError, match="model spec"):
        load_checkpoint(path)


def test_missing_file_is_reported(tmp_path):
    with pytest.raises(FileNotFoundError, match="nothing.safetensors"):
        load_checkpoint(tmp_path / "nothing.safetensors")


def test_resume_state_round_trip_without_unpickling(tmp_path):
    state = {"epoch": 3, "model": _model().state_dict(), "rng": torch.get_rng_state(), "history": [{"a": 1.0}]}
    save_resume(tmp_path / "r.pt", state)
    back = load_resume(tmp_path / "r.pt", required=("model", "epoch"))
    assert back["epoch"] == 3 and torch.equal(back["rng"], state["rng"]) and back["history"] == [{"a": 1.0}]

    class Evil:
        def __reduce__(self):
            return (os.system, ("true",))
    torch.save({"x": Evil()}, tmp_path / "evil.pt")
    with pytest.raises(ValueError, match="not a readable resume state"):
        load_resume(tmp_path / "evil.pt")


def test_resume_state_without_its_keys_is_a_clear_error(tmp_path):
    """A resume file from another version (or another program) names the missing keys, no KeyError."""
    from dat.checkpoint import load_resume
    from dat.errors import UserError

    path = tmp_path / "run.safetensors.resume.pt"
    torch.save({"epoch": 3}, path)
    with pytest.raises(UserError, match=r"missing \['trajectory'"):
        load_resume(path)
    torch.save([1, 2, 3], path)
    with pytest.raises(UserError, match="expected the keys"):
        load_resume(path)
    path.write_bytes(b"")
    with pytest.raises(UserError, match="not a readable resume state"):
        load_resume(path)
