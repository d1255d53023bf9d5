"""A CIFAR-shaped stand-in made offline: scikit-learn's digits as 32x32 RGB images in an image folder.

Each 8x8 digit is upscaled (bilinear) to 32x32 and painted with a random foreground colour on a
random darker background, then written as PNG into root/{train,valid,test}/<class>/. It lets the
CIFAR-10 preset's code path (image-folder source, 3 channels, 32x32, BigGAN-deep, ResNet-20) run
end to end on a CPU without downloading anything. It is not CIFAR-10 and says nothing about CAS on it.

    python benchmarks/digits_rgb_folder.py runs/digits-rgb            # all 1,797 digits, 60/20/20 per class
    python benchmarks/digits_rgb_folder.py runs/digits-rgb --per-class 50 15 15
"""

from __future__ import annotations

import argparse
from pathlib import Path

import numpy as np
from PIL import Image

SPLITS = ("train", "valid", "test")


def make_folder(root: str | Path, per_class: tuple[int, int, int] | None = None, size: int = 32, seed: int = 0) -> dict[str, int]:
    """Write the folder; `per_class` = images per class in train, valid, test (default: all, 60/20/20).
    Returns the number of images written per split."""
    from sklearn.datasets import load_digits

    digits = load_digits()
    rng = np.random.default_rng(seed)
    root = Path(root)
    written = dict.fromkeys(SPLITS, 0)
    for label in range(10):
        members = rng.permutation(np.flatnonzero(digits.target == label))
        if per_class is None:
            n_train, n_valid = int(0.6 * len(members)), int(0.2 * len(members))
            counts = (n_train, n_valid, len(members) - n_train - n_valid)
        else:
            counts = per_class
            if sum(counts) > len(members):
                raise ValueError(f"class {label} has {len(members)} digits, {sum(counts)} asked for")
        start = 0
        for split, count in zip(SPLITS, counts):
            folder = root / split / str(label)
            folder.mkdir(parents=True, exist_ok=True)
            for index in members[start : start + count]:
                _rgb(digits.images[index], size, rng).save(folder / f"{index:04d}.png")
            written[split] += count
            start += count
    return written


def _rgb(image: np.ndarray, size: int, rng: np.random.Generator) -> Image.Image:
    alpha = np.asarray(Image.fromarray((image * (255 / 16)).astype(np.uint8)).resize((size, size), Image.Resampling.BILINEAR)) / 255.0
    foreground = rng.uniform(120, 255, 3)
    background = rng.uniform(0, 90, 3)
    pixels = background * (1 - alpha[..., None]) + foreground * alpha[..., None]
    return Image.fromarray(np.clip(np.rint(pixels), 0, 255).astype(np.uint8), mode="RGB")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("root", help="folder to write (train/, valid/, test/ inside)")
    parser.add_argument("--per-class", nargs=3, type=int, metavar=("TRAIN", "VALID", "TEST"), help="images per class per split (default: all digits, 60/20/20)")
    parser.add_argument("--size", type=int, default=32)
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args()
    written = make_folder(args.root, tuple(args.per_class) if args.per_class else None, args.size, args.seed)
    print(f"{args.root}: " + ", ".join(f"{split} {count}" for split, count in written.items()))


if __name__ == "__main__":
    main()
