"""The fast paths give the right pixels: scaled decode, tensor output, batched reads, stacked raw batches."""

from __future__ import annotations

import io
import math
import os
import shutil
import subprocess
import sys

import numpy as np
import pytest
import torch
from PIL import Image
from torch.utils.data import DataLoader, default_collate

import torchpack
from conftest import BACKENDS, EXTENSION, dataset_class, photo_like, save
from torchpack.decode import decode_array, decode_pil, jpeg_scale

BENCH_SUITE = os.path.join(os.path.dirname(os.path.dirname(os.path.abspath(__file__))), "benchmarks", "bench_suite.py")


def jpeg_bytes(width: int, height: int, seed: int = 0) -> bytes:
    out = io.BytesIO()
    Image.fromarray(photo_like(np.random.default_rng(seed), width, height)).save(out, format="JPEG", quality=90)
    return out.getvalue()


def expected_scale(height: int, width: int, short_side: int) -> int:
    """The smallest decoded size among 1/8, 1/4, 1/2 (else full) whose short side still covers ``short_side``."""
    for scale in (8, 4, 2):
        if min(math.ceil(height / scale), math.ceil(width / scale)) >= short_side:
            return scale
    return 1


@pytest.mark.parametrize(
    "width, height, target",
    [(640, 480, 256), (1200, 800, 256), (2100, 1700, 256), (300, 200, 256), (513, 1030, 256), (512, 600, 64)],
)
def test_scaled_decode_uses_smallest_scale_that_covers_target(width, height, target):
    data = jpeg_bytes(width, height)
    scale = expected_scale(height, width, target)
    assert jpeg_scale(height, width, target) == scale
    expected_size = (math.ceil(height / scale), math.ceil(width / scale))
    pixels = decode_array(data, "jpeg", target)
    image = decode_pil(data, "jpeg", target)
    assert pixels.shape == (*expected_size, 3) and pixels.dtype == np.uint8
    assert (image.height, image.width) == expected_size and image.mode == "RGB"
    assert min(expected_size) >= min(target, min(height, width))
    if scale > 1:  # the next finer scale would have been needlessly large
        assert scale == 8 or min(math.ceil(height / (scale * 2)), math.ceil(width / (scale * 2))) < target
    np.testing.assert_array_equal(np.asarray(image), pixels)


def test_scaled_decode_covers_a_height_width_target():
    data = jpeg_bytes(800, 600)
    assert decode_array(data, "jpeg", (150, 100)).shape == (150, 200, 3)  # 1/4 still covers 150 rows
    assert decode_array(data, "jpeg", (151, 100)).shape == (300, 400, 3)


def test_tensor_output_equals_pil_output_without_scaling():
    data = jpeg_bytes(97, 61)
    reference = np.asarray(Image.open(io.BytesIO(data)).convert("RGB"))
    np.testing.assert_array_equal(decode_array(data, "jpeg"), reference)
    np.testing.assert_array_equal(np.asarray(decode_pil(data, "jpeg")), reference)
    # A target larger than the image decodes at full size, pixel-identical too.
    np.testing.assert_array_equal(decode_array(data, "jpeg", 256), reference)


@pytest.fixture(scope="module")
def big_jpeg_tree(tmp_path_factory) -> str:
    root = tmp_path_factory.mktemp("big_jpeg") / "tree"
    rng = np.random.default_rng(3)
    for i, (w, h) in enumerate([(600, 520), (1100, 540), (300, 280), (530, 1070)]):
        save(Image.fromarray(photo_like(rng, w, h)), f"{root}/c{i % 2}/{i}.jpg", quality=88)
    return str(root)


@pytest.mark.parametrize("backend", BACKENDS)
def test_dataset_scaled_tensor_decode_matches_decode_module(backend, big_jpeg_tree, tmp_path):
    store = torchpack.convert(big_jpeg_tree, tmp_path / f"s{EXTENSION[backend]}", workers=0).stores[0]
    as_tensor = dataset_class(backend)(store, decode="tensor", decode_size=256)
    as_pil = dataset_class(backend)(store, decode_size=256)
    for i in range(len(as_tensor)):
        data = as_tensor.read_bytes(i)
        height, width = Image.open(io.BytesIO(data)).size[::-1]
        scale = expected_scale(height, width, 256)
        image, _ = as_tensor[i]
        assert tuple(image.shape) == (3, math.ceil(height / scale), math.ceil(width / scale))
        assert torch.equal(image, torch.from_numpy(np.array(as_pil[i][0])).permute(2, 0, 1))


