"""Damage after conversion is caught on a sample's first read, and each sample is checked only once.

A dataset remembers, in memory its DataLoader workers share, which samples passed their
CRC-32; later reads of them (other epochs, other workers) skip the check.
"""

from __future__ import annotations

import pickle
import shutil
import zlib

import numpy as np
import pytest
import torch
from PIL import Image
from torch.utils.data import DataLoader

import torchpack
import torchpack.integrity
import torchpack.raw_batch
from conftest import BACKENDS, EXTENSION, damage_sample, dataset_class, photo_like, save


class CountingZlib:
    """Stands in for ``zlib`` in the modules that check CRC-32s, counting the computations."""

    def __init__(self) -> None:
        self.calls = 0

    def crc32(self, data) -> int:
        self.calls += 1
        return zlib.crc32(data)


@pytest.fixture
def crc_calls(monkeypatch) -> CountingZlib:
    counter = CountingZlib()
    monkeypatch.setattr(torchpack.integrity, "zlib", counter)
    monkeypatch.setattr(torchpack.raw_batch, "zlib", counter)
    return counter


def read_all(dataset) -> list:
    return [dataset[i] for i in range(len(dataset))]


def identity_collate(batch):
    return batch


@pytest.mark.parametrize("backend", BACKENDS)
def test_each_sample_is_checked_on_its_first_read_only(backend, small_stores, crc_calls):
    dataset = dataset_class(backend)(small_stores[backend], decode="numpy")
    first = read_all(dataset)
    assert crc_calls.calls == len(dataset)
    second = read_all(dataset)
    assert crc_calls.calls == len(dataset)
    assert all(np.array_equal(a[0], b[0]) for a, b in zip(first, second))
    read_all(dataset_class(backend)(small_stores[backend]))  # another dataset checks for itself
    assert crc_calls.calls == 2 * len(dataset)
    read_all(dataset_class(backend)(small_stores[backend], check_crc=False))
    assert crc_calls.calls == 2 * len(dataset)


@pytest.mark.parametrize("backend", BACKENDS)
@pytest.mark.parametrize("method", ["fork", "spawn"])
def test_workers_share_what_they_checked(backend, method, small_stores, crc_calls):
    dataset = dataset_class(backend)(small_stores[backend], decode="tensor")
    loader = DataLoader(dataset, batch_size=5, num_workers=2, multiprocessing_context=method, collate_fn=identity_collate)
    assert sum(len(batch) for batch in loader) == len(dataset)
    assert crc_calls.calls == 0  # the workers checked every sample, not this process
    read_all(dataset)
    assert crc_calls.calls == 0
    assert sum(len(batch) for batch in loader) == len(dataset)  # a second epoch, new workers: nothing left to check


@pytest.mark.parametrize("backend", BACKENDS)
def test_check_crc_can_be_changed_after_construction(backend, small_stores, crc_calls):
    dataset = dataset_class(backend)(small_stores[backend], check_crc=False)
    read_all(dataset)
    assert crc_calls.calls == 0 and not dataset.check_crc
    dataset.check_crc = True
    read_all(dataset)
    assert crc_calls.calls == len(dataset) and dataset.check_crc


@pytest.mark.parametrize("backend", BACKENDS)
def test_an_ordinary_pickle_checks_again(backend, small_stores, crc_calls):
    dataset = dataset_class(backend)(small_stores[backend])
    read_all(dataset)
    copy = pickle.loads(pickle.dumps(dataset))
    read_all(copy)
    assert crc_calls.calls == 2 * len(dataset)


@pytest.mark.parametrize("backend", BACKENDS)
def test_damage_is_caught_on_first_read_after_other_samples_were_read(backend, small_tree, tmp_path):
    store = torchpack.convert(small_tree, tmp_path / f"s{EXTENSION[backend]}", workers=0).stores[0]
    victim = 9
    damage_sample(store, dataset_class(backend)(store, check_crc=False).read_bytes(victim))
    dataset = dataset_class(backend)(store, on_error="skip")
    loader = DataLoader(dataset, batch_size=4, num_workers=2, collate_fn=identity_collate)
    samples = [sample for batch in loader for sample in batch]
    bad = [s for s in samples if isinstance(s, torchpack.BadSample)]
    assert [b.index for b in bad] == [victim] and "checksum mismatch" in bad[0].error
    assert isinstance(dataset[victim], torchpack.BadSample)  # never marked as checked
    assert not torchpack.verify_store(store).ok


@pytest.mark.parametrize("backend", BACKENDS)
def test_damaged_bytes_name_the_sample_in_read_bytes_and_export(backend, small_tree, tmp_path):
    store = torchpack.convert(small_tree, tmp_path / f"s{EXTENSION[backend]}", workers=0).stores[0]
    dataset = dataset_class(backend)(store, check_crc=False)
    damage_sample(store, dataset.read_bytes(4))
    path = dataset.relative_path(4)
    with pytest.raises(ValueError, match=f"checksum mismatch for {path} in .*{EXTENSION[backend]}"):
        dataset_class(backend)(store).read_bytes(4)
    with pytest.raises(ValueError, match=f"checksum mismatch for {path} in .*not exported"):
        torchpack.export_store(store, tmp_path / "out")


