"""How a store's images become samples: a PIL image, a CHW uint8 tensor or an HWC array, at full or scaled size.

The pixels themselves come from :mod:`torchpack.decode` (the one decode contract); this module
picks the output type and reads each sample's encoding, decoder and raw shape from the index.
"""

from __future__ import annotations

from typing import Any

import numpy as np
import torch

from PIL import Image

from torchpack.crop_decode import RandomResizedCropDecode
from torchpack.decode import PILLOW_DECODER, DecodeSize, decode_array, decode_pil, raw_rgb
from torchpack.store import StoreIndex

__all__ = ["DECODE_MODES", "ImageDecode", "array_to_tensor", "check_decode_size"]

DECODE_MODES = ("pil", "tensor", "numpy")
_TINY_PIXELS = 64 * 64  # raw images up to this size come as contiguous CHW tensors, larger ones channels-last


def array_to_tensor(pixels: np.ndarray) -> torch.Tensor:
    """HWC uint8 array to a CHW uint8 tensor (a view, no copy)."""
    if not pixels.flags.writeable:
        pixels = pixels.copy()  # torch warns on read-only memory, and the sample must outlive the read buffer
    return torch.from_numpy(pixels).permute(2, 0, 1)


def check_decode_size(decode_size: Any) -> None:
    """Refuse a ``decode_size`` that is not a positive int or a ``(height, width)`` of them."""

    def positive(n: Any) -> bool:
        return isinstance(n, int) and not isinstance(n, bool) and n > 0

    if decode_size is None or positive(decode_size):
        return
    if isinstance(decode_size, (tuple, list)) and len(decode_size) == 2 and all(map(positive, decode_size)):
        return
    raise ValueError(f"`decode_size` must be a positive int (the short side) or (height, width), got {decode_size!r}.")


class ImageDecode:
    """A dataset's image decode: the output type (``mode``), and a scaled JPEG size (``size``) or a fused crop.

    Args:
        mode: ``"pil"`` (RGB ``PIL.Image``, ImageFolder's output), ``"tensor"`` (CHW uint8
            tensor) or ``"numpy"`` (HWC uint8 array); the same pixels in each.
        size: decode JPEGs at the smallest of 1/2, 1/4, 1/8 scale that still covers this short
            side (int) or ``(height, width)``; None decodes at full size.
        crop: a :class:`RandomResizedCropDecode`: return its random crop, decoding only that.

    Raises:
        ValueError: a bad mode or size, or both a size and a crop.
    """

    def __init__(self, mode: str = "pil", size: DecodeSize = None, crop: RandomResizedCropDecode | None = None) -> None:
        if mode not in DECODE_MODES:
            raise ValueError(f"`decode` must be one of {DECODE_MODES}, got {mode!r}.")
        check_decode_size(size)
        if crop is not None and not isinstance(crop, RandomResizedCropDecode):
            raise TypeError(f"`decode_crop` must be a torchpack.RandomResizedCropDecode, got {crop!r}.")
        if crop is not None and size is not None:
            raise ValueError("Pass `decode_size` or `decode_crop`, not both: the crop picks its own DCT scale.")
        self.mode = mode
        self.size = size
        self.crop = crop

    def __call__(self, data, index: StoreIndex, row: int) -> Any:
        """Index row ``row``'s image from its stored bytes ``data``."""
        if self.crop is not None:
            return self._cropped(data, index, row)
        if self.mode == "tensor" and index.all_raw:
            # Raw images, per item: one copy is all the work. Tiny ones into a contiguous CHW
            # array (default_collate stacks those fastest); larger ones into HWC, returned as a
            # channels-last CHW view, which torch's uint8 antialiased resize takes about twice as fast.
            shape = index.uniform_raw_shape or index.raw_shape(row)
            if shape[0] * shape[1] <= _TINY_PIXELS:
                return torch.from_numpy(raw_rgb(data, shape, index.compressions[0], channels_first=True))
            return torch.from_numpy(raw_rgb(data, shape, index.compressions[0])).permute(2, 0, 1)
        encoding = index.encodings[index.encoding_codes[row]]
        decoder = index.decoders[index.decoder_codes[row]]
        if encoding == "raw":
            shape, compression = index.raw_shape(row), index.compressions[index.locate(row)[0]]
        else:
            shape, compression = (0, 0, 0), None
        if self.mode == "pil":
            return decode_pil(data, encoding, self.size, shape, compression, decoder)
        pixels = decode_array(data, encoding, self.size, shape, compression, decoder)
        return array_to_tensor(pixels) if self.mode == "tensor" else pixels

    def _cropped(self, data, index: StoreIndex, row: int) -> Any:
        encoding = index.encodings[index.encoding_codes[row]]
        decoder = index.decoders[index.decoder_codes[row]]
        out = self.crop.jpeg(data) if encoding == "jpeg" and decoder != PILLOW_DECODER else None
        if out is None:
            if encoding == "raw":
                shape, compression = index.raw_shape(row), index.compressions[index.locate(row)[0]]
            else:
                shape, compression = (0, 0, 0), None
            out = self.crop.decoded(decode_array(data, encoding, None, shape, compression, decoder))
        if self.mode == "tensor":
            return out.contiguous()  # CHW, which batches stack fastest
        pixels = out.permute(1, 2, 0).numpy()  # HWC, already contiguous (the tensor is channels-last)
        return pixels if self.mode == "numpy" else Image.fromarray(pixels)

    def describe(self) -> str:
        """A short description, for a dataset's ``repr``."""
        if self.crop is not None:
            return f"{self.mode}, {self.crop!r}"
        return self.mode + (f", JPEG scaled to cover {self.size}" if self.size is not None else "")

    def __repr__(self) -> str:
        return f"ImageDecode(mode={self.mode!r}, size={self.size!r}, crop={self.crop!r})"
