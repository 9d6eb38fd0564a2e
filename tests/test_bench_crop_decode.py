"""bench_crop_decode.py runs on real JPEGs, and its restart-marker cut decodes to the region decode's pixels."""

from __future__ import annotations

import json
import os
import subprocess
import sys

import numpy as np
from PIL import Image

from conftest import photo_like

COUNT = 40
SCRIPT = os.path.join(os.path.dirname(__file__), os.pardir, "benchmarks", "bench_crop_decode.py")


def test_the_restart_marker_cut_gives_the_region_decodes_pixels(tmp_path):
    rng = np.random.default_rng(7)
    tree = tmp_path / "tree"
    # Sides mostly not multiples of the 16-pixel MCU, so cuts meet partial MCUs at the edges; enough
    # crops that some start on an MCU's first row or column, where a cut without margin goes wrong.
    for i in range(COUNT):
        width, height = (int(side) for side in rng.integers(250, 520, 2))
        (tree / f"c{i % 2}").mkdir(parents=True, exist_ok=True)
        Image.fromarray(photo_like(rng, width, height)).save(tree / f"c{i % 2}" / f"{i}.jpg", quality=90)
    out = tmp_path / "out"
    done = subprocess.run(
        [sys.executable, SCRIPT, "--tree", str(tree), "--out", str(out), "--images", str(COUNT), "--rounds", "1"],
        capture_output=True, text=True, timeout=300,
    )
    assert done.returncode == 0, done.stderr[-3000:]
    result = json.loads((out / "crop_decode_tree.json").read_text())
    assert result["images"] == COUNT
    assert len(result["pixels_equal"]) == 2 and all(count == COUNT for count in result["pixels_equal"].values()), result
    assert all(len(rounds) == 1 and rounds[0] > 0 for rounds in result["timings_us"].values())
    assert "| crop-aware: crop's columns" in (out / "crop_decode_tree.md").read_text()
