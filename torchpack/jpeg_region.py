"""Decode a region of a JPEG, at a DCT scale, through libjpeg-turbo's TurboJPEG 3 API (ctypes; optional).

simplejpeg decodes whole images. For a random crop, libjpeg-turbo can decode only the rows down
to the crop's bottom and only the columns of the crop (``tj3SetCroppingRegion``), at 1/2, 1/4
or 1/8 scale (``tj3SetScalingFactor``). The library comes from, in order: the file named by
``$TORCHPACK_TURBOJPEG``; the ``libturbojpeg`` that the ``turbojpeg`` wheel bundles
(``pip install "torchpack[crop]"``, no system package); the system's ``libturbojpeg`` if it is
version 3 or newer. Without one, :func:`region_decoder` is None and callers decode whole images.

The TurboJPEG API reports errors as return codes (no ``longjmp`` through Python), and its
handles are per thread here, so ctypes releases the GIL around each decode.
"""

from __future__ import annotations

import ctypes
import ctypes.util
import functools
import glob
import os
import sys
import threading
from typing import Callable

import numpy as np

__all__ = ["RegionDecoder", "region_decoder"]

_INIT_DECOMPRESS = 1
_PARAM_STOP_ON_WARNING, _PARAM_SUBSAMP, _PARAM_WIDTH, _PARAM_HEIGHT, _PARAM_COLORSPACE = 0, 4, 5, 6, 8
_PIXEL_RGB = 0
_MCU_WIDTH = (8, 16, 16, 8, 8, 32, 8)  # by TJSAMP: 444, 422, 420, gray, 440, 411, 441
_YCBCR, _GRAY = 1, 2


class _ScalingFactor(ctypes.Structure):
    _fields_ = [("num", ctypes.c_int), ("denom", ctypes.c_int)]


class _Region(ctypes.Structure):
    _fields_ = [("x", ctypes.c_int), ("y", ctypes.c_int), ("w", ctypes.c_int), ("h", ctypes.c_int)]


def _candidates() -> list[str]:
    found = []
    if os.environ.get("TORCHPACK_TURBOJPEG"):
        found.append(os.environ["TORCHPACK_TURBOJPEG"])
    for folder in sys.path:
        found += sorted(glob.glob(os.path.join(folder or ".", "turbojpeg.libs", "libturbojpeg*.so*")))
    system = ctypes.util.find_library("turbojpeg")
    if system:
        found.append(system)
    return found


def _bind(lib: ctypes.CDLL) -> ctypes.CDLL:
    handle, buffer, size = ctypes.c_void_p, ctypes.c_char_p, ctypes.c_size_t
    lib.tj3Init.restype, lib.tj3Init.argtypes = handle, [ctypes.c_int]
    lib.tj3Destroy.argtypes = [handle]
    lib.tj3Set.argtypes = [handle, ctypes.c_int, ctypes.c_int]
    lib.tj3Get.argtypes = [handle, ctypes.c_int]
    lib.tj3DecompressHeader.argtypes = [handle, buffer, size]
    lib.tj3SetScalingFactor.argtypes = [handle, _ScalingFactor]
    lib.tj3SetCroppingRegion.argtypes = [handle, _Region]
    lib.tj3Decompress8.argtypes = [handle, buffer, size, ctypes.c_void_p, ctypes.c_int, ctypes.c_int]
    lib.tj3GetErrorStr.restype, lib.tj3GetErrorStr.argtypes = ctypes.c_char_p, [handle]
    return lib


@functools.lru_cache(maxsize=1)
def _library() -> ctypes.CDLL | None:
    for path in _candidates():
        try:
            lib = ctypes.CDLL(path)
        except OSError:
            continue
        if hasattr(lib, "tj3Init") and hasattr(lib, "tj3SetCroppingRegion"):
            return _bind(lib)
    return None


