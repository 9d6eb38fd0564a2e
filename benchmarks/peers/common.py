"""What every system module shares: the run's settings, stores, routes, probes, the Adapter base class, the Row, helpers."""

from __future__ import annotations

import importlib
import os
import subprocess
import sys
from dataclasses import dataclass, field
from typing import Any, Callable, Iterable

import numpy as np
import torch
from PIL import Image
from torchvision import transforms as T
from torchvision.datasets import ImageFolder

from suite.common import PHOTO_BATCH

TINY_BATCH = 512
TINY_PIPELINE = T.PILToTensor()  # ImageFolder's RGB PIL image -> 3x28x28 uint8
# What a row's store holds: the source files' bytes or their pixels, full size ("lossless"); resized
# and/or JPEG re-encoded pixels ("re-encoded"); or 28x28 images, which every system stores decoded.
LOSSLESS, REENCODED, TINY_DECODED = "lossless", "re-encoded", "tiny/decoded"
KINDS = (LOSSLESS, REENCODED, TINY_DECODED)
# What a photo route computes: ImageNet's validation pipeline (Resize(256), CenterCrop(224)) or its
# training pipeline (RandomResizedCrop(224) and a horizontal flip); tiny routes are VALIDATION.
VALIDATION, TRAINING = "validation", "training"
PIPELINES = (VALIDATION, TRAINING)
# Contract checks: the first few samples in each system's own unshuffled order, plus random indices.
FIRST_K = {"photo": 4, "tiny": 8}
RANDOM_K = {"photo": 3, "tiny": 4}

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
    torchpack_options: dict[str, Any] | None = None  # torchpack stores go through suite.convert_routes.convert_all
    reencoded: bool = False
    cap: Cap | None = None
    raw_photos: bool = False
    # (system, store): converted from that store of another system (given as ``src``), not from the tree
    source: tuple[str, str] | None = None

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

    Map-style routes give ``dataset(path)`` (timed with suite.rates' ``loader_timing``); routes
    through a system's own loader give ``loader(path, workers, batch)``, a re-iterable of
    ``(images, targets)`` batches. ``probe(path)`` defaults to one built from ``dataset``.
    ``pipeline``: VALIDATION or TRAINING (names are unique per pipeline within a system); a
    TRAINING route is not probed (its random crops are no sample of ImageFolder's). ``skip()``:
    why the route cannot run here (its row says so), or None.
    """

    name: str
    store: str | None  # a Store name of the same adapter; None reads the tree itself
    dataset: Callable[[str], Any] | None = None
    collate: Callable | None = None
    loader: Callable[[str, int, int], Iterable] | None = None
    probe: Callable[[str], Probe] | None = None
    workers: int | None = None  # fixed worker count; None: --workers
    array_batches: bool = False  # batch_sampler=torchpack.ArrayBatchSampler (batches as index arrays)
    pipeline: str = VALIDATION
    skip: Callable[[], str | None] | None = None
    threads: int | None = None  # the reading process's own decode threads (threads=, or a loader's threads)

    def runs(self, settings: Settings) -> str:
        """How the route spreads its work, for the tables: workers, or threads in the reading process."""
        workers = settings.workers if self.workers is None else self.workers
        if self.threads:
            return f"{self.threads} thread{'s' if self.threads != 1 else ''}, in-process"
        return f"{workers} workers" if workers else "in-process"


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
    distribution = ""  # its pip distribution, whose version the report gives ("": none)
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


# -- what the run measures ----------------------------------------------------------------------------


@dataclass
class Row:
    """One route of one system: conversion, size, rate and contract."""

    system: str
    route: str
    group: str  # "photo" or "tiny"
    store: str | None
    pipeline: str = VALIDATION  # photos: VALIDATION or TRAINING
    kind: str = LOSSLESS  # one of KINDS
    cap: str | None = None  # the store's resize rule, e.g. "short side 256"; None: full size
    holds: str = "files"  # what the store keeps of a photo: "files" (its bytes), "jpeg" (re-encoded) or "pixels" (decoded)
    stored_megapixels: float | None = None  # mean pixels per stored photo, from the tree's sizes and ``cap``
    convert_seconds: float | None = None
    size_bytes: int | None = None
    size_ratio: float | None = None  # against the tree's files and folders
    rate: float | None = None  # images/s, median of the rounds
    ratio: float | None = None  # against ImageFolder (same pipeline) in the same rounds
    rounds: list[float] = field(default_factory=list)
    cpu_rate: float | None = None  # images per CPU-second of the process tree (threads, workers), median of the rounds
    cpu_rounds: list[float] = field(default_factory=list)
    runs: str = ""  # "2 workers", "2 threads, in-process" or "in-process" (Route.runs)
    contract: dict[str, Any] = field(default_factory=dict)
    error: str | None = None
    missing: bool = False  # the system does not import here

    @property
    def label(self) -> str:
        return f"{self.system}: {self.route}"

    @property
    def key(self) -> str:
        """Unique within a run's group: the label, and the pipeline when it is not VALIDATION."""
        return self.label if self.pipeline == VALIDATION else f"{self.label} [{self.pipeline}]"
