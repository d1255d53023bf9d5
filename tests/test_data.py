"""Tests of gafi_opt.data: every source made on the fly in tmp_path; nothing is downloaded."""

from __future__ import annotations

import re
import struct
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from gafi_opt.data import RealData, load_data
from gafi_opt.errors import GafiError
from gafi_opt.spec import DataSpec


def _class_counts(y: torch.Tensor, num_classes: int) -> np.ndarray:
    return np.bincount(y.numpy(), minlength=num_classes)


def _check_types(data: RealData) -> None:
    for x, y in ((data.train_x, data.train_y), (data.val_x, data.val_y), (data.test_x, data.test_y)):
        assert x.dtype == torch.uint8 and x.device.type == "cpu" and x.ndim == 4
        assert y.dtype == torch.int64 and y.shape == (len(x),)
        assert tuple(x.shape[1:]) == data.image_shape
        assert 0 <= int(y.min()) and int(y.max()) < data.num_classes


# ---------------------------------------------------------------- digits


def test_digits_split_sizes_and_values():
    data = load_data(DataSpec(source="digits", test_fraction=0.2, val_fraction=0.15))
    _check_types(data)
    assert data.name == "digits" and data.num_classes == 10 and data.image_shape == (1, 8, 8)
    total = len(data.train_y) + len(data.val_y) + len(data.test_y)
    assert total == 1797
    assert len(data.test_y) == pytest.approx(0.2 * 1797, abs=1)
    assert len(data.val_y) == pytest.approx(0.15 * (1797 - len(data.test_y)), abs=1)
    assert int(data.train_x.min()) == 0 and int(data.train_x.max()) == 255


def test_digits_splits_are_stratified():
    data = load_data(DataSpec(source="digits"))
    full = np.bincount(np.concatenate([data.train_y, data.val_y, data.test_y]))
    for y in (data.train_y, data.val_y, data.test_y):
        share = _class_counts(y, 10) / len(y)
        np.testing.assert_allclose(share, full / full.sum(), atol=0.01)


def test_digits_splits_are_disjoint_and_cover_the_dataset():
    from sklearn.datasets import load_digits

    data = load_data(DataSpec(source="digits"))
    rows = [tuple(x.flatten().tolist()) for x in torch.cat([data.train_x, data.val_x, data.test_x])]
    reference = np.rint(load_digits().images * (255 / 16)).astype(np.uint8)
    # digits holds a few duplicate images, so compare multisets: equal multisets mean every
    # source image landed in exactly one split.
    assert sorted(rows) == sorted(tuple(r.flatten().tolist()) for r in reference)


def test_digits_split_is_deterministic_and_seeded():
    a = load_data(DataSpec(source="digits", split_seed=3))
    b = load_data(DataSpec(source="digits", split_seed=3))
    c = load_data(DataSpec(source="digits", split_seed=4))
    assert torch.equal(a.train_x, b.train_x) and torch.equal(a.test_y, b.test_y)
    assert not torch.equal(a.test_x, c.test_x)


# ---------------------------------------------------------------- npz


def _make_npz(path: Path, rgb: bool, with_val: bool = True, per_class: int = 10, classes: int = 3, size: int = 28):
    rng = np.random.default_rng(0)
    shape = (size, size, 3) if rgb else (size, size)
    arrays = {}
    for key, n in (("train", per_class), ("val", 3), ("test", 4)):
        if key == "val" and not with_val:
            continue
        labels = np.repeat(np.arange(classes), n).reshape(-1, 1).astype(np.uint8)  # MedMNIST: (N, 1)
        arrays[f"{key}_images"] = rng.integers(1, 256, size=(len(labels), *shape), dtype=np.uint8)
        arrays[f"{key}_labels"] = labels
    np.savez(path, **arrays)
    return arrays


