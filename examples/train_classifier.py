"""Train a torchvision ResNet-18 from a torchpack store: ImageFolder training code with one line changed.

With no ``--store`` it writes the built-in example tree (three classes of shapes), converts
it, and trains on that, so it runs anywhere without a download::

    python examples/train_classifier.py --backend lmdb --steps 20
    python examples/train_classifier.py --backend hdf5 --store data/train.h5 --workers 8

Look for ``torchpack:`` in the comments: the dataset line is the only change from the
same loop over ``torchvision.datasets.ImageFolder``; the collate that drops bad samples is
an optional extra.
"""

from __future__ import annotations

import argparse
import math
import os
import tempfile
from typing import Iterator, Sequence

import torch
from torch import nn
from torch.utils.data import DataLoader
from torchvision import models, transforms

import torchpack
from torchpack.example import make_example_tree

DATASETS = {"lmdb": torchpack.LMDBImageFolder, "hdf5": torchpack.HDF5ImageFolder}
EXTENSIONS = {"lmdb": ".lmdb", "hdf5": ".h5"}
MEAN, STD = (0.485, 0.456, 0.406), (0.229, 0.224, 0.225)


def parse_args(argv: Sequence[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--backend", choices=sorted(DATASETS), default="lmdb", help="store format (default lmdb)")
    parser.add_argument("--store", help="store to train on (default: convert the built-in example tree)")
    parser.add_argument("--dir", help="where to write the example tree and store (default: a new temporary folder)")
    parser.add_argument("--steps", type=int, default=10, help="optimizer steps (default 10)")
    parser.add_argument("--batch-size", type=int, default=16, help="images per batch (default 16)")
    parser.add_argument("--workers", type=int, default=2, help="DataLoader worker processes (default 2)")
    parser.add_argument("--image-size", type=int, default=64, help="training crop size (default 64)")
    parser.add_argument("--lr", type=float, default=0.01, help="SGD learning rate (default 0.01)")
    parser.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu", help="torch device")
    return parser.parse_args(argv)


def example_store(backend: str, folder: str) -> str:
    """Write the built-in example tree under ``folder`` and convert it; returns the store's path."""
    tree = make_example_tree(os.path.join(folder, "tree"))
    store = os.path.join(folder, "example" + EXTENSIONS[backend])
    result = torchpack.convert(tree, store, workers=0, overwrite=True)
    print(f"converted {tree} -> {store}: {result.num_samples} images, {len(result.bad_files)} left out")
    return store


def make_loader(args: argparse.Namespace, store: str) -> DataLoader:
    """The training DataLoader: random crops and flips, normalized tensors, shuffled."""
    tf = transforms.Compose(
        [
            transforms.RandomResizedCrop(args.image_size, scale=(0.35, 1.0)),
            transforms.RandomHorizontalFlip(),
            transforms.ToTensor(),
            transforms.Normalize(MEAN, STD),
        ]
    )
    # dataset = torchvision.datasets.ImageFolder("data/train", transform=tf)
    dataset = DATASETS[args.backend](store, transform=tf, on_error="skip")  # torchpack: the one changed line
    return DataLoader(
        dataset,
        batch_size=args.batch_size,
        shuffle=True,
        num_workers=args.workers,
        # torchpack (optional): drop samples that fail to load instead of crashing the epoch.
        collate_fn=torchpack.SkipBadCollate(),
        persistent_workers=args.workers > 0,
        pin_memory=args.device.startswith("cuda"),
    )


def batches(loader: DataLoader, steps: int) -> Iterator[tuple[torch.Tensor, torch.Tensor]]:
    """``steps`` batches, going round the loader as many epochs as that takes."""
    done = 0
    while done < steps:
        for batch in loader:
            if batch is None:  # every sample of this batch was bad
                continue
            yield batch
            done += 1
            if done == steps:
                return


def train(args: argparse.Namespace, store: str) -> float:
    """Train for ``args.steps`` steps; returns the last loss."""
    loader = make_loader(args, store)
    dataset = loader.dataset
    print(f"{type(dataset).__name__}: {len(dataset)} images, {len(dataset.classes)} classes {dataset.classes}")
    torch.manual_seed(0)
    model = models.resnet18(num_classes=len(dataset.classes)).to(args.device)
    optimizer = torch.optim.SGD(model.parameters(), lr=args.lr, momentum=0.9, weight_decay=1e-4)
    criterion = nn.CrossEntropyLoss()
    model.train()
    loss = torch.tensor(math.nan)
    seen = 0
    for step, (images, targets) in enumerate(batches(loader, args.steps), start=1):
        images = images.to(args.device, non_blocking=True)
        targets = targets.to(args.device, non_blocking=True)
        loss = criterion(model(images), targets)
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        optimizer.step()
        seen += len(targets)
        print(f"step {step}/{args.steps} loss {loss.item():.4f} batch {len(targets)}")
    print(f"done: {args.steps} steps, {seen} images, final loss {loss.item():.4f}, skipped {dataset.skipped_count} bad samples")
    return loss.item()


def main(argv: Sequence[str] | None = None) -> int:
    args = parse_args(argv)
    store = args.store
    if store is None:
        store = example_store(args.backend, args.dir or tempfile.mkdtemp(prefix="torchpack-train-"))
    train(args, store)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
