"""Noise targets and the crossbar layout map."""

import math

import pytest
import torch
from torch import nn

from dat.noise.targets import Targets, find_targets


class Net(nn.Module):
    def __init__(self):
        super().__init__()
        self.conv = nn.Conv2d(2, 5, 3)
        self.bn = nn.BatchNorm2d(5)
        self.fc1 = nn.Linear(7, 9)
        self.classifier = nn.Linear(9, 4)


def naive_layout(layer_shapes, tile):
    """Reference: walk layers, tile grid, cells in the documented order; list the weight each
    eta index touches as (layer name, out index, in index)."""
    R, C = tile
    order = []
    for name, shape in layer_shapes:
        out, fan_in = shape[0], math.prod(shape[1:])
        for tr in range(math.ceil(fan_in / R)):
            for tc in range(math.ceil(out / C)):
                rows = min(R, fan_in - tr * R)
                cols = min(C, out - tc * C)
                for r in range(rows):
                    for c in range(cols):
                        order.append((name, tc * C + c, tr * R + r, r, c))
    return order


def test_last_linear_is_the_last_linear_weight():
    t = find_targets(Net())
    assert [l.name for l in t.layers] == ["classifier.weight"]
    assert t.n == 36 and t.layers[0].rows == 9 and t.layers[0].cols == 4


def test_all_analog_takes_every_linear_and_conv_weight_flattened():
    t = find_targets(Net(), choice="all-analog", tile=(4, 3))
    assert [l.name for l in t.layers] == ["conv.weight", "fc1.weight", "classifier.weight"]
    assert t.layers[0].rows == 2 * 3 * 3 and t.layers[0].cols == 5
    assert t.n == 5 * 18 + 9 * 7 + 4 * 9
    names = dict(Net().named_parameters())
    assert all(l.name in names for l in t.layers)


def test_layout_map_matches_naive_walk_and_is_a_bijection():
    shapes = [("a", (5, 2, 3, 3)), ("b", (9, 7)), ("c", (4, 9))]
    tile = (4, 3)
    t = Targets(shapes, tile=tile)
    ref = naive_layout(shapes, tile)
    assert len(ref) == t.n
    seen = set()
    for i, (name, o, inn, r, c) in enumerate(ref):
        fan_in = math.prod(dict(shapes)[name][1:])
        loc = t.locate(i)
        assert (loc["layer"], loc["r"], loc["c"]) == (name, r, c)
        assert loc["weight_index"] == o * fan_in + inn
        assert t.eta_index(name, loc["weight_index"]) == i
        seen.add((name, loc["weight_index"]))
    assert len(seen) == t.n  # every weight hit exactly once


def test_eta_to_deltas_places_each_value_where_the_map_says():
    shapes = [("a", (5, 2, 3, 3)), ("b", (9, 7))]
    t = Targets(shapes, tile=(4, 3), units="absolute")
    weights = {n: torch.randn(s) for n, s in shapes}
    eta = torch.arange(t.n, dtype=torch.float64)
    deltas = t.eta_to_deltas(eta, weights)
    for i in range(t.n):
        loc = t.locate(i)
        assert deltas[loc["layer"]].reshape(-1)[loc["weight_index"]] == i


def test_round_trip_batched_relative_units():
    shapes = [("a", (5, 2, 3, 3)), ("b", (9, 7))]
    t = Targets(shapes, tile=(4, 3))
    g = torch.Generator().manual_seed(0)
    weights = {n: torch.randn(s, generator=g, dtype=torch.float64) for n, s in shapes}
    eta = torch.randn(3, 2, t.n, generator=g, dtype=torch.float64)
    deltas = t.eta_to_deltas(eta, weights)
    assert deltas["a"].shape == (3, 2, 5, 2, 3, 3)
    # relative units: delta = max|W| * eta, layer by layer
    loc = t.locate(0)
    assert torch.allclose(deltas["a"].reshape(3, 2, -1)[..., loc["weight_index"]], eta[..., 0] * weights["a"].abs().max())
    back = t.deltas_to_eta(deltas, weights)
    assert torch.allclose(back, eta, rtol=0, atol=1e-12)


def test_tiles_partition_eta():
    t = Targets([("b", (9, 7))], tile=(4, 3))
    tiles = t.tiles()
    assert [(x.tile_row, x.tile_col) for x in tiles][:4] == [(0, 0), (0, 1), (0, 2), (1, 0)]
    assert sum(x.size for x in tiles) == t.n
    assert all(a.offset + a.size == b.offset for a, b in zip(tiles, tiles[1:]))
    assert t.describe()["n"] == t.n


def test_wrong_eta_length_names_expected_and_found():
    t = find_targets(Net())
    w = dict(Net().named_parameters())
    with pytest.raises(ValueError, match=r"\[\.\.\., 36\].*\(35,\)"):
        t.eta_to_deltas(torch.zeros(35), w)


@pytest.mark.parametrize(
    "kwargs, msg",
    [
        ({"choice": "first"}, "choice"),
        ({"tile": (0, 4)}, "tile"),
        ({"tile": (4,)}, "tile"),
        ({"units": "volts"}, "units"),
    ],
)
def test_bad_options_raise(kwargs, msg):
    with pytest.raises(ValueError, match=msg):
        find_targets(Net(), **kwargs)


def test_model_without_linear_raises():
    with pytest.raises(ValueError, match="nn.Linear"):
        find_targets(nn.Sequential(nn.Conv2d(1, 2, 3)))


def test_wrong_weight_shape_and_zero_weight_raise():
    t = Targets([("b", (9, 7))], tile=(4, 3))
    with pytest.raises(ValueError, match=r"expected shape \(9, 7\)"):
        t.eta_to_deltas(torch.zeros(t.n), {"b": torch.zeros(7, 9)})
    with pytest.raises(ValueError, match="all zeros"):
        t.deltas_to_eta({"b": torch.ones(9, 7)}, {"b": torch.zeros(9, 7)})
