"""A corpus of real-world image defects and oddities, for parity tests against ImageFolder.

Every file starts as real bytes written by an encoder (Pillow, or simplejpeg for the YCCK,
4:4:0 and 4:1:1 JPEGs) from photo-like pixels, and is then damaged or rewritten at the byte
level the way files in the wild are: junk that libjpeg skips with a "Corrupt JPEG data"
warning, cut tails, broken metadata segments, unusual colour spaces and subsamplings,
high bit depths, other formats and misnamed files. Everything uses fixed seeds, so the
corpus is the same on every run.

``make_defect_corpus(root)`` writes the tree and returns ``{relative path: description}``.
"""

from __future__ import annotations

import io
import os
import struct
import zlib
from typing import Callable, Dict, Tuple

import numpy as np
import simplejpeg
from PIL import Image

from conftest import photo_like

Corpus = Dict[str, Tuple[bytes, str]]  # relative path -> (file bytes, description)

SOI, EOI = b"\xff\xd8", b"\xff\xd9"
DQT, DHT, SOS, APP0 = 0xDB, 0xC4, 0xDA, 0xE0
RST_MARKERS = range(0xD0, 0xD8)


# -- encoders ---------------------------------------------------------------------------------------


def encode(image: Image.Image, fmt: str, **options) -> bytes:
    """The bytes Pillow writes for ``image`` in format ``fmt``."""
    out = io.BytesIO()
    image.save(out, format=fmt, **options)
    return out.getvalue()


# -- JPEG byte surgery ------------------------------------------------------------------------------


def header_segments(data: bytes) -> list[tuple[int, int, int]]:
    """``(marker, start, end)`` of each segment from after SOI up to and including the first SOS header."""
    assert data.startswith(SOI)
    segments, pos = [], 2
    while True:
        assert data[pos] == 0xFF, f"no marker at {pos}"
        marker = data[pos + 1]
        (length,) = struct.unpack(">H", data[pos + 2 : pos + 4])
        segments.append((marker, pos, pos + 2 + length))
        pos += 2 + length
        if marker == SOS:
            return segments


def segment_start(data: bytes, marker: int) -> int:
    """The offset of the first header segment with this marker."""
    return next(start for m, start, _ in header_segments(data) if m == marker)


def insert(data: bytes, offset: int, extra: bytes) -> bytes:
    return data[:offset] + extra + data[offset:]


def app_segment(marker: int, payload: bytes) -> bytes:
    """A marker segment (APPn, COM, ...) with a correct length field."""
    return bytes([0xFF, marker]) + struct.pack(">H", len(payload) + 2) + payload


def after_app0(data: bytes, segment: bytes) -> bytes:
    """``data`` with ``segment`` inserted after the JFIF APP0 segment, where encoders put metadata."""
    _, _, end = header_segments(data)[0]
    return insert(data, end, segment)


def without_segments(data: bytes, marker: int) -> bytes:
    """``data`` with every header segment of this marker removed."""
    for m, start, end in reversed(header_segments(data)):
        if m == marker:
            data = data[:start] + data[end:]
    return data


def rst_offsets(data: bytes) -> list[int]:
    """Offsets of the restart markers (FFD0-FFD7) in the entropy-coded data after the first SOS."""
    scan = header_segments(data)[-1][2]
    return [i for i in range(scan, len(data) - 1) if data[i] == 0xFF and data[i + 1] in RST_MARKERS]


def sampling_factors(data: bytes) -> list[int]:
    """The SOF sampling-factor byte (H << 4 | V) of each component, e.g. ``[0x22, 0x11, 0x11]`` for 4:2:0."""
    sof = next(s for s in header_segments(data) if 0xC0 <= s[0] <= 0xC2)
    body = data[sof[1] + 4 : sof[2]]
    return [body[6 + 3 * c + 1] for c in range(body[5])]


def swap_rst(data: bytes, first: int, second: int) -> bytes:
    """``data`` with the marker bytes of two restart markers exchanged."""
    out = bytearray(data)
    out[first + 1], out[second + 1] = data[second + 1], data[first + 1]
    return bytes(out)


def flip_scan_bytes(data: bytes, positions: list[float]) -> bytes:
    """Bit rot: XOR a few entropy-coded bytes (at these fractions of the scan) with values that make no 0xFF."""
    scan = header_segments(data)[-1][2]
    out = bytearray(data)
    for fraction in positions:
        i = scan + int((len(data) - 2 - scan) * fraction)
        while out[i] == 0xFF or out[i - 1] == 0xFF:  # keep byte stuffing and markers intact
            i += 1
        out[i] ^= 0x5A if out[i] ^ 0x5A != 0xFF else 0x3C
    return bytes(out)


