"""Stored bytes to PIL image, numpy array or tensor: simplejpeg for JPEG where it gives Pillow's pixels, Pillow otherwise."""

from __future__ import annotations

import io
import math
from typing import BinaryIO, Callable, Optional, Tuple, Union

import lz4.block
import numpy as np
import simplejpeg
import torch
from PIL import Image

__all__ = ["DecodeSize", "bytes_loader", "decode_array", "decode_pil", "from_tensor_decoder", "jpeg_scale"]

#: A short side (int) or a ``(height, width)`` that a scaled JPEG decode must still cover.
DecodeSize = Union[int, Tuple[int, int], None]

# libjpeg-turbo converts these colour spaces to RGB exactly as Pillow does; CMYK/YCCK it does not.
_SIMPLEJPEG_COLORSPACES = ("YCbCr", "Gray")


def jpeg_scale(height: int, width: int, size: DecodeSize) -> int:
    """The largest of 8, 4, 2 (else 1) such that the image decoded at 1/scale still covers ``size``."""
    if size is None:
        return 1
    for scale in (8, 4, 2):
        h, w = math.ceil(height / scale), math.ceil(width / scale)
        if isinstance(size, int):
            if min(h, w) >= size:
                return scale
        elif h >= size[0] and w >= size[1]:
            return scale
    return 1


def _simplejpeg_rgb(data, size: DecodeSize) -> Optional[np.ndarray]:
    """RGB pixels through simplejpeg, or None where Pillow must decode (CMYK, or a header it rejects)."""
    try:
        height, width, colorspace, _ = simplejpeg.decode_jpeg_header(data)
    except ValueError:
        return None
    if colorspace not in _SIMPLEJPEG_COLORSPACES:
        return None
    scale = jpeg_scale(height, width, size)
    if scale == 1:
        return simplejpeg.decode_jpeg(data, colorspace="RGB")
    return simplejpeg.decode_jpeg(
        data, colorspace="RGB", min_height=math.ceil(height / scale), min_width=math.ceil(width / scale)
    )


def _pillow_rgb(data, size: DecodeSize) -> Image.Image:
    with Image.open(io.BytesIO(data)) as image:
        if size is not None and image.format == "JPEG":
            scale = jpeg_scale(image.height, image.width, size)
            if scale > 1:
                image.draft("RGB", (math.ceil(image.width / scale), math.ceil(image.height / scale)))
        return image.convert("RGB")


def _raw_array(data, height: int, width: int, channels: int, compression: Optional[str]) -> np.ndarray:
    nbytes = height * width * channels
    if compression == "lz4":
        data = lz4.block.decompress(data, uncompressed_size=nbytes, return_bytearray=True)  # writable: no copy later
    pixels = np.frombuffer(data, dtype=np.uint8)
    if pixels.size != nbytes:
        raise ValueError(f"raw sample holds {pixels.size} bytes, expected {height}x{width}x{channels}")
    return pixels.reshape(height, width, channels)


def decode_pil(
    data,
    encoding: str,
    size: DecodeSize = None,
    shape: Tuple[int, int, int] = (0, 0, 0),
    compression: Optional[str] = None,
) -> Image.Image:
    """A PIL RGB image, pixel-identical to ImageFolder's loader when ``size`` is None."""
    if encoding == "raw":
        return Image.fromarray(_raw_array(data, *shape, compression))
    if encoding == "jpeg":
        pixels = _simplejpeg_rgb(data, size)
        if pixels is not None:
            # Shares the decoded array instead of copying it, as Image.fromarray would.
            return Image.frombuffer("RGB", (pixels.shape[1], pixels.shape[0]), pixels, "raw", "RGB", 0, 1)
    return _pillow_rgb(data, size)


def decode_array(
    data,
    encoding: str,
    size: DecodeSize = None,
    shape: Tuple[int, int, int] = (0, 0, 0),
    compression: Optional[str] = None,
) -> np.ndarray:
    """RGB pixels as a ``uint8`` HWC array; JPEG (YCbCr or gray) and raw samples never touch Pillow."""
    if encoding == "raw":
        return _raw_array(data, *shape, compression)
    if encoding == "jpeg":
        pixels = _simplejpeg_rgb(data, size)
        if pixels is not None:
            return pixels
    return np.asarray(_pillow_rgb(data, size))


def array_to_tensor(pixels: np.ndarray) -> torch.Tensor:
    """HWC uint8 array to a CHW uint8 tensor (a view, no copy)."""
    if not pixels.flags.writeable:
        pixels = pixels.copy()  # torch warns on read-only memory, and the sample must outlive the read buffer
    return torch.from_numpy(pixels).permute(2, 0, 1)


def bytes_loader(file: BinaryIO) -> Image.Image:
    """The default ``loader``: an open binary file of image bytes to a PIL RGB image.

    Gives the same pixels as ``torchvision.datasets.folder.pil_loader`` (through simplejpeg
    for ordinary JPEGs, which is faster). A custom ``loader`` gets the same argument: a
    binary file object holding one sample's stored bytes.
    """
    data = file.read()
    encoding = "jpeg" if data[:3] == b"\xff\xd8\xff" else ""
    return decode_pil(data, encoding)


class from_tensor_decoder:  # noqa: N801 - used like a function
    """Wrap a decoder that takes a ``uint8`` tensor of encoded bytes as a dataset ``loader``.

    Example::

        from torchvision.io import decode_image, ImageReadMode
        ds = LMDBImageFolder("train.lmdb", loader=from_tensor_decoder(decode_image, mode=ImageReadMode.RGB))

    Picklable (for spawn and forkserver workers) as long as ``decoder`` is a module-level function.
    """

    def __init__(self, decoder: Callable[..., torch.Tensor], **kwargs) -> None:
        self.decoder = decoder
        self.kwargs = kwargs

    def __call__(self, file: BinaryIO) -> torch.Tensor:
        data = torch.frombuffer(bytearray(file.read()), dtype=torch.uint8)
        return self.decoder(data, **self.kwargs)

    def __repr__(self) -> str:
        return f"from_tensor_decoder({getattr(self.decoder, '__name__', self.decoder)!r})"
