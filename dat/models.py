"""The paper's two architectures, sized from the dataset: a 6-layer CNN and ResNet18 (CIFAR variant).

Both come with and without BatchNorm (without it, the norm layers are identities, so the parameter
names of the analog layers are the same in both variants). Every model exposes

- ``features(x) -> [B, F]``: the body, everything before the last ``nn.Linear``;
- ``classifier``: the last ``nn.Linear`` (the default noise target, where the paper injects noise);

and ``forward(x) == classifier(features(x))``, so head-only noise can share the body's forward pass.
``model.spec`` is the JSON-able recipe that rebuilds the same architecture from a checkpoint.
"""

from __future__ import annotations

import torch
from torch import nn

ARCHS = ("cnn6", "resnet18")

# Widths of the paper-sized models (CIFAR). Digits presets pass smaller ones to stay fast.
DEFAULT_WIDTH = {"cnn6": 64, "resnet18": 64}
DEFAULT_HIDDEN = 256  # CNN6's fully connected hidden layer: its head on CIFAR-100 is 256 x 100 = 25,600 weights


def _norm2d(batchnorm: bool, channels: int) -> nn.Module:
    return nn.BatchNorm2d(channels) if batchnorm else nn.Identity()


def _norm1d(batchnorm: bool, features: int) -> nn.Module:
    return nn.BatchNorm1d(features) if batchnorm else nn.Identity()


