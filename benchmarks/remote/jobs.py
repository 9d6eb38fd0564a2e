"""The job interpreter: one system, one pipeline, timed epoch by epoch from the bucket (cold, then warm) and from local disk.

A job runs in a fresh interpreter of the system's venv (torchpack's own, or ``--peers-python``),
with the server's endpoint and credentials in its environment, and prints one JSON line.
"""

from __future__ import annotations

import gc
import json
import os
import re
import shutil
import subprocess
import sys
import time
import traceback
from typing import Any

from .server import server_log, server_stats
from .systems import SYSTEMS, RemoteStore, System

#: benchmarks/, which a job interpreter puts on its sys.path to import this package.
HERE = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
JOB_MARK = "@@bench_remote "
_JOB_CODE = "import sys; sys.path.insert(0, {here!r}); from remote import jobs; sys.exit(jobs.job_main(sys.argv[1]))"


class JobError(RuntimeError):
    """A failure inside a job interpreter, carrying its ``Type: message``."""


def run_job(python: str, job: dict[str, Any], env: dict[str, str], timeout: float) -> dict[str, Any]:
    """Run ``job`` in a fresh ``python`` with ``env`` added to the environment; its result, or JobError."""
    try:
        done = subprocess.run(
            [python, "-c", _JOB_CODE.format(here=HERE), json.dumps(job)],
            capture_output=True, text=True, timeout=timeout, env={**os.environ, **env},
        )
    except subprocess.TimeoutExpired:
        raise JobError(f"timed out after {timeout:.0f} s") from None
    for line in reversed(done.stdout.splitlines()):
        if line.startswith(JOB_MARK):
            result = json.loads(line[len(JOB_MARK) :])
            if "error" in result:
                raise JobError(result["error"])
            return result
    tail = " | ".join(done.stderr.strip().splitlines()[-3:])
    raise JobError(f"{os.path.basename(python)} exited with status {done.returncode}: {tail}")


def summary(exc: BaseException) -> str:
    """``Type: message`` on one line; of an error wrapped with its traceback (a DataLoader worker's), the innermost."""
    lines = [line.strip() for line in str(exc).splitlines() if line.strip()]
    raised = [line for line in lines if re.match(r"^[A-Za-z_][\w.]*(Error|Exception)\b.*:", line)]
    return raised[-1] if raised else f"{type(exc).__name__}: {lines[0] if lines else ''}"


def epoch(system: System, loader: Any, number: int) -> tuple[int, float, float]:
    """One epoch: images, seconds, and seconds to its first batch."""
    started = time.perf_counter()
    images, first = 0, None
    for batch in system.batches(loader, number):
        first = time.perf_counter() - started if first is None else first
        images += len(batch[1])
    return images, time.perf_counter() - started, first or 0.0


def epochs_for(system: System, loader: Any, first_number: int, min_seconds: float) -> tuple[int, float, int]:
    """Whole epochs until ``min_seconds`` have passed: images, seconds, and the next epoch number."""
    images, seconds, number = 0, 0.0, first_number
    while seconds < min_seconds or not images:
        n, s, _ = epoch(system, loader, number)
        images, seconds, number = images + n, seconds + s, number + 1
    return images, seconds, number


def link_idle(log: list[list[Any]], start: float, end: float) -> float:
    """Seconds of ``[start, end]`` in which the server sent no body byte (from its request log)."""
    spans = sorted((max(first, start), min(done, end)) for _, _, _, first, done, sent in log if sent and first is not None)
    busy, reach = 0.0, start
    for begin, finish in spans:
        if finish > reach:
            busy += finish - max(begin, reach)
            reach = finish
    return max(0.0, (end - start) - busy)


def link_span(log: list[list[Any]], start: float, end: float) -> tuple[float, float]:
    """Seconds of ``[start, end]`` before the server's first body byte, and after its last one."""
    spans = [(first, done) for _, _, _, first, done, sent in log if sent and first is not None and done > start]
    if not spans:
        return end - start, 0.0
    return max(0.0, min(first for first, _ in spans) - start), max(0.0, end - max(done for _, done in spans))


def time_epochs(system: System, store: RemoteStore, local: str, pipeline: str, cache_root: str, rounds: int,
                min_seconds: float) -> dict[str, Any]:
    """``rounds`` times: open the remote store on an empty cache, a cold epoch, warm epochs, then epochs of the local store.

    The warm and the local figures are over whole epochs adding up to ``min_seconds`` at least.
    The local loader runs one untimed epoch first (its workers start, the page cache fills, the
    first-read checks are done); each remote loader starts its workers inside its cold epoch, as
    a training job would. The server's counters and request log are read around the cold epoch.
    """
    keys = ("open", "cold", "cold_first_batch", "cold_link_idle", "cold_before_first_byte", "cold_after_last_byte",
            "warm", "local", "cold_images", "warm_images", "local_images", "cold_bytes", "cold_requests",
            "cold_server_cpu", "warm_bytes")
    out: dict[str, list[float]] = {k: [] for k in keys}
    local_loader = system.local_loader(local, pipeline)
    _, _, local_number = epochs_for(system, local_loader, 0, 0.0)
    for r in range(rounds):
        cache = os.path.join(cache_root, f"round{r}")
        shutil.rmtree(cache, ignore_errors=True)
        started = time.perf_counter()
        loader = system.remote_loader(store, cache, pipeline)
        out["open"].append(time.perf_counter() - started)
        before, since = server_stats(store.endpoint), time.monotonic()
        images, seconds, first = epoch(system, loader, 0)
        middle, until = server_stats(store.endpoint), time.monotonic()
        out["cold"].append(seconds), out["cold_images"].append(images), out["cold_first_batch"].append(first)
        log = server_log(store.endpoint, since)
        out["cold_link_idle"].append(link_idle(log, since, until))
        before_first, after_last = link_span(log, since, until)
        out["cold_before_first_byte"].append(before_first), out["cold_after_last_byte"].append(after_last)
        images, seconds, _ = epochs_for(system, loader, 1, min_seconds)
        after = server_stats(store.endpoint)
        out["warm"].append(seconds), out["warm_images"].append(images)
        images, seconds, local_number = epochs_for(system, local_loader, local_number, min_seconds)
        out["local"].append(seconds), out["local_images"].append(images)
        out["cold_bytes"].append(middle["bytes"] - before["bytes"])
        out["cold_requests"].append(middle["requests"] - before["requests"])
        out["cold_server_cpu"].append(middle["cpu_seconds"] - before["cpu_seconds"])
        out["warm_bytes"].append(after["bytes"] - middle["bytes"])
        loader = None
        gc.collect()  # its persistent workers go before the next round starts its own
        shutil.rmtree(cache, ignore_errors=True)
    return out


def job_main(raw: str) -> int:
    """Time one system on one pipeline (see ``time_epochs``); prints one JSON line."""
    job = json.loads(raw)
    try:
        import torch

        torch.set_num_threads(1)
        system = SYSTEMS[job["system"]](job["settings"])
        store = RemoteStore(**job["store"])
        result = time_epochs(
            system, store, job["local"], job["pipeline"], job["cache_root"], job["rounds"], job["min_seconds"]
        )
    except Exception as exc:
        traceback.print_exc()
        result = {"error": summary(exc)}
    print(JOB_MARK + json.dumps(result), flush=True)
    sys.stdout.flush()
    return 0
