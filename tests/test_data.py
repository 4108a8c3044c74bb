"""Datasets: the embedded digits split, and the CIFAR path on generated files in the real format."""

import os
import pickle

import numpy as np
import pytest
import torch

from dat.data import load_dataset


def test_digits_split_is_fixed_stratified_and_normalised():
    a, b = load_dataset("digits"), load_dataset("digits")
    assert (a.in_channels, a.image_size, a.num_classes) == (1, 8, 10)
    xa, ya = a.train.tensors
    assert xa.shape == (len(ya), 1, 8, 8) and xa.dtype == torch.float32
    assert len(a.train) + len(a.test) == 1797
    assert torch.equal(xa, b.train.tensors[0]) and torch.equal(a.test.tensors[1], b.test.tensors[1])
    # Stratified: each class's share of the test split is within one image of its share overall.
    yt = a.test.tensors[1]
    all_y = torch.cat([ya, yt])
    for c in range(10):
        expected = (all_y == c).sum().item() * len(yt) / len(all_y)
        assert abs((yt == c).sum().item() - expected) <= 1
    # Standardised with the training split's statistics.
    assert abs(xa.mean().item()) < 1e-4 and abs(xa.std().item() - 1) < 1e-3


def _write_cifar(root, name, n_train=20, n_test=10, seed=0):
    """A small CIFAR folder in the on-disk format of the official archives (pickled dicts with
    uint8 'data' rows of 3072 values, channel-major, and a labels list)."""
    rng = np.random.default_rng(seed)
    if name == "cifar10":
        folder, train_files, test_file, meta_file = "cifar-10-batches-py", [f"data_batch_{i}" for i in range(1, 6)], "test_batch", "batches.meta"
        label_key, meta = "labels", {"label_names": [f"class{i}" for i in range(10)]}
        classes = 10
    else:
        folder, train_files, test_file, meta_file = "cifar-100-python", ["train"], "test", "meta"
        label_key, meta = "fine_labels", {"fine_label_names": [f"class{i}" for i in range(100)]}
        classes = 100
    os.makedirs(os.path.join(root, folder))
    def batch(n):
        return {"data": rng.integers(0, 256, size=(n, 3072), dtype=np.uint8),
                label_key: rng.integers(0, classes, size=n).tolist()}
    for fname in train_files:
        with open(os.path.join(root, folder, fname), "wb") as f:
            pickle.dump(batch(n_train), f)
    with open(os.path.join(root, folder, test_file), "wb") as f:
        pickle.dump(batch(n_test), f)
    with open(os.path.join(root, folder, meta_file), "wb") as f:
        pickle.dump(meta, f)
    return len(train_files) * n_train, n_test, classes


@pytest.mark.parametrize("name", ["cifar10", "cifar100"])
def test_cifar_loader_reads_generated_data(tmp_path, name):
    n_train, n_test, classes = _write_cifar(tmp_path, name)
    bundle = load_dataset(name, root=tmp_path, verify=False)
    assert (len(bundle.train), len(bundle.test), bundle.num_classes) == (n_train, n_test, classes)
    assert (bundle.in_channels, bundle.image_size) == (3, 32)
    x, y = bundle.train[0]
    assert x.shape == (3, 32, 32) and x.dtype == torch.float32 and 0 <= y < classes
    # The evaluation view of the training set is the plain normalised image (no augmentation):
    # undo the normalisation and compare with the bytes on disk.
    from dat.data import CIFAR_STATS
    mean, std = (torch.tensor(v).view(3, 1, 1) for v in CIFAR_STATS[name])
    x_plain, _ = bundle.train_eval[0]
    raw = torch.from_numpy(bundle.train_eval.data[0]).permute(2, 0, 1).float() / 255
    assert torch.allclose(x_plain * std + mean, raw, atol=1e-6)


def test_cifar_augmentation_crops_and_flips(tmp_path):
    _write_cifar(tmp_path, "cifar10")
    bundle = load_dataset("cifar10", root=tmp_path, verify=False)
    torch.manual_seed(0)
    views = torch.stack([bundle.train[0][0] for _ in range(8)])
    assert not all(torch.equal(views[0], v) for v in views[1:])  # random crops/flips differ


def test_cifar_checks_md5_by_default(tmp_path):
    _write_cifar(tmp_path, "cifar10")
    with pytest.raises(ValueError, match="verify=False"):
        load_dataset("cifar10", root=tmp_path)


def test_missing_cifar_says_where_and_how_to_download(tmp_path):
    with pytest.raises(FileNotFoundError) as err:
        load_dataset("cifar100", root=tmp_path / "nowhere")
    message = str(err.value)
    assert "--download" in message and "cifar-100-python" in message and "nowhere" in message
    assert "load_dataset" not in message  # messages name commands and folders, not Python functions
    from dat.errors import UserError
    assert isinstance(err.value, UserError)  # caught once by the CLI and by every page


def test_unknown_dataset_is_refused():
    with pytest.raises(ValueError, match="digits"):
        load_dataset("mnist")
