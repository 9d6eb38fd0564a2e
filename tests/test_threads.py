"""Loading in the training process with decode threads, and the crop-first evaluation resize."""

from __future__ import annotations

import pickle
import shutil

import numpy as np
import pytest
import torch
from PIL import Image
from torch.utils.data import DataLoader, default_collate
from torchvision.transforms import v2

import torchpack
from conftest import BACKENDS, EXTENSION, damage_sample, dataset_class


@pytest.mark.parametrize("backend", BACKENDS)
@pytest.mark.parametrize("decode", ["pil", "tensor", "numpy"])
def test_threaded_batches_equal_per_item_reads(backend, decode, small_stores):
    threaded = dataset_class(backend)(small_stores[backend], decode=decode, threads=3)
    plain = dataset_class(backend)(small_stores[backend], decode=decode)
    indices = [5, 0, 23, 7, -1, 5, 11]
    batch = threaded.__getitems__(indices)
    assert len(batch) == len(indices)
    for (image, target), i in zip(batch, indices):
        expected, expected_target = plain[i]
        assert target == expected_target
        assert np.array_equal(np.asarray(image), np.asarray(expected))


@pytest.mark.parametrize("backend", BACKENDS)
def test_threads_through_a_dataloader_in_the_training_process(backend, small_stores):
    tf = v2.Compose([v2.Resize(32, antialias=True), v2.CenterCrop(32)])
    dataset = dataset_class(backend)(small_stores[backend], decode="tensor", transform=tf, threads=2)
    images = torch.cat([images for images, _ in DataLoader(dataset, batch_size=5, num_workers=0)])
    expected = torch.stack([tf(dataset_class(backend)(small_stores[backend], decode="tensor")[i][0]) for i in range(24)])
    assert torch.equal(images, expected)


@pytest.mark.parametrize("backend", BACKENDS)
@pytest.mark.parametrize("on_error", ["skip", "replace", "raise"])
def test_bad_samples_in_threads_get_the_policy(backend, on_error, small_tree, tmp_path):
    store = torchpack.convert(small_tree, tmp_path / f"s{EXTENSION[backend]}", workers=0).stores[0]
    damage_sample(store, dataset_class(backend)(store, check_crc=False).read_bytes(4))
    dataset = dataset_class(backend)(store, on_error=on_error, threads=2)
    if on_error == "raise":
        with pytest.raises(torchpack.BadSampleError, match=r"Sample 4 \(.*\) .*checksum mismatch"):
            dataset.__getitems__([3, 4, 5])
        return
    batch = dataset.__getitems__([3, 4, 5])
    if on_error == "skip":
        assert isinstance(batch[1], torchpack.BadSample) and batch[1].index == 4
    else:
        assert np.array_equal(np.asarray(batch[1][0]), np.asarray(dataset[5][0]))  # the next good sample
    assert dataset.skipped_count == 1


def test_threads_must_be_positive(small_stores):
    with pytest.raises(ValueError, match="`threads` must be >= 1, got 0"):
        torchpack.LMDBImageFolder(small_stores["lmdb"], threads=0)


def two_step(image):
    return v2.Compose([v2.Resize(256, antialias=True), v2.CenterCrop(224)])(image)


@pytest.mark.parametrize("kind", ["pil", "tensor"])
@pytest.mark.parametrize("size", [(640, 480), (300, 700), (256, 256), (1000, 257)])
def test_resized_center_crop_is_the_evaluation_pipelines_geometry(kind, size):
    width, height = size
    y, x = np.mgrid[0:height, 0:width]
    smooth = np.stack([x * 255 // width, y * 255 // height, (x * y) % 251], -1).astype(np.uint8)  # a photo's low frequencies
    image = Image.fromarray(smooth)
    if kind == "tensor":
        image = torch.from_numpy(np.asarray(image).copy()).permute(2, 0, 1)
    fused = torchpack.ResizedCenterCrop()(image)
    reference = two_step(image)
    fused_array = np.asarray(fused, dtype=float).transpose(2, 0, 1) if kind == "pil" else fused.numpy().astype(float)
    reference_array = np.asarray(reference, dtype=float).transpose(2, 0, 1) if kind == "pil" else reference.numpy().astype(float)
    assert fused_array.shape == reference_array.shape
    assert (fused.size == (224, 224)) if kind == "pil" else (tuple(fused.shape) == (3, 224, 224))
    # The same central region, resampled once: close, not identical (sub-pixel alignment).
    assert np.abs(fused_array[:2] - reference_array[:2]).mean() < 2


def test_resized_center_crop_gives_channels_last_images_the_same_pixels_contiguous():
    """torchpack's decoded tensors are HWC memory seen as CHW; the transform's faster route for them
    must give what it gives a contiguous CHW image, as a contiguous tensor (batches stack those fastest)."""
    hwc = np.random.default_rng(4).integers(0, 256, (181, 263, 3), dtype=np.uint8)
    channels_last = torch.from_numpy(hwc).permute(2, 0, 1)
    contiguous = channels_last.contiguous()
    transform = torchpack.ResizedCenterCrop(64)
    fast, reference = transform(channels_last), transform(contiguous)
    assert fast.is_contiguous() and torch.equal(fast, reference)
    batch = torch.from_numpy(np.stack([hwc, hwc[::-1].copy()])).permute(0, 3, 1, 2)
    assert torch.equal(transform(batch), transform(batch.contiguous())) and transform(batch).is_contiguous()


def test_resized_center_crop_refuses_bad_arguments_and_pickles():
    with pytest.raises(ValueError, match="`ratio` in"):
        torchpack.ResizedCenterCrop(224, 1.5)
    with pytest.raises(TypeError, match="takes a PIL image or a tensor"):
        torchpack.ResizedCenterCrop()(np.zeros((3, 4, 4)))
    copy = pickle.loads(pickle.dumps(torchpack.ResizedCenterCrop(64, 0.5)))
    assert (copy.size, copy.ratio) == (64, 0.5) and "ResizedCenterCrop(size=64" in repr(copy)
