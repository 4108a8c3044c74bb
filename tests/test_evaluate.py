"""One evaluation rule: `dat eval`, `dat table`, the dashboard's recipe and training's own final
evaluation give identical numbers for the same checkpoint and device, and say which draws they used."""

import csv
import io
import json

import pytest

from dat.checkpoint import read_meta
from faces.cli import main
from dat.evaluate import evaluate_checkpoint as evaluate_by_rule
from dat.table import table_rows, to_csv
from faces.dashboard.helpers import evaluate_checkpoint as dashboard_evaluate
from faces.dashboard.helpers import evaluation_row

TINY = ["--epochs", "1", "--width", "4", "--hidden", "8", "--eval-draws", "5", "--quiet"]


@pytest.fixture(scope="module")
def model(tmp_path_factory):
    """SGD-BN with training seed 1: a seed other than the evaluation's, where the rules used to differ."""
    path = tmp_path_factory.mktemp("eval") / "sgd-bn-s1.safetensors"
    assert main(["train", "--method", "sgd-bn", "--seed", "1", "--out", str(path), *TINY]) == 0
    return str(path)


def _cli_eval(path, capsys, *extra):
    capsys.readouterr()
    assert main(["eval", path, "--json", *extra]) == 0
    return json.loads(capsys.readouterr().out)


@pytest.mark.parametrize("device", ["device-A", "device-B"])
def test_eval_table_and_dashboard_give_identical_numbers(model, device, capsys):
    cli = _cli_eval(model, capsys, "--device", device)
    (row,) = table_rows([{**read_meta(model), "path": model}], device=device)
    dash = dashboard_evaluate(model, device)
    for split in ("train", "test"):
        expected = cli["metrics"][split]["noisy"]["acc_mean"]
        assert row[f"{split}_noisy_mean"] == 100 * expected  # exactly, not approximately
        assert dash[split]["noisy"]["acc_mean"] == expected
        assert dash[split]["clean"]["acc"] == cli["metrics"][split]["clean"]["acc"]
    assert cli["eval_seed"] == row["eval_seed"] == dash["eval_seed"] == 0
    assert cli["draws"] == row["draws"] == dash["test"]["noisy"]["draws"] == 5  # the model's own eval_draws


def test_training_stores_exactly_what_a_fresh_evaluation_gives(model, capsys):
    stored = read_meta(model)["metrics"]
    fresh = evaluate_by_rule(model, "device-A")
    assert stored["eval_seed"] == 0 and stored["eval_device"] == "device-A"
    for split in ("train", "test"):
        assert stored[split]["noisy"]["acc_per_draw"] == fresh[split]["noisy"]["acc_per_draw"]
        assert stored[split]["clean"] == fresh[split]["clean"]
    assert stored["eval_profile_hash"] == fresh["eval_profile_hash"]
    # The table without a device uses the stored numbers; dat eval with no device agrees with them.
    (row,) = table_rows([{**read_meta(model), "path": model}])
    assert row["test_noisy_mean"] == 100 * _cli_eval(model, capsys)["metrics"]["test"]["noisy"]["acc_mean"]


def test_another_eval_seed_is_other_draws_and_is_recorded(model, capsys):
    zero, seven = _cli_eval(model, capsys), _cli_eval(model, capsys, "--eval-seed", "7")
    assert seven["eval_seed"] == 7
    assert zero["metrics"]["test"]["noisy"]["acc_mean"] != seven["metrics"]["test"]["noisy"]["acc_mean"]
    (row,) = table_rows([{**read_meta(model), "path": model}], eval_seed=7)
    assert row["test_noisy_mean"] == 100 * seven["metrics"]["test"]["noisy"]["acc_mean"]
    assert list(csv.DictReader(io.StringIO(to_csv([row]))))[0]["eval_seed"] == "7"


def test_dashboard_row_names_the_draws_and_seed(model):
    row = evaluation_row("m", "device-A", dashboard_evaluate(model, "device-A", draws=4, seed=3))
    assert row["± over"] == "std over 4 draws" and row["eval seed"] == 3 and "±" in row["test acc noisy (%)"]


def test_eval_reports_the_worst_chips_over_its_draws(model, capsys):
    """p1 / p5 of `dat eval` are the 1st / 5th percentiles of the per-draw accuracies of the same
    evaluation (each draw one programmed chip), computed here with numpy's percentile."""
    import numpy as np

    cli = _cli_eval(model, capsys, "--device", "device-B")
    fresh = evaluate_by_rule(model, "device-B")
    for split in ("train", "test"):
        per_draw = np.asarray(fresh[split]["noisy"]["acc_per_draw"], dtype=np.float64)
        noisy = cli["metrics"][split]["noisy"]
        assert noisy["acc_p1"] == pytest.approx(np.percentile(per_draw, 1), abs=1e-12)
        assert noisy["acc_p5"] == pytest.approx(np.percentile(per_draw, 5), abs=1e-12)
        assert noisy["acc_p1"] <= noisy["acc_p5"] <= noisy["acc_mean"]
        assert noisy["acc_se"] == pytest.approx(per_draw.std(ddof=1) / np.sqrt(per_draw.size), abs=1e-12)
