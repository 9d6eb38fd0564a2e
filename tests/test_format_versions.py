"""Stores of every format version this torchpack reads: 1.0 files written by torchpack 0.1.0, and 2.x.

``tests/data/format_1_0/`` holds stores that torchpack 0.1.0 wrote from the tree beside them
(encoded and raw, LMDB and HDF5), committed as files so that no later change to the writer
can make them look newer than they are.
"""

from __future__ import annotations

import os
import shutil

import numpy as np
import pyarrow as pa
import pytest
import torch
from torchvision.datasets import ImageFolder

import torchpack
from conftest import BACKENDS, EXTENSION, dataset_class
from test_malformed import build_store, store_parts
from torchpack.format import FORMAT_VERSION, encode_header

V1 = os.path.join(os.path.dirname(os.path.abspath(__file__)), "data", "format_1_0")


@pytest.fixture
def v1_stores(tmp_path):
    """Private copies: other tests may hold the same files open in this process."""
    return {(kind, b): shutil.copy(os.path.join(V1, f"{kind}{EXTENSION[b]}"), tmp_path) for kind in ("encoded", "raw") for b in BACKENDS}


@pytest.mark.parametrize("backend", BACKENDS)
@pytest.mark.parametrize("kind", ["encoded", "raw"])
def test_format_1_0_stores_read_as_imagefolder_does(kind, backend, v1_stores):
    reference = ImageFolder(os.path.join(V1, "tree"))
    store = v1_stores[(kind, backend)]
    assert torchpack.store_info(store)["format_version"] == "1.0"
    assert torchpack.verify_store(store, decode=True).ok
    for decode in ("pil", "tensor", "numpy"):
        dataset = dataset_class(backend)(store, decode=decode)
        assert dataset.classes == reference.classes and list(dataset.targets) == reference.targets
        for i in range(len(reference)):
            expected = np.asarray(reference[i][0])
            image = dataset[i][0]
            if decode == "tensor":
                image = image.permute(1, 2, 0)
            assert np.array_equal(np.asarray(image), expected), (decode, dataset.relative_path(i))
    batch = dataset_class(backend)(store, decode="tensor").__getitems__([0, 1, 2, 3])
    images = batch.images if isinstance(batch, torchpack.StackedBatch) else [b[0] for b in batch]
    assert all(torch.equal(images[i].permute(1, 2, 0), torch.from_numpy(np.asarray(reference[i][0]))) for i in range(4))


@pytest.mark.parametrize("backend", BACKENDS)
def test_a_later_minor_version_with_a_new_column_still_reads(backend, small_stores, tmp_path):
    """2.x minor versions only add columns and header fields; this reader ignores what it does not know."""
    header, index, samples = store_parts(shutil.copy(small_stores[backend], tmp_path))
    index = index.append_column("added_in_a_later_minor", pa.array(["x"] * index.num_rows))
    sink = pa.BufferOutputStream()
    with pa.ipc.new_stream(sink, index.schema) as writer:
        writer.write_table(index)
    index_bytes = sink.getvalue().to_pybytes()
    header = {**header, "format_version": FORMAT_VERSION.split(".")[0] + ".9", "added_field": {"a": 1}}
    store = build_store(backend, str(tmp_path / f"later{EXTENSION[backend]}"), encode_header(header, index_bytes), index_bytes, samples)
    dataset = dataset_class(backend)(store)
    reference = dataset_class(backend)(small_stores[backend])
    assert list(dataset.samples)[:3] == [(p.replace(small_stores[backend], store), t) for p, t in list(reference.samples)[:3]]
    assert np.array_equal(np.asarray(dataset[5][0]), np.asarray(reference[5][0]))


@pytest.mark.parametrize("backend", BACKENDS)
def test_new_stores_are_format_2_with_a_decoder_per_sample(backend, small_stores, tmp_path):
    store = shutil.copy(small_stores[backend], tmp_path)  # store_parts opens it outside the handle cache
    assert torchpack.store_info(store)["format_version"] == FORMAT_VERSION == "2.1"
    header, index, _ = store_parts(store)
    decoders = dict(zip(index.column("path").to_pylist(), index.column("decoder").to_pylist()))
    assert {d for p, d in decoders.items() if p.endswith(".jpg")} == {"simplejpeg"}
    assert {d for p, d in decoders.items() if p.endswith(".png")} == {"pillow"}
    assert header["selection"]["extensions"] == list(torchpack.datasets.IMG_EXTENSIONS)
    jpegs = sum(p.endswith(".jpg") for p in decoders)
    assert torchpack.store_info(store)["decoders"] == {"simplejpeg": jpegs, "pillow": len(decoders) - jpegs}
