"""Bounds: the same decode and transforms on bytes already in memory, and what a DataLoader alone delivers."""

from __future__ import annotations

import io
import math
import multiprocessing
import time

import numpy as np
import simplejpeg
import torch
from PIL import Image
from torch.utils.data import Dataset

import torchpack
from torchpack.batch import batch_tensor
from torchpack.decode import jpeg_scale
from torchpack.ingest import check_image

from .common import PIL_TRANSFORM, SHORT_SIDE, TENSOR_TRANSFORM, TINY_BATCH


_BLOBS: list[bytes] = []


def pil_path(data: bytes) -> torch.Tensor:
    """ImageFolder's loader plus the PIL transform, on bytes in memory."""
    with Image.open(io.BytesIO(data)) as image:
        return PIL_TRANSFORM(image.convert("RGB"))


def scaled_tensor_path(data: bytes) -> torch.Tensor:
    """simplejpeg's scaled decode (the smallest 1/2, 1/4, 1/8 still covering 256) plus the tensor transform."""
    height, width, _, _ = simplejpeg.decode_jpeg_header(data)
    scale = jpeg_scale(height, width, SHORT_SIDE)
    pixels = simplejpeg.decode_jpeg(
        data, colorspace="RGB", min_height=math.ceil(height / scale), min_width=math.ceil(width / scale)
    )
    return TENSOR_TRANSFORM(torch.from_numpy(pixels).permute(2, 0, 1))


def full_decode(data: bytes) -> tuple[int, int]:
    """A full Pillow decode to RGB, as ImageFolder's loader does."""
    with Image.open(io.BytesIO(data)) as image:
        return image.convert("RGB").size


BOUND_FUNCTIONS = {
    "pil": pil_path,
    "scaled_tensor": scaled_tensor_path,
    "full_decode": full_decode,
    "check": check_image,  # the converter's own check, as its workers run it
}


def _bound_init() -> None:
    torch.set_num_threads(1)  # as in DataLoader workers


def _bound_chunk(task: tuple[str, int, int]) -> int:
    function = BOUND_FUNCTIONS[task[0]]
    for i in range(task[1], task[2]):
        function(_BLOBS[i])
    return task[2] - task[1]


def decode_bound(blobs: list[bytes], function: str, workers: int, min_seconds: float, chunk: int = 16) -> float:
    """Images/s of ``function`` over in-memory ``blobs``: a pool of ``workers`` forked processes, or this one (0)."""
    global _BLOBS
    _BLOBS = blobs  # inherited by the forked workers: no bytes cross a pipe
    tasks = [(function, i, min(i + chunk, len(blobs))) for i in range(0, len(blobs), chunk)]
    images, started = 0, None
    if workers == 0:
        _bound_chunk(tasks[0])
        started = time.perf_counter()
        while time.perf_counter() - started < min_seconds:
            for task in tasks:
                images += _bound_chunk(task)
                if time.perf_counter() - started >= min_seconds:
                    break
    else:
        with multiprocessing.get_context("fork").Pool(workers, initializer=_bound_init) as pool:
            pool.map(_bound_chunk, tasks[: 2 * workers])  # warm up
            started = time.perf_counter()
            while time.perf_counter() - started < min_seconds:
                images += sum(pool.imap_unordered(_bound_chunk, tasks))
    elapsed = time.perf_counter() - started
    _BLOBS = []
    return images / elapsed


class TransportOnly(Dataset):
    """Ready-made batches, written once into shared memory and sent: what the DataLoader alone can deliver.

    ``touch=False`` sends memory it never wrote: the kernel maps it without zeroing it page by
    page, which no real batch can skip; kept as a second, looser ceiling.
    """

    def __init__(self, size: int, shape: tuple[int, ...] = (3, 28, 28), touch: bool = True) -> None:
        self.size = size
        self.shape = shape
        self.touch = touch
        self.template = torch.randint(0, 256, (TINY_BATCH, *shape), dtype=torch.uint8)

    def __len__(self) -> int:
        return self.size

    def __getitems__(self, indices: list[int]) -> torchpack.StackedBatch:
        images = batch_tensor((len(indices), *self.shape))
        if self.touch:
            images.copy_(self.template[: len(indices)])
        return torchpack.StackedBatch(images, torch.zeros(len(indices), dtype=torch.int64))


def gather_rate(pixels: np.ndarray, batch_size: int, min_seconds: float) -> float:
    """Images/s of a numpy gather of shuffled batches of rows from RAM into new tensors, in this process."""
    rng = np.random.default_rng(0)
    images, started = 0, time.perf_counter()
    while time.perf_counter() - started < min_seconds:
        order = rng.permutation(len(pixels))
        for start in range(0, len(order), batch_size):
            torch.from_numpy(pixels[order[start : start + batch_size]])
            images += min(batch_size, len(order) - start)
            if time.perf_counter() - started >= min_seconds:
                break
    return images / (time.perf_counter() - started)
