"""Converting a tree into every system's stores: where each goes, whether the disk has room, the conversions."""

from __future__ import annotations

import os
import shutil
from dataclasses import asdict
from typing import Any

import numpy as np
from PIL import Image

from suite.common import allocated_bytes, log, tree_allocated_bytes
from suite.convert_routes import convert_all, median_result

from .common import Adapter, Cap, Settings, Store, tree_samples
from .jobs import PeerError, run_job

# A raw photo store (decoded pixels, ~1 MB a photo) is converted only with this many times its
# expected size free on the disk of OUT.
RAW_DISK_FACTOR = 3


def store_path(work: str, adapter: Adapter, group: str, store: Store) -> str:
    slug = f"{group}_{adapter.system}_{store.name}".lower().replace(" ", "_")
    return os.path.join(work, "".join(c if c.isalnum() or c in "_-" else "_" for c in slug) + store.ext)


def store_size(path: str) -> int:
    return allocated_bytes([path]) if os.path.isfile(path) else tree_allocated_bytes(path)


def remove(path: str) -> None:
    if os.path.isdir(path):
        shutil.rmtree(path)
    elif os.path.exists(path):
        os.remove(path)


def store_files(path: str) -> list[str]:
    if os.path.isfile(path):
        return [path]
    return [os.path.join(d, f) for d, _, files in os.walk(path) for f in files]


def image_sizes(tree: str) -> list[tuple[int, int]]:
    """``(width, height)`` of every image of the tree, from the file headers."""
    sizes = []
    for path, _ in tree_samples(tree):
        with Image.open(path) as image:
            sizes.append(image.size)
    return sizes


def stored_sizes(sizes: list[tuple[int, int]], cap: Cap | None) -> list[tuple[int, int]]:
    return sizes if cap is None else [cap.apply(w, h) for w, h in sizes]


def raw_store_bytes(sizes: list[tuple[int, int]], cap: Cap | None) -> int:
    """Expected size of a store of decoded RGB pixels: 3 bytes a stored pixel (headers left out)."""
    return sum(3 * w * h for w, h in stored_sizes(sizes, cap))


def disk_refusal(path: str, expected: int, factor: int = RAW_DISK_FACTOR) -> str | None:
    """Why a store of ``expected`` bytes is not written at ``path`` (too little free space), else None."""
    free = shutil.disk_usage(os.path.dirname(os.path.abspath(path))).free
    if free >= factor * expected:
        return None
    return (f"not converted: needs {factor}x its expected {expected / 2**30:.1f} GiB free, "
            f"{free / 2**30:.1f} GiB free on the disk of {os.path.dirname(os.path.abspath(path))}")


def convert_group(
    adapters: list[Adapter], group: str, tree: str, work: str, settings: Settings, rounds: int,
    sizes: list[tuple[int, int]] | None = None, skip_raw_photos: bool = False,
    wanted: set[tuple[str, str]] | None = None,
) -> dict[tuple[str, str], dict[str, Any]]:
    """Every store of the group: {(system, store): {"path", "seconds", "size"}, {"error"} or {"refused"}}.

    torchpack's stores are written first, in one interpreter, then each peer's; a store with a
    ``source`` is converted from that (earlier) store instead of the tree. ``wanted``: only these
    (system, store) pairs and their sources (None: all). Raw photo stores are left out with
    ``skip_raw_photos``, and refused (``disk_refusal``) when the disk, checked just before each is
    written, has not room for RAW_DISK_FACTOR times its expected size (``sizes``: the tree's image sizes).
    """
    done: dict[tuple[str, str], dict[str, Any]] = {}
    todo = [(a, st) for a in adapters for st in a.stores(group) if not (st.raw_photos and skip_raw_photos)]
    if wanted is not None:
        wanted = wanted | {st.source for a, st in todo if (a.system, st.name) in wanted and st.source}
        todo = [(a, st) for a, st in todo if (a.system, st.name) in wanted]

    def refused(adapter: Adapter, store: Store, path: str) -> bool:
        why = disk_refusal(path, raw_store_bytes(sizes or [], store.cap)) if store.raw_photos else None
        if why:
            done[(adapter.system, store.name)] = {"refused": why}
            log(f"{adapter.system} ({store.name}): {why}")
        return why is not None

    tp_jobs: dict[tuple[str, str], tuple[str, str, dict]] = {}
    for adapter, store in todo:
        path = store_path(work, adapter, group, store)
        if store.torchpack_options is not None and not refused(adapter, store, path):
            tp_jobs[(adapter.system, store.name)] = (tree, path, {"workers": settings.workers, **store.torchpack_options})
    done.update(convert_torchpack(tp_jobs, rounds))
    for adapter, store in todo:
        path = store_path(work, adapter, group, store)
        if store.torchpack_options is not None or refused(adapter, store, path):
            continue
        src = tree
        if store.source:
            source = done.get(store.source, {})
            if "path" not in source:
                why = source.get("error") or source.get("refused") or "not converted in this run"
                done[(adapter.system, store.name)] = {"error": f"its source, {store.source[0]}'s {store.source[1]} store: {why}"}
                continue
            src = source["path"]
        done[(adapter.system, store.name)] = convert_peer(adapter, group, store, src, path, settings, rounds)
    return done


def convert_torchpack(jobs: dict[tuple[str, str], tuple[str, str, dict]], rounds: int) -> dict[tuple[str, str], dict[str, Any]]:
    """All torchpack conversions in one interpreter (suite.convert_routes' way): the ``seconds`` torchpack reports."""
    if not jobs:
        return {}
    try:
        results = [convert_all(list(jobs.values())) for _ in range(rounds)]
    except Exception as exc:
        return {key: {"error": f"{type(exc).__name__}: {exc}"} for key in jobs}
    done = {}
    for i, (key, (_, path, _)) in enumerate(jobs.items()):
        result = median_result([r[i] for r in results])
        done[key] = {"path": path, "seconds": result["seconds"], "size": store_size(path)}
    return done


def convert_peer(
    adapter: Adapter, group: str, store: Store, tree: str, path: str, settings: Settings, rounds: int
) -> dict[str, Any]:
    """One peer store, converted from ``tree`` (or its source store) ``rounds`` times in a job interpreter (median seconds)."""
    seconds = []
    try:
        for _ in range(rounds):
            remove(path)
            job = {"kind": "convert", "system": adapter.system, "group": group, "store": store.name,
                   "src": tree, "dst": path, "settings": asdict(settings)}
            seconds.append(run_job(adapter.python, job)["seconds"])
        result = {"path": path, "seconds": float(np.median(seconds)), "size": store_size(path)}
        log(f"converted {group} tree with {adapter.system} ({store.name}): {result['seconds']:.1f} s")
    except Exception as exc:
        result = {"error": f"{type(exc).__name__}: {exc}" if not isinstance(exc, PeerError) else str(exc)}
        log(f"{adapter.system} ({store.name}) failed to convert: {result['error']}")
    return result
