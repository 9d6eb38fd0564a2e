"""Each part of the read path on its own, without a dataset: rows, handles, checksums, decode, raw batches, bad samples."""

from __future__ import annotations

import multiprocessing
import os
import pickle
import zlib

import numpy as np
import pytest
import torch
from PIL import Image

import torchpack
from conftest import BACKENDS, EXTENSION, save
from torchpack.bad_samples import SAME_ERROR_LIMIT, BadSamplePolicy, TransformFailed
from torchpack.errors import BadSample, BadSampleError
from torchpack.handles import ShardHandles
from torchpack.image_decode import ImageDecode
from torchpack.integrity import ChecksumGuard
from torchpack.raw_batch import RawBatchGather
from torchpack.selection import Selection
from torchpack.store import load_store_index


def test_selection_maps_indices_to_rows():
    every = Selection(None, 5, "Demo")
    assert len(every) == 5 and every.row(-1) == 4 and every.rows_of([0, -2]).tolist() == [0, 3]
    some = Selection(np.array([1, 3, 4]), 5, "Demo")
    assert len(some) == 3 and some.row(1) == 3 and some.rows_of(np.array([2, -3])).tolist() == [4, 1]
    with pytest.raises(IndexError, match="sample index 3 is out of range for Demo with 3 samples"):
        some.row(3)
    with pytest.raises(IndexError, match="sample index -4 is out of range"):
        some.rows_of([0, -4])


def _child_checks(guard: ChecksumGuard, data: bytes, queue) -> None:
    queue.put((bool(guard.view[0]), guard.passes(1, data)))


@pytest.mark.parametrize("method", ["fork", "spawn"])
def test_checksum_guard_checks_once_for_every_process(method):
    data = [b"first", b"second"]
    guard = ChecksumGuard(np.array([zlib.crc32(d) for d in data], dtype=np.uint32))
    assert guard.passes(0, data[0]) and guard.view[0] == 1
    assert not guard.passes(1, b"damaged") and guard.view[1] == 0  # a failure is never remembered
    context = multiprocessing.get_context(method)
    queue = context.Queue()
    child = context.Process(target=_child_checks, args=(guard, data[1], queue))
    child.start()
    child.join(60)
    assert queue.get(timeout=5) == (True, True)  # the child saw the parent's check ...
    assert guard.view[1] == 1  # ... and the parent sees the child's
    copy = pickle.loads(pickle.dumps(guard))  # an ordinary pickle starts over
    assert copy.view.tolist() == [0, 0]


def test_checksum_guard_can_be_turned_off_and_refuses_non_booleans():
    guard = ChecksumGuard(np.array([1], dtype=np.uint32), enabled=False)
    assert guard.passes(0, b"anything") and guard.view is None
    guard.check_batch(np.array([0]), lambda todo: [0])  # nothing is compared
    with pytest.raises(TypeError, match="`check_crc` must be True or False, got 'no'"):
        guard.enabled = "no"


def test_bad_sample_policy():
    def load(i):
        if i < 3:
            raise OSError(f"bad {i}")
        return ("sample", i)

    with pytest.raises(BadSampleError, match=r"Sample 1 \(c/1.jpg\) of demo.lmdb could not be loaded: OSError: x"):
        BadSamplePolicy("raise", "demo.lmdb").bad_sample(1, "c/1.jpg", OSError("x"), 10, load)
    skip = BadSamplePolicy("skip", "demo.lmdb")
    marker = skip.bad_sample(1, "c/1.jpg", OSError("x"), 10, load)
    assert isinstance(marker, BadSample) and marker.index == 1 and skip.skipped_count == 1
    replace = BadSamplePolicy("replace", "demo.lmdb")
    assert replace.bad_sample(0, "c/0.jpg", OSError("x"), 10, load) == ("sample", 3)
    assert replace.skipped_count == 3  # the bad one, and the two bad ones after it
    with pytest.raises(ValueError, match="`on_error` must be one of"):
        BadSamplePolicy("ignore", "demo.lmdb")


