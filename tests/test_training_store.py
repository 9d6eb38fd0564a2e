"""The training-ready store (``storage="reencode"``): capped short side, JPEG, every decode mode, both backends."""

from __future__ import annotations

import io
import os

import numpy as np
import pytest
import torch
from PIL import Image
from torch.utils.data import DataLoader
from torchvision.datasets import ImageFolder
from torchvision.transforms import v2

import torchpack
from conftest import BACKENDS, EXTENSION, dataset_class, photo_like, save

SHORT_SIDE = 64


@pytest.fixture(scope="module")
def source_tree(tmp_path_factory) -> str:
    """Photos larger and smaller than the cap, landscape and portrait, colour and gray, JPEG and PNG."""
    root = str(tmp_path_factory.mktemp("reencode") / "tree")
    rng = np.random.default_rng(21)
    for i, (w, h) in enumerate([(200, 150), (90, 160), (48, 40), (300, 120), (64, 64), (129, 65)]):
        image = Image.fromarray(photo_like(rng, w, h))
        if i == 1:
            image = image.convert("L")
        save(image, f"{root}/c{i % 2}/{i}.{'png' if i == 3 else 'jpg'}", quality=95)
    return root


@pytest.fixture(scope="module")
def training_stores(source_tree, tmp_path_factory) -> dict[str, str]:
    out = tmp_path_factory.mktemp("training_stores")
    return {
        b: torchpack.convert(source_tree, out / f"train{EXTENSION[b]}", workers=0, storage="reencode", short_side=SHORT_SIDE, quality=90).stores[0]
        for b in BACKENDS
    }


def collate_list(batch):
    return batch


@pytest.mark.parametrize("backend", BACKENDS)
def test_short_side_is_capped_and_never_enlarged(backend, source_tree, training_stores):
    reference = ImageFolder(source_tree)
    dataset = dataset_class(backend)(training_stores[backend])
    assert dataset.header["storage"] == {
        "mode": "reencode", "checked": True, "short_side": SHORT_SIDE, "long_side": None, "quality": 90, "raw_compression": None
    }
    for i in range(len(reference)):
        original, stored = reference[i][0], dataset[i][0]
        assert min(stored.size) == min(SHORT_SIDE, min(original.size)), dataset.relative_path(i)
        ratio = (original.width / original.height) / (stored.width / stored.height)
        assert abs(ratio - 1) < 0.05  # aspect ratio kept
        assert dataset.read_bytes(i)[:3] == b"\xff\xd8\xff"  # a JPEG, whatever the source was
    assert torchpack.verify_store(training_stores[backend], decode=True).ok


@pytest.mark.parametrize("backend", BACKENDS)
def test_a_long_side_cap_matches_ffcvs_max_resolution(backend, source_tree, tmp_path):
    store = torchpack.convert(source_tree, tmp_path / f"l{EXTENSION[backend]}", workers=0, storage="reencode", long_side=40).stores[0]
    both = torchpack.convert(source_tree, tmp_path / f"b{EXTENSION[backend]}", workers=0, storage="reencode", long_side=60, short_side=20).stores[0]
    reference, capped, tighter = ImageFolder(source_tree), dataset_class(backend)(store), dataset_class(backend)(both)
    for i in range(len(reference)):
        original = reference[i][0]
        assert max(capped[i][0].size) == min(40, max(original.size))
        scale = min(20 / min(original.size), 60 / max(original.size), 1.0)
        assert tighter[i][0].size == (max(1, round(original.width * scale)), max(1, round(original.height * scale)))
    with pytest.raises(ValueError, match="`long_side` must be a positive number"):
        torchpack.convert(source_tree, tmp_path / f"x{EXTENSION[backend]}", storage="reencode", long_side=0)


@pytest.mark.parametrize("backend", BACKENDS)
def test_every_decode_mode_gives_pillows_pixels_of_the_stored_jpeg(backend, training_stores):
    stores = {mode: dataset_class(backend)(training_stores[backend], decode=mode) for mode in ("pil", "tensor", "numpy")}
    for i in range(len(stores["pil"])):
        with Image.open(io.BytesIO(stores["pil"].read_bytes(i))) as image:
            expected = np.asarray(image.convert("RGB"))
        assert np.array_equal(np.asarray(stores["pil"][i][0]), expected)
        assert np.array_equal(stores["numpy"][i][0], expected)
        tensor = stores["tensor"][i][0]
        assert tensor.dtype == torch.uint8 and torch.equal(tensor, torch.from_numpy(expected).permute(2, 0, 1))
    assert set(stores["pil"]._index.decoders) == {"simplejpeg"}


@pytest.mark.parametrize("backend", BACKENDS)
def test_the_training_pipeline_runs_on_it_with_workers(backend, training_stores):
    pipeline = v2.Compose([v2.RandomResizedCrop(32, antialias=True), v2.RandomHorizontalFlip()])
    dataset = dataset_class(backend)(training_stores[backend], transform=pipeline, decode="tensor", decode_size=32)
    loader = DataLoader(dataset, batch_size=4, num_workers=2, shuffle=True)
    images = torch.cat([images for images, _ in loader])
    assert images.shape == (6, 3, 32, 32) and images.dtype == torch.uint8
    pil = dataset_class(backend)(training_stores[backend], decode_size=32, transform=None)
    assert all(min(pil[i][0].size) >= 32 for i in range(len(pil)))


@pytest.mark.parametrize("backend", BACKENDS)
def test_it_is_smaller_than_the_tree(backend, source_tree, training_stores):
    tree_bytes = sum(os.path.getsize(os.path.join(d, f)) for d, _, files in os.walk(source_tree) for f in files)
    stored = sum(len(dataset_class(backend)(training_stores[backend]).read_bytes(i)) for i in range(6))
    assert stored < tree_bytes
