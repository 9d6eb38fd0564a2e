"""Stored bytes to RGB pixels, with ImageFolder's pixels on every path.

The contract: for every file that torchvision's ``pil_loader`` opens, each function here
returns exactly its pixels (``size`` aside, which asks for libjpeg's scaled decode). simplejpeg
(libjpeg-turbo, without Pillow's per-image overhead) decodes a JPEG only where it is known
to agree with Pillow; it is an optimisation, never a change of result. Everything it refuses
goes through Pillow, here and nowhere else:

- colour spaces that Pillow converts itself (CMYK, YCCK, RGB-coded JPEGs);
- any JPEG that libjpeg warns about (stray bytes before a marker, junk in the scan): simplejpeg
  turns the warning into an error, Pillow decodes through it, as ImageFolder does;
- every JPEG, if this process's simplejpeg and Pillow do not decode a set of reference JPEGs
  identically (another libjpeg-turbo build, say): :func:`fast_decoder_agrees`;
- samples the converter marked ``decoder="pillow"`` (it found one of the above once, so reads
  skip the failing fast attempt).

No torch here: the converter's worker processes import this module and start faster without it.
"""

from __future__ import annotations

import functools
import io
import logging
import math
import warnings
from typing import Optional, Tuple, Union

import lz4.block
import numpy as np
import simplejpeg
from PIL import Image

__all__ = [
    "DecodeSize",
    "FAST_DECODER",
    "PILLOW_DECODER",
    "bytes_loader",
    "check_pixel_limit",
    "decode_array",
    "decode_pil",
    "fast_decoder_agrees",
    "fast_jpeg",
    "jpeg_scale",
    "pillow_rgb",
    "raw_pixels",
    "raw_rgb",
]

logger = logging.getLogger("torchpack")

#: A short side (int) or a ``(height, width)`` that a scaled JPEG decode must still cover.
DecodeSize = Union[int, Tuple[int, int], None]

#: The index's ``decoder`` values: checked to decode cleanly with simplejpeg, or only with Pillow.
FAST_DECODER = "simplejpeg"
PILLOW_DECODER = "pillow"

# libjpeg-turbo converts these colour spaces to RGB exactly as Pillow does; CMYK, YCCK and RGB-coded
# JPEGs Pillow converts with its own code.
_FAST_COLORSPACES = ("YCbCr", "Gray")


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


def check_pixel_limit(width: int, height: int) -> None:
    """Pillow's decompression-bomb check, as ``Image.open`` makes it, for images decoded without Pillow.

    Reads ``PIL.Image.MAX_IMAGE_PIXELS`` at call time (users set it, and rely on it as a security
    limit): over the limit, a ``DecompressionBombWarning``; over twice the limit, a
    ``DecompressionBombError``. Same thresholds and messages as Pillow.
    """
    limit = Image.MAX_IMAGE_PIXELS
    if limit is None:
        return
    pixels = max(1, width) * max(1, height)
    if pixels > 2 * limit:
        raise Image.DecompressionBombError(
            f"Image size ({pixels} pixels) exceeds limit of {2 * limit} pixels, could be decompression bomb DOS attack."
        )
    if pixels > limit:
        warnings.warn(
            f"Image size ({pixels} pixels) exceeds limit of {limit} pixels, could be decompression bomb DOS attack.",
            Image.DecompressionBombWarning,
        )


def _simplejpeg_rgb(data, size: DecodeSize, limit_pixels: bool = True) -> Optional[np.ndarray]:
    try:
        height, width, colorspace, _ = simplejpeg.decode_jpeg_header(data)
    except ValueError:
        return None
    if colorspace not in _FAST_COLORSPACES:
        return None
    if limit_pixels:
        check_pixel_limit(width, height)  # from the header, before a single pixel is decoded
    try:
        scale = jpeg_scale(height, width, size)
        if scale == 1:
            return simplejpeg.decode_jpeg(data, colorspace="RGB")
        return simplejpeg.decode_jpeg(
            data, colorspace="RGB", min_height=math.ceil(height / scale), min_width=math.ceil(width / scale)
        )
    except ValueError:  # an error, or a warning that strict mode made one
        return None


def fast_jpeg(data, size: DecodeSize = None) -> Optional[np.ndarray]:
    """A JPEG's RGB pixels through simplejpeg, or None where only Pillow gives ImageFolder's pixels."""
    if not fast_decoder_agrees():
        return None
    return _simplejpeg_rgb(data, size)


