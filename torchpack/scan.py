"""List an ImageFolder tree exactly as torchvision does."""

from __future__ import annotations

import hashlib
import os
from dataclasses import dataclass, field
from typing import Callable

from torchvision.datasets.folder import IMG_EXTENSIONS, find_classes, make_dataset

__all__ = ["ScannedTree", "scan_tree"]


@dataclass
class ScannedTree:
    """The classes and samples of a tree, in ``torchvision.datasets.ImageFolder`` order."""

    root: str
    classes: list[str]
    class_to_idx: dict[str, int]
    paths: list[str]  # relative to root, "/"-separated
    targets: list[int]
    sizes: list[int] = field(default_factory=list)
    fingerprint: str = ""

    def __len__(self) -> int:
        return len(self.paths)


def scan_tree(
    root: str | os.PathLike,
    extensions: tuple[str, ...] | None = IMG_EXTENSIONS,
    is_valid_file: Callable[[str], bool] | None = None,
) -> ScannedTree:
    """Scan ``root/<class>/**/<file>`` with torchvision's own ``find_classes`` and ``make_dataset``.

    Files in nested subfolders belong to their top-level class. Empty class folders stay
    in the class list, so a dataset can still apply ``allow_empty`` as ImageFolder does.
    The fingerprint covers every file's path, size and modification time, so a resumed
    conversion can tell whether the tree changed.

    Raises:
        FileNotFoundError: ``root`` does not exist, or has no class folder.
        NotADirectoryError: ``root`` is a file.
    """
    root = os.path.abspath(os.fspath(root))
    if not os.path.exists(root):
        raise FileNotFoundError(f"Source folder {root} does not exist.")
    if not os.path.isdir(root):
        raise NotADirectoryError(f"Source {root} is not a folder.")
    if is_valid_file is not None:
        extensions = None
    classes, class_to_idx = find_classes(root)
    samples = make_dataset(root, class_to_idx, extensions, is_valid_file, allow_empty=True)
    digest = hashlib.sha256("\0".join(classes).encode())
    paths, targets, sizes = [], [], []
    for path, target in samples:
        stat = os.stat(path)
        rel = os.path.relpath(path, root).replace(os.sep, "/")
        paths.append(rel)
        targets.append(target)
        sizes.append(stat.st_size)
        digest.update(f"\0{rel}\0{target}\0{stat.st_size}\0{stat.st_mtime_ns}".encode("utf-8", "surrogateescape"))
    return ScannedTree(root, classes, class_to_idx, paths, targets, sizes, digest.hexdigest())
