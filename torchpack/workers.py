"""``worker_init_fn``, for those who want each DataLoader worker's store handles opened as it starts.

Handles open lazily anyway (:mod:`torchpack.handles`), so this is optional.
"""

from __future__ import annotations

from typing import Any, Callable, Iterator

from torch.utils.data import get_worker_info

__all__ = ["worker_init_fn"]


def _store_datasets(dataset: Any, depth: int = 0) -> Iterator[Any]:
    """Store datasets inside ``dataset``, looking through Subset, ConcatDataset and similar wrappers."""
    if depth > 8:
        return
    if hasattr(dataset, "open_handles"):
        yield dataset
    inner = getattr(dataset, "dataset", None)
    if inner is not None:
        yield from _store_datasets(inner, depth + 1)
    for inner in getattr(dataset, "datasets", None) or ():
        yield from _store_datasets(inner, depth + 1)


class _ChainedWorkerInit:
    """``worker_init_fn`` that opens the store handles, then calls the user's own init function."""

    def __init__(self, user_fn: Callable[[int], None]) -> None:
        self.user_fn = user_fn

    def __call__(self, worker_id: int) -> None:
        worker_init_fn(worker_id)
        self.user_fn(worker_id)


def worker_init_fn(worker_id_or_fn: int | Callable[[int], None]) -> Any:
    """Open this DataLoader worker's store handles now instead of on its first sample.

    Handles open lazily anyway, so this is optional. Two forms::

        DataLoader(ds, num_workers=4, worker_init_fn=torchpack.worker_init_fn)
        DataLoader(ds, num_workers=4, worker_init_fn=torchpack.worker_init_fn(my_init))

    The second opens the handles, then calls ``my_init(worker_id)``.
    """
    if callable(worker_id_or_fn):
        return _ChainedWorkerInit(worker_id_or_fn)
    info = get_worker_info()
    if info is not None:
        for dataset in _store_datasets(info.dataset):
            dataset.open_handles()
    return None
