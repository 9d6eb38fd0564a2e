"""The conversion routes: which stores each tree becomes, the conversions themselves, and their rows and sizes."""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
from typing import Any

from .bounds import decode_bound
from .common import DATASETS, REENCODE, Result, allocated_bytes, log, measure_rounds, tree_allocated_bytes

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


def photo_jobs(args: argparse.Namespace, tree: str, label: str, work: str) -> dict[str, tuple[str, str, dict]]:
    """Each backend: the lossless store with and without the check, and the training-ready store."""
    jobs = {}
    for backend, (_, ext) in DATASETS.items():
        for kind, options in (("checked", {}), ("unchecked", {"check": False}), ("reencoded", REENCODE)):
            jobs[f"{backend} {kind}"] = (tree, os.path.join(work, f"{label}_{kind}{ext}"), {"workers": args.workers, **options})
    return jobs


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


def photo_convert_rows(
    args: argparse.Namespace, label: str, jobs: dict, converted: dict, stores: dict[str, str], tree_blobs: list[bytes],
    results: list[Result],
) -> None:
    """The conversion rows of a photo tree, against the check's own decode and a Pillow decode of the same bytes.

    The unchecked stores are only measured: each is removed once its row is written.
    """
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


def photo_size_rows(tree: str, label: str, stores: dict[str, str], results: list[Result]) -> None:
    """Allocated bytes of the tree and of each lossless and training-ready store."""
    tree_size = tree_allocated_bytes(tree)
    results.append(Result("size", label, "tree (files + folders)", tree_size, unit="bytes"))
    for name in ("lmdb checked", "hdf5 checked", "lmdb reencoded", "hdf5 reencoded"):
        size = allocated_bytes([stores[name]])
        results.append(Result("size", label, f"{name.replace('checked', 'lossless')} store", size, unit="bytes", ratio=size / tree_size, baseline="tree"))
