"""torchpack's benchmark suite: every read path against ImageFolder, in one run, on the same images.

usage::

    python benchmarks/bench_suite.py --tree PHOTOS [--tree PHOTOS_NATIVE ...] [--tiny TINY]
                                     [--workers 2] [--rounds 3] [--out bench_out/] [--quick] [--skip-train]

Each ``--tree`` is an ImageFolder tree of photos (``../shared/data/get_photo_tree.sh OUT`` and
``get_photo_tree.sh OUT python3 --native`` build the team's two); without one it generates
photo-like JPEGs. ``--tiny`` is a tree of 28x28 PNGs (``make_tiny_tree.py`` makes one from real
photos); without it one is made from the first photo tree.

Every read path is measured twice: through a ``DataLoader`` with ``--workers`` worker
processes, and in the training process (``num_workers=0``), which is images per CPU-second:
what scales to a node with many cores. "Per item" means one ``__getitem__`` per sample (a
wrapper hides ``__getitems__``); "batched" means one ``__getitems__`` per batch. Every ratio
is against ImageFolder with ``--workers`` workers on the same tree, measured in the same run.
Page caches are warm, and every configuration is measured in ``--rounds`` round-robin rounds
(medians reported). Results go to ``OUT/results.json``, ``OUT/results.md`` and ``OUT/results.png``.

Photos go through ImageNet's validation pipeline (Resize(256), CenterCrop(224)) and, unless
``--skip-train``, its training pipeline (RandomResizedCrop(224) and a horizontal flip, uint8 CHW):
ImageFolder with the PIL transforms against each backend's lossless store (``decode="tensor",
decode_size=224``) and training-ready store (``decode="tensor"``) with the v2 transforms, through
``--workers`` workers and in the training process with ``threads=--workers`` decode threads, each
also as images per CPU-second (the process's CPU time, all its threads, plus its workers', over
the same window); and torchpack's crop-aware route (``decode_crop=RandomResizedCropDecode(224)``),
a row that says "skipped" until ``torchpack`` has that API. Its ratios are against ImageFolder's
training pipeline with ``--workers`` workers, measured in the same rounds.
"""

from __future__ import annotations

import os
import sys

# The suite/ package and make_tiny_tree.py sit next to this script, also when it is imported by path.
sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from suite import cli  # noqa: E402


def main(argv: list[str] | None = None) -> int:
    """Run the suite with this command line (``--help`` shows this docstring's first paragraph)."""
    return cli.main(argv, description=__doc__.split("\n\n")[0])


if __name__ == "__main__":
    sys.exit(main())
