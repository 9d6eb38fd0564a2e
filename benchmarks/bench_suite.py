"""torchpack's benchmark suite: every read path against ImageFolder, in one run, on the same images.

usage::

    python benchmarks/bench_suite.py [--tree PHOTO_TREE] [--workers 2] [--out bench_out/] [--quick]

Without ``--tree`` it generates a tree of photo-like JPEGs. It always generates a tiny-image
tree of 28x28 grayscale PNGs (MNIST-like). Every rate is images per second through a
``DataLoader`` (or a ``multiprocessing.Pool`` for the decode bounds) with ``--workers``
processes, on a warm page cache: the files are read once, and each loader runs a few
warm-up batches on persistent workers, before the timed epochs. Results go to
``OUT/results.json``, ``OUT/results.md`` and ``OUT/results.png``.
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
from torch.utils.data import DataLoader, default_collate
from torchvision import transforms as T
from torchvision.datasets import ImageFolder
from torchvision.transforms import v2

import torchpack
from torchpack.decode import jpeg_scale

DATASETS = {"lmdb": ("LMDBImageFolder", ".lmdb"), "hdf5": ("HDF5ImageFolder", ".h5")}
_STARTED = time.perf_counter()
PHOTO_BATCH = 64
SHORT_SIDE = 256
CROP = 224

# The ImageNet evaluation pipeline, on PIL images (ImageFolder and the default path) ...
PIL_TRANSFORM = T.Compose([T.Resize(SHORT_SIDE), T.CenterCrop(CROP), T.PILToTensor()])
# ... and on uint8 CHW tensors (the fast path): the same geometry, antialiased like PIL.
TENSOR_TRANSFORM = v2.Compose([v2.Resize(SHORT_SIDE, antialias=True), v2.CenterCrop(CROP)])


@dataclass
class Result:
    """One measured configuration."""

    group: str  # "photo", "tiny", "convert", "size"
    name: str
    value: float  # images/s, or bytes for "size"
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
    """``count`` 28x28 grayscale PNGs in ``num_classes`` classes: an MNIST-sized ImageFolder tree."""
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


# -- DataLoader rates -------------------------------------------------------------------------


def loader_rate(
    dataset,
    workers: int,
    batch_size: int,
    min_seconds: float,
    collate_fn: Callable | None = None,
    warmup_batches: int | None = None,
) -> float:
    """Images/s through a shuffling DataLoader: warm-up batches, then whole epochs for at least ``min_seconds``."""
    loader = DataLoader(
        dataset,
        batch_size=batch_size,
        shuffle=True,
        num_workers=workers,
        persistent_workers=workers > 0,
        collate_fn=collate_fn or default_collate,
        generator=torch.Generator().manual_seed(0),
    )
    warmup = warmup_batches if warmup_batches is not None else 2 * max(workers, 1)
    for i, _ in enumerate(loader):
        if i + 1 >= warmup:
            break
    images, started = 0, time.perf_counter()
    while True:
        for batch in loader:
            images += len(batch[1])
        elapsed = time.perf_counter() - started
        if elapsed >= min_seconds:
            break
    del loader
    return images / elapsed


# -- decode bounds: the same decoder on bytes already in memory --------------------------------

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
    """The converter's check: a full Pillow decode to RGB, as ImageFolder's loader does."""
    with Image.open(io.BytesIO(data)) as image:
        return image.convert("RGB").size


BOUND_FUNCTIONS = {"pil": pil_path, "scaled_tensor": scaled_tensor_path, "full_decode": full_decode}


def _bound_init() -> None:
    torch.set_num_threads(1)  # as in DataLoader workers


def _bound_chunk(task: tuple[str, int, int]) -> int:
    function = BOUND_FUNCTIONS[task[0]]
    for i in range(task[1], task[2]):
        function(_BLOBS[i])
    return task[2] - task[1]


def decode_bound(blobs: list[bytes], function: str, workers: int, min_seconds: float, chunk: int = 16) -> float:
    """Images/s of ``function`` over in-memory ``blobs`` in a pool of ``workers`` forked processes."""
    global _BLOBS
    _BLOBS = blobs  # inherited by the forked workers: no bytes cross a pipe
    tasks = [(function, i, min(i + chunk, len(blobs))) for i in range(0, len(blobs), chunk)]
    with multiprocessing.get_context("fork").Pool(max(workers, 1), initializer=_bound_init) as pool:
        pool.map(_bound_chunk, tasks[: 2 * max(workers, 1)])  # warm up
        images, started = 0, time.perf_counter()
        while True:
            images += sum(pool.imap_unordered(_bound_chunk, tasks))
            elapsed = time.perf_counter() - started
            if elapsed >= min_seconds:
                break
    _BLOBS = []
    return images / elapsed


# -- the suite --------------------------------------------------------------------------------


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
            log(f"round {i + 1}/{rounds} {name}: {samples[name][-1]:.0f} img/s")
    return {name: float(np.median(values)) for name, values in samples.items()}


def dataset_class(backend: str):
    return getattr(torchpack, DATASETS[backend][0])


def photo_conversions(args: argparse.Namespace, tree: str, work: str) -> dict[str, tuple[str, str, dict[str, Any]]]:
    """The photo tree into each backend, with and without the full-decode check."""
    jobs = {}
    for check in (True, False):
        for backend in DATASETS:
            dst = os.path.join(work, f"photo{'' if check else '_nocheck'}{DATASETS[backend][1]}")
            jobs[f"convert {backend}, {'full-decode check' if check else 'no check'}"] = (
                tree, dst, {"workers": args.workers, "check": check}
            )
    return jobs


def tiny_conversions(args: argparse.Namespace, tree: str, work: str) -> dict[str, tuple[str, str, dict[str, Any]]]:
    """The tiny tree into raw stores of each backend and compression."""
    return {
        f"tiny {backend} {compression}": (
            tree,
            os.path.join(work, f"tiny_{compression}{DATASETS[backend][1]}"),
            {"workers": args.workers, "storage": "raw", "raw_compression": compression},
        )
        for backend in DATASETS
        for compression in ("lz4", "none")
    }


def run_photo(
    args: argparse.Namespace, tree: str, jobs: dict[str, tuple], converted: dict[str, dict], results: list[Result]
) -> None:
    """ImageFolder, the default and fast paths, the decode bounds, conversion and store size."""
    files = tree_files(tree)
    log(f"photo tree: {tree} ({len(files)} images)")
    blobs = []
    for path in files:
        with open(path, "rb") as f:
            blobs.append(f.read())
    stores = {}
    for name, (_, dst, options) in jobs.items():
        rate = converted[name]["images_per_second"]
        results.append(Result("convert", name, rate, extra={"seconds": converted[name]["seconds"]}))
        log(f"{name}: {rate:.0f} img/s")
        if options["check"]:
            stores[name.split()[1].rstrip(",")] = dst
        else:
            os.remove(dst)
    bound = measure_rounds(
        {"full decode bound": lambda: decode_bound(blobs, "full_decode", args.workers, args.min_seconds)}, args.rounds
    )["full decode bound"]
    results.append(Result("convert", "bound: Pillow full decode, in memory", bound))
    for r in results:
        if r.group == "convert" and r.name.startswith("convert") and "full-decode" in r.name:
            r.ratio, r.baseline = r.value / bound, "bound: Pillow full decode, in memory"

    tree_size = tree_allocated_bytes(tree)
    results.append(Result("size", "tree (files + folders)", tree_size, "bytes"))
    for backend, dst in stores.items():
        size = allocated_bytes([dst])
        results.append(Result("size", f"{backend} store", size, "bytes", size / tree_size, "tree (files + folders)"))

    warm_page_cache([*files, *stores.values()])
    rate = lambda ds: loader_rate(ds, args.workers, args.photo_batch, args.min_seconds)  # noqa: E731
    base = "ImageFolder (PIL)"
    measures = {base: lambda: rate(ImageFolder(tree, transform=PIL_TRANSFORM))}
    for backend, dst in stores.items():
        cls = dataset_class(backend)
        measures[f"{cls.__name__} default (PIL)"] = lambda cls=cls, dst=dst: rate(cls(dst, transform=PIL_TRANSFORM))
        measures[f"{cls.__name__} fast (tensor, decode_size=256)"] = lambda cls=cls, dst=dst: rate(
            cls(dst, transform=TENSOR_TRANSFORM, decode="tensor", decode_size=SHORT_SIDE)
        )
    bound_names = {
        "bound: PIL decode+transform, in memory": "pil",
        "bound: scaled decode+tensor transform, in memory": "scaled_tensor",
    }
    for name, function in bound_names.items():
        measures[name] = lambda function=function: decode_bound(blobs, function, args.workers, args.min_seconds)
    measured = measure_rounds(measures, args.rounds)
    bounds = {name: measured.pop(name) for name in bound_names}
    for name, value in {**measured, **bounds}.items():
        extra = {}
        if "fast" in name:
            extra["of_scaled_bound"] = value / bounds["bound: scaled decode+tensor transform, in memory"]
        elif "default" in name:
            extra["of_pil_bound"] = value / bounds["bound: PIL decode+transform, in memory"]
        results.append(Result("photo", name, value, ratio=value / measured[base], baseline=base, extra=extra))


def run_tiny(args: argparse.Namespace, tree: str, jobs: dict[str, tuple], results: list[Result]) -> None:
    """28x28 PNGs: ImageFolder against raw stores, per item and as stacked batches."""
    log(f"tiny tree: {args.tiny_count} 28x28 PNGs")
    stores = {tuple(name.split()[1:]): dst for name, (_, dst, _) in jobs.items()}
    warm_page_cache([*tree_files(tree), *stores.values()])
    rate = lambda ds, collate=None: loader_rate(ds, args.workers, args.tiny_batch, args.min_seconds, collate)  # noqa: E731
    base = "ImageFolder (PIL, PILToTensor)"
    measures = {base: lambda: rate(ImageFolder(tree, transform=T.PILToTensor()))}
    for (backend, compression), dst in stores.items():
        cls = dataset_class(backend)
        dataset = cls(dst, decode="tensor")
        measures[f"{cls.__name__} raw {compression}, per item"] = lambda dataset=dataset: rate(dataset)
        measures[f"{cls.__name__} raw {compression}, batched, {args.workers} workers"] = lambda dataset=dataset: rate(
            dataset, torchpack.SkipBadCollate()
        )
        # The same batched reads in the training process: no worker-to-trainer transport.
        measures[f"{cls.__name__} raw {compression}, batched in-process (0 workers)"] = lambda dataset=dataset: (
            loader_rate(dataset, 0, args.tiny_batch, args.min_seconds, torchpack.SkipBadCollate())
        )
    transport = f"bound: DataLoader transport of ready batches, {args.workers} workers"
    measures[transport] = lambda: rate(TransportOnly(args.tiny_count), torchpack.SkipBadCollate())
    measured = measure_rounds(measures, args.rounds)
    for name, value in measured.items():
        results.append(Result("tiny", name, value, ratio=value / measured[base], baseline=base))


class TransportOnly(torch.utils.data.Dataset):
    """Batches of 28x28 images made without reading anything: what the DataLoader alone can deliver."""

    def __init__(self, size: int) -> None:
        self.size = size

    def __len__(self) -> int:
        return self.size

    def __getitems__(self, indices: list[int]) -> torchpack.StackedBatch:
        from torchpack.batch import batch_tensor

        return torchpack.StackedBatch(batch_tensor((len(indices), 3, 28, 28)), torch.zeros(len(indices), dtype=torch.int64))


# -- floors -----------------------------------------------------------------------------------


def floors(results: list[Result]) -> list[dict[str, Any]]:
    """The issue's floors, each with the measured figure (the worse backend where there are two)."""

    def worst(group: str, contains: str, key: str = "ratio") -> float | None:
        values = [
            (r.extra[key] if key in r.extra else getattr(r, key))
            for r in results
            if r.group == group and contains in r.name
        ]
        values = [v for v in values if v is not None]
        return min(values) if values else None

    table = [
        ("default path vs ImageFolder", worst("photo", "default"), 1.05),
        ("fast path vs ImageFolder", worst("photo", "fast"), 2.0),
        ("fast path vs scaled decode bound", worst("photo", "fast", "of_scaled_bound"), 0.90),
        ("tiny raw per item vs ImageFolder", worst("tiny", "per item"), 6.0),
        ("tiny raw batched vs ImageFolder (workers)", worst("tiny", "batched,"), 50.0),
        ("tiny raw batched vs ImageFolder (in-process)", worst("tiny", "batched in-process"), 50.0),
        ("conversion with check vs decode bound", worst("convert", "full-decode check"), 0.90),
    ]
    sizes = [r.ratio for r in results if r.group == "size" and r.ratio is not None]
    out = [{"floor": n, "measured": v, "at_least": f, "met": v is not None and v >= f} for n, v, f in table]
    worst_size = max(sizes) if sizes else None
    out.append({"floor": "store size vs tree", "measured": worst_size, "at_most": 1.0, "met": worst_size is not None and worst_size <= 1.0})
    return out


