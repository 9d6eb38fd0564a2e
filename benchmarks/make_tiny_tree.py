"""Build a Fashion-MNIST-sized ImageFolder tree from real photographs: 28x28 grayscale PNGs.

usage::

    python benchmarks/make_tiny_tree.py PHOTO_TREE OUT [--count 60000] [--size 28] [--rgb] [--seed 0]

Each image is a random crop of a photo of ``PHOTO_TREE`` (any ImageFolder tree, such as the one
``../shared/data/get_photo_tree.sh`` builds), scaled down to ``--size`` pixels and saved as PNG,
so the PNGs hold real image content and compress like real tiny images (about 0.6 KB each at
28x28, like Fashion-MNIST's), not like flat synthetic shapes. Ten classes, ``--count`` images in
all. ``--rgb`` keeps colour (CIFAR-like); the default is grayscale, as Fashion-MNIST is.
"""

from __future__ import annotations

import argparse
import os
import sys

import numpy as np
from PIL import Image

NUM_CLASSES = 10


def photo_files(root: str) -> list[str]:
    """Every image file under ``root``, sorted, so a seed gives the same tree everywhere."""
    found = []
    for dirpath, dirnames, filenames in os.walk(root):
        dirnames.sort()
        found += [os.path.join(dirpath, n) for n in sorted(filenames) if n.lower().endswith((".jpg", ".jpeg", ".png"))]
    return found


def make_tiny_tree(photo_tree: str, out: str, count: int = 60000, size: int = 28, rgb: bool = False, seed: int = 0) -> str:
    """Write ``count`` crops of the photos in ``photo_tree`` as ``size`` x ``size`` PNGs under ``out/<class>/``."""
    photos = photo_files(photo_tree)
    if not photos:
        raise FileNotFoundError(f"No JPEG or PNG photos under {photo_tree}.")
    rng = np.random.default_rng(seed)
    for c in range(NUM_CLASSES):
        os.makedirs(os.path.join(out, f"class{c}"), exist_ok=True)
    per_photo = -(-count // len(photos))
    written = 0
    for p, path in enumerate(photos):
        with Image.open(path) as photo:
            photo = photo.convert("RGB" if rgb else "L")
            width, height = photo.size
            for _ in range(min(per_photo, count - written)):
                side = int(rng.integers(max(8, min(width, height) // 16), max(9, min(width, height) // 2)))
                x, y = int(rng.integers(0, width - side + 1)), int(rng.integers(0, height - side + 1))
                crop = photo.crop((x, y, x + side, y + side)).resize((size, size), Image.Resampling.BOX)
                crop.save(os.path.join(out, f"class{written % NUM_CLASSES}", f"{written:06d}.png"))
                written += 1
        if written >= count:
            break
    return out


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("photo_tree")
    ap.add_argument("out")
    ap.add_argument("--count", type=int, default=60000)
    ap.add_argument("--size", type=int, default=28)
    ap.add_argument("--rgb", action="store_true", help="keep colour (default: grayscale)")
    ap.add_argument("--seed", type=int, default=0)
    args = ap.parse_args(argv)
    make_tiny_tree(args.photo_tree, args.out, args.count, args.size, args.rgb, args.seed)
    print(f"{args.count} {args.size}x{args.size} PNGs in {NUM_CLASSES} classes -> {args.out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
