"""torchpack's benchmark suite: every read path against ImageFolder, in one run, on the same images.

usage::

    python benchmarks/bench_suite.py --tree PHOTOS [--tree PHOTOS_NATIVE ...] [--tiny TINY]
                                     [--workers 2] [--rounds 3] [--out bench_out/] [--quick]

Each ``--tree`` is an ImageFolder tree of photos (``../shared/data/get_photo_tree.sh OUT`` and
``get_photo_tree.sh OUT python3 --native`` build the team's two); without one it generates
photo-like JPEGs. ``--tiny`` is a tree of 28x28 PNGs (``make_tiny_tree.py`` makes one from real
photos); without it one is made from the first photo tree.

Every read path is measured twice: through a ``DataLoader`` with ``--workers`` worker
processes, and in the training process (``num_workers=0``), which is images per CPU-second:
what scales to a node with many cores. "Per item" means one ``__getitem__`` per sample (a
wrapper hides ``__getitems__``); "batched" means one ``__getitems__`` per batch. Every ratio
is against ImageFolder with ``--workers`` workers on the same tree, measured in the same run.
Page caches are warm, and every configuration is measured in ``--rounds`` round-robin rounds
(medians reported). Results go to ``OUT/results.json``, ``OUT/results.md`` and ``OUT/results.png``.
"""

from __future__ import annotations

import argparse
import io
import json
import math
import multiprocessing
import os
import platform
import shutil
import subprocess
import sys
import time
from dataclasses import asdict, dataclass, field
from typing import Any, Callable, Iterable

import numpy as np
import simplejpeg
import torch
from PIL import Image
from torch.utils.data import DataLoader, Dataset, default_collate
from torchvision import transforms as T
from torchvision.datasets import ImageFolder
from torchvision.transforms import v2

import torchpack
from torchpack.batch import batch_tensor
from torchpack.decode import jpeg_scale
from torchpack.ingest import check_image

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from make_tiny_tree import make_tiny_tree as tiny_tree_from_photos  # noqa: E402

DATASETS = {"lmdb": ("LMDBImageFolder", ".lmdb"), "hdf5": ("HDF5ImageFolder", ".h5")}
_STARTED = time.perf_counter()
PHOTO_BATCH = 64
TINY_BATCH = 512
SHORT_SIDE = 256
CROP = 224
#: The training-ready store: short side capped at 256 (ImageNet's evaluation resize), JPEG quality 90.
REENCODE = {"storage": "reencode", "short_side": SHORT_SIDE, "quality": 90}

# The ImageNet evaluation pipeline, on PIL images (ImageFolder and the default path) ...
PIL_TRANSFORM = T.Compose([T.Resize(SHORT_SIDE), T.CenterCrop(CROP), T.PILToTensor()])
# ... and on uint8 CHW tensors (the fast path): the same geometry, antialiased like PIL.
TENSOR_TRANSFORM = v2.Compose([v2.Resize(SHORT_SIDE, antialias=True), v2.CenterCrop(CROP)])


@dataclass
class Result:
    """One measured figure."""

    section: str  # "photo", "tiny", "convert", "size"
    tree: str  # which tree it was measured on
    name: str
    value: float  # images/s, or bytes for "size"
    workers: int | None = None  # DataLoader (or pool) processes; 0: in the training process
    unit: str = "img/s"
    ratio: float | None = None  # against ``baseline``
    baseline: str | None = None
    extra: dict[str, Any] = field(default_factory=dict)


# -- trees ------------------------------------------------------------------------------------


