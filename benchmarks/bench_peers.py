"""torchpack against the systems users would pick instead, in one run, on the same images.

usage::

    python benchmarks/bench_peers.py --tree PHOTOS --tiny TINY [--workers 2] [--out bench_out/peers]
                                     [--rounds 3] [--quick] [--ffcv-python PATH] [--skip-raw-photos]
                                     [--pipelines validation,training] [--systems DALI,FFCV,...]

``PHOTOS`` is an ImageFolder tree of JPEG photos, ``TINY`` one of 28x28 PNGs (``make_tiny_tree.py``);
either is generated when left out. Each system converts the same trees and reads them back by its own
documented fastest route:

========================  =====================================================================
ImageFolder               torchvision's ``ImageFolder``: the baseline every ratio is against
torchpack                 ``torchpack.convert`` + ``LMDBImageFolder`` / ``HDF5ImageFolder``
WebDataset                tar shards (``ShardWriter``), ``WebDataset`` pipeline in a ``WebLoader``
LitData                   ``litdata.optimize`` + ``StreamingDataset`` in a ``StreamingDataLoader``
Mosaic Streaming          ``MDSWriter`` + ``StreamingImageNet`` / ``StreamingDataset`` in a DataLoader
HF datasets               ``load_dataset("imagefolder")`` + ``save_to_disk``; ``load_from_disk`` +
                          ``with_transform`` / ``with_format("torch")`` in a DataLoader
FFCV                      ``DatasetWriter`` (``RGBImageField``) + its own threaded ``Loader``
DALI                      CPU only (``device_id=None``): ``fn.readers.file`` over the tree (or over a
                          tree exported from torchpack's training-ready store) + its decoders, in
                          ``num_threads`` threads, read through ``DALIGenericIterator``
========================  =====================================================================

Three workloads: (a) photos through the ImageNet validation pipeline (decode, Resize(256),
CenterCrop(224), uint8 CHW tensor, batch 64); (b) the same photos through the ImageNet training
pipeline (RandomResizedCrop(224) and a horizontal flip, uint8 CHW, batch 64), each system by its
own fastest documented route: ImageFolder with the PIL transforms (the baseline); torchpack's
lossless store (``decode="tensor", decode_size=224``) and training-ready store (``decode="tensor"``)
with ``v2.RandomResizedCrop(224, antialias=True)`` and ``v2.RandomHorizontalFlip()``, with workers and
with ``num_workers=0, threads=--workers``; FFCV's fused ``RandomResizedCropRGBImageDecoder`` +
``RandomHorizontalFlip`` (JPEG q90 at ``max_resolution`` 256 and 500, and raw full size); DALI's
``decoders.image_random_crop`` + ``resize`` + ``flip``; the other peers' loaders with the v2
transforms on uint8 tensors (``PILToTensor`` first where they give PIL images); (c) 28x28 images
to a 3x28x28 uint8 tensor, batch 512, every peer storing them decoded ("raw") where it can.
``--pipelines`` picks (a), (b) or both. Every rate is images/s with ``--workers`` processes
(FFCV, DALI and torchpack's in-process rows: threads) on a warm page cache, measured in
``--rounds`` round-robin rounds with the median reported, and also given as a ratio against
ImageFolder on the same pipeline, measured in the same rounds. Beside it, every row has images per
CPU-second: the reading process's CPU time (all its threads) plus its workers', over the same
window (what a node with many cores multiplies). What each
system keeps of ImageFolder's contract (``classes``, ``class_to_idx``, sample order, pixels, random
access, ``len``) is checked on its output, not taken from its docs. A system that is not installed
or fails becomes a row saying why. Results: ``OUT/peers.json``, ``OUT/peers.md``, ``OUT/peers.png``.

Every row has a ``kind``, so that like is compared with like: ``lossless`` (the source files' bytes,
or pixels decoded from them without resizing), ``re-encoded`` (resized and/or JPEG re-encoded; the
cap is in the route's name) or ``tiny/decoded``. On photos both sides have each kind: FFCV's
ImageNet recipe (JPEG q90, long side 500) and its raw field at long side 500 are re-encoded, against
torchpack's re-encoded stores at short side 256 (its recipe) and 384 (about FFCV's pixel budget);
FFCV's raw field at full size is lossless, against torchpack's lossless store and its raw store of
full-size pixels (and against the other peers, which all store the files' bytes). After the table a
"head to head" summary gives, for photos lossless, photos re-encoded and tiny, the best torchpack
route and the best peer route, their ratio and the winner: reported, not asserted.

The training pipeline has its own table (no contract columns: its random crops are no sample of
ImageFolder's; the validation table has them) and its own head-to-head lines: torchpack's lossless
store against DALI over the same files (DALI reads the originals, so it is lossless); torchpack's
training-ready store (q90, short side 256) against FFCV's JPEG field at ``max_resolution=256``
(q90; FFCV caps the *longer* side, so that store keeps fewer pixels: the stored MP column says how
many) and against DALI over the same re-encoded bytes, exported back to a tree with
``torchpack.export_store``. torchpack's crop-aware route (``decode_crop=RandomResizedCropDecode(224)``)
has a row that says "skipped" until ``torchpack`` has that API.

The raw photo stores hold decoded pixels, about 1 MB a photo each: ``--skip-raw-photos`` leaves
them out, and each is converted only when the disk has room for 3x its expected size (else its
row says so). Each route's files are read once before each of its timings, so that the large
stores do not push each other out of the page cache.

Installing the peers (in their own virtual environment, so that the main one stays lean; ``crop``
brings the TurboJPEG 3 library that torchpack's crop-aware route decodes crops with)::

    python3 -m venv .venv-peers && .venv-peers/bin/pip install -e ".[peers,crop]" pytest

FFCV is not in the ``peers`` extra: it builds a C extension against OpenCV and libjpeg-turbo, so it
needs system libraries first, then installs from PyPI into the same environment (it pulls numba
and opencv-python; with torch 2.14 and numpy 2.1 it needed no pins)::

    apt-get install -y pkg-config libturbojpeg0-dev libopencv-dev
    .venv-peers/bin/pip install ffcv==1.0.2

DALI is in the ``peers`` extra (``nvidia-dali-cuda120`` from PyPI, no system library needed; its
CPU pipelines run without a GPU or a CUDA driver). If FFCV ever needs pins that break torchpack,
give it its own environment (with torchpack installed there too) and pass ``--ffcv-python
that/venv/bin/python``. FFCV's and DALI's reads always run in a child interpreter (FFCV's own, or
this one): their loaders keep threads (numba's, DALI's), which should not live in the process
that forks every other system's DataLoader workers.
"""

from __future__ import annotations

import os
import sys

HERE = os.path.dirname(os.path.abspath(__file__))
if HERE not in sys.path:  # the peers/ and suite/ packages sit next to this script, also when it is imported by path
    sys.path.insert(0, HERE)

from peers import cli  # noqa: E402


def main(argv: list[str] | None = None) -> int:
    """Run the comparison with this command line (``--help`` shows this docstring's first paragraph)."""
    return cli.main(argv, description=__doc__.split("\n\n")[0])


if __name__ == "__main__":
    sys.exit(main())
