"""bench_remote.py's run: the throttled server, every store in the bucket, each system timed, the HDF5 experiment, the report."""

from __future__ import annotations

import argparse
import os
import shutil
import sys
import threading
import time
from typing import Any

from peers.common import tree_samples
from suite.common import log

from . import hdf5_ranged, report
from .jobs import JobError, run_job
from .server import ThrottledS3Server
from .stores import BUCKET, BucketStore, convert_peer, convert_torchpack
from .systems import PIPELINES, SYSTEMS

MB = 1e6
DEFAULT_BANDWIDTH = 100 * MB
FRACTIONS = [0.01, 0.1, 0.5, 1.0]
QUICK_IMAGES = 24


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description="torchpack and its peers reading a store from a throttled local S3 server.")
    parser.add_argument("--tree", required=True, help="an ImageFolder tree of JPEGs")
    parser.add_argument("--out", default="bench_out/remote")
    parser.add_argument("--workers", type=int, default=2, help="DataLoader workers of every system")
    parser.add_argument("--batch", type=int, default=64)
    parser.add_argument("--bandwidth", default="auto",
                        help="the link in MB/s (10^6 bytes); auto: 100, or half the server's unthrottled rate if that is lower")
    parser.add_argument("--delay-ms", type=float, default=20.0, help="the added per-request delay of the HDF5 experiment")
    parser.add_argument("--rounds", type=int, default=3, help="cold + warm + local epochs per system and pipeline")
    parser.add_argument("--min-seconds", type=float, default=3.0,
                        help="the warm and the local figures span whole epochs adding up to this")
    parser.add_argument("--hdf5-rounds", type=int, default=3, help="rounds of the HDF5 ranged-read experiment (0: skip it)")
    parser.add_argument("--systems", nargs="+", default=list(SYSTEMS), choices=list(SYSTEMS))
    parser.add_argument("--pipelines", nargs="+", default=list(PIPELINES), choices=list(PIPELINES))
    parser.add_argument("--peers-python", default=sys.executable,
                        help="the interpreter of the peers' venv (.venv-peers/bin/python); default: this one")
    parser.add_argument("--max-images", type=int, default=None, help="read only this many images of the tree (copied)")
    parser.add_argument("--job-timeout", type=float, default=1800)
    parser.add_argument("--keep-work", action="store_true", help="keep OUT/work (the stores and caches)")
    parser.add_argument("--quick", action="store_true",
                        help=f"a smoke run: 1 round, at most {QUICK_IMAGES} images, one epoch per figure")
    args = parser.parse_args(argv)
    if args.quick:
        args.rounds, args.hdf5_rounds, args.min_seconds = 1, 1, 0.0
        args.max_images = min(args.max_images or QUICK_IMAGES, QUICK_IMAGES)
    return args


