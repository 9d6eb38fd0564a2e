"""The converter: backends, overwriting, map growth, crash safety, no pickle, size, errors, storage modes."""

from __future__ import annotations

import json
import os
import re
import shutil
import signal
import subprocess
import sys
import time

import h5py
import lmdb
import numpy as np
import pyarrow as pa
import pytest
from PIL import Image
from torchvision.datasets import ImageFolder

import torchpack
from conftest import BACKENDS, EXTENSION, dataset_class, photo_like, save, store_contents
from torchpack.backends import detect_backend, writer_class
from torchpack.backends.hdf5 import DATA, HEADER, INDEX
from torchpack.backends.lmdb import HEADER_KEY, INDEX_KEY
from torchpack.format import INDEX_SCHEMA, InvalidStoreError, UnsupportedVersionError, encode_header


def tree_files(root) -> dict[str, bytes]:
    """Every image file of an ImageFolder tree, by "/"-separated relative path."""
    return {
        os.path.relpath(path, root).replace(os.sep, "/"): open(path, "rb").read()
        for path, _ in ImageFolder(root, allow_empty=True).samples
    }


def assert_store_matches_tree(path, root) -> None:
    """The store holds every file of the tree, untouched, in ImageFolder order."""
    header, rows, data = store_contents(path)
    files = tree_files(root)
    assert [row["path"] for row in rows] == list(files)
    assert data == list(files.values())
    assert header["num_samples"] == len(files)


def allocated(path) -> int:
    return os.stat(path).st_blocks * 512


@pytest.fixture(scope="module")
def big_tree(tmp_path_factory) -> str:
    """Ten noisy 480x360 JPEGs at quality 95: about 2 MB, far more than a 64 KiB map."""
    root = str(tmp_path_factory.mktemp("big") / "tree")
    rng = np.random.default_rng(2)
    for i in range(10):
        pixels = rng.integers(0, 256, (360, 480, 3), dtype=np.uint8)
        save(Image.fromarray(pixels), f"{root}/class{i % 2}/{i}.jpg", quality=95)
    return root


# -- backend selection and overwriting -------------------------------------------------------


@pytest.mark.parametrize("backend", BACKENDS)
def test_backend_from_extension_and_from_argument(backend, small_tree, tmp_path):
    by_extension = torchpack.convert(small_tree, tmp_path / f"a{EXTENSION[backend]}", workers=0).stores[0]
    by_argument = torchpack.convert(small_tree, tmp_path / "b.store", backend=backend, workers=0).stores[0]
    assert detect_backend(by_extension) == detect_backend(by_argument) == backend
    assert store_contents(by_argument)[1:] == store_contents(by_extension)[1:]
    assert len(dataset_class(backend)(by_argument)) == 24
    with pytest.raises(ValueError, match="`backend`"):
        torchpack.convert(small_tree, tmp_path / "c.bin", workers=0)
    with pytest.raises(ValueError, match="`backend`"):
        torchpack.convert(small_tree, tmp_path / f"c{EXTENSION[backend]}", backend="zip", workers=0)
    assert not os.path.exists(tmp_path / "c.bin") and not os.path.exists(tmp_path / f"c{EXTENSION[backend]}")


@pytest.mark.parametrize("backend", BACKENDS)
def test_refuses_to_overwrite_unless_asked(backend, small_tree, tmp_path):
    dst = str(tmp_path / f"store{EXTENSION[backend]}")
    torchpack.convert(small_tree, dst, workers=0)
    old = dataset_class(backend)(dst)
    old_image = old[0][0]  # this process now holds a handle on the first store
    assert old.header["storage"]["mode"] == "encoded"
    before = open(dst, "rb").read()
    with pytest.raises(FileExistsError, match=re.escape(dst)):
        torchpack.convert(small_tree, dst, workers=0, storage="reencode")
    assert open(dst, "rb").read() == before
    torchpack.convert(small_tree, dst, workers=0, storage="reencode", short_side=20, overwrite=True)
    dataset = dataset_class(backend)(dst)
    assert dataset.header["storage"]["mode"] == "reencode"
    assert min(dataset[0][0].size) == 20
    assert not os.path.exists(dst + ".partial")
    # A dataset made before the overwrite still reads the store it was made on...
    assert np.array_equal(np.asarray(old[0][0]), np.asarray(old_image))
    # ...or, where no handle on that store is left, says it was replaced (never mixes the two).
    other = str(tmp_path / f"other{EXTENSION[backend]}")
    torchpack.convert(small_tree, other, workers=0)
    unread = dataset_class(backend)(other)
    torchpack.convert(small_tree, other, workers=0, storage="reencode", overwrite=True)
    with pytest.raises(torchpack.BadSampleError, match="was replaced after this dataset was created"):
        unread[0]


