"""Smoke test of benchmarks/bench_peers.py: a --quick run on a few dozen generated images.

In an environment without the peers (the main one) their rows must say why they failed and the
ImageFolder and torchpack rows must still be measured; where peers are installed they run too.
"""

from __future__ import annotations

import importlib
import json
import os
import subprocess
import sys
import types

BENCHMARKS = os.path.join(os.path.dirname(os.path.dirname(os.path.abspath(__file__))), "benchmarks")
BENCH_PEERS = os.path.join(BENCHMARKS, "bench_peers.py")


def bench(module: str):
    """A module of benchmarks/' packages (``suite.trees``, ``peers.common``, ...): benchmarks/ itself is no package."""
    if BENCHMARKS not in sys.path:
        sys.path.insert(0, BENCHMARKS)
    return importlib.import_module(module)


def test_bench_peers_quick_smoke_run(tmp_path):
    suite = bench("suite.trees")
    photos = suite.make_photo_tree(str(tmp_path / "photos"), num_classes=2, per_class=6)
    tiny = suite.make_tiny_tree(str(tmp_path / "tiny"), count=60, num_classes=3)
    out = tmp_path / "peers"
    done = subprocess.run(
        [sys.executable, BENCH_PEERS, "--quick", "--workers", "1", "--min-seconds", "0.05",
         "--tree", photos, "--tiny", tiny, "--out", str(out)],
        capture_output=True, text=True, timeout=600,
    )
    assert done.returncode == 0, done.stderr[-3000:]
    for name in ("peers.json", "peers.md", "peers.png"):
        assert (out / name).stat().st_size > 0
    assert not (out / "work").exists()

    rows = json.loads((out / "peers.json").read_text())["rows"]
    assert {r["group"] for r in rows} == {"photo", "tiny"}
    assert {r["pipeline"] for r in rows if r["group"] == "photo"} == {"validation", "training"}
    for row in rows:
        if (row["error"] or "").startswith("skipped"):  # torchpack's crop-aware route, until its API exists
            assert row["system"] == "torchpack" and row["pipeline"] == "training" and "crop-aware" in row["route"], row
        elif row["system"] in ("ImageFolder", "torchpack"):
            assert row["error"] is None and row["rate"] > 0 and row["ratio"] > 0 and row["cpu_rate"] > 0, row
            if row["pipeline"] == "validation":
                assert row["contract"]["order"] is True and row["contract"]["len"] is True, row
            else:  # random crops are no sample of ImageFolder's: not probed
                assert row["contract"] == {}, row
        else:  # a peer: measured, or a row that says why not
            assert (row["rate"] or 0) > 0 or row["error"], row
    training = [r for r in rows if r["pipeline"] == "training"]
    assert {"ImageFolder", "torchpack", "DALI", "FFCV"} <= {r["system"] for r in training}
    assert any(r["system"] == "torchpack" and "threads=1" in r["route"] and r["runs"] == "1 thread, in-process" for r in training)
    base = next(r for r in training if r["system"] == "ImageFolder")
    assert abs(base["ratio"] - 1.0) < 1e-9 and "RandomResizedCrop" in base["route"]
    default = next(r for r in rows if r["system"] == "torchpack" and "default" in r["route"])
    assert default["contract"]["pixels_exact"] and default["contract"]["classes"], default
    markdown = (out / "peers.md").read_text()
    assert "| system / route | kind |" in markdown and "ImageFolder" in markdown and "torchpack" in markdown
    assert "ImageFolder" in done.stdout

    # every row has a kind; both sides have lossless and re-encoded photo routes
    assert {r["kind"] for r in rows} == {"lossless", "re-encoded", "tiny/decoded"}
    assert all((r["kind"] == "tiny/decoded") == (r["group"] == "tiny") for r in rows)
    kinds = {(r["system"], r["route"]): r["kind"] for r in rows}
    assert kinds[("FFCV", "raw full size (max_resolution=None), fused center crop, Loader")] == "lossless"
    assert kinds[("FFCV", "raw long side 500, fused center crop, Loader")] == "re-encoded"
    assert kinds[("torchpack", "HDF5 raw, full size, tensor + v2")] == "lossless"
    assert kinds[("torchpack", "LMDB reencode q90 short side 384, tensor + v2")] == "re-encoded"
    assert any(r["system"] == "torchpack" and "num_workers=0" in r["route"] for r in rows)

    # the head-to-head summary: in the JSON, the Markdown and on stdout
    summary = json.loads((out / "peers.json").read_text())["head_to_head"]
    titles = [e["comparison"] for e in summary]
    assert {"photos, lossless", "photos, re-encoded", "tiny"} <= set(titles), titles
    for entry in summary:
        assert entry["torchpack"] and entry["torchpack_rate"] > 0, entry
        assert entry["winner"] in ("torchpack", "peer", "tie", "no peer measured"), entry
        assert (entry["ratio"] is None) == (entry["peer"] is None), entry
    assert "Head to head" in markdown and "- photos, lossless: torchpack: " in markdown
    assert "Head to head" in done.stdout and "- tiny: torchpack: " in done.stdout

    # the training pipeline: its own table and head-to-head lines (a peer not installed here: "no peer measured")
    assert "Training pipeline: `RandomResizedCrop(224)`" in markdown and "| runs as |" in markdown
    training_summary = json.loads((out / "peers.json").read_text())["training_head_to_head"]
    assert len(training_summary) == 4 and all(e["torchpack_rate"] > 0 for e in training_summary), training_summary
    assert "Head to head, training pipeline" in markdown and "- training, lossless: torchpack" in done.stdout


