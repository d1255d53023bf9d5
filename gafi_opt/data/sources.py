"""Real datasets as uint8 image tensors with train, val and test splits.

Every source is read into CPU tensors once: images uint8 (N, C, H, W), labels int64 (N,).
Splits a source lacks are carved from its train split, stratified and seeded by
`DataSpec.split_seed`, so every worker of a study sees the same images. Bad input
(a missing file, folder or key; labels that are not the classes 0..K-1, each with train images;
an empty split; sizes past the limits below) raises GafiError with a one-line message.
"""

from __future__ import annotations

import zipfile
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from PIL import Image
from sklearn.model_selection import train_test_split

from gafi_opt.errors import GafiError, one_line
from gafi_opt.spec import MAX_IMAGE_SIDE, DataSpec

DEFAULT_ROOT = "data"  # torchvision sources with no data.root
# Past these a dataset is a mistake (a stray label of 50000, a header claiming 10^9 images), not a
# study: checked before the images are read, so the mistake costs no memory and no minutes.
MAX_CLASSES = 10_000
MAX_IMAGES = 10_000_000  # per split

# source -> (torchvision class name, subfolder of root its files live in)
TORCHVISION_SOURCES = {
    "mnist": ("MNIST", "MNIST/raw"),
    "fashion-mnist": ("FashionMNIST", "FashionMNIST/raw"),
    "cifar10": ("CIFAR10", "cifar-10-batches-py"),
    "cifar100": ("CIFAR100", "cifar-100-python"),
}

Split = tuple[torch.Tensor, torch.Tensor]  # (images uint8 NCHW, labels int64)


@dataclass
class RealData:
    train_x: torch.Tensor  # uint8, (N, C, H, W), CPU
    train_y: torch.Tensor  # int64, (N,)
    val_x: torch.Tensor
    val_y: torch.Tensor
    test_x: torch.Tensor
    test_y: torch.Tensor
    num_classes: int
    name: str

    @property
    def image_shape(self) -> tuple[int, int, int]:
        c, h, w = self.train_x.shape[1:]
        return (c, h, w)


@dataclass
class _Loaded:
    """What a source reader returns: the splits it has, before carving and padding."""

    splits: dict[str, Split]  # "train" always; "val" and "test" when the source has them
    name: str
    num_classes: int | None = None  # from the dataset's class list; else max label + 1


def load_data(spec: DataSpec) -> RealData:
    """Read `spec.source`, carve the missing splits, pad to `image_size`, subset train."""
    readers = {
        "digits": _read_digits,
        "npz": _read_npz,
        "folder": _read_folder,
        "cinic10": _read_folder,
        **{source: _read_torchvision for source in TORCHVISION_SOURCES},
    }
    if spec.source not in readers:
        raise GafiError(f"unknown dataset source {spec.source!r} (known: {', '.join(readers)})")
    loaded = readers[spec.source](spec)
    num_classes = _check_labels(loaded)
    _check_shapes(loaded)
    splits = _complete_splits(loaded, spec)
    if spec.image_size > 0:
        fit = _resize if spec.resize else _pad
        splits = {key: (fit(x, spec.image_size, loaded.name), y) for key, (x, y) in splits.items()}
    if spec.real_fraction < 1:
        keep = stratified_subset(splits["train"][1], spec.real_fraction, spec.split_seed)
        splits["train"] = (splits["train"][0][keep], splits["train"][1][keep])
    return RealData(
        *splits["train"], *splits["val"], *splits["test"], num_classes=num_classes, name=loaded.name
    )


# ---------------------------------------------------------------- sources


def _read_digits(spec: DataSpec) -> _Loaded:
    from sklearn.datasets import load_digits

    digits = load_digits()
    # Pixel values are 0..16; stretch them to the 0..255 range of every other source.
    images = np.rint(digits.images * (255 / 16)).astype(np.uint8)
    x = torch.from_numpy(images).unsqueeze(1)
    y = torch.from_numpy(digits.target).long()
    return _Loaded({"train": (x, y)}, "digits", num_classes=len(digits.target_names))


