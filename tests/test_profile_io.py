"""Saving and loading devices; the profile command."""

import argparse
import json

import numpy as np
import pytest
import torch

from dat.noise.crossbar import PRESETS
from dat.noise.dense import DenseDevice
from dat.errors import UserError
from dat.noise.fitted import FittedTile
from faces.cli.profile import add_profile_parser, run_profile_command
from dat.noise.fileformat import read_metadata
from dat.noise.io import device_hash, load_dense, load_device, save_device
from dat.noise.profile import bind
from dat.noise.targets import Targets


def fitted():
    g = np.random.default_rng(0)
    return FittedTile(k=3).fit(g.standard_normal((50, 3, 4)) * 0.05)


def dense():
    g = np.random.default_rng(1)
    B = g.standard_normal((12, 12))
    return DenseDevice(g.standard_normal(12), B @ B.T, name="d12")


@pytest.mark.parametrize("make", [lambda: PRESETS["device-A"], lambda: PRESETS["device-B"].replace(t_seconds=86400.0), fitted, dense])
def test_saved_device_loads_back_identical(tmp_path, make):
    dev = make()
    t = Targets([("w", (4, 3))], tile=(3, 4))
    meta = save_device(tmp_path / "p.npz", dev, targets=t)
    back = load_device(tmp_path / "p.npz")
    assert type(back) is type(dev)
    assert device_hash(back) == device_hash(dev) == meta["content_hash"]
    assert bind(back, t).content_hash() == bind(dev, t).content_hash()
    g1, g2 = torch.Generator().manual_seed(0), torch.Generator().manual_seed(0)
    assert torch.equal(bind(back, t).sampler("full").sample(3, g1), bind(dev, t).sampler("full").sample(3, g2))
    m = read_metadata(tmp_path / "p.npz")
    assert m["format"] == "dat-profile" and m["format_version"] == 1 and m["targets"]["n"] == 12
    assert m["units"]


def test_changed_device_changes_hash():
    a = PRESETS["device-A"]
    assert device_hash(a) != device_hash(a.replace(scale=a.scale * 1.01))


def _rewrite(path, **meta_changes):
    with np.load(path) as z:
        files = {k: z[k] for k in z.files}
    meta = json.loads(str(files["__meta__"]))
    meta.update(meta_changes)
    files["__meta__"] = np.array(json.dumps(meta))
    np.savez(path, **files)


def test_other_version_foreign_and_corrupted_files_are_refused(tmp_path):
    p = tmp_path / "p.npz"
    save_device(p, PRESETS["device-A"])
    _rewrite(p, format_version=2)
    with pytest.raises(ValueError, match="format_version 2 is not supported"):
        load_device(p)
    save_device(p, PRESETS["device-A"])
    _rewrite(p, format="other-tool")
    with pytest.raises(ValueError, match="expected format 'dat-profile', found 'other-tool'"):
        load_device(p)
    save_device(p, PRESETS["device-A"])
    _rewrite(p, parameters={**PRESETS["device-A"].to_dict(), "scale": 9.0})
    with pytest.raises(ValueError, match="content hash mismatch"):
        load_device(p)
    np.savez(tmp_path / "foreign.npz", x=np.zeros(3))
    with pytest.raises(ValueError, match="no '__meta__' entry"):
        load_device(tmp_path / "foreign.npz")
    (tmp_path / "text.npz").write_text("hello")
    with pytest.raises(UserError, match=r"text.npz: expected a .npz archive .*, found a file starting with b'hello'"):
        load_device(tmp_path / "text.npz")
    with pytest.raises(UserError, match="a name ending in .npz, found 'p.json'"):
        save_device(tmp_path / "p.json", PRESETS["device-A"])


def test_save_is_atomic_and_leaves_no_temporary_files(tmp_path):
    save_device(tmp_path / "p.npz", PRESETS["device-A"])
    save_device(tmp_path / "p.npz", PRESETS["device-B"])
    assert [f.name for f in tmp_path.iterdir()] == ["p.npz"]
    assert load_device(tmp_path / "p.npz").name == "device-B"


def test_plain_dense_file_is_validated_and_repaired_on_request(tmp_path):
    bad = np.array([[1.0, 2.0], [2.0, 1.0]])
    np.savez(tmp_path / "bad.npz", sigma=bad)
    with pytest.raises(ValueError, match="most negative eigenvalue -1"):
        load_dense(tmp_path / "bad.npz")
    dev = load_dense(tmp_path / "bad.npz", repair=True)
    assert dev.repair_report["repaired"] and np.all(dev.mu == 0)
    np.save(tmp_path / "s.npy", np.eye(3))
    assert load_dense(tmp_path / "s.npy").n == 3
    np.savez(tmp_path / "nos.npz", cov=np.eye(2))
    with pytest.raises(ValueError, match="array named 'sigma'"):
        load_dense(tmp_path / "nos.npz")


def _cli(argv):
    ap = argparse.ArgumentParser(prog="dat")
    add_profile_parser(ap.add_subparsers(dest="command"))
    return run_profile_command(ap.parse_args(argv))


def test_cli_make_fit_inspect_and_dense(tmp_path, capsys):
    out = tmp_path / "a.npz"
    assert _cli(["profile", "make", "device-B", "--set", "ell=8", "--t-seconds", "86400", "-o", str(out)]) == 0
    dev = load_device(out)
    assert dev.ell == 8.0 and dev.t_seconds == 86400.0 and dev.kernel == "gaussian"
    assert _cli(["profile", "inspect", str(out), "--layout", "10x40", "-k", "4"]) == 0
    text = capsys.readouterr().out
    assert "n = 400" in text and "captured variance" in text
    fit_out = tmp_path / "f.npz"
    np.savez(tmp_path / "m.npz", maps=np.random.default_rng(0).standard_normal((40, 4, 4)))
    assert _cli(["profile", "fit", str(tmp_path / "m.npz"), "--estimator", "oas", "-o", str(fit_out)]) == 0
    assert load_device(fit_out).estimator == "oas"
    assert _cli(["profile", "inspect", str(fit_out), "--layout", "6x6"]) == 0
    np.savez(tmp_path / "bad.npz", sigma=np.array([[1.0, 2.0], [2.0, 1.0]]))
    with pytest.raises(ValueError, match="most negative eigenvalue"):
        _cli(["profile", "dense", str(tmp_path / "bad.npz"), "-o", str(tmp_path / "d.npz")])
    assert _cli(["profile", "dense", str(tmp_path / "bad.npz"), "--repair", "-o", str(tmp_path / "d.npz")]) == 0
    assert "clipped 1 negative eigenvalue" in capsys.readouterr().out
    with pytest.raises(ValueError, match="--set expects field=value"):
        _cli(["profile", "make", "device-A", "--set", "ell", "-o", str(out)])
    with pytest.raises(ValueError, match="unknown CrossbarParams field"):
        _cli(["profile", "make", "device-A", "--set", "foo=1", "-o", str(out)])
