"""Writing a synthetic set to disk, with a JSON sidecar saying how it was made.

Two layouts, both readable without gafi-opt:
- `npz`: a MedMNIST-style archive, `train_images` uint8 (N, H, W) for one channel or (N, H, W, C),
  `train_labels` (N, 1); it loads as gafi-opt's own `npz` data source (val and test are carved from it
  when absent) and with `numpy.load`. The sidecar is `<OUT>.json` beside it.
- `folder`: `OUT/<class>/<n>.png`, class folders zero-padded (`00`, `01`, ...) so that torchvision's
  ImageFolder, which sorts them as strings, numbers them as the labels; the sidecar is `OUT/sample.json`
  (ImageFolder reads folders only).

Files are written under a temporary name and renamed into place, so an interrupted write leaves no
half-written set behind. An existing OUT is refused unless `force`; a folder is replaced only if it
holds a sidecar, i.e. gafi-opt wrote it.
"""

from __future__ import annotations

import json
import os
import shutil
import tempfile
from pathlib import Path

import numpy as np
import torch
from PIL import Image
from tqdm.auto import tqdm

import gafi_opt
from gafi_opt.errors import GafiError
from gafi_opt.result.sampler import Sampler
from gafi_opt.storages import redact
from gafi_opt.train.real import filter_path

FORMATS = ("npz", "folder")
FOLDER_SIDECAR = "sample.json"


def sidecar_path(out: Path, fmt: str) -> Path:
    out = Path(out)
    return out / FOLDER_SIDECAR if fmt == "folder" else out.with_name(out.name + ".json")


def check_output(out, fmt: str, force: bool) -> Path:
    """Refuse an output that exists (without `force`) or that `force` must not replace. Call before drawing anything."""
    out = Path(out)
    if fmt not in FORMATS:
        raise GafiError(f"unknown sample format {fmt!r} (use {', '.join(FORMATS)})")
    if not out.parent.is_dir():
        raise GafiError(f"cannot write {out}: folder {out.parent} does not exist")
    if not out.exists() and not out.is_symlink():
        return out
    if not force:
        raise GafiError(f"{out} exists: choose another output or pass --force to replace it")
    if fmt == "npz" and out.is_dir():
        raise GafiError(f"{out} is a folder: --force replaces an .npz file, not a folder")
    if fmt == "folder" and (not out.is_dir() or not (out / FOLDER_SIDECAR).is_file()):
        raise GafiError(f"{out} exists and is not a sample folder gafi-opt wrote (no {FOLDER_SIDECAR} in it): remove it yourself")
    return out


def write_sample(sampler: Sampler, out, fmt: str, per_class: int, progress: bool = False) -> dict:
    """Draw a fresh set of `per_class` images of every class with the sampler's recipe and write it; returns the sidecar.

    Check the output with `check_output` first: drawing a large set takes a while.
    """
    images, labels = sampler.sample(per_class, progress=progress)
    recipe = sampler.recipe
    sidecar = {
        "gafi_opt_version": gafi_opt.__version__,
        "pipeline": recipe.name,
        "storage": redact(recipe.pipelines[0].storage_url),
        "recipe": recipe.origin,
        **recipe.knobs(),
        "filter_classifiers": [str(filter_path(p.spec).resolve()) for p in recipe.pipelines],  # each generator's own
        "seed": sampler.seed,
        "per_class": per_class,
        "num_classes": sampler.num_classes,
        "images": len(labels),
        "image_shape": list(sampler.image_shape),
        "acceptance_rate": sampler.acceptance_rate,
        "fallback_samples": sampler.fallback,
        "device": str(sampler.device),
        "format": fmt,
        "layout": "train_images uint8 NHW (grey) or NHWC, train_labels (N, 1)"
        if fmt == "npz"
        else "<class>/<n>.png, class folders numbered as the labels",
    }
    write_set(out, fmt, images, labels, sampler.num_classes, sidecar, progress)
    return sidecar


def write_set(out, fmt: str, images: torch.Tensor, labels: torch.Tensor, num_classes: int, sidecar: dict, progress: bool = False) -> Path:
    """Write uint8 (N, C, H, W) `images` and their labels as `fmt`, then the sidecar; returns the sidecar's path."""
    out = Path(out)
    images, labels = images.cpu(), labels.cpu()
    if fmt == "npz":
        _write_npz(out, images, labels, num_classes)
    else:
        _write_folder(out, images, labels, num_classes, sidecar, progress)
    path = sidecar_path(out, fmt)
    if fmt == "npz":
        _atomic_text(path, json.dumps(sidecar, indent=2) + "\n")
    return path


def _write_npz(out: Path, images: torch.Tensor, labels: torch.Tensor, num_classes: int) -> None:
    array = images.permute(0, 2, 3, 1).numpy()  # NHWC, as MedMNIST stores images
    if array.shape[3] == 1:
        array = array[..., 0]  # grey: (N, H, W)
    label_type = np.uint8 if num_classes <= 256 else np.int64
    fd, temporary = tempfile.mkstemp(prefix=f".{out.name}.", dir=out.parent)
    try:
        with os.fdopen(fd, "wb") as handle:  # a handle, so numpy adds no .npz suffix of its own
            np.savez_compressed(handle, train_images=np.ascontiguousarray(array), train_labels=labels.numpy().astype(label_type)[:, None])
        os.chmod(temporary, 0o666 & ~_umask())  # mkstemp makes it private; the set is an ordinary file
        os.replace(temporary, out)
    except BaseException:
        Path(temporary).unlink(missing_ok=True)
        raise


def _write_folder(out: Path, images: torch.Tensor, labels: torch.Tensor, num_classes: int, sidecar: dict, progress: bool) -> None:
    digits = len(str(num_classes - 1))
    temporary = Path(tempfile.mkdtemp(prefix=f".{out.name}.", dir=out.parent))
    try:
        for label in range(num_classes):
            (temporary / f"{label:0{digits}d}").mkdir()
        width = len(str(len(labels)))
        counts = [0] * num_classes
        grey = images.shape[1] == 1
        for image, label in tqdm(
            zip(images.permute(0, 2, 3, 1).numpy(), labels.tolist()),
            total=len(labels),
            desc="writing images",
            unit="img",
            leave=False,
            disable=not progress,
        ):
            picture = Image.fromarray(image[..., 0] if grey else image)  # (H, W) uint8 is "L", (H, W, 3) "RGB"
            picture.save(temporary / f"{label:0{digits}d}" / f"{counts[label]:0{width}d}.png")
            counts[label] += 1
        (temporary / FOLDER_SIDECAR).write_text(json.dumps(sidecar, indent=2) + "\n")
        os.chmod(temporary, 0o777 & ~_umask())  # mkdtemp makes it private; the set is an ordinary folder
        if out.exists():
            shutil.rmtree(out)  # check_output made sure gafi-opt wrote it
        os.replace(temporary, out)
    except BaseException:
        shutil.rmtree(temporary, ignore_errors=True)
        raise


def _umask() -> int:
    current = os.umask(0)
    os.umask(current)
    return current


def _atomic_text(path: Path, text: str) -> None:
    temporary = path.with_name(f".{path.name}.tmp")
    temporary.write_text(text)
    os.replace(temporary, path)
