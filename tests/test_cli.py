"""The `dat` command end to end on tiny digits runs: train, eval, table, demo, --help."""

import csv
import io
import json
import os

import pytest

from dat.checkpoint import read_meta
import argparse
import dataclasses

from dat.config import PRESETS, TrainConfig, help_of, resolve
from faces.cli import _config_from, build_parser, main

TINY = ["--epochs", "1", "--width", "4", "--hidden", "16", "--eval-draws", "2", "--quiet"]


@pytest.fixture(scope="module")
def trained(tmp_path_factory):
    folder = tmp_path_factory.mktemp("ckpt")
    paths = {}
    for method in ("sgd", "dat-fast"):
        paths[method] = str(folder / f"{method}.safetensors")
        assert main(["train", "--method", method, "--out", paths[method], *TINY]) == 0
    return folder, paths


def test_train_writes_a_checkpoint_with_its_config(trained):
    _, paths = trained
    meta = read_meta(paths["dat-fast"])
    assert meta["method"] == "dat-fast" and meta["config"]["epochs"] == 1 and meta["model"]["width"] == 4
    assert meta["batchnorm"] is True and read_meta(paths["sgd"])["batchnorm"] is False


def test_eval_under_another_device_prints_json(trained, capsys):
    _, paths = trained
    assert main(["eval", paths["dat-fast"], "--device", "device-B", "--draws", "3", "--json", "--split", "test"]) == 0
    out = json.loads(capsys.readouterr().out)
    assert out["device"] == "device-B" and out["metrics"]["test"]["noisy"]["draws"] == 3
    assert 0 <= out["metrics"]["test"]["clean"]["acc"] <= 1


def test_table_writes_markdown_and_csv_from_the_checkpoints(trained, tmp_path, capsys):
    folder, paths = trained
    md, csv_path = tmp_path / "t.md", tmp_path / "t.csv"
    assert main(["table", str(folder), "--markdown", str(md), "--csv", str(csv_path)]) == 0
    rows = list(csv.DictReader(io.StringIO(csv_path.read_text())))
    assert sorted(r["method"] for r in rows) == ["dat-fast", "sgd"]
    for row in rows:  # one seed: the row is that checkpoint's own numbers, in percent
        meta = read_meta(paths[row["method"]])
        assert float(row["test_noisy_mean"]) == pytest.approx(100 * meta["metrics"]["test"]["noisy"]["acc_mean"])
        assert float(row["train_clean_mean"]) == pytest.approx(100 * meta["metrics"]["train"]["clean"]["acc"])
        assert row["n_seeds"] == "1" and row["test_clean_sd"] == row["test_clean_ci95_low"] == ""  # no interval
    text = md.read_text()
    assert "| DAT-Fast |" in text and "| SGD |" in text and "Train time (min)" in text


def _train_parser():
    return build_parser()._subparsers._group_actions[0].choices["train"]


def test_help_explains_every_train_option():
    sub = build_parser()._subparsers._group_actions[0].choices
    text = " ".join(sub["train"].format_help().split())
    for f in dataclasses.fields(TrainConfig):
        assert f.metadata.get("help"), f"TrainConfig.{f.name} has no help in its field metadata"
        if f.metadata.get("flag", True):
            assert "--" + f.name.replace("_", "-") in text
            assert " ".join(help_of(f.name).split()).replace("%", "%%")[:40].replace("%%", "%") in text
    assert {"train", "eval", "table", "demo", "profile", "landscape"} <= set(sub)