@pytest.mark.parametrize("rgb", [False, True])
def test_npz_grey_and_rgb(tmp_path, rgb):
    path = tmp_path / "dermamnist.npz"
    arrays = _make_npz(path, rgb=rgb)
    data = load_data(DataSpec(source="npz", root=str(path)))
    _check_types(data)
    assert data.name == "dermamnist" and data.num_classes == 3
    assert data.image_shape == ((3, 28, 28) if rgb else (1, 28, 28))
    assert len(data.train_y) == 30 and len(data.val_y) == 9 and len(data.test_y) == 12
    expected = arrays["train_images"][0]
    got = data.train_x[0].permute(1, 2, 0).numpy() if rgb else data.train_x[0, 0].numpy()
    np.testing.assert_array_equal(got, expected)
    np.testing.assert_array_equal(data.test_y.numpy(), arrays["test_labels"][:, 0])


def test_npz_without_val_carves_it_from_train(tmp_path):
    path = tmp_path / "pathmnist.npz"
    _make_npz(path, rgb=True, with_val=False, per_class=20)
    data = load_data(DataSpec(source="npz", root=str(path), val_fraction=0.25))
    assert len(data.val_y) == 15 and len(data.train_y) == 45 and len(data.test_y) == 12
    np.testing.assert_array_equal(_class_counts(data.val_y, 3), [5, 5, 5])


def test_npz_missing_file(tmp_path):
    path = tmp_path / "absent.npz"
    with pytest.raises(GafiError, match="absent.npz"):
        load_data(DataSpec(source="npz", root=str(path)))


def test_npz_missing_key(tmp_path):
    path = tmp_path / "broken.npz"
    np.savez(path, train_images=np.zeros((4, 8, 8), np.uint8), train_labels=np.zeros(4, np.uint8), test_images=np.zeros((4, 8, 8), np.uint8))
    with pytest.raises(GafiError, match=r"broken\.npz.*test_labels"):
        load_data(DataSpec(source="npz", root=str(path)))
    np.savez(path, train_images=np.zeros((4, 8, 8), np.uint8))
    with pytest.raises(GafiError, match=r"broken\.npz.*train_labels"):
        load_data(DataSpec(source="npz", root=str(path)))


def test_npz_with_train_only_carves_test_then_val(tmp_path):
    # The layout `gafi-opt sample` writes: a synthetic train split, nothing else.
    path = tmp_path / "synthetic.npz"
    labels = np.repeat(np.arange(3), 20).reshape(-1, 1).astype(np.uint8)
    np.savez(path, train_images=np.random.default_rng(0).integers(0, 256, (60, 8, 8), dtype=np.uint8), train_labels=labels)
    data = load_data(DataSpec(source="npz", root=str(path), test_fraction=0.2, val_fraction=0.25))
    assert (len(data.train_y), len(data.val_y), len(data.test_y)) == (36, 12, 12)
    for split in (data.train_y, data.val_y, data.test_y):
        assert len(set(_class_counts(split, 3))) == 1  # stratified


def test_npz_not_an_archive(tmp_path):
    path = tmp_path / "junk.npz"
    path.write_text("not numpy")
    with pytest.raises(GafiError, match="junk.npz"):
        load_data(DataSpec(source="npz", root=str(path)))


def test_npz_float_images_are_rejected(tmp_path):
    path = tmp_path / "float.npz"
    arrays = {f"{k}_images": np.random.rand(6, 8, 8) for k in ("train", "test")}
    arrays |= {f"{k}_labels": np.arange(6) % 2 for k in ("train", "test")}
    np.savez(path, **arrays)
    with pytest.raises(GafiError, match="uint8"):
        load_data(DataSpec(source="npz", root=str(path)))


# ---------------------------------------------------------------- padding and subsets


def test_padding_28_to_32_is_centered_with_zeros(tmp_path):
    path = tmp_path / "fmnist.npz"
    arrays = _make_npz(path, rgb=False)  # pixels are 1..255, so any 0 is padding
    data = load_data(DataSpec(source="npz", root=str(path), image_size=32))
    assert data.image_shape == (1, 32, 32)
    for x in (data.train_x, data.val_x, data.test_x):
        assert x.shape[2:] == (32, 32)
    image = data.train_x[0, 0]
    np.testing.assert_array_equal(image[2:30, 2:30].numpy(), arrays["train_images"][0])
    border = image.clone()
    border[2:30, 2:30] = 0
    assert int(border.sum()) == 0


