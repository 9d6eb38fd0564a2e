"""Turn one source file into the bytes a store keeps, checking that it decodes; runs in converter workers."""

from __future__ import annotations

import contextlib
import io
import zlib
from dataclasses import dataclass, field
from typing import Iterator, Optional

import lz4.block
import numpy as np
from PIL import Image, ImageFile

__all__ = ["IngestOptions", "Ingested", "ingest_file", "ingest_files", "sniff_encoding"]

STORAGE_MODES = ("encoded", "reencode", "raw")
RAW_COMPRESSIONS = ("lz4", "none")


@dataclass(frozen=True)
class IngestOptions:
    """How the converter stores each file.

    Attributes:
        storage: ``"encoded"`` keeps the file's bytes untouched; ``"reencode"`` decodes, caps
            the short side at ``short_side`` and saves JPEG at ``quality``; ``"raw"`` stores the
            decoded RGB pixels (``uint8`` HWC), compressed with ``raw_compression``.
        check: fully decode every file as ImageFolder's loader would, and leave out those that fail.
        short_side: cap on the short side for ``"reencode"`` and ``"raw"`` (images are never enlarged).
        quality: JPEG quality for ``"reencode"``.
        raw_compression: ``"lz4"`` (block format, no size prefix) or ``"none"``.
        load_truncated_images: Pillow's ``ImageFile.LOAD_TRUNCATED_IMAGES`` while checking.
        max_image_pixels: Pillow's ``Image.MAX_IMAGE_PIXELS`` (the decompression-bomb limit) while checking.

    The two Pillow settings default to those of the process that builds the options and are
    applied in every worker process, so the check accepts exactly what ImageFolder would
    accept in the process that converts.
    """

    storage: str = "encoded"
    check: bool = True
    short_side: Optional[int] = None
    quality: int = 90
    raw_compression: str = "lz4"
    load_truncated_images: bool = field(default_factory=lambda: bool(ImageFile.LOAD_TRUNCATED_IMAGES))
    max_image_pixels: Optional[int] = field(default_factory=lambda: Image.MAX_IMAGE_PIXELS)


@dataclass
class Ingested:
    """What became of one file: its stored bytes and index fields, or why it was left out."""

    data: bytes = b""
    encoding: str = ""
    height: int = 0
    width: int = 0
    channels: int = 0
    crc32: int = 0
    error_type: str = ""
    error: str = ""

    @property
    def ok(self) -> bool:
        return not self.error_type


_MAGIC = ((b"\xff\xd8\xff", "jpeg"), (b"\x89PNG\r\n\x1a\n", "png"), (b"GIF8", "gif"), (b"BM", "bmp"))


def sniff_encoding(data: bytes) -> str:
    """The image format from the content (never the file name): ``"jpeg"``, ``"png"``, ..., or ``"unknown"``."""
    for magic, name in _MAGIC:
        if data.startswith(magic):
            return name
    if data[:4] == b"RIFF" and data[8:12] == b"WEBP":
        return "webp"
    try:
        with Image.open(io.BytesIO(data)) as image:
            return (image.format or "unknown").lower()
    except Exception:
        return "unknown"


def decode_like_imagefolder(data: bytes) -> Image.Image:
    """Decode as ``torchvision.datasets.folder.pil_loader`` does: Pillow, every pixel, then RGB."""
    with Image.open(io.BytesIO(data)) as image:
        return image.convert("RGB")


def _cap_short_side(image: Image.Image, short_side: Optional[int]) -> Image.Image:
    if short_side is None or min(image.size) <= short_side:
        return image
    width, height = image.size
    scale = short_side / min(width, height)
    size = (max(1, round(width * scale)), max(1, round(height * scale)))
    return image.resize(size, Image.Resampling.BILINEAR)


@contextlib.contextmanager
def _pillow_settings(options: IngestOptions) -> Iterator[None]:
    # Worker processes start with Pillow's defaults, not the settings of the process that converts.
    saved = ImageFile.LOAD_TRUNCATED_IMAGES, Image.MAX_IMAGE_PIXELS
    ImageFile.LOAD_TRUNCATED_IMAGES, Image.MAX_IMAGE_PIXELS = options.load_truncated_images, options.max_image_pixels
    try:
        yield
    finally:
        ImageFile.LOAD_TRUNCATED_IMAGES, Image.MAX_IMAGE_PIXELS = saved


def ingest_file(path: str, options: IngestOptions) -> Ingested:
    """Read one file and return its stored form; read and decode failures are returned, never raised."""
    try:
        with open(path, "rb") as f:
            data = f.read()
        with _pillow_settings(options):
            return _ingest_bytes(data, options)
    except Exception as exc:  # any decode failure only costs this one sample
        return Ingested(error_type=type(exc).__name__, error=str(exc) or repr(exc))


def _ingest_bytes(data: bytes, options: IngestOptions) -> Ingested:
    if not data:
        raise ValueError("empty file")
    if options.storage == "encoded":
        encoding = sniff_encoding(data)
        height = width = channels = 0
        if options.check:
            image = decode_like_imagefolder(data)
            width, height = image.size
            channels = 3
        return Ingested(data, encoding, height, width, channels, zlib.crc32(data))
    image = _cap_short_side(decode_like_imagefolder(data), options.short_side)
    width, height = image.size
    if options.storage == "reencode":
        out = io.BytesIO()
        image.save(out, format="JPEG", quality=options.quality)
        stored = out.getvalue()
        return Ingested(stored, "jpeg", height, width, 3, zlib.crc32(stored))
    pixels = np.asarray(image, dtype=np.uint8).tobytes()
    stored = lz4.block.compress(pixels, store_size=False) if options.raw_compression == "lz4" else pixels
    return Ingested(stored, "raw", height, width, 3, zlib.crc32(stored))


def ingest_files(paths: list[str], options: IngestOptions) -> list[Ingested]:
    """:func:`ingest_file` over a chunk of files (one task for a converter worker)."""
    return [ingest_file(path, options) for path in paths]
