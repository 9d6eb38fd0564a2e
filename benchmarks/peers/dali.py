"""NVIDIA DALI, CPU only: its file reader over an ImageFolder tree, decoded, cropped and resized in its own threads.

DALI reads the tree's files as they are (so its rows over the tree are lossless), and a tree that
``torchpack.export_store`` writes out of torchpack's training-ready store (short side 256, JPEG q90):
the same re-encoded bytes as that store, for a like-for-like training row. Its pipelines run in
``num_threads`` = ``--workers`` threads of the reading process (``device_id=None``: no GPU), and
are read through its PyTorch plugin (``DALIGenericIterator``). Always in a job interpreter: its
threads should not live in the process that forks every other system's DataLoader workers.
"""

from __future__ import annotations

from typing import Iterator

import torch

from suite.common import CROP, SHORT_SIDE

from .common import FIRST_K, TRAINING, VALIDATION, Adapter, Cap, Probe, Route, Store
from .torchpack_routes import TP_QUALITY

READER = "Reader"  # the file reader's name, which the iterator asks for the epoch's size
#: torchpack's training-ready store, which the exported tree is written from.
TP_READY = ("torchpack", f"lmdb reencode s{SHORT_SIDE}")


def dali_pipeline(tree: str, pipeline: str, batch: int, threads: int, shuffle: bool = True):
    """A built CPU pipeline over ``tree``: ``fn.readers.file`` (labels from the sorted folder names, as
    ImageFolder's), then ImageNet's validation or training pipeline, to uint8 CHW.

    Validation: ``decoders.image``, ``resize(resize_shorter=256)``, then one ``crop_mirror_normalize``
    for the centre 224 crop and the CHW layout (DALI's ResNet example's evaluation path). Training:
    ``decoders.image_random_crop`` (decodes only the random crop's region), ``resize`` to 224x224
    (antialiased), ``flip`` on a coin flip, ``crop_mirror_normalize`` to uint8 CHW.
    """
    from nvidia.dali import fn, pipeline_def, types

    @pipeline_def
    def build():
        # pad_last_batch: the last batch of an epoch is padded (the iterator drops the padding), so
        # that every epoch starts at the first sample and holds each sample once.
        jpegs, labels = fn.readers.file(file_root=tree, random_shuffle=shuffle, pad_last_batch=True, name=READER)
        if pipeline == TRAINING:
            images = fn.decoders.image_random_crop(
                jpegs, device="cpu", output_type=types.RGB, random_area=[0.08, 1.0], random_aspect_ratio=[3 / 4, 4 / 3]
            )
            images = fn.resize(images, resize_x=CROP, resize_y=CROP)
            images = fn.flip(images, horizontal=fn.random.coin_flip())
            images = fn.crop_mirror_normalize(images, dtype=types.UINT8, output_layout="CHW")
        else:
            images = fn.decoders.image(jpegs, device="cpu", output_type=types.RGB)
            images = fn.resize(images, resize_shorter=SHORT_SIDE)
            images = fn.crop_mirror_normalize(images, crop=(CROP, CROP), dtype=types.UINT8, output_layout="CHW")
        return images, labels

    pipe = build(batch_size=batch, num_threads=threads, device_id=None)
    pipe.build()
    return pipe


class DaliLoader:
    """A re-iterable of ``(images, targets)`` batches over ``DALIGenericIterator``: one epoch per full iteration.

    The iterator's tensors are DALI's until its next batch: a consumer that keeps one clones it.
    """

    def __init__(self, tree: str, pipeline: str, batch: int, threads: int, shuffle: bool = True) -> None:
        from nvidia.dali.plugin.pytorch import DALIGenericIterator, LastBatchPolicy

        pipe = dali_pipeline(tree, pipeline, batch, threads, shuffle)
        self.iterator = DALIGenericIterator(
            [pipe], ["images", "labels"], reader_name=READER, last_batch_policy=LastBatchPolicy.PARTIAL, auto_reset=True
        )

    def __iter__(self) -> Iterator[tuple[torch.Tensor, torch.Tensor]]:
        for out in self.iterator:
            yield out[0]["images"], out[0]["labels"].view(-1)


def export_ready_store(src: str, dst: str, workers: int) -> None:
    """The exported tree: torchpack's training-ready store written back out as files (``src`` is the store)."""
    import torchpack

    torchpack.export_store(src, dst)


class DALIAdapter(Adapter):
    system = "DALI"
    modules = ("nvidia.dali", "nvidia.dali.plugin.pytorch")
    distribution = "nvidia-dali-cuda120"
    isolated = True

    def stores(self, group: str) -> list[Store]:
        if group != "photo":
            return []
        return [Store(
            "tree exported from torchpack's training-ready store", "", convert=export_ready_store,
            reencoded=True, cap=Cap("short", SHORT_SIDE), source=TP_READY,
        )]

    def routes(self, group: str) -> list[Route]:
        if group != "photo":
            return []
        w, exported = self.settings.workers, self.stores(group)[0].name

        def loader(pipeline: str):
            return lambda tree, workers, batch: DaliLoader(tree, pipeline, batch, workers)

        def probe(tree: str) -> Probe:
            k = FIRST_K[group]

            def iterate() -> Iterator[tuple[torch.Tensor, int]]:
                for images, targets in DaliLoader(tree, VALIDATION, k, 1, shuffle=False):
                    yield from zip(images, targets.tolist())
                    return  # the first batch: ImageFolder's first k samples, if the reader keeps its order

            return Probe(iterate=iterate, notes=["pipeline only: no dataset object, classes, len() or dataset[i]; "
                                                 "the reader's epoch_size() gives the count"])

        reader = "readers.file over the tree"
        train = "decoders.image_random_crop + resize 224 + flip, CPU"
        ready = f"readers.file over the tree exported from torchpack's training-ready store (q{TP_QUALITY} short side {SHORT_SIDE})"
        return [
            Route(f"{reader}, decoders.image + resize_shorter 256 + crop 224, CPU", None, loader=loader(VALIDATION),
                  probe=probe, threads=w),
            Route(f"{reader}, {train}", None, loader=loader(TRAINING), pipeline=TRAINING, threads=w),
            Route(f"{ready}, {train}", exported, loader=loader(TRAINING), pipeline=TRAINING, threads=w),
        ]
