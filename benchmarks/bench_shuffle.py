"""How much shuffle quality the locality-keeping orders give up, on ImageNet's size: 1,281,167 samples.

usage::

    python benchmarks/bench_shuffle.py [--out benchmarks/results]

For each order (a full random permutation, BlockShuffleSampler, ShardWindowSampler with a few
windows, in shards of 1,250 samples: 1,025 shards; on a store in ImageFolder's order, and on one
converted with ``--shuffle``), this rank's sequence is measured two ways, on rank 0 of 8:

- the mean distance, in ImageFolder positions, between samples that follow each other: a full
  shuffle of N samples gives about N/3; an order that reads the tree front to back, 1;
- the mean number of distinct classes in a batch of 256 (ImageNet's 1,000 classes stored in
  class order, as the converter stores them): what a batch actually mixes.

No timing: these are properties of the order alone.
"""

from __future__ import annotations

import argparse
import json
import os

import numpy as np

import torchpack

SIZE, SHARD, RANKS, BATCH, CLASSES = 1_281_167, 1_250, 8, 256, 1_000


class Store:
    """Just what the samplers read of a dataset: its length and the shard of each sample."""

    def __len__(self) -> int:
        return SIZE

    def index_shards(self) -> np.ndarray:
        return np.arange(SIZE) // SHARD

    def prefetch_shards(self, shards) -> None:
        pass

    def plan_remote_reads(self, open_shards: int, ahead: int) -> None:
        pass


def measures(order: np.ndarray) -> dict[str, float]:
    classes = order * CLASSES // SIZE
    batches = classes[: len(classes) // BATCH * BATCH].reshape(-1, BATCH)
    distinct = np.mean([len(np.unique(b)) for b in batches[:: max(1, len(batches) // 400)]])
    return {"mean neighbour distance": float(np.abs(np.diff(order)).mean()), "classes per batch of 256": float(distinct)}


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", default=os.path.join(os.path.dirname(__file__), "results"))
    args = parser.parse_args()
    rows = {}
    rows["full random permutation (RandomSampler / DistributedSampler)"] = measures(
        np.random.default_rng(0).permutation(SIZE)[: SIZE // RANKS]
    )
    for block in (1024, 8192):
        sampler = torchpack.BlockShuffleSampler(Store(), num_replicas=RANKS, rank=0, block_size=block)
        rows[f"BlockShuffleSampler, block_size={block}"] = measures(np.array(list(sampler)))
    for window in (1, 2, 4, 8):
        sampler = torchpack.ShardWindowSampler(Store(), num_replicas=RANKS, rank=0, window=window)
        rows[f"ShardWindowSampler, window={window} shard(s) of {SHARD}"] = measures(sampler.plan()[0])
    shuffled = np.random.default_rng(1).permutation(SIZE)  # a store converted with --shuffle: stored position -> ImageFolder's
    for window in (1, 2, 4):
        sampler = torchpack.ShardWindowSampler(Store(), num_replicas=RANKS, rank=0, window=window)
        rows[f"ShardWindowSampler, window={window}, store converted with --shuffle"] = measures(shuffled[sampler.plan()[0]])
    lines = [
        f"Shuffle quality on {SIZE:,} samples in shards of {SHARD:,}, rank 0 of {RANKS}, {CLASSES:,} classes in ImageFolder order:",
        "",
        "| order | mean distance between neighbours (ImageFolder positions) | classes per batch of 256 |",
        "| --- | ---: | ---: |",
    ]
    lines += [f"| {name} | {m['mean neighbour distance']:,.0f} | {m['classes per batch of 256']:.1f} |" for name, m in rows.items()]
    text = "\n".join(lines) + "\n"
    print(text)
    os.makedirs(args.out, exist_ok=True)
    with open(os.path.join(args.out, "shuffle.md"), "w") as f:
        f.write(text)
    with open(os.path.join(args.out, "shuffle.json"), "w") as f:
        json.dump(rows, f, indent=2)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
