"""A collate function that drops bad samples (markers and ``None``) before collating the rest."""

from __future__ import annotations

import random
from typing import Any, Callable, Sequence

from torch.utils.data import Dataset, default_collate

from torchpack.batch import StackedBatch
from torchpack.errors import BadSample

__all__ = ["SkipBadCollate"]


def _is_bad(sample: Any) -> bool:
    return sample is None or isinstance(sample, BadSample)


class SkipBadCollate:
    """Drop :class:`BadSample` markers and ``None`` from a batch, then call ``collate_fn`` on the rest.

    Use with a dataset built with ``on_error="skip"``::

        loader = DataLoader(dataset, batch_size=256, num_workers=8, collate_fn=SkipBadCollate())

    A batch in which every sample was bad collates to ``None``; skip it in the training
    loop (``if batch is None: continue``). It never raises for an empty batch, unlike
    ``default_collate([])`` (pytorch#57429).

    Args:
        collate_fn: the collate to wrap (default: ``torch.utils.data.default_collate``).
        refill_from: a dataset to draw random good samples from, so every batch keeps its
            full size; usually the same dataset the DataLoader reads.
        max_refill_tries: how many random draws to try per missing sample before giving up
            and returning the smaller batch.

    Batches of raw samples read as one tensor (:class:`torchpack.StackedBatch`) pass
    through unchanged, as ``[images, targets]``. The object is picklable, so it works with
    spawn and forkserver workers and with ``pin_memory=True``.
    """

    def __init__(
        self,
        collate_fn: Callable[[list[Any]], Any] = default_collate,
        refill_from: Dataset | None = None,
        max_refill_tries: int = 10,
    ) -> None:
        self.collate_fn = collate_fn
        self.refill_from = refill_from
        self.max_refill_tries = max_refill_tries

    def __call__(self, batch: Sequence[Any]) -> Any:
        if isinstance(batch, StackedBatch):
            return [batch.images, batch.targets]
        good = [sample for sample in batch if not _is_bad(sample)]
        if self.refill_from is not None and len(good) < len(batch):
            good.extend(self._refill(len(batch) - len(good)))
        if not good:
            return None
        return self.collate_fn(good)

    def _refill(self, missing: int) -> list[Any]:
        found: list[Any] = []
        size = len(self.refill_from)
        for _ in range(missing * self.max_refill_tries):
            if len(found) == missing or size == 0:
                break
            sample = self.refill_from[random.randrange(size)]
            if not _is_bad(sample):
                found.append(sample)
        return found

    def __repr__(self) -> str:
        return f"SkipBadCollate({getattr(self.collate_fn, '__name__', self.collate_fn)!r})"