# -- reporting --------------------------------------------------------------------------------


def log(message: str) -> None:
    print(f"[bench {time.perf_counter() - _STARTED:6.1f}s] {message}", file=sys.stderr, flush=True)


def fmt_value(r: Result) -> str:
    return f"{r.value / 2**20:,.1f} MiB" if r.unit == "bytes" else f"{r.value:,.0f} img/s"


def fmt_ratio(r: Result) -> str:
    if r.ratio is None:
        return ""
    return f"{r.ratio:.2f}x" if r.group != "size" else f"{r.ratio:.1%} of tree"


def markdown(results: list[Result], floor_rows: list[dict[str, Any]], config: dict[str, Any]) -> str:
    lines = [
        f"Workers: {config['workers']}, photo tree: {config['photo_images']} images ({config['tree']}), "
        f"tiny tree: {config['tiny_count']} 28x28 PNGs, CPUs: {config['cpus']}.",
        "",
        "| group | configuration | rate / size | ratio | against |",
        "| --- | --- | ---: | ---: | --- |",
    ]
    for r in results:
        note = "".join(f", {k.replace('_', ' ')} {v:.0%}" for k, v in r.extra.items() if k.startswith("of_"))
        lines.append(f"| {r.group} | {r.name} | {fmt_value(r)} | {fmt_ratio(r)}{note} | {r.baseline or ''} |")
    lines += ["", "| floor | measured | needed | met |", "| --- | ---: | ---: | :---: |"]
    for f in floor_rows:
        needed = f">= {f['at_least']}" if "at_least" in f else f"<= {f['at_most']}"
        measured = "n/a" if f["measured"] is None else f"{f['measured']:.2f}"
        lines.append(f"| {f['floor']} | {measured} | {needed} | {'yes' if f['met'] else 'NO'} |")
    return "\n".join(lines) + "\n"


