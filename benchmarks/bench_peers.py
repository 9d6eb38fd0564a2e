"""torchpack against the systems users would pick instead, in one run, on the same images.

usage::

    python benchmarks/bench_peers.py --tree PHOTOS --tiny TINY [--workers 2] [--out bench_out/peers]
                                     [--rounds 3] [--quick] [--ffcv-python PATH] [--skip-raw-photos]

``PHOTOS`` is an ImageFolder tree of JPEG photos, ``TINY`` one of 28x28 PNGs (``make_tiny_tree.py``);
either is generated when left out. Each system converts the same trees and reads them back by its own
documented fastest route:

========================  =====================================================================
ImageFolder               torchvision's ``ImageFolder``: the baseline every ratio is against
torchpack                 ``torchpack.convert`` + ``LMDBImageFolder`` / ``HDF5ImageFolder``
WebDataset                tar shards (``ShardWriter``), ``WebDataset`` pipeline in a ``WebLoader``
LitData                   ``litdata.optimize`` + ``StreamingDataset`` in a ``StreamingDataLoader``
Mosaic Streaming          ``MDSWriter`` + ``StreamingImageNet`` / ``StreamingDataset`` in a DataLoader
HF datasets               ``load_dataset("imagefolder")`` + ``save_to_disk``; ``load_from_disk`` +
                          ``with_transform`` / ``with_format("torch")`` in a DataLoader
FFCV                      ``DatasetWriter`` (``RGBImageField``) + its own threaded ``Loader``
========================  =====================================================================

Two workloads: (a) photos through the ImageNet validation pipeline (decode, Resize(256),
CenterCrop(224), uint8 CHW tensor, batch 64); (b) 28x28 images to a 3x28x28 uint8 tensor, batch
512, every peer storing them decoded ("raw") where it can. Every rate is images/s with ``--workers``
processes (FFCV: threads) on a warm page cache, measured in ``--rounds`` round-robin rounds with the
median reported, and also given as a ratio against ImageFolder measured in the same rounds. What each
system keeps of ImageFolder's contract (``classes``, ``class_to_idx``, sample order, pixels, random
access, ``len``) is checked on its output, not taken from its docs. A system that is not installed
or fails becomes a row saying why. Results: ``OUT/peers.json``, ``OUT/peers.md``, ``OUT/peers.png``.

Every row has a ``kind``, so that like is compared with like: ``lossless`` (the source files' bytes,
or pixels decoded from them without resizing), ``re-encoded`` (resized and/or JPEG re-encoded; the
cap is in the route's name) or ``tiny/decoded``. On photos both sides have each kind: FFCV's
ImageNet recipe (JPEG q90, long side 500) and its raw field at long side 500 are re-encoded, against
torchpack's re-encoded stores at short side 256 (its recipe) and 384 (about FFCV's pixel budget);
FFCV's raw field at full size is lossless, against torchpack's lossless store and its raw store of
full-size pixels (and against the other peers, which all store the files' bytes). After the table a
"head to head" summary gives, for photos lossless, photos re-encoded and tiny, the best torchpack
route and the best peer route, their ratio and the winner: reported, not asserted.

The raw photo stores hold decoded pixels, about 1 MB a photo each: ``--skip-raw-photos`` leaves
them out, and each is converted only when the disk has room for 3x its expected size (else its
row says so). Each route's files are read once before each of its timings, so that the large
stores do not push each other out of the page cache.

Installing the peers (in their own virtual environment, so that the main one stays lean)::

    python3 -m venv .venv-peers && .venv-peers/bin/pip install -e ".[test,peers]"

FFCV is not in the ``peers`` extra: it builds a C extension against OpenCV and libjpeg-turbo, so it
needs system libraries first, then installs from PyPI into the same environment (it pulls numba
and opencv-python; with torch 2.14 and numpy 2.1 it needed no pins)::

    apt-get install -y pkg-config libturbojpeg0-dev libopencv-dev
    .venv-peers/bin/pip install ffcv==1.0.2

If FFCV ever needs pins that break torchpack, give it its own environment (with torchpack
installed there too) and pass ``--ffcv-python that/venv/bin/python``. FFCV's reads always run in a
child interpreter (its own, or this one): its Loader keeps numba threads, which should not live in
the process that forks every other system's DataLoader workers.
"""

from __future__ import annotations

import argparse
import gc
import importlib
import json
import math
import os
import platform
import shutil
import subprocess
import sys
import tempfile
import time
import traceback
import warnings
from dataclasses import asdict, dataclass, field
from typing import Any, Callable, Iterable, Iterator

HERE = os.path.dirname(os.path.abspath(__file__))
if HERE not in sys.path:  # when imported by a job interpreter (python -c)
    sys.path.insert(0, HERE)

import numpy as np  # noqa: E402
import torch  # noqa: E402
from PIL import Image  # noqa: E402
from torch.utils.data import default_collate  # noqa: E402
from torchvision import transforms as T  # noqa: E402
from torchvision.datasets import ImageFolder  # noqa: E402

import torchpack  # noqa: E402
from bench_suite import (  # noqa: E402
    CROP,
    PHOTO_BATCH,
    PIL_TRANSFORM,
    SHORT_SIDE,
    TENSOR_TRANSFORM,
    allocated_bytes,
    convert_all,
    loader_rate,
    log,
    make_photo_tree,
    make_tiny_tree,
    measure_rounds,
    median_result,
    tree_allocated_bytes,
    warm_page_cache,
)

TINY_BATCH = 512
TINY_PIPELINE = T.PILToTensor()  # ImageFolder's RGB PIL image -> 3x28x28 uint8
# FFCV's ImageNet recipe (ffcv-imagenet README, ResNet-50 data): images capped at 500 px, JPEG quality 90,
# 50% of them JPEG and 50% raw ("proportion"); the two rows here are its two ends, all JPEG and all raw.
# It caps the *longer* side, so the 224 crop of 0.875 x the short side is hardly ever upsampled.
FFCV_MAX_RESOLUTION = 500
FFCV_QUALITY = 90
# torchpack's re-encoded store at a pixel budget comparable to FFCV's: on photos of aspect ~4:3 a
# long side of 500 is a short side of ~375-400, so short side 384 stores about as many pixels.
TP_COMPARABLE_SHORT_SIDE = 384
TP_QUALITY = 90
# What a row's store holds: the source files' bytes or their pixels, full size ("lossless"); resized
# and/or JPEG re-encoded pixels ("re-encoded"); or 28x28 images, which every system stores decoded.
LOSSLESS, REENCODED, TINY_DECODED = "lossless", "re-encoded", "tiny/decoded"
KINDS = (LOSSLESS, REENCODED, TINY_DECODED)
# A raw photo store (decoded pixels, ~1 MB a photo) is converted only with this many times its
# expected size free on the disk of OUT.
RAW_DISK_FACTOR = 3
# Contract checks: the first few samples in each system's own unshuffled order, plus random indices.
FIRST_K = {"photo": 4, "tiny": 8}
RANDOM_K = {"photo": 3, "tiny": 4}
# Mean absolute difference (0-255) under which two outputs are "the same picture", re-encoded or
# resized differently; different pictures of the photo tree differ by far more.
SAME_PICTURE = 12.0
JOB_MARK = "@@bench_peers "


# -- what a system offers -----------------------------------------------------------------------


@dataclass
class Settings:
    """What every adapter needs to know about the run (sent to job interpreters as JSON)."""

    workers: int = 2
    photo_batch: int = PHOTO_BATCH
    tiny_batch: int = TINY_BATCH
    min_seconds: float = 3.0

    def batch(self, group: str) -> int:
        return self.photo_batch if group == "photo" else self.tiny_batch


@dataclass(frozen=True)
class Cap:
    """A store's resize rule: the ``side`` ("short" or "long") capped at ``size`` pixels, never enlarged."""

    side: str
    size: int

    def __str__(self) -> str:
        return f"{self.side} side {self.size}"

    def apply(self, width: int, height: int) -> tuple[int, int]:
        """The stored ``(width, height)`` of an image of ``width`` x ``height`` (rounding as torchpack does)."""
        edge = min(width, height) if self.side == "short" else max(width, height)
        if edge <= self.size:
            return width, height
        scale = self.size / edge
        return max(1, round(width * scale)), max(1, round(height * scale))


@dataclass
class Store:
    """One converted copy of a tree. ``convert(src, dst, workers)`` runs in a fresh interpreter.

    ``reencoded``: the pixels were JPEG-encoded again; ``cap``: they were resized; ``raw_photos``:
    a store of decoded photo pixels (large: skippable, and converted only when the disk has room).
    """

    name: str
    ext: str = ""  # "" for a folder
    convert: Callable[[str, str, int], None] | None = None
    torchpack_options: dict[str, Any] | None = None  # torchpack stores go through bench_suite.convert_all
    reencoded: bool = False
    cap: Cap | None = None
    raw_photos: bool = False

    def kind(self, group: str) -> str:
        """``lossless``, ``re-encoded`` or ``tiny/decoded`` (see KINDS)."""
        if group == "tiny":
            return TINY_DECODED
        return REENCODED if self.reencoded or self.cap is not None else LOSSLESS


#: What the ImageFolder rows read: the tree itself.
TREE = Store("tree")


