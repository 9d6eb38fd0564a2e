"""Damaged, foreign and hostile files: always a clear torchpack error, never a crash, a hang or code execution.

Every mutated file is opened in a child process, so a segfault, a SIGBUS or a hang shows up
as a failed test naming the file instead of killing the test run.
"""

from __future__ import annotations

import json
import os
import pathlib
import pickle
import random
import re
import shutil
import subprocess
import sys
import zlib

import h5py
import lmdb
import numpy as np
import pyarrow as pa
import pytest

import torchpack
from conftest import BACKENDS, EXTENSION, dataset_class
from torchpack import cli
from torchpack.backends import open_reader, writer_class
from torchpack.backends.hdf5 import DATA, HEADER, INDEX
from torchpack.backends.lmdb import check_lmdb_file
from torchpack.format import INDEX_SCHEMA, InvalidStoreError, UnsupportedVersionError, encode_header, encode_index

CHILD_TIMEOUT = 240


@pytest.fixture
def own_stores(small_stores, tmp_path):
    """Private copies of the session's stores: other tests keep the originals open in this
    process, and py-lmdb (and HDF5 with other locking flags) refuse a second open."""
    folder = tmp_path / "own"
    folder.mkdir()
    return {b: shutil.copy(path, folder / os.path.basename(path)) for b, path in small_stores.items()}

#: Opens each file as the trainer would and reports what happened, one JSON line per file.
CHILD_SCRIPT = """
import json, sys
import torchpack
from torchpack.errors import BadSampleError
from torchpack.format import InvalidStoreError

backend, listing = sys.argv[1], sys.argv[2]
dataset_class = torchpack.LMDBImageFolder if backend == "lmdb" else torchpack.HDF5ImageFolder
allowed = (InvalidStoreError, BadSampleError, FileNotFoundError)
for path in json.load(open(listing)):
    print(json.dumps({"file": path, "started": True}), flush=True)
    outcome = "ok"
    try:
        torchpack.verify_store(path, decode=True)
        dataset = dataset_class(path, allow_empty=True, on_error="raise")
        for i in range(len(dataset)):
            dataset[i]
    except allowed as exc:
        outcome = type(exc).__name__
    except Exception as exc:
        outcome = "unexpected " + type(exc).__name__ + ": " + str(exc)
    print(json.dumps({"file": path, "outcome": outcome}), flush=True)
"""


def open_in_children(backend: str, files: list[str], workdir: pathlib.Path) -> tuple[dict[str, str], dict[str, str]]:
    """Outcome per file, and the files whose child died or hung (the run goes on after each such file)."""
    outcomes: dict[str, str] = {}
    crashes: dict[str, str] = {}
    remaining = list(files)
    while remaining:
        listing = workdir / f"listing-{len(crashes)}.json"
        listing.write_text(json.dumps(remaining))
        try:
            run = subprocess.run(
                [sys.executable, "-c", CHILD_SCRIPT, backend, str(listing)],
                capture_output=True, text=True, timeout=CHILD_TIMEOUT,
            )
            stdout, failure = run.stdout, None if run.returncode == 0 else f"exit code {run.returncode}"
        except subprocess.TimeoutExpired as exc:
            stdout, failure = (exc.stdout or b"").decode() if isinstance(exc.stdout, bytes) else exc.stdout or "", "hung"
        started = None
        for line in stdout.splitlines():
            record = json.loads(line)
            if record.get("started"):
                started = record["file"]
            else:
                outcomes[record["file"]] = record["outcome"]
                started = None
        if failure is None:
            break
        culprit = started or remaining[0]
        crashes[culprit] = failure
        remaining = remaining[remaining.index(culprit) + 1 :]
    return outcomes, crashes


def store_parts(path: str) -> tuple[dict, pa.Table, list[bytes]]:
    with open_reader(path) as reader:
        header = reader.read_header()
        index = reader.read_index(header)
        rows = zip(index.column("offset").to_pylist(), index.column("length").to_pylist())
        samples = [bytes(reader.read(row, offset, length)) for row, (offset, length) in enumerate(rows)]
    return header, index, samples


