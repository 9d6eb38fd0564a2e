"""Smoke test of benchmarks/bench_remote.py: a --quick run on a dozen generated photos, torchpack only.

The peers run in this interpreter (no --peers-python), where they are not installed: their rows
must say so, and torchpack's rows, the server's figures and the HDF5 experiment must be there.
"""

from __future__ import annotations

import importlib
import json
import os
import subprocess
import sys

BENCHMARKS = os.path.join(os.path.dirname(os.path.dirname(os.path.abspath(__file__))), "benchmarks")
BENCH_REMOTE = os.path.join(BENCHMARKS, "bench_remote.py")


def bench(module: str):
    """A module of benchmarks/' packages: benchmarks/ itself is no package."""
    if BENCHMARKS not in sys.path:
        sys.path.insert(0, BENCHMARKS)
    return importlib.import_module(module)


def test_bench_remote_quick_smoke_run(tmp_path):
    tree = bench("suite.trees").make_photo_tree(str(tmp_path / "photos"), num_classes=2, per_class=6)
    out = tmp_path / "remote"
    done = subprocess.run(
        [sys.executable, BENCH_REMOTE, "--quick", "--tree", tree, "--out", str(out)],
        capture_output=True, text=True, timeout=300,
    )
    assert done.returncode == 0, done.stderr[-3000:]
    assert not (out / "work").exists()
    result = json.loads((out / "remote.json").read_text())
    assert result["settings"]["images"] == 12 and result["settings"]["quick"]

    server = result["server"]
    assert server["bandwidth"] > 0 and server["latency"] > 0
    assert set(server["unthrottled"]) == {"1", "2"} and all(rate > 0 for rate in server["unthrottled"].values())

    rows = {(r["system"], r["pipeline"]): r for r in result["rows"]}
    systems = ("torchpack", "Mosaic Streaming", "LitData", "WebDataset")
    assert set(rows) == {(s, p) for s in systems for p in ("link", "training")}
    for pipeline in ("link", "training"):
        row = rows[("torchpack", pipeline)]
        assert row["error"] is None, row
        for key in ("cold_rate", "warm_rate", "local_rate", "link_fraction", "link_bound_rate", "warm_over_local"):
            assert row[key] > 0, (key, row)
        assert row["images_per_cold_epoch"] == 12
        assert 0.9 < row["served_over_store"] < 1.1, row  # each shard downloaded once, sidecars read at open
        assert row["warm_bytes"] == 0, row  # the warm epoch reads the cache only
    for system in systems[1:]:
        for pipeline in ("link", "training"):
            assert rows[(system, pipeline)]["error"].startswith("not installed"), rows[(system, pipeline)]

    hdf5 = result["hdf5"]
    assert hdf5 is not None, result["hdf5_error"]
    assert [d["delay"] for d in hdf5["delays"]] == [0.0, 0.02]
    for entry in hdf5["delays"]:
        assert [r["fraction"] for r in entry["rows"]] == [0.01, 0.1, 0.5, 1.0]
        assert all(r["ranged_sequential"] > 0 and r["ranged_concurrent"] > 0 and r["download"] > 0 for r in entry["rows"])
        assert entry["latency"] >= entry["delay"]

    markdown = (out / "remote.md").read_text()
    assert markdown in done.stdout
    for text in ("| server figure | value |", "| torchpack | link |", "| torchpack | training |",
                 "| Mosaic Streaming | link | – | not installed", "fraction of the link", "break-even", "of local (goal"):
        assert text in markdown, text
