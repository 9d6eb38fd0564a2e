"""Turn one source file into the bytes a store keeps, checking that it loads; runs in converter workers.

The image check runs the readers' own decode (:mod:`torchpack.decode`): a JPEG that simplejpeg
decodes cleanly is stored as ``decoder="simplejpeg"``; one it refuses is fully decoded by Pillow
as ImageFolder would, and stored as ``decoder="pillow"`` if that works. So a file the check
accepts loads on every read path, and a file ImageFolder cannot load is left out and reported.
"""

from __future__ import annotations

import contextlib
import io
import zlib
from dataclasses import dataclass, field
from typing import Callable, Iterator, Optional, Tuple

import lz4.block
import numpy as np
from PIL import Image, ImageFile

from torchpack.decode import FAST_DECODER, PILLOW_DECODER, fast_decoder_agrees, fast_jpeg, pillow_rgb

__all__ = ["IMAGE_ENCODINGS", "IngestOptions", "Ingested", "ingest_file", "ingest_files", "is_image", "sniff_encoding"]

STORAGE_MODES = ("encoded", "reencode", "raw")
RAW_COMPRESSIONS = ("lz4", "none")


@dataclass(frozen=True)
class IngestOptions:
    """How the converter stores each file.

    Attributes:
        storage: ``"encoded"`` keeps the file's bytes untouched; ``"reencode"`` decodes, caps
            the short side at ``short_side`` and saves JPEG at ``quality``; ``"raw"`` stores the
            decoded pixels (``uint8`` HWC: one channel for grayscale images, else RGB),
            compressed with ``raw_compression``.
        check: decode every image as the readers will, and leave out those ImageFolder could
            not load. An image is a file with one of ``image_extensions``, or whose content
            starts like a JPEG, PNG, GIF, BMP, TIFF or WebP file (a ``.gif`` that an
            ``is_valid_file`` accepts, say).
        check_file: a callable, called with each file's path; files for which it raises are left out.
        image_extensions: which files are images, by torchvision's rule (the lowercased name ends
            with one); None: every file. The converter passes ``IMG_EXTENSIONS`` (workers do not
            import torchvision).
        short_side: cap on the short side for ``"reencode"`` and ``"raw"`` (images are never enlarged).
        long_side: cap on the long side, likewise (FFCV's ``max_resolution``); with both, the tighter one.
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
    check_file: Optional[Callable[[str], object]] = None
    image_extensions: Optional[Tuple[str, ...]] = None
    short_side: Optional[int] = None
    long_side: Optional[int] = None
    quality: int = 90
    raw_compression: str = "lz4"
    load_truncated_images: bool = field(default_factory=lambda: bool(ImageFile.LOAD_TRUNCATED_IMAGES))
    max_image_pixels: Optional[int] = field(default_factory=lambda: Image.MAX_IMAGE_PIXELS)


@dataclass
class Ingested:
    """What became of one file: its stored bytes and index fields, or why it was left out."""

    data: bytes = b""
    encoding: str = ""
    decoder: str = ""
    height: int = 0
    width: int = 0
    channels: int = 0
    crc32: int = 0
    error_type: str = ""
    error: str = ""

    @property
    def ok(self) -> bool:
        """Whether the file passed its check and is to be stored."""
        return not self.error_type


_MAGIC = (
    (b"\xff\xd8\xff", "jpeg"),
    (b"\x89PNG\r\n\x1a\n", "png"),
    (b"GIF87a", "gif"),
    (b"GIF89a", "gif"),
    (b"II*\x00", "tiff"),
    (b"MM\x00*", "tiff"),
    (b"\x93NUMPY", "npy"),
    (b"fLaC", "flac"),
    (b"OggS", "ogg"),
    (b"ID3", "mp3"),
    (b"PK\x03\x04", "zip"),  # also .npz and torch.save's files
    (b"\x1f\x8b", "gzip"),
)
_RIFF = {b"WEBP": "webp", b"WAVE": "wav", b"AVI ": "avi"}
_BMP_INFO_SIZES = (12, 40, 52, 56, 64, 108, 124)  # "BM" alone starts too many text files
IMAGE_ENCODINGS = ("jpeg", "png", "gif", "bmp", "tiff", "webp")


def sniff_encoding(data: bytes) -> str:
    """The content type from the first bytes (never the file name): ``"jpeg"``, ``"png"``, ``"npy"``,
    ``"wav"``, ``"text"``, ..., or ``"unknown"``."""
    for magic, name in _MAGIC:
        if data.startswith(magic):
            return name
    if data[:4] == b"RIFF" and data[8:12] in _RIFF:
        return _RIFF[data[8:12]]
    if data[:2] == b"BM" and int.from_bytes(data[14:18], "little") in _BMP_INFO_SIZES:
        return "bmp"
    head = data[:4096]
    if b"\x00" not in head:
        try:
            head.decode("utf-8")
            return "text"
        except UnicodeDecodeError as exc:
            if exc.start >= len(head) - 3:  # a character cut by the 4 KiB window
                return "text"
    return "unknown"


def check_image(data: bytes) -> Tuple[str, int, int, str]:
    """Decode as the readers will; returns ``(format, height, width, decoder)``; raises what ImageFolder would."""
    # Pillow parses the header even when simplejpeg decodes: its errors and decompression-bomb
    # limit are ImageFolder's, and simplejpeg does not see them.
    with Image.open(io.BytesIO(data)) as image:
        image_format = (image.format or "unknown").lower()
        if image_format in ("jpeg", "mpo") and image.mode in ("RGB", "L"):
            pixels = fast_jpeg(data)
            if pixels is not None:
                return "jpeg", pixels.shape[0], pixels.shape[1], FAST_DECODER
    rgb = pillow_rgb(data)
    image_format = "jpeg" if image_format == "mpo" else image_format
    # A JPEG refused here only because this process's simplejpeg disagrees with its Pillow says
    # nothing about the file: leave the decoder open for readers whose libraries agree.
    decoder = PILLOW_DECODER if image_format != "jpeg" or fast_decoder_agrees() else ""
    return image_format, rgb.height, rgb.width, decoder


def _cap_size(image: Image.Image, short_side: Optional[int], long_side: Optional[int]) -> Image.Image:
    width, height = image.size
    scale = min(
        short_side / min(width, height) if short_side is not None else 1.0,
        long_side / max(width, height) if long_side is not None else 1.0,
    )
    if scale >= 1:
        return image
    size = (max(1, round(width * scale)), max(1, round(height * scale)))
    return image.resize(size, Image.Resampling.BILINEAR)


def _stored_channels(pixels: np.ndarray) -> np.ndarray:
    """RGB pixels with one channel where all three are equal (a grayscale image reads back identical)."""
    if np.array_equal(pixels[..., 0], pixels[..., 1]) and np.array_equal(pixels[..., 1], pixels[..., 2]):
        return np.ascontiguousarray(pixels[..., :1])
    return pixels


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
    """Read one file and return its stored form; read, check and decode failures are returned, never raised."""
    try:
        with open(path, "rb") as f:
            data = f.read()
        if options.check_file is not None:
            options.check_file(path)
        with _pillow_settings(options):
            return _ingest_bytes(data, path, options)
    except Exception as exc:  # any failure only costs this one sample
        return Ingested(error_type=type(exc).__name__, error=str(exc) or repr(exc))


def is_image(path: str, encoding: str, extensions: Optional[Tuple[str, ...]]) -> bool:
    """Whether a file is an image: ``extensions`` (None: every file) by torchvision's rule, or its content.

    torchvision's ``has_file_allowed_extension``, without importing torchvision here.
    """
    return extensions is None or path.lower().endswith(extensions) or encoding in IMAGE_ENCODINGS


def _ingest_bytes(data: bytes, path: str, options: IngestOptions) -> Ingested:
    if not data:
        raise ValueError("empty file")
    encoding = sniff_encoding(data)
    image = is_image(path, encoding, options.image_extensions)
    if options.storage == "encoded":
        if not (options.check and image):
            return Ingested(data, encoding, "", 0, 0, 0, zlib.crc32(data))
        checked_format, height, width, decoder = check_image(data)
        if encoding in ("unknown", "text"):  # a PGM or PPM can read as text
            encoding = checked_format
        return Ingested(data, encoding, decoder, height, width, 3, zlib.crc32(data))
    if not image:
        raise ValueError(f"storage={options.storage!r} stores images only; this file is {encoding}")
    image = _cap_size(pillow_rgb(data), options.short_side, options.long_side)
    width, height = image.size
    if options.storage == "reencode":
        out = io.BytesIO()
        image.save(out, format="JPEG", quality=options.quality)
        stored = out.getvalue()
        # Pillow's own clean baseline output: simplejpeg decodes it without a warning.
        return Ingested(stored, "jpeg", FAST_DECODER, height, width, 3, zlib.crc32(stored))
    pixels = _stored_channels(np.asarray(image, dtype=np.uint8))
    raw = pixels.tobytes()
    stored = lz4.block.compress(raw, store_size=False) if options.raw_compression == "lz4" else raw
    return Ingested(stored, "raw", "", height, width, pixels.shape[2], zlib.crc32(stored))


def ingest_files(paths: list[str], options: IngestOptions) -> list[Ingested]:
    """:func:`ingest_file` over a chunk of files (one task for a converter worker)."""
    return [ingest_file(path, options) for path in paths]
