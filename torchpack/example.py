"""The built-in example: a small ImageFolder tree of real JPEG and PNG files, made with Pillow (no download)."""

from __future__ import annotations

import os

import numpy as np
from PIL import Image, ImageDraw

__all__ = ["make_example_tree"]

_CLASSES = ("circle", "square", "triangle")


def _draw(shape: str, size: tuple[int, int], rng: np.random.Generator) -> Image.Image:
    """A noisy gradient background with one filled shape: varied, photo-like enough to compress like a photo."""
    width, height = size
    y, x = np.mgrid[0:height, 0:width]
    base = rng.integers(0, 255, 3)
    pixels = np.stack([(base[c] + x * (c + 1) // 3 + y // (c + 1)) % 256 for c in range(3)], axis=-1)
    pixels = np.clip(pixels + rng.normal(0, 12, pixels.shape), 0, 255).astype(np.uint8)
    image = Image.fromarray(pixels)
    draw = ImageDraw.Draw(image)
    cx, cy, r = width // 2, height // 2, min(width, height) // 3
    color = tuple(int(v) for v in rng.integers(0, 255, 3))
    if shape == "circle":
        draw.ellipse((cx - r, cy - r, cx + r, cy + r), fill=color)
    elif shape == "square":
        draw.rectangle((cx - r, cy - r, cx + r, cy + r), fill=color)
    else:
        draw.polygon([(cx, cy - r), (cx - r, cy + r), (cx + r, cy + r)], fill=color)
    return image


def make_example_tree(root: str | os.PathLike, per_class: int = 24, seed: int = 0) -> str:
    """Write ``root/<shape>/[sub/]<n>.jpg|png``: three classes, nested subfolders, JPEG and PNG.

    Returns:
        The tree's root, as a string.
    """
    root = os.fspath(root)
    rng = np.random.default_rng(seed)
    for shape in _CLASSES:
        for n in range(per_class):
            folder = os.path.join(root, shape, "more") if n % 4 == 3 else os.path.join(root, shape)
            os.makedirs(folder, exist_ok=True)
            size = (int(rng.integers(96, 200)), int(rng.integers(96, 200)))
            image = _draw(shape, size, rng)
            if n % 3 == 2:
                image.save(os.path.join(folder, f"{n:03d}.png"))
            else:
                image.save(os.path.join(folder, f"{n:03d}.jpg"), quality=90)
    return root
