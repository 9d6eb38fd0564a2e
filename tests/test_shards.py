"""Sharded stores: written by one call or by N independent jobs, read back as one dataset in ImageFolder order."""

from __future__ import annotations

import glob
import os
import shutil

import numpy as np
import pytest
from PIL import Image
from torchvision.datasets import ImageFolder

import torchpack
from conftest import BACKENDS, EXTENSION, dataset_class, save
from torchpack import cli
from torchpack.backends import open_reader
from torchpack.format import InvalidStoreError


def shard_files(folder) -> list[str]:
    return sorted(glob.glob(os.path.join(folder, "*")))


def store_contents(path: str) -> tuple[dict, object, list[bytes]]:
    with open_reader(path) as reader:
        header = reader.read_header()
        index = reader.read_index(header)
        spans = zip(index.column("offset").to_pylist(), index.column("length").to_pylist())
        return header, index, [bytes(reader.read(row, o, n)) for row, (o, n) in enumerate(spans)]


def assert_reads_like_imagefolder(dataset, tree: str) -> None:
    reference = ImageFolder(tree)
    assert dataset.classes == reference.classes
    assert len(dataset) == len(reference)
    expected = [(os.path.relpath(p, tree).replace(os.sep, "/"), t) for p, t in reference.samples]
    assert [(dataset.relative_path(i), dataset.targets[i]) for i in range(len(dataset))] == expected
    for i in range(len(dataset)):
        image, target = dataset[i]
        assert target == reference.targets[i]
        assert np.array_equal(np.asarray(image), np.asarray(reference[i][0])), dataset.relative_path(i)


@pytest.mark.parametrize("backend", BACKENDS)
def test_num_shards_read_as_one_dataset_from_a_list_a_glob_or_a_folder(backend, small_tree, tmp_path):
    folder = tmp_path / "shards"
    folder.mkdir()
    result = torchpack.convert(small_tree, folder / f"train{EXTENSION[backend]}", workers=0, num_shards=3)
    files = shard_files(folder)
    assert [os.path.basename(f) for f in files] == [f"train-0000{i}-of-00003{EXTENSION[backend]}" for i in range(3)]
    assert result.stores == files and result.num_samples == 24
    sizes = [store_contents(f)[0]["num_samples"] for f in files]
    assert sizes == [8, 8, 8]
    for root in (list(reversed(files)), str(folder / f"train-*{EXTENSION[backend]}"), str(folder)):
        assert_reads_like_imagefolder(dataset_class(backend)(root), small_tree)
    assert torchpack.store_info(str(folder))["shards"] == 3
    assert torchpack.verify_store(str(folder), decode=True).ok


@pytest.mark.parametrize("backend", BACKENDS)
def test_independent_shard_jobs_write_the_shards_of_one_call(backend, small_tree, tmp_path):
    one_call, jobs = tmp_path / "one_call", tmp_path / "jobs"
    one_call.mkdir()
    jobs.mkdir()
    ext = EXTENSION[backend]
    torchpack.convert(small_tree, one_call / f"t{ext}", workers=0, num_shards=4)
    for i in reversed(range(4)):  # jobs finish in any order
        code = cli.main(["convert", small_tree, str(jobs / f"t{ext}"), "--num-shards", "4", "--shard-index", str(i),
                         "--workers", "0", "--quiet"])
        assert code == 0
    assert [os.path.basename(f) for f in shard_files(jobs)] == [os.path.basename(f) for f in shard_files(one_call)]
    for mine, theirs in zip(shard_files(jobs), shard_files(one_call)):
        header, index, samples = store_contents(mine)
        expected = store_contents(theirs)
        assert header == expected[0] and index.equals(expected[1]) and samples == expected[2]
        assert header["shard"]["count"] == 4 and header["classes"] == ["class0", "class1", "class2"]
    assert_reads_like_imagefolder(dataset_class(backend)(str(jobs)), small_tree)


@pytest.mark.parametrize("backend", BACKENDS)
def test_shard_size(backend, small_tree, tmp_path):
    folder = tmp_path / "shards"
    folder.mkdir()
    assert cli.main(["convert", small_tree, str(folder / f"t{EXTENSION[backend]}"), "--shard-size", "10",
                     "--workers", "0", "--quiet"]) == 0
    files = shard_files(folder)
    assert [store_contents(f)[0]["num_samples"] for f in files] == [10, 10, 4]
    assert_reads_like_imagefolder(dataset_class(backend)(files), small_tree)


@pytest.fixture(scope="module")
def sharded(small_tree, tmp_path_factory) -> dict[str, list[str]]:
    """Three shards per backend (read-only)."""
    out = {}
    for backend in BACKENDS:
        folder = tmp_path_factory.mktemp(f"sharded_{backend}")
        out[backend] = torchpack.convert(small_tree, folder / f"t{EXTENSION[backend]}", workers=0, num_shards=3).stores
    return out


@pytest.mark.parametrize("backend", BACKENDS)
def test_missing_shard_is_a_clear_error(backend, sharded, tmp_path):
    files = sharded[backend]
    with pytest.raises(InvalidStoreError, match=r"Missing shards \[1\] of 3"):
        dataset_class(backend)([files[0], files[2]])
    folder = tmp_path / "incomplete"
    folder.mkdir()
    for f in (files[0], files[1]):
        shutil.copy(f, folder)
    with pytest.raises(InvalidStoreError, match=r"Missing shards \[2\] of 3"):
        dataset_class(backend)(str(folder))
    with pytest.raises(InvalidStoreError, match="is shard 1 of 3; open all shards"):
        dataset_class(backend)(files[1])
    report = torchpack.verify_store(str(folder))
    assert not report.ok and "Missing shards" in report.problems[0]["problem"]


@pytest.mark.parametrize("backend", BACKENDS)
def test_duplicated_shard_is_a_clear_error(backend, sharded, tmp_path):
    files = sharded[backend]
    with pytest.raises(InvalidStoreError, match="Duplicated shards"):
        dataset_class(backend)([*files, files[1]])
    folder = tmp_path / "copied"
    folder.mkdir()
    for f in files:
        shutil.copy(f, folder)
    shutil.copy(files[0], folder / f"copy of shard 0{EXTENSION[backend]}")
    with pytest.raises(InvalidStoreError, match="Duplicated shards"):
        dataset_class(backend)(str(folder))


@pytest.mark.parametrize("backend", BACKENDS)
def test_shards_of_different_trees_are_refused(backend, small_tree, sharded, tmp_path):
    other_tree = str(tmp_path / "other")
    shutil.copytree(small_tree, other_tree)
    save(Image.new("RGB", (16, 16), "red"), f"{other_tree}/class2/extra.png")
    folder = tmp_path / "other_shards"
    folder.mkdir()
    other = torchpack.convert(other_tree, folder / f"t{EXTENSION[backend]}", workers=0, num_shards=3).stores
    with pytest.raises(InvalidStoreError, match="belongs to another conversion"):
        dataset_class(backend)([sharded[backend][0], other[1], sharded[backend][2]])