@pytest.mark.parametrize("backend", BACKENDS)
def test_map_grows_from_a_tiny_initial_map(backend, big_tree, tmp_path):
    dst = tmp_path / f"big{EXTENSION[backend]}"
    source_bytes = sum(len(data) for data in tree_files(big_tree).values())
    assert source_bytes > 30 * (64 << 10)
    result = torchpack.convert(big_tree, dst, workers=0, initial_map_size=64 << 10, commit_every=2)
    assert result.num_samples == 10 and result.bytes_in == source_bytes
    assert os.path.getsize(dst) > source_bytes
    assert_store_matches_tree(dst, big_tree)
    if backend == "lmdb":
        with lmdb.open(str(dst), subdir=False, readonly=True, lock=False) as env:
            assert env.info()["map_size"] >= source_bytes


# -- crash safety ---------------------------------------------------------------------------


def fail_on_call(monkeypatch, cls, name: str, call: int) -> None:
    """Make ``cls.name`` raise on its ``call``-th use, after doing its real work."""
    real = getattr(cls, name)
    calls = []

    def failing(self, *args, **kwargs):
        result = real(self, *args, **kwargs)
        calls.append(1)
        if len(calls) == call:
            raise OSError("simulated crash")
        return result

    monkeypatch.setattr(cls, name, failing)


def assert_resumes_to_the_same_store(backend, tree, dst, tmp_path, resumed_from=None) -> torchpack.ConvertResult:
    dst = str(dst)
    assert not os.path.exists(dst)
    assert os.path.isdir(dst + ".partial")
    with pytest.raises(FileExistsError, match="resume"):
        torchpack.convert(tree, dst, workers=0)
    result = torchpack.convert(tree, dst, workers=0, resume=True, commit_every=5)
    if resumed_from is not None:
        assert result.resumed_from == resumed_from
    assert not os.path.exists(dst + ".partial")
    reference = torchpack.convert(tree, tmp_path / f"reference{EXTENSION[backend]}", workers=0)
    assert result.num_samples == reference.num_samples == 24
    assert store_contents(dst) == store_contents(reference.stores[0])
    assert_store_matches_tree(dst, tree)
    return result


@pytest.mark.parametrize("backend", BACKENDS)
def test_crash_between_commits_leaves_nothing_and_resumes(backend, small_tree, tmp_path, monkeypatch):
    dst = tmp_path / f"store{EXTENSION[backend]}"
    with monkeypatch.context() as patch:
        # The third commit makes its samples durable in the backend, then "crashes" before the
        # journal records them: resuming must drop them and redo them.
        fail_on_call(patch, writer_class(backend), "commit", 3)
        with pytest.raises(OSError, match="simulated crash"):
            torchpack.convert(small_tree, dst, workers=0, commit_every=5)
    assert_resumes_to_the_same_store(backend, small_tree, dst, tmp_path, resumed_from=10)


@pytest.mark.parametrize("backend", BACKENDS)
def test_failed_finish_leaves_nothing_and_resumes(backend, small_tree, tmp_path, monkeypatch):
    dst = tmp_path / f"store{EXTENSION[backend]}"
    with monkeypatch.context() as patch:
        fail_on_call(patch, writer_class(backend), "finish", 1)
        with pytest.raises(OSError, match="simulated crash"):
            torchpack.convert(small_tree, dst, workers=0, commit_every=5)
    assert_resumes_to_the_same_store(backend, small_tree, dst, tmp_path, resumed_from=24)


