"""Trees to measure on when none is given: photo-like JPEGs and tiny PNGs, synthetic or cut from photos."""

from __future__ import annotations

import os

import numpy as np
from PIL import Image

# benchmarks/ is on sys.path wherever this package is importable: its tool that cuts tiny images out of photos
from make_tiny_tree import make_tiny_tree as tiny_tree_from_photos

__all__ = ["photo_like", "make_photo_tree", "make_tiny_tree", "tiny_tree_from_photos"]


def photo_like(rng: np.random.Generator, width: int, height: int) -> np.ndarray:
    """Smooth random colour fields plus fine noise: compresses and decodes roughly like a photo."""
    coarse = rng.integers(0, 256, (max(2, height // 64), max(2, width // 64), 3), dtype=np.uint8)
    base = np.asarray(Image.fromarray(coarse).resize((width, height), Image.Resampling.BICUBIC), dtype=np.float32)
    return np.clip(base + rng.normal(0, 12, (height, width, 3)), 0, 255).astype(np.uint8)


def make_photo_tree(root: str, num_classes: int, per_class: int, seed: int = 0) -> str:
    """A tree of JPEGs with a short side of 256-640 px, like ImageNet's (or the photo tree's) files."""
    rng = np.random.default_rng(seed)
    for c in range(num_classes):
        folder = os.path.join(root, f"class{c:03d}")
        os.makedirs(folder, exist_ok=True)
        for i in range(per_class):
            short = int(rng.integers(256, 641))
            long = int(short * rng.uniform(1.0, 1.6))
            width, height = (long, short) if rng.random() < 0.7 else (short, long)
            image = Image.fromarray(photo_like(rng, width, height))
            image.save(os.path.join(folder, f"{i:05d}.jpg"), quality=int(rng.integers(80, 96)))
    return root


def make_tiny_tree(root: str, count: int, num_classes: int = 10, seed: int = 0) -> str:
    """``count`` synthetic 28x28 grayscale PNGs (rings and noise), for smoke runs without photos."""
    rng = np.random.default_rng(seed)
    y, x = np.mgrid[0:28, 0:28]
    for c in range(num_classes):
        os.makedirs(os.path.join(root, str(c)), exist_ok=True)
    for i in range(count):
        cx, cy, r = rng.uniform(9, 19, 2).tolist() + [rng.uniform(4, 9)]
        ring = np.abs(np.hypot(x - cx, y - cy) - r) < rng.uniform(1, 2.5)
        pixels = np.where(ring, 255, 0).astype(np.uint8) ^ (rng.random((28, 28)) < 0.02).astype(np.uint8) * 90
        Image.fromarray(pixels, "L").save(os.path.join(root, str(i % num_classes), f"{i:06d}.png"))
    return root
