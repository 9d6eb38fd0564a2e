"""The datasets in the torchvision/PyTorch ecosystem (transforms v2, Subset, ConcatDataset, random_split,
repr), and the ``torchpack`` command as scripts use it (``--json``, exit codes, a crafted store for ``export``)."""

from __future__ import annotations

import json
import os
import subprocess
import sys

import h5py
import lmdb
import numpy as np
import pyarrow as pa
import pytest
import torch
from PIL import Image
from torch.utils.data import ConcatDataset, DataLoader, Subset, random_split
from torchvision import tv_tensors
from torchvision.datasets import ImageFolder, wrap_dataset_for_transforms_v2
from torchvision.transforms import v2

import torchpack
from conftest import BACKENDS, EXTENSION, damage_sample, dataset_class, photo_like, save
from torchpack.backends.hdf5 import HEADER, INDEX
from torchpack.backends.lmdb import HEADER_KEY, INDEX_KEY
from torchpack.cli import main
from torchpack.format import encode_header, encode_index


def pixels(image) -> np.ndarray:
    return np.asarray(image) if isinstance(image, Image.Image) else image.permute(1, 2, 0).numpy()


# -- transforms v2 ------------------------------------------------------------------------------


@pytest.mark.parametrize("backend", BACKENDS)
def test_wrap_dataset_for_transforms_v2_with_pil_output(backend, small_tree, small_stores):
    tf = v2.Compose([v2.Resize(40), v2.CenterCrop(32), v2.ToImage(), v2.ToDtype(torch.float32, scale=True)])
    reference = wrap_dataset_for_transforms_v2(ImageFolder(small_tree, transform=tf))
    wrapped = wrap_dataset_for_transforms_v2(dataset_class(backend)(small_stores[backend], transform=tf))
    assert len(wrapped) == len(reference) == 24
    for i in (0, 7, 23):
        image, target = wrapped[i]
        expected, expected_target = reference[i]
        assert isinstance(image, tv_tensors.Image) and image.shape == (3, 32, 32) and image.dtype == torch.float32
        assert target == expected_target and torch.equal(image, expected)


@pytest.mark.parametrize("backend", BACKENDS)
def test_v2_transforms_on_tensor_output_match_imagefolder(backend, small_tree, small_stores):
    crop = v2.CenterCrop(24)  # exact on both paths, so pixels can be compared
    reference = ImageFolder(small_tree, transform=v2.Compose([v2.PILToTensor(), crop]))
    dataset = dataset_class(backend)(small_stores[backend], decode="tensor", transform=crop)
    wrapped = wrap_dataset_for_transforms_v2(dataset)
    for i in range(len(reference)):
        image, target = wrapped[i]
        assert image.dtype == torch.uint8 and torch.equal(image, reference[i][0]) and target == reference[i][1]


@pytest.mark.parametrize("backend", BACKENDS)
@pytest.mark.parametrize("threads", [1, 2])
def test_random_v2_pipeline_on_tensors_through_worker_processes(backend, threads, small_stores):
    tf = v2.Compose(
        [
            v2.RandomResizedCrop(32, antialias=True),
            v2.RandomHorizontalFlip(),
            v2.ToDtype(torch.float32, scale=True),
            v2.Normalize((0.5, 0.5, 0.5), (0.25, 0.25, 0.25)),
        ]
    )
    dataset = wrap_dataset_for_transforms_v2(dataset_class(backend)(small_stores[backend], decode="tensor", transform=tf, threads=threads))
    loader = DataLoader(dataset, batch_size=8, num_workers=2, collate_fn=torchpack.SkipBadCollate())
    batches = list(loader)
    images = torch.cat([images for images, _ in batches])
    targets = torch.cat([targets for _, targets in batches])
    assert images.shape == (24, 3, 32, 32) and images.dtype == torch.float32 and torch.isfinite(images).all()
    assert targets.tolist() == list(dataset_class(backend)(small_stores[backend]).targets)


# -- Subset, ConcatDataset, random_split ---------------------------------------------------------


@pytest.mark.parametrize("backend", BACKENDS)
def test_subset_returns_the_datasets_samples(backend, small_stores):
    dataset = dataset_class(backend)(small_stores[backend])
    subset = Subset(dataset, [5, 0, 23, 5])
    assert len(subset) == 4
    for position, i in enumerate([5, 0, 23, 5]):
        image, target = subset[position]
        assert target == dataset.targets[i] and np.array_equal(pixels(image), pixels(dataset[i][0]))
    assert [t for _, t in subset.__getitems__([1, 2])] == [dataset.targets[0], dataset.targets[23]]