@dataclass
class Probe:
    """A single-process view of a store, for the contract checks."""

    length: int | None = None  # len(dataset), None where the system has no dataset object with a len
    classes: list[str] | None = None
    class_to_idx: dict[str, int] | None = None
    iterate: Callable[[], Iterable[tuple[torch.Tensor, int]]] | None = None  # unshuffled, one process
    getitem: Callable[[int], tuple[torch.Tensor, int]] | None = None  # None: no random access
    notes: list[str] = field(default_factory=list)


@dataclass
class Route:
    """One way of reading one store: a row of the table.

    Map-style routes give ``dataset(path)`` (timed with bench_suite's ``loader_rate``); routes
    through a system's own loader give ``loader(path, workers, batch)``, a re-iterable of
    ``(images, targets)`` batches. ``probe(path)`` defaults to one built from ``dataset``.
    """

    name: str
    store: str | None  # a Store name of the same adapter; None reads the tree itself
    dataset: Callable[[str], Any] | None = None
    collate: Callable | None = None
    loader: Callable[[str, int, int], Iterable] | None = None
    probe: Callable[[str], Probe] | None = None
    workers: int | None = None  # fixed worker count; None: --workers
    array_batches: bool = False  # batch_sampler=torchpack.ArrayBatchSampler (batches as index arrays)


def dataset_probe(dataset, unpack: Callable[[Any], tuple] | None = None, **meta: Any) -> Probe:
    """A Probe over a map-style dataset; ImageFolder's attributes where it has them."""
    unpack = unpack or (lambda item: (item[0], int(item[1])))
    meta.setdefault("classes", getattr(dataset, "classes", None))
    meta.setdefault("class_to_idx", getattr(dataset, "class_to_idx", None))
    return Probe(
        length=len(dataset),
        iterate=lambda: (unpack(dataset[i]) for i in range(len(dataset))),
        getitem=lambda i: unpack(dataset[i]),
        **meta,
    )


class Adapter:
    """How one system converts a tree (``stores``) and reads it back (``routes``). One subclass per system."""

    system = ""
    modules: tuple[str, ...] = ()  # imported to check that the system is installed
    isolated = False  # read in a job interpreter (``python``), never in this process

    def __init__(self, settings: Settings, python: str | None = None) -> None:
        self.settings = settings
        self.python = python or sys.executable

    def stores(self, group: str) -> list[Store]:
        return []

    def routes(self, group: str) -> list[Route]:
        return []

    def missing(self) -> str | None:
        """None when the system imports, else the exception as ``Type: message``."""
        if self.python != sys.executable:
            code = "import " + ", ".join(self.modules) if self.modules else "pass"
            done = subprocess.run([self.python, "-c", code], capture_output=True, text=True)
            lines = done.stderr.strip().splitlines()
            return None if done.returncode == 0 else (lines[-1] if lines else f"exit status {done.returncode}")
        for module in self.modules:
            try:
                importlib.import_module(module)
            except Exception as exc:  # ImportError, but also a broken build (numpy ABI, missing .so)
                return f"{type(exc).__name__}: {exc}"
        return None


# -- shared pieces (module level so DataLoader workers can pickle them) ----------------------------


class RGBThen:
    """Convert a PIL image to RGB, as ImageFolder's loader does, then apply ``transform``."""

    def __init__(self, transform: Callable) -> None:
        self.transform = transform

    def __call__(self, image: Image.Image):
        return self.transform(image.convert("RGB"))


class DictToTuple:
    """Collate a list of ``{image_key: tensor, label_key: int}`` samples into ``(images, targets)``."""

    def __init__(self, image_key: str = "image", label_key: str = "label") -> None:
        self.image_key, self.label_key = image_key, label_key

    def __call__(self, items: list[dict]) -> tuple[torch.Tensor, torch.Tensor]:
        return torch.stack([i[self.image_key] for i in items]), torch.as_tensor([int(i[self.label_key]) for i in items])


def first_image(sample: dict) -> tuple[torch.Tensor, int]:
    return sample["image"], int(sample["label"])


def chw_pixels(path: str) -> np.ndarray:
    """ImageFolder's loader (PIL, RGB) as a 3xHxW uint8 array: what a "raw" tiny-image store holds."""
    with Image.open(path) as image:
        return np.ascontiguousarray(np.asarray(image.convert("RGB")).transpose(2, 0, 1))


def tree_samples(tree: str) -> list[tuple[str, int]]:
    return [(p, int(t)) for p, t in ImageFolder(tree).samples]


