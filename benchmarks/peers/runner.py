"""One tree through every system: convert, probe the contract, time every route in round-robin rounds."""

from __future__ import annotations

import argparse
import math
import os
from dataclasses import asdict
from typing import Any, Callable

import numpy as np
import torch

from suite.common import log, measure_rounds, tree_allocated_bytes, warm_page_cache
from suite.rates import Timing

from .common import PIPELINES, RANDOM_K, TREE, VALIDATION, Adapter, Route, Row, Store, tree_samples
from .contract import collect_probe, contract, reference
from .convert import convert_group, image_sizes, store_files, stored_sizes
from .jobs import PeerError, measure_route, run_job


def probe_row(adapter: Adapter, route: Route, path: str, group: str, indices: list[int], work: str) -> dict[str, Any]:
    """``collect_probe`` for one route: here, or in a job interpreter for a system read only there (FFCV)."""
    if not adapter.isolated:
        return collect_probe(route, path, group, indices)
    out = os.path.join(work, f"probe_{os.getpid()}.pt")
    job = {"kind": "probe", "system": adapter.system, "group": group, "route": route.name, "path": path,
           "indices": indices, "out": out, "settings": asdict(adapter.settings)}
    run_job(adapter.python, job)
    probe = torch.load(out, weights_only=True)
    os.remove(out)
    probe["random"] = None if probe["random"] is None else {int(k): v for k, v in probe["random"].items()}
    return probe


def rate_measure(
    adapter: Adapter, route: Route, path: str, group: str, row: Row, files: list[str]
) -> Callable[[], float]:
    """A measure for suite.common's ``measure_rounds``: NaN and an error on the row instead of an exception.

    ``files`` (what the route reads) are read once before each timing: with several raw photo
    stores of ~1 MB a photo, one round's reads can push another row's store out of the page cache.
    Each round's images per CPU-second go to ``row.cpu_rounds``.
    """

    def measure() -> float:
        if row.error:
            return math.nan
        warm_page_cache(files)
        try:
            if adapter.isolated:
                job = {"kind": "rate", "system": adapter.system, "group": group, "route": route.name, "path": path,
                       "pipeline": route.pipeline, "settings": asdict(adapter.settings)}
                timing = Timing(**run_job(adapter.python, job))
            else:
                timing = measure_route(route, path, group, adapter.settings)
        except Exception as exc:
            row.error = str(exc) if isinstance(exc, PeerError) else f"{type(exc).__name__}: {exc}"
            log(f"{row.label} failed: {row.error}")
            return math.nan
        row.rounds.append(timing.rate)
        row.cpu_rounds.append(timing.cpu_rate)
        return timing.rate

    return measure


def store_of(adapter: Adapter, group: str, route: Route) -> Store:
    """The Store a route reads (TREE for the routes that read the tree itself)."""
    if route.store is None:
        return TREE
    return next(st for st in adapter.stores(group) if st.name == route.store)


def describe(row: Row, store: Store, sizes: list[tuple[int, int]] | None) -> None:
    """Fill in the row's kind, cap and (photos) mean stored megapixels."""
    row.kind = store.kind(row.group)
    row.cap = None if store.cap is None else str(store.cap)
    row.holds = "pixels" if store.raw_photos else "jpeg" if store.reencoded else "files"
    if sizes:
        row.stored_megapixels = float(np.mean([w * h for w, h in stored_sizes(sizes, store.cap)])) / 1e6


def chosen_routes(adapter: Adapter, group: str, args: argparse.Namespace) -> list[Route]:
    """The adapter's routes of the chosen pipelines (``--pipelines``; tiny routes are all VALIDATION)."""
    pipelines = getattr(args, "pipelines", None) or PIPELINES
    return [r for r in adapter.routes(group) if group != "photo" or r.pipeline in pipelines]


def finish(rows: list[Row], medians: dict[str, float]) -> None:
    """Each row's median rate and images per CPU-second, and its ratio to ImageFolder on the same pipeline."""
    base = {r.pipeline: medians.get(r.key) for r in rows if r.system == "ImageFolder"}
    for row in rows:
        value = medians.get(row.key)
        if value is None or math.isnan(value) or row.error:
            continue
        row.rate = value
        cpu = [c for c in row.cpu_rounds if not math.isnan(c)]
        row.cpu_rate = float(np.median(cpu)) if cpu else None
        base_rate = base.get(row.pipeline)
        if base_rate and not math.isnan(base_rate):
            row.ratio = value / base_rate


def run_group(adapters: list[Adapter], group: str, tree: str, work: str, args: argparse.Namespace) -> list[Row]:
    """Convert, probe and time every route of every system on one tree (photos: each chosen pipeline)."""
    settings = adapters[0].settings
    samples = tree_samples(tree)
    log(f"{group} tree: {tree} ({len(samples)} images)")
    missing = {a.system: a.missing() for a in adapters}
    for system, why in missing.items():
        if why:
            log(f"{system} is not available: {why}")
    ready = [a for a in adapters if not missing[a.system]]
    sizes = image_sizes(tree) if group == "photo" else None
    skip_raw = bool(getattr(args, "skip_raw_photos", False))
    wanted = {(a.system, r.store) for a in ready for r in chosen_routes(a, group, args) if r.store is not None}
    stores = convert_group(ready, group, tree, work, settings, args.convert_rounds, sizes, skip_raw, wanted)
    tree_size = tree_allocated_bytes(tree)
    rng = np.random.default_rng(0)
    n = len(samples)
    indices = sorted(set(rng.choice(n, size=min(RANDOM_K[group], n), replace=False).tolist()) | {n - 1})
    ref = reference(tree, group, indices)
    tree_files = [p for p, _ in samples]
    warm_page_cache(tree_files + [f for s in stores.values() if "path" in s for f in store_files(s["path"])])

    rows, measures = [], {}
    for adapter in adapters:
        for route in chosen_routes(adapter, group, args):
            store = store_of(adapter, group, route)
            if store.raw_photos and skip_raw:
                continue
            row = Row(adapter.system, route.name, group, route.store, pipeline=route.pipeline, runs=route.runs(settings))
            describe(row, store, sizes)
            rows.append(row)
            path = tree
            if missing[adapter.system]:
                row.error, row.missing = missing[adapter.system], True
                continue
            skipped = route.skip() if route.skip else None
            if skipped:
                row.error = skipped
                log(f"{row.key}: {skipped}")
                continue
            if route.store is not None:
                converted = stores[(adapter.system, route.store)]
                if "error" in converted or "refused" in converted:
                    row.error = converted.get("refused") or f"conversion failed: {converted['error']}"
                    continue
                path = converted["path"]
                row.convert_seconds, row.size_bytes = converted["seconds"], converted["size"]
                row.size_ratio = converted["size"] / tree_size
            else:
                row.size_bytes, row.size_ratio = tree_size, 1.0
            if route.pipeline == VALIDATION:  # a training route's random crops are no sample of ImageFolder's
                try:
                    row.contract = contract(probe_row(adapter, route, path, group, indices, work), ref)
                except Exception as exc:
                    row.contract = {"error": str(exc) if isinstance(exc, PeerError) else f"{type(exc).__name__}: {exc}"}
                    log(f"{row.label}: contract probe failed: {row.contract['error']}")
            files = tree_files if route.store is None else store_files(path)
            measures[row.key] = rate_measure(adapter, route, path, group, row, files)
    finish(rows, measure_rounds(measures, args.rounds) if measures else {})
    return rows
