"""Mid-epoch resume: the samplers are torchdata ``Stateful``; StatefulDataLoader resumes them without replaying the order."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest
import torch
from torchdata.stateful_dataloader import StatefulDataLoader

import torchpack
from conftest import BACKENDS, EXTENSION

EXAMPLES = Path(__file__).resolve().parent.parent / "examples"


@pytest.fixture(scope="module")
def sharded(small_tree, tmp_path_factory) -> dict[str, list[str]]:
    out = tmp_path_factory.mktemp("sharded")
    return {b: torchpack.convert(small_tree, out / f"s{EXTENSION[b]}", workers=0, num_shards=4).stores for b in BACKENDS}


def label(batch) -> list[int]:
    """A batch's samples by their first pixel row's checksum and target: tells samples apart."""
    images, targets = batch
    return [hash((bytes(image[:, 0].contiguous().numpy()), int(t))) for image, t in zip(images, targets)]


def make(sampler_kind: str, dataset, rank: int):
    if sampler_kind == "block":
        return torchpack.BlockShuffleSampler(dataset, num_replicas=2, rank=rank, block_size=5, seed=3)
    return torchpack.ShardWindowSampler(dataset, num_replicas=2, rank=rank, window=2, prefetch=1, seed=3)


@pytest.mark.parametrize("backend", BACKENDS)
@pytest.mark.parametrize("kind", ["block", "window"])
@pytest.mark.parametrize("workers", [0, 2])
def test_a_resumed_epoch_continues_where_it_stopped_on_every_rank(backend, kind, workers, sharded):
    def dataset():
        return torchpack.StoreImageFolder(sharded[backend], decode="tensor", transform=lambda image: image[:, :8, :8])

    for rank in range(2):
        full_sampler = make(kind, dataset(), rank)
        full_sampler.set_epoch(1)
        reference = [label(b) for b in StatefulDataLoader(dataset(), batch_size=2, sampler=full_sampler, num_workers=workers)]
        sampler = make(kind, dataset(), rank)
        sampler.set_epoch(1)
        loader = StatefulDataLoader(dataset(), batch_size=2, sampler=sampler, num_workers=workers)
        iterator = iter(loader)
        before = [label(next(iterator)) for _ in range(3)]
        state = loader.state_dict()
        del iterator, loader  # the job is preempted
        sampler = make(kind, dataset(), rank)
        resumed = StatefulDataLoader(dataset(), batch_size=2, sampler=sampler, num_workers=workers)
        resumed.load_state_dict(state)
        sampler.set_epoch(1)  # the training loop's call at the top of the epoch keeps the resume
        after = [label(b) for b in resumed]
        assert before + after == reference  # the same batches, in order: nothing skipped, nothing twice


def test_an_array_batch_sampler_resumes_too(sharded):
    dataset = torchpack.StoreImageFolder(sharded["hdf5"], decode="tensor", transform=lambda image: image[:, :8, :8])
    reference = [b[1].tolist() for b in StatefulDataLoader(dataset, batch_sampler=torchpack.ArrayBatchSampler(dataset, 5, seed=1))]
    loader = StatefulDataLoader(dataset, batch_sampler=torchpack.ArrayBatchSampler(dataset, 5, seed=1))
    iterator = iter(loader)
    before = [next(iterator)[1].tolist() for _ in range(2)]
    resumed = StatefulDataLoader(dataset, batch_sampler=torchpack.ArrayBatchSampler(dataset, 5, seed=1))
    resumed.load_state_dict(loader.state_dict())
    assert before + [b[1].tolist() for b in resumed] == reference


class Sized:
    def __init__(self, n: int) -> None:
        self.n = n

    def __len__(self) -> int:
        return self.n


def test_a_resume_late_in_a_large_epoch_starts_at_its_place():
    """At sample 1,000,000 of 1.28M: the sampler computes the order once (arrays), then starts there."""
    size, at = 1_281_167, 1_000_000
    sampler = torchpack.BlockShuffleSampler(Sized(size), num_replicas=1, rank=0, seed=5)
    sampler.set_epoch(2)
    expected = sampler.global_order()[at : at + 5].tolist()
    resumed = torchpack.BlockShuffleSampler(Sized(size), num_replicas=1, rank=0, seed=5)
    resumed.load_state_dict({"epoch": 2, "yielded": at, "seed": 5})
    iterator = iter(resumed)
    assert [next(iterator) for _ in range(5)] == expected
    assert resumed.state_dict() == {"epoch": 2, "yielded": at + 5, "seed": 5}
    with pytest.raises(ValueError, match="is for seed 5, this sampler has seed 6"):
        torchpack.BlockShuffleSampler(Sized(size), seed=6).load_state_dict(resumed.state_dict())


@pytest.mark.parametrize("backend", BACKENDS)
def test_the_preemption_example_resumes_after_sigterm(backend, sharded, tmp_path):
    """examples/preemptible_training.py, stopped by SIGTERM mid-epoch and run again, reads exactly the uninterrupted run's batches."""
    store = sharded[backend][0].rsplit("-00000-of-", 1)[0] + "-*" + EXTENSION[backend]  # the shards, by a glob
    env = {**os.environ, "PYTHONUNBUFFERED": "1"}
    script = [sys.executable, str(EXAMPLES / "preemptible_training.py"), "--store", store, "--epochs", "40"]
    subprocess.run([*script, "--checkpoint", str(tmp_path / "reference.pt")], check=True, env=env, timeout=300, capture_output=True)
    reference = (tmp_path / "reference.pt.seen").read_text().splitlines()

    job = [*script, "--checkpoint", str(tmp_path / "job.pt")]
    process = subprocess.Popen(job, env=env, stdout=subprocess.PIPE, text=True)
    seen = tmp_path / "job.pt.seen"
    deadline = time.monotonic() + 120
    while not (seen.exists() and len(seen.read_text().splitlines()) >= 15):
        assert time.monotonic() < deadline and process.poll() is None, "the job did not start training"
        time.sleep(0.02)
    process.send_signal(signal.SIGTERM)
    out, _ = process.communicate(timeout=120)
    assert process.returncode == 0 and "state saved" in out
    done = subprocess.run(job, env=env, timeout=300, capture_output=True, text=True)
    assert done.returncode == 0 and "resumed in epoch" in done.stdout
    assert seen.read_text().splitlines() == reference
    assert not (tmp_path / "job.pt").exists()