def row(common, system, route, group, kind, rate, megapixels=None, cap=None, holds="files"):
    return common.Row(system, route, group, "s", kind=kind, rate=rate, stored_megapixels=megapixels, cap=cap, holds=holds)


def test_head_to_head_compares_like_with_like():
    common, report = bench("peers.common"), bench("peers.report")
    rows = [
        row(common, "ImageFolder", "if", "photo", "lossless", 9000.0, 0.3),  # the baseline is not a peer
        row(common, "torchpack", "fast", "photo", "lossless", 300.0, 0.3),
        row(common, "torchpack", "raw", "photo", "lossless", None, 0.3),  # failed: not a candidate
        row(common, "LitData", "lit", "photo", "lossless", 200.0, 0.3),
        row(common, "FFCV", "raw full", "photo", "lossless", 400.0, 0.3),
        row(common, "torchpack", "s256", "photo", "re-encoded", 1000.0, 0.08, "short side 256", "jpeg"),
        row(common, "torchpack", "s384", "photo", "re-encoded", 500.0, 0.17, "short side 384", "jpeg"),
        row(common, "torchpack", "raw s384", "photo", "re-encoded", 900.0, 0.17, "short side 384", "pixels"),
        row(common, "FFCV", "jpg", "photo", "re-encoded", 600.0, 0.18, "long side 500", "jpeg"),
        row(common, "FFCV", "raw", "photo", "re-encoded", 800.0, 0.18, "long side 500", "pixels"),
        row(common, "torchpack", "0 workers", "tiny", "tiny/decoded", 90000.0),
    ]
    summary = {e["comparison"]: e for e in report.head_to_head(rows)}
    lossless = summary["photos, lossless"]
    assert (lossless["torchpack"], lossless["peer"], lossless["winner"]) == ("torchpack: fast", "FFCV: raw full", "peer")
    assert abs(lossless["ratio"] - 0.75) < 1e-9
    reencoded = summary["photos, re-encoded"]
    assert (reencoded["torchpack"], reencoded["winner"]) == ("torchpack: s256", "torchpack")
    jpeg = summary["photos, re-encoded, JPEG stores at a comparable pixel budget"]
    assert (jpeg["torchpack"], jpeg["peer"], jpeg["winner"]) == ("torchpack: s384", "FFCV: jpg", "peer")
    pixels = summary["photos, re-encoded, decoded-pixel stores at a comparable pixel budget"]
    assert (pixels["torchpack"], pixels["peer"], pixels["winner"]) == ("torchpack: raw s384", "FFCV: raw", "torchpack")
    assert summary["tiny"]["winner"] == "no peer measured" and summary["tiny"]["ratio"] is None
    lines = report.head_to_head_lines(list(summary.values()))
    assert any("short side 384, 0.17 MP stored" in line and "0.83x, peer wins" in line for line in lines), lines


def test_caps_and_kinds():
    common, convert = bench("peers.common"), bench("peers.convert")
    assert common.Cap("short", 256).apply(640, 480) == (341, 256)
    assert common.Cap("long", 500).apply(640, 480) == (500, 375)
    assert common.Cap("long", 500).apply(400, 300) == (400, 300)  # never enlarged
    assert common.Store("x").kind("photo") == "lossless"
    assert common.Store("x", raw_photos=True).kind("photo") == "lossless"
    assert common.Store("x", cap=common.Cap("long", 500), raw_photos=True).kind("photo") == "re-encoded"
    assert common.Store("x", reencoded=True).kind("photo") == "re-encoded"
    assert common.Store("x").kind("tiny") == "tiny/decoded"
    assert convert.raw_store_bytes([(640, 480), (100, 100)], None) == 3 * (640 * 480 + 100 * 100)


class RawOnly:
    """An adapter with one raw photo store, whose conversion must never run."""

    system = "RawOnly"
    python = sys.executable

    def stores(self, group):
        common = bench("peers.common")
        return [common.Store("raw", ".raw", convert=None, raw_photos=True)]


def test_raw_photo_stores_are_skipped_or_refused_without_disk(tmp_path, monkeypatch):
    common, convert = bench("peers.common"), bench("peers.convert")
    settings, sizes = common.Settings(), [(1000, 1000)] * 10  # 30 MB of pixels
    args = ([RawOnly()], "photo", str(tmp_path), str(tmp_path), settings, 1, sizes)
    assert convert.convert_group(*args, skip_raw_photos=True) == {}
    usage = convert.shutil.disk_usage(tmp_path)
    monkeypatch.setattr(convert.shutil, "disk_usage", lambda path: usage._replace(free=80_000_000))  # < 3 x 30 MB
    done = convert.convert_group(*args)
    assert "not converted: needs 3x its expected" in done[("RawOnly", "raw")]["refused"]
    assert convert.disk_refusal(str(tmp_path / "x"), 20_000_000) is None  # 3 x 20 MB fits in 80 MB


def test_crop_aware_route_says_skipped_without_its_api(monkeypatch):
    train_routes, common = bench("suite.train_routes"), bench("peers.common")
    routes = bench("peers.torchpack_routes").TorchpackAdapter(common.Settings()).routes("photo")
    crop = [r for r in routes if "crop-aware" in r.name]
    assert len(crop) == 6 and all(r.pipeline == common.TRAINING for r in crop)
    in_process = [r for r in crop if r.workers == 0]
    assert len(in_process) == 3 and all(r.threads == 2 for r in in_process)
    assert {r.store for r in crop} == {r.store for r in in_process}  # each store also read by 2 workers
    monkeypatch.setattr(train_routes, "torchpack", types.SimpleNamespace())  # a torchpack before RandomResizedCropDecode
    assert all(r.skip().startswith("skipped: torchpack has no RandomResizedCropDecode") for r in crop)
