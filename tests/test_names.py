"""Named runs and trios: readable defaults, names chosen at training time and kept as data, unique
labels, which checkpoints may form a trio, and a trio with one file twice refused before computing."""

import os
import shutil

import pytest
import torch

from dat.checkpoint import (check_display_name, check_trio, compatible, default_run_name, default_trio_name,
                            display_name, name_slug, read_meta, save_checkpoint)
from dat.config import resolve
from dat.errors import UserError
from dat.fileio import check_name
from dat.models import build_model
from faces.cli import main
from faces.dashboard import helpers


def checkpoint(path, width=4, **meta):
    torch.manual_seed(0)
    model = build_model("cnn6", True, 1, 8, 10, width=width, hidden=8)
    return str(save_checkpoint(path, model, {"method": "sgd-bn", "dataset": {"dataset": "digits"}, **meta}))


def test_default_names_read_as_words():
    assert default_run_name(resolve("digits", method="sgd-bn").to_dict()) == "SGD-BN digits CNN6, 20 epochs"
    assert default_run_name(resolve("digits", method="dat-fast", device="device-B").to_dict()) == \
        "DAT-Fast (device-B) digits CNN6, 20 epochs"
    assert default_run_name(resolve("cifar10-resnet18", method="dat-full", device="profiles/lab.npz").to_dict()) == \
        "DAT-Full (lab) CIFAR-10 ResNet18, 200 epochs"
    assert default_trio_name(resolve("digits", epochs=1).to_dict()) == "digits CNN6 trio, 1 epoch"


def test_a_checkpoint_without_a_name_gets_the_readable_default(tmp_path):
    path = checkpoint(tmp_path / "old.safetensors", config={"epochs": 5, "arch": "cnn6"})
    assert display_name(read_meta(path)) == "SGD-BN digits CNN6, 5 epochs"
    named = checkpoint(tmp_path / "new.safetensors", display_name="baseline, lr 0.05")
    assert display_name(read_meta(named)) == "baseline, lr 0.05"


@pytest.mark.parametrize("bad", ["x" * 81, "tab\x00null", "bell\x07"])
def test_names_that_are_not_printable_short_text_are_refused(bad):
    with pytest.raises(UserError, match="printable text"):
        check_display_name(bad)
    with pytest.raises(UserError, match="Invalid name"):
        resolve("digits", name=bad)


def test_blank_names_mean_the_default_and_spaces_are_tidied():
    assert check_display_name("   ") is None and check_display_name(None) is None
    assert resolve("digits", name="  my   run \n").name == "my run"


@pytest.mark.parametrize("name", ["../../etc/passwd", "/abs/path", "a/b\\c", "..", "Ünïcode ✓ run", "", "---"])
def test_a_name_never_becomes_a_path(name):
    slug = name_slug(name)
    assert check_name(slug) == slug and "/" not in slug and "\\" not in slug and ".." not in slug


def test_the_name_does_not_define_the_run():
    """A name is a label: changing it neither blocks a resume nor splits Table I's seeds."""
    from dat.table import NOT_RUN_DEFINING
    from dat.train import _trajectory_fields

    a, b = resolve("digits", name="first"), resolve("digits", name="second")
    assert _trajectory_fields(a) == _trajectory_fields(b)
    assert "name" in NOT_RUN_DEFINING


def test_demo_stores_the_trio_name_and_each_model_name(demo_workspace):
    metas = {role: read_meta(demo_workspace / "checkpoints" / f"{role}.safetensors") for role in ("sgd", "dat-a", "dat-b")}
    assert {r: m["trio"] for r, m in metas.items()} == {
        r: {"name": "digits CNN6 trio, 1 epoch", "role": r} for r in metas}
    assert [m["display_name"] for m in metas.values()] == [
        "SGD-BN digits CNN6, 1 epoch", "DAT-Fast (device-A) digits CNN6, 1 epoch",
        "DAT-Fast (device-B) digits CNN6, 1 epoch"]


def test_a_named_single_run_keeps_its_name_and_the_cli_prints_it(tmp_path, capsys):
    out = tmp_path / "m.safetensors"
    assert main(["train", "--preset", "digits", "--method", "sgd-bn", "--epochs", "1", "--width", "4", "--hidden", "8",
                 "--eval-draws", "2", "--name", "my baseline", "--out", str(out), "--quiet"]) == 0
    assert read_meta(out)["display_name"] == "my baseline"
    assert "named 'my baseline'" in capsys.readouterr().out
    assert main(["train", "--preset", "digits", "--name", "x" * 81, "--out", str(tmp_path / "n.safetensors"),
                 "--quiet"]) == 2


def test_compatibility_is_architecture_dataset_and_targets(tmp_path):
    base = read_meta(checkpoint(tmp_path / "a.safetensors", config={"targets": "last-linear"}))
    assert compatible(base, read_meta(checkpoint(tmp_path / "b.safetensors", config={"targets": "last-linear"})))
    assert not compatible(base, read_meta(checkpoint(tmp_path / "w.safetensors", width=6)))
    assert not compatible(base, read_meta(checkpoint(tmp_path / "t.safetensors", config={"targets": "all-analog"})))
    assert not compatible(base, read_meta(checkpoint(tmp_path / "d.safetensors", dataset={"dataset": "cifar10"})))


