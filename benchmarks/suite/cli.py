"""The suite's command line and its run: trees, conversions, every route, the report."""

from __future__ import annotations

import argparse
import os
import platform
import shutil
import time

import torch

import torchpack

from .common import PHOTO_BATCH, TINY_BATCH, Result, tree_files
from .convert_routes import convert_all, median_result, photo_jobs, tiny_jobs
from .photo_routes import run_photo
from .report import report
from .tiny_routes import run_tiny
from .train_routes import run_train
from .trees import make_photo_tree, make_tiny_tree, tiny_tree_from_photos


def parse_args(argv: list[str] | None, description: str | None = None) -> argparse.Namespace:
    """The command line of ``bench_suite.py``; ``description`` is the first paragraph of its docstring."""
    ap = argparse.ArgumentParser(description=description)
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
    ap.add_argument("--skip-train", action="store_true", help="leave out the training pipeline (RandomResizedCrop + flip)")
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
    """``(label, path or "generated", images, mean KB per file)``, as ``results.md`` describes each tree."""
    files = tree_files(tree)
    mean_kb = sum(os.path.getsize(p) for p in files) / max(len(files), 1) / 1000
    return label, os.path.abspath(tree) if given else "generated", len(files), mean_kb


def tree_label(path: str) -> str:
    """A tree's name in the tables: its folder's name."""
    return os.path.basename(os.path.normpath(path))


def main(argv: list[str] | None = None, description: str | None = None) -> int:
    """The whole run: trees, conversions (in a fresh interpreter), every route on each tree, the report."""
    args = parse_args(argv, description)
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
            if not args.skip_train:
                run_train(args, tree, labels[tree], {name: dst for name, (_, dst, _) in mine.items()}, results)
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
