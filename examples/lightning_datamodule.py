"""A PyTorch Lightning ``LightningDataModule`` over torchpack stores, with a tiny model that fits it.

Needs the optional extra: ``pip install "torchpack[lightning]"``. Give one store and a
validation fraction (split with ``random_split``), or a train and a val store::

    python examples/lightning_datamodule.py --store data/train.lmdb --val-store data/val.lmdb
    python examples/lightning_datamodule.py --backend hdf5     # on the built-in example tree
"""

from __future__ import annotations

import argparse
import os
import tempfile
from typing import Any, Sequence

import lightning as L
import torch
from torch import nn
from torch.utils.data import DataLoader, Dataset, Subset, random_split
from torchvision import transforms

import torchpack
from torchpack.example import make_example_tree

DATASETS = {"lmdb": torchpack.LMDBImageFolder, "hdf5": torchpack.HDF5ImageFolder}
EXTENSIONS = {"lmdb": ".lmdb", "hdf5": ".h5"}
MEAN, STD = (0.485, 0.456, 0.406), (0.229, 0.224, 0.225)


class StoreDataModule(L.LightningDataModule):
    """Train and validation DataLoaders over torchpack stores.

    Args:
        store: the training store (a file, or a folder of shards).
        backend: ``"lmdb"`` or ``"hdf5"``.
        val_store: a separate validation store; without it, ``val_fraction`` of ``store``
            is held out with a seeded ``random_split``.
        val_fraction: share of ``store`` used for validation when there is no ``val_store``.
        batch_size: images per batch.
        num_workers: DataLoader worker processes.
        image_size: crop size fed to the model.
        seed: seed of the train/validation split.
    """

    def __init__(
        self,
        store: str,
        backend: str = "lmdb",
        val_store: str | None = None,
        val_fraction: float = 0.2,
        batch_size: int = 32,
        num_workers: int = 4,
        image_size: int = 64,
        seed: int = 0,
    ) -> None:
        super().__init__()
        if backend not in DATASETS:
            raise ValueError(f"`backend` must be one of {sorted(DATASETS)}, got {backend!r}.")
        if not 0 < val_fraction < 1:
            raise ValueError(f"`val_fraction` must be between 0 and 1, got {val_fraction}.")
        self.save_hyperparameters()
        self.train_tf = transforms.Compose(
            [
                transforms.RandomResizedCrop(image_size, scale=(0.35, 1.0)),
                transforms.RandomHorizontalFlip(),
                transforms.ToTensor(),
                transforms.Normalize(MEAN, STD),
            ]
        )
        self.val_tf = transforms.Compose(
            [
                transforms.Resize(image_size),
                transforms.CenterCrop(image_size),
                transforms.ToTensor(),
                transforms.Normalize(MEAN, STD),
            ]
        )
        self.train_set: Dataset | None = None
        self.val_set: Dataset | None = None
        self.classes: list[str] = []

    def _open(self, store: str, transform: Any) -> torchpack.StoreImageFolder:
        # Opening reads only the header and index; the data handles open lazily in each worker.
        return DATASETS[self.hparams.backend](store, transform=transform, on_error="skip")

    def setup(self, stage: str | None = None) -> None:
        hp = self.hparams
        train = self._open(hp.store, self.train_tf)
        self.classes = train.classes
        if hp.val_store is not None:
            self.train_set, self.val_set = train, self._open(hp.val_store, self.val_tf)
            return
        # Two views of one store, so training and validation get their own transforms.
        split = random_split(range(len(train)), [1 - hp.val_fraction, hp.val_fraction], torch.Generator().manual_seed(hp.seed))
        self.train_set = Subset(train, split[0].indices)
        self.val_set = Subset(self._open(hp.store, self.val_tf), split[1].indices)

    def _loader(self, dataset: Dataset, shuffle: bool) -> DataLoader:
        return DataLoader(
            dataset,
            batch_size=self.hparams.batch_size,
            shuffle=shuffle,
            num_workers=self.hparams.num_workers,
            collate_fn=torchpack.SkipBadCollate(),
            persistent_workers=self.hparams.num_workers > 0,
        )

    def train_dataloader(self) -> DataLoader:
        return self._loader(self.train_set, shuffle=True)

    def val_dataloader(self) -> DataLoader:
        return self._loader(self.val_set, shuffle=False)


