"""Shared fixtures: ImageFolder trees of real files written by Pillow, and stores converted from them."""

from __future__ import annotations

import contextlib
import os

import numpy as np
import pytest
from PIL import Image

import torchpack

BACKENDS = ["lmdb", "hdf5"]
EXTENSION = {"lmdb": ".lmdb", "hdf5": ".h5"}
DATASET = {"lmdb": "LMDBImageFolder", "hdf5": "HDF5ImageFolder"}


def photo_like(rng: np.random.Generator, width: int, height: int) -> np.ndarray:
    """Smooth gradients plus noise: compresses and decodes like a photograph, not like flat colour."""
    y, x = np.mgrid[0:height, 0:width]
    base = np.stack([x * 255 // max(width - 1, 1), y * 255 // max(height - 1, 1), (x + y) * 127 // max(width + height, 1)], -1)
    return np.clip(base + rng.normal(0, 20, (height, width, 3)), 0, 255).astype(np.uint8)


def save(image: Image.Image, path: str, **kwargs) -> None:
    os.makedirs(os.path.dirname(path), exist_ok=True)
    image.save(path, **kwargs)


def store_contents(path) -> tuple[dict, list[dict], list[bytes]]:
    """A store's header, index rows and every sample's stored bytes."""
    from torchpack.handles import borrowed_reader

    with borrowed_reader(os.fspath(path)) as reader:
        header = reader.read_header()
        rows = reader.read_index(header).to_pylist()
        data = [bytes(reader.read(i, row["offset"], row["length"])) for i, row in enumerate(rows)]
    return header, rows, data


def damage_sample(store: str, data: bytes) -> None:
    """Flip one byte in the middle of a sample's stored bytes, in the store file.

    Every copy is damaged: LMDB copies a page on write, so a stale copy of a small sample can
    remain in a free page beside the live one.
    """
    with open(store, "r+b") as f:
        content = f.read()
        start = content.find(data)
        assert start >= 0
        while start >= 0:
            position = start + len(data) // 2
            f.seek(position)
            f.write(bytes([content[position] ^ 0xFF]))
            start = content.find(data, start + 1)


def make_parity_tree(root: str) -> str:
    """Every kind of file the parity tests need: RGB/gray/CMYK/progressive JPEG, palette and
    alpha PNG, nested subfolders, an empty class and unicode names."""
    rng = np.random.default_rng(0)
    rgb = lambda w=67, h=45: Image.fromarray(photo_like(rng, w, h))  # noqa: E731
    save(rgb(), f"{root}/cat/rgb.jpg", quality=90)
    save(rgb(121, 80), f"{root}/cat/progressive.jpg", quality=85, progressive=True)
    save(rgb(64, 64).convert("L"), f"{root}/cat/gray.jpg", quality=90)
    save(rgb(50, 40).convert("CMYK"), f"{root}/cat/cmyk.jpg", quality=90)
    save(rgb(33, 29), f"{root}/cat/nested/deeper/sub.jpeg", quality=95, subsampling=0)
    save(rgb(40, 30), f"{root}/dog/plain.png")
    palette = rgb(32, 32).convert("P", palette=Image.Palette.ADAPTIVE, colors=16)
    save(palette, f"{root}/dog/palette.png", transparency=0)
    rgba = rgb(30, 20).convert("RGBA")
    rgba.putalpha(Image.fromarray((rng.random((20, 30)) * 255).astype(np.uint8)))
    save(rgba, f"{root}/dog/alpha.png")
    save(rgb(48, 36), f"{root}/dog/ünïcødé/名前.jpg", quality=90)
    save(rgb(20, 20).convert("LA"), f"{root}/dog/gray_alpha.png")
    os.makedirs(f"{root}/empty_class")
    save(rgb(25, 25), f"{root}/zebra/z.png")
    with open(f"{root}/zebra/notes.txt", "w") as f:
        f.write("not an image, ImageFolder skips it")
    return root


@pytest.fixture(scope="session")
def parity_tree(tmp_path_factory) -> str:
    return make_parity_tree(str(tmp_path_factory.mktemp("parity") / "tree"))


@pytest.fixture(scope="session")
def small_tree(tmp_path_factory) -> str:
    """Three classes of 8 JPEG/PNG photos each, some nested."""
    root = str(tmp_path_factory.mktemp("small") / "tree")
    rng = np.random.default_rng(1)
    for c in range(3):
        for i in range(8):
            sub = "nested/" if i % 3 == 0 else ""
            image = Image.fromarray(photo_like(rng, int(rng.integers(40, 90)), int(rng.integers(40, 90))))
            ext = "png" if i % 4 == 1 else "jpg"
            save(image, f"{root}/class{c}/{sub}{i:02d}.{ext}")
    return root


@pytest.fixture(scope="session")
def stores(parity_tree, tmp_path_factory) -> dict[str, str]:
    """The parity tree converted once per backend (read-only for tests)."""
    out = tmp_path_factory.mktemp("stores")
    return {b: torchpack.convert(parity_tree, out / f"parity{EXTENSION[b]}", workers=0).stores[0] for b in BACKENDS}


@pytest.fixture(scope="session")
def small_stores(small_tree, tmp_path_factory) -> dict[str, str]:
    out = tmp_path_factory.mktemp("small_stores")
    return {b: torchpack.convert(small_tree, out / f"small{EXTENSION[b]}", workers=0).stores[0] for b in BACKENDS}


@contextlib.contextmanager
def crash_at_second_commit(monkeypatch, backend: str):
    """Within the block, a conversion to ``backend`` raises ``OSError("simulated crash")`` right after its
    second commit: a crash with work both committed and in flight."""
    from torchpack.backends import writer_class

    writer = writer_class(backend)
    real_commit = writer.commit
    calls = []

    def crashing_commit(self):
        size = real_commit(self)
        calls.append(1)
        if len(calls) == 2:
            raise OSError("simulated crash")
        return size

    with monkeypatch.context() as patch:
        patch.setattr(writer, "commit", crashing_commit)
        with pytest.raises(OSError, match="simulated crash"):
            yield


def dataset_class(backend: str):
    return getattr(torchpack, DATASET[backend])