def subset_tree(tree: str, dst: str, limit: int) -> str:
    """The first ``limit`` images of ``tree``, as many from each class, copied into ``dst``."""
    samples = tree_samples(tree)
    by_class: dict[int, list[str]] = {}
    for path, target in samples:
        by_class.setdefault(target, []).append(path)
    per_class = max(1, limit // max(1, len(by_class)))
    for paths in by_class.values():
        for path in paths[:per_class]:
            target = os.path.join(dst, os.path.relpath(path, tree))
            os.makedirs(os.path.dirname(target), exist_ok=True)
            shutil.copyfile(path, target)
    return dst


def link_figures(fs: Any, store: BucketStore, scratch: str) -> dict[str, Any]:
    """The server unthrottled, on the largest shard of ``store``: ``torchpack.download`` of it over 1 and over 2
    connections at once (each download one connection, ``streams=1``), and the round trip of a GET (moto reads the whole object for each, so it grows with the object)."""
    import torchpack.download
    from torchpack.remote import RemoteShard

    sizes = {key: int(fs.info(key)["size"]) for key in store.objects if not key.endswith(".index")}
    key = max(sizes, key=sizes.get)
    shard = RemoteShard(f"s3://{key}", key, sizes[key], "probe")
    rates = {}
    for streams in (1, 2):
        paths = [os.path.join(scratch, f"probe-{i}") for i in range(streams)]
        threads = [threading.Thread(target=torchpack.download.download, args=(fs, shard, p), kwargs={"streams": 1}) for p in paths]
        started = time.perf_counter()
        [t.start() for t in threads]
        [t.join() for t in threads]
        rates[str(streams)] = streams * shard.size / (time.perf_counter() - started)
        [os.remove(p) for p in paths]
    return {"unthrottled": rates, "probe_bytes": shard.size, "latency": hdf5_ranged.request_latency(fs, key)}


def pick_bandwidth(choice: str, unthrottled: dict[str, float]) -> float:
    if choice != "auto":
        return float(choice) * MB
    best = max(unthrottled.values())
    return DEFAULT_BANDWIDTH if best >= 2 * DEFAULT_BANDWIDTH else max(5 * MB, (best / 2) // (5 * MB) * (5 * MB))


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    out = os.path.abspath(args.out)
    work = os.path.join(out, "work")
    shutil.rmtree(work, ignore_errors=True)
    os.makedirs(work)
    tree = subset_tree(args.tree, os.path.join(work, "tree"), args.max_images) if args.max_images else args.tree
    images = len(tree_samples(tree))
    server = ThrottledS3Server()
    try:
        return _run(args, server, tree, images, work, out)
    finally:
        server.stop()
        if not args.keep_work:
            shutil.rmtree(work, ignore_errors=True)


def time_systems(args: argparse.Namespace, server: ThrottledS3Server, fs: Any, bucket: dict[str, BucketStore],
                 bandwidth: float, images: int, work: str) -> list[dict[str, Any]]:
    """Every system on every pipeline, each in a job interpreter (torchpack in this one's venv): the table's rows."""
    rows = []
    settings = {"workers": args.workers, "batch": args.batch}
    for name in args.systems:
        store = bucket[name]
        python = sys.executable if name == "torchpack" else args.peers_python
        for pipeline in args.pipelines:
            result, error = None, None
            if not store.error:
                job = {"system": name, "pipeline": pipeline, "settings": settings, "rounds": args.rounds,
                       "local": store.local, "min_seconds": args.min_seconds,
                       "cache_root": os.path.join(work, "cache", f"{name}-{pipeline}".replace(" ", "_")),
                       "store": {"url": store.url, "objects": store.objects, "endpoint": server.endpoint,
                                 "signed": [fs.sign(key, expiration=7 * 86400) for key in store.objects]}}
                try:
                    result = run_job(python, job, server.env, args.job_timeout)
                except JobError as exc:
                    error = f"failed: {exc}"
            row = report.epoch_row(name, pipeline, store.as_dict(), result, bandwidth, images, error)
            rows.append(row)
            if row.get("error"):
                log(f"{name}, {pipeline}: {row['error']}")
            else:
                log(f"{name}, {pipeline}: cold {row['cold_rate']:.0f} img/s ({row.get('link_fraction') or 0:.0%} of the "
                    f"link), warm {row['warm_rate']:.0f}, local {row['local_rate']:.0f} img/s")
    return rows


def _run(args: argparse.Namespace, server: ThrottledS3Server, tree: str, images: int, work: str, out: str) -> int:
    fs = server.filesystem()
    fs.mkdir(BUCKET)
    log(f"throttled S3 server at {server.endpoint}; converting {images} images")
    stores = convert_torchpack(tree, work, fs, server.storage_options, args.workers)
    bucket: dict[str, BucketStore] = {"torchpack": stores["lmdb"]}
    for name in args.systems:
        if name != "torchpack":
            bucket[name] = convert_peer(SYSTEMS[name], args.peers_python, tree, work, fs, args.workers)
    fs.invalidate_cache()

    figures = link_figures(fs, stores["lmdb"], work)
    bandwidth = pick_bandwidth(args.bandwidth, figures["unthrottled"])
    server.set(bandwidth=bandwidth, delay=0.0)
    log(f"unthrottled: {', '.join(f'{k} connection(s) {v / MB:.0f} MB/s' for k, v in figures['unthrottled'].items())}; "
        f"link throttled to {bandwidth / MB:.0f} MB/s")

    rows = time_systems(args, server, fs, bucket, bandwidth, images, work)

    hdf5, hdf5_error = None, None
    if args.hdf5_rounds < 1:
        hdf5_error = "skipped (--hdf5-rounds 0)"
    else:
        try:
            shards = sorted((int(fs.info(k)["size"]), k) for k in stores["hdf5"].objects if k.endswith(".h5"))
            key = shards[len(shards) // 2][1]  # the median shard
            hdf5 = hdf5_ranged.measure(server, fs, key, work, FRACTIONS, [0.0, args.delay_ms / 1e3], args.hdf5_rounds)
        except Exception as exc:
            hdf5_error = f"failed: {type(exc).__name__}: {exc}"
            log(f"HDF5 ranged reads {hdf5_error}")

    result = {
        "settings": {"tree": os.path.abspath(args.tree), "images": images, "workers": args.workers, "batch": args.batch,
                     "rounds": args.rounds, "min_seconds": args.min_seconds, "hdf5_rounds": args.hdf5_rounds,
                     "fractions": FRACTIONS, "delay_ms": args.delay_ms, "bandwidth_option": args.bandwidth,
                     "quick": args.quick, "peers_python": args.peers_python, "systems": args.systems,
                     "pipelines": args.pipelines},
        "server": {"bandwidth": bandwidth, **figures},
        "stores": {name: store.as_dict() for name, store in {**bucket, "torchpack (HDF5)": stores["hdf5"]}.items()},
        "rows": rows,
        "hdf5": hdf5,
        "hdf5_error": hdf5_error,
    }
    print(report.write(result, out))
    return 0