_SLOW_CONVERT = """
import importlib, sys, time
ingest_pool = importlib.import_module("torchpack.ingest_pool")

real = ingest_pool.ingest_files

def slow(paths, options):
    time.sleep(0.5)
    return real(paths, options)

ingest_pool.ingest_files = slow
import torchpack
torchpack.convert(sys.argv[1], sys.argv[2], workers=0, commit_every=2)
print("finished")
"""


@pytest.mark.parametrize("backend", BACKENDS)
def test_killed_conversion_leaves_nothing_and_resumes(backend, small_tree, tmp_path):
    dst = str(tmp_path / f"store{EXTENSION[backend]}")
    journal = os.path.join(dst + ".partial", "journal.jsonl")
    proc = subprocess.Popen([sys.executable, "-c", _SLOW_CONVERT, small_tree, dst], stdout=subprocess.PIPE)
    try:
        deadline = time.monotonic() + 120
        while time.monotonic() < deadline and proc.poll() is None:
            if os.path.exists(journal) and open(journal, "rb").read().count(b"\n") >= 3:
                break
            time.sleep(0.05)
        assert proc.poll() is None, "the conversion ended before it could be killed"
        proc.send_signal(signal.SIGKILL)
        proc.wait(30)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
    assert proc.returncode == -signal.SIGKILL
    result = assert_resumes_to_the_same_store(backend, small_tree, dst, tmp_path)
    assert 6 <= result.resumed_from < 24  # at least the three journaled commits of two files


# -- what is inside a store -----------------------------------------------------------------

_PICKLE_MARKERS = (b"\x80\x04\x95", b"\x80\x05\x95", b"\x80\x02", b"cbuiltins", b"c__builtin__")
# Two bytes also occur by chance in a file's own structures (0x0280 is the number 640).
_LONG_PICKLE_MARKERS = tuple(marker for marker in _PICKLE_MARKERS if len(marker) > 2)


def raw_payloads(path: str, backend: str) -> tuple[bytes, bytes, list[bytes]]:
    """Header, index and every other value the store holds, read with the backend's own library."""
    if backend == "lmdb":
        with lmdb.open(path, subdir=False, readonly=True, lock=False) as env, env.begin() as txn:
            values = dict(txn.cursor())
        header, index = values.pop(HEADER_KEY), values.pop(INDEX_KEY)
        assert list(values) == [row.to_bytes(8, "big") for row in range(len(values))]
        return header, index, list(values.values())
    with h5py.File(path, "r") as f:
        names = []
        f.visit(names.append)
        assert sorted(names) == ["torchpack", DATA, HEADER, INDEX]
        assert all(f[name].dtype == np.uint8 and f[name].ndim == 1 for name in (DATA, HEADER, INDEX))
        assert not any(len(f[name].attrs) for name in names) and not len(f.attrs)
        return f[HEADER][()].tobytes(), f[INDEX][()].tobytes(), [f[DATA][()].tobytes()]


@pytest.mark.parametrize("backend", BACKENDS)
def test_no_pickle_inside_a_store(backend, stores, parity_tree, tmp_path):
    # A copy: py-lmdb refuses to open a file this process may already hold open.
    path = str(tmp_path / os.path.basename(stores[backend]))
    shutil.copyfile(stores[backend], path)
    header, index, data = raw_payloads(path, backend)
    # Everything the store holds: the source files untouched, a JSON header, an Arrow index.
    files = list(tree_files(parity_tree).values())
    assert data == (files if backend == "lmdb" else [b"".join(files)])
    assert json.loads(header.decode("utf-8"))["format"] == "torchpack"
    table = pa.ipc.open_stream(pa.py_buffer(index)).read_all()
    assert table.schema.equals(INDEX_SCHEMA) and table.num_rows == len(files) == 11
    for marker in _PICKLE_MARKERS:
        assert marker not in header and marker not in index, marker
    # And byte by byte: no pickle stream anywhere in the file outside the source files' bytes.
    rest = open(path, "rb").read()
    for sample in files:
        assert sample in rest
        rest = rest.replace(sample, b"\0")
    for marker in _LONG_PICKLE_MARKERS:
        assert marker not in rest, marker