def _read_torchvision(spec: DataSpec) -> _Loaded:
    import torchvision.datasets  # lazy: torchvision imports slowly

    class_name, subfolder = TORCHVISION_SOURCES[spec.source]
    dataset_class = getattr(torchvision.datasets, class_name)
    root = spec.root or DEFAULT_ROOT
    splits = {}
    for key, train in (("train", True), ("test", False)):
        try:
            dataset = dataset_class(root, train=train, download=spec.download)
        except (RuntimeError, OSError) as exc:
            folder = Path(root) / subfolder
            if spec.download:
                reason = one_line(exc)  # torchvision's messages span lines
                raise GafiError(f"could not download {spec.source} into {folder}: {reason}") from None
            raise GafiError(
                f"{spec.source} files not found in {folder}: set data.download=true or place the files there"
            ) from None
        # .data is a uint8 tensor (N, H, W) for MNIST and an ndarray (N, H, W, 3) for CIFAR.
        x = _images_to_nchw(np.asarray(dataset.data), f"{spec.source} {key}")
        y = _labels_to_tensor(np.asarray(dataset.targets), f"{spec.source} {key}")
        splits[key] = (x, y)
    return _Loaded(splits, spec.source, num_classes=len(dataset.classes))


def _read_npz(spec: DataSpec) -> _Loaded:
    """A MedMNIST-layout archive: {train,val,test}_{images,labels}; val and test are optional (carved from train),
    so a synthetic set written by `gafi-opt sample` (train only) loads too."""
    path = Path(spec.root)
    if not path.is_file():
        raise GafiError(f"npz file not found: {path}")
    try:
        archive = np.load(path, allow_pickle=False)
    except (OSError, ValueError, zipfile.BadZipFile) as exc:
        raise GafiError(f"{path} is not a readable .npz file: {exc}") from None
    if not isinstance(archive, np.lib.npyio.NpzFile):
        raise GafiError(f"{path} is a single .npy array, expected an .npz archive")
    with archive:
        keys = set(archive.files)
        splits = {}
        for key in ("train", "val", "test"):
            if key != "train" and not {f"{key}_images", f"{key}_labels"} & keys:
                continue  # carved from train later
            images_key, labels_key = f"{key}_images", f"{key}_labels"
            for name in (images_key, labels_key):
                if name not in keys:
                    raise GafiError(f"{path} has no key {name!r} (keys: {', '.join(sorted(keys))})")
                _check_size(_npz_shape(archive, name), f"{path} {name}")
            try:
                images, labels = archive[images_key], archive[labels_key]
            except ValueError as exc:  # e.g. an object array with allow_pickle=False
                raise GafiError(f"{path}: cannot read {images_key}/{labels_key}: {exc}") from None
            x = _images_to_nchw(images, f"{path} {images_key}")
            y = _labels_to_tensor(labels, f"{path} {labels_key}")
            splits[key] = (x, y)
    return _Loaded(splits, path.stem)


def _npz_shape(archive: np.lib.npyio.NpzFile, name: str) -> tuple[int, ...]:
    """An array's shape from its .npy header, without reading the array; () when the header is unusual
    (reading the array then gives its own error)."""
    try:
        with archive.zip.open(f"{name}.npy") as member:
            version = np.lib.format.read_magic(member)
            read_header = np.lib.format.read_array_header_1_0 if version == (1, 0) else np.lib.format.read_array_header_2_0
            return tuple(read_header(member)[0])
    except (KeyError, ValueError, OSError, zipfile.BadZipFile):
        return ()


def _check_size(shape: tuple[int, ...], where: str) -> None:
    """Refuse an array of more than MAX_IMAGES items, or images with a side past MAX_IMAGE_SIDE."""
    if shape and shape[0] > MAX_IMAGES:
        raise GafiError(f"{where}: {shape[0]} items, more than {MAX_IMAGES}")
    if len(shape) >= 3 and max(shape[1], shape[2]) > MAX_IMAGE_SIDE:
        raise GafiError(f"{where}: images of {shape[2]}x{shape[1]}, larger than {MAX_IMAGE_SIDE}x{MAX_IMAGE_SIDE}")


def _read_folder(spec: DataSpec) -> _Loaded:
    """An ImageFolder tree: root/{train,valid|val,test}/<class>/<image>."""
    from torchvision.datasets.folder import IMG_EXTENSIONS, make_dataset  # lazy: torchvision imports slowly

    root = Path(spec.root)
    if not root.is_dir():
        raise GafiError(f"image folder not found: {root}")
    folders = {"train": root / "train", "test": root / "test"}
    val_folder = next((root / n for n in ("valid", "val") if (root / n).is_dir()), None)
    if val_folder is not None:
        folders["val"] = val_folder  # else carved from train later
    for folder in folders.values():
        if not folder.is_dir():
            raise GafiError(f"image folder {root} has no {folder.name}/ split folder")

    classes, class_to_idx = _find_classes(folders["train"])
    samples = {}
    for key, folder in folders.items():
        found, _ = _find_classes(folder)
        if found != classes:
            raise GafiError(
                f"class folders of {folder} ({', '.join(found)}) differ from those of "
                f"{folders['train']} ({', '.join(classes)})"
            )
        try:
            samples[key] = make_dataset(str(folder), class_to_idx, extensions=IMG_EXTENSIONS)
        except FileNotFoundError as exc:
            raise GafiError(f"{folder}: {exc}") from None

    for key, folder in folders.items():
        _check_size((len(samples[key]),), str(folder))
    # Decode every image of every split in one pass, so channels and sizes are unified across splits.
    paths = [path for key in folders for path, _ in samples[key]]
    images = _stack_images([_decode(path) for path in paths], paths)
    splits, start = {}, 0
    for key in folders:
        labels = torch.tensor([label for _, label in samples[key]], dtype=torch.int64)
        splits[key] = (images[start : start + len(labels)], labels)
        start += len(labels)
    name = "cinic10" if spec.source == "cinic10" else root.resolve().name
    return _Loaded(splits, name, num_classes=len(classes))