def shard_bytes(tree: str, group: str, workers: int) -> int:
    """Shard/chunk size for the sharded formats: at least 4 shards per worker, at most 64 MiB (their usual size)."""
    samples = tree_samples(tree)
    total = len(samples) * 3 * 28 * 28 if group == "tiny" else sum(os.path.getsize(p) for p, _ in samples)
    return int(min(64 << 20, max(256 << 10, total // (4 * max(workers, 1)))))


def iter_rate(loader: Iterable, min_seconds: float, warmup_batches: int) -> float:
    """Images/s of a system's own re-iterable loader, timed like bench_suite's ``loader_rate``."""
    for i, _ in enumerate(loader):
        if i + 1 >= warmup_batches:
            break
    images, started = 0, time.perf_counter()
    while True:
        for batch in loader:
            images += len(batch[1])
        elapsed = time.perf_counter() - started
        if elapsed >= min_seconds:
            break
    return images / elapsed


# -- ImageFolder, the baseline ---------------------------------------------------------------------


class ImageFolderAdapter(Adapter):
    system = "ImageFolder"

    def routes(self, group: str) -> list[Route]:
        if group == "photo":
            return [Route("ImageFolder (PIL)", None, dataset=lambda tree: ImageFolder(tree, transform=PIL_TRANSFORM))]
        return [Route("ImageFolder (PIL, PILToTensor)", None, dataset=lambda tree: ImageFolder(tree, transform=TINY_PIPELINE))]


# -- torchpack: one small function per route, so that new routes are one more function -------------


def tp_default(store: str):
    """The drop-in: LMDB, PIL decode, the same transforms as ImageFolder (pixel-identical)."""
    return torchpack.LMDBImageFolder(store, transform=PIL_TRANSFORM)


def tp_fast(store: str):
    """The fast path: scaled JPEG decode to a uint8 tensor, then v2 Resize(256)+CenterCrop(224)."""
    return torchpack.LMDBImageFolder(store, transform=TENSOR_TRANSFORM, decode="tensor", decode_size=SHORT_SIDE)


def tp_tensor(store: str):
    """Decode to a uint8 tensor (JPEG without PIL; raw pixels with one copy), then v2 Resize(256)+CenterCrop(224)."""
    cls = torchpack.HDF5ImageFolder if store.endswith(".h5") else torchpack.LMDBImageFolder
    return cls(store, transform=TENSOR_TRANSFORM, decode="tensor")


class tp_fused:  # noqa: N801 - used like the functions above
    """torchpack's fastest route: decode to a tensor (scaled, for JPEG), then the crop-first fused
    ``ResizedCenterCrop`` (FFCV's geometry), in ``threads`` threads of the training process.

    A class, not a closure: the route is picklable like the others.
    """

    def __init__(self, threads: int, decode_size: int | None = SHORT_SIDE) -> None:
        self.threads = threads
        self.decode_size = decode_size

    def __call__(self, store: str):
        cls = torchpack.HDF5ImageFolder if store.endswith(".h5") else torchpack.LMDBImageFolder
        return cls(
            store, transform=torchpack.ResizedCenterCrop(CROP, CROP / SHORT_SIDE), decode="tensor",
            decode_size=self.decode_size, threads=self.threads,
        )


def tp_raw(store: str):
    """Raw (decoded) tiny images: whole-batch reads through ``__getitems__`` with SkipBadCollate."""
    return torchpack.HDF5ImageFolder(store, decode="tensor")


def tp_reencode_store(short_side: int) -> Store:
    """torchpack's re-encoded store: JPEG q90 with the short side capped at ``short_side``."""
    options = {"storage": "reencode", "short_side": short_side, "quality": TP_QUALITY}
    return Store(f"lmdb reencode s{short_side}", ".lmdb", torchpack_options=options, reencoded=True, cap=Cap("short", short_side))


class TorchpackAdapter(Adapter):
    system = "torchpack"
    modules = ("torchpack",)

    def fused_routes(self) -> list[Route]:
        """Each photo store read by torchpack's fastest route: in the training process, with as many
        decode threads as the other systems get workers, and the crop-first fused resize."""
        t, s, c = self.settings.workers, SHORT_SIDE, TP_COMPARABLE_SHORT_SIDE
        fused = f"in-process, threads={t}, fused crop+resize"
        workers = f"{t} workers, fused crop+resize"
        return [
            Route(f"LMDB fast (decode_size=256), {fused}", "lmdb", dataset=tp_fused(t), workers=0),
            Route(f"HDF5 raw, full size, {fused}", "hdf5 raw", dataset=tp_fused(t, None), workers=0),
            Route(f"HDF5 raw, full size, {workers}", "hdf5 raw", dataset=tp_fused(1, None)),
            Route(f"HDF5 raw short side {c}, {fused}", f"hdf5 raw s{c}", dataset=tp_fused(t, None), workers=0),
            Route(f"HDF5 raw short side {c}, {workers}", f"hdf5 raw s{c}", dataset=tp_fused(1, None)),
            Route(f"LMDB reencode q{TP_QUALITY} short side {s}, {fused}", f"lmdb reencode s{s}", dataset=tp_fused(t), workers=0),
            Route(f"LMDB reencode q{TP_QUALITY} short side {c}, {fused}", f"lmdb reencode s{c}", dataset=tp_fused(t), workers=0),
            Route(f"LMDB reencode q{TP_QUALITY} short side {c}, {workers}", f"lmdb reencode s{c}", dataset=tp_fused(1)),
        ]

    def stores(self, group: str) -> list[Store]:
        if group == "photo":
            return [
                Store("lmdb", ".lmdb", torchpack_options={}),
                tp_reencode_store(SHORT_SIDE),  # our recipe: ImageNet's evaluation resize
                tp_reencode_store(TP_COMPARABLE_SHORT_SIDE),  # about FFCV's pixel budget
                # decoded pixels at full size: the counterpart of FFCV's raw field without resizing
                Store("hdf5 raw", ".h5", torchpack_options={"storage": "raw", "raw_compression": "none"}, raw_photos=True),
                # decoded pixels at about FFCV's pixel budget: the counterpart of its resized raw field
                Store(
                    f"hdf5 raw s{TP_COMPARABLE_SHORT_SIDE}",
                    ".h5",
                    torchpack_options={"storage": "raw", "raw_compression": "none", "short_side": TP_COMPARABLE_SHORT_SIDE},
                    cap=Cap("short", TP_COMPARABLE_SHORT_SIDE),
                    raw_photos=True,
                ),
            ]
        return [Store("hdf5 raw", ".h5", torchpack_options={"storage": "raw", "raw_compression": "none"})]

    def routes(self, group: str) -> list[Route]:
        if group == "photo":
            s, c = SHORT_SIDE, TP_COMPARABLE_SHORT_SIDE
            return [
                Route("LMDB default (PIL)", "lmdb", dataset=tp_default),
                Route("LMDB fast (tensor, decode_size=256)", "lmdb", dataset=tp_fast),
                Route("HDF5 raw, full size, tensor + v2", "hdf5 raw", dataset=tp_tensor),
                Route(f"LMDB reencode q{TP_QUALITY} short side {s}, PIL", f"lmdb reencode s{s}", dataset=tp_default),
                Route(f"LMDB reencode q{TP_QUALITY} short side {s}, tensor", f"lmdb reencode s{s}", dataset=tp_fast),
                Route(f"LMDB reencode q{TP_QUALITY} short side {c}, tensor + v2", f"lmdb reencode s{c}", dataset=tp_tensor),
                *self.fused_routes(),
            ]
        collate = torchpack.SkipBadCollate()
        return [
            Route(f"HDF5 raw, batched, {self.settings.workers} workers", "hdf5 raw", dataset=tp_raw, collate=collate, array_batches=True),
            Route(
                "HDF5 raw, whole batches in-process (num_workers=0, ArrayBatchSampler: recommended for raw tiny stores)",
                "hdf5 raw", dataset=tp_raw, collate=collate, workers=0, array_batches=True,
            ),
        ]


# -- WebDataset ------------------------------------------------------------------------------------


def wds_write(src: str, dst: str, group: str, workers: int) -> None:
    """ShardWriter, as WebDataset's docs write ImageNet: one sample = key + image file + class."""
    import webdataset as wds

    os.makedirs(dst, exist_ok=True)
    size = shard_bytes(src, group, workers)
    with wds.ShardWriter(os.path.join(dst, "shard-%06d.tar"), maxsize=size, maxcount=10**7, verbose=0) as sink:
        for i, (path, target) in enumerate(tree_samples(src)):
            sample = {"__key__": f"{i:08d}", "cls": target}  # no dots: WebDataset splits keys at the first one
            if group == "photo":
                with open(path, "rb") as f:  # the file's bytes under its extension ("jpg")
                    sample[os.path.splitext(path)[1][1:].lower()] = f.read()
            else:
                sample["npy"] = chw_pixels(path)
            sink.write(sample)


def wds_pipeline(store: str, group: str, shuffle: bool, batch: int | None):
    """The docs' pipeline: shard shuffle, sample shuffle on the bytes, decode, transform, batch in the workers."""
    import webdataset as wds

    urls = sorted(os.path.join(store, n) for n in os.listdir(store) if n.endswith(".tar"))
    ds = wds.WebDataset(urls, shardshuffle=100 if shuffle else False, empty_check=False)
    if shuffle:
        ds = ds.shuffle(1000)
    if group == "photo":
        ds = ds.decode("pil").to_tuple("jpg;jpeg;png", "cls").map_tuple(PIL_TRANSFORM, int)
    else:
        ds = ds.decode().to_tuple("npy", "cls")
    return ds.batched(batch) if batch else ds


class WebDatasetAdapter(Adapter):
    system = "WebDataset"
    modules = ("webdataset",)

    def stores(self, group: str) -> list[Store]:
        return [Store("tar shards", "", convert=lambda s, d, w, g=group: wds_write(s, d, g, w))]

    def routes(self, group: str) -> list[Route]:
        def loader(store: str, workers: int, batch: int):
            import webdataset as wds

            return wds.WebLoader(
                wds_pipeline(store, group, True, batch), batch_size=None, num_workers=workers, persistent_workers=workers > 0
            )

        def probe(store: str) -> Probe:
            def iterate():
                for image, target in wds_pipeline(store, group, False, None):
                    yield torch.as_tensor(image), int(target)

            return Probe(iterate=iterate, notes=["IterableDataset: no len, no dataset[i]"])

        what = "decode('pil') + the PIL transforms" if group == "photo" else "decoded .npy arrays"
        return [Route(f"tar shards, {what}, WebLoader", "tar shards", loader=loader, probe=probe)]


# -- LitData ---------------------------------------------------------------------------------------


def lit_photo_item(item: tuple[str, int]) -> dict:
    # A JpegImageFile opened from a file: LitData's JPEG serializer stores the file's bytes as they are.
    return {"image": Image.open(item[0]), "label": item[1]}


def lit_tiny_item(item: tuple[str, int]) -> dict:
    # A fixed-shape uint8 tensor: LitData stores and returns it as is.
    return {"image": torch.from_numpy(chw_pixels(item[0])), "label": item[1]}


def lit_photo_transform(sample: dict) -> tuple[torch.Tensor, int]:
    # LitData decodes JPEG with torchvision.io.decode_jpeg to a uint8 CHW tensor: tensor transforms follow.
    return TENSOR_TRANSFORM(sample["image"]), sample["label"]


def lit_tiny_transform(sample: dict) -> tuple[torch.Tensor, int]:
    return sample["image"], sample["label"]


def lit_optimize(src: str, dst: str, group: str, workers: int) -> None:
    import litdata

    litdata.optimize(
        fn=lit_photo_item if group == "photo" else lit_tiny_item,
        inputs=tree_samples(src),
        output_dir=dst,
        num_workers=max(workers, 1),
        chunk_bytes=shard_bytes(src, group, workers),
        mode="overwrite",
        verbose=False,
    )


class LitDataAdapter(Adapter):
    system = "LitData"
    modules = ("litdata",)

    def stores(self, group: str) -> list[Store]:
        return [Store("optimized chunks", "", convert=lambda s, d, w, g=group: lit_optimize(s, d, g, w))]

    def _dataset(self, store: str, group: str, shuffle: bool):
        import litdata

        transform = lit_photo_transform if group == "photo" else lit_tiny_transform
        return litdata.StreamingDataset(store, shuffle=shuffle, transform=transform)

    def routes(self, group: str) -> list[Route]:
        def loader(store: str, workers: int, batch: int):
            import litdata

            # persistent workers as for every other row; LitData still yields each epoch in full
            return litdata.StreamingDataLoader(
                self._dataset(store, group, True), batch_size=batch, num_workers=workers, persistent_workers=workers > 0
            )

        def probe(store: str) -> Probe:
            ds = self._dataset(store, group, False)
            return Probe(length=len(ds), iterate=lambda: iter(ds), getitem=lambda i: ds[i])

        what = "decode_jpeg + v2 transforms" if group == "photo" else "uint8 tensors"
        return [Route(f"optimize, {what}, StreamingDataLoader", "optimized chunks", loader=loader, probe=probe)]


# -- Mosaic Streaming ------------------------------------------------------------------------------


def mds_write(src: str, dst: str, group: str, workers: int) -> None:
    """MDSWriter with the columns of Streaming's own ImageNet converter (``x`` jpeg, ``y`` int)."""
    from streaming import MDSWriter

    columns = {"x": "jpeg", "y": "int"} if group == "photo" else {"x": "ndarray:uint8:3,28,28", "y": "int"}
    with MDSWriter(out=dst, columns=columns, size_limit=shard_bytes(src, group, workers)) as out:
        for path, target in tree_samples(src):
            if group == "photo":
                with Image.open(path) as image:  # the jpeg encoding stores an opened JPEG file's bytes as they are
                    out.write({"x": image, "y": target})
            else:
                out.write({"x": chw_pixels(path), "y": target})


def mds_dataset(store: str, group: str, shuffle: bool, batch: int):
    """``StreamingImageNet`` (photos, with the PIL transforms) or a two-line StreamingDataset subclass (tiny)."""
    if group == "photo":
        from streaming.vision import StreamingImageNet

        return StreamingImageNet(local=store, shuffle=shuffle, batch_size=batch, transform=RGBThen(PIL_TRANSFORM))
    return mosaic_tiny_class()(local=store, shuffle=shuffle, batch_size=batch)


def mosaic_tiny_class() -> type:
    """MosaicTiny subclasses a class of an optional package, so it is made on first use."""
    if "MosaicTiny" in globals():
        return globals()["MosaicTiny"]
    from streaming import StreamingDataset

    class MosaicTiny(StreamingDataset):
        """Streaming's documented way to shape samples: subclass and override ``get_item``."""

        def get_item(self, idx: int):
            sample = super().get_item(idx)
            return torch.tensor(sample["x"]), sample["y"]  # a copy: the decoded array is read-only

    MosaicTiny.__module__, MosaicTiny.__qualname__ = __name__, "MosaicTiny"
    globals()["MosaicTiny"] = MosaicTiny  # so that pickle finds it as bench_peers.MosaicTiny
    return MosaicTiny


def __getattr__(name: str):
    if name == "MosaicTiny":  # unpickling in a process that has not made it yet
        return mosaic_tiny_class()
    raise AttributeError(name)


class MosaicAdapter(Adapter):
    system = "Mosaic Streaming"
    modules = ("streaming",)

    def stores(self, group: str) -> list[Store]:
        return [Store("MDS shards", "", convert=lambda s, d, w, g=group: mds_write(s, d, g, w))]

    def routes(self, group: str) -> list[Route]:
        def loader(store: str, workers: int, batch: int):
            from torch.utils.data import DataLoader

            ds = mds_dataset(store, group, True, batch)
            return DataLoader(ds, batch_size=batch, num_workers=workers, persistent_workers=workers > 0)

        def probe(store: str) -> Probe:
            ds = mds_dataset(store, group, False, self.settings.batch(group))
            unpack = lambda item: (item[0], int(item[1]))  # noqa: E731
            return Probe(length=len(ds), iterate=lambda: map(unpack, iter(ds)), getitem=lambda i: unpack(ds[i]))

        what = "StreamingImageNet, PIL transforms" if group == "photo" else "ndarray column"
        return [Route(f"MDS, {what}, DataLoader", "MDS shards", loader=loader, probe=probe)]


# -- Hugging Face datasets -------------------------------------------------------------------------


def hf_tiny_rows(items: list[tuple[str, int]]):
    for path, target in items:
        yield {"image": chw_pixels(path), "label": target}


def hf_convert(src: str, dst: str, group: str, workers: int) -> None:
    """Photos: the ``imagefolder`` builder, then ``save_to_disk`` (which embeds the image bytes).
    Tiny: ``from_generator`` into an ``Array3D`` uint8 column, HF's fixed-shape array type."""
    import datasets

    cache = tempfile.mkdtemp(prefix="hf_cache_", dir=os.path.dirname(os.path.abspath(dst)))
    try:
        num_proc = workers if workers > 1 else None
        if group == "photo":
            ds = datasets.load_dataset("imagefolder", data_dir=src, split="train", cache_dir=cache, num_proc=num_proc)
        else:
            classes = ImageFolder(src).classes
            features = datasets.Features(
                {"image": datasets.Array3D(shape=(3, 28, 28), dtype="uint8"), "label": datasets.ClassLabel(names=classes)}
            )
            ds = datasets.Dataset.from_generator(
                hf_tiny_rows, features=features, gen_kwargs={"items": tree_samples(src)}, num_proc=num_proc, cache_dir=cache
            )
        ds.save_to_disk(dst, num_proc=num_proc)
    finally:
        shutil.rmtree(cache, ignore_errors=True)


def hf_photo_transform(batch: dict) -> dict:
    return {"image": [PIL_TRANSFORM(image.convert("RGB")) for image in batch["image"]], "label": batch["label"]}


class HFAdapter(Adapter):
    system = "HF datasets"
    modules = ("datasets",)

    def stores(self, group: str) -> list[Store]:
        return [Store("save_to_disk", "", convert=lambda s, d, w, g=group: hf_convert(s, d, g, w))]

    def _dataset(self, store: str, group: str):
        import datasets

        ds = datasets.load_from_disk(store)
        return ds.with_transform(hf_photo_transform) if group == "photo" else ds.with_format("torch")

    def routes(self, group: str) -> list[Route]:
        def probe(store: str) -> Probe:
            ds = self._dataset(store, group)
            label = ds.features["label"]  # a ClassLabel: the class names are kept, though not as attributes
            return dataset_probe(
                ds,
                unpack=first_image,
                classes=list(label.names),
                class_to_idx={n: label.str2int(n) for n in label.names},
                notes=["classes from features['label'].names"],
            )

        what = "with_transform, PIL transforms" if group == "photo" else "Array3D, with_format('torch')"
        return [
            Route(
                f"load_from_disk, {what}, DataLoader",
                "save_to_disk",
                dataset=lambda store: self._dataset(store, group),
                collate=DictToTuple(),
                probe=probe,
            )
        ]


# -- FFCV ------------------------------------------------------------------------------------------


def ffcv_write(src: str, dst: str, group: str, mode: str, workers: int, max_resolution: int | None = None) -> None:
    """DatasetWriter with an ``RGBImageField``; ``max_resolution=None`` keeps every image at its size."""
    from ffcv.fields import IntField, RGBImageField
    from ffcv.writer import DatasetWriter

    if group == "photo":
        image = RGBImageField(write_mode=mode, max_resolution=max_resolution, jpeg_quality=FFCV_QUALITY)
    else:
        image = RGBImageField(write_mode="raw")
    writer = DatasetWriter(dst, {"image": image, "label": IntField()}, num_workers=max(workers, 1))
    writer.from_indexed_dataset(ImageFolder(src))  # FFCV's docs feed it a torchvision dataset of PIL images


def ffcv_loader(store: str, group: str, workers: int, batch: int, order: str = "RANDOM", indices=None):
    """FFCV's Loader; photos with its fused decode + center crop + resize (the ffcv-imagenet validation pipeline)."""
    from ffcv.fields.decoders import CenterCropRGBImageDecoder, IntDecoder, SimpleRGBImageDecoder
    from ffcv.loader import Loader, OrderOption
    from ffcv.transforms import ToTensor, ToTorchImage

    decoder = CenterCropRGBImageDecoder((CROP, CROP), ratio=CROP / SHORT_SIDE) if group == "photo" else SimpleRGBImageDecoder()
    return Loader(
        store,
        batch_size=batch,
        num_workers=max(workers, 1),
        order=getattr(OrderOption, order),
        os_cache=True,  # the store is in the page cache, as every other row's
        drop_last=False,  # every image of the epoch, as the other rows
        indices=indices,
        pipelines={"image": [decoder, ToTensor(), ToTorchImage()], "label": [IntDecoder(), ToTensor()]},
    )


class FFCVAdapter(Adapter):
    system = "FFCV"
    modules = ("ffcv",)
    isolated = True

    def stores(self, group: str) -> list[Store]:
        if group == "photo":
            m, cap = FFCV_MAX_RESOLUTION, Cap("long", FFCV_MAX_RESOLUTION)
            return [
                # the ffcv-imagenet recipe's two ends: all JPEG and all raw, long side capped at 500
                Store(f"jpg q{FFCV_QUALITY}", ".ffcv", convert=lambda s, d, w: ffcv_write(s, d, "photo", "jpg", w, m),
                      reencoded=True, cap=cap),
                Store("raw", ".ffcv", convert=lambda s, d, w: ffcv_write(s, d, "photo", "raw", w, m), cap=cap, raw_photos=True),
                # decoded pixels at full size (max_resolution=None: nothing is resized): FFCV's lossless store
                Store("raw full", ".ffcv", convert=lambda s, d, w: ffcv_write(s, d, "photo", "raw", w), raw_photos=True),
            ]
        return [Store("raw", ".ffcv", convert=lambda s, d, w: ffcv_write(s, d, "tiny", "raw", w))]

    def routes(self, group: str) -> list[Route]:
        def probe(store: str) -> Probe:
            k = FIRST_K[group]

            def iterate():
                for images, targets in ffcv_loader(store, group, 1, k, "SEQUENTIAL", indices=list(range(k))):
                    for image, target in zip(images, targets.view(-1).tolist()):
                        yield image.contiguous(), target

            return Probe(iterate=iterate, notes=["Loader only: no dataset object, len() or dataset[i]"])

        loader = lambda store, workers, batch: ffcv_loader(store, group, workers, batch)  # noqa: E731
        if group == "photo":
            m = FFCV_MAX_RESOLUTION
            return [
                Route(f"jpg q{FFCV_QUALITY} long side {m}, fused center crop, Loader", f"jpg q{FFCV_QUALITY}", loader=loader, probe=probe),
                Route(f"raw long side {m}, fused center crop, Loader", "raw", loader=loader, probe=probe),
                Route("raw full size (max_resolution=None), fused center crop, Loader", "raw full", loader=loader, probe=probe),
            ]
        return [Route("raw field, Loader (threads)", "raw", loader=loader, probe=probe)]


ADAPTERS: dict[str, type[Adapter]] = {
    a.system: a
    for a in (ImageFolderAdapter, TorchpackAdapter, WebDatasetAdapter, LitDataAdapter, MosaicAdapter, HFAdapter, FFCVAdapter)
}


# -- measuring a route, here or in a job interpreter ------------------------------------------------


def measure_route(route: Route, path: str, group: str, settings: Settings) -> float:
    """Images/s of one route, in this process."""
    workers = settings.workers if route.workers is None else route.workers
    batch = settings.batch(group)
    try:
        if route.loader is not None:
            loader = route.loader(path, workers, batch)
            return iter_rate(loader, settings.min_seconds, 2 * max(workers, 1))
        return loader_rate(
            route.dataset(path), workers, batch, settings.min_seconds, route.collate, array_batches=route.array_batches
        )
    finally:
        loader = None
        gc.collect()  # let persistent workers and loader threads go before the next row starts


def collect_probe(route: Route, path: str, group: str, indices: list[int]) -> dict[str, Any]:
    """What the contract checks need from a route, as plain data (so a job interpreter can send it back)."""
    probe = route.probe(path) if route.probe else dataset_probe(route.dataset(path))
    out: dict[str, Any] = {
        "length": probe.length,
        "classes": probe.classes,
        "class_to_idx": probe.class_to_idx,
        "notes": list(probe.notes),
        "first": [],
        "random": None,
    }
    try:
        for image, target in probe.iterate():
            out["first"].append((torch.as_tensor(image).clone(), int(target)))
            if len(out["first"]) >= FIRST_K[group]:
                break
    except Exception as exc:
        out["first_error"] = f"{type(exc).__name__}: {exc}"
    if probe.getitem is not None:
        try:
            out["random"] = {}
            for i in indices:
                image, target = probe.getitem(i)
                out["random"][i] = (torch.as_tensor(image).clone(), int(target))
        except Exception as exc:
            out["random_error"] = f"{type(exc).__name__}: {exc}"
    return out


class PeerError(RuntimeError):
    """A failure inside a job interpreter, carrying its ``Type: message``."""


_JOB_CODE = "import sys; sys.path.insert(0, {here!r}); import bench_peers; sys.exit(bench_peers.job_main(sys.argv[1]))"


def run_job(python: str, job: dict[str, Any]) -> dict[str, Any]:
    """Run ``job`` (see ``job_main``) in a fresh ``python``; its result, or PeerError with its error."""
    done = subprocess.run([python, "-c", _JOB_CODE.format(here=HERE), json.dumps(job)], capture_output=True, text=True)
    for line in reversed(done.stdout.splitlines()):
        if line.startswith(JOB_MARK):
            result = json.loads(line[len(JOB_MARK):])
            if "error" in result:
                raise PeerError(result["error"])
            return result
    tail = " | ".join(done.stderr.strip().splitlines()[-3:])
    raise PeerError(f"{os.path.basename(python)} exited with status {done.returncode}: {tail}")


def find_route(adapter: Adapter, group: str, name: str) -> Route:
    return next(r for r in adapter.routes(group) if r.name == name)


def job_main(raw: str) -> int:
    """The job interpreter: convert a store, time a route or probe it; prints one JSON line."""
    job = json.loads(raw)
    torch.set_num_threads(1)
    try:
        settings = Settings(**job["settings"])
        adapter = ADAPTERS[job["system"]](settings)
        if job["kind"] == "convert":
            store = next(s for s in adapter.stores(job["group"]) if s.name == job["store"])
            started = time.perf_counter()
            store.convert(job["src"], job["dst"], settings.workers)
            result = {"seconds": time.perf_counter() - started}
        elif job["kind"] == "rate":
            route = find_route(adapter, job["group"], job["route"])
            result = {"rate": measure_route(route, job["path"], job["group"], settings)}
        else:  # probe
            route = find_route(adapter, job["group"], job["route"])
            torch.save(collect_probe(route, job["path"], job["group"], job["indices"]), job["out"])
            result = {"out": job["out"]}
    except Exception as exc:
        traceback.print_exc()
        result = {"error": f"{type(exc).__name__}: {exc}"}
    print(JOB_MARK + json.dumps(result), flush=True)
    return 0


# -- the contract ------------------------------------------------------------------------------------


def reference(tree: str, group: str, indices: list[int]) -> dict[str, Any]:
    """ImageFolder's answers for the contract checks: attributes and the samples that will be compared."""
    folder = ImageFolder(tree, transform=PIL_TRANSFORM if group == "photo" else TINY_PIPELINE)
    wanted = sorted(set(range(FIRST_K[group])) | set(indices))
    return {
        "length": len(folder),
        "classes": folder.classes,
        "class_to_idx": folder.class_to_idx,
        "samples": {i: (folder[i][0], int(folder[i][1])) for i in wanted},
    }


def compare(got: tuple[torch.Tensor, int], want: tuple[torch.Tensor, int]) -> tuple[bool, float | None, float | None]:
    """(same label and same picture, max abs difference, mean abs difference); None when the shapes differ."""
    image, target = got
    if tuple(image.shape) != tuple(want[0].shape):
        return False, None, None
    diff = (image.to(torch.int16) - want[0].to(torch.int16)).abs()
    mean = float(diff.float().mean())
    return target == want[1] and mean <= SAME_PICTURE, float(diff.max()), mean


def contract(probe: dict[str, Any], ref: dict[str, Any]) -> dict[str, Any]:
    """Each of ImageFolder's promises, checked: True, False, or None where the system offers no such thing."""
    pairs = [(got, ref["samples"][i]) for i, got in enumerate(probe["first"])]
    randoms = probe.get("random") or {}
    pairs_random = [(got, ref["samples"][int(i)]) for i, got in randoms.items()]
    checks = [compare(g, w) for g, w in pairs + pairs_random]
    # Pixels are compared on the samples that are ImageFolder's (label and picture); where none is,
    # the order column says so and a pixel difference would only measure two different pictures.
    matched = [c for c in checks if c[0]]
    shapes_ok = bool(checks) and all(c[1] is not None for c in checks)
    # Sample order, two ways: the first samples of the system's own unshuffled iteration, and
    # dataset[i] at random i where it has random access, are ImageFolder's (same label and picture).
    iteration = all(c[0] for c in checks[: len(pairs)]) if pairs else None
    index = all(c[0] for c in checks[len(pairs):]) if pairs_random else None
    result: dict[str, Any] = {
        "classes": None if probe["classes"] is None else list(probe["classes"]) == list(ref["classes"]),
        "class_to_idx": None if probe["class_to_idx"] is None else dict(probe["class_to_idx"]) == dict(ref["class_to_idx"]),
        "order": None if iteration is None and index is None else bool(iteration is not False and index is not False),
        "order_iteration": iteration,
        "order_index": index,
        "pixels_max_abs": max(c[1] for c in matched) if shapes_ok and matched else None,
        "pixels_mean_abs": float(np.mean([c[2] for c in matched])) if shapes_ok and matched else None,
        "pixels_exact": bool(shapes_ok and matched and all(c[1] == 0 for c in matched)),
        "pixels_compared": len(matched),
        # dataset[i] answers for arbitrary i (whether it is ImageFolder's sample i is "order")
        "random_access": None if probe.get("random") is None and "random_error" not in probe else "random_error" not in probe,
        "len": None if probe["length"] is None else probe["length"] == ref["length"],
        "checked_samples": len(checks),
        "output": f"{probe['first'][0][0].dtype} {tuple(probe['first'][0][0].shape)}".replace("torch.", "") if probe["first"] else None,
        "notes": probe.get("notes", []),
    }
    for key in ("first_error", "random_error"):
        if key in probe:
            result[key] = probe[key]
    if checks and not shapes_ok:
        result["pixels_note"] = "output shape differs from ImageFolder's"
    elif checks and not matched:
        result["pixels_note"] = "no sample in ImageFolder's order to compare"
    return result


# -- the run ---------------------------------------------------------------------------------------


@dataclass
class Row:
    """One route of one system: conversion, size, rate and contract."""

    system: str
    route: str
    group: str  # "photo" or "tiny"
    store: str | None
    kind: str = LOSSLESS  # one of KINDS
    cap: str | None = None  # the store's resize rule, e.g. "short side 256"; None: full size
    holds: str = "files"  # what the store keeps of a photo: "files" (its bytes), "jpeg" (re-encoded) or "pixels" (decoded)
    stored_megapixels: float | None = None  # mean pixels per stored photo, from the tree's sizes and ``cap``
    convert_seconds: float | None = None
    size_bytes: int | None = None
    size_ratio: float | None = None  # against the tree's files and folders
    rate: float | None = None  # images/s, median of the rounds
    ratio: float | None = None  # against ImageFolder in the same rounds
    rounds: list[float] = field(default_factory=list)
    contract: dict[str, Any] = field(default_factory=dict)
    error: str | None = None
    missing: bool = False  # the system does not import here

    @property
    def label(self) -> str:
        return f"{self.system}: {self.route}"


def store_path(work: str, adapter: Adapter, group: str, store: Store) -> str:
    slug = f"{group}_{adapter.system}_{store.name}".lower().replace(" ", "_")
    return os.path.join(work, "".join(c if c.isalnum() or c in "_-" else "_" for c in slug) + store.ext)


def store_size(path: str) -> int:
    return allocated_bytes([path]) if os.path.isfile(path) else tree_allocated_bytes(path)


def remove(path: str) -> None:
    if os.path.isdir(path):
        shutil.rmtree(path)
    elif os.path.exists(path):
        os.remove(path)


def store_files(path: str) -> list[str]:
    if os.path.isfile(path):
        return [path]
    return [os.path.join(d, f) for d, _, files in os.walk(path) for f in files]


def image_sizes(tree: str) -> list[tuple[int, int]]:
    """``(width, height)`` of every image of the tree, from the file headers."""
    sizes = []
    for path, _ in tree_samples(tree):
        with Image.open(path) as image:
            sizes.append(image.size)
    return sizes


def stored_sizes(sizes: list[tuple[int, int]], cap: Cap | None) -> list[tuple[int, int]]:
    return sizes if cap is None else [cap.apply(w, h) for w, h in sizes]


def raw_store_bytes(sizes: list[tuple[int, int]], cap: Cap | None) -> int:
    """Expected size of a store of decoded RGB pixels: 3 bytes a stored pixel (headers left out)."""
    return sum(3 * w * h for w, h in stored_sizes(sizes, cap))


def disk_refusal(path: str, expected: int, factor: int = RAW_DISK_FACTOR) -> str | None:
    """Why a store of ``expected`` bytes is not written at ``path`` (too little free space), else None."""
    free = shutil.disk_usage(os.path.dirname(os.path.abspath(path))).free
    if free >= factor * expected:
        return None
    return (f"not converted: needs {factor}x its expected {expected / 2**30:.1f} GiB free, "
            f"{free / 2**30:.1f} GiB free on the disk of {os.path.dirname(os.path.abspath(path))}")


def convert_group(
    adapters: list[Adapter], group: str, tree: str, work: str, settings: Settings, rounds: int,
    sizes: list[tuple[int, int]] | None = None, skip_raw_photos: bool = False,
) -> dict[tuple[str, str], dict[str, Any]]:
    """Every store of the group: {(system, store): {"path", "seconds", "size"}, {"error"} or {"refused"}}.

    torchpack's stores are written first, in one interpreter, then each peer's. Raw photo stores
    are left out with ``skip_raw_photos``, and refused (``disk_refusal``) when the disk, checked
    just before each is written, has not room for RAW_DISK_FACTOR times its expected size
    (``sizes``: the tree's image sizes).
    """
    done: dict[tuple[str, str], dict[str, Any]] = {}
    todo = [(a, st) for a in adapters for st in a.stores(group) if not (st.raw_photos and skip_raw_photos)]

    def refused(adapter: Adapter, store: Store, path: str) -> bool:
        why = disk_refusal(path, raw_store_bytes(sizes or [], store.cap)) if store.raw_photos else None
        if why:
            done[(adapter.system, store.name)] = {"refused": why}
            log(f"{adapter.system} ({store.name}): {why}")
        return why is not None

    tp_jobs: dict[tuple[str, str], tuple[str, str, dict]] = {}
    for adapter, store in todo:
        path = store_path(work, adapter, group, store)
        if store.torchpack_options is not None and not refused(adapter, store, path):
            tp_jobs[(adapter.system, store.name)] = (tree, path, {"workers": settings.workers, **store.torchpack_options})
    done.update(convert_torchpack(tp_jobs, rounds))
    for adapter, store in todo:
        path = store_path(work, adapter, group, store)
        if store.torchpack_options is None and not refused(adapter, store, path):
            done[(adapter.system, store.name)] = convert_peer(adapter, group, store, tree, path, settings, rounds)
    return done


def convert_torchpack(jobs: dict[tuple[str, str], tuple[str, str, dict]], rounds: int) -> dict[tuple[str, str], dict[str, Any]]:
    """All torchpack conversions in one interpreter (bench_suite's way): the ``seconds`` torchpack reports."""
    if not jobs:
        return {}
    try:
        results = [convert_all(list(jobs.values())) for _ in range(rounds)]
    except Exception as exc:
        return {key: {"error": f"{type(exc).__name__}: {exc}"} for key in jobs}
    done = {}
    for i, (key, (_, path, _)) in enumerate(jobs.items()):
        result = median_result([r[i] for r in results])
        done[key] = {"path": path, "seconds": result["seconds"], "size": store_size(path)}
    return done


def convert_peer(
    adapter: Adapter, group: str, store: Store, tree: str, path: str, settings: Settings, rounds: int
) -> dict[str, Any]:
    """One peer store, converted ``rounds`` times in a job interpreter (median seconds)."""
    seconds = []
    try:
        for _ in range(rounds):
            remove(path)
            job = {"kind": "convert", "system": adapter.system, "group": group, "store": store.name,
                   "src": tree, "dst": path, "settings": asdict(settings)}
            seconds.append(run_job(adapter.python, job)["seconds"])
        result = {"path": path, "seconds": float(np.median(seconds)), "size": store_size(path)}
        log(f"converted {group} tree with {adapter.system} ({store.name}): {result['seconds']:.1f} s")
    except Exception as exc:
        result = {"error": f"{type(exc).__name__}: {exc}" if not isinstance(exc, PeerError) else str(exc)}
        log(f"{adapter.system} ({store.name}) failed to convert: {result['error']}")
    return result


def probe_row(adapter: Adapter, route: Route, path: str, group: str, indices: list[int], work: str) -> dict[str, Any]:
    if not adapter.isolated:
        return collect_probe(route, path, group, indices)
    out = os.path.join(work, f"probe_{os.getpid()}.pt")
    job = {"kind": "probe", "system": adapter.system, "group": group, "route": route.name, "path": path,
           "indices": indices, "out": out, "settings": asdict(adapter.settings)}
    run_job(adapter.python, job)
    probe = torch.load(out, weights_only=True)
    os.remove(out)
    probe["random"] = None if probe["random"] is None else {int(k): v for k, v in probe["random"].items()}
    return probe


def rate_measure(
    adapter: Adapter, route: Route, path: str, group: str, row: Row, files: list[str]
) -> Callable[[], float]:
    """A measure for bench_suite's ``measure_rounds``: NaN and an error on the row instead of an exception.

    ``files`` (what the route reads) are read once before each timing: with several raw photo
    stores of ~1 MB a photo, one round's reads can push another row's store out of the page cache.
    """

    def measure() -> float:
        if row.error:
            return math.nan
        warm_page_cache(files)
        try:
            if adapter.isolated:
                job = {"kind": "rate", "system": adapter.system, "group": group, "route": route.name, "path": path,
                       "settings": asdict(adapter.settings)}
                value = run_job(adapter.python, job)["rate"]
            else:
                value = measure_route(route, path, group, adapter.settings)
        except Exception as exc:
            row.error = str(exc) if isinstance(exc, PeerError) else f"{type(exc).__name__}: {exc}"
            log(f"{row.label} failed: {row.error}")
            return math.nan
        row.rounds.append(value)
        return value

    return measure


def store_of(adapter: Adapter, group: str, route: Route) -> Store:
    """The Store a route reads (TREE for the routes that read the tree itself)."""
    if route.store is None:
        return TREE
    return next(st for st in adapter.stores(group) if st.name == route.store)


def describe(row: Row, store: Store, sizes: list[tuple[int, int]] | None) -> None:
    """Fill in the row's kind, cap and (photos) mean stored megapixels."""
    row.kind = store.kind(row.group)
    row.cap = None if store.cap is None else str(store.cap)
    row.holds = "pixels" if store.raw_photos else "jpeg" if store.reencoded else "files"
    if sizes:
        row.stored_megapixels = float(np.mean([w * h for w, h in stored_sizes(sizes, store.cap)])) / 1e6


def run_group(adapters: list[Adapter], group: str, tree: str, work: str, args: argparse.Namespace) -> list[Row]:
    """Convert, probe and time every route of every system on one tree."""
    settings = adapters[0].settings
    samples = tree_samples(tree)
    log(f"{group} tree: {tree} ({len(samples)} images)")
    missing = {a.system: a.missing() for a in adapters}
    for system, why in missing.items():
        if why:
            log(f"{system} is not available: {why}")
    ready = [a for a in adapters if not missing[a.system]]
    sizes = image_sizes(tree) if group == "photo" else None
    skip_raw = bool(getattr(args, "skip_raw_photos", False))
    stores = convert_group(ready, group, tree, work, settings, args.convert_rounds, sizes, skip_raw)
    tree_size = tree_allocated_bytes(tree)
    rng = np.random.default_rng(0)
    n = len(samples)
    indices = sorted(set(rng.choice(n, size=min(RANDOM_K[group], n), replace=False).tolist()) | {n - 1})
    ref = reference(tree, group, indices)
    tree_files = [p for p, _ in samples]
    warm_page_cache(tree_files + [f for s in stores.values() if "path" in s for f in store_files(s["path"])])

    rows, measures = [], {}
    for adapter in adapters:
        for route in adapter.routes(group):
            store = store_of(adapter, group, route)
            if store.raw_photos and skip_raw:
                continue
            row = Row(adapter.system, route.name, group, route.store)
            describe(row, store, sizes)
            rows.append(row)
            path = tree
            if missing[adapter.system]:
                row.error, row.missing = missing[adapter.system], True
                continue
            if route.store is not None:
                converted = stores[(adapter.system, route.store)]
                if "error" in converted or "refused" in converted:
                    row.error = converted.get("refused") or f"conversion failed: {converted['error']}"
                    continue
                path = converted["path"]
                row.convert_seconds, row.size_bytes = converted["seconds"], converted["size"]
                row.size_ratio = converted["size"] / tree_size
            else:
                row.size_bytes, row.size_ratio = tree_size, 1.0
            try:
                row.contract = contract(probe_row(adapter, route, path, group, indices, work), ref)
            except Exception as exc:
                row.contract = {"error": str(exc) if isinstance(exc, PeerError) else f"{type(exc).__name__}: {exc}"}
                log(f"{row.label}: contract probe failed: {row.contract['error']}")
            files = tree_files if route.store is None else store_files(path)
            measures[row.label] = rate_measure(adapter, route, path, group, row, files)
    medians = measure_rounds(measures, args.rounds) if measures else {}
    base = next((r for r in rows if r.system == "ImageFolder"), None)
    base_rate = medians.get(base.label) if base else None
    for row in rows:
        value = medians.get(row.label)
        if value is not None and not math.isnan(value) and not row.error:
            row.rate = value
            if base_rate and not math.isnan(base_rate):
                row.ratio = value / base_rate
    return rows


# -- reporting ---------------------------------------------------------------------------------------


def yes_no(value: Any, absent: str = "no") -> str:
    """A contract cell: a promise the system does not offer (None) is one it does not keep ("no")."""
    return {True: "yes", False: "no", None: absent}.get(value, str(value))


def order_cell(c: dict[str, Any]) -> str:
    if c.get("order") is False and c.get("order_index") and c.get("order_iteration") is False:
        return "by index only"  # dataset[i] is ImageFolder's sample i, its unshuffled iteration is not in that order
    return yes_no(c.get("order"), "n/a")


def pixels_cell(c: dict[str, Any]) -> str:
    if not c or c.get("pixels_max_abs") is None:
        return {None: "n/a"}.get(c.get("pixels_note"), "shape differs" if "shape" in c.get("pixels_note", "") else "n/a (order)")
    if c["pixels_exact"]:
        return "exact"
    return f"max {c['pixels_max_abs']:.0f}, mean {c['pixels_mean_abs']:.2f}"


def cells(row: Row) -> dict[str, str]:
    c = row.contract
    rate = f"{row.rate:,.0f}" if row.rate is not None else "not installed" if row.missing else "failed" if row.error else ""
    ratio = f"{row.ratio:.2f}x" if row.ratio is not None else ""
    return {
        "system / route": row.label,
        "kind": row.kind,
        "stored MP": "" if row.stored_megapixels is None else f"{row.stored_megapixels:.2f}",
        "convert s": "" if row.convert_seconds is None else f"{row.convert_seconds:.1f}",
        "size vs tree": "" if row.size_ratio is None else f"{row.size_ratio:.1%}",
        "photos img/s": rate if row.group == "photo" else "",
        "photos vs IF": ratio if row.group == "photo" else "",
        "tiny img/s": rate if row.group == "tiny" else "",
        "tiny vs IF": ratio if row.group == "tiny" else "",
        "classes": yes_no(c.get("classes")) if c and "error" not in c else "",
        "class_to_idx": yes_no(c.get("class_to_idx")) if c and "error" not in c else "",
        "order": order_cell(c) if c and "error" not in c else "",
        "pixels": pixels_cell(c) if c and "error" not in c else "",
        "random access": yes_no(c.get("random_access")) if c and "error" not in c else "",
        "len": yes_no(c.get("len")) if c and "error" not in c else "",
    }


#: Columns of numbers (right-aligned in Markdown); the contract columns are centred, the rest left.
NUMBER_COLUMNS = ("stored MP", "convert s", "size vs tree", "photos img/s", "photos vs IF", "tiny img/s", "tiny vs IF")
TEXT_COLUMNS = ("system / route", "kind")


def alignment(head: list[str]) -> str:
    return "| " + " | ".join("---:" if h in NUMBER_COLUMNS else "---" if h in TEXT_COLUMNS else ":---:" for h in head) + " |"


# -- head to head: the best torchpack route against the best peer, like with like ------------------

#: The comparisons of the summary: (title, group, kind).
MATCHUPS = (("photos, lossless", "photo", LOSSLESS), ("photos, re-encoded", "photo", REENCODED), ("tiny", "tiny", TINY_DECODED))
BASELINE = "ImageFolder"  # the baseline every ratio is against, not a peer
HEAD_TO_HEAD_TITLE = "Head to head (the best torchpack route against the best peer route, by images/s; ratio = torchpack / peer):"


def best(rows: list[Row]) -> Row | None:
    """The measured row with the most images/s, or None."""
    measured = [r for r in rows if r.rate is not None]
    return max(measured, key=lambda r: r.rate) if measured else None


def matchup(title: str, ours: Row | None, theirs: Row | None, **extra: Any) -> dict[str, Any]:
    """One line of the summary: both routes, their rates, the ratio torchpack / peer and the winner."""
    entry: dict[str, Any] = {"comparison": title, **extra}
    for side, row in (("torchpack", ours), ("peer", theirs)):
        entry[side] = None if row is None else row.label
        entry[f"{side}_rate"] = None if row is None else row.rate
        entry[f"{side}_cap"] = None if row is None else row.cap
        entry[f"{side}_stored_megapixels"] = None if row is None else row.stored_megapixels
    if ours is None or theirs is None:
        entry["ratio"] = None
        entry["winner"] = "no peer measured" if ours else "no torchpack route measured" if theirs else "nothing measured"
    else:
        entry["ratio"] = ours.rate / theirs.rate
        entry["winner"] = "torchpack" if ours.rate > theirs.rate else "peer" if ours.rate < theirs.rate else "tie"
    return entry


def head_to_head(rows: list[Row]) -> list[dict[str, Any]]:
    """For each (group, kind) of MATCHUPS: the best torchpack route against the best peer route.

    Re-encoded photos get a line per kind of store (JPEG, decoded pixels): the best peer route of
    that kind against torchpack's of the same kind whose stored megapixels are closest (the first
    line may set a small store of ours against a larger one of theirs).
    """
    summary = []
    for title, group, kind in MATCHUPS:
        part = [r for r in rows if r.group == group and r.kind == kind]
        mine = [r for r in part if r.system == "torchpack"]
        theirs = best([r for r in part if r.system not in ("torchpack", BASELINE)])
        if not mine and theirs is None:
            continue
        summary.append(matchup(title, best(mine), theirs, group=group, kind=kind))
        if kind != REENCODED:
            continue
        # Like with like: each kind of store a peer re-encodes to (JPEG, decoded pixels) against
        # torchpack's of the same kind at the nearest pixel budget.
        for holds, what in (("jpeg", "JPEG stores"), ("pixels", "decoded-pixel stores")):
            peer = best([r for r in part if r.system not in ("torchpack", BASELINE) and r.holds == holds])
            budget = [r for r in mine if r.holds == holds and r.rate is not None and r.stored_megapixels is not None]
            if peer is None or peer.stored_megapixels is None or not budget:
                continue
            closest = min(abs(r.stored_megapixels - peer.stored_megapixels) for r in budget)
            near = best([r for r in budget if abs(r.stored_megapixels - peer.stored_megapixels) == closest])
            summary.append(matchup(f"{title}, {what} at a comparable pixel budget", near, peer, group=group, kind=kind))
    return summary


def head_to_head_lines(summary: list[dict[str, Any]]) -> list[str]:
    """The summary as Markdown bullets (also printed)."""

    def side(entry: dict[str, Any], who: str) -> str:
        if entry[who] is None:
            return "none measured"
        size = entry[f"{who}_stored_megapixels"]  # None for tiny images
        store = "" if size is None else f" [{entry[f'{who}_cap'] or 'full size'}, {size:.2f} MP stored]"
        return f"{entry[who]}{store}: {entry[f'{who}_rate']:,.0f} img/s"

    lines = []
    for e in summary:
        verdict = f"{e['ratio']:.2f}x, {e['winner']} wins" if e["ratio"] is not None else e["winner"]
        lines.append(f"- {e['comparison']}: {side(e, 'torchpack')} vs {side(e, 'peer')}: {verdict}")
    return lines


def errors_of(row: Row) -> list[str]:
    found = [row.error] if row.error else []
    found += [f"contract: {row.contract[k]}" for k in ("error", "first_error", "random_error") if k in row.contract]
    return found


def markdown(rows: list[Row], config: dict[str, Any], summary: list[dict[str, Any]]) -> str:
    lines = [
        f"Workers: {config['workers']}, rounds: {config['rounds']} (medians), photo tree: {config['photo_images']} images, "
        f"tiny tree: {config['tiny_images']} images, CPUs: {config['cpus']}, Python {config['python']}, torch {config['torch']}.",
        "",
    ]
    table = [cells(r) for r in rows]
    if table:
        head = list(table[0])
        lines += ["| " + " | ".join(head) + " |", alignment(head)]
        lines += ["| " + " | ".join(t[h] for h in head) + " |" for t in table]
    lines += ["", "Kinds: lossless = the source files' bytes, or pixels decoded from them without resizing; re-encoded "
              "= resized and/or JPEG re-encoded (cap in the route's name); tiny/decoded = 28x28 images stored as pixels. "
              "Stored MP: mean megapixels per stored photo, from the tree's image sizes and the store's cap."]
    if config.get("skip_raw_photos"):
        lines += ["", "Raw photo stores (decoded pixels) were skipped (--skip-raw-photos)."]
    lines += ["", HEAD_TO_HEAD_TITLE, ""]
    lines += head_to_head_lines(summary) or ["- nothing measured"]
    failures = [(r, e) for r in rows for e in errors_of(r)]
    if failures:
        lines += ["", "Failures:", ""] + [f"- {r.label} ({r.group}): {e}" for r, e in failures]
    lines += ["", "Versions: " + ", ".join(f"{k} {v}" for k, v in config["versions"].items()) + "."]
    return "\n".join(lines) + "\n"


def print_table(rows: list[Row]) -> None:
    table = [cells(r) for r in rows]
    if not table:
        return
    widths = {h: max(len(h), *(len(t[h]) for t in table)) for h in table[0]}
    print("  ".join(h.ljust(widths[h]) for h in widths))
    for t in table:
        print("  ".join(t[h].ljust(widths[h]) for h in widths))
    for r in rows:
        for e in errors_of(r):
            print(f"! {r.label} ({r.group}): {e}")


def plot(rows: list[Row], path: str) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    groups = [g for g in ("photo", "tiny") if any(r.group == g for r in rows)]
    titles = {"photo": "Photos: Resize(256), CenterCrop(224), uint8 tensor", "tiny": "28x28 images, 3x28x28 uint8 tensor"}
    fig, axes = plt.subplots(len(groups), 1, figsize=(13, 1.6 + 0.42 * len(rows)), squeeze=False)
    for ax, group in zip(axes[:, 0], groups):
        part = [r for r in rows if r.group == group]
        values = [r.ratio if r.ratio else 1.0 for r in part]
        colours = ["tab:grey" if r.system == "ImageFolder" else "tab:blue" if r.system == "torchpack" else "tab:orange" for r in part]
        colours = [c if r.ratio else "white" for c, r in zip(colours, part)]
        ax.barh([f"{r.label} [{r.kind}]" for r in part], values, color=colours, edgecolor="black", linewidth=0.3)
        for y, (r, v) in enumerate(zip(part, values)):
            text = f" {r.ratio:.2f}x ({r.rate:,.0f}/s)" if r.ratio else f" failed: {(r.error or '').split(':')[0]}" if r.error else " n/a"
            ax.text(v, y, text, va="center", fontsize=8)
        ax.set_xscale("log")
        ax.axvline(1.0, color="black", linewidth=0.6)
        ax.set_xlim(min(min(values) / 1.5, 0.5), max(values) * 6)
        ax.invert_yaxis()
        ax.set_title(titles[group], fontsize=10)
        ax.set_xlabel("images/s against ImageFolder in the same rounds (log scale)")
        ax.tick_params(axis="y", labelsize=8)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


def versions(adapters: list[Adapter]) -> dict[str, str]:
    """Installed versions of the systems (as pip sees them), for the report."""
    from importlib import metadata

    names = {"torchpack": "torchpack", "torch": "torch", "torchvision": "torchvision", "numpy": "numpy",
             "WebDataset": "webdataset", "LitData": "litdata", "Mosaic Streaming": "mosaicml-streaming",
             "HF datasets": "datasets", "FFCV": "ffcv"}
    found = {}
    for label, dist in names.items():
        adapter = next((a for a in adapters if a.system == label), None)
        if adapter is not None and adapter.python != sys.executable:
            done = subprocess.run([adapter.python, "-c", f"from importlib import metadata; print(metadata.version({dist!r}))"],
                                  capture_output=True, text=True)
            found[label] = done.stdout.strip() if done.returncode == 0 else "not installed"
            continue
        try:
            found[label] = metadata.version(dist)
        except metadata.PackageNotFoundError:
            found[label] = "not installed"
    return found


def report(rows: list[Row], config: dict[str, Any], out: str) -> None:
    summary = head_to_head(rows)
    print_table(rows)
    print("\n" + HEAD_TO_HEAD_TITLE)
    print("\n".join(head_to_head_lines(summary)) or "- nothing measured")
    with open(os.path.join(out, "peers.json"), "w", encoding="utf-8") as f:
        json.dump({"config": config, "rows": [asdict(r) for r in rows], "head_to_head": summary}, f, indent=2)
    with open(os.path.join(out, "peers.md"), "w", encoding="utf-8") as f:
        f.write(markdown(rows, config, summary))
    plot(rows, os.path.join(out, "peers.png"))
    log(f"wrote {out}/peers.json, peers.md, peers.png")


# -- trees -------------------------------------------------------------------------------------------


def subset_tree(src: str, dst: str, limit: int) -> str:
    """Copy ``limit`` files spread evenly over ``src`` (every class keeps some) into ``dst``."""
    samples = ImageFolder(src).samples
    for i in sorted(set(np.linspace(0, len(samples) - 1, min(limit, len(samples))).astype(int).tolist())):
        rel = os.path.relpath(samples[i][0], src)
        os.makedirs(os.path.dirname(os.path.join(dst, rel)), exist_ok=True)
        shutil.copy2(samples[i][0], os.path.join(dst, rel))
    return dst


def prepare_trees(args: argparse.Namespace, work: str) -> dict[str, str]:
    trees = {}
    if not args.skip_photo:
        tree = args.tree or make_photo_tree(os.path.join(work, "photos"), 4 if args.quick else 10, 8 if args.quick else 100)
        trees["photo"] = subset_tree(tree, os.path.join(work, "photos_subset"), args.photo_limit) if args.photo_limit else tree
    if not args.skip_tiny:
        tree = args.tiny or make_tiny_tree(os.path.join(work, "tiny"), 200 if args.quick else 30000)
        trees["tiny"] = subset_tree(tree, os.path.join(work, "tiny_subset"), args.tiny_limit) if args.tiny_limit else tree
    return trees


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--tree", help="ImageFolder tree of JPEG photos (default: generate one)")
    ap.add_argument("--tiny", help="ImageFolder tree of 28x28 PNGs (default: generate one)")
    ap.add_argument("--workers", type=int, default=2, help="DataLoader workers / converter processes / FFCV threads (default 2)")
    ap.add_argument("--out", default="bench_out/peers", help="folder for the results (and, under work/, the stores)")
    ap.add_argument("--rounds", type=int, help="round-robin rounds, medians reported (default 3; 1 with --quick)")
    ap.add_argument("--convert-rounds", type=int, default=1, help="conversions per store, median reported (default 1)")
    ap.add_argument("--quick", action="store_true", help="a smoke run: small batches, short timings, small generated trees")
    ap.add_argument("--min-seconds", type=float, help="time each rate over whole epochs for at least this long (default 3; 0.2 quick)")
    ap.add_argument("--photo-limit", type=int, help="use only this many photos of --tree, spread over its classes")
    ap.add_argument("--tiny-limit", type=int, help="use only this many images of --tiny")
    ap.add_argument("--systems", help=f"comma-separated subset of: {', '.join(ADAPTERS)} (ImageFolder is always in)")
    ap.add_argument("--ffcv-python", help="interpreter with FFCV (and torchpack) installed, if not this one")
    ap.add_argument("--skip-photo", action="store_true")
    ap.add_argument("--skip-tiny", action="store_true")
    ap.add_argument("--skip-raw-photos", action="store_true",
                    help="leave out the stores of decoded photo pixels (FFCV raw, torchpack raw): about 1 MB a photo each")
    ap.add_argument("--keep", action="store_true", help="keep the stores in OUT/work")
    args = ap.parse_args(argv)
    if args.workers < 1:
        ap.error("--workers must be >= 1")
    args.rounds = args.rounds or (1 if args.quick else 3)
    if args.min_seconds is None:
        args.min_seconds = 0.2 if args.quick else 3.0
    return args


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    warnings.filterwarnings("ignore", message=".*(canonical nodes|shardshuffle).*")
    torch.set_num_threads(1)
    out = os.path.abspath(args.out)
    work = os.path.join(out, "work")
    shutil.rmtree(work, ignore_errors=True)
    os.makedirs(work)
    settings = Settings(
        workers=args.workers,
        photo_batch=8 if args.quick else PHOTO_BATCH,
        tiny_batch=64 if args.quick else TINY_BATCH,
        min_seconds=args.min_seconds,
    )
    chosen = set(ADAPTERS) if not args.systems else {"ImageFolder", *(s.strip() for s in args.systems.split(","))}
    unknown = chosen - set(ADAPTERS)
    if unknown:
        raise SystemExit(f"unknown systems: {', '.join(sorted(unknown))}; known: {', '.join(ADAPTERS)}")
    adapters = [cls(settings, args.ffcv_python if name == "FFCV" else None) for name, cls in ADAPTERS.items() if name in chosen]
    started = time.perf_counter()
    trees = prepare_trees(args, work)
    rows: list[Row] = []
    for group, tree in trees.items():
        rows += run_group(adapters, group, tree, work, args)
    config = {
        "photo_tree": os.path.abspath(args.tree) if args.tree else "generated",
        "tiny_tree": os.path.abspath(args.tiny) if args.tiny else "generated",
        "photo_images": len(tree_samples(trees["photo"])) if "photo" in trees else 0,
        "tiny_images": len(tree_samples(trees["tiny"])) if "tiny" in trees else 0,
        "workers": args.workers,
        "rounds": args.rounds,
        "convert_rounds": args.convert_rounds,
        "min_seconds": args.min_seconds,
        "photo_batch": settings.photo_batch,
        "tiny_batch": settings.tiny_batch,
        "quick": args.quick,
        "skip_raw_photos": args.skip_raw_photos,
        "cpus": os.cpu_count(),
        "python": platform.python_version(),
        "torch": torch.__version__,
        "ffcv_python": args.ffcv_python,
        "versions": versions(adapters),
        "seconds": round(time.perf_counter() - started, 1),
    }
    report(rows, config, out)
    if not args.keep:
        shutil.rmtree(work, ignore_errors=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
