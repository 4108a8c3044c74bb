"""The CLI and the dashboard build a landscape by one recipe (landscape.spec.spec_from_checkpoints):
for the same checkpoints they perturb the same targets with the same devices and give the same
numbers, whatever the checkpoints were trained with."""

import numpy as np
import pytest
import torch

from dat.checkpoint import save_checkpoint
from dat.errors import UserError
from dat.models import build_model
from dat.trio import MARKERS
from faces.cli import build_parser, main as cli_main
from faces.cli.landscape import _spec_kwargs
from landscape import defaults as D
from landscape.export import load_numbers
from landscape.spec import run_spec, spec_from_checkpoints

# Trained settings unlike the CLI's former fixed defaults (last-linear, tile 64, stress 1).
TRAINED = dict(dataset="digits", targets="all-analog", tile=8, units="relative", stress=2.0)


@pytest.fixture(scope="module")
def trio(tmp_path_factory):
    folder = tmp_path_factory.mktemp("trio")
    paths = {}
    for seed, label in enumerate(("SGD", "DAT-A", "DAT-B")):
        torch.manual_seed(seed)
        model = build_model("cnn6", batchnorm=True, in_channels=1, image_size=8, num_classes=10, width=4, hidden=8)
        paths[label] = str(save_checkpoint(folder / f"{label}.safetensors", model,
                                           {"method": label, "config": dict(TRAINED)}))
    return paths


def test_spec_takes_targets_tile_units_and_stress_as_trained(trio):
    spec = spec_from_checkpoints("curves", trio, {"device-A": "device-A"})
    assert (spec.dataset, spec.targets, spec.tile, spec.units, spec.stress) == tuple(TRAINED.values())


def test_cli_and_dashboard_give_identical_curves(trio, tmp_path):
    from faces.dashboard.helpers import landscape_spec

    settings = dict(split="test", max_samples=40, num_alphas=5, draws=2, seed=3)
    dash = run_spec(landscape_spec("curves", trio, {"device-A": "device-A", "device-B": "device-B"}, **settings))
    args = ["landscape", "1d", "--split", "test", "--max-samples", "40", "--num-alphas", "5", "--draws", "2", "--seed", "3",
            "--formats", "none", "--no-cache", "--quiet", "--out", str(tmp_path / "cli")]
    for label, path in trio.items():
        args += ["--checkpoint", f"{label}={path}"]
    assert cli_main(args) == 0
    cli = load_numbers(tmp_path / "cli")
    loss = next(k for k in cli if k.endswith("loss") or k == "loss")
    np.testing.assert_array_equal(cli[loss], dash.loss)


def test_checkpoints_trained_differently_are_refused(trio, tmp_path):
    torch.manual_seed(9)
    model = build_model("cnn6", batchnorm=True, in_channels=1, image_size=8, num_classes=10, width=4, hidden=8)
    other = save_checkpoint(tmp_path / "other.safetensors", model,
                            {"method": "x", "config": {**TRAINED, "targets": "last-linear"}})
    with pytest.raises(UserError, match="targets"):
        spec_from_checkpoints("curves", {**trio, "other": str(other)}, {"device-A": "device-A"})


def test_both_faces_start_from_one_set_of_grid_and_draw_defaults(trio):
    """The CLI's and the library's defaults are landscape.defaults; the kept surface grid (21 x 23
    over the paper's ranges) has all three markers of the trio on grid points."""
    args = build_parser().parse_args(["landscape", "2d", "--sgd", trio["SGD"], "--dat-a", trio["DAT-A"],
                                      "--dat-b", trio["DAT-B"], "--out", "unused"])
    surface = spec_from_checkpoints("surface", trio, **_spec_kwargs(args, "surface"))
    library = spec_from_checkpoints("surface", trio, {"A": "device-A"})
    for spec in (surface, library):
        assert (spec.resolution, spec.draws) == (D.SURFACE_RESOLUTION, D.SURFACE_DRAWS)
        assert (spec.alpha_range, spec.beta_range) == (D.SURFACE_ALPHA_RANGE, D.SURFACE_BETA_RANGE)
    alphas = np.linspace(*surface.alpha_range, surface.resolution[0])
    betas = np.linspace(*surface.beta_range, surface.resolution[1])
    for a, b in MARKERS.values():
        assert np.isclose(alphas, a, atol=1e-12).any() and np.isclose(betas, b, atol=1e-12).any(), (a, b)
    args = build_parser().parse_args(["landscape", "1d", "--checkpoint", f"SGD={trio['SGD']}", "--out", "unused"])
    curves = spec_from_checkpoints("curves", {"SGD": trio["SGD"]}, **_spec_kwargs(args, "curves"))
    assert (curves.draws, curves.num_alphas, curves.span) == (D.CURVE_DRAWS, D.CURVE_POINTS, D.CURVE_SPAN)
