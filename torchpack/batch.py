"""Whole batches of same-size raw samples: one ``(N, C, H, W)`` tensor, no per-sample work."""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import Iterator

import numpy as np
import torch
from torch.utils.data import get_worker_info

__all__ = ["StackedBatch", "batch_tensor"]


def batch_tensor(shape: tuple[int, ...]) -> torch.Tensor:
    """An uninitialised uint8 tensor; in a DataLoader worker, in shared memory, as ``default_collate`` allocates.

    A tensor that a worker sends is moved to shared memory anyway: allocating it there
    saves that copy.
    """
    if get_worker_info() is None:
        # numpy's memory, not torch.empty's: glibc hands the freed pages of the last batch
        # back, where torch maps (and page-faults) fresh ones for every batch.
        return torch.from_numpy(np.empty(shape, dtype=np.uint8))
    storage = torch.UntypedStorage._new_shared(math.prod(shape))
    return torch.empty(0, dtype=torch.uint8).set_(storage).view(shape)


class StackedBatch(Sequence):
    """A batch of same-size raw samples read as one ``(N, 3, H, W)`` uint8 tensor.

    Returned by ``__getitems__`` (``decode="tensor"``, raw storage, no transforms).
    :class:`torchpack.SkipBadCollate` passes it through as ``[images, targets]`` with no
    per-sample work; any other collate sees an ordinary sequence of ``(image, target)``.
    """

    def __init__(self, images: torch.Tensor, targets: torch.Tensor) -> None:
        self.images = images
        self.targets = targets

    def __len__(self) -> int:
        return len(self.targets)

    def __getitem__(self, i):
        if isinstance(i, slice):
            return [self[j] for j in range(*i.indices(len(self)))]
        return self.images[i], int(self.targets[i])

    def __iter__(self) -> Iterator[tuple[torch.Tensor, int]]:
        # default_collate iterates a batch twice; unbind makes the views in one C++ call.
        return zip(self.images.unbind(0), self.targets.tolist())