@pytest.mark.parametrize("backend", BACKENDS)
@pytest.mark.parametrize("decode", ["pil", "tensor", "numpy"])
def test_getitems_equals_getitem(backend, decode, small_stores):
    dataset = dataset_class(backend)(small_stores[backend], decode=decode)
    indices = [5, 0, 23, 7, -1, 5]
    batch = dataset.__getitems__(indices)
    assert len(batch) == len(indices)
    for got, i in zip(batch, indices):
        expected_image, expected_target = dataset[i]
        assert got[1] == expected_target
        np.testing.assert_array_equal(np.asarray(got[0]), np.asarray(expected_image))


@pytest.mark.parametrize("backend", BACKENDS)
def test_getitems_rejects_an_index_out_of_range(backend, small_stores):
    dataset = dataset_class(backend)(small_stores[backend])
    with pytest.raises(IndexError, match="sample index 24 is out of range"):
        dataset.__getitems__([0, 24])


@pytest.fixture(scope="module")
def raw_stores(small_tree, tmp_path_factory) -> dict[tuple[str, str], str]:
    """The small tree resized to a fixed 16x16 (short side 16 on square crops), stored raw."""
    root = tmp_path_factory.mktemp("square")
    tree = root / "tree"
    rng = np.random.default_rng(5)
    for c in range(3):
        for i in range(10):
            save(Image.fromarray(photo_like(rng, 16, 16)), f"{tree}/c{c}/{i}.png")
    return {
        (backend, compression): torchpack.convert(
            tree, root / f"raw_{compression}{EXTENSION[backend]}", workers=0, storage="raw", raw_compression=compression
        ).stores[0]
        for backend in BACKENDS
        for compression in ("lz4", "none")
    }


@pytest.mark.parametrize("backend", BACKENDS)
@pytest.mark.parametrize("compression", ["lz4", "none"])
def test_stacked_batch_through_skipbadcollate_equals_default_collate(backend, compression, raw_stores):
    dataset = dataset_class(backend)(raw_stores[backend, compression], decode="tensor")
    indices = [3, 17, 0, 29, 3, 12]
    batch = dataset.__getitems__(indices)
    assert isinstance(batch, torchpack.StackedBatch)
    images, targets = torchpack.SkipBadCollate()(batch)
    expected_images, expected_targets = default_collate([dataset[i] for i in indices])
    assert images.dtype == torch.uint8 and images.shape == expected_images.shape == (6, 3, 16, 16)
    assert torch.equal(images, expected_images)
    assert torch.equal(targets, expected_targets)
    # A collate that does not know StackedBatch sees ordinary (image, target) samples.
    images, targets = default_collate(batch)
    assert torch.equal(images, expected_images) and torch.equal(targets, expected_targets)


@pytest.mark.parametrize("backend", BACKENDS)
def test_stacked_batches_through_dataloader_workers(backend, raw_stores):
    dataset = dataset_class(backend)(raw_stores[backend, "lz4"], decode="tensor")
    loader = DataLoader(dataset, batch_size=8, num_workers=2, collate_fn=torchpack.SkipBadCollate())
    images = torch.cat([images for images, _ in loader])
    targets = torch.cat([targets for _, targets in loader])
    assert torch.equal(images, torch.stack([dataset[i][0] for i in range(len(dataset))]))
    assert targets.tolist() == list(dataset.targets)


@pytest.mark.parametrize("backend", BACKENDS)
def test_stacked_batch_detects_damage_and_falls_back_per_sample(backend, raw_stores, tmp_path):
    store = tmp_path / f"damaged{EXTENSION[backend]}"
    shutil.copyfile(raw_stores[backend, "none"], store)
    sample = dataset_class(backend)(str(store)).read_bytes(4)
    content = bytearray(store.read_bytes())
    at = content.index(sample) + 10
    content[at] ^= 0xFF  # the sample's bytes changed after conversion
    store.write_bytes(bytes(content))
    dataset = dataset_class(backend)(str(store), decode="tensor", on_error="skip")
    batch = dataset.__getitems__([2, 4, 6])
    assert not isinstance(batch, torchpack.StackedBatch)
    assert isinstance(batch[1], torchpack.BadSample) and "checksum" in batch[1].error
    images, _ = torchpack.SkipBadCollate()(batch)
    assert torch.equal(images, torch.stack([dataset[2][0], dataset[6][0]]))


def test_bench_suite_quick_smoke_run(tmp_path):
    out = tmp_path / "bench"
    done = subprocess.run(
        [sys.executable, BENCH_SUITE, "--quick", "--workers", "1", "--out", str(out),
         "--photo-count", "20", "--tiny-count", "200", "--min-seconds", "0.05"],
        capture_output=True, text=True, timeout=300,
    )
    assert done.returncode == 0, done.stderr[-3000:]
    assert "ImageFolder (PIL)" in done.stdout and "fast path vs ImageFolder" in done.stdout
    for name in ("results.json", "results.md", "results.png"):
        assert (out / name).stat().st_size > 0
    assert not (out / "work").exists()
