"""The result cache: a hit returns the identical result, and any change of input is a miss."""

import json

import numpy as np
import pytest
import torch
from torch import nn

from dat.data import load_dataset
from dat.noise.crossbar import PRESETS
from dat.noise.profile import bind
from dat.noise.targets import find_targets
from landscape import curves
from landscape import surfaces
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
    return surfaces.plane_surface(*models, kw.pop("data", data), **kw)


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
    first = curves.noise_curves({"SGD": trio[0]}, profiles, data, **kw)
    again = curves.noise_curves({"SGD": trio[0]}, profiles, data, **kw)
    assert again.meta["cache"]["hit"]
    np.testing.assert_array_equal(first.loss, again.loss)
    np.testing.assert_array_equal(first.clean_loss, again.clean_loss)
    other = curves.noise_curves({"SGD": trio[0]}, profiles, data, **dict(kw, band="p10-p90"))
    assert "cache" not in other.meta


def test_key_depends_on_code_version(monkeypatch):
    import landscape.cache as cache_mod

    before = key_of({"a": 1})
    monkeypatch.setattr(cache_mod, "code_version", lambda: "other")
    assert key_of({"a": 1}) != before


def test_cache_argument_is_checked(setup):
    with pytest.raises(TypeError, match="cache must be"):
        _surface(setup, 42)


# ------------------------------------------------------------------------------------------------
# Every ordered axis survives the round trip with its labels (values stay under their own names).
# ------------------------------------------------------------------------------------------------
def _by_label_curves(c):
    """{(array, model, device): values} for every per-model/device array of a Curves result."""
    out = {}
    for i, m in enumerate(c.models):
        out[("clean_loss", m)] = c.clean_loss[i]
        out[("clean_accuracy", m)] = c.clean_accuracy[i]
        for j, d in enumerate(c.devices):
            out[("alphas", m, d)] = c.alphas[j]
            for name in ("loss", "accuracy", "typical_norm", "loss_at_typical", "accuracy_at_typical"):
                out[(name, m, d)] = getattr(c, name)[i, j]
    return out


def _by_label_surface(s):
    out = {}
    for p, panel in enumerate(s.panels):
        for name in ("loss", "accuracy", "loss_std"):
            out[(name, panel)] = getattr(s, name)[p]
        for k, marker in enumerate(s.markers):
            out[("marker", panel, marker, "coords")] = np.array(s.markers[marker])
            out[("marker", panel, marker, "loss")] = s.marker_loss[p, k]
            out[("marker", panel, marker, "accuracy")] = s.marker_accuracy[p, k]
    return out


def _assert_same_by_label(fresh: dict, cached: dict):
    assert list(fresh) == list(cached)  # same labels, same order
    for key, v in fresh.items():
        np.testing.assert_array_equal(cached[key], v, err_msg=str(key))


def _trio_curves(setup, cache):
    data, trio, profiles = setup
    models = {"SGD": trio[0], "DAT-A": trio[1], "DAT-B": trio[2]}  # not in sorted order
    devices = {"device-B": profiles["B"], "device-A": profiles["A"]}  # reversed on purpose
    return curves.noise_curves(models, devices, data, draws=2, num_alphas=5, cache=cache)


def _trio_surface(setup, cache):
    data, trio, profiles = setup
    return surfaces.plane_surface(*trio, data, profiles={"none": None, "device-B": profiles["B"], "device-A": profiles["A"]},
                           resolution=3, draws=2, seed=0, cache=cache)


def test_curves_round_trip_keeps_every_value_under_its_labels(setup, tmp_path):
    fresh, cached = _trio_curves(setup, tmp_path), _trio_curves(setup, tmp_path)
    assert cached.meta["cache"]["hit"]
    assert cached.models == fresh.models == ("SGD", "DAT-A", "DAT-B")
    assert cached.devices == fresh.devices == ("device-B", "device-A")
    _assert_same_by_label(_by_label_curves(fresh), _by_label_curves(cached))


def test_surface_round_trip_keeps_every_value_under_its_labels(setup, tmp_path):
    fresh, cached = _trio_surface(setup, tmp_path), _trio_surface(setup, tmp_path)
    assert cached.meta["cache"]["hit"]
    assert cached.panels == fresh.panels == ("none", "device-B", "device-A")
    assert list(cached.markers.items()) == list(fresh.markers.items())
    assert list(cached.markers) == ["SGD", "DAT-A", "DAT-B"]
    _assert_same_by_label(_by_label_surface(fresh), _by_label_surface(cached))


def test_free_plane_round_trip(setup, tmp_path):
    data, trio, _ = setup
    fresh, cached = (surfaces.free_plane(trio[0], data, resolution=3, cache=tmp_path) for _ in range(2))
    assert cached.meta["cache"]["hit"]
    _assert_same_by_label(_by_label_surface(fresh), _by_label_surface(cached))


def test_comparison_and_summary_csv_from_cached_results_match_fresh(setup, tmp_path):
    from landscape.export import bundle_files
    from landscape.summary import compare_devices

    fresh_c, fresh_s = _trio_curves(setup, tmp_path), _trio_surface(setup, tmp_path)
    cached_c, cached_s = _trio_curves(setup, tmp_path), _trio_surface(setup, tmp_path)
    assert cached_c.meta["cache"]["hit"] and cached_s.meta["cache"]["hit"]
    fresh, cached = compare_devices(fresh_c, fresh_s), compare_devices(cached_c, cached_s)
    assert [(r["model"], r["device"]) for r in cached.rows] == [(r["model"], r["device"]) for r in fresh.rows]
    for a, b in zip(fresh.rows, cached.rows):
        assert list(a) == list(b)
        for k in a:
            np.testing.assert_array_equal(np.asarray(b[k]), np.asarray(a[k]), err_msg=f"{a['model']} {a['device']} {k}")
    # The surface column really is per model: the three models' values differ.
    assert len({r["surface_loss_increase"] for r in fresh.rows if r["device"] == "device-A"}) == 3
    for fresh_r, cached_r in ((fresh_c, cached_c), (fresh_s, cached_s)):
        f = bundle_files(fresh_r, figures={}, formats=("csv", "npz"), comparison=fresh)
        c = bundle_files(cached_r, figures={}, formats=("csv", "npz"), comparison=cached)
        assert c["summary.csv"] == f["summary.csv"]
        assert c["numbers.csv"] == f["numbers.csv"]
        assert json.loads(c["reproduce.json"])["labels"] == json.loads(f["reproduce.json"])["labels"]


def test_cache_json_lists_labels_in_axis_order(setup, tmp_path):
    _trio_surface(setup, tmp_path)
    record = json.loads(next(tmp_path.glob("*.json")).read_text())
    assert [row[0] for row in record["labels"]["markers"]] == ["SGD", "DAT-A", "DAT-B"]
    assert record["labels"]["panels"] == ["none", "device-B", "device-A"]


def test_entry_whose_labels_disagree_with_its_arrays_is_refused(setup, tmp_path):
    _trio_surface(setup, tmp_path)
    js = next(tmp_path.glob("*.json"))
    record = json.loads(js.read_text())
    record["labels"]["markers"] = record["labels"]["markers"][:2]
    js.write_text(json.dumps(record))
    with pytest.raises(ValueError, match="marker_loss"):
        _trio_surface(setup, tmp_path)
