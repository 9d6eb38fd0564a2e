"""torchpack: ImageFolder and DatasetFolder trees packed into one LMDB or HDF5 file, read fast and safely by PyTorch.

Names are imported on first use, so converter worker processes (which only need
``torchpack.ingest``) start without importing torch.
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

__version__ = "0.1.0"

_EXPORTS = {
    "ArrayBatchSampler": "torchpack.samplers",
    "BadSample": "torchpack.errors",
    "BadSampleError": "torchpack.errors",
    "BlockShuffleSampler": "torchpack.samplers",
    "CacheFullError": "torchpack.shard_cache",
    "ConversionInProgressError": "torchpack.staging",
    "ConversionInterrupted": "torchpack.interrupts",
    "ConvertResult": "torchpack.converter",
    "HDF5DatasetFolder": "torchpack.datasets",
    "HDF5ImageFolder": "torchpack.datasets",
    "InvalidStoreError": "torchpack.format",
    "LMDBDatasetFolder": "torchpack.datasets",
    "LMDBImageFolder": "torchpack.datasets",
    "RandomResizedCropDecode": "torchpack.crop_decode",
    "ResizedCenterCrop": "torchpack.transforms",
    "SampleFile": "torchpack.loaders",
    "ShardCache": "torchpack.shard_cache",
    "ShardWindowSampler": "torchpack.shard_sampler",
    "SkipBadCollate": "torchpack.collate",
    "StackedBatch": "torchpack.batch",
    "StoreDatasetFolder": "torchpack.datasets",
    "StoreChangedError": "torchpack.remote_shards",
    "StoreImageFolder": "torchpack.datasets",
    "UnsupportedVersionError": "torchpack.format",
    "bytes_loader": "torchpack.decode",
    "convert": "torchpack.converter",
    "export_store": "torchpack.export",
    "from_tensor_decoder": "torchpack.loaders",
    "store_info": "torchpack.inspection",
    "verify_store": "torchpack.inspection",
    "worker_init_fn": "torchpack.workers",
}

__all__ = sorted([*_EXPORTS, "__version__"])

if TYPE_CHECKING:
    from torchpack.batch import StackedBatch
    from torchpack.collate import SkipBadCollate
    from torchpack.converter import ConvertResult, convert
    from torchpack.crop_decode import RandomResizedCropDecode
    from torchpack.datasets import (
        HDF5DatasetFolder,
        HDF5ImageFolder,
        LMDBDatasetFolder,
        LMDBImageFolder,
        StoreDatasetFolder,
        StoreImageFolder,
    )
    from torchpack.decode import bytes_loader
    from torchpack.errors import BadSample, BadSampleError
    from torchpack.export import export_store
    from torchpack.format import InvalidStoreError, UnsupportedVersionError
    from torchpack.inspection import store_info, verify_store
    from torchpack.interrupts import ConversionInterrupted
    from torchpack.loaders import SampleFile, from_tensor_decoder
    from torchpack.remote_shards import StoreChangedError
    from torchpack.samplers import ArrayBatchSampler, BlockShuffleSampler
    from torchpack.shard_cache import CacheFullError, ShardCache
    from torchpack.shard_sampler import ShardWindowSampler
    from torchpack.staging import ConversionInProgressError
    from torchpack.transforms import ResizedCenterCrop
    from torchpack.workers import worker_init_fn


def __getattr__(name: str) -> Any:
    module = _EXPORTS.get(name)
    if module is None:
        raise AttributeError(f"module 'torchpack' has no attribute {name!r}")
    value = getattr(importlib.import_module(module), name)
    globals()[name] = value
    return value


def __dir__() -> list[str]:
    return __all__

