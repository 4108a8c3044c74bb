"""The result cache: a hit returns the identical result, and any change of input is a miss."""

import json

import numpy as np
import pytest
import torch
from torch import nn

from dat.data import load_dataset
from dat.devices import PRESETS
from dat.profiles import bind
from dat.targets import find_targets
from landscape import compute as C
from landscape.cache import ResultCache, key_of


class Tiny(nn.Module):
    def __init__(self, seed: int, bn: bool = True):
        super().__init__()
        torch.manual_seed(seed)
        self.body = nn.Sequential(nn.Flatten(), nn.Linear(64, 8), nn.BatchNorm1d(8) if bn else nn.Identity(), nn.ReLU())
        self.classifier = nn.Linear(8, 10)

    def features(self, x):
        return self.body(x)

    def forward(self, x):
        return self.classifier(self.features(x))


@pytest.fixture(scope="module")
def setup():
    X, Y = load_dataset("digits").train_eval.tensors
    trio = [Tiny(s).eval() for s in (1, 2, 3)]
    t = find_targets(trio[0])
    profiles = {"A": bind(PRESETS["device-A"], t), "B": bind(PRESETS["device-B"], t)}
    return (X[:60], Y[:60]), trio, profiles


def _surface(setup, cache, **over):
    data, trio, profiles = setup
    kw = dict(profiles={"none": None, "A": profiles["A"]}, resolution=3, draws=2, seed=0, cache=cache)
    kw.update(over)
    models = kw.pop("trio", trio)
    return C.plane_surface(*models, kw.pop("data", data), **kw)


def test_surface_hit_is_identical(setup, tmp_path):
    first = _surface(setup, tmp_path)
    assert "cache" not in first.meta
    again = _surface(setup, tmp_path)
    assert again.meta["cache"]["hit"] is True
    for k, v in first.to_arrays().items():
        np.testing.assert_array_equal(again.to_arrays()[k], v, err_msg=k)
    assert again.panels == first.panels and again.markers == first.markers
    assert again.meta["inputs"] == json.loads(json.dumps(first.meta["inputs"]))
    assert len(list(tmp_path.glob("*.npz"))) == 1 and len(list(tmp_path.glob("*.json"))) == 1


@pytest.mark.parametrize("change", ["weights", "profile", "grid", "range", "seed", "draws", "bn", "split", "data",
                                    "panels"])
def test_any_change_of_input_misses(setup, tmp_path, change):
    data, trio, profiles = setup
    _surface(setup, tmp_path)
    moved = [Tiny(1), trio[1], trio[2]]
    with torch.no_grad():
        moved[0].classifier.bias[0] += 1e-3
    over = {"weights": dict(trio=moved),
            "profile": dict(profiles={"none": None, "A": profiles["B"]}),
            "grid": dict(resolution=(3, 4)), "range": dict(alpha_range=(-0.5, 1.4)), "seed": dict(seed=1),
            "draws": dict(draws=3), "bn": dict(bn="recalibrate"), "split": dict(split="test"),
            "data": dict(data=(data[0][:59], data[1][:59])),
            "panels": dict(profiles={"none": None, "A": profiles["A"], "B": profiles["B"]})}[change]
    res = _surface(setup, tmp_path, **over)
    assert "cache" not in res.meta, change
    assert len(list(tmp_path.glob("*.npz"))) == 2


def test_curves_hit_and_miss(setup, tmp_path):
    data, trio, profiles = setup
    kw = dict(draws=2, num_alphas=5, cache=ResultCache(tmp_path))
    first = C.noise_curves({"SGD": trio[0]}, profiles, data, **kw)
    again = C.noise_curves({"SGD": trio[0]}, profiles, data, **kw)
    assert again.meta["cache"]["hit"]
    np.testing.assert_array_equal(first.loss, again.loss)
    np.testing.assert_array_equal(first.clean_loss, again.clean_loss)
    other = C.noise_curves({"SGD": trio[0]}, profiles, data, **dict(kw, band="p10-p90"))
    assert "cache" not in other.meta


def test_key_depends_on_code_version(monkeypatch):
    import landscape.cache as cache_mod

    before = key_of({"a": 1})
    monkeypatch.setattr(cache_mod, "code_version", lambda: "other")
    assert key_of({"a": 1}) != before


def test_cache_argument_is_checked(setup):
    with pytest.raises(TypeError, match="cache must be"):
        _surface(setup, 42)
