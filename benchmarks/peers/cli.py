"""The peers' command line and its run: the trees, every system on each, the report."""

from __future__ import annotations

import argparse
import os
import platform
import shutil
import time
import warnings

import numpy as np
import torch
from torchvision.datasets import ImageFolder

from suite.common import PHOTO_BATCH
from suite.trees import make_photo_tree, make_tiny_tree

from .common import PIPELINES, TINY_BATCH, Row, Settings, tree_samples
from .registry import ADAPTERS
from .report import report, versions
from .runner import run_group


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


def parse_args(argv: list[str] | None, description: str | None = None) -> argparse.Namespace:
    """The command line of ``bench_peers.py``; ``description`` is the first paragraph of its docstring."""
    ap = argparse.ArgumentParser(description=description)
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
    ap.add_argument("--pipelines", default=",".join(PIPELINES),
                    help=f"comma-separated photo pipelines to measure, of: {', '.join(PIPELINES)} (default: both)")
    ap.add_argument("--skip-photo", action="store_true")
    ap.add_argument("--skip-tiny", action="store_true")
    ap.add_argument("--skip-raw-photos", action="store_true",
                    help="leave out the stores of decoded photo pixels (FFCV raw, torchpack raw): about 1 MB a photo each")
    ap.add_argument("--keep", action="store_true", help="keep the stores in OUT/work")
    args = ap.parse_args(argv)
    if args.workers < 1:
        ap.error("--workers must be >= 1")
    args.pipelines = tuple(p.strip() for p in args.pipelines.split(",") if p.strip())
    if not args.pipelines or set(args.pipelines) - set(PIPELINES):
        ap.error(f"--pipelines takes a comma-separated subset of: {', '.join(PIPELINES)}")
    args.rounds = args.rounds or (1 if args.quick else 3)
    if args.min_seconds is None:
        args.min_seconds = 0.2 if args.quick else 3.0
    return args


def main(argv: list[str] | None = None, description: str | None = None) -> int:
    """The whole run: trees, then every chosen system on each (convert, probe, time), then the report."""
    args = parse_args(argv, description)
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
        "pipelines": list(args.pipelines),
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