class TinyClassifier(L.LightningModule):
    """Two conv layers and a linear head: enough to show the loop, small enough for a CPU test."""

    def __init__(self, num_classes: int, lr: float = 0.01) -> None:
        super().__init__()
        self.save_hyperparameters()
        self.net = nn.Sequential(
            nn.Conv2d(3, 16, 3, stride=2, padding=1),
            nn.ReLU(),
            nn.Conv2d(16, 32, 3, stride=2, padding=1),
            nn.ReLU(),
            nn.AdaptiveAvgPool2d(1),
            nn.Flatten(),
            nn.Linear(32, num_classes),
        )
        self.criterion = nn.CrossEntropyLoss()

    def forward(self, images: torch.Tensor) -> torch.Tensor:
        return self.net(images)

    def training_step(self, batch: Any, batch_idx: int) -> torch.Tensor | None:
        if batch is None:  # SkipBadCollate: every sample of this batch was bad; Lightning skips the step
            return None
        images, targets = batch
        loss = self.criterion(self(images), targets)
        self.log("train_loss", loss, batch_size=len(targets))
        return loss

    def validation_step(self, batch: Any, batch_idx: int) -> None:
        if batch is None:
            return
        images, targets = batch
        logits = self(images)
        self.log("val_loss", self.criterion(logits, targets), batch_size=len(targets))
        self.log("val_acc", (logits.argmax(1) == targets).float().mean(), batch_size=len(targets))

    def configure_optimizers(self) -> torch.optim.Optimizer:
        return torch.optim.SGD(self.parameters(), lr=self.hparams.lr, momentum=0.9)


def parse_args(argv: Sequence[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--backend", choices=sorted(DATASETS), default="lmdb", help="store format (default lmdb)")
    parser.add_argument("--store", help="training store (default: convert the built-in example tree)")
    parser.add_argument("--val-store", help="validation store (default: hold out 20%% of --store)")
    parser.add_argument("--dir", help="where to write the example tree, store and logs (default: a new temporary folder)")
    parser.add_argument("--steps", type=int, default=2, help="training steps (default 2)")
    parser.add_argument("--batch-size", type=int, default=8, help="images per batch (default 8)")
    parser.add_argument("--workers", type=int, default=2, help="DataLoader worker processes (default 2)")
    return parser.parse_args(argv)


def example_store(backend: str, folder: str) -> str:
    """Write the built-in example tree under ``folder`` and convert it; returns the store's path."""
    tree = make_example_tree(os.path.join(folder, "tree"), per_class=8)
    store = os.path.join(folder, "example" + EXTENSIONS[backend])
    torchpack.convert(tree, store, workers=0, overwrite=True)
    return store


def main(argv: Sequence[str] | None = None) -> int:
    args = parse_args(argv)
    folder = args.dir or tempfile.mkdtemp(prefix="torchpack-lightning-")
    store = args.store or example_store(args.backend, folder)
    data = StoreDataModule(store, args.backend, args.val_store, batch_size=args.batch_size, num_workers=args.workers)
    data.setup("fit")
    model = TinyClassifier(num_classes=len(data.classes))
    trainer = L.Trainer(
        max_steps=args.steps,
        limit_train_batches=args.steps,  # one short epoch, so validation runs at its end
        limit_val_batches=2,
        num_sanity_val_steps=0,
        accelerator="cpu",
        devices=1,
        logger=False,
        enable_checkpointing=False,
        enable_progress_bar=False,
        enable_model_summary=False,
        default_root_dir=folder,
    )
    trainer.fit(model, datamodule=data)
    metrics = {name: float(value) for name, value in trainer.callback_metrics.items()}
    print(
        f"fitted {trainer.global_step} steps on {len(data.train_set)} train / {len(data.val_set)} val images: "
        f"train_loss {metrics.get('train_loss', float('nan')):.4f} val_loss {metrics.get('val_loss', float('nan')):.4f}"
    )
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