@pytest.mark.parametrize("backend", BACKENDS)
def test_concat_dataset_of_two_views_of_one_store(backend, small_stores):
    as_pil = dataset_class(backend)(small_stores[backend], transform=v2.PILToTensor())
    as_tensor = dataset_class(backend)(small_stores[backend], decode="tensor")
    both = ConcatDataset([as_pil, as_tensor])
    n = len(as_pil)
    assert len(both) == 2 * n and both.cumulative_sizes == [n, 2 * n]
    for i in (0, 11, n - 1):
        assert torch.equal(both[i][0], both[n + i][0]) and both[i][1] == both[n + i][1]
    crop = v2.Compose([v2.Resize(24), v2.CenterCrop(24)])
    as_pil.transform = v2.Compose([v2.PILToTensor(), crop])
    as_tensor.transform = crop
    loader = DataLoader(both, batch_size=10, shuffle=True, num_workers=2, generator=torch.Generator().manual_seed(0))
    counts = torch.zeros(len(as_pil.classes), dtype=torch.long)
    for images, targets in loader:
        assert images.shape[1:] == (3, 24, 24)
        counts += torch.bincount(targets, minlength=len(counts))
    assert counts.tolist() == (2 * np.bincount(np.asarray(as_pil.targets))).tolist()


@pytest.mark.parametrize("backend", BACKENDS)
def test_random_split_is_a_seeded_partition(backend, small_stores):
    dataset = dataset_class(backend)(small_stores[backend], decode="tensor")
    train, val = random_split(dataset, [0.75, 0.25], generator=torch.Generator().manual_seed(0))
    again, _ = random_split(dataset, [0.75, 0.25], generator=torch.Generator().manual_seed(0))
    assert (len(train), len(val)) == (18, 6) and train.indices == again.indices
    assert sorted(train.indices + val.indices) == list(range(len(dataset)))
    assert torch.equal(val[2][0], dataset[val.indices[2]][0]) and val[2][1] == dataset.targets[val.indices[2]]
    crop = v2.CenterCrop(16)
    dataset.transform = crop
    loader = DataLoader(val, batch_size=4, num_workers=2, collate_fn=torchpack.SkipBadCollate())
    targets = [t for _, batch_targets in loader for t in batch_targets.tolist()]
    assert targets == [dataset.targets[i] for i in val.indices]


# -- repr ----------------------------------------------------------------------------------------


@pytest.mark.parametrize("backend", BACKENDS)
def test_repr_reads_like_torchvision(backend, small_tree, small_stores):
    store = small_stores[backend]
    tf = v2.CenterCrop(8)
    reference = repr(ImageFolder(small_tree, transform=tf)).splitlines()
    text = repr(dataset_class(backend)(store, decode="tensor", transform=tf))
    lines = text.splitlines()
    assert lines[0] == f"Dataset {dataset_class(backend).__name__}" and reference[0] == "Dataset ImageFolder"
    assert lines[1] == reference[1] == "    Number of datapoints: 24"
    assert lines[2] == f"    Root location: {store}"
    assert "    Decode: tensor" in lines
    assert reference[-2:] == lines[-2:]  # the StandardTransform block, as torchvision prints it
    filtered = dataset_class(backend)(store, is_valid_file=lambda p: p.endswith(".png"))
    assert "    Number of datapoints: 6" in repr(filtered).splitlines() and "    Decode: pil" in repr(filtered).splitlines()


# -- export of a crafted store -------------------------------------------------------------------


def tiny_store(tmp_path, backend: str) -> str:
    rng = np.random.default_rng(3)
    tree = tmp_path / "tree"
    for name in ("a/1.jpg", "a/2.png", "b/3.jpg"):
        save(Image.fromarray(photo_like(rng, 20, 16)), str(tree / name))
    return torchpack.convert(tree, tmp_path / f"tiny{EXTENSION[backend]}", workers=0).stores[0]


def rewrite_path(store: str, backend: str, row: int, path: str) -> None:
    """Replace one stored path in a store's Arrow index, resealing the header as a crafty author would."""
    if backend == "lmdb":
        env = lmdb.open(store, subdir=False, lock=False, readahead=False)
        try:
            with env.begin(write=True) as txn:
                index = _with_path(txn.get(INDEX_KEY), row, path)
                txn.put(INDEX_KEY, index)
                txn.put(HEADER_KEY, encode_header(json.loads(txn.get(HEADER_KEY)), index))
        finally:
            env.close()
    else:
        with h5py.File(store, "r+") as f:
            index = _with_path(f[INDEX][()].tobytes(), row, path)
            header = encode_header(json.loads(f[HEADER][()].tobytes()), index)
            for name, data in ((INDEX, index), (HEADER, header)):
                del f[name]
                f.create_dataset(name, data=np.frombuffer(data, dtype=np.uint8))


def _with_path(data: bytes, row: int, path: str) -> bytes:
    table = pa.ipc.open_stream(pa.py_buffer(data)).read_all()
    paths = table.column("path").to_pylist()
    paths[row] = path
    return encode_index(table.set_column(0, "path", pa.array(paths, pa.string())))


def files_under(folder) -> list[str]:
    return sorted(os.path.relpath(os.path.join(d, f), folder) for d, _, files in os.walk(folder) for f in files)


