"""torchpack: ImageFolder trees packed into one LMDB or HDF5 file, read fast and safely by PyTorch."""

from torchpack.collate import SkipBadCollate
from torchpack.convert import ConvertResult, convert
from torchpack.datasets import HDF5ImageFolder, LMDBImageFolder, StackedBatch, StoreImageFolder
from torchpack.decode import bytes_loader, from_tensor_decoder
from torchpack.errors import BadSample, BadSampleError
from torchpack.format import InvalidStoreError, UnsupportedVersionError
from torchpack.workers import worker_init_fn

__version__ = "0.1.0"

__all__ = [
    "BadSample",
    "BadSampleError",
    "ConvertResult",
    "HDF5ImageFolder",
    "InvalidStoreError",
    "LMDBImageFolder",
    "SkipBadCollate",
    "StackedBatch",
    "StoreImageFolder",
    "UnsupportedVersionError",
    "__version__",
    "bytes_loader",
    "convert",
    "from_tensor_decoder",
    "worker_init_fn",
]
