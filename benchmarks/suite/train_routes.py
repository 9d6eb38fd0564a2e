"""The ImageNet training pipeline on photo trees: ImageFolder against torchpack's tensor routes, in images/s and per CPU-second."""

from __future__ import annotations

import argparse
import math
import statistics
from typing import Any, Callable

from torchvision.datasets import ImageFolder

import torchpack

from .common import (
    CROP,
    DATASETS,
    TRAIN_DECODE_SIZE,
    TRAIN_PIL_TRANSFORM,
    TRAIN_TENSOR_TRANSFORM,
    Result,
    dataset_class,
    log,
    measure_rounds,
    tree_files,
    warm_page_cache,
)
from .rates import Timing, loader_timing

#: The row every training ratio is against (with ``--workers`` workers), and its name in the tables.
TRAIN_BASELINE = "ImageFolder (PIL RandomResizedCrop, flip, PILToTensor)"


def crop_aware_missing() -> str | None:
    """Why torchpack's crop-aware training route cannot run here, or None when it can.

    ``torchpack.RandomResizedCropDecode`` draws the crop before decoding, so that only the crop's
    pixels are decoded (scaled) and resized; with a torchpack that predates it, its rows say skipped.
    """
    if hasattr(torchpack, "RandomResizedCropDecode"):
        return None
    return "skipped: torchpack has no RandomResizedCropDecode (the crop-aware decode route)"


def crop_aware(cls: type, store: str, threads: int):
    """The crop-aware route as the README gives it: the random crop drawn before the (scaled) decode, the flip fused."""
    return cls(store, decode="tensor", decode_crop=torchpack.RandomResizedCropDecode(CROP, flip=True), threads=threads)


# A route: name -> (dataset factory, DataLoader workers, in-process decode threads or None). The
# in-process rows are num_workers=0; torchpack's decode in ``threads`` threads of the training process.
TrainRoute = tuple[Callable[[], Any], int, "int | None"]


def train_routes(args: argparse.Namespace, tree: str, stores: dict[str, str]) -> dict[str, TrainRoute]:
    """Every training route of one tree: ImageFolder, and each backend's lossless and training-ready store."""
    w = args.workers
    base = lambda: ImageFolder(tree, transform=TRAIN_PIL_TRANSFORM)  # noqa: E731
    routes: dict[str, TrainRoute] = {f"{TRAIN_BASELINE} @{w}": (base, w, None), f"{TRAIN_BASELINE} @0": (base, 0, None)}
    for backend in DATASETS:
        cls, lossless, ready = dataset_class(backend), stores[f"{backend} checked"], stores[f"{backend} reencoded"]
        for label, store, options in (
            (f"lossless store, tensor (decode_size={TRAIN_DECODE_SIZE})", lossless, {"decode_size": TRAIN_DECODE_SIZE}),
            ("training-ready store, tensor", ready, {}),
        ):
            name = f"{cls.__name__} {label} + v2 RandomResizedCrop, flip"

            def factory(c=cls, s=store, o=options, threads=1):
                return c(s, transform=TRAIN_TENSOR_TRANSFORM, decode="tensor", threads=threads, **o)

            routes[f"{name} @{w}"] = (factory, w, None)
            routes[f"{name} @0"] = (lambda f=factory: f(threads=w), 0, w)
    # torchpack's crop-aware route (LMDB), in the training process: skipped with a torchpack that lacks it.
    for label, store in (("lossless store", stores["lmdb checked"]), ("training-ready store", stores["lmdb reencoded"])):
        name = f"LMDBImageFolder {label}, crop-aware decode (RandomResizedCropDecode), flip"
        routes[f"{name} @0"] = (lambda s=store: crop_aware(dataset_class("lmdb"), s, w), 0, w)
    return routes


def run_train(args: argparse.Namespace, tree: str, label: str, stores: dict[str, str], results: list[Result]) -> None:
    """The training pipeline on one tree: every route in round-robin rounds, ratios against ImageFolder's."""
    files = tree_files(tree)
    log(f"training pipeline, photo tree {label}: {tree}")
    warm_page_cache([*files, *(s for n, s in stores.items() if "unchecked" not in n)])
    routes = train_routes(args, tree, stores)
    skipped = {name: crop_aware_missing() for name in routes if "crop-aware" in name}
    skipped = {name: why for name, why in skipped.items() if why}
    for name, why in skipped.items():
        log(f"{name}: {why}")
    per_cpu: dict[str, list[float]] = {name: [] for name in routes}

    def measure(name: str, factory: Callable[[], Any], workers: int) -> Callable[[], float]:
        def run() -> float:
            timing: Timing = loader_timing(factory(), workers, args.photo_batch, args.min_seconds)
            per_cpu[name].append(timing.cpu_rate)
            return timing.rate

        return run

    measures = {name: measure(name, f, workers) for name, (f, workers, _) in routes.items() if name not in skipped}
    rates = measure_rounds(measures, args.rounds)
    base, base_one = rates[f"{TRAIN_BASELINE} @{args.workers}"], rates[f"{TRAIN_BASELINE} @0"]
    for key, (_, workers, threads) in routes.items():
        name = key.rsplit(" @", 1)[0]
        if key in skipped:
            results.append(Result("train", label, name, 0.0, workers, extra={"skipped": skipped[key], "threads": threads}))
            continue
        value = rates[key]
        row = Result("train", label, name, value, workers, ratio=value / base, baseline=f"{TRAIN_BASELINE}, {args.workers} workers")
        cpu = [c for c in per_cpu[key] if not math.isnan(c)]
        row.extra.update({
            "threads": threads,
            "vs_imagefolder_same_workers": value / (base if workers else base_one),
            "per_cpu_second": statistics.median(cpu) if cpu else None,
        })
        results.append(row)
