"""torchpack's benchmark suite, split by route; ``benchmarks/bench_suite.py`` is its entry point.

What each figure means is in that script's docstring and in ``benchmarks/README.md``. The modules:

- ``common``: the settings and pipelines every route shares, the ``Result`` record, file helpers,
  round-robin timing and the log;
- ``trees``: generated photo-like and tiny trees, for runs without the team's trees;
- ``rates``: images/s through a ``DataLoader`` (per item, batched, a first epoch);
- ``bounds``: the same work on bytes already in memory, and the DataLoader's own ceilings;
- ``convert_routes``: which stores each tree is converted to, the conversions, their rows and sizes;
- ``photo_routes`` and ``tiny_routes``: the read paths on photos and on 28x28 images;
- ``train_routes``: the ImageNet training pipeline (RandomResizedCrop + flip) on photos, with CPU time;
- ``report``: the floors, ``results.md``, ``results.json`` and ``results.png``;
- ``cli``: the command line and the run.

``benchmarks/bench_peers.py`` (the ``peers`` package) reuses ``common``, ``trees``, ``rates``,
``train_routes`` (the crop-aware route) and ``convert_routes``.
"""