def _find_classes(folder: Path) -> tuple[list[str], dict[str, int]]:
    """Class folder names, sorted, as ImageFolder numbers them."""
    from torchvision.datasets.folder import find_classes

    try:
        return find_classes(str(folder))
    except FileNotFoundError:
        raise GafiError(f"{folder} has no class folders") from None


def _decode(path: str) -> np.ndarray:
    """One image as (H, W) grey or (H, W, 3) RGB uint8."""
    try:
        with Image.open(path) as image:  # reads the header only: the size is known before decoding
            if max(image.size) > MAX_IMAGE_SIDE:
                raise GafiError(f"image {path} is {image.width}x{image.height}, larger than {MAX_IMAGE_SIDE}x{MAX_IMAGE_SIDE}")
            mode = "L" if image.mode in ("1", "L", "LA") else "RGB"
            return np.asarray(image if image.mode == mode else image.convert(mode))
    except OSError as exc:
        raise GafiError(f"cannot read image {path}: {exc}") from None


def _stack_images(arrays: list[np.ndarray], paths: list[str]) -> torch.Tensor:
    """Stack decoded images into (N, C, H, W); grey becomes RGB if any image is RGB."""
    size = arrays[0].shape[:2]
    for array, path in zip(arrays, paths):
        if array.shape[:2] != size:
            raise GafiError(
                f"image {path} is {array.shape[1]}x{array.shape[0]}, the others {size[1]}x{size[0]}"
            )
    if any(array.ndim == 3 for array in arrays):
        arrays = [np.repeat(a[:, :, None], 3, axis=2) if a.ndim == 2 else a for a in arrays]
        return torch.from_numpy(np.stack(arrays)).permute(0, 3, 1, 2).contiguous()
    return torch.from_numpy(np.stack(arrays)).unsqueeze(1)


# ---------------------------------------------------------------- arrays


def _images_to_nchw(images: np.ndarray, where: str) -> torch.Tensor:
    """(N, H, W) grey or (N, H, W, C) with C in 1, 3 -> uint8 (N, C, H, W)."""
    if images.dtype != np.uint8:
        if images.dtype.kind not in "iu" or images.size and (images.min() < 0 or images.max() > 255):
            raise GafiError(f"{where}: images must be uint8 values 0..255, got {images.dtype}")
        images = images.astype(np.uint8)
    _check_size(images.shape, where)
    x = torch.from_numpy(np.ascontiguousarray(images))
    if x.ndim == 3:
        return x.unsqueeze(1)
    if x.ndim == 4 and x.shape[3] in (1, 3):
        return x.permute(0, 3, 1, 2).contiguous()
    raise GafiError(f"{where}: expected images (N, H, W) or (N, H, W, 3), got shape {tuple(images.shape)}")


def _labels_to_tensor(labels: np.ndarray, where: str) -> torch.Tensor:
    """Integer labels (N,) or (N, 1) -> int64 (N,)."""
    if labels.ndim == 2 and labels.shape[1] == 1:
        labels = labels[:, 0]  # MedMNIST stores labels as (N, 1)
    if labels.ndim != 1 or labels.dtype.kind not in "iu":
        raise GafiError(
            f"{where}: expected integer class labels (N,) or (N, 1), got {labels.dtype} {tuple(labels.shape)}"
        )
    return torch.from_numpy(labels.astype(np.int64))


# ---------------------------------------------------------------- splits


def _complete_splits(loaded: _Loaded, spec: DataSpec) -> dict[str, Split]:
    """Carve test (sources with none), then val, from train; stratified and seeded."""
    splits = dict(loaded.splits)
    if spec.merge_val and "val" in splits:
        # The official CINIC-10 setup: train + valid pooled, a smaller val carved back out.
        (tx, ty), (vx, vy) = splits["train"], splits.pop("val")
        splits["train"] = (torch.cat([tx, vx]), torch.cat([ty, vy]))
    for key, fraction in (("test", spec.test_fraction), ("val", spec.val_fraction)):
        if key not in splits:
            x, y = splits["train"]
            splits["train"], splits[key] = _carve(x, y, fraction, spec.split_seed, key, loaded.name)
    return splits


