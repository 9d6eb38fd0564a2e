"""What the training routes' pixels are worth: each route's crop against the crop of a full decode, with the same crop.

usage::

    python benchmarks/bench_crop_quality.py --tree PHOTOS [--every 10] [--out benchmarks/results]

For every ``--every``-th JPEG of the tree, one ``RandomResizedCrop(224)`` crop is drawn; the
reference is ``v2.functional.resized_crop`` of the full decode (ImageFolder's pixels) with that
crop. Against it:

- the crop-aware decode (``decode_crop=RandomResizedCropDecode(224)``), which decodes only the
  crop, at a DCT scale only when the crop still covers 224 pixels at that scale;
- ``decode_size=224`` then ``v2.RandomResizedCrop(224)``: the whole image decoded at the smallest
  DCT scale that still covers a short side of 224, then cropped: a small crop of a large photo is
  cut from the reduced image and enlarged.

Reported: how many crops are bit-identical to the reference, and the median and worst-5% PSNR
(99 dB stands for identical). No timing.
"""

from __future__ import annotations

import argparse
import glob
import json
import math
import os

import numpy as np
import simplejpeg
import torch
from torchvision.transforms import v2

from torchpack.crop_decode import RandomResizedCropDecode
from torchpack.decode import jpeg_scale

SIZE = 224


class RecordingCrop(RandomResizedCropDecode):
    """The crop decode, remembering its last crop (the reference applies the same one)."""

    def params(self, height: int, width: int) -> tuple[int, int, int, int]:
        self.last = super().params(height, width)
        return self.last


def psnr(got: torch.Tensor, want: torch.Tensor) -> float:
    mse = ((got.float() - want.float()) ** 2).mean().item()
    return 99.0 if mse == 0 else 10 * math.log10(255**2 / mse)


def summary(values: list[float]) -> dict[str, float]:
    values = np.array(values)
    return {"identical": float(np.mean(values >= 99)), "median_db": float(np.median(values)), "worst_5pct_db": float(np.percentile(values, 5))}


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--tree", required=True)
    parser.add_argument("--every", type=int, default=10)
    parser.add_argument("--out", default=os.path.join(os.path.dirname(__file__), "results"))
    args = parser.parse_args()
    crop, scores = RecordingCrop(SIZE), {"crop-aware decode": [], "decode_size=224, then RandomResizedCrop": []}
    torch.manual_seed(0)
    for path in sorted(glob.glob(os.path.join(args.tree, "*", "*")))[:: args.every]:
        data = open(path, "rb").read()
        ours = crop.jpeg(data)
        if ours is None:
            continue
        top, left, h, w = crop.last
        full = torch.from_numpy(simplejpeg.decode_jpeg(data, colorspace="RGB")).permute(2, 0, 1)
        reference = v2.functional.resized_crop(full, top, left, h, w, [SIZE, SIZE], antialias=True)
        height, width = full.shape[1:]
        scale = jpeg_scale(height, width, SIZE)
        reduced = simplejpeg.decode_jpeg(data, colorspace="RGB", min_height=math.ceil(height / scale), min_width=math.ceil(width / scale))
        reduced = torch.from_numpy(reduced).permute(2, 0, 1)
        ry, rx = reduced.shape[1] / height, reduced.shape[2] / width
        old = v2.functional.resized_crop(reduced, round(top * ry), round(left * rx), max(1, round(h * ry)), max(1, round(w * rx)), [SIZE, SIZE], antialias=True)
        scores["crop-aware decode"].append(psnr(ours, reference))
        scores["decode_size=224, then RandomResizedCrop"].append(psnr(old, reference))
    rows = {name: summary(values) for name, values in scores.items()}
    count = len(scores["crop-aware decode"])
    lines = [
        f"{count} crops of {args.tree}, each against the crop of a full decode (ImageFolder's pixels) with the same crop:",
        "",
        "| route | bit-identical | median PSNR | worst 5% PSNR |",
        "| --- | ---: | ---: | ---: |",
    ]
    lines += [f"| {name} | {r['identical']:.0%} | {r['median_db']:.1f} dB | {r['worst_5pct_db']:.1f} dB |" for name, r in rows.items()]
    text = "\n".join(lines) + "\n"
    print(text)
    os.makedirs(args.out, exist_ok=True)
    name = "crop_quality_" + os.path.basename(os.path.normpath(args.tree))
    with open(os.path.join(args.out, name + ".md"), "w") as f:
        f.write(text)
    with open(os.path.join(args.out, name + ".json"), "w") as f:
        json.dump({"tree": args.tree, "crops": count, "routes": rows}, f, indent=2)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