# -- PNG byte surgery -------------------------------------------------------------------------------

PNG_SIGNATURE = b"\x89PNG\r\n\x1a\n"


def png_chunk(kind: bytes, body: bytes, crc: int | None = None) -> bytes:
    """A PNG chunk; ``crc`` overrides the correct CRC-32 (to make a damaged one)."""
    crc = zlib.crc32(kind + body) if crc is None else crc
    return struct.pack(">I", len(body)) + kind + body + struct.pack(">I", crc)


def png_chunks(data: bytes) -> list[tuple[bytes, bytes]]:
    """``(type, body)`` of each chunk of a PNG file."""
    assert data.startswith(PNG_SIGNATURE)
    chunks, pos = [], len(PNG_SIGNATURE)
    while pos < len(data):
        (length,) = struct.unpack(">I", data[pos : pos + 4])
        chunks.append((data[pos + 4 : pos + 8], data[pos + 8 : pos + 8 + length]))
        pos += 12 + length
    return chunks


def png_from_rows(ihdr: bytes, raw: bytes) -> bytes:
    """A PNG of IHDR, one IDAT of the already filtered rows ``raw``, and IEND."""
    idat = png_chunk(b"IDAT", zlib.compress(raw, 9))
    return PNG_SIGNATURE + png_chunk(b"IHDR", ihdr) + idat + png_chunk(b"IEND", b"")


def unfiltered(pixels: np.ndarray) -> bytes:
    """Rows of ``pixels`` (big-endian for 16 bits), each prefixed with filter type 0."""
    rows = pixels.reshape(pixels.shape[0], -1)
    return b"".join(b"\0" + row.astype(rows.dtype.newbyteorder(">")).tobytes() for row in rows)


def png_rgb16(png: bytes, rng: np.random.Generator) -> bytes:
    """Pillow's 8-bit RGB PNG rewritten as 16-bit RGB (Pillow cannot write it): high byte from the
    original pixels, random low byte, which Pillow drops when it reads the file."""
    pixels = np.asarray(Image.open(io.BytesIO(png)).convert("RGB"), dtype=np.uint16)
    wide = (pixels << 8) | rng.integers(0, 256, pixels.shape, dtype=np.uint16)
    height, width = pixels.shape[:2]
    return png_from_rows(struct.pack(">IIBBBBB", width, height, 16, 2, 0, 0, 0), unfiltered(wide))


ADAM7 = ((0, 0, 8, 8), (4, 0, 8, 8), (0, 4, 4, 8), (2, 0, 4, 4), (0, 2, 2, 4), (1, 0, 2, 2), (0, 1, 1, 2))


def png_interlaced(png: bytes) -> bytes:
    """Pillow's RGB PNG rewritten with Adam7 interlacing (Pillow reads interlaced PNGs but cannot write them)."""
    pixels = np.asarray(Image.open(io.BytesIO(png)).convert("RGB"))
    height, width = pixels.shape[:2]
    passes = [pixels[y0::dy, x0::dx] for x0, y0, dx, dy in ADAM7]
    raw = b"".join(unfiltered(p) for p in passes if p.size)  # an empty pass has no rows at all
    return png_from_rows(struct.pack(">IIBBBBB", width, height, 8, 2, 0, 0, 1), raw)


def png_with_chunk(png: bytes, chunk: bytes, before: bytes) -> bytes:
    """``png`` with ``chunk`` inserted before the first chunk of type ``before``."""
    out, inserted = PNG_SIGNATURE, False
    for kind, body in png_chunks(png):
        if kind == before and not inserted:
            out, inserted = out + chunk, True
        out += png_chunk(kind, body)
    return out


# -- the corpus, by family --------------------------------------------------------------------------


class Source:
    """Seeded photo-like pictures, and seeded junk bytes from a separate generator (so that
    changing one damage does not change every picture after it)."""

    def __init__(self, seed: int) -> None:
        self.pixels = np.random.default_rng(seed)
        self.rng = np.random.default_rng(1000 + seed)

    def rgb(self, width: int, height: int) -> Image.Image:
        return Image.fromarray(photo_like(self.pixels, width, height))

    def array(self, width: int, height: int) -> np.ndarray:
        return photo_like(self.pixels, width, height)

    def bytes(self, n: int) -> bytes:
        """``n`` random bytes, 0xFF included."""
        return self.rng.bytes(n)

    def junk(self, n: int) -> bytes:
        """``n`` random bytes with no 0xFF, so that a JPEG parser never mistakes them for a marker."""
        return self.rng.integers(0, 0xFF, n, dtype=np.uint8).tobytes()