def test_check_trio_refuses_one_file_twice_and_mixed_models(tmp_path):
    a, b, c = (checkpoint(tmp_path / f"{n}.safetensors") for n in "abc")
    check_trio({"SGD": a, "DAT-A": b, "DAT-B": c})
    with pytest.raises(UserError, match=r"three different checkpoints, found .*a.safetensors as both SGD and DAT-B"):
        check_trio({"SGD": a, "DAT-A": b, "DAT-B": a})
    os.symlink(a, tmp_path / "alias.safetensors")  # the same file under another name
    with pytest.raises(UserError, match="three different checkpoints"):
        check_trio({"SGD": a, "DAT-A": b, "DAT-B": str(tmp_path / "alias.safetensors")})
    wide = checkpoint(tmp_path / "wide.safetensors", width=6)
    with pytest.raises(UserError, match="must share their model"):
        check_trio({"SGD": a, "DAT-A": b, "DAT-B": wide})


def test_cli_landscape_refuses_a_trio_with_one_file_twice(tmp_path, capsys):
    a, b = (checkpoint(tmp_path / f"{n}.safetensors") for n in "ab")
    for command in ("2d", "compare"):
        code = main(["landscape", command, "--sgd", a, "--dat-a", b, "--dat-b", a, "--out", str(tmp_path / "o"),
                     "--quiet", "--no-cache"])
        assert code == 2 and "three different checkpoints" in capsys.readouterr().err
    assert not (tmp_path / "o").exists()  # refused before anything was computed or written


def test_labels_are_names_made_unique_by_trio_then_file(tmp_path):
    from faces.dashboard.workspace import Workspace

    ws = Workspace(tmp_path)
    for group, trio in (("t1", "first trio"), ("t2", "second trio")):
        for role in ("sgd", "dat-a", "dat-b"):
            checkpoint(ws.checkpoints_dir / group / f"{role}.safetensors", display_name=f"model {role}",
                       trio={"name": trio, "role": role})
    checkpoint(ws.checkpoints_dir / "solo.safetensors", display_name="model sgd")
    checkpoint(ws.checkpoints_dir / "own.safetensors", display_name="my own name")
    rows = ws.list_checkpoints()
    labels = helpers.model_labels(rows)
    assert labels["t1/sgd.safetensors"] == "model sgd · first trio"
    assert labels["t2/dat-b.safetensors"] == "model dat-b · second trio"
    assert labels["solo.safetensors"] == "model sgd"  # the only one of that name without a trio
    assert labels["own.safetensors"] == "my own name"
    assert len(set(labels.values())) == len(labels)
    assert helpers.trio_labels(ws.trios(rows), rows) == {"t1": "first trio", "t2": "second trio"}


def test_trio_role_choices_leave_out_what_cannot_share_the_plane(tmp_path):
    from faces.dashboard.workspace import Workspace

    ws = Workspace(tmp_path)
    for role in ("sgd", "dat-a", "dat-b"):
        checkpoint(ws.checkpoints_dir / f"{role}.safetensors")
    checkpoint(ws.checkpoints_dir / "wide.safetensors", width=6)
    checkpoint(ws.checkpoints_dir / "twin.safetensors")
    rows = ws.list_checkpoints()
    choices = helpers.trio_role_choices(rows, ws.trios(rows)[""])
    assert set(choices) == {"sgd.safetensors", "dat-a.safetensors", "dat-b.safetensors", "twin.safetensors"}


def test_dashboard_jobs_name_files_and_folders_by_slug(tmp_path):
    from faces.dashboard import jobs
    from faces.dashboard.workspace import Workspace

    ws = Workspace(tmp_path)
    path = jobs.reserve_path(ws.checkpoints_dir, name_slug("../My run: lr 0.05"), ".safetensors")
    assert path.parent == ws.checkpoints_dir and path.name.startswith("my-run-lr-0-05-")


def test_table_run_label_uses_the_chosen_names(tmp_path):
    """Two runs of one method that differ in a setting: the names the user gave label the rows."""
    from dat.table import layout_table, table_rows

    metrics = {s: {"clean": {"acc": 0.9, "loss": 0.3}, "noisy": {"acc_mean": 0.8, "acc_std": 0.01, "loss_mean": 0.5,
                                                                  "loss_std": 0.02, "draws": 2}} for s in ("train", "test")}
    metrics.update(eval_device="device-A", eval_seed=0, eval_profile_hash="h", eval_batch_size=512)
    metas = []
    for lr, name in ((0.05, "slow"), (0.1, "fast")):
        config = resolve("digits", method="sgd-bn", lr=lr, name=name).to_dict()
        path = checkpoint(tmp_path / f"{name}.safetensors", method="sgd-bn", config=config, metrics=metrics,
                          display_name=name, seed=0)
        metas.append({**read_meta(path), "path": path})
    rows = table_rows(metas)
    assert sorted(r["run"] for r in rows) == ["fast", "slow"]
    assert "Run" in layout_table(rows).columns
    unnamed = [{**m, "display_name": default_run_name(m)} for m in metas]
    assert sorted(r["run"] for r in table_rows(unnamed)) == ["lr=0.05", "lr=0.1"]  # no names: the settings


def test_checkpoint_rows_show_name_trio_and_file(demo_workspace, tmp_path):
    from faces.dashboard.workspace import Workspace

    root = tmp_path / "ws"
    shutil.copytree(demo_workspace, root)
    rows = helpers.checkpoint_rows(Workspace(root).list_checkpoints())
    by_file = {r["file"]: r for r in rows}
    assert by_file["dat-b.safetensors"]["name"] == "DAT-Fast (device-B) digits CNN6, 1 epoch"
    assert by_file["dat-b.safetensors"]["trio"] == "digits CNN6 trio, 1 epoch"
