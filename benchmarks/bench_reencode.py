"""What a training-ready store costs: disk and pixels, for each short-side cap and JPEG quality.

usage::

    python benchmarks/bench_reencode.py --tree PHOTOS [--out bench_out/reencode] [--workers 2] [--limit N]

For each ``(short_side, quality)`` it converts the tree with ``storage="reencode"`` and compares,
image by image, what a training pipeline gets from the store against what it gets from the
original files (torchvision ``ImageFolder``):

- evaluation: ``Resize(256)``, ``CenterCrop(224)``;
- training: ``RandomResizedCrop(224)``'s crop at the same relative place in both (the crop a
  given random draw picks in the original, scaled to the smaller image), resized to 224.

It reports the store's size against the tree's and the PSNR (dB) of each pipeline's output,
as the median over images and the 5th percentile (the worst images). Writes ``reencode.json`` and
``reencode.md``.
"""

from __future__ import annotations

import argparse
import json
import math
import os
import random
import sys

import numpy as np
import torch
from torchvision import transforms as T
from torchvision.datasets import ImageFolder
from torchvision.transforms import functional as F

import torchpack

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from bench_suite import allocated_bytes, convert_all, log, tree_allocated_bytes  # noqa: E402

SETTINGS = [(256, 90), (256, 95), (320, 90), (384, 90), (512, 90)]
EVAL = T.Compose([T.Resize(256), T.CenterCrop(224), T.PILToTensor()])


def psnr(a: torch.Tensor, b: torch.Tensor) -> float:
    mse = float(((a.float() - b.float()) ** 2).mean())
    return 99.0 if mse == 0 else 10 * math.log10(255.0**2 / mse)


def training_crop(image, box: tuple[float, float, float, float]) -> torch.Tensor:
    """The RandomResizedCrop box ``(top, left, height, width)``, in fractions of the image, resized to 224."""
    width, height = image.size
    top, left, h, w = box
    return F.pil_to_tensor(F.resized_crop(image, round(top * height), round(left * width), max(1, round(h * height)), max(1, round(w * width)), [224, 224], antialias=True))


def crop_boxes(reference: ImageFolder, seed: int = 0) -> list[tuple[float, float, float, float]]:
    """One RandomResizedCrop(224) draw per image, as fractions of that image's size."""
    random.seed(seed)
    torch.manual_seed(seed)
    boxes = []
    for path, _ in reference.samples:
        image = reference.loader(path)
        top, left, h, w = T.RandomResizedCrop.get_params(image, scale=(0.08, 1.0), ratio=(3 / 4, 4 / 3))
        boxes.append((top / image.height, left / image.width, h / image.height, w / image.width))
    return boxes


def measure(reference: ImageFolder, store: str, boxes, indices) -> dict[str, float]:
    dataset = torchpack.LMDBImageFolder(store)
    evaluation, training = [], []
    for i in indices:
        original, copy = reference[i][0], dataset[i][0]
        evaluation.append(psnr(EVAL(original), EVAL(copy)))
        training.append(psnr(training_crop(original, boxes[i]), training_crop(copy, boxes[i])))
    return {
        "eval_psnr_median": float(np.median(evaluation)),
        "eval_psnr_p5": float(np.percentile(evaluation, 5)),
        "train_psnr_median": float(np.median(training)),
        "train_psnr_p5": float(np.percentile(training, 5)),
    }


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--tree", required=True, help="an ImageFolder tree of photos")
    ap.add_argument("--out", default="bench_out/reencode")
    ap.add_argument("--workers", type=int, default=2)
    ap.add_argument("--limit", type=int, default=1000, help="images compared per setting (default 1000, spread over the tree)")
    ap.add_argument("--settings", help="short_side:quality,... (default: 256:90,256:95,320:90,384:90,512:90)")
    args = ap.parse_args(argv)
    settings = SETTINGS if not args.settings else [tuple(map(int, s.split(":"))) for s in args.settings.split(",")]
    os.makedirs(args.out, exist_ok=True)
    reference = ImageFolder(args.tree)
    indices = np.linspace(0, len(reference) - 1, min(args.limit, len(reference))).astype(int).tolist()
    boxes = crop_boxes(reference)
    tree_size = tree_allocated_bytes(args.tree)
    jobs = [
        (args.tree, os.path.join(args.out, f"s{side}_q{quality}.lmdb"), {"workers": args.workers, "storage": "reencode", "short_side": side, "quality": quality})
        for side, quality in settings
    ]
    converted = convert_all(jobs)
    rows = []
    for (side, quality), (_, store, _), result in zip(settings, jobs, converted):
        row = {"short_side": side, "quality": quality, "size_of_tree": allocated_bytes([store]) / tree_size, "convert_img_s": result["images_per_second"]}
        row.update(measure(reference, store, boxes, indices))
        rows.append(row)
        log(f"short side {side}, quality {quality}: {row}")
        os.remove(store)
    lines = [
        f"{len(reference)} images ({args.tree}), {tree_size / 2**20:,.0f} MiB; PSNR over {len(indices)} of them, "
        "store against the original files (higher is closer; 40 dB is hard to see, 99 means identical).",
        "",
        "| short side | quality | size of the tree | eval PSNR median / worst 5% | training-crop PSNR median / worst 5% | convert img/s |",
        "| ---: | ---: | ---: | ---: | ---: | ---: |",
    ]
    for r in rows:
        lines.append(
            f"| {r['short_side']} | {r['quality']} | {r['size_of_tree']:.1%} | {r['eval_psnr_median']:.1f} / {r['eval_psnr_p5']:.1f} dB | "
            f"{r['train_psnr_median']:.1f} / {r['train_psnr_p5']:.1f} dB | {r['convert_img_s']:,.0f} |"
        )
    text = "\n".join(lines) + "\n"
    print(text)
    with open(os.path.join(args.out, "reencode.md"), "w", encoding="utf-8") as f:
        f.write(text)
    with open(os.path.join(args.out, "reencode.json"), "w", encoding="utf-8") as f:
        json.dump({"tree": args.tree, "rows": rows}, f, indent=2)
    return 0


if __name__ == "__main__":
    sys.exit(main())
