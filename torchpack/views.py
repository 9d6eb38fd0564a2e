"""``samples`` and ``targets`` as read-only sequences over the index arrays, not Python lists.

At 1.28M samples lists of tuples take seconds to build and grow every DataLoader worker's
memory page by page as reference counts change (copy-on-read); these views do neither.
"""

from __future__ import annotations

import os
from collections.abc import Sequence
from typing import Iterator

import numpy as np

from torchpack.store import StoreIndex

__all__ = ["IntSequence", "SampleSequence"]


class IntSequence(Sequence):
    """A read-only sequence of Python ints over a numpy array (what ``targets`` is)."""

    def __init__(self, values: np.ndarray) -> None:
        self._values = values.view()
        self._values.flags.writeable = False  # np.asarray(ds.targets) must not be a way to change them

    def __len__(self) -> int:
        return len(self._values)

    def __getitem__(self, i):
        if isinstance(i, slice):
            return self._values[i].tolist()
        return int(self._values[i])

    def __iter__(self) -> Iterator[int]:
        for start in range(0, len(self._values), 65536):
            yield from self._values[start : start + 65536].tolist()

    def __array__(self, dtype=None, copy=None) -> np.ndarray:
        if dtype is not None and np.dtype(dtype) != self._values.dtype:
            return self._values.astype(dtype)
        return self._values.copy() if copy else self._values  # np.array copies; np.asarray gets a read-only view

    def __eq__(self, other: object) -> bool:
        if isinstance(other, Sequence):
            return len(other) == len(self) and all(a == b for a, b in zip(self, other))
        return NotImplemented

    def __repr__(self) -> str:
        return f"[{', '.join(map(str, self._values[:10].tolist()))}{', ...' if len(self) > 10 else ''}]"


class SampleSequence(Sequence):
    """``samples``/``imgs``: ``(path, target)`` tuples built on access from the index arrays."""

    def __init__(self, prefix: str, index: StoreIndex, rows: np.ndarray | None) -> None:
        self._prefix = prefix
        self._index = index
        self._rows = rows

    def __len__(self) -> int:
        return len(self._index) if self._rows is None else len(self._rows)

    def __getitem__(self, i):
        if isinstance(i, slice):
            return [self[j] for j in range(*i.indices(len(self)))]
        if i < 0:
            i += len(self)
        if not 0 <= i < len(self):
            raise IndexError(f"sample index {i} is out of range for {len(self)} samples")
        row = i if self._rows is None else int(self._rows[i])
        return os.path.join(self._prefix, self._index.paths[row].as_py()), int(self._index.targets[row])

    def __eq__(self, other: object) -> bool:
        if isinstance(other, Sequence):
            return len(other) == len(self) and all(a == b for a, b in zip(self, other))
        return NotImplemented

    def __repr__(self) -> str:
        return f"<{len(self)} samples: {self[0] if len(self) else ''}, ...>"
