"""Every backend passes the same tests, through the registry: LMDB, HDF5, and a test-only in-memory backend.

The in-memory backend (``memory_backend.py``) is one module plus one registry line: the
converter, the datasets, ``info`` and ``verify`` all work on it unchanged.
"""

from __future__ import annotations

import ast
import os
import pathlib

import numpy as np
import pytest
import torch
from torch.utils.data import DataLoader
from torchvision.datasets import ImageFolder
from torchvision.transforms.functional import pil_to_tensor

import torchpack
from torchpack.backends import backend_for_destination, detect_backend, get_backend, open_reader, register_backend, writer_class
from torchpack.format import InvalidStoreError, encode_header, encode_index

EXTENSIONS = {"lmdb": ".lmdb", "hdf5": ".h5", "memory": ".mem"}
ALL_BACKENDS = list(EXTENSIONS)


@pytest.fixture(autouse=True, scope="module")
def memory_backend():
    register_backend("memory", "memory_backend")  # the one registry line
    yield
    from torchpack import backends

    backends._MODULES.pop("memory")
    backends._loaded.pop("memory", None)


def staged_store(backend: str, folder: pathlib.Path, samples: list[bytes]) -> str:
    """Write ``samples`` through the backend's writer with a crash-and-resume in the middle; returns the finished file."""
    from torchpack.shard_conversion import _index_table

    folder.mkdir()
    writer = writer_class(backend)(str(folder))
    for row, data in enumerate(samples[:3]):
        writer.append(row, data)
    committed = writer.commit()
    writer.append(3, b"never committed")  # lost to the "crash"
    writer.abort()
    writer = writer_class(backend)(str(folder))
    writer.truncate(3, committed)
    offset, rows = committed, []
    for row, data in enumerate(samples[3:], start=3):
        writer.append(row, data)
    writer.commit()
    offset = 0
    for i, data in enumerate(samples):
        rows.append((f"c/{i}.bin", 0, offset, len(data), __import__("zlib").crc32(data), "unknown", "", 0, 0, 0))
        offset += len(data)
    header = {
        "format": "torchpack", "format_version": "2.0", "backend": backend, "classes": ["c"], "class_to_idx": {"c": 0},
        "num_samples": len(samples), "storage": {"mode": "encoded"}, "shard": {"index": 0, "count": 1},
    }
    index = encode_index(_index_table(rows))
    return writer.finish(encode_header(header, index), index, offset)


@pytest.mark.parametrize("backend", ALL_BACKENDS)
def test_writer_and_reader_round_trip_through_the_registry(backend, tmp_path):
    samples = [bytes([i]) * (10 + i) for i in range(6)]
    path = staged_store(backend, tmp_path / "staging", samples)
    assert detect_backend(path) == backend
    with open_reader(path, backend) as reader:
        header = reader.read_header()
        index = reader.read_index(header)
        assert index.num_rows == len(samples)
        offsets, lengths = index.column("offset").to_pylist(), index.column("length").to_pylist()
        got = [bytes(reader.read(row, offsets[row], lengths[row])) for row in range(len(samples))]
        batch = [bytes(b) for b in reader.read_batch(np.arange(6), np.array(offsets), np.array(lengths))]
    assert got == samples and batch == samples


