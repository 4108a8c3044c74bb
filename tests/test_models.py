"""The architectures: shapes, the features/classifier split, BatchNorm switch, known sizes."""

import pytest
import torch
from torch import nn

from dat.models import build_model, model_from_spec


@pytest.mark.parametrize("arch", ["cnn6", "resnet18"])
@pytest.mark.parametrize("batchnorm", [True, False])
@pytest.mark.parametrize("geometry", [(1, 8, 10), (3, 32, 100)])
def test_forward_equals_classifier_of_features(arch, batchnorm, geometry):
    channels, size, classes = geometry
    torch.manual_seed(0)
    model = build_model(arch, batchnorm, channels, size, classes, width=4, hidden=16).eval()
    x = torch.randn(3, channels, size, size)
    out = model(x)
    assert out.shape == (3, classes)
    assert torch.equal(out, model.classifier(model.features(x)))
    assert isinstance(model.classifier, nn.Linear) and model.classifier.out_features == classes
    last_linear = [m for m in model.modules() if isinstance(m, nn.Linear)][-1]
    assert last_linear is model.classifier


@pytest.mark.parametrize("arch", ["cnn6", "resnet18"])
def test_batchnorm_switch(arch):
    with_bn = build_model(arch, True, 1, 8, 10, width=4)
    without = build_model(arch, False, 1, 8, 10, width=4)
    assert any(isinstance(m, nn.BatchNorm2d) for m in with_bn.modules())
    assert not any(isinstance(m, nn.modules.batchnorm._BatchNorm) for m in without.modules())
    # The analog layers have the same names and shapes in both variants.
    def analog(model):
        return {n: p.shape for n, p in model.named_parameters() if p.ndim >= 2}
    assert analog(with_bn) == analog(without)


def test_resnet18_has_the_standard_cifar_parameter_count():
    # The CIFAR ResNet18 (3x3 stem, no max-pool, widths 64..512, BN) has 11,173,962 parameters
    # with 10 classes: the number every CIFAR ResNet18 implementation reports.
    model = build_model("resnet18", True, 3, 32, 10)
    assert sum(p.numel() for p in model.parameters()) == 11_173_962


def test_cnn6_has_six_weight_layers_and_paper_head():
    model = build_model("cnn6", True, 3, 32, 100)
    weights = [m for m in model.modules() if isinstance(m, (nn.Conv2d, nn.Linear))]
    assert len(weights) == 6
    assert model.classifier.weight.numel() == 256 * 100  # the 25,600-weight head of DESIGN.md


def test_spec_rebuilds_the_same_architecture():
    model = build_model("cnn6", True, 1, 8, 10, width=8, hidden=32)
    again = model_from_spec(model.spec)
    assert {n: p.shape for n, p in model.state_dict().items()} == {n: p.shape for n, p in again.state_dict().items()}


@pytest.mark.parametrize("kwargs, match", [
    (dict(arch="vgg"), "arch"),
    (dict(image_size=10), "multiple of 4"),
    (dict(num_classes=0), "num_classes"),
    (dict(batchnorm="yes"), "batchnorm"),
])
def test_bad_arguments_are_refused(kwargs, match):
    args = dict(arch="cnn6", batchnorm=True, in_channels=1, image_size=8, num_classes=10)
    args.update(kwargs)
    with pytest.raises((ValueError, TypeError), match=match):
        build_model(**args)
