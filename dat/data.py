"""Datasets: scikit-learn's digits (embedded, the default) and CIFAR-10 / CIFAR-100 from a local folder.

Downloading happens only when the caller asks for it (``download=True``, ``dat train --download``).
"""

from __future__ import annotations

import os
from dataclasses import dataclass

import numpy as np
import torch
from torch.utils.data import Dataset, TensorDataset

from dat.config import DATASETS  # named once, torch-free, for the forms
from dat.errors import UserError

# Where CIFAR is looked for when the user names no folder (relative to the working folder).
DEFAULT_DATA_ROOT = "data"

# Fixed split of digits: 25 % test, stratified by class, always the same rows (seed 0), so
# every model trained on digits is evaluated on the same held-out images.
DIGITS_TEST_FRACTION = 0.25
DIGITS_SPLIT_SEED = 0

# Per-channel mean and std of the CIFAR training sets (the usual published values).
CIFAR_STATS = {
    "cifar10": ((0.4914, 0.4822, 0.4465), (0.2470, 0.2435, 0.2616)),
    "cifar100": ((0.5071, 0.4865, 0.4409), (0.2673, 0.2564, 0.2762)),
}


@dataclass(frozen=True)
class DatasetBundle:
    """A dataset's splits and geometry. ``train`` is what training iterates over (augmented for
    CIFAR); ``train_eval`` is the same images without augmentation, for measuring train accuracy."""

    name: str
    train: Dataset
    test: Dataset
    train_eval: Dataset
    in_channels: int
    image_size: int
    num_classes: int

    def geometry(self) -> dict:
        return {"dataset": self.name, "in_channels": self.in_channels, "image_size": self.image_size,
                "num_classes": self.num_classes, "train_size": len(self.train), "test_size": len(self.test)}


def load_digits_bundle() -> DatasetBundle:
    """scikit-learn's 8x8 digits as ``[N, 1, 8, 8]`` float32 tensors: pixel values 0..16 scaled to
    [0, 1], then standardised with the training split's mean and std (one scalar each, computed on
    train only so that nothing about the test images leaks into training)."""
    from sklearn.datasets import load_digits
    from sklearn.model_selection import train_test_split

    digits = load_digits()
    images = (digits.images / 16.0).astype(np.float32)
    labels = digits.target.astype(np.int64)
    x_train, x_test, y_train, y_test = train_test_split(
        images, labels, test_size=DIGITS_TEST_FRACTION, stratify=labels, random_state=DIGITS_SPLIT_SEED)
    mean, std = float(x_train.mean()), float(x_train.std())
    def to_tensor(x: np.ndarray) -> torch.Tensor:
        return torch.from_numpy((x - mean) / std).unsqueeze(1)
    train = TensorDataset(to_tensor(x_train), torch.from_numpy(y_train))
    test = TensorDataset(to_tensor(x_test), torch.from_numpy(y_test))
    return DatasetBundle("digits", train, test, train, in_channels=1, image_size=8, num_classes=10)


def _cifar_classes(verify: bool):
    """torchvision's CIFAR classes; with ``verify=False``, subclasses that only check that each file
    exists. torchvision compares every file with the md5 of the official archive, which a folder
    the user built (a subset, a re-encoded copy, generated test data) cannot pass; the format and
    the reading code are torchvision's own either way."""
    from torchvision.datasets import CIFAR10, CIFAR100

    if verify:
        return CIFAR10, CIFAR100

    class UnverifiedCIFAR10(CIFAR10):
        train_list = [[name, None] for name, _ in CIFAR10.train_list]
        test_list = [[name, None] for name, _ in CIFAR10.test_list]
        meta = {**CIFAR10.meta, "md5": None}

    class UnverifiedCIFAR100(CIFAR100):
        train_list = [[name, None] for name, _ in CIFAR100.train_list]
        test_list = [[name, None] for name, _ in CIFAR100.test_list]
        meta = {**CIFAR100.meta, "md5": None}

    return UnverifiedCIFAR10, UnverifiedCIFAR100


class DataMissing(UserError, FileNotFoundError):
    """A dataset's files are not in the data folder the user chose."""


