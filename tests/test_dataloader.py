"""The datasets in real DataLoader worker processes: start methods, persistent workers, pickling, wrappers."""

from __future__ import annotations

import functools
import hashlib
import json
import os
import pickle
from collections import Counter

import pytest
import torch
from torch.utils.data import ConcatDataset, DataLoader, Subset, random_split
from torchvision.datasets import ImageFolder
from torchvision.transforms.functional import pil_to_tensor

import torchpack
from conftest import BACKENDS, dataset_class

CROP = 16


def record_worker(folder: str, worker_id: int) -> None:
    """A user's own worker init: appends its pid and the store handles this process had opened when it ran."""
    from torchpack import handles

    opened = sorted(path for path, _ in handles._readers)  # a forked worker starts with none of its parent's
    with open(os.path.join(folder, f"worker{worker_id}.jsonl"), "a") as f:
        f.write(json.dumps({"pid": os.getpid(), "open": opened}) + "\n")


def read_records(folder, worker_id: int) -> list[dict]:
    with open(os.path.join(folder, f"worker{worker_id}.jsonl")) as f:
        return [json.loads(line) for line in f]


def crop(image: torch.Tensor) -> torch.Tensor:
    """Top-level (so spawn workers can unpickle it): a fixed-size corner, so default collate stacks."""
    return image[:, :CROP, :CROP]


def fingerprint(image: torch.Tensor, target: int) -> tuple[str, int]:
    return hashlib.sha1(image.contiguous().numpy().tobytes()).hexdigest(), int(target)


def expected_fingerprints(dataset, indices=None) -> Counter:
    """What the dataset yields in this process, without workers."""
    indices = range(len(dataset)) if indices is None else indices
    return Counter(fingerprint(*dataset[i]) for i in indices)


def imagefolder_fingerprints(tree: str) -> Counter:
    """What torchvision's ImageFolder gives for the same tree, through the same crop."""
    return Counter(fingerprint(crop(pil_to_tensor(image)), target) for image, target in ImageFolder(tree))


def loaded_fingerprints(loader: DataLoader) -> Counter:
    seen: Counter = Counter()
    for images, targets in loader:
        assert images.shape[1:] == (3, CROP, CROP)
        seen.update(fingerprint(image, target) for image, target in zip(images, targets.tolist()))
    return seen


def tensor_dataset(backend: str, stores: dict[str, str], **kwargs):
    return dataset_class(backend)(stores[backend], decode="tensor", transform=crop, **kwargs)


@pytest.mark.parametrize("backend", BACKENDS)
@pytest.mark.parametrize(
    ("context", "persistent", "epochs"),
    [("fork", False, 2), ("fork", True, 2), ("spawn", False, 1), ("forkserver", True, 2)],
)
def test_every_sample_once_per_epoch(backend, small_tree, small_stores, tmp_path, context, persistent, epochs):
    dataset = tensor_dataset(backend, small_stores)
    expected = imagefolder_fingerprints(small_tree)
    assert expected_fingerprints(dataset) == expected
    assert sum(expected.values()) == len(dataset) == 24
    loader = DataLoader(
        dataset,
        batch_size=5,
        shuffle=True,
        num_workers=2,
        multiprocessing_context=context,
        persistent_workers=persistent,
        generator=torch.Generator().manual_seed(0),
        worker_init_fn=torchpack.worker_init_fn(functools.partial(record_worker, str(tmp_path))),
    )
    for _ in range(epochs):
        assert loaded_fingerprints(loader) == expected
    records = [read_records(tmp_path, i) for i in range(2)]
    assert [len(r) for r in records] == [1 if persistent else epochs] * 2  # persistent workers start once
    assert all(record["open"] == [small_stores[backend]] for r in records for record in r)


@pytest.mark.parametrize("backend", BACKENDS)
def test_dataset_used_in_parent_before_fork(backend, small_tree, small_stores):
    dataset = tensor_dataset(backend, small_stores)
    first = dataset[0]  # opens this process's handle before the workers fork
    expected = imagefolder_fingerprints(small_tree)
    loader = DataLoader(dataset, batch_size=4, num_workers=2, multiprocessing_context="fork")
    assert loaded_fingerprints(loader) == expected
    # The parent's handle still works after its children used their own.
    assert torch.equal(dataset[0][0], first[0]) and dataset[0][1] == first[1]