class CNN6(nn.Module):
    """Six weight layers: four 3x3 convolutions (two stages of two, each followed by 2x2 max-pooling)
    and two fully connected layers. With BatchNorm, each convolution and the hidden linear layer is
    followed by a BatchNorm; the classifier is not (its outputs are the logits).

    Convolutions carry no bias when followed by BatchNorm (the norm's shift replaces it).
    """

    def __init__(self, batchnorm: bool, in_channels: int, image_size: int, num_classes: int,
                 width: int = DEFAULT_WIDTH["cnn6"], hidden: int = DEFAULT_HIDDEN):
        super().__init__()
        if image_size % 4 != 0:
            raise ValueError(f"CNN6 pools twice by 2: image_size must be a multiple of 4, found {image_size}")
        w1, w2 = width, 2 * width
        bias = not batchnorm

        def conv(cin: int, cout: int) -> list[nn.Module]:
            return [nn.Conv2d(cin, cout, 3, padding=1, bias=bias), _norm2d(batchnorm, cout), nn.ReLU(inplace=True)]

        self.body = nn.Sequential(
            *conv(in_channels, w1), *conv(w1, w1), nn.MaxPool2d(2),
            *conv(w1, w2), *conv(w2, w2), nn.MaxPool2d(2),
            nn.Flatten(),
            nn.Linear(w2 * (image_size // 4) ** 2, hidden, bias=bias), _norm1d(batchnorm, hidden), nn.ReLU(inplace=True),
        )
        self.classifier = nn.Linear(hidden, num_classes)

    def features(self, x: torch.Tensor) -> torch.Tensor:
        return self.body(x)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.classifier(self.features(x))


class BasicBlock(nn.Module):
    """ResNet basic block (two 3x3 convolutions and a skip connection; a 1x1 projection when the
    shape changes)."""

    def __init__(self, cin: int, cout: int, stride: int, batchnorm: bool):
        super().__init__()
        bias = not batchnorm
        self.conv1 = nn.Conv2d(cin, cout, 3, stride=stride, padding=1, bias=bias)
        self.bn1 = _norm2d(batchnorm, cout)
        self.conv2 = nn.Conv2d(cout, cout, 3, stride=1, padding=1, bias=bias)
        self.bn2 = _norm2d(batchnorm, cout)
        self.shortcut: nn.Module = nn.Identity()
        if stride != 1 or cin != cout:
            self.shortcut = nn.Sequential(nn.Conv2d(cin, cout, 1, stride=stride, bias=bias), _norm2d(batchnorm, cout))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out = torch.relu(self.bn1(self.conv1(x)))
        out = self.bn2(self.conv2(out))
        return torch.relu(out + self.shortcut(x))


class ResNet18(nn.Module):
    """ResNet18 for small images (He et al. 2016, CIFAR variant): a 3x3 stride-1 stem and no max-pool,
    four stages of two basic blocks (widths w, 2w, 4w, 8w; strides 1, 2, 2, 2), global average
    pooling, one linear classifier. With w = 64 its head is 512 x classes."""

    def __init__(self, batchnorm: bool, in_channels: int, image_size: int, num_classes: int,
                 width: int = DEFAULT_WIDTH["resnet18"]):
        super().__init__()
        del image_size  # global average pooling makes the network independent of the image size
        bias = not batchnorm
        widths = [width, 2 * width, 4 * width, 8 * width]
        layers: list[nn.Module] = [nn.Conv2d(in_channels, width, 3, padding=1, bias=bias),
                                   _norm2d(batchnorm, width), nn.ReLU(inplace=True)]
        cin = width
        for i, cout in enumerate(widths):
            stride = 1 if i == 0 else 2
            layers += [BasicBlock(cin, cout, stride, batchnorm), BasicBlock(cout, cout, 1, batchnorm)]
            cin = cout
        layers += [nn.AdaptiveAvgPool2d(1), nn.Flatten()]
        self.body = nn.Sequential(*layers)
        self.classifier = nn.Linear(cin, num_classes)

    def features(self, x: torch.Tensor) -> torch.Tensor:
        return self.body(x)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.classifier(self.features(x))


def build_model(arch: str = "cnn6", batchnorm: bool = True, in_channels: int = 3, image_size: int = 32,
                num_classes: int = 10, *, width: int | None = None, hidden: int | None = None) -> nn.Module:
    """Build ``arch`` ("cnn6" or "resnet18") for images of ``in_channels`` x ``image_size`` x
    ``image_size`` and ``num_classes`` classes. ``width``: channels of the first stage (default 64);
    ``hidden``: CNN6's hidden linear width (default 256; ignored by ResNet18)."""
    if arch not in ARCHS:
        raise ValueError(f"Invalid arch: expected one of {ARCHS}, found {arch!r}")
    if not isinstance(batchnorm, bool):
        raise TypeError(f"batchnorm must be a bool, found {type(batchnorm).__name__}")
    for name, value in (("in_channels", in_channels), ("image_size", image_size), ("num_classes", num_classes)):
        if not isinstance(value, int) or isinstance(value, bool) or value < 1:
            raise ValueError(f"Invalid {name}: expected a positive int, found {value!r}")
    width = DEFAULT_WIDTH[arch] if width is None else int(width)
    if width < 1:
        raise ValueError(f"Invalid width: expected a positive int, found {width}")
    spec = {"arch": arch, "batchnorm": batchnorm, "in_channels": in_channels, "image_size": image_size,
            "num_classes": num_classes, "width": width}
    if arch == "cnn6":
        hidden = DEFAULT_HIDDEN if hidden is None else int(hidden)
        if hidden < 1:
            raise ValueError(f"Invalid hidden: expected a positive int, found {hidden}")
        model: nn.Module = CNN6(batchnorm, in_channels, image_size, num_classes, width=width, hidden=hidden)
        spec["hidden"] = hidden
    else:
        model = ResNet18(batchnorm, in_channels, image_size, num_classes, width=width)
    model.spec = spec  # type: ignore[attr-defined]
    return model


def model_from_spec(spec: dict) -> nn.Module:
    """Rebuild a model from ``model.spec`` (as stored in checkpoint metadata)."""
    required = ("arch", "batchnorm", "in_channels", "image_size", "num_classes", "width")
    missing = [key for key in required if key not in spec]
    if missing:
        raise ValueError(f"model spec is missing {missing}; found keys {sorted(spec)}")
    return build_model(spec["arch"], spec["batchnorm"], spec["in_channels"], spec["image_size"],
                       spec["num_classes"], width=spec["width"], hidden=spec.get("hidden"))