@pytest.fixture(scope="module")
def jpeg_tree(tmp_path_factory) -> str:
    """30 photo-like JPEGs in three classes."""
    root = str(tmp_path_factory.mktemp("jpegs") / "tree")
    rng = np.random.default_rng(3)
    for i in range(30):
        size = (int(rng.integers(100, 220)), int(rng.integers(100, 220)))
        save(Image.fromarray(photo_like(rng, *size)), f"{root}/class{i % 3}/{i:02d}.jpg", quality=90)
    return root


@pytest.mark.parametrize("backend", BACKENDS)
def test_store_is_no_larger_on_disk_than_the_tree(backend, jpeg_tree, tmp_path):
    tree_allocated = 0
    for folder, _, files in os.walk(jpeg_tree):
        tree_allocated += allocated(folder) + sum(allocated(os.path.join(folder, name)) for name in files)
    dst = torchpack.convert(jpeg_tree, tmp_path / f"jpegs{EXTENSION[backend]}", workers=0).stores[0]
    assert_store_matches_tree(dst, jpeg_tree)
    assert 0 < allocated(dst) <= tree_allocated


# -- errors ---------------------------------------------------------------------------------


@pytest.mark.parametrize("backend", BACKENDS)
def test_clear_errors_for_bad_sources_and_destinations(backend, small_tree, tmp_path):
    ext = EXTENSION[backend]
    missing = str(tmp_path / "missing")
    with pytest.raises(FileNotFoundError, match=re.escape(missing)):
        torchpack.convert(missing, tmp_path / f"a{ext}", workers=0)
    flat = tmp_path / "flat"
    save(Image.new("RGB", (8, 8)), str(flat / "lonely.jpg"))
    with pytest.raises(FileNotFoundError, match=f"class folder.*{re.escape(str(flat))}"):
        torchpack.convert(flat, tmp_path / f"b{ext}", workers=0)
    no_folder = tmp_path / "no" / "such" / "folder"
    with pytest.raises(FileNotFoundError, match=re.escape(str(no_folder))):
        torchpack.convert(small_tree, no_folder / f"c{ext}", workers=0)
    assert sorted(os.listdir(tmp_path)) == ["flat"]


@pytest.mark.parametrize("backend", BACKENDS)
def test_clear_errors_for_missing_and_foreign_files(backend, tmp_path):
    cls = dataset_class(backend)
    missing = str(tmp_path / f"missing{EXTENSION[backend]}")
    with pytest.raises(FileNotFoundError, match=re.escape(missing)):
        cls(missing)
    text = tmp_path / f"text{EXTENSION[backend]}"
    text.write_text("this is not a store\n" * 100)
    with pytest.raises(InvalidStoreError, match=re.escape(str(text))):
        cls(text)
    foreign = str(tmp_path / f"foreign{EXTENSION[backend]}")
    if backend == "lmdb":
        with lmdb.open(foreign, subdir=False, map_size=1 << 20) as env, env.begin(write=True) as txn:
            txn.put(b"key", b"value")
    else:
        with h5py.File(foreign, "w") as f:
            f.create_dataset("images", data=np.zeros(10, dtype=np.uint8))
    with pytest.raises(InvalidStoreError, match="not a torchpack store"):
        cls(foreign)


def rewrite_header(path: str, backend: str, header: dict) -> None:
    """Replace a store's header in place, with the backend's own library."""
    if backend == "lmdb":
        with lmdb.open(path, subdir=False, map_size=64 << 20) as env, env.begin(write=True) as txn:
            txn.put(HEADER_KEY, encode_header(header))
    else:
        with h5py.File(path, "a") as f:
            del f[HEADER]
            f.create_dataset(HEADER, data=np.frombuffer(encode_header(header), dtype=np.uint8))