@pytest.fixture(scope="module")
def gray_tree(tmp_path_factory) -> str:
    """28x28 grayscale PNGs (Fashion-MNIST's kind), plus two colour ones in their own class."""
    root = str(tmp_path_factory.mktemp("gray") / "tree")
    rng = np.random.default_rng(11)
    for i in range(24):
        save(Image.fromarray(photo_like(rng, 28, 28)).convert("L"), f"{root}/c{i % 3}/{i:02d}.png")
    for i in range(2):
        save(Image.fromarray(photo_like(rng, 28, 28)), f"{root}/colour/{i}.png")
    return root


@pytest.mark.parametrize("backend", BACKENDS)
@pytest.mark.parametrize("compression", ["lz4", "none"])
def test_raw_grayscale_stores_one_channel_and_reads_rgb(backend, compression, gray_tree, tmp_path):
    from torchvision.datasets import ImageFolder
    from torchvision.transforms import PILToTensor

    result = torchpack.convert(gray_tree, tmp_path / f"raw{EXTENSION[backend]}", workers=0, storage="raw", raw_compression=compression)
    store = result.stores[0]
    reference = ImageFolder(gray_tree, transform=PILToTensor())
    dataset = dataset_class(backend)(store, decode="tensor")
    channels = torch.tensor([dataset._index.channels[i] for i in range(len(dataset))])
    assert channels.tolist() == [1] * 24 + [3, 3]  # "colour" sorts last
    if compression == "none":
        assert int(dataset._index.lengths.sum()) == 24 * 28 * 28 + 2 * 28 * 28 * 3
    for decode in ("pil", "numpy", "tensor"):
        view = dataset_class(backend)(store, decode=decode)
        for i in range(len(reference)):
            image = view[i][0]
            image = PILToTensor()(image) if decode == "pil" else torch.from_numpy(image).permute(2, 0, 1) if decode == "numpy" else image
            assert torch.equal(image, reference[i][0]), (decode, i)
    gray_rows = list(range(2, 24, 3))
    batch = dataset.__getitems__(gray_rows)
    assert isinstance(batch, torchpack.StackedBatch) and batch.images.shape == (8, 3, 28, 28)
    assert torch.equal(batch.images, torch.stack([reference[i][0] for i in gray_rows]))
    mixed_rows = [24, 0, 25, 7]  # colour and gray of one size: still one gather
    batch = dataset.__getitems__(mixed_rows)
    assert isinstance(batch, torchpack.StackedBatch)
    assert torch.equal(batch.images, torch.stack([reference[i][0] for i in mixed_rows]))
    loader = DataLoader(dataset, batch_size=6, num_workers=2, collate_fn=torchpack.SkipBadCollate())
    assert torch.equal(torch.cat([images for images, _ in loader]), torch.stack([reference[i][0] for i in range(len(reference))]))


@pytest.mark.parametrize("backend", BACKENDS)
def test_turning_the_check_off_and_on_checks_whole_batches_again(backend, gray_tree, tmp_path, crc_calls):
    store = torchpack.convert(gray_tree, tmp_path / f"raw{EXTENSION[backend]}", workers=0, storage="raw").stores[0]
    dataset = dataset_class(backend)(store, decode="tensor")
    rows = list(range(len(dataset)))
    for _ in range(3):  # checked once, then known to be all checked
        assert isinstance(dataset.__getitems__(rows), torchpack.StackedBatch)
    assert crc_calls.calls == len(dataset)
    dataset.check_crc = False
    dataset.check_crc = True
    dataset.__getitems__(rows)
    assert crc_calls.calls == 2 * len(dataset)


@pytest.mark.parametrize("backend", BACKENDS)
def test_export_writes_grayscale_raw_samples_as_grayscale_png(backend, gray_tree, tmp_path):
    store = torchpack.convert(gray_tree, tmp_path / f"raw{EXTENSION[backend]}", workers=0, storage="raw").stores[0]
    out = tmp_path / "out"
    assert torchpack.export_store(store, out) == 26
    with Image.open(out / "c0" / "00.png") as exported, Image.open(f"{gray_tree}/c0/00.png") as original:
        assert exported.mode == "L" and np.array_equal(np.asarray(exported), np.asarray(original))
    shutil.rmtree(out)


@pytest.mark.parametrize("backend", BACKENDS)
def test_larger_raw_images_read_as_imagefolder_in_every_mode(backend, tmp_path):
    """Photos stored raw (decoded, lossless): tensors come channels-last, with ImageFolder's pixels."""
    from torchvision.datasets import ImageFolder

    rng = np.random.default_rng(2)
    tree = str(tmp_path / "tree")
    save(Image.fromarray(photo_like(rng, 120, 90)), f"{tree}/a/rgb.png")
    save(Image.fromarray(photo_like(rng, 70, 100)).convert("L"), f"{tree}/a/gray.png")
    store = torchpack.convert(tree, tmp_path / f"raw{EXTENSION[backend]}", workers=0, storage="raw").stores[0]
    reference = ImageFolder(tree)
    tensors = dataset_class(backend)(store, decode="tensor")
    for i in range(len(reference)):
        expected = torch.from_numpy(np.asarray(reference[i][0])).permute(2, 0, 1)
        image = tensors[i][0]
        assert image.shape == expected.shape and torch.equal(image, expected)
        assert image.stride() == (1, image.shape[2] * 3, 3)  # an HWC array seen as CHW: channels-last
        assert np.array_equal(np.asarray(dataset_class(backend)(store)[i][0]), np.asarray(reference[i][0]))