@pytest.mark.parametrize("backend", BACKENDS)
@pytest.mark.parametrize("kind", ["absolute", "dotdot", "nested dotdot", "drive"])
def test_export_refuses_a_crafted_store_and_writes_nothing(backend, kind, tmp_path, capsys):
    store = tiny_store(tmp_path, backend)
    before = files_under(tmp_path)
    bad = {
        "absolute": str(tmp_path / "escaped" / "abs.jpg"),
        "dotdot": "../escaped.jpg",
        "nested dotdot": "a/../../escaped.jpg",
        "drive": "C:/escaped.jpg",
    }[kind]
    rewrite_path(store, backend, 1, bad)
    dataset = dataset_class(backend)(store)
    assert dataset.relative_path(1) == bad and len(dataset) == 3  # the crafted store still opens

    out = tmp_path / "out"
    assert main(["export", store, str(out)]) == 1
    assert "unsafe stored path" in capsys.readouterr().err
    with pytest.raises(ValueError, match="unsafe stored path"):
        torchpack.export_store(store, out)
    assert files_under(tmp_path) == before  # nothing written, in the output folder or outside it
    assert not (tmp_path / "escaped").exists() and not (tmp_path / "escaped.jpg").exists()


@pytest.mark.parametrize("backend", BACKENDS)
def test_export_writes_the_tree_back_byte_for_byte(backend, tmp_path, capsys):
    store = tiny_store(tmp_path, backend)
    assert main(["export", store, str(tmp_path / "out"), "--json"]) == 0
    report = json.loads(capsys.readouterr().out)
    assert report["written"] == 3
    assert files_under(tmp_path / "out") == files_under(tmp_path / "tree")
    for name in files_under(tmp_path / "tree"):
        assert (tmp_path / "out" / name).read_bytes() == (tmp_path / "tree" / name).read_bytes()
    assert main(["export", store, str(tmp_path / "out")]) == 1  # never overwrites
    assert "exists" in capsys.readouterr().err


# -- the command line as scripts use it -----------------------------------------------------------


def run_json(argv: list[str], capsys, expect: int = 0):
    assert main(argv) == expect
    captured = capsys.readouterr()
    return json.loads(captured.out)


@pytest.mark.parametrize("backend", BACKENDS)
def test_cli_json_output_of_every_command_parses(backend, small_tree, tmp_path, capsys):
    dst = str(tmp_path / f"cli{EXTENSION[backend]}")
    converted = run_json(["convert", small_tree, dst, "--workers", "0", "--json"], capsys)
    assert converted["stores"] == [dst] and converted["num_samples"] == 24 and converted["bad_files"] == []

    info = run_json(["info", dst, "--json"], capsys)
    assert info["backend"] == backend and info["num_samples"] == 24
    assert info["classes"] == {"class0": 8, "class1": 8, "class2": 8}

    verified = run_json(["verify", dst, "--decode", "--json"], capsys)
    assert verified["ok"] is True and verified["checked"] == 24 and verified["problems"] == []

    exported = run_json(["export", dst, str(tmp_path / "out"), "--json"], capsys)
    assert exported["written"] == 24 and len(files_under(tmp_path / "out")) == 24


@pytest.mark.parametrize("backend", BACKENDS)
def test_cli_verify_json_reports_damage_with_exit_code_3(backend, tmp_path, capsys):
    store = tiny_store(tmp_path, backend)
    damage_sample(store, dataset_class(backend)(store).read_bytes(2))
    report = run_json(["verify", store, "--json"], capsys, expect=3)
    assert report["ok"] is False and [p["path"] for p in report["problems"]] == ["b/3.jpg"]


@pytest.mark.parametrize("backend", BACKENDS)
def test_cli_errors_exit_1_and_usage_errors_exit_2(backend, tmp_path, capsys):
    missing = str(tmp_path / f"missing{EXTENSION[backend]}")
    assert main(["info", missing]) == 1
    assert "missing" in capsys.readouterr().err
    assert main(["convert", str(tmp_path / "no-tree"), missing]) == 1
    assert main(["info"]) == 2
    assert main(["frobnicate"]) == 2
    assert not os.path.exists(missing)


def test_help_and_version(capsys):
    assert main(["--version"]) == 0
    assert capsys.readouterr().out.strip() == f"torchpack {torchpack.__version__}"
    assert main(["--help"]) == 0
    text = capsys.readouterr().out
    for command in ("convert", "info", "verify", "export"):
        assert command in text
        assert main([command, "--help"]) == 0
        assert f"usage: torchpack {command}" in capsys.readouterr().out
    assert "Exit codes" in text


def test_help_and_version_of_the_installed_command(tmp_path):
    for flag in ("--version", "--help"):
        result = subprocess.run(
            [sys.executable, "-m", "torchpack", flag], cwd=tmp_path, capture_output=True, text=True, timeout=120
        )
        assert result.returncode == 0, result.stderr
        assert ("usage: torchpack" in result.stdout) if flag == "--help" else result.stdout.startswith("torchpack ")