def build_store(backend: str, dst: str, header: bytes, index: bytes, samples: list[bytes]) -> str:
    """Write a store from raw parts with the backend's own writer (the parts need not be valid)."""
    staging = dst + ".staging"
    os.mkdir(staging)
    writer = writer_class(backend)(staging)
    for row, data in enumerate(samples):
        writer.append(row, data)
    size = writer.commit()
    os.replace(writer.finish(header, index, size), dst)
    shutil.rmtree(staging)
    return dst


def index_for(table: pa.Table, samples: list[bytes]) -> bytes:
    """``table`` with lengths, offsets and checksums recomputed for ``samples``."""
    lengths = [len(s) for s in samples]
    columns = {name: table.column(name) for name in INDEX_SCHEMA.names}
    columns["length"] = pa.array(lengths, pa.int64())
    columns["offset"] = pa.array(np.concatenate([[0], np.cumsum(lengths)[:-1]]).tolist(), pa.int64())
    columns["crc32"] = pa.array([zlib.crc32(s) for s in samples], pa.uint32())
    return encode_index(pa.table(columns, schema=INDEX_SCHEMA))


def regions(backend: str, path: str) -> dict[str, tuple[int, int]]:
    """Where the header, the index and the data lie in the file, as (start, stop) byte ranges."""
    header, index, samples = store_parts(path)
    blob = pathlib.Path(path).read_bytes()
    if backend == "hdf5":
        with h5py.File(path, "r") as f:
            spans = {name: (f[key].id.get_offset(), f[key].id.get_offset() + f[key].shape[0]) for name, key in
                     (("header", HEADER), ("index", INDEX), ("data", DATA))}
        return spans
    spans = {}
    for name, needle in (("header", encode_header(header, encode_index(index))), ("index", encode_index(index)), ("data", samples[len(samples) // 2])):
        start = blob.find(needle[:64])
        assert start > 0, f"cannot find the {name} in {path}"
        spans[name] = (start, start + len(needle))
    return spans


def mutations(backend: str, store: str, out: pathlib.Path) -> list[str]:
    """Many damaged copies of ``store``: truncated, flipped, wrong version, foreign and random files."""
    rng = random.Random(f"malformed-{backend}")
    blob = pathlib.Path(store).read_bytes()
    size = len(blob)
    spans = regions(backend, store)
    files = []

    def emit(name: str, data: bytes) -> None:
        path = out / f"{name}{EXTENSION[backend]}"
        path.write_bytes(data)
        files.append(str(path))

    cuts = {0, 1, 8, 16, 100, 512, 4095, 4096, 4097, 8192, 8193, size // 2, size - 4096, size - 1}
    for start, stop in spans.values():
        cuts |= {start, start + 1, (start + stop) // 2, stop - 1}
    cuts |= {rng.randrange(size) for _ in range(20)}
    for cut in sorted(c for c in cuts if 0 <= c < size):
        emit(f"truncated-{cut}", blob[:cut])
    flips = [("anywhere", rng.randrange(size)) for _ in range(60)]
    flips += [("meta", offset) for offset in range(0, min(size, 8192), 61)]
    for name, (start, stop) in spans.items():
        flips += [(name, rng.randrange(start, stop - 16)) for _ in range(10)]
    for region, offset in flips:
        damaged = bytearray(blob)
        for i in range(offset, min(size, offset + rng.choice((1, 1, 4, 16)))):
            damaged[i] ^= rng.randrange(1, 256)
        emit(f"flipped-{region}-{offset}", bytes(damaged))
    emit("empty", b"")
    emit("random", rng.randbytes(3 * 4096))
    if backend == "hdf5":
        emit("random-behind-signature", b"\x89HDF\r\n\x1a\n" + rng.randbytes(8192))
    else:
        emit("random-behind-magic", rng.randbytes(16) + (0xBEEFC0DE).to_bytes(4, "little") + rng.randbytes(8192))
    return files


@pytest.mark.parametrize("backend", BACKENDS)
def test_damaged_stores_give_clear_errors_never_crashes(backend, own_stores, tmp_path):
    files = mutations(backend, own_stores[backend], tmp_path)
    outcomes, crashes = open_in_children(backend, files, tmp_path)
    assert not crashes, f"children died or hung on: {crashes}"
    assert sorted(outcomes) == sorted(files)
    unexpected = {f: o for f, o in outcomes.items() if o.startswith("unexpected")}
    assert not unexpected, "\n".join(f"{os.path.basename(f)}: {o}" for f, o in sorted(unexpected.items()))
    # The LMDB writer ends the file with zeros past LMDB's last page (see lmdb._pad_tail); cutting
    # those off loses nothing, so only cuts before LMDB's last page must be refused.
    whole = check_lmdb_file(own_stores[backend]) if backend == "lmdb" else os.path.getsize(own_stores[backend])
    for path, outcome in outcomes.items():
        name = os.path.basename(path)
        if name.startswith("truncated-") and int(re.findall(r"\d+", name)[0]) < whole or name.startswith(("empty", "random")):
            assert outcome != "ok", f"{name} was read as a whole store"
    # Every sample carries a CRC-32, so damage to the data is always caught. The header and
    # the index carry none: a flip that leaves them well-formed (a letter of a path) goes unseen.
    data_flips = {f: o for f, o in outcomes.items() if "flipped-data-" in f}
    assert len(data_flips) == 10 and all(o == "BadSampleError" for o in data_flips.values()), data_flips
    counts: dict[str, dict[str, int]] = {}
    for path, outcome in outcomes.items():
        kind = re.sub(r"-?\d*\.\w+$", "", os.path.basename(path))
        counts.setdefault(kind, {}).setdefault(outcome, 0)
        counts[kind][outcome] += 1
    print(backend, json.dumps(counts, sort_keys=True))
    assert outcomes[str(tmp_path / f"empty{EXTENSION[backend]}")] == "InvalidStoreError"


def _wrong_version_store(backend: str, store: str, dst: str, version: str) -> str:
    header, index, samples = store_parts(store)
    header["format_version"] = version
    index_bytes = encode_index(index)
    return build_store(backend, dst, encode_header(header, index_bytes), index_bytes, samples)


@pytest.mark.parametrize("backend", BACKENDS)
def test_newer_format_version_is_refused_and_minor_versions_are_read(backend, own_stores, tmp_path):
    newer = _wrong_version_store(backend, own_stores[backend], str(tmp_path / f"v3{EXTENSION[backend]}"), "3.0")
    with pytest.raises(UnsupportedVersionError, match="store format version '3.0' is not supported"):
        dataset_class(backend)(newer)
    minor = _wrong_version_store(backend, own_stores[backend], str(tmp_path / f"v2_7{EXTENSION[backend]}"), "2.7")
    assert len(dataset_class(backend)(minor)) == len(dataset_class(backend)(own_stores[backend]))
    report = torchpack.verify_store(newer)
    assert not report.ok and "not supported" in report.problems[0]["problem"]


def test_hdf5_file_without_torchpack_datasets(tmp_path):
    path = str(tmp_path / "foreign.h5")
    with h5py.File(path, "w") as f:
        f.create_dataset("images", data=np.zeros((4, 8, 8), np.uint8))
        f.create_dataset("torchpack/header", data=np.frombuffer(b"{}", np.uint8))
    with pytest.raises(InvalidStoreError, match="without the dataset /torchpack/index"):
        torchpack.HDF5ImageFolder(path)
    # Not "open it with HDF5ImageFolder", which would then say it is not a store (issue 18).
    with pytest.raises(InvalidStoreError, match="is an HDF5 file, not an LMDB store, and not a torchpack store") as raised:
        torchpack.LMDBImageFolder(path)
    assert "HDF5ImageFolder" not in str(raised.value)


def test_lmdb_file_without_torchpack_keys(tmp_path):
    path = str(tmp_path / "foreign.lmdb")
    with lmdb.open(path, subdir=False, map_size=1 << 20) as env, env.begin(write=True) as txn:
        txn.put(b"image-000", b"\xff\xd8\xff" + bytes(100))
        txn.put(b"length", b"1")
    with pytest.raises(InvalidStoreError, match="without a torchpack header"):
        torchpack.LMDBImageFolder(path)
    report = torchpack.verify_store(path)
    assert not report.ok and "without a torchpack header" in report.problems[0]["problem"]


class _Payload:
    """Unpickling this creates the file at ``path``: what a careless reader would run."""

    def __init__(self, path: str) -> None:
        self.path = path

    def __reduce__(self):
        return (open, (self.path, "w"))


@pytest.mark.parametrize("backend", BACKENDS)
@pytest.mark.parametrize("place", ["header", "index", "sample"])
def test_planted_pickle_never_runs(backend, place, own_stores, tmp_path, capsys):
    payload = pickle.dumps(_Payload(str(tmp_path / "control")))
    pickle.loads(payload)  # the payload really works when unpickled ...
    assert (tmp_path / "control").exists()
    marker = tmp_path / "owned"
    payload = pickle.dumps(_Payload(str(marker)))
    header, index, samples = store_parts(own_stores[backend])
    index_bytes = encode_index(index)
    if place == "index":
        index_bytes = payload
    elif place == "sample":
        samples[0] = payload
        index_bytes = index_for(index, samples)
    # Sealed with the payload's checksums, so the reader gets past them to the payload itself.
    header_bytes = payload if place == "header" else encode_header(header, index_bytes)
    store = build_store(backend, str(tmp_path / f"hostile{EXTENSION[backend]}"), header_bytes, index_bytes, samples)
    if place == "sample":
        dataset = dataset_class(backend)(store, on_error="raise")
        with pytest.raises(torchpack.BadSampleError, match="Sample 0"):
            dataset[0]
        dataset[1]
        assert dataset.read_bytes(0) == payload
        info = torchpack.store_info(store)
        assert info["num_samples"] == len(samples)
    else:
        with pytest.raises(InvalidStoreError):
            dataset_class(backend)(store)
        with pytest.raises(InvalidStoreError):
            torchpack.store_info(store)
    report = torchpack.verify_store(store, decode=True)
    assert not report.ok
    assert cli.main(["verify", "--decode", store]) != 0
    cli.main(["info", store])
    capsys.readouterr()
    assert not marker.exists(), "a pickle payload in the store was executed"  # ... and never does from a store


def test_package_has_no_unpickling_or_eval():
    package = pathlib.Path(torchpack.__file__).parent
    forbidden = re.compile(
        r"^\s*(import|from)\s+(pickle|cPickle|_pickle|marshal|dill|cloudpickle|shelve)\b"
        r"|\bpickle\.loads?\(|\bmarshal\.|\beval\(|\bexec\(|\btorch\.load\(|allow_pickle\s*=\s*True",
        re.MULTILINE,
    )
    sources = sorted(package.rglob("*.py"))
    assert len(sources) > 10
    offending = {str(p.relative_to(package)): forbidden.findall(p.read_text()) for p in sources}
    assert not {p: found for p, found in offending.items() if found}


@pytest.mark.parametrize("backend", BACKENDS)
@pytest.mark.parametrize("part", ["header", "index"])
def test_metadata_damage_that_still_parses_is_caught_by_its_checksum(backend, part, own_stores, tmp_path):
    """A changed letter in a class name or a path parses fine; only the checksums can tell."""
    header, index, samples = store_parts(own_stores[backend])
    index_bytes = encode_index(index)
    header_bytes = encode_header(header, index_bytes)
    if part == "header":
        header_bytes = header_bytes.replace(b'"class0"', b'"clasz0"', 1)
    else:
        first = index.column("path")[0].as_py().encode()
        index_bytes = index_bytes.replace(first, first[:-1] + b"x", 1)
    assert header_bytes != encode_header(header, encode_index(index)) or index_bytes != encode_index(index)
    store = build_store(backend, str(tmp_path / f"damaged{EXTENSION[backend]}"), header_bytes, index_bytes, samples)
    with pytest.raises(InvalidStoreError, match=f"{part} is damaged"):
        dataset_class(backend)(store)
    assert not torchpack.verify_store(store).ok
