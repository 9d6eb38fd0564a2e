"""Read images together with their relative paths (``cat/001.jpg``) through a DataLoader.

A store keeps every sample's path relative to the converted tree's root, so evaluation
code that writes per-file predictions, or joins with a CSV of labels keyed by file name,
works as it did on the folder::

    python examples/read_with_paths.py --store data/val.lmdb --workers 4
    python examples/read_with_paths.py --backend hdf5          # on the built-in example tree

``dataset.relative_path(i)`` is the path of sample ``i``; ``dataset.samples[i]`` is
``(os.path.join(store, relative_path), target)``, the same shape as ImageFolder's.
"""

from __future__ import annotations

import argparse
import os
import tempfile
from typing import Any, Sequence

from torch.utils.data import DataLoader, Dataset
from torchvision import transforms

import torchpack
from torchpack.example import make_example_tree

DATASETS = {"lmdb": torchpack.LMDBImageFolder, "hdf5": torchpack.HDF5ImageFolder}
EXTENSIONS = {"lmdb": ".lmdb", "hdf5": ".h5"}


class WithPaths(Dataset):
    """Wrap a torchpack dataset so each sample is ``(image, target, relative_path)``.

    Args:
        dataset: an :class:`torchpack.LMDBImageFolder` or :class:`torchpack.HDF5ImageFolder`.
    """

    def __init__(self, dataset: torchpack.StoreImageFolder) -> None:
        self.dataset = dataset

    def __len__(self) -> int:
        return len(self.dataset)

    def __getitem__(self, index: int) -> tuple[Any, int, str]:
        image, target = self.dataset[index]
        return image, target, self.dataset.relative_path(index)


def parse_args(argv: Sequence[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--backend", choices=sorted(DATASETS), default="lmdb", help="store format (default lmdb)")
    parser.add_argument("--store", help="store to read (default: convert the built-in example tree)")
    parser.add_argument("--dir", help="where to write the example tree and store (default: a new temporary folder)")
    parser.add_argument("--batch-size", type=int, default=8, help="images per batch (default 8)")
    parser.add_argument("--workers", type=int, default=2, help="DataLoader worker processes (default 2)")
    return parser.parse_args(argv)


def example_store(backend: str, folder: str) -> str:
    """Write the built-in example tree under ``folder`` and convert it; returns the store's path."""
    tree = make_example_tree(os.path.join(folder, "tree"), per_class=4)
    store = os.path.join(folder, "example" + EXTENSIONS[backend])
    torchpack.convert(tree, store, workers=0, overwrite=True)
    return store


def main(argv: Sequence[str] | None = None) -> int:
    args = parse_args(argv)
    store = args.store or example_store(args.backend, args.dir or tempfile.mkdtemp(prefix="torchpack-paths-"))
    tf = transforms.Compose([transforms.Resize(32), transforms.CenterCrop(32), transforms.PILToTensor()])
    dataset = DATASETS[args.backend](store, transform=tf)
    # default_collate turns the batch's paths into a list of str, next to the image tensor.
    loader = DataLoader(WithPaths(dataset), batch_size=args.batch_size, num_workers=args.workers)
    count = 0
    for images, targets, paths in loader:
        for target, path in zip(targets.tolist(), paths):
            print(f"{dataset.classes[target]}\t{path}")
        count += len(paths)
    print(f"read {count} images with their paths from {store}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
