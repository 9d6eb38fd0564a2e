"""Where a training crop's decode time goes, and what decoding less of the JPEG would buy.

usage::

    python benchmarks/bench_crop_decode.py --tree PHOTOS [--out benchmarks/results] [--images 300] [--rounds 3]

For one ``RandomResizedCrop(224)`` draw per image, on one core, it times per crop:

- the ``decode_size=224`` route's decode: the whole image at the DCT scale whose short side covers 224;
- the crop-aware decode (``RandomResizedCropDecode``): the crop's columns, the rows down to its
  bottom, at the power-of-two DCT scale that covers 224;
- the same at libjpeg-turbo's finer M/8 scales (3/8, 5/8, 3/4, 7/8), the smallest that covers 224;
- a decode that skips the entropy (Huffman) decoding outside the crop too. A JPEG written with
  a restart marker after every MCU row, or after every MCU, can be cut into a smaller JPEG of only
  the intervals a crop needs (one MCU of margin for chroma upsampling), by copying bytes. The
  time counts building that JPEG and decoding it;
- the antialiased resize of the decoded crop to 224 x 224 (torch, uint8, channels-last), which
  every route pays.

The photos are re-encoded once by Pillow at quality 95, 4:2:0, with and without restart
markers, so that every row decodes the same DCT coefficients. That stands in for a lossless
restart-marker transcode of the originals, which no library on PyPI offers. The cut JPEGs' pixels are
checked against the crop-aware decode's. Writes ``crop_decode_<tree>.md`` and ``.json``.
"""

from __future__ import annotations

import argparse
import glob
import io
import json
import math
import os
import random
import statistics
import time
from typing import Callable

import numpy as np
import simplejpeg
import torch
from PIL import Image

from torchpack import jpeg_region
from torchpack.crop_decode import RandomResizedCropDecode, resize_square
from torchpack.jpeg_region import region_decoder

RESTART = b"\xff\xd0"


def encode(image: Image.Image, **restart: int) -> bytes:
    out = io.BytesIO()
    image.save(out, format="JPEG", quality=95, subsampling=2, **restart)
    return out.getvalue()


def restart_markers(data: bytes, offset: int) -> np.ndarray:
    """Positions of the RSTn markers in ``data[offset:]`` (entropy data stuffs every other 0xFF)."""
    array = np.frombuffer(data, np.uint8, offset=offset)
    return np.flatnonzero((array[:-1] == 0xFF) & ((array[1:] & 0xF8) == 0xD0)) + offset


def jpeg_layout(data: bytes) -> tuple[int, int, int, int]:
    """``(SOF height field offset, MCU height, MCU width, entropy data offset)`` of a baseline JPEG."""
    position = 2
    while True:
        marker, length = data[position + 1], int.from_bytes(data[position + 2 : position + 4], "big")
        if marker in (0xC0, 0xC1):
            sof, components = position + 5, data[position + 9]
            factors = [data[position + 11 + 3 * i] for i in range(components)]
            mcu_height, mcu_width = 8 * max(f & 15 for f in factors), 8 * max(f >> 4 for f in factors)
        if marker == 0xDA:
            return sof, mcu_height, mcu_width, position + 2 + length
        position += 2 + length