def pillow_rgb(data, size: DecodeSize = None) -> Image.Image:
    """Decode as ``torchvision.datasets.folder.pil_loader`` does (``size``: libjpeg's scaled decode)."""
    with Image.open(io.BytesIO(data)) as image:
        if size is not None and image.format in ("JPEG", "MPO"):
            scale = jpeg_scale(image.height, image.width, size)
            if scale > 1:
                # Pillow picks the largest scale whose result is at least the size asked for:
                # floor sizes make that exactly ``scale``, as simplejpeg's min_height/min_width do.
                image.draft("RGB", (max(1, image.width // scale), max(1, image.height // scale)))
        return image.convert("RGB")


@functools.lru_cache(maxsize=1)
def fast_decoder_agrees() -> bool:
    """Whether simplejpeg decodes reference JPEGs of every chroma layout exactly as Pillow does, here.

    Both use libjpeg-turbo's integer IDCT and fancy upsampling, but each wheel bundles its own
    build; this proves they agree in this process (once, a few milliseconds) before any
    sample relies on it.
    """
    y, x = np.mgrid[0:37, 0:53]
    rgb = np.stack([x * 4, y * 6, (x * y) % 256], -1).astype(np.uint8)
    rgb = (rgb + np.random.default_rng(0).integers(0, 40, rgb.shape, dtype=np.uint8)).astype(np.uint8)
    references = []
    for options in ({"subsampling": 0}, {"subsampling": 1}, {"subsampling": 2}, {"progressive": True}):
        out = io.BytesIO()
        Image.fromarray(rgb).save(out, format="JPEG", quality=90, **options)
        references.append(out.getvalue())
    out = io.BytesIO()
    Image.fromarray(rgb[..., 0]).save(out, format="JPEG", quality=90)
    references.append(out.getvalue())
    references += [simplejpeg.encode_jpeg(rgb, 90, colorsubsampling=layout) for layout in ("440", "411")]
    for data in references:
        fast = _simplejpeg_rgb(data, None, limit_pixels=False)
        try:
            agree = fast is not None and np.array_equal(fast, np.asarray(pillow_rgb(data)))
        except Exception:  # Pillow refusing even these (a tiny MAX_IMAGE_PIXELS, say): trust it alone
            agree = False
        if not agree:
            logger.warning(
                "torchpack: simplejpeg %s and Pillow %s decode JPEGs differently here; every JPEG goes "
                "through Pillow (slower, still ImageFolder's pixels).",
                simplejpeg.__version__,
                Image.__version__,
            )
            return False
    return True


def raw_pixels(data, height: int, width: int, channels: int, compression: Optional[str]) -> np.ndarray:
    """A raw sample's stored pixels as HWC uint8, with 1 or 3 channels (a view of ``data`` when uncompressed)."""
    check_pixel_limit(width, height)
    nbytes = height * width * channels
    if compression == "lz4":
        data = lz4.block.decompress(data, uncompressed_size=nbytes, return_bytearray=True)  # writable: no copy later
    pixels = np.frombuffer(data, dtype=np.uint8)
    if channels not in (1, 3):
        raise ValueError(f"raw sample has {channels} channels in the index; torchpack stores 1 or 3")
    if pixels.size != nbytes:
        raise ValueError(f"raw sample holds {pixels.size} bytes, expected {height}x{width}x{channels}")
    return pixels.reshape(height, width, channels)


def raw_rgb(data, shape: Tuple[int, int, int], compression: Optional[str], channels_first: bool = False) -> np.ndarray:
    """A raw sample as a new RGB array, HWC (or CHW): a grayscale sample's one stored channel, repeated."""
    pixels = raw_pixels(data, *shape, compression)
    height, width, _ = shape
    if channels_first:
        out = np.empty((3, height, width), dtype=np.uint8)
        out[...] = pixels.transpose(2, 0, 1)  # one copy, broadcasting a single channel
    else:
        out = np.empty((height, width, 3), dtype=np.uint8)
        if pixels.shape[2] == 1:
            # Broadcast into the last axis numpy copies a byte at a time: three strided copies
            # are 10x faster (300 µs, not 3 ms, for a 640x427 photo).
            for channel in range(3):
                out[..., channel] = pixels[..., 0]
        else:
            out[...] = pixels
    return out


def decode_pil(
    data,
    encoding: str,
    size: DecodeSize = None,
    shape: Tuple[int, int, int] = (0, 0, 0),
    compression: Optional[str] = None,
    decoder: str = "",
) -> Image.Image:
    """A PIL RGB image, pixel-identical to ImageFolder's loader when ``size`` is None.

    ``decoder`` is the index's hint: ``"pillow"`` skips the fast decoder for a JPEG it refused
    at conversion.
    """
    if encoding == "raw":
        return Image.fromarray(raw_rgb(data, shape, compression))
    if encoding == "jpeg" and decoder != PILLOW_DECODER:
        pixels = fast_jpeg(data, size)
        if pixels is not None:
            # Shares the decoded array instead of copying it, as Image.fromarray would.
            return Image.frombuffer("RGB", (pixels.shape[1], pixels.shape[0]), pixels, "raw", "RGB", 0, 1)
    return pillow_rgb(data, size)


def decode_array(
    data,
    encoding: str,
    size: DecodeSize = None,
    shape: Tuple[int, int, int] = (0, 0, 0),
    compression: Optional[str] = None,
    decoder: str = "",
) -> np.ndarray:
    """The same pixels as :func:`decode_pil`, as a ``uint8`` HWC array; fast JPEGs and raw samples skip PIL."""
    if encoding == "raw":
        return raw_rgb(data, shape, compression)
    if encoding == "jpeg" and decoder != PILLOW_DECODER:
        pixels = fast_jpeg(data, size)
        if pixels is not None:
            return pixels
    return np.asarray(pillow_rgb(data, size))


def bytes_loader(file) -> Image.Image:
    """A ``loader`` that takes an open binary file of image bytes and returns a PIL RGB image.

    Gives the same pixels as ``torchvision.datasets.folder.pil_loader`` (through simplejpeg
    where that agrees, which is faster). The datasets treat it, ``pil_loader`` and
    ``default_loader`` alike: as their built-in decode.
    """
    data = file.read()
    return decode_pil(data, "jpeg" if data[:3] == b"\xff\xd8\xff" else "")
