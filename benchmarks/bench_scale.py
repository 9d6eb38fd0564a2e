"""Scale benchmark: open time and worker memory of an ImageNet-sized store (1.28M samples, tiny payloads).

Builds a synthetic store with the backend writers directly (writing 1.28M files first would
take longer than everything measured), then measures:

* the time to construct the dataset, which opens the store and reads its index (floor: 0.2 s);
* each DataLoader worker's USS, PSS and anonymous memory after its first batch and after a
  full pass over every index: it must stay flat (no copy-on-read growth of Python objects);
* for comparison, ``torchvision.datasets.ImageFolder``'s construction on a tree of empty files.

Usage::

    python benchmarks/bench_scale.py                     # 1,281,167 samples, both backends
    python benchmarks/bench_scale.py --samples 100000 --imagefolder-files 20000 --out bench_out/small

Writes ``scale.json`` and ``scale.md`` to ``--out`` (default ``bench_out/``).
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import shutil
import statistics
import sys
import time
import zlib
from typing import Any

import numpy as np
import psutil
import pyarrow as pa

IMAGENET_SAMPLES = 1_281_167
NUM_CLASSES = 1000
# A valid 1x1 RGB PNG: tiny, so the benchmark measures the store, not the disk.
TINY_PNG = bytes.fromhex(
    "89504e470d0a1a0a0000000d4948445200000001000000010802000000907753de0000000c4944415408d763f8cfc000000301010018dd8db00000000049454e44ae426082"
)


def build_store(backend: str, path: str, num_samples: int) -> float:
    """Write ``num_samples`` tiny samples and their index through the backend's writer; returns seconds."""
    from torchpack.backends import writer_class
    from torchvision.datasets.folder import IMG_EXTENSIONS

    from torchpack.format import FORMAT_NAME, FORMAT_VERSION, INDEX_SCHEMA, encode_header, encode_index

    started = time.perf_counter()
    staging = path + ".partial"
    shutil.rmtree(staging, ignore_errors=True)
    os.makedirs(staging)
    writer = writer_class(backend)(staging)
    for row in range(num_samples):
        writer.append(row, TINY_PNG)
        if row % 100_000 == 99_999:
            writer.commit()
    data_size = writer.commit()
    targets = (np.arange(num_samples, dtype=np.int64) * NUM_CLASSES // num_samples).astype(np.int32)
    classes = [f"n{c:08d}" for c in range(NUM_CLASSES)]
    paths = [f"{classes[t]}/{classes[t]}_{row}.JPEG" for row, t in enumerate(targets.tolist())]
    n = num_samples
    index = pa.table(
        {
            "path": pa.array(paths, pa.string()),
            "target": pa.array(targets),
            "offset": pa.array(np.arange(n, dtype=np.int64) * len(TINY_PNG)),
            "length": pa.array(np.full(n, len(TINY_PNG), dtype=np.int64)),
            "crc32": pa.array(np.full(n, zlib.crc32(TINY_PNG), dtype=np.uint32)),
            "encoding": pa.array(["png"] * n, pa.string()),
            "decoder": pa.array(["pillow"] * n, pa.string()),
            "height": pa.array(np.ones(n, np.int32)),
            "width": pa.array(np.ones(n, np.int32)),
            "channels": pa.array(np.full(n, 3, np.int8)),
        },
        schema=INDEX_SCHEMA,
    )
    header = {
        "format": FORMAT_NAME,
        "format_version": FORMAT_VERSION,
        "backend": backend,
        "created_by": "benchmarks/bench_scale.py",
        "classes": classes,
        "class_to_idx": {name: i for i, name in enumerate(classes)},
        "num_samples": n,
        "storage": {"mode": "encoded", "checked": True, "short_side": None, "quality": None, "raw_compression": None},
        "shard": {"index": 0, "count": 1, "scan_start": 0, "scan_stop": n, "scan_total": n, "dataset_id": "synthetic"},
        "source": {"files": n, "bytes": n * len(TINY_PNG)},
        "selection": {"extensions": list(IMG_EXTENSIONS), "is_valid_file": None, "not_selected": 0, "not_selected_paths": []},
        "bad_files": [],
    }
    index_bytes = encode_index(index)
    built = writer.finish(encode_header(header, index_bytes), index_bytes, data_size)
    os.replace(built, path)
    shutil.rmtree(staging)
    return time.perf_counter() - started


def time_open(dataset_class, path: str, repeats: int) -> dict[str, float]:
    """Seconds to construct the dataset (open the store, read and check its index), page cache warm."""
    from torchpack.store import load_store_index

    dataset_times, index_times = [], []
    for _ in range(repeats):
        started = time.perf_counter()
        dataset = dataset_class(path)
        dataset_times.append(time.perf_counter() - started)
        del dataset
        started = time.perf_counter()
        load_store_index(path)
        index_times.append(time.perf_counter() - started)
    return {
        "dataset_init_s_median": statistics.median(dataset_times),
        "dataset_init_s_min": min(dataset_times),
        "load_index_s_median": statistics.median(index_times),
    }


def length_loader(file) -> int:
    """A loader that only reads the bytes: the pass measures the store and index, not decoding."""
    return len(file.read())


def memory(pid: int) -> dict[str, int]:
    """USS, PSS and anonymous (heap, not file-backed) memory of a process, in bytes."""
    process = psutil.Process(pid)
    info = process.memory_full_info()
    anonymous = 0
    try:
        with open(f"/proc/{pid}/smaps_rollup") as f:
            for line in f:
                if line.startswith("Anonymous:"):
                    anonymous = int(line.split()[1]) * 1024
    except OSError:
        pass
    return {"uss": info.uss, "pss": info.pss, "rss": info.rss, "anonymous": anonymous}


def worker_memory(dataset, workers: int, batch_size: int) -> list[dict[str, Any]]:
    """Each worker's memory after its first batch and after a pass over every index."""
    from torch.utils.data import DataLoader

    loader = DataLoader(dataset, batch_size=batch_size, num_workers=workers, shuffle=False, multiprocessing_context="fork")
    batches = len(loader)
    iterator = iter(loader)
    next(iterator)
    pids = [w.pid for w in iterator._workers]  # private, but the only way to find the worker processes
    before = {pid: memory(pid) for pid in pids}
    seen = batch_size
    for _ in range(batches - 2):
        seen += len(next(iterator)[1])
    after = {pid: memory(pid) for pid in pids}  # every batch is done; the workers idle until the last is taken
    seen += len(next(iterator)[1])
    assert seen == len(dataset), (seen, len(dataset))
    return [{"pid": pid, "before": before[pid], "after": after[pid]} for pid in pids]


def make_empty_tree(root: str, num_files: int) -> None:
    for c in range(NUM_CLASSES):
        os.makedirs(os.path.join(root, f"n{c:08d}"), exist_ok=True)
    for i in range(num_files):
        c = i * NUM_CLASSES // num_files
        open(os.path.join(root, f"n{c:08d}", f"n{c:08d}_{i}.JPEG"), "wb").close()


def time_imagefolder(root: str, num_files: int, repeats: int) -> float:
    from torchvision.datasets import ImageFolder

    if not os.path.isdir(root) or sum(len(files) for _, _, files in os.walk(root)) != num_files:
        shutil.rmtree(root, ignore_errors=True)
        make_empty_tree(root, num_files)
    times = []
    for _ in range(repeats):
        started = time.perf_counter()
        ImageFolder(root)
        times.append(time.perf_counter() - started)
    return statistics.median(times)


def mib(n: int) -> str:
    return f"{n / 2**20:.1f}"


def report(results: dict[str, Any]) -> str:
    lines = [
        f"# Scale benchmark: {results['samples']:,} samples",
        "",
        f"{results['machine']}. Open times are medians of {results['repeats']} runs with a warm page cache.",
        "",
        "| backend | store MiB | build s | dataset init s (median / min) | index load s |",
        "| --- | ---: | ---: | ---: | ---: |",
    ]
    for backend, r in results["backends"].items():
        lines.append(
            f"| {backend} | {mib(r['store_bytes'])} | {r['build_s']:.1f} | "
            f"{r['open']['dataset_init_s_median']:.3f} / {r['open']['dataset_init_s_min']:.3f} | "
            f"{r['open']['load_index_s_median']:.3f} |"
        )
    ifo = results["imagefolder"]
    lines += [
        "",
        f"ImageFolder construction on {ifo['files']:,} empty files: {ifo['seconds']:.2f} s "
        f"(about {ifo['seconds_per_million'] * results['samples'] / 1e6:.1f} s at {results['samples']:,} files, scaled linearly).",
        "",
        f"## DataLoader worker memory, MiB (after the first batch -> after a full pass over all {results['samples']:,} indices)",
        "",
        "| backend | worker | USS | PSS | anonymous | RSS |",
        "| --- | ---: | ---: | ---: | ---: | ---: |",
    ]
    for backend, r in results["backends"].items():
        for k, w in enumerate(r["workers"]):
            cells = [f"{mib(w['before'][m])} -> {mib(w['after'][m])}" for m in ("uss", "pss", "anonymous", "rss")]
            lines.append(f"| {backend} | {k} | " + " | ".join(cells) + " |")
    lines += [
        "",
        "USS and RSS include the pages of the store's file that the worker touched (LMDB's map, HDF5's mmap):",
        "that is page cache, shared and reclaimable, and bounded by the store's size. Copy-on-read growth",
        "would show as growth of *anonymous* memory.",
    ]
    return "\n".join(lines) + "\n"


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--samples", type=int, default=IMAGENET_SAMPLES, help="samples in the synthetic store")
    parser.add_argument("--imagefolder-files", type=int, default=100_000, help="empty files for the ImageFolder comparison")
    parser.add_argument("--backends", nargs="+", default=["lmdb", "hdf5"], choices=["lmdb", "hdf5"])
    parser.add_argument("--workers", type=int, default=2, help="DataLoader workers")
    parser.add_argument("--batch-size", type=int, default=1024)
    parser.add_argument("--repeats", type=int, default=5, help="timed opens per backend")
    parser.add_argument("--out", default="bench_out", help="folder for the stores, scale.json and scale.md")
    parser.add_argument("--keep", action="store_true", help="keep the stores and the empty tree")
    args = parser.parse_args(argv)

    import torchpack

    os.makedirs(args.out, exist_ok=True)
    results: dict[str, Any] = {
        "samples": args.samples,
        "repeats": args.repeats,
        "machine": f"{platform.processor() or platform.machine()}, {os.cpu_count()} CPUs, Python {platform.python_version()}",
        "backends": {},
    }
    for backend in args.backends:
        path = os.path.join(args.out, f"scale.{'lmdb' if backend == 'lmdb' else 'h5'}")
        build_s = build_store(backend, path, args.samples)
        dataset_class = torchpack.LMDBImageFolder if backend == "lmdb" else torchpack.HDF5ImageFolder
        opened = time_open(dataset_class, path, args.repeats)
        dataset = dataset_class(path, loader=length_loader)
        workers = worker_memory(dataset, args.workers, args.batch_size)
        results["backends"][backend] = {
            "store_bytes": os.path.getsize(path),
            "build_s": build_s,
            "open": opened,
            "workers": workers,
        }
        print(f"{backend}: built in {build_s:.1f} s, dataset init {opened['dataset_init_s_median']:.3f} s", file=sys.stderr)
        if not args.keep:
            os.remove(path)
    tree = os.path.join(args.out, "imagefolder_tree")
    seconds = time_imagefolder(tree, args.imagefolder_files, max(1, args.repeats // 2))
    results["imagefolder"] = {
        "files": args.imagefolder_files,
        "seconds": seconds,
        "seconds_per_million": seconds * 1e6 / args.imagefolder_files,
    }
    if not args.keep:
        shutil.rmtree(tree)
    markdown = report(results)
    with open(os.path.join(args.out, "scale.json"), "w") as f:
        json.dump(results, f, indent=2)
    with open(os.path.join(args.out, "scale.md"), "w") as f:
        f.write(markdown)
    print(markdown)
    return 0


if __name__ == "__main__":
    sys.exit(main())