def photo_like(rng: np.random.Generator, width: int, height: int) -> np.ndarray:
    """Smooth random colour fields plus fine noise: compresses and decodes roughly like a photo."""
    coarse = rng.integers(0, 256, (max(2, height // 64), max(2, width // 64), 3), dtype=np.uint8)
    base = np.asarray(Image.fromarray(coarse).resize((width, height), Image.Resampling.BICUBIC), dtype=np.float32)
    return np.clip(base + rng.normal(0, 12, (height, width, 3)), 0, 255).astype(np.uint8)


def make_photo_tree(root: str, num_classes: int, per_class: int, seed: int = 0) -> str:
    """A tree of JPEGs with a short side of 256-640 px, like ImageNet's (or the photo tree's) files."""
    rng = np.random.default_rng(seed)
    for c in range(num_classes):
        folder = os.path.join(root, f"class{c:03d}")
        os.makedirs(folder, exist_ok=True)
        for i in range(per_class):
            short = int(rng.integers(256, 641))
            long = int(short * rng.uniform(1.0, 1.6))
            width, height = (long, short) if rng.random() < 0.7 else (short, long)
            image = Image.fromarray(photo_like(rng, width, height))
            image.save(os.path.join(folder, f"{i:05d}.jpg"), quality=int(rng.integers(80, 96)))
    return root


def make_tiny_tree(root: str, count: int, num_classes: int = 10, seed: int = 0) -> str:
    """``count`` synthetic 28x28 grayscale PNGs (rings and noise), for smoke runs without photos."""
    rng = np.random.default_rng(seed)
    y, x = np.mgrid[0:28, 0:28]
    for c in range(num_classes):
        os.makedirs(os.path.join(root, str(c)), exist_ok=True)
    for i in range(count):
        cx, cy, r = rng.uniform(9, 19, 2).tolist() + [rng.uniform(4, 9)]
        ring = np.abs(np.hypot(x - cx, y - cy) - r) < rng.uniform(1, 2.5)
        pixels = np.where(ring, 255, 0).astype(np.uint8) ^ (rng.random((28, 28)) < 0.02).astype(np.uint8) * 90
        Image.fromarray(pixels, "L").save(os.path.join(root, str(i % num_classes), f"{i:06d}.png"))
    return root


def tree_files(root: str) -> list[str]:
    """The files ImageFolder would read, in its order."""
    return [path for path, _ in ImageFolder(root).samples]


def allocated_bytes(paths: Iterable[str]) -> int:
    """Space the files take on disk (``st_blocks * 512``), not their apparent size."""
    return sum(os.stat(p).st_blocks * 512 for p in paths)


def tree_allocated_bytes(root: str) -> int:
    """Allocated size of a tree: its image files plus its folders."""
    total = 0
    for dirpath, _, filenames in os.walk(root):
        total += os.stat(dirpath).st_blocks * 512
        total += allocated_bytes(os.path.join(dirpath, f) for f in filenames)
    return total


def warm_page_cache(paths: Iterable[str]) -> int:
    """Read every file once so that the timed runs find it in the page cache."""
    total = 0
    for path in paths:
        with open(path, "rb") as f:
            while chunk := f.read(16 << 20):
                total += len(chunk)
    return total


def read_blobs(paths: Iterable[str]) -> list[bytes]:
    blobs = []
    for path in paths:
        with open(path, "rb") as f:
            blobs.append(f.read())
    return blobs


# -- DataLoader rates -------------------------------------------------------------------------


class PerItem(Dataset):
    """Hides a dataset's ``__getitems__``: the DataLoader then calls ``__getitem__`` once per sample."""

    def __init__(self, dataset) -> None:
        self.dataset = dataset

    def __len__(self) -> int:
        return len(self.dataset)

    def __getitem__(self, index: int):
        return self.dataset[index]


def loader_rate(
    dataset,
    workers: int,
    batch_size: int,
    min_seconds: float,
    collate_fn: Callable | None = None,
    warmup_batches: int | None = None,
    array_batches: bool = False,
) -> float:
    """Images/s through a shuffling DataLoader: warm-up batches, then batches for at least ``min_seconds``.

    Workers are persistent and started before the clock, as in a training run's second epoch.
    ``array_batches``: shuffle with ``torchpack.ArrayBatchSampler`` (batches as index arrays).
    """
    common = {"num_workers": workers, "persistent_workers": workers > 0, "collate_fn": collate_fn or default_collate}
    if array_batches:
        loader = DataLoader(dataset, batch_sampler=torchpack.ArrayBatchSampler(dataset, batch_size), **common)
    else:
        loader = DataLoader(dataset, batch_size=batch_size, shuffle=True, generator=torch.Generator().manual_seed(0), **common)
    warmup = warmup_batches if warmup_batches is not None else 2 * max(workers, 1)
    for i, _ in enumerate(loader):
        if i + 1 >= warmup:
            break
    images, started = 0, time.perf_counter()
    while True:
        for batch in loader:
            images += len(batch[1])
            if time.perf_counter() - started >= min_seconds:
                break
        elapsed = time.perf_counter() - started
        if elapsed >= min_seconds:
            break
    del loader
    return images / elapsed


def epoch_rate(dataset, batch_size: int, collate_fn: Callable) -> float:
    """Images/s of one whole shuffled epoch in this process, from a dataset no sample of which was read yet."""
    loader = DataLoader(dataset, batch_size=batch_size, shuffle=True, collate_fn=collate_fn, generator=torch.Generator().manual_seed(0))
    started = time.perf_counter()
    images = sum(len(batch[1]) for batch in loader)
    return images / (time.perf_counter() - started)


def full_pass(dataset, batch_size: int, collate_fn: Callable | None = None) -> None:
    """Read every sample once in this process (its CRC-32 is then checked, and remembered)."""
    for start in range(0, len(dataset), batch_size):
        (collate_fn or default_collate)(dataset.__getitems__(list(range(start, min(start + batch_size, len(dataset))))))


# -- bounds: the same work on bytes already in memory, no loader ------------------------------

_BLOBS: list[bytes] = []


def pil_path(data: bytes) -> torch.Tensor:
    """ImageFolder's loader plus the PIL transform, on bytes in memory."""
    with Image.open(io.BytesIO(data)) as image:
        return PIL_TRANSFORM(image.convert("RGB"))


def scaled_tensor_path(data: bytes) -> torch.Tensor:
    """simplejpeg's scaled decode (the smallest 1/2, 1/4, 1/8 still covering 256) plus the tensor transform."""
    height, width, _, _ = simplejpeg.decode_jpeg_header(data)
    scale = jpeg_scale(height, width, SHORT_SIDE)
    pixels = simplejpeg.decode_jpeg(
        data, colorspace="RGB", min_height=math.ceil(height / scale), min_width=math.ceil(width / scale)
    )
    return TENSOR_TRANSFORM(torch.from_numpy(pixels).permute(2, 0, 1))


def full_decode(data: bytes) -> tuple[int, int]:
    """A full Pillow decode to RGB, as ImageFolder's loader does."""
    with Image.open(io.BytesIO(data)) as image:
        return image.convert("RGB").size


BOUND_FUNCTIONS = {
    "pil": pil_path,
    "scaled_tensor": scaled_tensor_path,
    "full_decode": full_decode,
    "check": check_image,  # the converter's own check, as its workers run it
}


def _bound_init() -> None:
    torch.set_num_threads(1)  # as in DataLoader workers


def _bound_chunk(task: tuple[str, int, int]) -> int:
    function = BOUND_FUNCTIONS[task[0]]
    for i in range(task[1], task[2]):
        function(_BLOBS[i])
    return task[2] - task[1]


def decode_bound(blobs: list[bytes], function: str, workers: int, min_seconds: float, chunk: int = 16) -> float:
    """Images/s of ``function`` over in-memory ``blobs``: a pool of ``workers`` forked processes, or this one (0)."""
    global _BLOBS
    _BLOBS = blobs  # inherited by the forked workers: no bytes cross a pipe
    tasks = [(function, i, min(i + chunk, len(blobs))) for i in range(0, len(blobs), chunk)]
    images, started = 0, None
    if workers == 0:
        _bound_chunk(tasks[0])
        started = time.perf_counter()
        while time.perf_counter() - started < min_seconds:
            for task in tasks:
                images += _bound_chunk(task)
                if time.perf_counter() - started >= min_seconds:
                    break
    else:
        with multiprocessing.get_context("fork").Pool(workers, initializer=_bound_init) as pool:
            pool.map(_bound_chunk, tasks[: 2 * workers])  # warm up
            started = time.perf_counter()
            while time.perf_counter() - started < min_seconds:
                images += sum(pool.imap_unordered(_bound_chunk, tasks))
    elapsed = time.perf_counter() - started
    _BLOBS = []
    return images / elapsed


class TransportOnly(Dataset):
    """Ready-made batches, written once into shared memory and sent: what the DataLoader alone can deliver.

    ``touch=False`` sends memory it never wrote: the kernel maps it without zeroing it page by
    page, which no real batch can skip; kept as a second, looser ceiling.
    """

    def __init__(self, size: int, shape: tuple[int, ...] = (3, 28, 28), touch: bool = True) -> None:
        self.size = size
        self.shape = shape
        self.touch = touch
        self.template = torch.randint(0, 256, (TINY_BATCH, *shape), dtype=torch.uint8)

    def __len__(self) -> int:
        return self.size

    def __getitems__(self, indices: list[int]) -> torchpack.StackedBatch:
        images = batch_tensor((len(indices), *self.shape))
        if self.touch:
            images.copy_(self.template[: len(indices)])
        return torchpack.StackedBatch(images, torch.zeros(len(indices), dtype=torch.int64))


def gather_rate(pixels: np.ndarray, batch_size: int, min_seconds: float) -> float:
    """Images/s of a numpy gather of shuffled batches of rows from RAM into new tensors, in this process."""
    rng = np.random.default_rng(0)
    images, started = 0, time.perf_counter()
    while time.perf_counter() - started < min_seconds:
        order = rng.permutation(len(pixels))
        for start in range(0, len(order), batch_size):
            torch.from_numpy(pixels[order[start : start + batch_size]])
            images += min(batch_size, len(order) - start)
            if time.perf_counter() - started >= min_seconds:
                break
    return images / (time.perf_counter() - started)


# -- conversions, in a fresh interpreter --------------------------------------------------------

_CONVERT = """
import json, sys, time, torchpack
for src, dst, options in json.loads(sys.argv[1]):
    print(json.dumps(torchpack.convert(src, dst, overwrite=True, **options).as_dict()), flush=True)
"""


def convert_all(jobs: list[tuple[str, str, dict[str, Any]]]) -> list[dict[str, Any]]:
    """``torchpack.convert(src, dst, **options)`` for each job, in one fresh interpreter, as a user would run it.

    Not in this process: converter workers start with forkserver, which re-imports the
    ``__main__`` script in each of them, and this one imports torch (seconds per worker).
    """
    done = subprocess.run([sys.executable, "-c", _CONVERT, json.dumps(jobs)], capture_output=True, text=True)
    if done.returncode != 0:
        raise RuntimeError(f"converting failed:\n{done.stderr}")
    results = [json.loads(line) for line in done.stdout.splitlines() if line.startswith("{")]
    for (_, dst, _), result in zip(jobs, results):
        if result["bad_files"]:
            log(f"{dst}: left out {len(result['bad_files'])} bad files, e.g. {result['bad_files'][0]}")
    return results


def median_result(runs: list[dict[str, Any]]) -> dict[str, Any]:
    """The run with the median images/s (the typical one, robust to a noisy neighbour)."""
    return sorted(runs, key=lambda r: r["images_per_second"])[len(runs) // 2]


def measure_rounds(measures: dict[str, Callable[[], float]], rounds: int) -> dict[str, float]:
    """Each measure ``rounds`` times, round-robin so drift hits all alike; the median of each."""
    samples: dict[str, list[float]] = {name: [] for name in measures}
    for i in range(rounds):
        for name, measure in measures.items():
            samples[name].append(measure())
            log(f"round {i + 1}/{rounds} {name}: {samples[name][-1]:,.0f} img/s")
    return {name: float(np.median(values)) for name, values in samples.items()}


def dataset_class(backend: str):
    return getattr(torchpack, DATASETS[backend][0])


# -- the photo trees ----------------------------------------------------------------------------


def photo_jobs(args: argparse.Namespace, tree: str, label: str, work: str) -> dict[str, tuple[str, str, dict]]:
    """Each backend: the lossless store with and without the check, and the training-ready store."""
    jobs = {}
    for backend, (_, ext) in DATASETS.items():
        for kind, options in (("checked", {}), ("unchecked", {"check": False}), ("reencoded", REENCODE)):
            jobs[f"{backend} {kind}"] = (tree, os.path.join(work, f"{label}_{kind}{ext}"), {"workers": args.workers, **options})
    return jobs


def photo_measures(args: argparse.Namespace, tree: str, stores: dict[str, str], blobs: dict[str, list[bytes]]):
    """name -> (measure of the DataLoader path with `workers` processes, in-process measure)."""

    def rate(factory, workers):
        return lambda: loader_rate(factory(), workers, args.photo_batch, args.min_seconds)

    def bound(function, kind, workers):
        return lambda: decode_bound(blobs[kind], function, workers, args.min_seconds)

    routes = {"ImageFolder (PIL)": lambda: ImageFolder(tree, transform=PIL_TRANSFORM)}
    for backend in DATASETS:
        cls, lossless, reencoded = dataset_class(backend), stores[f"{backend} checked"], stores[f"{backend} reencoded"]
        routes[f"{cls.__name__} default (PIL)"] = lambda c=cls, s=lossless: c(s, transform=PIL_TRANSFORM)
        routes[f"{cls.__name__} fast (tensor, decode_size=256)"] = lambda c=cls, s=lossless: c(
            s, transform=TENSOR_TRANSFORM, decode="tensor", decode_size=SHORT_SIDE
        )
        routes[f"{cls.__name__} training-ready store, PIL"] = lambda c=cls, s=reencoded: c(s, transform=PIL_TRANSFORM)
        routes[f"{cls.__name__} training-ready store, tensor"] = lambda c=cls, s=reencoded: c(
            s, transform=TENSOR_TRANSFORM, decode="tensor"
        )
    measures = {name: (rate(factory, args.workers), rate(factory, 0)) for name, factory in routes.items()}
    # The fastest route: in the training process, decoding in as many threads as there are
    # workers, with the crop-first fused resize (FFCV's geometry). Only an in-process figure.
    fused = torchpack.ResizedCenterCrop(CROP, CROP / SHORT_SIDE)
    threaded = {
        f"LMDBImageFolder fast, fused crop+resize, {args.workers} decode threads": lambda: dataset_class("lmdb")(
            stores["lmdb checked"], transform=fused, decode="tensor", decode_size=SHORT_SIDE, threads=args.workers
        ),
        f"LMDBImageFolder training-ready store, fused crop+resize, {args.workers} decode threads": lambda: dataset_class("lmdb")(
            stores["lmdb reencoded"], transform=fused, decode="tensor", threads=args.workers
        ),
    }
    measures.update({name: (None, rate(factory, 0)) for name, factory in threaded.items()})
    for name, function, kind in (
        ("bound: PIL decode+transform, in memory", "pil", "tree"),
        ("bound: scaled decode+tensor transform, in memory", "scaled_tensor", "tree"),
        ("bound: training-ready bytes, PIL decode+transform, in memory", "pil", "reencoded"),
        ("bound: training-ready bytes, decode+tensor transform, in memory", "scaled_tensor", "reencoded"),
    ):
        measures[name] = (bound(function, kind, args.workers), bound(function, kind, 0))
    return measures


BOUND_OF = {
    "default (PIL)": "bound: PIL decode+transform, in memory",
    "fast (tensor": "bound: scaled decode+tensor transform, in memory",
    "training-ready store, PIL": "bound: training-ready bytes, PIL decode+transform, in memory",
    "training-ready store, tensor": "bound: training-ready bytes, decode+tensor transform, in memory",
}


def run_photo(args, tree: str, label: str, jobs: dict, converted: dict, results: list[Result]) -> None:
    files = tree_files(tree)
    log(f"photo tree {label}: {tree} ({len(files)} images)")
    stores = {name: dst for name, (_, dst, _) in jobs.items()}
    tree_blobs = read_blobs(files)
    reencoded = dataset_class("lmdb")(stores["lmdb reencoded"])
    blobs = {"tree": tree_blobs, "reencoded": [reencoded.read_bytes(i) for i in range(len(reencoded))]}
    del reencoded

    measured = measure_rounds(
        {
            "check": lambda: decode_bound(tree_blobs, "check", args.workers, args.min_seconds),
            "full_decode": lambda: decode_bound(tree_blobs, "full_decode", args.workers, args.min_seconds),
        },
        args.rounds,
    )
    check_bound = "bound: the check's own decode, in memory"
    results.append(Result("convert", label, check_bound, measured["check"], args.workers))
    results.append(Result("convert", label, "bound: Pillow full decode, in memory", measured["full_decode"], args.workers))
    for name, (_, _, options) in jobs.items():
        backend, kind = name.split()
        run = converted[name]
        row = Result("convert", label, f"convert {backend}, {kind}", run["images_per_second"], args.workers)
        row.extra["seconds"] = run["seconds"]
        if kind == "checked":
            row.ratio, row.baseline = run["images_per_second"] / measured["check"], check_bound
            row.extra["of_pillow_decode"] = run["images_per_second"] / measured["full_decode"]
        results.append(row)
        if kind == "unchecked":
            os.remove(stores[name])

    tree_size = tree_allocated_bytes(tree)
    results.append(Result("size", label, "tree (files + folders)", tree_size, unit="bytes"))
    for name in ("lmdb checked", "hdf5 checked", "lmdb reencoded", "hdf5 reencoded"):
        size = allocated_bytes([stores[name]])
        results.append(Result("size", label, f"{name.replace('checked', 'lossless')} store", size, unit="bytes", ratio=size / tree_size, baseline="tree"))

    warm_page_cache([*files, *(stores[n] for n in stores if "unchecked" not in n)])
    measures = photo_measures(args, tree, stores, blobs)
    flat = {
        f"{name} @{w}": pair[i] for name, pair in measures.items() for i, w in enumerate((args.workers, 0)) if pair[i] is not None
    }
    rates = measure_rounds(flat, args.rounds)
    base = rates[f"ImageFolder (PIL) @{args.workers}"]
    base_one = rates["ImageFolder (PIL) @0"]
    for name in measures:
        for workers in (args.workers, 0):
            if f"{name} @{workers}" not in rates:
                continue
            value = rates[f"{name} @{workers}"]
            row = Result("photo", label, name, value, workers, ratio=value / base, baseline=f"ImageFolder, {args.workers} workers")
            row.extra["vs_imagefolder_same_workers"] = value / (base if workers else base_one)
            bound = next((b for key, b in BOUND_OF.items() if key in name), None)
            if bound is not None:
                row.extra["of_bound"] = value / rates[f"{bound} @{workers}"]
            results.append(row)


# -- tiny images --------------------------------------------------------------------------------


def tiny_jobs(args: argparse.Namespace, tree: str, work: str) -> dict[str, tuple[str, str, dict]]:
    return {
        f"{backend} {compression}": (
            tree,
            os.path.join(work, f"tiny_{compression}{ext}"),
            {"workers": args.workers, "storage": "raw", "raw_compression": compression},
        )
        for backend, (_, ext) in DATASETS.items()
        for compression in ("none", "lz4")
    }


def run_tiny(args, tree: str, jobs: dict, converted: dict, results: list[Result]) -> None:
    """Tiny PNGs: ImageFolder against raw stores, per item and batched, with workers and in-process."""
    files = tree_files(tree)
    log(f"tiny tree: {tree} ({len(files)} PNGs)")
    stores = {name: dst for name, (_, dst, _) in jobs.items()}
    warm_page_cache([*files, *stores.values()])
    tree_size = tree_allocated_bytes(tree)
    results.append(Result("size", "tiny", "tiny tree (files + folders)", tree_size, unit="bytes"))
    for name, dst in stores.items():
        size = allocated_bytes([dst])
        results.append(Result("size", "tiny", f"tiny raw {name} store", size, unit="bytes", ratio=size / tree_size, baseline="tree"))
        results.append(Result("convert", "tiny", f"convert tiny raw {name}", converted[name]["images_per_second"], args.workers))
    batch, seconds, workers = args.tiny_batch, args.min_seconds, args.workers
    collate = torchpack.SkipBadCollate()
    reference = ImageFolder(tree, transform=T.PILToTensor())
    measures: dict[str, Callable[[], float]] = {
        f"ImageFolder (PIL, PILToTensor) @{workers}": lambda: loader_rate(reference, workers, batch, seconds),
        "ImageFolder (PIL, PILToTensor) @0": lambda: loader_rate(reference, 0, batch, seconds),
    }
    for name, dst in stores.items():
        backend, compression = name.split()
        dataset = dataset_class(backend)(dst, decode="tensor")
        full_pass(dataset, batch, collate)  # every sample's CRC-32 checked once, as in a first epoch
        label = f"{dataset_class(backend).__name__} raw {compression}"
        for w in (workers, 0):
            measures[f"{label}, per item @{w}"] = lambda d=dataset, w=w: loader_rate(PerItem(d), w, batch, seconds)
            measures[f"{label}, batched @{w}"] = lambda d=dataset, w=w: loader_rate(d, w, batch, seconds, collate, array_batches=True)
    first_epoch = "HDF5ImageFolder raw none, batched, first epoch (checking every CRC-32) @0"
    measures[first_epoch] = lambda: epoch_rate(dataset_class("hdf5")(stores["hdf5 none"], decode="tensor"), batch, collate)
    ram = np.stack([reference[i][0].numpy() for i in range(len(reference))])
    measures["bound: numpy gather of the same images from RAM (N, 3, 28, 28) @0"] = lambda: gather_rate(ram, batch, seconds)
    measures[f"bound: DataLoader transport of ready batches @{workers}"] = lambda: loader_rate(
        TransportOnly(len(files)), workers, batch, seconds, collate
    )
    measures[f"bound: DataLoader transport of never-written batches @{workers}"] = lambda: loader_rate(
        TransportOnly(len(files), touch=False), workers, batch, seconds, collate
    )
    # The DataLoader's own per-batch work in the training process (sampler, fetcher, collate),
    # on batches that cost nothing to make.
    measures["bound: DataLoader alone, batches that cost nothing to make @0"] = lambda: loader_rate(
        TransportOnly(len(files), touch=False), 0, batch, seconds, collate
    )
    rates = measure_rounds(measures, args.rounds)
    base = rates[f"ImageFolder (PIL, PILToTensor) @{workers}"]
    base_one = rates["ImageFolder (PIL, PILToTensor) @0"]
    gather = rates["bound: numpy gather of the same images from RAM (N, 3, 28, 28) @0"]
    transport = rates[f"bound: DataLoader transport of ready batches @{workers}"]
    for key, value in rates.items():
        name, w = key.rsplit(" @", 1)
        w = int(w)
        row = Result("tiny", "tiny", name, value, w, ratio=value / base, baseline=f"ImageFolder, {workers} workers")
        row.extra["vs_imagefolder_same_workers"] = value / (base if w else base_one)
        if "batched" in name:
            row.extra["of_bound"] = value / (transport if w else gather)
            if not w:
                row.extra["of_dataloader_alone"] = value / rates["bound: DataLoader alone, batches that cost nothing to make @0"]
        results.append(row)


# -- floors -------------------------------------------------------------------------------------


def floors(results: list[Result], workers: int, hard_tree: str) -> list[dict[str, Any]]:
    """The issues' floors, each with the measured figure of the worse backend."""

    def worst(section: str, contains: str, w: int | None, key: str = "ratio", tree: str | None = None) -> float | None:
        values = [
            r.extra.get(key) if key != "ratio" else r.ratio
            for r in results
            if r.section == section
            and (r.name.endswith(contains) if section == "tiny" else contains in r.name)
            and (w is None or r.workers == w)
            and (tree is None or r.tree == tree)
        ]
        values = [v for v in values if v is not None]
        return min(values) if values else None

    table = [
        ("default path vs ImageFolder (issue 9: no lower than before, 1.03)", worst("photo", "default", workers), 1.03),
        ("fast path vs ImageFolder (issue 9: no lower than before, 2.32)", worst("photo", "fast", workers), 2.32),
        (f"training-ready store, tensor path, vs ImageFolder, {hard_tree} tree", worst("photo", "training-ready store, tensor", workers, tree=hard_tree), 4.0),
        (f"conversion with the check vs its in-memory decode bound, {hard_tree} tree", worst("convert", "checked", workers, tree=hard_tree), 0.90),
        ("tiny raw per item vs ImageFolder", worst("tiny", "raw none, per item", workers), 6.0),
        ("tiny raw batched in-process vs ImageFolder", worst("tiny", "HDF5ImageFolder raw none, batched", 0), 100.0),
        ("tiny raw batched in-process vs numpy gather from RAM", worst("tiny", "HDF5ImageFolder raw none, batched", 0, "of_bound"), 0.70),
        ("tiny raw batched with workers vs DataLoader transport", worst("tiny", "HDF5ImageFolder raw none, batched", workers, "of_bound"), 0.85),
    ]
    return [{"floor": n, "measured": v, "at_least": f, "met": v is not None and v >= f} for n, v, f in table]


# -- reporting ----------------------------------------------------------------------------------


def log(message: str) -> None:
    print(f"[bench {time.perf_counter() - _STARTED:6.1f}s] {message}", file=sys.stderr, flush=True)


def _rate(value: float | None) -> str:
    return "" if value is None else f"{value:,.0f}"


def _x(value: float | None) -> str:
    return "" if value is None else f"{value:.2f}x"


def paired_rows(results: list[Result], section: str, workers: int) -> list[dict[str, Any]]:
    """One row per (tree, configuration): its figure with workers and its figure in-process side by side."""
    rows: dict[tuple[str, str], dict[str, Any]] = {}
    for r in results:
        if r.section != section:
            continue
        row = rows.setdefault((r.tree, r.name), {"tree": r.tree, "name": r.name})
        key = "w" if r.workers == workers else "p"
        row[key] = r
    return list(rows.values())


def markdown(results: list[Result], floor_rows: list[dict[str, Any]], config: dict[str, Any]) -> str:
    w = config["workers"]
    lines = [
        f"CPUs: {config['cpus']}; {w} DataLoader workers; trees: "
        + ", ".join(f"{label} ({n} images of {kb:.0f} KB on average, {path})" for label, path, n, kb in config["trees"])
        + f"; tiny: {config['tiny_count']} 28x28 PNGs; medians of {config['rounds']} rounds.",
        "",
        f"Ratios are against ImageFolder with {w} workers on the same tree, in the same run; "
        "\"in-process\" is `num_workers=0` (images per CPU-second); \"of bound\" is against the same "
        "work on bytes already in memory, with as many processes.",
        "",
        f"| tree | configuration | {w} workers: img/s | x ImageFolder | of bound | in-process: img/s | x ImageFolder | of bound |",
        "| --- | --- | ---: | ---: | ---: | ---: | ---: | ---: |",
    ]
    for section in ("photo", "tiny"):
        for row in paired_rows(results, section, w):
            a, b = row.get("w"), row.get("p")
            cells = []
            for r in (a, b):
                of_bound = r.extra.get("of_bound") if r else None
                cells += [_rate(r.value if r else None), _x(r.ratio if r else None), "" if of_bound is None else f"{of_bound:.0%}"]
            lines.append(f"| {row['tree']} | {row['name']} | " + " | ".join(cells) + " |")
    lines += ["", f"| tree | conversion ({w} workers) | img/s | of its bound | of a Pillow decode |", "| --- | --- | ---: | ---: | ---: |"]
    for r in results:
        if r.section == "convert":
            pillow = r.extra.get("of_pillow_decode")
            lines.append(
                f"| {r.tree} | {r.name} | {r.value:,.0f} | {'' if r.ratio is None else f'{r.ratio:.0%}'} | "
                f"{'' if pillow is None else f'{pillow:.0%}'} |"
            )
    lines += ["", "| tree | size on disk | MiB | of the tree |", "| --- | --- | ---: | ---: |"]
    for r in results:
        if r.section == "size":
            lines.append(f"| {r.tree} | {r.name} | {r.value / 2**20:,.1f} | {'' if r.ratio is None else f'{r.ratio:.1%}'} |")
    lines += ["", "| floor | measured | needed | met |", "| --- | ---: | ---: | :---: |"]
    for f in floor_rows:
        measured = "n/a" if f["measured"] is None else f"{f['measured']:.2f}"
        lines.append(f"| {f['floor']} | {measured} | >= {f['at_least']} | {'yes' if f['met'] else 'NO'} |")
    return "\n".join(lines) + "\n"


def plot(results: list[Result], workers: int, path: str) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    panels = [(s, t) for s in ("photo", "tiny") for t in dict.fromkeys(r.tree for r in results if r.section == s)]
    heights = [len({r.name for r in results if (r.section, r.tree) == p}) for p in panels]
    fig, axes = plt.subplots(len(panels), 1, figsize=(10, 1.5 + 0.42 * sum(heights)), squeeze=False,
                             gridspec_kw={"height_ratios": heights or [1]})
    for ax, (section, tree) in zip(axes[:, 0], panels):
        rows = paired_rows([r for r in results if r.tree == tree], section, workers)
        names = [row["name"] for row in rows]
        y = np.arange(len(rows))
        for offset, key, colour, label in ((-0.2, "w", "tab:blue", f"{workers} workers"), (0.2, "p", "tab:orange", "in-process")):
            values = [row[key].ratio if key in row else 0 for row in rows]
            ax.barh(y + offset, values, height=0.4, color=colour, label=label)
            for yy, v in zip(y + offset, values):
                if v:
                    ax.text(v, yy, f" {v:.2f}x", va="center", fontsize=7)
        ax.set_yticks(y, names, fontsize=7)
        ax.invert_yaxis()
        ax.axvline(1.0, color="grey", lw=0.8)
        ax.set_xscale("log")
        ax.set_title(f"{section}: {tree} (x ImageFolder with {workers} workers)", fontsize=9)
        ax.legend(fontsize=7, loc="lower right")
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


def report(results: list[Result], config: dict[str, Any], out: str) -> None:
    hard = max(config["trees"], key=lambda t: t[3])[0] if config["trees"] else ""  # the largest files
    floor_rows = floors(results, config["workers"], hard)
    text = markdown(results, floor_rows, config)
    print(text)
    with open(os.path.join(out, "results.json"), "w", encoding="utf-8") as f:
        json.dump({"config": config, "results": [asdict(r) for r in results], "floors": floor_rows}, f, indent=2)
    with open(os.path.join(out, "results.md"), "w", encoding="utf-8") as f:
        f.write(text)
    plot(results, config["workers"], os.path.join(out, "results.png"))
    log(f"wrote {out}/results.json, results.md, results.png")


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--tree", action="append", default=[], help="an ImageFolder tree of photos (repeat for several); default: generate one")
    ap.add_argument("--tiny", help="an ImageFolder tree of 28x28 PNGs (default: made from the first photo tree)")
    ap.add_argument("--workers", type=int, default=2, help="DataLoader / pool / converter processes (default 2)")
    ap.add_argument("--out", default="bench_out", help="folder for results and the generated trees and stores")
    ap.add_argument("--quick", action="store_true", help="a small smoke run (seconds, not minutes)")
    ap.add_argument("--tiny-count", type=int, help="tiny PNGs to make without --tiny (default 60000; 600 with --quick)")
    ap.add_argument("--photo-count", type=int, help="generated photos without --tree (default 1000; 40 with --quick)")
    ap.add_argument("--photo-batch", type=int, default=PHOTO_BATCH, help="batch size for photos (default 64)")
    ap.add_argument("--tiny-batch", type=int, default=TINY_BATCH, help="batch size for tiny images (default 512)")
    ap.add_argument("--min-seconds", type=float, help="time each rate for at least this long (default 3)")
    ap.add_argument("--rounds", type=int, help="measure everything this many times, round-robin; report medians (default 3, 1 with --quick)")
    ap.add_argument("--skip-photo", action="store_true", help="leave out the photo trees")
    ap.add_argument("--skip-tiny", action="store_true", help="leave out the tiny images")
    ap.add_argument("--keep", action="store_true", help="keep the generated trees and stores in OUT/work")
    args = ap.parse_args(argv)
    if args.workers < 1:
        ap.error("--workers must be >= 1")
    args.tiny_count = args.tiny_count or (600 if args.quick else 60000)
    args.rounds = args.rounds or (1 if args.quick else 3)
    args.photo_count = args.photo_count or (40 if args.quick else 1000)
    if args.min_seconds is None:
        args.min_seconds = 0.2 if args.quick else 3.0
    if args.quick:
        args.photo_batch = min(args.photo_batch, 8)
        args.tiny_batch = min(args.tiny_batch, 128)
    return args


def tree_summary(tree: str, label: str, given: bool) -> tuple[str, str, int, float]:
    files = tree_files(tree)
    mean_kb = sum(os.path.getsize(p) for p in files) / max(len(files), 1) / 1000
    return label, os.path.abspath(tree) if given else "generated", len(files), mean_kb


def tree_label(path: str) -> str:
    return os.path.basename(os.path.normpath(path))


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    torch.set_num_threads(1)
    out = os.path.abspath(args.out)
    work = os.path.join(out, "work")
    shutil.rmtree(work, ignore_errors=True)
    os.makedirs(work)
    trees = list(args.tree)
    if not trees and not (args.skip_photo and args.tiny):
        trees = [make_photo_tree(os.path.join(work, "generated"), 10, max(1, args.photo_count // 10))]
    tiny = None
    if not args.skip_tiny:
        tiny = args.tiny or os.path.join(work, "tiny")
        if not args.tiny:
            if args.tree:
                tiny_tree_from_photos(trees[0], tiny, count=args.tiny_count)
            else:
                make_tiny_tree(tiny, args.tiny_count)
    started = time.perf_counter()
    labels = {tree: tree_label(tree) for tree in trees}
    jobs = {} if args.skip_photo else {f"{labels[t]}/{n}": job for t in trees for n, job in photo_jobs(args, t, labels[t], work).items()}
    if tiny is not None:
        jobs.update({f"tiny/{n}": job for n, job in tiny_jobs(args, tiny, work).items()})
    # One interpreter for every conversion of a round: starting one costs seconds of imports.
    rounds = [convert_all(list(jobs.values())) for _ in range(args.rounds)]
    converted = {name: median_result([r[i] for r in rounds]) for i, name in enumerate(jobs)}
    results: list[Result] = []
    if not args.skip_photo:
        for tree in trees:
            mine = {n.split("/", 1)[1]: job for n, job in jobs.items() if n.startswith(labels[tree] + "/")}
            run_photo(args, tree, labels[tree], mine, {n.split("/", 1)[1]: converted[n] for n in jobs if n.startswith(labels[tree] + "/")}, results)
    if tiny is not None:
        mine = {n.split("/", 1)[1]: job for n, job in jobs.items() if n.startswith("tiny/")}
        run_tiny(args, tiny, mine, {n.split("/", 1)[1]: converted[n] for n in jobs if n.startswith("tiny/")}, results)
    config = {
        "trees": [] if args.skip_photo else [tree_summary(t, labels[t], bool(args.tree)) for t in trees],
        "tiny_count": 0 if tiny is None else len(tree_files(tiny)),
        "workers": args.workers,
        "photo_batch": args.photo_batch,
        "tiny_batch": args.tiny_batch,
        "min_seconds": args.min_seconds,
        "rounds": args.rounds,
        "quick": args.quick,
        "cpus": os.cpu_count(),
        "python": platform.python_version(),
        "torch": torch.__version__,
        "torchpack": torchpack.__version__,
        "seconds": round(time.perf_counter() - started, 1),
    }
    report(results, config, out)
    if not args.keep:
        shutil.rmtree(work, ignore_errors=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
