"""Timing one route, and the job interpreter: a fresh Python (maybe another venv's) that converts, times or probes."""

from __future__ import annotations

import gc
import json
import os
import subprocess
import time
import traceback
from typing import Any, Iterable

import torch

from suite.rates import Timing, loader_timing, process_tree_cpu_seconds

from .common import VALIDATION, Adapter, Route, Settings
from .contract import collect_probe
from .registry import ADAPTERS

#: benchmarks/, which a job interpreter puts on its sys.path to import this package.
HERE = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
JOB_MARK = "@@bench_peers "


def iter_timing(loader: Iterable, min_seconds: float, warmup_batches: int) -> Timing:
    """Images, wall and CPU seconds of a system's own re-iterable loader, timed like suite.rates' ``loader_timing``."""
    for i, _ in enumerate(loader):
        if i + 1 >= warmup_batches:
            break
    cpu = process_tree_cpu_seconds()
    images, started = 0, time.perf_counter()
    while True:
        for batch in loader:
            images += len(batch[1])
        elapsed = time.perf_counter() - started
        if elapsed >= min_seconds:
            break
    return Timing(images, elapsed, process_tree_cpu_seconds() - cpu)


def measure_route(route: Route, path: str, group: str, settings: Settings) -> Timing:
    """Images, wall and CPU seconds of one route, in this process."""
    workers = settings.workers if route.workers is None else route.workers
    batch = settings.batch(group)
    try:
        if route.loader is not None:
            loader = route.loader(path, workers, batch)
            return iter_timing(loader, settings.min_seconds, 2 * max(workers, 1))
        return loader_timing(
            route.dataset(path), workers, batch, settings.min_seconds, route.collate, array_batches=route.array_batches
        )
    finally:
        loader = None
        gc.collect()  # let persistent workers and loader threads go before the next row starts


class PeerError(RuntimeError):
    """A failure inside a job interpreter, carrying its ``Type: message``."""


_JOB_CODE = "import sys; sys.path.insert(0, {here!r}); from peers import jobs; sys.exit(jobs.job_main(sys.argv[1]))"


def run_job(python: str, job: dict[str, Any]) -> dict[str, Any]:
    """Run ``job`` (see ``job_main``) in a fresh ``python``; its result, or PeerError with its error."""
    done = subprocess.run([python, "-c", _JOB_CODE.format(here=HERE), json.dumps(job)], capture_output=True, text=True)
    for line in reversed(done.stdout.splitlines()):
        if line.startswith(JOB_MARK):
            result = json.loads(line[len(JOB_MARK):])
            if "error" in result:
                raise PeerError(result["error"])
            return result
    tail = " | ".join(done.stderr.strip().splitlines()[-3:])
    raise PeerError(f"{os.path.basename(python)} exited with status {done.returncode}: {tail}")


def find_route(adapter: Adapter, group: str, name: str, pipeline: str = VALIDATION) -> Route:
    return next(r for r in adapter.routes(group) if r.name == name and r.pipeline == pipeline)


def job_main(raw: str) -> int:
    """The job interpreter: convert a store, time a route or probe it; prints one JSON line."""
    job = json.loads(raw)
    torch.set_num_threads(1)
    try:
        settings = Settings(**job["settings"])
        adapter = ADAPTERS[job["system"]](settings)
        if job["kind"] == "convert":
            store = next(s for s in adapter.stores(job["group"]) if s.name == job["store"])
            started = time.perf_counter()
            store.convert(job["src"], job["dst"], settings.workers)
            result = {"seconds": time.perf_counter() - started}
        elif job["kind"] == "rate":
            route = find_route(adapter, job["group"], job["route"], job.get("pipeline", VALIDATION))
            timing = measure_route(route, job["path"], job["group"], settings)
            result = {"images": timing.images, "seconds": timing.seconds, "cpu_seconds": timing.cpu_seconds}
        else:  # probe
            route = find_route(adapter, job["group"], job["route"])
            torch.save(collect_probe(route, job["path"], job["group"], job["indices"]), job["out"])
            result = {"out": job["out"]}
    except Exception as exc:
        traceback.print_exc()
        result = {"error": f"{type(exc).__name__}: {exc}"}
    print(JOB_MARK + json.dumps(result), flush=True)
    return 0