def load_cifar_bundle(name: str, root: str | os.PathLike, download: bool = False, verify: bool = True) -> DatasetBundle:
    """CIFAR-10 or CIFAR-100 from ``root`` (the folder that holds ``cifar-10-batches-py`` or
    ``cifar-100-python``), with the standard augmentation for training (random 32x32 crop with
    4 pixels of padding, horizontal flip) and per-channel normalisation."""
    from torchvision import transforms

    cifar10_cls, cifar100_cls = _cifar_classes(verify)
    cls = cifar10_cls if name == "cifar10" else cifar100_cls
    root = os.fspath(root)
    folder = os.path.join(root, cls.base_folder)
    needed = [n for n, _ in cls.train_list + cls.test_list] + [cls.meta["filename"]]
    missing = [n for n in needed if not os.path.isfile(os.path.join(folder, n))]
    if missing and not download:
        raise DataMissing(
            f"{name} not found: expected {', '.join(missing)} in {os.path.abspath(folder)}. Put the official "
            f"CIFAR python-version folder {cls.base_folder}/ inside {os.path.abspath(root)} (unpack the archive "
            f"from https://www.cs.toronto.edu/~kriz/cifar.html there, or fetch it with the command line's "
            f"--download), or choose the folder that already contains {cls.base_folder}/.")
    mean, std = CIFAR_STATS[name]
    normalise = [transforms.ToTensor(), transforms.Normalize(mean, std)]
    augment = transforms.Compose([transforms.RandomCrop(32, padding=4), transforms.RandomHorizontalFlip(), *normalise])
    plain = transforms.Compose(normalise)
    try:
        train = cls(root, train=True, transform=augment, download=download)
        train_eval = cls(root, train=True, transform=plain, download=False)
        test = cls(root, train=False, transform=plain, download=False)
    except RuntimeError as err:
        raise UserError(
            f"{name} files in {os.path.abspath(folder)} failed torchvision's check ({err}). If this is the "
            f"official data, delete the folder and download again (--download); if you built the folder "
            f"yourself and trust it, load it with verify=False (--no-verify).") from err
    num_classes = 10 if name == "cifar10" else 100
    return DatasetBundle(name, train, test, train_eval, in_channels=3, image_size=32, num_classes=num_classes)


def load_dataset(name: str = "digits", root: str | os.PathLike | None = None, download: bool = False,
                 verify: bool = True) -> DatasetBundle:
    """Load ``name`` ("digits", "cifar10" or "cifar100"). ``root``: the data folder for CIFAR
    (default "data"); ``download``: fetch CIFAR if it is missing; ``verify``: check CIFAR's md5 sums.

    ``root``, ``download`` and ``verify`` are the user's own settings; a dataset named by a file
    (checkpoint metadata, a saved spec) is loaded through :func:`load_dataset_named_by`."""
    if name not in DATASETS:
        raise UserError(f"Invalid dataset: expected one of {DATASETS}, found {name!r}")
    if not isinstance(verify, bool) or not isinstance(download, bool):
        raise UserError(f"Invalid verify/download: expected True or False, found {verify!r} / {download!r}")
    if name == "digits":
        return load_digits_bundle()
    return load_cifar_bundle(name, DEFAULT_DATA_ROOT if root is None else root, download=download, verify=verify)


def dataset_named_by(meta: dict, source: str = "checkpoint") -> str:
    """The dataset name a checkpoint's metadata records (``meta["dataset"]["dataset"]``, else
    ``meta["config"]["dataset"]``), checked against :data:`DATASETS`. A name is data: it picks one
    of the built-in loaders and nothing else."""
    dataset = meta.get("dataset") if isinstance(meta, dict) else None
    name = dataset.get("dataset") if isinstance(dataset, dict) else dataset
    if not name:
        name = ((meta.get("config") if isinstance(meta, dict) else None) or {}).get("dataset")
    if name not in DATASETS:
        raise UserError(f"{source}: dataset expected one of {DATASETS}, found {name!r}")
    return name


def load_dataset_named_by(name: str, data_root: str | os.PathLike | None = None, *, source: str = "a file",
                          verify: bool = True, claimed_root=None) -> DatasetBundle:
    """Load the dataset that a file names, from the user's own data folder.

    The rule (what a file says is data): a checkpoint, a profile or a saved landscape spec may
    name *which* dataset (one of :data:`DATASETS`), never *where* it is read from, never whether
    CIFAR's md5 check runs, never a download. ``data_root`` is the user's configuration (``--data-root``
    on the command line, the workspace's ``data/`` folder on the dashboard; None: ``data``);
    ``verify`` is the user's choice and is True unless the user turned it off themselves. The
    check matters: CIFAR's files are pickles, and torchvision compares them with the official md5
    sums before unpickling. ``claimed_root``: the folder the file names, quoted in the message
    when the data is not in the user's folder, and otherwise ignored.
    """
    if name not in DATASETS:
        raise UserError(f"{source}: dataset expected one of {DATASETS}, found {name!r}")
    if verify is not True and verify is not False:
        raise UserError(f"verify: expected True or False (the user's own setting), found {verify!r}")
    root = DEFAULT_DATA_ROOT if data_root is None else data_root
    try:
        return load_dataset(name, root, download=False, verify=verify)
    except FileNotFoundError as err:
        claim = (f" Its metadata names the folder {str(claimed_root)!r}, which is not used: data folders come "
                 f"from your own settings, never from a file." if claimed_root else "")
        raise UserError(f"{source} needs the {name} dataset, not found in the data folder "
                        f"{os.path.abspath(os.fspath(root))}. {err}{claim}") from None