def test_image_size_smaller_than_native(tmp_path):
    path = tmp_path / "big.npz"
    _make_npz(path, rgb=False)
    with pytest.raises(GafiError, match="image_size=16.*28x28"):
        load_data(DataSpec(source="npz", root=str(path), image_size=16))


def test_real_fraction_keeps_a_stratified_train_subset():
    full = load_data(DataSpec(source="digits"))
    part = load_data(DataSpec(source="digits", real_fraction=0.1))
    assert len(part.train_y) == pytest.approx(0.1 * len(full.train_y), abs=10)
    ratio = _class_counts(part.train_y, 10) / _class_counts(full.train_y, 10)
    np.testing.assert_allclose(ratio, 0.1, atol=0.03)
    # val and test are untouched, and the subset is drawn from the full train split.
    assert torch.equal(part.val_x, full.val_x) and torch.equal(part.test_y, full.test_y)
    full_rows = {tuple(x.flatten().tolist()) for x in full.train_x}
    assert all(tuple(x.flatten().tolist()) in full_rows for x in part.train_x)
    again = load_data(DataSpec(source="digits", real_fraction=0.1))
    assert torch.equal(part.train_x, again.train_x)


def test_real_fraction_keeps_at_least_one_image_per_class():
    data = load_data(DataSpec(source="digits", real_fraction=0.001))
    np.testing.assert_array_equal(_class_counts(data.train_y, 10), np.ones(10))


# ---------------------------------------------------------------- image folders


def _write_png(path: Path, value: int, mode: str = "L", size: tuple[int, int] = (6, 6)) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    color = value if mode == "L" else (value, 255 - value, 7)
    Image.new(mode, size, color).save(path)


def _make_folder(root: Path, val_name: str | None = "valid", rgb_classes=(), classes=("cat", "dog", "emu")):
    """Class c's images have grey value 10 * (c + 1); a class in rgb_classes is saved as RGB."""
    counts = {"train": 6, "test": 2} | ({val_name: 2} if val_name else {})
    for split, n in counts.items():
        for c, name in enumerate(classes):
            for i in range(n):
                mode = "RGB" if name in rgb_classes else "L"
                _write_png(root / split / name / f"{i}.png", 10 * (c + 1), mode)


@pytest.mark.parametrize("val_name", ["valid", "val"])
def test_folder_grey(tmp_path, val_name):
    _make_folder(tmp_path / "shapes", val_name=val_name)
    data = load_data(DataSpec(source="folder", root=str(tmp_path / "shapes")))
    _check_types(data)
    assert data.name == "shapes" and data.num_classes == 3 and data.image_shape == (1, 6, 6)
    assert (len(data.train_y), len(data.val_y), len(data.test_y)) == (18, 6, 6)
    # Labels follow the sorted class folder names, and each image kept its own label.
    for x, y in ((data.train_x, data.train_y), (data.test_x, data.test_y)):
        np.testing.assert_array_equal(x[:, 0, 0, 0].numpy(), 10 * (y.numpy() + 1))


def test_folder_mixed_grey_and_rgb_becomes_rgb(tmp_path):
    _make_folder(tmp_path, rgb_classes=("dog",))
    data = load_data(DataSpec(source="cinic10", root=str(tmp_path)))
    assert data.name == "cinic10" and data.image_shape == (3, 6, 6)
    grey = data.train_x[data.train_y == 0]
    assert torch.equal(grey[:, 0], grey[:, 1]) and torch.equal(grey[:, 1], grey[:, 2])
    rgb = data.train_x[data.train_y == 1][0, :, 0, 0].tolist()
    assert rgb == [20, 235, 7]


