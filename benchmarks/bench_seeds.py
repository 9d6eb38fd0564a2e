"""The seeds' experiment, redone with torchpack: store and read N small images as PNG files, LMDB and HDF5.

usage::

    python benchmarks/bench_seeds.py [--max-n 100000] [--out bench_out/seeds]

As in "Three ways of storing and accessing lots of images in Python" (../shared/seeds/001):
N CIFAR-sized (32x32 RGB) images, N = 10, 100, 1,000, 10,000, 100,000, stored one by one
as PNG files (an ImageFolder tree, the label being the folder), or into one LMDB or HDF5
file; then all N read back as uint8 arrays; and the disk space each takes. The seed pickled
arrays into LMDB; here the stores are torchpack's, written by ``torchpack.convert`` from the
PNG tree, either keeping the PNG bytes ("encoded") or the decoded pixels, lz4-compressed
("raw"). Store and read times are single-process, as in the seed.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import sys
import time
from typing import Any

import numpy as np
from PIL import Image
from torchvision.datasets import ImageFolder

import torchpack

CUTOFFS = (10, 100, 1000, 10000, 100000)
METHODS = ("PNG files", "LMDB encoded", "LMDB raw", "HDF5 encoded", "HDF5 raw")
STORES = {
    "LMDB encoded": ("LMDBImageFolder", ".lmdb", {"storage": "encoded"}),
    "LMDB raw": ("LMDBImageFolder", ".lmdb", {"storage": "raw"}),
    "HDF5 encoded": ("HDF5ImageFolder", ".h5", {"storage": "encoded"}),
    "HDF5 raw": ("HDF5ImageFolder", ".h5", {"storage": "raw"}),
}
READ_BATCH = 1024


def cifar_like(count: int, seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    """``count`` 32x32 RGB images of smooth colour plus noise (PNG-compressible like CIFAR), and labels 0-9."""
    rng = np.random.default_rng(seed)
    coarse = rng.integers(0, 256, (count, 4, 4, 3)).astype(np.float32)
    images = coarse.repeat(8, axis=1).repeat(8, axis=2) + rng.normal(0, 10, (count, 32, 32, 3))
    return np.clip(images, 0, 255).astype(np.uint8), np.arange(count) % 10


def store_png_files(images: np.ndarray, labels: np.ndarray, root: str) -> None:
    for c in range(10):
        os.makedirs(os.path.join(root, str(c)), exist_ok=True)
    for i, (image, label) in enumerate(zip(images, labels)):
        Image.fromarray(image).save(os.path.join(root, str(label), f"{i:06d}.png"))


def read_png_files(root: str) -> int:
    dataset = ImageFolder(root)
    return sum(np.asarray(dataset[i][0]).shape[0] > 0 for i in range(len(dataset)))


def read_store(method: str, path: str) -> int:
    """Every image as uint8 pixels, through batched reads (a stacked tensor per batch for raw stores)."""
    dataset = getattr(torchpack, STORES[method][0])(path, decode="tensor")
    count = 0
    for start in range(0, len(dataset), READ_BATCH):
        batch = dataset.__getitems__(list(range(start, min(start + READ_BATCH, len(dataset)))))
        count += len(batch)
    return count


def allocated(path: str) -> int:
    """Disk space (``st_blocks * 512``) of a file, or of a folder with everything in it."""
    if os.path.isfile(path):
        return os.stat(path).st_blocks * 512
    total = 0
    for dirpath, _, filenames in os.walk(path):
        total += os.stat(dirpath).st_blocks * 512
        total += sum(os.stat(os.path.join(dirpath, f)).st_blocks * 512 for f in filenames)
    return total


def run_one(n: int, images: np.ndarray, labels: np.ndarray, work: str) -> list[dict[str, Any]]:
    rows = []
    tree = os.path.join(work, f"png_{n}")
    started = time.perf_counter()
    store_png_files(images[:n], labels[:n], tree)
    store_seconds = time.perf_counter() - started
    started = time.perf_counter()
    assert read_png_files(tree) == n
    rows.append({"n": n, "method": "PNG files", "store_s": store_seconds,
                 "read_s": time.perf_counter() - started, "disk_bytes": allocated(tree)})
    for method, (_, ext, options) in STORES.items():
        dst = os.path.join(work, f"{method.replace(' ', '_')}_{n}{ext}")
        # The PNG files are the source, so a store's time is the PNG files' plus the conversion's.
        started = time.perf_counter()
        torchpack.convert(tree, dst, workers=0, overwrite=True, **options)
        convert_seconds = time.perf_counter() - started
        started = time.perf_counter()
        assert read_store(method, dst) == n
        rows.append({"n": n, "method": method, "store_s": store_seconds + convert_seconds,
                     "convert_s": convert_seconds, "read_s": time.perf_counter() - started,
                     "disk_bytes": allocated(dst)})
    shutil.rmtree(work)
    os.makedirs(work)
    return rows


def markdown(rows: list[dict[str, Any]]) -> str:
    lines = ["| N | method | store (s) | read (s) | read (img/s) | disk (KiB) |", "| ---: | --- | ---: | ---: | ---: | ---: |"]
    for r in rows:
        lines.append(
            f"| {r['n']:,} | {r['method']} | {r['store_s']:.3f} | {r['read_s']:.4f} | "
            f"{r['n'] / max(r['read_s'], 1e-9):,.0f} | {r['disk_bytes'] / 1024:,.0f} |"
        )
    return "\n".join(lines) + "\n"


def plot(rows: list[dict[str, Any]], path: str) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(1, 3, figsize=(16, 4.8))
    for method in METHODS:
        mine = [r for r in rows if r["method"] == method]
        ns = [r["n"] for r in mine]
        for ax, key in zip(axes, ("store_s", "read_s", "disk_bytes")):
            ax.loglog(ns, [max(r[key], 1e-6) for r in mine], marker="o", label=method)
    for ax, title, ylabel in zip(
        axes, ("Store N images", "Read N images", "Disk usage"), ("seconds", "seconds", "bytes (allocated)")
    ):
        ax.set_title(title)
        ax.set_xlabel("number of images")
        ax.set_ylabel(ylabel)
        ax.grid(True, which="both", alpha=0.3)
    axes[0].legend()
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--max-n", type=int, default=CUTOFFS[-1], help="largest N to run (default 100000)")
    ap.add_argument("--out", default=os.path.join("bench_out", "seeds"), help="folder for the results")
    args = ap.parse_args(argv)
    cutoffs = [n for n in CUTOFFS if n <= args.max_n] or [args.max_n]
    out = os.path.abspath(args.out)
    work = os.path.join(out, "work")
    shutil.rmtree(work, ignore_errors=True)
    os.makedirs(work)
    images, labels = cifar_like(max(cutoffs))
    rows = []
    for n in cutoffs:
        rows.extend(run_one(n, images, labels, work))
        print(f"[seeds] N={n:,} done", file=sys.stderr, flush=True)
    shutil.rmtree(work, ignore_errors=True)
    print(f"{'N':>8}  {'method':<13} {'store s':>9} {'read s':>9} {'disk KiB':>10}")
    for r in rows:
        print(f"{r['n']:>8,}  {r['method']:<13} {r['store_s']:>9.3f} {r['read_s']:>9.4f} {r['disk_bytes'] / 1024:>10,.0f}")
    with open(os.path.join(out, "seeds.json"), "w", encoding="utf-8") as f:
        json.dump({"cutoffs": cutoffs, "rows": rows}, f, indent=2)
    with open(os.path.join(out, "seeds.md"), "w", encoding="utf-8") as f:
        f.write(markdown(rows))
    plot(rows, os.path.join(out, "seeds.png"))
    print(f"[seeds] wrote {out}/seeds.json, seeds.md, seeds.png", file=sys.stderr)
    return 0


if __name__ == "__main__":
    sys.exit(main())