@pytest.mark.parametrize("backend", ALL_BACKENDS)
def test_convert_and_read_as_imagefolder(backend, small_tree, tmp_path):
    dst = str(tmp_path / f"store{EXTENSIONS[backend]}")
    assert backend_for_destination(dst, None) == backend
    result = torchpack.convert(small_tree, dst, workers=0)
    dataset = torchpack.StoreImageFolder(dst, decode="tensor")
    reference = ImageFolder(small_tree)
    assert len(dataset) == len(reference) == result.num_samples
    for i in (0, len(dataset) // 2, len(dataset) - 1):
        image, target = dataset[i]
        assert torch.equal(image, pil_to_tensor(reference[i][0])) and target == reference[i][1]
    assert torchpack.verify_store(dst, decode=True).ok
    assert torchpack.store_info(dst)["backend"] == backend


@pytest.mark.parametrize("backend", ALL_BACKENDS)
def test_forked_workers_read_every_sample_once(backend, small_tree, tmp_path):
    dst = str(tmp_path / f"store{EXTENSIONS[backend]}")
    torchpack.convert(small_tree, dst, workers=0)
    dataset = torchpack.StoreImageFolder(dst, decode="tensor", transform=lambda image: image[:, :8, :8])
    dataset.open_handles()  # the parent holds readers: forked workers must drop them and open their own
    loader = DataLoader(dataset, batch_size=5, num_workers=2, multiprocessing_context="fork")
    targets = torch.cat([batch[1] for batch in loader])
    assert sorted(targets.tolist()) == sorted(dataset.targets)


def test_a_store_of_another_backend_names_the_class_that_reads_it(small_stores):
    with pytest.raises(InvalidStoreError, match=r"is a torchpack LMDB store, not an HDF5 one.*Open it with LMDBImageFolder, or StoreImageFolder"):
        torchpack.HDF5ImageFolder(small_stores["lmdb"])
    with pytest.raises(InvalidStoreError, match=r"Open it with HDF5DatasetFolder, or StoreDatasetFolder"):
        torchpack.LMDBDatasetFolder(small_stores["hdf5"], loader=bytes, extensions=(".jpg", ".png"))


def test_an_unknown_backend_lists_the_known_ones(small_tree, tmp_path):
    with pytest.raises(ValueError, match=r"`backend` must be one of \('lmdb', 'hdf5', 'memory'\), got 'zarr'"):
        get_backend("zarr")
    with pytest.raises(ValueError, match="must be one of"):
        torchpack.convert(small_tree, tmp_path / "x.lmdb", backend="zarr", workers=0)
    with pytest.raises(ValueError, match=r"Cannot tell the backend.*\.mem"):
        torchpack.convert(small_tree, tmp_path / "x.zarr", workers=0)


def test_image_folders_are_their_backends_dataset_folders(small_stores):
    for backend, image_class, folder_class in (
        ("lmdb", torchpack.LMDBImageFolder, torchpack.LMDBDatasetFolder),
        ("hdf5", torchpack.HDF5ImageFolder, torchpack.HDF5DatasetFolder),
    ):
        dataset = image_class(small_stores[backend])
        for cls in (folder_class, torchpack.StoreImageFolder, torchpack.StoreDatasetFolder):
            assert isinstance(dataset, cls)
        from torchvision.datasets import DatasetFolder

        assert isinstance(dataset, ImageFolder) and isinstance(dataset, DatasetFolder)
        other = torchpack.LMDBDatasetFolder if folder_class is torchpack.HDF5DatasetFolder else torchpack.HDF5DatasetFolder
        assert not isinstance(dataset, other)
        assert [c.__name__ for c in type(dataset).__mro__[:3]] == [image_class.__name__, "StoreImageFolder", "StoreDatasetFolder"]


def test_no_backend_comparison_outside_the_backends_package():
    """A backend plugs in through the registry: nothing else may branch on a backend's name."""
    package = pathlib.Path(torchpack.__file__).parent
    offenders = []
    for path in package.rglob("*.py"):
        if "backends" in path.relative_to(package).parts:
            continue
        for node in ast.walk(ast.parse(path.read_text())):
            if isinstance(node, ast.Compare):
                names = [c.value for c in [node.left, *node.comparators] if isinstance(c, ast.Constant)]
                if any(name in ("lmdb", "hdf5") for name in names):
                    offenders.append(f"{path.name}:{node.lineno}")
    assert offenders == []


def test_no_module_over_400_lines_and_no_class_over_250():
    package = pathlib.Path(torchpack.__file__).parent
    for path in package.rglob("*.py"):
        source = path.read_text()
        assert len(source.splitlines()) <= 400, path
        for node in ast.walk(ast.parse(source)):
            if isinstance(node, ast.ClassDef):
                assert node.end_lineno - node.lineno < 250, f"{path.name}: {node.name}"
