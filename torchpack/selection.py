"""Which stored samples a dataset lists: DatasetFolder's ``extensions`` / ``is_valid_file`` rules over the index.

The converter listed the tree with one rule and recorded what it turned down; a dataset may
bring another. :func:`select_rows` applies the dataset's rule to the stored paths, and
:func:`refuse_unconverted` refuses a rule that would accept files the store does not hold
(DatasetFolder on the tree would list them; silently returning fewer samples is worse).
"""

from __future__ import annotations

import functools
import os
import warnings
from typing import Callable, Sequence

import numpy as np
import pyarrow.compute as pc
from torchvision.datasets.folder import has_file_allowed_extension

from torchpack.scan import name_suffix
from torchpack.store import StoreIndex

__all__ = ["Selection", "refuse_unconverted", "select_rows"]


class Selection:
    """A dataset's samples as rows of the store's index: dataset index ``i`` is row ``rows[i]``.

    Args:
        rows: the selected rows in dataset order, or None for every row of a store of ``size``.
        size: the number of rows in the store.
        owner: the dataset's name, for ``IndexError`` messages.
    """

    def __init__(self, rows: np.ndarray | None, size: int, owner: str) -> None:
        self.rows = rows
        self.size = size if rows is None else len(rows)
        self.owner = owner

    def __len__(self) -> int:
        return self.size

    def row(self, index: int) -> int:
        """The row of dataset index ``index`` (negative counts from the end, as for a list)."""
        if index < 0:
            index += self.size
        if not 0 <= index < self.size:
            raise IndexError(f"sample index {index} is out of range for {self.owner} with {self.size} samples")
        return int(index) if self.rows is None else int(self.rows[index])

    def rows_of(self, indices: Sequence[int] | np.ndarray) -> np.ndarray:
        """The rows of many indices at once, as :meth:`row` gives each (no Python loop)."""
        n = self.size
        positions = np.asarray(indices, dtype=np.int64).reshape(-1)
        if len(positions) and positions.min() < 0:
            positions = np.where(positions < 0, positions + n, positions)
        if len(positions) and (positions.min() < 0 or positions.max() >= n):
            index = indices[int(np.argmax((positions < 0) | (positions >= n)))]
            raise IndexError(f"sample index {index} is out of range for {self.owner} with {n} samples")
        return positions if self.rows is None else self.rows[positions]


def _extension_mask(paths, extensions: tuple[str, ...]) -> np.ndarray:
    """``has_file_allowed_extension`` over every stored path at once (lowercased name, extensions as given)."""
    lowered = pc.utf8_lower(paths)
    masks = [pc.ends_with(lowered, e).to_numpy(zero_copy_only=False) for e in extensions]
    return functools.reduce(np.logical_or, masks, np.zeros(len(paths), dtype=bool))


def _may_end_with(suffix: str, extension: str) -> bool:
    """Whether a lowercased file name whose last suffix is ``suffix`` (``".txt"``, or ``""``) can end with ``extension``."""
    if not suffix:
        return "." not in extension
    return suffix.endswith(extension) or extension.endswith(suffix)


def _converted_within(index: StoreIndex, extensions: tuple[str, ...]) -> bool:
    """Whether every stored path surely ends with one of ``extensions``: the converter selected
    by extensions that each end with one of them (so no path needs checking)."""
    converted = [h.get("selection", {}).get("extensions") for h in index.headers]
    return all(c is not None and all(e.endswith(extensions) for e in c) for c in converted)


def select_rows(
    index: StoreIndex,
    classes: list[str],
    extensions: tuple[str, ...] | None,
    is_valid_file: Callable[[str], bool] | None,
    allow_empty: bool,
) -> np.ndarray | None:
    """The stored rows DatasetFolder would list with this rule (None: all), with its empty-class rule.

    ``is_valid_file`` receives ``os.path.join(index.prefix, relative_path)``, as DatasetFolder
    passes it a path under its root.

    Raises:
        FileNotFoundError: a class has no selected sample and ``allow_empty`` is False
            (DatasetFolder's message).
    """
    if is_valid_file is not None:
        paths = (os.path.join(index.prefix, path) for path in index.paths.to_pylist())
        keep = np.fromiter((bool(is_valid_file(path)) for path in paths), dtype=bool, count=len(index))
    elif _converted_within(index, extensions):
        keep = None
    else:
        keep = _extension_mask(index.paths, tuple(extensions))
    rows = None if keep is None or keep.all() else np.flatnonzero(keep)
    targets = index.targets if rows is None else index.targets[rows]
    present = np.bincount(targets, minlength=len(classes)) > 0
    empty_classes = {c for c, has in zip(classes, present) if not has}
    if empty_classes and not allow_empty:
        msg = f"Found no valid file for the classes {', '.join(sorted(empty_classes))}. "
        if extensions is not None:
            msg += f"Supported extensions are: {', '.join(extensions)}"
        raise FileNotFoundError(msg)
    return rows


def refuse_unconverted(
    index: StoreIndex, extensions: tuple[str, ...] | None, is_valid_file: Callable[[str], bool] | None
) -> None:
    """Refuse ``extensions`` that accept files the converter's selection left out of the store;
    warn about an ``is_valid_file`` that accepts some (it may be meant as a filter of images).

    Raises:
        ValueError: ``extensions`` accept a file of the source tree that the store does not hold.
    """
    selection = index.headers[0].get("selection")
    if not selection or not selection.get("not_selected"):
        return
    listed = selection.get("not_selected_paths", [])
    how = (
        f"extensions={tuple(selection['extensions'])}"
        if selection.get("extensions") is not None
        else f"is_valid_file={selection.get('is_valid_file')}"
    )
    advice = f"{index.prefix} was converted with {how}; convert the tree again with the same selection to read them."
    if is_valid_file is not None:
        missing = [path for path in listed if is_valid_file(os.path.join(index.prefix, path))]
        if missing:
            warnings.warn(
                f"is_valid_file accepts {len(missing)} file(s) of the source tree that the store does not hold, "
                f"such as {missing[0]!r}, so this dataset lists fewer samples than DatasetFolder would on the "
                f"tree. {advice}",
                UserWarning,
                stacklevel=4,
            )
        return
    missing = [path for path in listed if has_file_allowed_extension(path, extensions)]

    # Beyond the listed paths only suffixes are known: an unlisted file whose suffix an
    # extension could match counts as a file the store may lack.
    def candidate(suffix: str) -> bool:
        return any(_may_end_with(suffix, e) for e in extensions)

    possible = sum(n for suffix, n in selection.get("not_selected_suffixes", {}).items() if candidate(suffix))
    listed_possible = sum(candidate(name_suffix(path)) for path in listed)
    if missing or possible > listed_possible:
        example = f"such as {missing[0]!r}" if missing else "with suffixes these extensions match"
        raise ValueError(
            f"extensions {extensions} accept {max(len(missing), 1)} or more file(s) of the source tree that the "
            f"store does not hold, {example}. {advice}"
        )
