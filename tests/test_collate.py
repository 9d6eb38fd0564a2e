"""``SkipBadCollate``: drops bad samples, wraps any collate, survives all-bad batches, refills, pickles."""

from __future__ import annotations

import pickle

import numpy as np
import pytest
import torch
from PIL import Image
from torch.utils.data import DataLoader, default_collate

from conftest import BACKENDS, dataset_class
from torchpack import BadSample, SkipBadCollate, StackedBatch


def sample(value: int) -> tuple[torch.Tensor, int]:
    return torch.full((2, 2), value), value


def marker(index: int) -> BadSample:
    return BadSample(index, f"class/{index}.jpg", "OSError: image file is truncated")


def count_and_stack(batch: list) -> dict:
    """A user collate (module level, so spawn and forkserver workers can unpickle it)."""
    assert not any(s is None or isinstance(s, BadSample) for s in batch)
    images, targets = default_collate(batch)
    return {"count": len(batch), "images": images, "targets": targets}


class Recorder:
    """A user collate that remembers what it was given."""

    def __init__(self) -> None:
        self.calls: list[list] = []

    def __call__(self, batch: list) -> str:
        self.calls.append(list(batch))
        return "collated"


class CountingList(list):
    """A dataset (a list) that counts reads."""

    reads = 0

    def __getitem__(self, i):
        type(self).reads += 1
        return super().__getitem__(i)


def test_drops_markers_and_none_and_collates_the_rest():
    images, targets = SkipBadCollate()([sample(1), marker(7), None, sample(3)])
    assert targets.tolist() == [1, 3]
    assert images.shape == (2, 2, 2) and images[1].eq(3).all()


def test_an_all_bad_or_empty_batch_is_none():
    with pytest.raises(IndexError):
        default_collate([])  # what an all-bad batch does without SkipBadCollate (pytorch#57429)
    collate = SkipBadCollate()
    assert collate([marker(0), None, marker(2)]) is None
    assert collate([]) is None
    recorder = Recorder()
    assert SkipBadCollate(recorder)([None, marker(1)]) is None
    assert recorder.calls == []  # the user collate never sees an empty batch


def test_wraps_a_user_collate():
    recorder = Recorder()
    good = [sample(1), sample(2)]
    assert SkipBadCollate(recorder)([good[0], marker(5), good[1], None]) == "collated"
    assert recorder.calls == [good]
    assert "Recorder" in repr(SkipBadCollate(recorder)) and "default_collate" in repr(SkipBadCollate())


def test_is_picklable_with_its_collate_and_refill_dataset():
    source = [sample(4), sample(5)]
    collate = pickle.loads(pickle.dumps(SkipBadCollate(count_and_stack, refill_from=source, max_refill_tries=3)))
    assert collate.collate_fn is count_and_stack and collate.max_refill_tries == 3
    assert collate.refill_from[0][1] == 4
    assert collate([marker(0), sample(9)])["count"] == 2
    copy = pickle.loads(pickle.dumps(marker(3)))
    assert (copy.index, copy.path, copy.error) == (3, "class/3.jpg", "OSError: image file is truncated")


def test_refill_keeps_the_batch_size():
    source = [sample(i) if i % 3 else marker(i) for i in range(12)]  # a third of the source is bad too
    collate = SkipBadCollate(refill_from=source)
    for _ in range(20):
        images, targets = collate([sample(100), marker(1), None, marker(2)])
        assert len(targets) == 4 and targets[0] == 100
        assert all(t % 3 for t in targets[1:].tolist())  # refills are good samples from the source


def test_refill_gives_up_after_bounded_tries():
    source = CountingList([marker(i) for i in range(5)] + [None])
    collate = SkipBadCollate(refill_from=source, max_refill_tries=4)
    _, targets = collate([sample(1), marker(2), marker(3)])
    assert targets.tolist() == [1]  # the smaller batch, when no good sample can be found
    assert CountingList.reads == 2 * 4
    assert collate([marker(2)]) is None
    assert SkipBadCollate(refill_from=[])([None]) is None


def test_a_stacked_batch_passes_through():
    images, targets = torch.zeros(3, 3, 4, 4, dtype=torch.uint8), torch.tensor([0, 1, 2])
    out = SkipBadCollate()(StackedBatch(images, targets))
    assert out[0] is images and out[1] is targets


class FailOnWidths:
    """A transform that raises on the given image widths, otherwise a fixed-size tensor."""

    def __init__(self, widths: set[int]) -> None:
        self.widths = widths

    def __call__(self, image: Image.Image) -> torch.Tensor:
        if image.width in self.widths:
            raise ValueError(f"refusing width {image.width}")
        return torch.from_numpy(np.asarray(image.resize((8, 8)))).permute(2, 0, 1)


@pytest.mark.parametrize("backend", BACKENDS)
def test_forkserver_workers_with_a_user_collate(backend, small_stores):
    """Python 3.14's default start method: markers are dropped in the workers and counted in the parent."""
    probe = dataset_class(backend)(small_stores[backend])
    widths = [probe[i][0].width for i in range(len(probe))]
    refused = set(sorted(set(widths))[:3])
    expected_bad = sum(w in refused for w in widths)
    assert 0 < expected_bad < len(probe)
    dataset = dataset_class(backend)(small_stores[backend], transform=FailOnWidths(refused), on_error="skip")
    loader = DataLoader(
        dataset,
        batch_size=5,
        num_workers=2,
        multiprocessing_context="forkserver",
        collate_fn=SkipBadCollate(count_and_stack),
    )
    batches = [batch for batch in loader if batch is not None]
    assert sum(batch["count"] for batch in batches) == len(dataset) - expected_bad
    assert all(batch["images"].shape[1:] == (3, 8, 8) for batch in batches)
    assert dataset.skipped_count == expected_bad