def test_a_shuffled_store_mixes_classes_in_every_shard(small_tree, tmp_path):
    from torchvision.datasets import ImageFolder

    stores = torchpack.convert(small_tree, tmp_path / "s.lmdb", workers=0, num_shards=3, shuffle=7).stores
    again = torchpack.convert(small_tree, tmp_path / "t.lmdb", workers=0, num_shards=3, shuffle=7).stores
    dataset, same_seed = torchpack.StoreImageFolder(stores), torchpack.StoreImageFolder(again)
    reference = ImageFolder(small_tree)
    paths = [dataset.relative_path(i) for i in range(len(dataset))]
    assert sorted(paths) == sorted(os.path.relpath(p, small_tree) for p, _ in reference.samples)
    assert paths != [os.path.relpath(p, small_tree) for p, _ in reference.samples]  # not ImageFolder's order
    assert paths == [same_seed.relative_path(i) for i in range(len(same_seed))]  # the seed decides it
    shards = dataset.index_shards()
    assert all(len({dataset.targets[i] for i in np.flatnonzero(shards == s)}) == 3 for s in range(3))
    assert all(dataset[i][1] == reference.class_to_idx[paths[i].split("/")[0]] for i in range(len(dataset)))
    assert dataset.header["order"] == "shuffled with seed 7"
