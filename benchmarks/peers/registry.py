"""Every system of the comparison, in the order of the table: adding one is a module and a line in SYSTEMS."""

from __future__ import annotations

import importlib

from .common import Adapter

#: (module of this package, its Adapter subclass), one line per system, in the order of the table.
SYSTEMS: tuple[tuple[str, str], ...] = (
    ("imagefolder", "ImageFolderAdapter"),
    ("torchpack_routes", "TorchpackAdapter"),
    ("webdataset", "WebDatasetAdapter"),
    ("litdata", "LitDataAdapter"),
    ("mosaic", "MosaicAdapter"),
    ("hf_datasets", "HFAdapter"),
    ("ffcv", "FFCVAdapter"),
    ("dali", "DALIAdapter"),
)

ADAPTERS: dict[str, type[Adapter]] = {
    a.system: a for a in (getattr(importlib.import_module(f".{module}", __package__), name) for module, name in SYSTEMS)
}
