"""The read paths on 28x28 images: ImageFolder against raw stores, per item and batched, and their bounds."""

from __future__ import annotations

from typing import Callable

import numpy as np
from torchvision import transforms as T
from torchvision.datasets import ImageFolder

import torchpack

from .bounds import TransportOnly, gather_rate
from .common import Result, allocated_bytes, dataset_class, log, measure_rounds, tree_allocated_bytes, tree_files, warm_page_cache
from .rates import PerItem, epoch_rate, full_pass, loader_rate


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