class _Handle:
    """One decompressor handle (a thread's own: TurboJPEG handles are not thread-safe)."""

    def __init__(self, lib: ctypes.CDLL) -> None:
        self.lib = lib
        self.pointer = lib.tj3Init(_INIT_DECOMPRESS)
        if not self.pointer:
            raise MemoryError("tj3Init failed")
        lib.tj3Set(self.pointer, _PARAM_STOP_ON_WARNING, 1)  # as simplejpeg's strict mode: Pillow decodes those

    def __del__(self) -> None:
        if getattr(self, "pointer", None):
            self.lib.tj3Destroy(self.pointer)

    def check(self, status: int) -> None:
        if status != 0:
            raise ValueError(self.lib.tj3GetErrorStr(self.pointer).decode(errors="replace"))


class RegionDecoder:
    """Decodes the pixels of a region of a YCbCr or grayscale JPEG, at 1/``scale`` size, as RGB."""

    def __init__(self, lib: ctypes.CDLL) -> None:
        self._lib = lib
        self._local = threading.local()

    def _handle(self) -> _Handle:
        handle = getattr(self._local, "handle", None)
        if handle is None:
            handle = self._local.handle = _Handle(self._lib)
        return handle

    def header(self, data: bytes) -> tuple[int, int, bool]:
        """``(height, width, decodable)`` of a JPEG; ``decodable``: YCbCr or grayscale, whose pixels
        libjpeg converts to RGB exactly as Pillow does (others go to Pillow).

        Raises:
            ValueError: not a JPEG header libjpeg-turbo reads.
        """
        handle = self._handle()
        handle.check(self._lib.tj3DecompressHeader(handle.pointer, data, len(data)))
        get = self._lib.tj3Get
        colorspace = get(handle.pointer, _PARAM_COLORSPACE)
        return get(handle.pointer, _PARAM_HEIGHT), get(handle.pointer, _PARAM_WIDTH), colorspace in (_YCBCR, _GRAY)

    def decode(self, data: bytes, scale: int, top: int, left: int, height: int, width: int) -> np.ndarray:
        """Rows ``top:top+height`` and columns ``left:left+width`` of the image decoded at 1/``scale`` size.

        The same pixels as a whole-image decode at that scale, cut afterwards: the region is
        widened by one iMCU on each side (fancy upsampling reads its neighbours) and cut back.

        Raises:
            ValueError: libjpeg-turbo refused the data, or warned about it.
        """
        return self.decode_planned(data, lambda image_height, image_width: (scale, top, left, height, width))

    def decode_planned(self, data: bytes, plan: Callable[[int, int], tuple[int, int, int, int, int]]) -> np.ndarray | None:
        """The region ``plan(height, width)`` picks, as ``(scale, top, left, height, width)``, from the
        image's size in the header (read once); None if the JPEG is not YCbCr or grayscale.

        Raises:
            ValueError: libjpeg-turbo refused the data, or warned about it.
        """
        handle, lib = self._handle(), self._lib
        handle.check(lib.tj3DecompressHeader(handle.pointer, data, len(data)))
        if lib.tj3Get(handle.pointer, _PARAM_COLORSPACE) not in (_YCBCR, _GRAY):
            return None
        image_width = lib.tj3Get(handle.pointer, _PARAM_WIDTH)
        scale, top, left, height, width = plan(lib.tj3Get(handle.pointer, _PARAM_HEIGHT), image_width)
        subsampling = lib.tj3Get(handle.pointer, _PARAM_SUBSAMP)
        handle.check(lib.tj3SetScalingFactor(handle.pointer, _ScalingFactor(1, scale)))
        scaled_width = -(-image_width // scale)
        mcu = -(-_MCU_WIDTH[subsampling] // scale) if 0 <= subsampling < len(_MCU_WIDTH) else 8
        x0 = max(0, (left // mcu - 1) * mcu)
        x1 = min(scaled_width, left + width + mcu)
        region = _Region(x0, top, x1 - x0, height)
        handle.check(lib.tj3SetCroppingRegion(handle.pointer, region))
        out = np.empty((height, region.w, 3), dtype=np.uint8)
        handle.check(lib.tj3Decompress8(handle.pointer, data, len(data), out.ctypes.data, region.w * 3, _PIXEL_RGB))
        return out[:, left - x0 : left - x0 + width]


@functools.lru_cache(maxsize=1)
def region_decoder() -> RegionDecoder | None:
    """This process's region decoder, or None when no libjpeg-turbo 3 library is found."""
    lib = _library()
    return None if lib is None else RegionDecoder(lib)