def test_train_flags_follow_the_dataclass_types_and_defaults():
    """One flag per TrainConfig field (but the free-form extra), typed by the field's real type:
    no flag given resolves to the preset itself, and each flag's value reaches the field as that type."""
    actions = {a.dest: a for a in _train_parser()._actions if a.dest not in ("help", "preset", "quiet")}
    fields = {f.name: f for f in dataclasses.fields(TrainConfig)}
    assert set(actions) == set(fields) - {"extra"}
    expected = {"dataset": str, "data_root": str, "download": bool, "verify": bool, "arch": str, "batchnorm": bool,
                "width": int, "hidden": int, "method": str, "device": str, "targets": str, "units": str, "tile": int,
                "alpha": float, "k": int, "p": int, "rho": float, "strength": float, "lowrank": str, "stress": float,
                "epochs": int, "batch_size": int, "lr": float, "momentum": float, "optimizer": str,
                "weight_decay": float, "lr_decay": float, "lr_decay_every": int, "seed": int, "eval_draws": int,
                "eval_device": str, "eval_seed": int, "eval_batch_size": int, "out": str, "name": str, "resume": bool,
                "num_workers": int, "torch_device": str}
    assert set(expected) == set(actions)
    for name, action in actions.items():
        assert action.default is None and action.help == fields[name].metadata["help"], name
        if expected[name] is bool:
            assert isinstance(action, argparse.BooleanOptionalAction), name
        else:
            assert action.type is expected[name], name
    parse = build_parser().parse_args
    for preset in PRESETS:
        assert _config_from(parse(["train", "--preset", preset])) == resolve(preset)
    config = _config_from(parse(["train", "--tile", "32", "--strength", "0.5", "--no-resume", "--batchnorm",
                                 "--lr", "0.01", "--eval-device", "device-B"]))
    assert (config.tile, config.strength, config.resume, config.batchnorm, config.lr, config.eval_device) == \
        (32, 0.5, False, True, 0.01, "device-B")
    assert type(config.tile) is int and type(config.strength) is float and type(config.lr) is float


def test_bad_option_value_gives_a_clear_error(capsys):
    assert main(["train", "--method", "adam", *TINY]) == 2
    err = capsys.readouterr().err
    assert "method" in err and "adam" in err and "dat-fast" in err


def test_demo_in_miniature(tmp_path):
    from dat.train import make_demo
    make_demo(str(tmp_path / "ck"), str(tmp_path / "pr"), epochs=1, width=4, hidden=16, eval_draws=2)
    assert sorted(os.listdir(tmp_path / "pr")) == ["device-A.npz", "device-B.npz"]
    metas = {name: read_meta(tmp_path / "ck" / f"{name}.safetensors") for name in ("sgd", "dat-a", "dat-b")}
    assert metas["sgd"]["method"] == "sgd-bn" and metas["dat-a"]["device"]["name"] == "device-A"
    assert metas["dat-b"]["device"]["name"] == "device-B"
    # One architecture for the three, so they span the landscape plane.
    assert metas["sgd"]["model"] == metas["dat-a"]["model"] == metas["dat-b"]["model"]


def test_reproduce_in_miniature(tmp_path):
    from dat.table import reproduce
    result = reproduce("digits", seeds=(0,), folder=str(tmp_path), epochs=1, width=4, hidden=16, eval_draws=2)
    rows = result["rows"]
    assert {(r["device"], r["method"]) for r in rows} == {
        (d, m) for d in ("device-A", "device-B") for m in ("sgd", "sgd-bn", "dat-fast", "dat-full")}
    # SGD is trained once and evaluated under each device: same clean numbers, different noise.
    sgd = {r["device"]: r for r in rows if r["method"] == "sgd"}
    assert sgd["device-A"]["test_clean_mean"] == sgd["device-B"]["test_clean_mean"]
    assert (tmp_path / "table1.md").exists() and (tmp_path / "table1.csv").exists()


def test_dat_fast_trains_a_head_wider_than_a_tile(tmp_path):
    """The 10 digit classes on 8-wide tiles span two tile columns (as a CIFAR-100 head does on the
    paper's 64-wide tiles): DAT-Fast trains and records its low-rank report."""
    out = str(tmp_path / "wide-head.safetensors")
    assert main(["train", "--method", "dat-fast", "--tile", "8", "--out", out, *TINY]) == 0
    meta = read_meta(out)
    assert meta["config"]["tile"] == 8
    report = meta["lowrank"]
    assert report["mode"] == "plain" and report["k_used"] >= 10
    assert 0 < report["captured_relevant_variance"] <= 1 and 0 < report["captured_variance"] <= 1
