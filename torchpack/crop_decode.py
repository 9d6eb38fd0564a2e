"""``RandomResizedCrop`` fused with the decode: only the crop is decoded, at the smallest DCT scale that covers the output.

For ``RandomResizedCrop`` the crop is known before decoding: it needs only the image's size,
which the index (or the JPEG header) gives. The crop's position and size are drawn by
torchvision's own ``RandomResizedCrop.get_params``, from torch's random generator, exactly as
the transform draws them. Then a JPEG is decoded:

- at 1/2, 1/4 or 1/8 scale when the crop, so scaled, still covers the output size (libjpeg's
  DCT scaling: other pixels than a full decode, hence opt-in, like ``decode_size``);
- and, where libjpeg-turbo's TurboJPEG 3 library is available (:mod:`torchpack.jpeg_region`),
  only the rows down to the crop's bottom and the columns of the crop. Without it, the whole
  image is decoded at that scale by simplejpeg and cut.

The crop is resized to ``size`` x ``size`` with antialiased bilinear interpolation (torch's
uint8 kernel, as ``v2.RandomResizedCrop(antialias=True)`` on tensors). Images the fast path
does not take (PNG, CMYK JPEGs, JPEGs libjpeg warns about) are decoded whole, as ImageFolder
decodes them, then cropped and resized the same way.
"""

from __future__ import annotations

import math
from typing import Sequence

import numpy as np
import simplejpeg
import torch
from torchvision.transforms import RandomResizedCrop

from torchpack.decode import check_pixel_limit, fast_decoder_agrees
from torchpack.jpeg_region import region_decoder

__all__ = ["RandomResizedCropDecode", "resize_square"]

_SCALES = (8, 4, 2)


def resize_square(pixels: np.ndarray, size: int) -> torch.Tensor:
    """HWC uint8 pixels resized to ``size`` x ``size`` (antialiased bilinear): a CHW tensor, channels-last in memory."""
    batch = torch.from_numpy(np.ascontiguousarray(pixels)).permute(2, 0, 1).unsqueeze(0)
    batch = batch.contiguous(memory_format=torch.channels_last)  # torch's vectorised uint8 path
    return torch.nn.functional.interpolate(batch, size=(size, size), mode="bilinear", antialias=True, align_corners=False)[0]


class RandomResizedCropDecode:
    """A random crop of the image, resized to ``size`` x ``size``, decoded from the crop alone.

    Pass it to a store dataset as ``decode_crop``; follow it with the rest of the training
    transforms (a flip, say)::

        train = torchpack.LMDBImageFolder("train.lmdb", decode="tensor",
            decode_crop=torchpack.RandomResizedCropDecode(224), transform=v2.RandomHorizontalFlip())

    The crop's distribution is ``torchvision.transforms.RandomResizedCrop(size, scale, ratio)``'s:
    its ``get_params``, on torch's random generator (so ``torch.manual_seed`` and the DataLoader's
    per-worker seeds apply as to the transform).

    Args:
        size: the side of the square output.
        scale: the range of the crop's area, as a fraction of the image's.
        ratio: the range of the crop's aspect ratio (width / height).
    """

    def __init__(self, size: int, scale: Sequence[float] = (0.08, 1.0), ratio: Sequence[float] = (3 / 4, 4 / 3)) -> None:
        if not isinstance(size, int) or isinstance(size, bool) or size < 1:
            raise ValueError(f"`size` must be a positive int, got {size!r}.")
        if not (0 < scale[0] <= scale[1]) or not (0 < ratio[0] <= ratio[1]):
            raise ValueError(f"`scale` and `ratio` must be increasing positive ranges, got {scale!r} and {ratio!r}.")
        self.size = size
        self.scale = tuple(scale)
        self.ratio = tuple(ratio)

    def params(self, height: int, width: int) -> tuple[int, int, int, int]:
        """``(top, left, crop_height, crop_width)``, drawn by torchvision's ``RandomResizedCrop.get_params``."""
        image = torch.empty((1, 1, 1)).expand(1, height, width)  # only its size is read
        return RandomResizedCrop.get_params(image, self.scale, self.ratio)

    def dct_scale(self, crop_height: int, crop_width: int) -> int:
        """The largest of 8, 4, 2 at which the crop still covers the output (else 1)."""
        for scale in _SCALES:
            if min(crop_height, crop_width) // scale >= self.size:
                return scale
        return 1

    def jpeg(self, data) -> torch.Tensor | None:
        """The output (CHW uint8) for a JPEG that libjpeg decodes as Pillow does, or None (the caller decodes it whole)."""
        if not fast_decoder_agrees():
            return None
        decoder = region_decoder()
        try:
            if decoder is not None:
                data = bytes(data)
                height, width, decodable = decoder.header(data)
            else:
                height, width, colorspace, _ = simplejpeg.decode_jpeg_header(data)
                decodable = colorspace in ("YCbCr", "Gray")
        except ValueError:
            return None
        if not decodable:
            return None
        check_pixel_limit(width, height)  # from the header, before a single pixel is decoded
        top, left, crop_height, crop_width = self.params(height, width)
        scale = self.dct_scale(crop_height, crop_width)
        # The crop in the scaled image's pixels.
        top, left = top // scale, left // scale
        crop_height, crop_width = max(1, crop_height // scale), max(1, crop_width // scale)
        try:
            if decoder is not None:
                pixels = decoder.decode(data, scale, top, left, crop_height, crop_width)
            else:
                min_height, min_width = math.ceil(height / scale), math.ceil(width / scale)
                whole = simplejpeg.decode_jpeg(data, colorspace="RGB", min_height=min_height, min_width=min_width)
                pixels = whole[top : top + crop_height, left : left + crop_width]
        except ValueError:  # an error, or a warning (strict mode): Pillow decodes those
            return None
        return resize_square(pixels, self.size)

    def decoded(self, pixels: np.ndarray) -> torch.Tensor:
        """The output (CHW uint8) for an image already decoded whole (HWC uint8)."""
        top, left, crop_height, crop_width = self.params(pixels.shape[0], pixels.shape[1])
        return resize_square(pixels[top : top + crop_height, left : left + crop_width], self.size)

    def __repr__(self) -> str:
        return f"RandomResizedCropDecode(size={self.size}, scale={self.scale}, ratio={tuple(round(r, 4) for r in self.ratio)})"
