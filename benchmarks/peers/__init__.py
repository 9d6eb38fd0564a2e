"""torchpack against the systems users would pick instead: one module per system; ``benchmarks/bench_peers.py`` runs them.

How each system is driven and why, and what every column means, is in that script's docstring and
in ``benchmarks/README.md``. The modules:

- ``common``: what every system module shares: ``Settings``, ``Cap``, ``Store``, ``Probe``, ``Route``,
  the ``Adapter`` base class, the result ``Row``, and small helpers its DataLoader workers can pickle;
- one module per system, each with its conversion, its routes (dataset or loader) and its contract
  probe: ``imagefolder`` (the baseline), ``torchpack_routes``, ``webdataset``, ``litdata``, ``mosaic``,
  ``hf_datasets``, ``ffcv``, ``dali``;
- ``registry``: ``ADAPTERS``, every system in the order of the table;
- ``jobs``: timing one route, and the job interpreter that converts, times or probes in a fresh Python;
- ``contract``: what each system keeps of ImageFolder's contract, checked on its output;
- ``convert``: where each store goes, whether the disk has room, and the conversions;
- ``runner``: one tree through every system: convert, probe, time in round-robin rounds;
- ``head_to_head``: torchpack's best route against a peer's, like with like, for each pipeline;
- ``report``: the validation and training tables, ``peers.md``, ``peers.json`` and ``peers.png``;
- ``cli``: the command line, the trees and the run.

Adding a system: a module with an ``Adapter`` subclass (``system``, ``modules``, ``distribution``,
``stores``, ``routes``) and one line in ``registry.py``.
"""
