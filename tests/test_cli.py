"""The ``torchpack`` command, called in-process as ``main([...])``: exit codes and what it prints."""

from __future__ import annotations

import json
import os
import shutil

import pytest

import torchpack
from conftest import BACKENDS, EXTENSION
from torchpack.cli import main


def all_files(root) -> dict[str, bytes]:
    """Every file under ``root`` by "/"-separated relative path, with its bytes."""
    found = {}
    for folder, _, names in os.walk(root):
        for name in names:
            path = os.path.join(folder, name)
            with open(path, "rb") as f:
                found[os.path.relpath(path, root).replace(os.sep, "/")] = f.read()
    return found


@pytest.mark.parametrize("backend", BACKENDS)
def test_convert_then_refuse_to_overwrite(backend, small_tree, tmp_path, capsys):
    dst = str(tmp_path / f"store{EXTENSION[backend]}")
    assert main(["convert", small_tree, dst, "--workers", "0", "--quiet"]) == 0
    out = capsys.readouterr().out
    assert f"Wrote {dst}" in out and "24 stored, 0 left out" in out and "classes: 3" in out
    assert len(torchpack.LMDBImageFolder(dst) if backend == "lmdb" else torchpack.HDF5ImageFolder(dst)) == 24
    assert main(["convert", small_tree, dst, "--workers", "0", "--quiet"]) == 1
    captured = capsys.readouterr()
    assert dst in captured.err and "--overwrite" in captured.err and captured.out == ""
    assert main(["convert", small_tree, dst, "--workers", "0", "--quiet", "--overwrite", "--json"]) == 0
    result = json.loads(capsys.readouterr().out)
    assert result["stores"] == [dst] and result["num_samples"] == 24


@pytest.mark.parametrize("backend", BACKENDS)
def test_convert_errors_name_the_problem(backend, small_tree, tmp_path, capsys):
    missing = str(tmp_path / "missing")
    assert main(["convert", missing, str(tmp_path / f"a{EXTENSION[backend]}"), "--workers", "0"]) == 1
    assert missing in capsys.readouterr().err
    assert main(["convert", small_tree, str(tmp_path / "a.bin"), "--workers", "0"]) == 1
    assert "`backend`" in capsys.readouterr().err
    argv = ["convert", small_tree, str(tmp_path / "a.bin"), "--backend", backend, "--workers", "0", "--quiet"]
    assert main(argv) == 0


@pytest.mark.parametrize(
    "argv",
    [[], ["convert"], ["convert", "only-src"], ["frobnicate"], ["convert", "a", "b.lmdb", "--storage", "bogus"],
     ["info"], ["verify", "x.lmdb", "--no-such-flag"]],
)
def test_bad_usage_exits_2(argv, capsys):
    assert main(argv) == 2
    assert "usage:" in capsys.readouterr().err


def test_version(capsys):
    assert main(["--version"]) == 0
    assert capsys.readouterr().out.strip() == f"torchpack {torchpack.__version__}"


@pytest.mark.parametrize("backend", BACKENDS)
def test_info_prints_classes_and_counts(backend, small_stores, capsys):
    assert main(["info", small_stores[backend]]) == 0
    out = capsys.readouterr().out
    for name in ("class0", "class1", "class2"):
        assert f"  {name}: 8" in out
    assert f"({backend})" in out and "24 in 3 classes" in out
    assert main(["info", small_stores[backend], "--json"]) == 0
    info = json.loads(capsys.readouterr().out)
    assert info["classes"] == {"class0": 8, "class1": 8, "class2": 8}
    assert info["num_samples"] == 24 and info["backend"] == backend and info["files"] == [small_stores[backend]]


@pytest.mark.parametrize("backend", BACKENDS)
def test_info_on_a_missing_store_exits_1(backend, tmp_path, capsys):
    missing = str(tmp_path / f"missing{EXTENSION[backend]}")
    assert main(["info", missing]) == 1
    assert missing in capsys.readouterr().err


@pytest.mark.parametrize("backend", BACKENDS)
def test_verify_finds_flipped_bytes(backend, small_stores, tmp_path, capsys):
    assert main(["verify", small_stores[backend]]) == 0
    assert capsys.readouterr().out.strip().endswith("OK")
    damaged = str(tmp_path / f"damaged{EXTENSION[backend]}")
    shutil.copyfile(small_stores[backend], damaged)
    dataset = torchpack.LMDBImageFolder(damaged) if backend == "lmdb" else torchpack.HDF5ImageFolder(damaged)
    sample, path = dataset.read_bytes(5), dataset.relative_path(5)
    with open(damaged, "r+b") as f:
        content = f.read()
        assert content.count(sample) == 1
        f.seek(content.index(sample) + len(sample) // 2)
        f.write(bytes([content[content.index(sample) + len(sample) // 2] ^ 0xFF]))
    assert main(["verify", damaged]) == 3
    out = capsys.readouterr().out
    assert f"BAD {path}: checksum mismatch" in out and "1 problem(s) found" in out
    assert main(["verify", damaged, "--json"]) == 3
    report = json.loads(capsys.readouterr().out)
    assert report["ok"] is False and [p["path"] for p in report["problems"]] == [path]


@pytest.mark.parametrize("backend", BACKENDS)
def test_export_gives_back_the_tree(backend, small_tree, small_stores, tmp_path, capsys):
    out = tmp_path / "exported"
    assert main(["export", small_stores[backend], str(out)]) == 0
    assert "Wrote 24 files" in capsys.readouterr().out
    assert all_files(out) == all_files(small_tree)
    assert main(["export", small_stores[backend], str(out)]) == 1  # never overwrites
    assert "exists" in capsys.readouterr().err


def test_demo(tmp_path, capsys):
    assert main(["demo", "--dir", str(tmp_path)]) == 0
    out = capsys.readouterr().out
    assert out.count("same samples and order as ImageFolder: True") == 2
    assert "LMDBImageFolder: read 72 images" in out and "HDF5ImageFolder: read 72 images" in out
    assert os.path.isfile(tmp_path / "demo.lmdb") and os.path.isfile(tmp_path / "demo.h5")