@pytest.mark.parametrize("backend", BACKENDS)
def test_pickle_round_trip_with_open_handle(backend, small_stores):
    dataset = dataset_class(backend)(small_stores[backend], decode="tensor")
    dataset[0]
    clone = pickle.loads(pickle.dumps(dataset))
    assert clone is not dataset
    assert list(clone.samples) == list(dataset.samples)
    assert list(clone.targets) == list(dataset.targets)
    assert clone.classes == dataset.classes and clone.class_to_idx == dataset.class_to_idx
    for i in range(len(dataset)):
        image, target = clone[i]
        expected_image, expected_target = dataset[i]
        assert torch.equal(image, expected_image) and target == expected_target


def hflip(image: torch.Tensor) -> torch.Tensor:
    return crop(image.flip(-1))


@pytest.mark.parametrize("backend", BACKENDS)
def test_two_datasets_on_one_store(backend, small_stores):
    path = small_stores[backend]
    train = dataset_class(backend)(path, decode="tensor", transform=hflip)
    val = dataset_class(backend)(path, decode="tensor", transform=crop)
    plain = dataset_class(backend)(path, decode="tensor")
    for i in range(len(train)):  # interleaved in one process, sharing the one open handle
        flipped, target = train[i]
        image, val_target = val[i]
        full = plain[i][0]
        assert target == val_target
        assert torch.equal(image, full[:, :CROP, :CROP])
        assert torch.equal(flipped, full.flip(-1)[:, :CROP, :CROP])
    # Both at once through DataLoaders with workers.
    train_loader = DataLoader(train, batch_size=4, num_workers=2)
    val_loader = DataLoader(val, batch_size=4, num_workers=2)
    got_train, got_val = Counter(), Counter()
    for (train_images, train_targets), (val_images, val_targets) in zip(train_loader, val_loader):
        assert torch.equal(train_targets, val_targets)
        got_train.update(fingerprint(im, t) for im, t in zip(train_images, train_targets.tolist()))
        got_val.update(fingerprint(im, t) for im, t in zip(val_images, val_targets.tolist()))
    assert got_train == expected_fingerprints(train)
    assert got_val == expected_fingerprints(val)
    assert got_train != got_val


@pytest.mark.parametrize("backend", BACKENDS)
def test_worker_init_fn_directly(backend, small_stores):
    dataset = tensor_dataset(backend, small_stores)
    loader = DataLoader(dataset, batch_size=6, num_workers=2, worker_init_fn=torchpack.worker_init_fn)
    assert loaded_fingerprints(loader) == expected_fingerprints(dataset)
    assert torchpack.worker_init_fn(0) is None  # outside a worker: nothing to do


@pytest.mark.parametrize("backend", BACKENDS)
def test_worker_init_fn_calls_users_function(backend, small_stores, tmp_path):
    dataset = tensor_dataset(backend, small_stores)
    init = torchpack.worker_init_fn(functools.partial(record_worker, str(tmp_path)))
    loader = DataLoader(dataset, batch_size=6, num_workers=2, worker_init_fn=init, multiprocessing_context="fork")
    assert loaded_fingerprints(loader) == expected_fingerprints(dataset)
    records = [record for i in range(2) for record in read_records(tmp_path, i)]
    assert len(records) == 2
    pids = {record["pid"] for record in records}
    assert len(pids) == 2 and os.getpid() not in pids
    for record in records:  # the handle was opened before the user's function ran
        assert record["open"] == [small_stores[backend]]


@pytest.mark.parametrize("backend", BACKENDS)
def test_subset_concat_and_random_split_with_workers(backend, small_stores):
    dataset = tensor_dataset(backend, small_stores)
    other = dataset_class(backend)(small_stores[backend], decode="tensor", transform=hflip)
    subset = Subset(dataset, [3, 1, 4, 1, 5, 9, 2, 6])
    concat = ConcatDataset([subset, other])
    first, second = random_split(dataset, [0.5, 0.5], generator=torch.Generator().manual_seed(0))
    cases = [
        (subset, expected_fingerprints(dataset, subset.indices)),
        (concat, expected_fingerprints(dataset, subset.indices) + expected_fingerprints(other)),
        (first, expected_fingerprints(dataset, first.indices)),
        (second, expected_fingerprints(dataset, second.indices)),
    ]
    assert sorted(first.indices + second.indices) == list(range(len(dataset)))
    for wrapped, expected in cases:
        loader = DataLoader(
            wrapped, batch_size=4, shuffle=True, num_workers=2, worker_init_fn=torchpack.worker_init_fn
        )
        assert loaded_fingerprints(loader) == expected