def plot(results: list[Result], path: str) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    groups = [g for g in ("photo", "tiny", "convert") if any(r.group == g for r in results)]
    fig, axes = plt.subplots(len(groups), 1, figsize=(10, 2.2 + 0.45 * len(results)), squeeze=False)
    titles = {"photo": "Photo JPEGs, Resize(256)+CenterCrop(224)", "tiny": "28x28 PNGs", "convert": "Conversion"}
    for ax, group in zip(axes[:, 0], groups):
        rows = [r for r in results if r.group == group]
        colours = ["tab:grey" if r.name.startswith("ImageFolder") else "tab:orange" if "bound" in r.name else "tab:blue" for r in rows]
        ax.barh([r.name for r in rows], [r.value for r in rows], color=colours)
        for y, r in enumerate(rows):
            label = f" {r.value:,.0f}" + (f"  ({r.ratio:.2f}x)" if r.ratio is not None else "")
            ax.text(r.value, y, label, va="center", fontsize=8)
        ax.invert_yaxis()
        ax.set_xscale("log" if group == "tiny" else "linear")
        ax.set_xlim(right=max(r.value for r in rows) * (4 if group == "tiny" else 1.35))
        ax.set_title(titles[group], fontsize=10)
        ax.set_xlabel("images/s")
        ax.tick_params(axis="y", labelsize=8)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


