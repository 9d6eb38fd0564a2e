"""What every route of the suite shares: settings, pipelines, the Result record, file helpers, timing, the log."""

from __future__ import annotations

import os
import sys
import time
from dataclasses import dataclass, field
from typing import Any, Callable, Iterable

import numpy as np
from torchvision import transforms as T
from torchvision.datasets import ImageFolder
from torchvision.transforms import v2

import torchpack

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

# The ImageNet training pipeline: a RandomResizedCrop(224) (area 8-100%, aspect 3/4-4/3) and a
# horizontal flip of every image, every epoch. On PIL images (ImageFolder's baseline) ...
TRAIN_PIL_TRANSFORM = T.Compose([T.RandomResizedCrop(CROP), T.RandomHorizontalFlip(), T.PILToTensor()])
# ... and on uint8 CHW tensors (torchpack's tensor routes, and the peers that decode to tensors) ...
TRAIN_TENSOR_TRANSFORM = v2.Compose([v2.RandomResizedCrop(CROP, antialias=True), v2.RandomHorizontalFlip()])
# ... and for peers that hand out PIL images: to a uint8 tensor first, then the same v2 transforms.
TRAIN_PIL_TO_TENSOR = T.Compose([T.PILToTensor(), TRAIN_TENSOR_TRANSFORM])
#: torchpack's lossless store on the training pipeline: the scaled decode keeps the short side >= 224.
TRAIN_DECODE_SIZE = CROP


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
    """Every file's bytes, in order: what the in-memory bounds decode."""
    blobs = []
    for path in paths:
        with open(path, "rb") as f:
            blobs.append(f.read())
    return blobs


def measure_rounds(measures: dict[str, Callable[[], float]], rounds: int) -> dict[str, float]:
    """Each measure ``rounds`` times, round-robin so drift hits all alike; the median of each."""
    samples: dict[str, list[float]] = {name: [] for name in measures}
    for i in range(rounds):
        for name, measure in measures.items():
            samples[name].append(measure())
            log(f"round {i + 1}/{rounds} {name}: {samples[name][-1]:,.0f} img/s")
    return {name: float(np.median(values)) for name, values in samples.items()}


def dataset_class(backend: str) -> type:
    """``torchpack.LMDBImageFolder`` or ``torchpack.HDF5ImageFolder`` for ``"lmdb"`` or ``"hdf5"``."""
    return getattr(torchpack, DATASETS[backend][0])


def log(message: str) -> None:
    """A progress line on stderr, with the seconds since the suite was imported."""
    print(f"[bench {time.perf_counter() - _STARTED:6.1f}s] {message}", file=sys.stderr, flush=True)