@pytest.mark.parametrize("backend", BACKENDS)
def test_unknown_format_version(backend, small_stores, tmp_path):
    path = str(tmp_path / f"future{EXTENSION[backend]}")
    shutil.copyfile(small_stores[backend], path)
    header = store_contents(path)[0]
    rewrite_header(path, backend, {**header, "format_version": "99.0"})
    with pytest.raises(UnsupportedVersionError, match=r"99\.0.*upgrade torchpack"):
        dataset_class(backend)(path)
    rewrite_header(path, backend, {**header, "format_version": "2.7"})  # a newer minor version still reads
    assert len(dataset_class(backend)(path)) == 24


@pytest.mark.parametrize("backend", BACKENDS)
def test_opening_a_store_with_the_other_dataset_class(backend, small_stores):
    other = "hdf5" if backend == "lmdb" else "lmdb"
    wanted = {"lmdb": "LMDBImageFolder", "hdf5": "HDF5ImageFolder"}[backend]
    with pytest.raises(InvalidStoreError, match=f"{re.escape(small_stores[backend])}.*{wanted}"):
        dataset_class(other)(small_stores[backend])


# -- worker processes and storage modes -----------------------------------------------------


@pytest.mark.parametrize("backend", BACKENDS)
def test_worker_processes_give_the_same_store(backend, small_tree, tmp_path):
    inline = torchpack.convert(small_tree, tmp_path / f"inline{EXTENSION[backend]}", workers=0)
    pooled = torchpack.convert(small_tree, tmp_path / f"pooled{EXTENSION[backend]}", workers=2, commit_every=7)
    assert store_contents(pooled.stores[0]) == store_contents(inline.stores[0])
    assert_store_matches_tree(pooled.stores[0], small_tree)


@pytest.mark.parametrize("backend", BACKENDS)
def test_reencode_caps_the_short_side(backend, small_tree, tmp_path):
    dst = torchpack.convert(
        small_tree, tmp_path / f"re{EXTENSION[backend]}", workers=0, storage="reencode", short_side=32
    ).stores[0]
    reference = ImageFolder(small_tree)
    dataset = dataset_class(backend)(dst)
    _, rows, data = store_contents(dst)
    assert [row["encoding"] for row in rows] == ["jpeg"] * 24 and all(d[:3] == b"\xff\xd8\xff" for d in data)
    for i, (expected, _) in enumerate(reference):
        image, target = dataset[i]
        assert target == reference.targets[i] and image.mode == "RGB"
        assert min(image.size) == 32 and (image.size[0] >= image.size[1]) == (expected.size[0] >= expected.size[1])
        assert (rows[i]["width"], rows[i]["height"]) == image.size


@pytest.mark.parametrize("backend", BACKENDS)
@pytest.mark.parametrize("compression", ["lz4", "none"])
def test_raw_storage_is_pixel_identical(backend, compression, small_tree, tmp_path):
    dst = torchpack.convert(
        small_tree, tmp_path / f"raw{EXTENSION[backend]}", workers=0, storage="raw", raw_compression=compression
    ).stores[0]
    reference = ImageFolder(small_tree)
    dataset = dataset_class(backend)(dst)
    assert dataset.header["storage"]["raw_compression"] == compression
    _, rows, _ = store_contents(dst)
    for i, (expected, expected_target) in enumerate(reference):
        image, target = dataset[i]
        assert target == expected_target and image.mode == "RGB"
        assert np.array_equal(np.asarray(image), np.asarray(expected))
        if compression == "none":
            assert rows[i]["length"] == expected.size[0] * expected.size[1] * 3
    capped = torchpack.convert(
        small_tree, tmp_path / f"raw32{EXTENSION[backend]}", workers=0, storage="raw",
        raw_compression=compression, short_side=32,
    ).stores[0]
    assert all(min(image.size) == 32 for image, _ in dataset_class(backend)(capped))
