"""A second real dataset for development: grey texture patches from photographs bundled with scikit-image.

Five classes, one per photograph that scikit-image ships inside its package (no download): brick wall,
grass, gravel, the moon's surface and a microscope image of cells. Each patch is a random square of 28 to
56 pixels resized to 28x28 (Lanczos), so every class comes at several scales. Train, val and test patches
are cut from disjoint horizontal bands of each photograph (top 60%, next 20%, last 20%), so no pixel is
shared between splits. Written in MedMNIST's `.npz` layout (train/val/test images (N, 28, 28) uint8 and
labels (N, 1)), for the `npz` data source:

    .venv/bin/pip install scikit-image      # the photographs (the `bench` extra installs it)
    .venv/bin/python benchmarks/textures_npz.py data/textures.npz
    gafi-opt run studies/small-images.toml --set data.root=data/textures.npz

The same seed writes the same file on any machine with the same scikit-image and Pillow.
"""

from __future__ import annotations

import argparse
from pathlib import Path

import numpy as np
from PIL import Image

CLASSES = ("brick", "grass", "gravel", "moon", "cell")
SIDE = 28
BANDS = {"train": (0.0, 0.6), "val": (0.6, 0.8), "test": (0.8, 1.0)}


def photographs() -> dict[str, np.ndarray]:
    try:
        import skimage.data
    except ImportError:
        raise SystemExit("scikit-image is not installed: .venv/bin/pip install scikit-image (or pip install -e '.[bench]')") from None
    return {name: np.asarray(getattr(skimage.data, name)(), dtype=np.uint8) for name in CLASSES}


def patches(image: np.ndarray, band: tuple[float, float], count: int, rng: np.random.Generator) -> np.ndarray:
    """`count` random squares of 28-56 pixels from the band's rows of `image`, each resized to 28x28."""
    top, bottom = round(band[0] * image.shape[0]), round(band[1] * image.shape[0])
    region = image[top:bottom]
    out = np.empty((count, SIDE, SIDE), dtype=np.uint8)
    for i in range(count):
        size = int(rng.integers(SIDE, min(2 * SIDE, region.shape[0], region.shape[1]) + 1))
        y = int(rng.integers(0, region.shape[0] - size + 1))
        x = int(rng.integers(0, region.shape[1] - size + 1))
        crop = Image.fromarray(region[y : y + size, x : x + size])
        out[i] = np.asarray(crop.resize((SIDE, SIDE), Image.LANCZOS))
    return out


def build(per_class: dict[str, int], seed: int) -> dict[str, np.ndarray]:
    rng = np.random.default_rng(seed)
    images = photographs()
    arrays = {}
    for split, band in BANDS.items():
        xs, ys = [], []
        for label, name in enumerate(CLASSES):
            xs.append(patches(images[name], band, per_class[split], rng))
            ys.append(np.full((per_class[split], 1), label, dtype=np.uint8))
        order = rng.permutation(sum(len(x) for x in xs))
        arrays[f"{split}_images"] = np.concatenate(xs)[order]
        arrays[f"{split}_labels"] = np.concatenate(ys)[order]
    return arrays


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("output", help="the .npz file to write")
    parser.add_argument("--train", type=int, default=400, help="train patches per class")
    parser.add_argument("--val", type=int, default=100, help="val patches per class")
    parser.add_argument("--test", type=int, default=100, help="test patches per class")
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args()
    if min(args.train, args.val, args.test) < 1:
        raise SystemExit("--train, --val and --test must be >= 1")
    arrays = build({"train": args.train, "val": args.val, "test": args.test}, args.seed)
    output = Path(args.output)
    output.parent.mkdir(parents=True, exist_ok=True)
    np.savez_compressed(output, **arrays)
    sizes = ", ".join(f"{split} {len(arrays[f'{split}_labels'])}" for split in BANDS)
    print(f"wrote {output}: {len(CLASSES)} classes ({', '.join(CLASSES)}), {sizes} images of {SIDE}x{SIDE}")


if __name__ == "__main__":
    main()
