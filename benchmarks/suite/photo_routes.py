"""The read paths on photo trees: ImageFolder, the default, fast and training-ready routes, and their bounds."""

from __future__ import annotations

import argparse

from torchvision.datasets import ImageFolder

import torchpack

from .bounds import decode_bound
from .common import (
    CROP,
    DATASETS,
    PIL_TRANSFORM,
    SHORT_SIDE,
    TENSOR_TRANSFORM,
    Result,
    dataset_class,
    log,
    measure_rounds,
    read_blobs,
    tree_files,
    warm_page_cache,
)
from .convert_routes import photo_convert_rows, photo_size_rows
from .rates import loader_rate


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

    photo_convert_rows(args, label, jobs, converted, stores, tree_blobs, results)
    photo_size_rows(tree, label, stores, results)

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
