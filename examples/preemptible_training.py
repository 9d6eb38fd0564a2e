"""Training that survives preemption: save the loader's state on SIGTERM, resume mid-epoch from it.

SLURM sends SIGTERM before it kills a job (at its time limit, or to preempt it; ``--signal``
can send it earlier). The handler only sets a flag; the loop sees it after the current batch,
saves the model, the optimizer and the loader's state, and exits. Run again, the script loads
that state and goes on from the next batch of the same epoch: every sample once per epoch,
with no replay of the order (the sampler's own state says where it was).

    python examples/preemptible_training.py [--store STORE] [--checkpoint job.pt] [--epochs 2]

STORE is a store file, a folder or glob of shards, or a URL (``s3://bucket/train/``; then the
sampler reads it shard-window by shard-window through the node's cache); without it, the
built-in example tree is converted into 4 shards under ``./preemptible-example/``. Each batch's
targets are appended to ``CHECKPOINT.seen``, so a run can be compared with an uninterrupted one.
"""

from __future__ import annotations

import argparse
import os
import signal

import torch
from torchdata.stateful_dataloader import StatefulDataLoader
from torchvision.transforms import v2

import torchpack

stop_requested = False


def request_stop(signum, frame) -> None:
    global stop_requested
    stop_requested = True  # acted on between batches: the loader's state is consistent there


def example_store() -> str:
    """The built-in example tree, converted once into 4 shards (a glob of them)."""
    from torchpack.example import make_example_tree

    folder = os.path.abspath("preemptible-example")
    if not os.path.exists(os.path.join(folder, "train-00000-of-00004.lmdb")):
        tree = make_example_tree(os.path.join(folder, "tree"))
        torchpack.convert(tree, os.path.join(folder, "train.lmdb"), num_shards=4, workers=0, overwrite=True)
    return os.path.join(folder, "train-*.lmdb")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--store", help="a store, its shards, or a URL (default: the example tree, converted)")
    parser.add_argument("--checkpoint", default="checkpoint.pt", help="where the state is saved on SIGTERM")
    parser.add_argument("--epochs", type=int, default=2)
    parser.add_argument("--workers", type=int, default=2)
    args = parser.parse_args()
    signal.signal(signal.SIGTERM, request_stop)
    store = args.store or example_store()

    dataset = torchpack.StoreImageFolder(
        store, decode="tensor", transform=v2.Compose([v2.Resize(16, antialias=True), v2.CenterCrop(16)])
    )
    sampler = torchpack.ShardWindowSampler(dataset, window=2, prefetch=1, seed=0)  # ranks from torch.distributed
    loader = StatefulDataLoader(dataset, batch_size=4, sampler=sampler, num_workers=args.workers)
    model = torch.nn.Linear(3 * 16 * 16, len(dataset.classes))
    optimizer = torch.optim.SGD(model.parameters(), lr=0.01)
    first_epoch = 0
    if os.path.exists(args.checkpoint):
        state = torch.load(args.checkpoint, weights_only=True)
        model.load_state_dict(state["model"])
        optimizer.load_state_dict(state["optimizer"])
        loader.load_state_dict(state["loader"])
        first_epoch = state["epoch"]
        print(f"resumed in epoch {first_epoch}", flush=True)

    for epoch in range(first_epoch, args.epochs):
        sampler.set_epoch(epoch)  # keeps a resume pending in this epoch
        for images, targets in loader:
            loss = torch.nn.functional.cross_entropy(model(images.flatten(1).float() / 255), targets)
            optimizer.zero_grad()
            loss.backward()
            optimizer.step()
            with open(args.checkpoint + ".seen", "a") as seen:
                seen.write(f"{epoch} {' '.join(map(str, targets.tolist()))}\n")
            if stop_requested:
                state = {"model": model.state_dict(), "optimizer": optimizer.state_dict(), "loader": loader.state_dict(), "epoch": epoch}
                torch.save(state, args.checkpoint + ".tmp")
                os.replace(args.checkpoint + ".tmp", args.checkpoint)  # a checkpoint is whole or absent
                print(f"stopped in epoch {epoch}; state saved to {args.checkpoint}", flush=True)
                return
        print(f"epoch {epoch} done", flush=True)
    if os.path.exists(args.checkpoint):
        os.remove(args.checkpoint)


if __name__ == "__main__":
    main()