def jpeg_damage(im: Source) -> Corpus:
    """JPEGs with junk where libjpeg skips it (with a warning), missing or cut tails, and bit rot."""
    base = encode(im.rgb(120, 90), "JPEG", quality=90)
    progressive = encode(im.rgb(150, 100), "JPEG", quality=85, progressive=True)
    restart = encode(im.rgb(128, 96), "JPEG", quality=90, restart_marker_blocks=4)
    rst = rst_offsets(restart)
    odd = encode(im.rgb(67, 45), "JPEG", quality=80)
    return {
        "extraneous_114_before_eoi.jpg": (
            insert(base, len(base) - 2, bytes(114)),
            "114 zero bytes just before the final FFD9 (libjpeg: N extraneous bytes before marker 0xd9)",
        ),
        "extraneous_252_before_eoi.jpg": (
            insert(odd, len(odd) - 2, im.junk(252)),
            "67x45, 252 junk bytes just before the final FFD9",
        ),
        "extraneous_before_eoi_progressive.jpg": (
            insert(progressive, len(progressive) - 2, bytes(40)),
            "progressive, 40 zero bytes just before the final FFD9",
        ),
        "junk_before_dqt.jpg": (
            insert(base, segment_start(base, DQT), im.junk(17)),
            "17 junk bytes between APP0 and DQT",
        ),
        "junk_before_dht.jpg": (
            insert(base, segment_start(base, DHT), im.junk(9)),
            "9 junk bytes between SOF0 and DHT",
        ),
        "junk_before_sos.jpg": (
            insert(base, segment_start(base, SOS), im.junk(23)),
            "23 junk bytes between the last DHT and SOS",
        ),
        "junk_before_rst.jpg": (
            insert(restart, rst[len(rst) // 2], im.junk(37)),
            "restart interval 4 blocks, 37 junk bytes inside the scan just before an RSTn marker",
        ),
        "rst_out_of_order.jpg": (
            swap_rst(restart, rst[1], rst[2]),
            "restart markers 2 and 3 swapped (libjpeg resyncs: found marker instead of RSTn)",
        ),
        "missing_eoi.jpg": (base[:-2], "baseline, last two bytes (EOI) cut"),
        "missing_eoi_progressive.jpg": (progressive[:-2], "progressive, last two bytes (EOI) cut"),
        "cut_at_60pct.jpg": (base[: len(base) * 6 // 10], "baseline, file cut at 60%"),
        "cut_at_90pct.jpg": (base[: len(base) * 9 // 10], "baseline, file cut at 90%"),
        "cut_at_70pct_progressive.jpg": (progressive[: len(progressive) * 7 // 10], "progressive, file cut at 70%"),
        "junk_after_eoi.jpg": (base + im.bytes(300), "300 random bytes (0xFF included) after EOI"),
        "second_jpeg_after_eoi.jpg": (base + odd, "another whole JPEG appended after EOI"),
        "zero_padding_after_eoi.jpg": (base + bytes(4096), "4 KiB of zeros after EOI (a padded download)"),
        "bitrot_in_scan.jpg": (
            flip_scan_bytes(base, [0.2, 0.5, 0.8]),
            "three entropy-coded bytes flipped (decodes with damaged blocks)",
        ),
        "no_dht_mjpeg.jpg": (
            without_segments(base, DHT),
            "DHT segments removed, as in Motion-JPEG frames (decoders fall back to the standard tables)",
        ),
    }


def jpeg_metadata(im: Source) -> Corpus:
    """JPEGs whose APPn segments are damaged or unusual; the image data itself is intact."""
    base = encode(im.rgb(96, 72), "JPEG", quality=90)
    exif = Image.Exif()
    exif[0x0112] = 6  # rotate 90 degrees: ImageFolder does not apply it
    mpo_frames = [im.rgb(80, 60), im.rgb(80, 60)]
    mpo = encode(mpo_frames[0], "MPO", save_all=True, append_images=mpo_frames[1:], quality=90)
    no_jfif = without_segments(base, APP0)
    return {
        "exif_garbage.jpg": (
            after_app0(base, app_segment(0xE1, b"Exif\0\0" + im.bytes(120))),
            "APP1 Exif with random bytes for the TIFF structure",
        ),
        "exif_truncated_tiff_header.jpg": (
            after_app0(base, app_segment(0xE1, b"Exif\0\0MM\0*\0\0")),
            "APP1 Exif whose TIFF header stops after 6 of its 8 bytes",
        ),
        "exif_ifd_offset_past_end.jpg": (
            after_app0(base, app_segment(0xE1, b"Exif\0\0II*\0" + struct.pack("<I", 0x7FFF0000) + bytes(8))),
            "APP1 Exif whose first IFD offset points far past the segment",
        ),
        "exif_orientation_6.jpg": (encode(im.rgb(64, 48), "JPEG", quality=90, exif=exif), "valid EXIF Orientation=6"),
        "icc_wrong_count.jpg": (
            after_app0(base, app_segment(0xE2, b"ICC_PROFILE\0\x01\x03" + im.bytes(200))),
            "one APP2 ICC chunk claiming to be chunk 1 of 3",
        ),
        "icc_duplicate_chunk_numbers.jpg": (
            after_app0(
                base,
                app_segment(0xE2, b"ICC_PROFILE\0\x01\x02" + im.bytes(100))
                + app_segment(0xE2, b"ICC_PROFILE\0\x01\x02" + im.bytes(100)),
            ),
            "two APP2 ICC chunks, both numbered 1 of 2, with garbage profile data",
        ),
        "icc_chunk_zero.jpg": (
            after_app0(base, app_segment(0xE2, b"ICC_PROFILE\0\x00\x00" + im.bytes(64))),
            "APP2 ICC chunk numbered 0 of 0",
        ),
        "icc_too_short.jpg": (
            after_app0(base, app_segment(0xE2, b"ICC_PROFILE\0\x01")),
            "APP2 ICC segment that stops after the sequence number (no count byte)",
        ),
        "xmp_broken_xml.jpg": (
            after_app0(base, app_segment(0xE1, b"http://ns.adobe.com/xap/1.0/\0<x:xmpmeta><rdf:RDF><rdf:Descr")),
            "APP1 XMP with unterminated XML",
        ),
        "adobe_truncated.jpg": (
            after_app0(base, app_segment(0xEE, b"Adobe")),
            "APP14 'Adobe' segment with nothing after the name",
        ),
        "adobe_bad_transform_no_jfif.jpg": (
            insert(no_jfif, 2, app_segment(0xEE, b"Adobe\0\x64\0\0\0\0\x07")),
            "no JFIF, APP14 Adobe with transform code 7 (libjpeg: unknown Adobe transform, assumes YCbCr)",
        ),
        "jfif_version_2.jpg": (
            base[:11] + b"\x02\x00" + base[13:],
            "JFIF APP0 claiming version 2.00 (libjpeg: unknown JFIF revision number)",
        ),
        "photoshop_irb_garbage.jpg": (
            after_app0(base, app_segment(0xED, b"Photoshop 3.0\0" + b"8BIM\x03\xed\0\0\xff\xff\xff\xff" + im.bytes(8))),
            "APP13 Photoshop resource block with an impossible resource length",
        ),
        "mpf_garbage.jpg": (
            after_app0(base, app_segment(0xE2, b"MPF\0" + im.bytes(80))),
            "APP2 MPF segment with random bytes for the MP index",
        ),
        "mpo_two_frames.jpg": (mpo, "a real MPO (two JPEG frames, MPF index) written by Pillow"),
        "comment_segment.jpg": (
            after_app0(base, app_segment(0xFE, b"\x00\xffnot text\xfe" + im.bytes(50))),
            "COM segment holding binary bytes",
        ),
    }


def jpeg_variants(im: Source) -> Corpus:
    """Valid JPEGs in every colour space, subsampling and layout a camera or library writes."""
    cmyk = np.concatenate([im.array(72, 56), im.array(72, 56)[..., :1]], axis=-1)
    rgb_colourspace = encode(im.rgb(70, 50), "JPEG", quality=90, keep_rgb=True)
    return {
        "cmyk_pillow.jpg": (
            encode(im.rgb(70, 52).convert("CMYK"), "JPEG", quality=90),
            "CMYK JPEG written by Pillow (Adobe APP14)",
        ),
        "ycck_simplejpeg.jpg": (
            simplejpeg.encode_jpeg(np.ascontiguousarray(cmyk), quality=90, colorspace="CMYK"),
            "YCCK JPEG written by libjpeg-turbo from CMYK pixels",
        ),
        "rgb_colourspace.jpg": (rgb_colourspace, "RGB-colourspace JPEG (Adobe transform 0, Pillow keep_rgb=True)"),
        "gray.jpg": (encode(im.rgb(80, 60).convert("L"), "JPEG", quality=90), "grayscale JPEG"),
        "progressive.jpg": (encode(im.rgb(121, 81), "JPEG", quality=85, progressive=True), "progressive, 121x81"),
        "progressive_gray.jpg": (
            encode(im.rgb(99, 77).convert("L"), "JPEG", quality=85, progressive=True),
            "progressive grayscale",
        ),
        "restart_rows.jpg": (
            encode(im.rgb(100, 80), "JPEG", quality=90, restart_marker_rows=1),
            "restart marker after every MCU row",
        ),
        "subsampling_444.jpg": (encode(im.rgb(67, 45), "JPEG", quality=90, subsampling=0), "4:4:4, 67x45"),
        "subsampling_422.jpg": (encode(im.rgb(67, 45), "JPEG", quality=90, subsampling=1), "4:2:2, 67x45"),
        "subsampling_420.jpg": (encode(im.rgb(67, 45), "JPEG", quality=90, subsampling=2), "4:2:0, 67x45"),
        "subsampling_440.jpg": (
            simplejpeg.encode_jpeg(im.array(67, 45), quality=90, colorsubsampling="440"),
            "4:4:0 (simplejpeg), 67x45",
        ),
        "subsampling_411.jpg": (
            simplejpeg.encode_jpeg(im.array(67, 45), quality=90, colorsubsampling="411"),
            "4:1:1 (simplejpeg), 67x45",
        ),
        "optimized_huffman.jpg": (
            encode(im.rgb(90, 70), "JPEG", quality=75, optimize=True),
            "optimized Huffman tables",
        ),
        "quality_100.jpg": (encode(im.rgb(64, 64), "JPEG", quality=100, subsampling=0), "quality 100, 4:4:4"),
        "one_pixel.jpg": (encode(im.rgb(1, 1), "JPEG", quality=90), "1x1 pixel"),
        "strip_3x200.jpg": (encode(im.rgb(3, 200), "JPEG", quality=90), "3x200 strip, 4:2:0"),
        "large_200x160.jpeg": (encode(im.rgb(200, 160), "JPEG", quality=90), "200x160 with .jpeg extension"),
    }


def png_variants(im: Source) -> Corpus:
    """PNGs at every bit depth and colour type, interlaced, and damaged."""
    rgb = encode(im.rgb(60, 44), "PNG")
    gray16 = Image.fromarray((im.array(40, 30)[..., 0].astype(np.uint16) * 257) ^ 0x5A5A)
    palette = im.rgb(40, 40).convert("P", palette=Image.Palette.ADAPTIVE, colors=32)
    rgba = im.rgb(50, 30).convert("RGBA")
    rgba.putalpha(Image.fromarray(im.array(50, 30)[..., 0]))
    bad_crc = png_chunk(b"tEXt", b"Comment\0bad checksum", crc=0xDEADBEEF)
    return {
        "rgb.png": (rgb, "8-bit RGB"),
        "rgb16.png": (png_rgb16(rgb, im.rng), "16-bit RGB (IHDR depth 16, colour type 2)"),
        "gray16.png": (encode(gray16, "PNG"), "16-bit grayscale (Pillow mode I;16)"),
        "gray_alpha.png": (encode(im.rgb(30, 30).convert("LA"), "PNG"), "LA (gray + alpha)"),
        "palette_trns.png": (encode(palette, "PNG", transparency=3), "palette with a tRNS transparent entry"),
        "rgba.png": (encode(rgba, "PNG"), "RGBA with varying alpha"),
        "one_bit.png": (encode(im.rgb(45, 33).convert("1"), "PNG"), "1-bit black and white"),
        "interlaced.png": (png_interlaced(rgb), "Adam7-interlaced RGB"),
        "bad_crc_text_before_idat.png": (
            png_with_chunk(rgb, bad_crc, before=b"IDAT"),
            "ancillary tEXt chunk with a wrong CRC, before IDAT",
        ),
        "bad_crc_text_after_idat.png": (
            png_with_chunk(rgb, bad_crc, before=b"IEND"),
            "ancillary tEXt chunk with a wrong CRC, after IDAT",
        ),
        "truncated.png": (rgb[: len(rgb) * 7 // 10], "cut at 70%, in the middle of IDAT"),
        "junk_after_iend.png": (rgb + im.bytes(200), "200 random bytes after IEND"),
    }


def other_formats(im: Source) -> Corpus:
    """GIF, WebP, BMP, TIFF and PPM, as Pillow writes them."""
    palette = im.rgb(48, 40).convert("P", palette=Image.Palette.ADAPTIVE, colors=64)
    frames = [im.rgb(40, 30).convert("P", palette=Image.Palette.ADAPTIVE, colors=32) for _ in range(3)]
    rgba = im.rgb(64, 48).convert("RGBA")
    rgba.putalpha(Image.fromarray(im.array(64, 48)[..., 1]))
    gray16 = Image.fromarray(im.array(36, 28)[..., 2].astype(np.uint16) * 250)
    return {
        # ImageFolder lists no .gif files, so the GIFs carry a .png name; the content decides the decoder.
        "gif_static.png": (encode(palette, "GIF", transparency=5), "GIF bytes (named .png), P mode with transparency"),
        "gif_animated.png": (
            encode(frames[0], "GIF", save_all=True, append_images=frames[1:], duration=100, loop=0, transparency=0),
            "animated GIF bytes (named .png), 3 frames with transparency",
        ),
        "webp_lossy.webp": (encode(im.rgb(64, 48), "WEBP", quality=80), "lossy WebP"),
        "webp_lossless_alpha.webp": (encode(rgba, "WEBP", lossless=True), "lossless WebP with alpha"),
        "webp_lossy_alpha.webp": (encode(rgba, "WEBP", quality=70), "lossy WebP with alpha"),
        "bmp_24bit.bmp": (encode(im.rgb(67, 45), "BMP"), "24-bit BMP, 67x45 (row padding)"),
        "bmp_8bit_palette.bmp": (encode(palette, "BMP"), "8-bit palette BMP"),
        "tiff_rgb.tif": (encode(im.rgb(50, 40), "TIFF"), "uncompressed RGB TIFF"),
        "tiff_lzw.tiff": (encode(im.rgb(50, 40), "TIFF", compression="tiff_lzw"), "LZW-compressed RGB TIFF"),
        "tiff_gray16.tif": (encode(gray16, "TIFF"), "16-bit grayscale TIFF (I;16)"),
        "rgb.ppm": (encode(im.rgb(30, 20), "PPM"), "binary PPM"),
    }


def broken_and_misnamed(im: Source) -> Corpus:
    """Files that are not what their name says, or not images at all."""
    return {
        "zero_bytes.jpg": (b"", "empty file"),
        "random_bytes.jpg": (im.bytes(2048), "2 KiB of random bytes"),
        "soi_then_random.jpg": (SOI + b"\xff" + im.bytes(1000), "JPEG SOI marker followed by random bytes"),
        "png_named.jpg": (encode(im.rgb(40, 30), "PNG"), "a PNG file with a .jpg name"),
        "jpeg_named.png": (encode(im.rgb(40, 30), "JPEG", quality=90), "a JPEG file with a .png name"),
    }


FAMILIES: dict[str, Callable[[Source], Corpus]] = {
    "jpeg_damage": jpeg_damage,
    "jpeg_metadata": jpeg_metadata,
    "jpeg_variants": jpeg_variants,
    "png": png_variants,
    "other_formats": other_formats,
    "broken": broken_and_misnamed,
}


def build_defect_corpus() -> Corpus:
    """Every file of the corpus in memory: ``{class/name: (bytes, description)}``."""
    corpus: Corpus = {}
    for seed, (family, make) in enumerate(FAMILIES.items()):
        files = make(Source(seed))
        corpus.update({f"{family}/{name}": entry for name, entry in files.items()})
    return corpus


def make_defect_corpus(root: str) -> dict[str, str]:
    """Write the corpus as an ImageFolder tree under ``root``; return ``{relative path: description}``."""
    described = {}
    for relative, (data, description) in build_defect_corpus().items():
        path = os.path.join(root, relative)
        os.makedirs(os.path.dirname(path), exist_ok=True)
        with open(path, "wb") as f:
            f.write(data)
        described[relative] = description
    return described
