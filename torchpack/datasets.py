"""Drop-in replacements for ``torchvision.datasets.DatasetFolder`` and ``ImageFolder`` over a store.

:class:`StoreDatasetFolder` (:mod:`torchpack.store_dataset`) does the work for every store;
:class:`StoreImageFolder` adds ImageFolder's arguments and the image decode options, and the
backend classes only name a backend::

    StoreDatasetFolder(DatasetFolder)
    ├── LMDBDatasetFolder, HDF5DatasetFolder
    └── StoreImageFolder(StoreDatasetFolder, ImageFolder)
        └── LMDBImageFolder, HDF5ImageFolder  (also registered as LMDB/HDF5DatasetFolder)
"""

from __future__ import annotations

from typing import Any, Callable

from torchvision.datasets import ImageFolder
from torchvision.datasets.folder import IMG_EXTENSIONS, default_loader

from torchpack.batch import StackedBatch
from torchpack.crop_decode import RandomResizedCropDecode
from torchpack.decode import DecodeSize
from torchpack.image_decode import ImageDecode
from torchpack.shard_cache import ShardCache
from torchpack.store import StoreRoot
from torchpack.store_dataset import StoreDatasetFolder

__all__ = [
    "HDF5DatasetFolder",
    "HDF5ImageFolder",
    "LMDBDatasetFolder",
    "LMDBImageFolder",
    "StackedBatch",
    "StoreDatasetFolder",
    "StoreImageFolder",
]


class StoreImageFolder(StoreDatasetFolder, ImageFolder):
    """An ImageFolder whose images come from a torchpack store: ImageFolder's arguments, attributes and output.

    Args:
        root: the store file; or the shards of one, as a folder, a glob pattern or a list.
        transform, target_transform, is_valid_file, allow_empty: as in ImageFolder.
        loader: torchvision's ``default_loader`` (the default) or ``pil_loader``, or
            ``torchpack.bytes_loader``: the dataset decodes, with ImageFolder's pixels, as
            ``decode`` and ``decode_size`` say. Any other loader is called as
            :class:`StoreDatasetFolder` calls it.
        decode: ``"pil"`` (RGB ``PIL.Image``, ImageFolder's output), ``"tensor"`` (CHW uint8
            tensor) or ``"numpy"`` (HWC uint8 array); the same pixels in each.
        decode_size: decode JPEGs at the smallest of 1/2, 1/4, 1/8 scale that still covers this
            short side (int) or ``(height, width)``: much faster before ``Resize``/``RandomResizedCrop``,
            and other pixels than a full decode (libjpeg's DCT scaling).
        decode_crop: a :class:`torchpack.RandomResizedCropDecode`: each image is its random resized
            crop, decoded from the crop alone (the transforms then apply to the crop).
        loader_input, on_error, check_crc, readahead, threads, storage_options, cache: see
            :class:`StoreDatasetFolder`.
    """

    def __init__(
        self,
        root: StoreRoot,
        transform: Callable | None = None,
        target_transform: Callable | None = None,
        loader: Callable[[Any], Any] = default_loader,
        is_valid_file: Callable[[str], bool] | None = None,
        allow_empty: bool = False,
        *,
        decode: str = "pil",
        decode_size: DecodeSize = None,
        decode_crop: RandomResizedCropDecode | None = None,
        loader_input: str = "auto",
        on_error: str = "raise",
        check_crc: bool = True,
        readahead: bool = True,
        threads: int = 1,
        storage_options: dict[str, Any] | None = None,
        cache: ShardCache | None = None,
    ) -> None:
        super().__init__(
            root,
            loader,
            IMG_EXTENSIONS if is_valid_file is None else None,
            transform,
            target_transform,
            is_valid_file,
            allow_empty,
            loader_input=loader_input,
            on_error=on_error,
            check_crc=check_crc,
            readahead=readahead,
            threads=threads,
            image_decode=ImageDecode(decode, decode_size, decode_crop),
            storage_options=storage_options,
            cache=cache,
        )
        self.imgs = self.samples


class LMDBDatasetFolder(StoreDatasetFolder):
    """DatasetFolder over an LMDB store written by :func:`torchpack.convert`.

    Example::

        # dataset = torchvision.datasets.DatasetFolder("data/train", loader=np.load, extensions=(".npy",))
        dataset = torchpack.LMDBDatasetFolder("data/train.lmdb", loader=np.load, extensions=(".npy",))

    Arguments and attributes are DatasetFolder's; see :class:`StoreDatasetFolder` for the extras.
    """

    backend = "lmdb"


class HDF5DatasetFolder(StoreDatasetFolder):
    """DatasetFolder over an HDF5 store written by :func:`torchpack.convert`.

    Example::

        # dataset = torchvision.datasets.DatasetFolder("data/train", loader=np.load, extensions=(".npy",))
        dataset = torchpack.HDF5DatasetFolder("data/train.h5", loader=np.load, extensions=(".npy",))

    Arguments and attributes are DatasetFolder's; see :class:`StoreDatasetFolder` for the extras.
    """

    backend = "hdf5"


class LMDBImageFolder(StoreImageFolder):
    """ImageFolder over an LMDB store written by :func:`torchpack.convert`.

    Example::

        # dataset = torchvision.datasets.ImageFolder("data/train", transform=tf)
        dataset = torchpack.LMDBImageFolder("data/train.lmdb", transform=tf)

    Arguments and attributes are ImageFolder's; see :class:`StoreImageFolder` for the extras.
    """

    backend = "lmdb"


class HDF5ImageFolder(StoreImageFolder):
    """ImageFolder over an HDF5 store written by :func:`torchpack.convert`.

    Example::

        # dataset = torchvision.datasets.ImageFolder("data/train", transform=tf)
        dataset = torchpack.HDF5ImageFolder("data/train.h5", transform=tf)

    Arguments and attributes are ImageFolder's; see :class:`StoreImageFolder` for the extras.
    """

    backend = "hdf5"


# An ImageFolder of a backend is a DatasetFolder of that backend, as the README promises,
# without a second base class: isinstance(LMDBImageFolder(...), LMDBDatasetFolder) holds.
LMDBDatasetFolder.register(LMDBImageFolder)
HDF5DatasetFolder.register(HDF5ImageFolder)