def test_folder_without_val_carves_it(tmp_path):
    _make_folder(tmp_path, val_name=None)
    data = load_data(DataSpec(source="folder", root=str(tmp_path), val_fraction=1 / 3))
    assert (len(data.train_y), len(data.val_y), len(data.test_y)) == (12, 6, 6)
    np.testing.assert_array_equal(_class_counts(data.val_y, 3), [2, 2, 2])


def test_folder_inconsistent_class_folders(tmp_path):
    _make_folder(tmp_path)
    _write_png(tmp_path / "test" / "fox" / "0.png", 99)
    with pytest.raises(GafiError, match="class folders of .*test"):
        load_data(DataSpec(source="folder", root=str(tmp_path)))


def test_folder_missing_split_and_missing_root(tmp_path):
    with pytest.raises(GafiError, match="image folder not found"):
        load_data(DataSpec(source="folder", root=str(tmp_path / "nothing")))
    for name in ("cat", "dog"):
        _write_png(tmp_path / "train" / name / "0.png", 1)
    with pytest.raises(GafiError, match="no test/"):
        load_data(DataSpec(source="folder", root=str(tmp_path)))


def test_folder_images_of_different_sizes(tmp_path):
    _make_folder(tmp_path)
    _write_png(tmp_path / "test" / "emu" / "odd.png", 5, size=(7, 6))
    with pytest.raises(GafiError, match="odd.png"):
        load_data(DataSpec(source="folder", root=str(tmp_path)))


def test_folder_unreadable_image(tmp_path):
    _make_folder(tmp_path)
    (tmp_path / "train" / "cat" / "bad.png").write_bytes(b"not a png")
    with pytest.raises(GafiError, match="bad.png"):
        load_data(DataSpec(source="folder", root=str(tmp_path)))


# ---------------------------------------------------------------- torchvision


def _write_idx(path: Path, array: np.ndarray) -> None:
    """The big-endian IDX format of the MNIST files: magic (0, 0, type 0x08 ubyte, ndim), dims, data."""
    path.parent.mkdir(parents=True, exist_ok=True)
    header = struct.pack(">BBBB", 0, 0, 0x08, array.ndim) + struct.pack(f">{array.ndim}I", *array.shape)
    path.write_bytes(header + array.astype(np.uint8).tobytes())


@pytest.mark.parametrize("source, folder", [("mnist", "MNIST"), ("fashion-mnist", "FashionMNIST")])
def test_torchvision_mnist_from_fabricated_raw_files(tmp_path, source, folder):
    rng = np.random.default_rng(0)
    raw = tmp_path / folder / "raw"
    for prefix, n in (("train", 200), ("t10k", 50)):
        labels = np.arange(n) % 10
        images = rng.integers(0, 256, size=(n, 28, 28), dtype=np.uint8)
        _write_idx(raw / f"{prefix}-images-idx3-ubyte", images)
        _write_idx(raw / f"{prefix}-labels-idx1-ubyte", labels)
        if prefix == "t10k":
            test_images = images
    data = load_data(DataSpec(source=source, root=str(tmp_path), val_fraction=0.1, image_size=32))
    _check_types(data)
    assert data.name == source and data.num_classes == 10 and data.image_shape == (1, 32, 32)
    assert (len(data.train_y), len(data.val_y), len(data.test_y)) == (180, 20, 50)
    np.testing.assert_array_equal(_class_counts(data.val_y, 10), np.full(10, 2))
    np.testing.assert_array_equal(data.test_x[:, 0, 2:30, 2:30].numpy(), test_images)


@pytest.mark.parametrize("source", ["cifar10", "cifar100", "mnist", "fashion-mnist"])
def test_torchvision_missing_files_without_download(tmp_path, source):
    # CIFAR files are checked against torchvision's md5 sums, so only this error path is testable offline.
    root = tmp_path / "nothing"
    with pytest.raises(GafiError, match=rf"{re.escape(str(root))}.*data\.download=true"):
        load_data(DataSpec(source=source, root=str(root), download=False))