def report(results: list[Result], config: dict[str, Any], out: str) -> None:
    floor_rows = floors(results)
    width = max(len(r.name) for r in results)
    print(f"{'configuration'.ljust(width)}  {'rate / size':>16}  ratio")
    for r in results:
        print(f"{r.name.ljust(width)}  {fmt_value(r):>16}  {fmt_ratio(r)}")
    print()
    for f in floor_rows:
        needed = f">= {f['at_least']}" if "at_least" in f else f"<= {f['at_most']}"
        measured = "n/a" if f["measured"] is None else f"{f['measured']:.2f}"
        print(f"{'met ' if f['met'] else 'MISS'}  {f['floor']}: {measured} (needs {needed})")
    with open(os.path.join(out, "results.json"), "w", encoding="utf-8") as f:
        json.dump({"config": config, "results": [asdict(r) for r in results], "floors": floor_rows}, f, indent=2)
    with open(os.path.join(out, "results.md"), "w", encoding="utf-8") as f:
        f.write(markdown(results, floor_rows, config))
    plot(results, os.path.join(out, "results.png"))
    log(f"wrote {out}/results.json, results.md, results.png")


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--tree", help="an ImageFolder tree of photos (default: generate one)")
    ap.add_argument("--workers", type=int, default=2, help="DataLoader / pool / converter processes (default 2)")
    ap.add_argument("--out", default="bench_out", help="folder for results and the generated trees and stores")
    ap.add_argument("--quick", action="store_true", help="a small smoke run (seconds, not minutes)")
    ap.add_argument("--tiny-count", type=int, help="28x28 PNGs to generate (default 30000; 600 with --quick)")
    ap.add_argument("--photo-count", type=int, help="generated photos without --tree (default 1000; 40 with --quick)")
    ap.add_argument("--photo-batch", type=int, default=PHOTO_BATCH, help="batch size for photos (default 64)")
    ap.add_argument("--tiny-batch", type=int, default=512, help="batch size for tiny images (default 512)")
    ap.add_argument("--min-seconds", type=float, help="time each rate over whole epochs for at least this long")
    ap.add_argument("--rounds", type=int, help="measure everything this many times, round-robin; report medians (default 3, 1 with --quick)")
    ap.add_argument("--skip-photo", action="store_true", help="leave out the photo tree")
    ap.add_argument("--skip-tiny", action="store_true", help="leave out the tiny-image set")
    ap.add_argument("--keep", action="store_true", help="keep the generated trees and stores in OUT/work")
    args = ap.parse_args(argv)
    if args.workers < 1:
        ap.error("--workers must be >= 1")
    args.tiny_count = args.tiny_count or (600 if args.quick else 30000)
    args.rounds = args.rounds or (1 if args.quick else 3)
    args.photo_count = args.photo_count or (40 if args.quick else 1000)
    if args.min_seconds is None:
        args.min_seconds = 0.2 if args.quick else 3.0
    if args.quick:
        args.photo_batch = min(args.photo_batch, 8)
        args.tiny_batch = min(args.tiny_batch, 128)
    return args


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    torch.set_num_threads(1)
    out = os.path.abspath(args.out)
    work = os.path.join(out, "work")
    shutil.rmtree(work, ignore_errors=True)
    os.makedirs(work)
    tree = args.tree
    if tree is None and not args.skip_photo:
        per_class = max(1, args.photo_count // 10)
        tree = make_photo_tree(os.path.join(work, "photos"), 10, per_class)
    started = time.perf_counter()
    photo_jobs = {} if args.skip_photo else photo_conversions(args, tree, work)
    tiny_jobs = {}
    if not args.skip_tiny:
        tiny_tree = make_tiny_tree(os.path.join(work, "tiny"), args.tiny_count)
        tiny_jobs = tiny_conversions(args, tiny_tree, work)
    # One interpreter for every conversion: starting one costs seconds of imports.
    jobs = {**photo_jobs, **tiny_jobs}
    rounds = [convert_all(list(jobs.values())) for _ in range(args.rounds)]
    converted = {name: median_result([r[i] for r in rounds]) for i, name in enumerate(jobs)}
    results: list[Result] = []
    if not args.skip_photo:
        run_photo(args, tree, photo_jobs, converted, results)
    if not args.skip_tiny:
        run_tiny(args, tiny_tree, tiny_jobs, results)
    config = {
        "tree": os.path.abspath(tree) if args.tree else "generated",
        "photo_images": 0 if args.skip_photo else len(tree_files(tree)),
        "tiny_count": 0 if args.skip_tiny else args.tiny_count,
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