def test_a_transform_that_fails_on_every_sample_is_a_bug_not_bad_data():
    policy = BadSamplePolicy("skip", "demo.lmdb")
    for i in range(SAME_ERROR_LIMIT - 1):
        assert isinstance(policy.bad_sample(i, f"c/{i}.jpg", TransformFailed(TypeError("not callable")), 99, None), BadSample)
    with pytest.raises(BadSampleError, match=r"transforms failed with TypeError on each of the first 3 samples"):
        policy.bad_sample(9, "c/9.jpg", TransformFailed(TypeError("not callable")), 99, None)
    data_errors = BadSamplePolicy("skip", "demo.lmdb")  # bad data: any number, never raised
    for i in range(3 * SAME_ERROR_LIMIT):
        data_errors.bad_sample(i, f"c/{i}.jpg", OSError("truncated"), 99, None)
    after_good = BadSamplePolicy("skip", "demo.lmdb")
    after_good.seen_good = True  # a sample already worked: the transforms run, so failures are the data's
    for i in range(3 * SAME_ERROR_LIMIT):
        after_good.bad_sample(i, f"c/{i}.jpg", TransformFailed(ValueError("too small")), 99, None)


def _child_handles(handles: ShardHandles, length: int, queue) -> None:
    queue.put((handles.readers[0] is None, len(handles.reader(0).read(0, 0, length))))


@pytest.mark.parametrize("backend", BACKENDS)
def test_shard_handles_never_cross_a_fork_or_a_pickle(backend, small_stores):
    index = load_store_index(small_stores[backend])
    handles = ShardHandles(index.files, index.backend, index.identities)
    reader = handles.reader(0)
    assert handles.reader(0) is reader
    queue = multiprocessing.get_context("fork").Queue()
    length = int(index.lengths[0])
    child = multiprocessing.get_context("fork").Process(target=_child_handles, args=(handles, length, queue))
    child.start()
    child.join(60)
    assert queue.get(timeout=5) == (True, length)  # the child dropped the parent's reader and opened its own
    assert handles.readers[0] is reader  # the parent's is untouched
    assert pickle.loads(pickle.dumps(handles)).readers == [None]


@pytest.mark.parametrize("backend", BACKENDS)
def test_image_decode_gives_each_mode_the_same_pixels(backend, small_stores):
    index = load_store_index(small_stores[backend])
    handles = ShardHandles(index.files, index.backend, index.identities)
    row = int(np.flatnonzero(index.encoding_codes == index.encodings.index("jpeg"))[0])
    data = handles.reader(0).read(row, int(index.offsets[row]), int(index.lengths[row]))
    pil = ImageDecode("pil")(data, index, row)
    tensor = ImageDecode("tensor")(data, index, row)
    array = ImageDecode("numpy")(data, index, row)
    assert isinstance(pil, Image.Image) and tensor.shape[0] == 3
    assert np.array_equal(np.asarray(pil), array) and torch.equal(tensor.permute(1, 2, 0), torch.from_numpy(array))
    scaled = ImageDecode("numpy", 8)(data, index, row)
    assert min(scaled.shape[:2]) >= 8 and scaled.shape[0] < array.shape[0]
    with pytest.raises(ValueError, match="`decode` must be one of"):
        ImageDecode("jpeg")
    with pytest.raises(ValueError, match="`decode_size` must be"):
        ImageDecode("pil", 0)


@pytest.mark.parametrize("backend", BACKENDS)
def test_raw_batch_gather_reads_what_each_sample_reads(backend, tmp_path):
    rng = np.random.default_rng(0)
    for i in range(12):
        pixels = rng.integers(0, 255, (6, 5, 3), dtype=np.uint8)
        image = Image.fromarray(pixels[..., 0] if i % 3 == 0 else pixels)  # some gray, some RGB
        save(image, str(tmp_path / "tree" / f"c{i % 2}" / f"{i}.png"))
    store = torchpack.convert(tmp_path / "tree", tmp_path / f"raw{EXTENSION[backend]}", storage="raw", raw_compression="none", workers=0).stores[0]
    index = load_store_index(store)
    handles = ShardHandles(index.files, index.backend, index.identities)
    guard = ChecksumGuard(index.crc32)
    gather = RawBatchGather(index, handles, guard)
    rows = np.array([5, 0, 7, 3])
    shape = gather.shape(rows)
    assert shape == (6, 5, 0)  # mixed gray and RGB
    batch = gather.read(rows, shape)
    for position, row in enumerate(rows.tolist()):
        data = handles.reader(0).read(row, int(index.offsets[row]), int(index.lengths[row]))
        assert torch.equal(batch.images[position], ImageDecode("tensor")(data, index, row))
        assert int(batch.targets[position]) == int(index.targets[row])
    assert guard.view[rows].tolist() == [1, 1, 1, 1]