def cut_jpeg(data: bytes, y0: int, y1: int, x0: int, x1: int, per_mcu: bool) -> tuple[bytes, int, int]:
    """A JPEG of the restart intervals covering rows ``y0:y1`` (and columns ``x0:x1`` when every
    MCU is an interval), with one MCU of margin; and the cut's top and left in the image."""
    sof, mcu_height, mcu_width, start = jpeg_layout(data)
    height, width = int.from_bytes(data[sof : sof + 2], "big"), int.from_bytes(data[sof + 2 : sof + 4], "big")
    markers = restart_markers(data, start)
    starts, ends = np.concatenate(([start], markers + 2)), np.concatenate((markers, [data.rfind(b"\xff\xd9")]))
    row0, row1 = max(0, y0 // mcu_height - 1), min(-(-height // mcu_height) - 1, (y1 - 1) // mcu_height + 1)
    per_row = -(-width // mcu_width)
    col0, col1 = (max(0, x0 // mcu_width - 1), min(per_row - 1, (x1 - 1) // mcu_width + 1)) if per_mcu else (0, per_row - 1)
    stride = per_row if per_mcu else 1
    rows = [data[starts[r * stride + col0 * per_mcu] : ends[r * stride + col1 * per_mcu]] for r in range(row0, row1 + 1)]
    joined = RESTART.join(rows)
    markers = restart_markers(joined, 0)
    body = np.frombuffer(joined, np.uint8).copy()
    body[markers + 1] = 0xD0 + (np.arange(len(markers)) & 7)  # RST0..RST7 again in sequence, as decoders check
    new_height = min(height, (row1 + 1) * mcu_height) - row0 * mcu_height
    new_width = min(width, (col1 + 1) * mcu_width) - col0 * mcu_width
    header = data[:sof] + new_height.to_bytes(2, "big") + new_width.to_bytes(2, "big") + data[sof + 4 : start]
    return header + body.tobytes() + b"\xff\xd9", row0 * mcu_height, col0 * mcu_width


def decode_at_eighths(data: bytes, box: tuple[int, int, int, int]) -> np.ndarray:
    """The crop ``box`` (top, left, height, width) decoded at the smallest M/8 scale that covers 224
    (libjpeg-turbo's scaled IDCTs), its columns and the rows down to its bottom."""
    top, left, height, width = box
    eighths = next((m for m in range(1, 9) if min(height, width) * m // 8 >= 224), 8)
    lib, handle = jpeg_region._library(), region_decoder()._handle()  # noqa: SLF001 (a scale the library does not offer)
    handle.check(lib.tj3DecompressHeader(handle.pointer, data, len(data)))
    image_width = lib.tj3Get(handle.pointer, jpeg_region._PARAM_WIDTH)
    mcu = jpeg_region._MCU_WIDTH[lib.tj3Get(handle.pointer, jpeg_region._PARAM_SUBSAMP)] * eighths // 8
    divisor = math.gcd(eighths, 8)
    handle.check(lib.tj3SetScalingFactor(handle.pointer, jpeg_region._ScalingFactor(eighths // divisor, 8 // divisor)))
    scaled_width = -(-image_width * eighths // 8)
    y, x, h, w = top * eighths // 8, left * eighths // 8, max(1, height * eighths // 8), max(1, width * eighths // 8)
    x0, x1 = max(0, (x // mcu - 1) * mcu), min(scaled_width, x + w + mcu)
    handle.check(lib.tj3SetCroppingRegion(handle.pointer, jpeg_region._Region(x0, y, x1 - x0, h)))
    out = np.empty((h, x1 - x0, 3), dtype=np.uint8)
    handle.check(lib.tj3Decompress8(handle.pointer, data, len(data), out.ctypes.data, (x1 - x0) * 3, 0))
    return out[:, x - x0 : x - x0 + w]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--tree", required=True)
    parser.add_argument("--out", default=os.path.join(os.path.dirname(os.path.abspath(__file__)), "results"))
    parser.add_argument("--images", type=int, default=300)
    parser.add_argument("--rounds", type=int, default=3)
    args = parser.parse_args()
    torch.set_num_threads(1)
    random.seed(0)
    torch.manual_seed(0)
    files = sorted(glob.glob(os.path.join(args.tree, "*", "*")))
    files = random.sample(files, min(args.images, len(files)))
    plain, by_row, by_mcu = [], [], []
    for path in files:
        image = Image.open(path).convert("RGB")
        plain.append(encode(image))
        by_row.append(encode(image, restart_marker_rows=1))
        by_mcu.append(encode(image, restart_marker_blocks=1))
    decoder, crop = region_decoder(), RandomResizedCropDecode(224)
    if decoder is None:
        raise SystemExit("needs libjpeg-turbo 3 (pip install 'torchpack[crop]')")
    sizes = [decoder.header(data)[:2] for data in plain]
    boxes = [crop.params(height, width) for height, width in sizes]
    scales = [crop.dct_scale(h, w) for _, _, h, w in boxes]
    plans = [(s, top // s, left // s, max(1, h // s), max(1, w // s)) for s, (top, left, h, w) in zip(scales, boxes)]

    def whole_at_scale(i: int) -> np.ndarray:
        height, width = sizes[i]
        scale = next((s for s in (8, 4, 2) if min(height, width) // s >= 224), 1)
        return simplejpeg.decode_jpeg(plain[i], min_height=math.ceil(height / scale), min_width=math.ceil(width / scale))

    def region(i: int) -> np.ndarray:
        return decoder.decode(plain[i], *plans[i])

    def cut_only(stores: list[bytes], per_mcu: bool, i: int) -> tuple[bytes, int, int]:
        scale, top, left, h, w = plans[i]
        return cut_jpeg(stores[i], top * scale, (top + h) * scale, left * scale, (left + w) * scale, per_mcu)

    def cut(stores: list[bytes], per_mcu: bool) -> Callable[[int], np.ndarray]:
        def run(i: int) -> np.ndarray:
            scale, top, left, h, w = plans[i]
            data, y, x = cut_only(stores, per_mcu, i)
            return decoder.decode(data, scale, top - y // scale, left - x // scale, h, w)
        return run

    decoded = [region(i) for i in range(len(plain))]
    rows = {
        "decode_size=224 route: whole image at its DCT scale": whole_at_scale,
        "crop-aware: crop's columns, rows to its bottom, power-of-2 scale": region,
        "crop-aware at the smallest M/8 scale (1/8 .. 7/8) that covers 224": lambda i: decode_at_eighths(plain[i], boxes[i]),
        "cut at restart markers per MCU row, then crop-aware (incl. the cut)": cut(by_row, False),
        "cut at restart markers per MCU, then crop-aware (incl. the cut)": cut(by_mcu, True),
        "the per-MCU cut alone (building the smaller JPEG)": lambda i: cut_only(by_mcu, True, i),
        "resize of the decoded crop to 224 (every route)": lambda i: resize_square(decoded[i], 224),
    }
    timings: dict[str, list[float]] = {name: [] for name in rows}
    for _ in range(args.rounds):  # interleaved rounds: a noisy neighbour slows every row alike
        for name, fn in rows.items():
            start = time.perf_counter()
            for i in range(len(plain)):
                fn(i)
            timings[name].append((time.perf_counter() - start) / len(plain) * 1e6)
    same = {name: sum(np.array_equal(decoded[i], fn(i)) for i in range(len(plain)))
            for name, fn in rows.items() if name.startswith("cut at")}
    base = statistics.median(timings["decode_size=224 route: whole image at its DCT scale"])
    tree = os.path.basename(os.path.normpath(args.tree))
    lines = [
        f"{len(plain)} photos of `{tree}`, re-encoded by Pillow at q95 4:2:0 (with restart markers: per MCU row "
        f"+{sum(map(len, by_row)) / sum(map(len, plain)) - 1:.1%}, per MCU +{sum(map(len, by_mcu)) / sum(map(len, plain)) - 1:.1%} bytes); "
        f"one RandomResizedCrop(224) per photo; one core; median of {args.rounds} interleaved rounds.",
        "",
        "| per crop | us | x the decode_size route's decode |",
        "| --- | ---: | ---: |",
    ]
    for name in rows:
        median = statistics.median(timings[name])
        lines.append(f"| {name} | {median:,.0f} | {base / median:.2f}x |")
    lines += ["", "Cut JPEGs whose pixels equal the crop-aware decode's: "
              + "; ".join(f"{name.split(',')[0]}: {count} of {len(plain)}" for name, count in same.items())]
    text = "\n".join(lines) + "\n"
    print(text)
    os.makedirs(args.out, exist_ok=True)
    with open(os.path.join(args.out, f"crop_decode_{tree}.md"), "w") as f:
        f.write(text)
    with open(os.path.join(args.out, f"crop_decode_{tree}.json"), "w") as f:
        json.dump({"tree": tree, "images": len(plain), "timings_us": timings, "pixels_equal": same}, f, indent=1)


if __name__ == "__main__":
    main()
