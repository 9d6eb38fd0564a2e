"""List a DatasetFolder tree exactly as torchvision does, and remember what the listing left out."""

from __future__ import annotations

import dataclasses
import hashlib
import os
from dataclasses import dataclass, field
from typing import Callable

from torchvision.datasets.folder import IMG_EXTENSIONS, find_classes, has_file_allowed_extension, make_dataset

__all__ = ["ScannedTree", "check_selection", "name_suffix", "scan_tree"]

#: Files a tree's listing left out that a header names one by one; beyond this, only their count
#: and their suffixes.
MAX_NOT_SELECTED_LISTED = 1000


@dataclass
class ScannedTree:
    """The classes and samples of a tree, in ``torchvision.datasets.DatasetFolder`` order."""

    root: str
    classes: list[str]
    class_to_idx: dict[str, int]
    paths: list[str]  # relative to root, "/"-separated
    targets: list[int]
    sizes: list[int] = field(default_factory=list)
    fingerprint: str = ""
    extensions: tuple[str, ...] | None = IMG_EXTENSIONS
    is_valid_file: str | None = None  # the rule's qualified name, when one was given
    not_selected: list[str] = field(default_factory=list)  # files under class folders the rule rejected

    def shuffled(self, seed: int) -> ScannedTree:
        """The same tree with its files in a random order that depends only on ``seed`` (classes stay as they are)."""
        import random

        order = list(range(len(self.paths)))
        random.Random(seed).shuffle(order)
        return dataclasses.replace(
            self,
            paths=[self.paths[i] for i in order],
            targets=[self.targets[i] for i in order],
            sizes=[self.sizes[i] for i in order] if self.sizes else [],
        )

    def not_selected_suffixes(self) -> dict[str, int]:
        """How many rejected files end in each lowercased suffix (``".txt"``; ``""`` for none)."""
        counts: dict[str, int] = {}
        for path in self.not_selected:
            suffix = name_suffix(path)
            counts[suffix] = counts.get(suffix, 0) + 1
        return counts

    def __len__(self) -> int:
        return len(self.paths)


def name_suffix(path: str) -> str:
    """The lowercased last suffix of a path's file name, dot included (``".npy"`` for ``".npy"`` too); ``""`` for none.

    Not ``os.path.splitext``, which gives a name that starts with a dot no suffix: torchvision's
    ``has_file_allowed_extension`` matches the name's end, so ``.npy`` is a ``.npy`` file to it.
    """
    name = path.rsplit("/", 1)[-1].lower()
    dot = name.rfind(".")
    return name[dot:] if dot >= 0 else ""


def check_selection(
    extensions: tuple[str, ...] | list[str] | str | None, is_valid_file: Callable[[str], bool] | None
) -> tuple[str, ...] | None:
    """Refuse what ``DatasetFolder`` refuses: exactly one of ``extensions`` and ``is_valid_file``.

    Returns ``extensions`` as a tuple: torchvision also accepts a list, or one string.
    """
    if (extensions is None) == (is_valid_file is None):
        # torchvision's own message, from make_dataset.
        raise ValueError("Both extensions and is_valid_file cannot be None or not None at the same time")
    if isinstance(extensions, str):
        return (extensions,)
    return None if extensions is None else tuple(extensions)


def scan_tree(
    root: str | os.PathLike,
    extensions: tuple[str, ...] | str | None = None,
    is_valid_file: Callable[[str], bool] | None = None,
    exclude: Callable[[str], bool] | None = None,
) -> ScannedTree:
    """Scan ``root/<class>/**/<file>`` with torchvision's own ``find_classes`` and ``make_dataset``.

    Files are selected by ``extensions`` or ``is_valid_file`` (neither: ImageFolder's ``IMG_EXTENSIONS``).

    Files in nested subfolders belong to their top-level class. Empty class folders stay
    in the class list, so a dataset can still apply ``allow_empty`` as DatasetFolder does.
    The fingerprint covers every file's path, size and modification time, so a resumed
    conversion can tell whether the tree changed. A file that cannot be examined (a dangling
    symlink, a file without permission) is listed all the same, as DatasetFolder lists it: it
    fails when it is read. ``exclude(path)`` leaves out paths that are not the tree's (the
    converter's own output, when it writes inside the tree), class folders included.

    Raises:
        FileNotFoundError: ``root`` does not exist, or has no class folder.
        NotADirectoryError: ``root`` is a file.
        ValueError: both or neither of ``extensions`` and ``is_valid_file`` are given, or a selected
            file's name is not valid UTF-8 (a store keeps every path as UTF-8).
    """
    root = os.path.abspath(os.fspath(root))
    if not os.path.exists(root):
        raise FileNotFoundError(f"Source folder {root} does not exist.")
    if not os.path.isdir(root):
        raise NotADirectoryError(f"Source {root} is not a folder.")
    if extensions is None and is_valid_file is None:
        extensions = IMG_EXTENSIONS
    extensions = check_selection(extensions, is_valid_file)
    rejected: list[str] = []

    def select(path: str) -> bool:
        # make_dataset's own rule (it wraps extensions the same way), noting what it turns down.
        accepted = is_valid_file(path) if is_valid_file is not None else has_file_allowed_extension(path, extensions)
        if not accepted:
            rejected.append(path)
        return bool(accepted)

    def listed(path: str) -> bool:
        return not (exclude is not None and exclude(path)) and select(path)

    classes, class_to_idx = find_classes(root)
    if exclude is not None:
        classes = [name for name in classes if not exclude(os.path.join(root, name))]
        if not classes:
            raise FileNotFoundError(f"Couldn't find any class folder in {root}.")
        class_to_idx = {name: i for i, name in enumerate(classes)}
    samples = make_dataset(root, class_to_idx, None, listed, allow_empty=True)
    digest = hashlib.sha256("\0".join(classes).encode())
    paths, targets, sizes = [], [], []
    for path, target in samples:
        stat = _stat(path)
        rel = _relative(path, root)
        if not _is_utf8(rel):
            raise ValueError(
                f"The file name {os.fsencode(path)!r} is not valid UTF-8, and a store keeps every path as "
                "UTF-8: rename the file, or leave it out with is_valid_file."
            )
        paths.append(rel)
        targets.append(target)
        sizes.append(stat.st_size)
        digest.update(f"\0{rel}\0{target}\0{stat.st_size}\0{stat.st_mtime_ns}".encode("utf-8", "surrogateescape"))
    rule = None if is_valid_file is None else getattr(is_valid_file, "__qualname__", repr(is_valid_file))
    return ScannedTree(
        root,
        classes,
        class_to_idx,
        paths,
        targets,
        sizes,
        digest.hexdigest(),
        extensions,
        rule,
        sorted(_printable(_relative(p, root)) for p in rejected),
    )


def _stat(path: str) -> os.stat_result:
    """The file's status; an unreadable file's (dangling link, no permission) reads as empty: it fails at ingest."""
    try:
        return os.stat(path)
    except OSError:
        return os.stat_result((0,) * 10)


def _printable(name: str) -> str:
    """``name``, with bytes that are not UTF-8 as U+FFFD: it goes into a JSON header."""
    return name if _is_utf8(name) else os.fsencode(name).decode("utf-8", "replace")


def _is_utf8(name: str) -> bool:
    try:
        name.encode("utf-8")
    except UnicodeEncodeError:  # os.fsdecode's surrogate escapes of bytes that are not UTF-8
        return False
    return True


def _relative(path: str, root: str) -> str:
    return os.path.relpath(path, root).replace(os.sep, "/")
