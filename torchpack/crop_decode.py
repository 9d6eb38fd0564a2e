"""``RandomResizedCrop`` fused with the decode: only the crop is decoded, at the smallest DCT scale that covers the output.

For ``RandomResizedCrop`` the crop is known before decoding: it needs only the image's size,
which the JPEG header gives. The crop's position and size are drawn as torchvision's
``RandomResizedCrop.get_params`` draws them (the same algorithm and distribution, from torch's
random generator, in one call instead of six). Then a JPEG is decoded:

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

from torchpack.decode import check_pixel_limit, fast_decoder_agrees
from torchpack.jpeg_region import region_decoder

__all__ = ["RandomResizedCropDecode", "resize_square"]

_SCALES = (8, 4, 2)


def resize_square(pixels: np.ndarray, size: int) -> torch.Tensor:
    """HWC uint8 pixels resized to ``size`` x ``size`` (antialiased bilinear): a CHW tensor, channels-last in memory."""
    pixels = np.ascontiguousarray(pixels)
    if not pixels.flags.writeable:  # Pillow's arrays are read-only, and torch warns on those
        pixels = pixels.copy()
    batch = torch.from_numpy(pixels).permute(2, 0, 1).unsqueeze(0)
    batch = batch.contiguous(memory_format=torch.channels_last)  # torch's vectorised uint8 path
    return torch.nn.functional.interpolate(batch, size=(size, size), mode="bilinear", antialias=True, align_corners=False)[0]


class RandomResizedCropDecode:
    """A random crop of the image, resized to ``size`` x ``size``, decoded from the crop alone.

    Pass it to a store dataset as ``decode_crop``; follow it with the rest of the training
    transforms (a flip, say)::

        train = torchpack.LMDBImageFolder("train.lmdb", decode="tensor",
            decode_crop=torchpack.RandomResizedCropDecode(224), transform=v2.RandomHorizontalFlip())

    The crop's distribution is ``torchvision.transforms.RandomResizedCrop(size, scale, ratio)``'s
    (its ``get_params`` algorithm), drawn from torch's random generator, so ``torch.manual_seed``
    and the DataLoader's per-worker seeds apply as to the transform.

    Args:
        size: the side of the square output.
        scale: the range of the crop's area, as a fraction of the image's.
        ratio: the range of the crop's aspect ratio (width / height).
        flip: also flip the output horizontally with probability 1/2, as ``RandomHorizontalFlip()``
            after the crop would.
    """

    def __init__(
        self, size: int, scale: Sequence[float] = (0.08, 1.0), ratio: Sequence[float] = (3 / 4, 4 / 3), flip: bool = False
    ) -> None:
        if not isinstance(size, int) or isinstance(size, bool) or size < 1:
            raise ValueError(f"`size` must be a positive int, got {size!r}.")
        if not (0 < scale[0] <= scale[1]) or not (0 < ratio[0] <= ratio[1]):
            raise ValueError(f"`scale` and `ratio` must be increasing positive ranges, got {scale!r} and {ratio!r}.")
        self.size = size
        self.scale = tuple(scale)
        self.ratio = tuple(ratio)
        self.flip = flip
        self._log_ratio = (math.log(ratio[0]), math.log(ratio[1]))

    def params(self, height: int, width: int) -> tuple[int, int, int, int]:
        """``(top, left, crop_height, crop_width)``, drawn as ``RandomResizedCrop.get_params`` draws them.

        Ten tries at a random area and aspect ratio whose crop fits in the image, at a random
        place; else the central crop of the image clamped to the ratio range.
        """
        area = height * width
        draws = torch.rand(40).tolist()  # enough for every try: one call, not six per try
        (low, high), (low_ratio, high_ratio) = self.scale, self._log_ratio
        for attempt in range(10):
            u_area, u_ratio, u_top, u_left = draws[4 * attempt : 4 * attempt + 4]
            target_area = area * (low + (high - low) * u_area)
            aspect = math.exp(low_ratio + (high_ratio - low_ratio) * u_ratio)
            w = int(round(math.sqrt(target_area * aspect)))
            h = int(round(math.sqrt(target_area / aspect)))
            if 0 < w <= width and 0 < h <= height:
                return int(u_top * (height - h + 1)), int(u_left * (width - w + 1)), h, w
        in_ratio = width / height
        if in_ratio < self.ratio[0]:
            w, h = width, int(round(width / self.ratio[0]))
        elif in_ratio > self.ratio[1]:
            h, w = height, int(round(height * self.ratio[1]))
        else:
            h, w = height, width
        return (height - h) // 2, (width - w) // 2, h, w

    def _finish(self, pixels: np.ndarray) -> torch.Tensor:
        resized = resize_square(pixels, self.size)
        # The flip after the resize, as RandomHorizontalFlip after RandomResizedCrop: a mirrored numpy
        # view costs a byte-by-byte copy (160 us for a 200x171 crop), the resized tensor's flip 7 us.
        if self.flip and torch.rand(1).item() < 0.5:
            return resized.flip(-1)
        return resized

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
                pixels = decoder.decode_planned(bytes(data), self._plan)
            else:
                pixels = self._whole_then_cut(data)
        except ValueError:  # an error, or a warning (strict mode): Pillow decodes those
            return None
        return None if pixels is None else self._finish(pixels)

    def _plan(self, height: int, width: int) -> tuple[int, int, int, int, int]:
        """``(scale, top, left, crop_height, crop_width)`` of a random crop, in the pixels of the image decoded at 1/scale."""
        check_pixel_limit(width, height)  # from the header, before a single pixel is decoded
        top, left, crop_height, crop_width = self.params(height, width)
        scale = self.dct_scale(crop_height, crop_width)
        return scale, top // scale, left // scale, max(1, crop_height // scale), max(1, crop_width // scale)

    def _whole_then_cut(self, data) -> np.ndarray | None:
        """Without libturbojpeg: simplejpeg decodes the whole image at the crop's scale."""
        height, width, colorspace, _ = simplejpeg.decode_jpeg_header(data)
        if colorspace not in ("YCbCr", "Gray"):
            return None
        scale, top, left, crop_height, crop_width = self._plan(height, width)
        whole = simplejpeg.decode_jpeg(data, colorspace="RGB", min_height=math.ceil(height / scale), min_width=math.ceil(width / scale))
        return whole[top : top + crop_height, left : left + crop_width]

    def decoded(self, pixels: np.ndarray) -> torch.Tensor:
        """The output (CHW uint8) for an image already decoded whole (HWC uint8)."""
        top, left, crop_height, crop_width = self.params(pixels.shape[0], pixels.shape[1])
        return self._finish(pixels[top : top + crop_height, left : left + crop_width])

    def __repr__(self) -> str:
        ratio = tuple(round(r, 4) for r in self.ratio)
        return f"RandomResizedCropDecode(size={self.size}, scale={self.scale}, ratio={ratio}, flip={self.flip})"
