"""HDF5 from the bucket: K samples of one shard by ranged GETs of their bytes, against downloading the shard whole and reading them locally.

Sample ``i`` of an HDF5 store lies at ``data_offset + offset[i]`` of its file (``/torchpack/data``
is contiguous; its file offset comes from a local copy, as h5py gives it). For K = each
fraction of the shard's samples, at each per-request delay of the server:

- ranged, one at a time: one GET per sample, each waiting for the last (what a DataLoader
  worker's ``__getitem__`` would do);
- ranged, all at once: the K ranges in one ``fs.cat_ranges`` (s3fs issues them concurrently);
- download: ``torchpack.download`` of the whole shard (16 MB ranged chunks), then the K samples
  read from the local file.

The break-even fraction is where the ranged time meets the download's (linear between the
measured fractions): below it, ranged reads are faster.
"""

from __future__ import annotations

import os
import time
import zlib
from typing import Any

import numpy as np

from suite.common import log


def _median_seconds(run, rounds: int) -> float:
    seconds = []
    for _ in range(rounds):
        started = time.perf_counter()
        run()
        seconds.append(time.perf_counter() - started)
    return float(np.median(seconds))


def shard_layout(fs: Any, key: str, work: str) -> tuple[Any, str, int, np.ndarray, np.ndarray]:
    """The shard as torchpack sees it remotely, a local copy, its data region's file offset, each sample's offset and length."""
    import h5py

    import torchpack.download
    from torchpack.backends import open_reader
    from torchpack.format import decode_header, decode_index
    from torchpack.remote import RemoteShard, object_version

    info = fs.info(key)
    shard = RemoteShard(fs.unstrip_protocol(key), key, int(info["size"]), object_version(info))
    local = os.path.join(work, "hdf5-shard.h5")
    torchpack.download.download(fs, shard, local)
    with h5py.File(local, "r") as f:
        data_offset = int(f["torchpack/data"].id.get_offset())
    with open_reader(local) as reader:
        header = decode_header(reader.header_bytes(), local)
        index = decode_index(reader.index_bytes(), header, local)
    offsets = index.column("offset").to_numpy().astype(np.int64)
    lengths = index.column("length").to_numpy().astype(np.int64)
    last = len(offsets) - 1  # a ranged GET of it must give the bytes the index's CRC-32 sealed
    sample = fs.cat_file(key, start=data_offset + offsets[last], end=data_offset + offsets[last] + lengths[last])
    if zlib.crc32(sample) != index.column("crc32")[last].as_py():
        raise AssertionError(f"{key}: the ranged GET of sample {last} at {data_offset} + its offset is not that sample")
    return shard, local, data_offset, offsets, lengths


def request_latency(fs: Any, key: str, count: int = 15) -> float:
    """Median seconds of a 1-byte ranged GET of the object: the server's round trip (moto reads the whole object for each)."""
    return _median_seconds(lambda: fs.cat_file(key, start=0, end=1), count)


def break_even(fractions: list[float], ranged: list[float], download: list[float]) -> float | None:
    """The fraction where ranged time meets the download's; 0.0: ranged slower at every fraction measured; None: never slower."""
    diff = np.asarray(ranged) - np.asarray(download)
    if diff[0] >= 0:
        return 0.0
    for i in range(1, len(diff)):
        if diff[i] >= 0:
            f0, f1 = fractions[i - 1], fractions[i]
            return float(f0 + (f1 - f0) * -diff[i - 1] / (diff[i] - diff[i - 1]))
    return None


def measure(
    server: Any, fs: Any, key: str, work: str, fractions: list[float], delays: list[float], rounds: int
) -> dict[str, Any]:
    """Every fraction at every delay (see the module's docstring); the server is left at delay 0."""
    import torchpack.download

    shard, local, data_offset, offsets, lengths = shard_layout(fs, key, work)
    n = len(offsets)
    rng = np.random.default_rng(0)
    result: dict[str, Any] = {"shard": shard.url, "shard_bytes": shard.size, "samples": n,
                              "mean_sample_bytes": float(lengths.mean()) if n else 0.0, "delays": []}
    for delay in delays:
        server.set(delay=delay)
        rows = []
        for fraction in fractions:
            k = max(1, min(n, round(fraction * n)))
            chosen = rng.choice(n, size=k, replace=False)
            starts = (data_offset + offsets[chosen]).tolist()
            ends = (data_offset + offsets[chosen] + lengths[chosen]).tolist()

            def one_at_a_time() -> None:
                for start, end in zip(starts, ends):
                    fs.cat_file(key, start=start, end=end)

            def all_at_once() -> None:
                fs.cat_ranges([key] * k, starts, ends)

            def download() -> None:
                torchpack.download.download(fs, shard, local)
                with open(local, "rb") as f:
                    for start, end in zip(starts, ends):
                        f.seek(start)
                        f.read(end - start)

            rows.append({
                "fraction": fraction, "samples": k,
                "ranged_sequential": _median_seconds(one_at_a_time, rounds),
                "ranged_concurrent": _median_seconds(all_at_once, rounds),
                "download": _median_seconds(download, rounds),
            })
        entry = {"delay": delay, "latency": request_latency(fs, key), "rows": rows}
        for mode in ("ranged_sequential", "ranged_concurrent"):
            entry[f"break_even_{mode}"] = break_even(fractions, [r[mode] for r in rows], [r["download"] for r in rows])
        result["delays"].append(entry)
        shown = {m: "never" if entry[f"break_even_{m}"] is None else f"{entry[f'break_even_{m}']:.1%}"
                 for m in ("ranged_sequential", "ranged_concurrent")}
        log(f"HDF5 ranged reads at +{delay * 1e3:.0f} ms: break-even {shown['ranged_sequential']} of the shard one at a "
            f"time, {shown['ranged_concurrent']} all at once")
    server.set(delay=0.0)
    os.remove(local)
    return result