def _carve(x: torch.Tensor, y: torch.Tensor, fraction: float, seed: int, key: str, name: str):
    try:
        rest, part = train_test_split(
            np.arange(len(y)), test_size=fraction, stratify=y.numpy(), random_state=seed
        )
    except ValueError as exc:
        raise GafiError(f"cannot carve a {fraction} stratified {key} split from {name} train: {exc}") from None
    rest, part = torch.from_numpy(np.sort(rest)), torch.from_numpy(np.sort(part))  # keep the source order
    return (x[rest], y[rest]), (x[part], y[part])


def stratified_subset(y: torch.Tensor, fraction: float, seed: int) -> torch.Tensor:
    """Indices of `fraction` of each class (at least one image each), seeded, in source order."""
    rng = np.random.default_rng(seed)
    labels = y.numpy()
    keep = []
    for label in np.unique(labels):
        members = np.flatnonzero(labels == label)
        count = max(1, round(fraction * len(members)))
        keep.append(rng.choice(members, size=count, replace=False))
    return torch.from_numpy(np.sort(np.concatenate(keep)))


def _check_labels(loaded: _Loaded) -> int:
    """Labels must be 0..K-1, K >= 2, every class with train images, no split empty;
    K is the dataset's class count, else max label + 1."""
    splits, name = loaded.splits, loaded.name
    for key, (x, y) in splits.items():
        if not len(y):
            raise GafiError(f"{name}: the {key} split has no images")
        if len(x) != len(y):
            raise GafiError(f"{name} {key}: {len(x)} images but {len(y)} labels")
        if y.min() < 0:
            raise GafiError(f"{name} {key}: negative class label {int(y.min())}")
    top = max(int(y.max()) for _, y in splits.values())
    if loaded.num_classes is not None and top >= loaded.num_classes:
        raise GafiError(f"{name}: label {top} out of range for {loaded.num_classes} classes")
    num_classes = loaded.num_classes or top + 1
    if num_classes > MAX_CLASSES:
        raise GafiError(f"{name}: label {top} makes {num_classes} classes, more than {MAX_CLASSES} (labels number the classes 0..K-1)")
    if num_classes < 2:
        raise GafiError(f"{name} has a single class (label 0): a classifier needs at least 2")
    # A class with no train images would have no filter, no generator and a CAS it can only get wrong.
    in_train = torch.bincount(splits["train"][1], minlength=num_classes)
    if not in_train.all():
        absent = int((in_train == 0).nonzero()[0])
        elsewhere = [key for key, (_, y) in splits.items() if (y == absent).any()]
        where = f" (only in {', '.join(elsewhere)})" if elsewhere else ""
        raise GafiError(f"{name}: class {absent} has no train images{where}: labels must be 0..{num_classes - 1}, each with train images")
    return num_classes


def _check_shapes(loaded: _Loaded) -> None:
    shapes = {key: tuple(x.shape[1:]) for key, (x, _) in loaded.splits.items()}
    if len(set(shapes.values())) > 1:
        listed = ", ".join(f"{key} {shape}" for key, shape in shapes.items())
        raise GafiError(f"{loaded.name}: splits have different image shapes (C, H, W): {listed}")


def _pad(x: torch.Tensor, size: int, name: str) -> torch.Tensor:
    """Zero-pad (background 0), centered, to size x size; the paper pads 28 -> 32."""
    h, w = x.shape[2:]
    if size < h or size < w:
        raise GafiError(f"data.image_size={size} is smaller than the native {h}x{w} images of {name}")
    top, left = (size - h) // 2, (size - w) // 2
    return F.pad(x, (left, size - w - left, top, size - h - top), value=0)


def _resize(x: torch.Tensor, size: int, name: str) -> torch.Tensor:
    """Resize every image to size x size with Lanczos (PIL), as the official code does for DermaMNIST."""
    if tuple(x.shape[2:]) == (size, size) or len(x) == 0:
        return x.new_zeros((len(x), x.shape[1], size, size)) if len(x) == 0 else x
    images = x.permute(0, 2, 3, 1).numpy()
    if x.shape[1] == 1:
        images = images[..., 0]
    out = [np.asarray(Image.fromarray(image).resize((size, size), resample=Image.Resampling.LANCZOS)) for image in images]
    resized = torch.from_numpy(np.stack(out))
    return resized.unsqueeze(1) if resized.ndim == 3 else resized.permute(0, 3, 1, 2).contiguous()
