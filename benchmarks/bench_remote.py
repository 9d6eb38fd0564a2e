"""Reading a store from object storage at a fixed link bandwidth: torchpack, Mosaic Streaming, LitData and WebDataset.

usage::

    .venv/bin/python benchmarks/bench_remote.py --tree /work/data/photos \\
        --peers-python .venv-peers/bin/python --out bench_out/remote

The server is moto's S3 server (the one s3fs's tests use) in its own process, behind a WSGI
middleware that sends every response body through one token bucket: the node's link, shared by
all its connections (``remote/server.py``). Its unthrottled rate (``torchpack.download`` of the
largest torchpack shard, by one and by two streams at once) and a GET's round trip are measured
first; the link is then ``--bandwidth`` MB/s (10^6 bytes; ``auto``: 100, or half the unthrottled
rate if that is lower, so that the server itself is never the bound).

Every system converts the same tree by its own route into shards of about the same size, on
local disk, and the shards go into the bucket: torchpack through ``convert(tree, "s3://...")``
(local staging, upload, index sidecars), the peers by ``bench_peers.py``'s conversions, uploaded
with s3fs. Each system is then timed in a fresh interpreter (the peers in ``--peers-python``),
``--rounds`` times: open the store by URL on an empty local cache, one epoch (**cold**, its
workers starting inside it as a training job's do), the next epochs (**warm**: from the local
cache), then epochs of the same store on local disk (**local**, its loader warmed up by an
untimed epoch first); warm and local over whole epochs adding up to ``--min-seconds``. All with
``--workers`` DataLoader workers (persistent), batch ``--batch``, medians over the rounds:

- torchpack: ``LMDBImageFolder``/``LMDBDatasetFolder(url, storage_options=..., cache=ShardCache(...))``
  through ``ShardWindowSampler(window=2, prefetch=2)``, which fetches whole shards into the cache
  ahead of the window being read;
- Mosaic Streaming: ``StreamingDataset(remote="s3://...", local=cache)`` (its boto3 client finds
  the server in ``S3_ENDPOINT_URL``); LitData: ``StreamingDataset("s3://...", cache_dir=cache,
  storage_options={"endpoint_url": ...})``; WebDataset: its ``http://`` opener (curl) on the
  objects' presigned URLs (the bucket is private), with ``cache_dir=cache``.

Two pipelines: ``link`` reads every sample's stored bytes and decodes nothing (torchpack: a
loader that returns the byte count; the others: their cheapest equivalent, see ``remote/systems.py``),
so that on 2 CPUs the cold epoch is bound by the link, not by decoding; ``training`` is ImageNet's
training pipeline (decode, ``RandomResizedCrop(224)``, flip) as in ``bench_peers.py``.

Figures of each row: cold epoch images/s; link-bound images/s (the images over the store's bytes
/ the bandwidth); the **fraction of the link** = (store bytes / cold epoch seconds) / bandwidth
(the issue's goal for torchpack: >= 90%); the seconds from the cold loader's start to its first
batch, and the seconds of the cold epoch in which the server sent nothing (from its request
log): what the fraction lost, and where; warm and local images/s and **warm / local** (goal:
>= 0.95); the bytes the server sent during the cold epoch over the store's bytes (1.0: each byte
once); the seconds to open the store. A system that is not installed in its interpreter, or
fails, is a row that says why.

HDF5 ranged reads (``remote/hdf5_ranged.py``): from one shard of torchpack's HDF5 store in the
same bucket, K = 1%, 10%, 50%, 100% of its samples read by per-sample ranged GETs (one at a
time, and all at once) against a download of the whole shard and local reads, at the server's
own round trip and with ``--delay-ms`` added to every request (a real object store's); the
break-even fraction is where they meet.

``--quick``: a smoke run (at most 24 images of the tree, one round, one epoch per figure), about
30 s for torchpack alone; its figures mean nothing. Writes ``OUT/remote.md`` and ``OUT/remote.json``.
"""

from __future__ import annotations

import os
import sys

# Nothing heavy at the top: the server's process is spawned, and spawning re-runs this script's imports.
sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))

if __name__ == "__main__":
    from remote.cli import main

    sys.exit(main())
