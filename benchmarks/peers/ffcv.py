"""FFCV: ``DatasetWriter`` with an ``RGBImageField``, read by its own threaded ``Loader`` (always in a job interpreter)."""

from __future__ import annotations

from torchvision.datasets import ImageFolder

from suite.common import CROP, SHORT_SIDE

from .common import FIRST_K, TRAINING, VALIDATION, Adapter, Cap, Probe, Route, Store

# FFCV's ImageNet recipe (ffcv-imagenet README, ResNet-50 data): images capped at 500 px, JPEG quality 90,
# 50% of them JPEG and 50% raw ("proportion"); the two rows here are its two ends, all JPEG and all raw.
# It caps the *longer* side, so the 224 crop of 0.875 x the short side is hardly ever upsampled.
FFCV_MAX_RESOLUTION = 500
FFCV_QUALITY = 90
# The training comparison's JPEG store: max_resolution=256 against torchpack's training-ready store
# (short side 256, q90). FFCV caps the longer side, so at 256 it keeps fewer pixels than that store
# (the rows' stored MP says how many).
FFCV_TRAIN_MAX_RESOLUTION = 256


def ffcv_write(src: str, dst: str, group: str, mode: str, workers: int, max_resolution: int | None = None) -> None:
    """DatasetWriter with an ``RGBImageField``; ``max_resolution=None`` keeps every image at its size."""
    from ffcv.fields import IntField, RGBImageField
    from ffcv.writer import DatasetWriter

    if group == "photo":
        image = RGBImageField(write_mode=mode, max_resolution=max_resolution, jpeg_quality=FFCV_QUALITY)
    else:
        image = RGBImageField(write_mode="raw")
    writer = DatasetWriter(dst, {"image": image, "label": IntField()}, num_workers=max(workers, 1))
    writer.from_indexed_dataset(ImageFolder(src))  # FFCV's docs feed it a torchvision dataset of PIL images


def ffcv_loader(
    store: str, group: str, workers: int, batch: int, order: str = "RANDOM", indices=None, pipeline: str = VALIDATION
):
    """FFCV's Loader; photos with its fused decode + crop + resize: the ffcv-imagenet validation pipeline
    (center crop), or its training pipeline (``RandomResizedCropRGBImageDecoder`` and ``RandomHorizontalFlip``)."""
    from ffcv.fields.decoders import (
        CenterCropRGBImageDecoder, IntDecoder, RandomResizedCropRGBImageDecoder, SimpleRGBImageDecoder,
    )
    from ffcv.loader import Loader, OrderOption
    from ffcv.transforms import RandomHorizontalFlip, ToTensor, ToTorchImage

    if group != "photo":
        image = [SimpleRGBImageDecoder()]
    elif pipeline == TRAINING:  # scale (0.08, 1) and ratio (3/4, 4/3) by default, as torchvision's
        image = [RandomResizedCropRGBImageDecoder((CROP, CROP)), RandomHorizontalFlip()]
    else:
        image = [CenterCropRGBImageDecoder((CROP, CROP), ratio=CROP / SHORT_SIDE)]
    return Loader(
        store,
        batch_size=batch,
        num_workers=max(workers, 1),
        order=getattr(OrderOption, order),
        os_cache=True,  # the store is in the page cache, as every other row's
        drop_last=False,  # every image of the epoch, as the other rows
        indices=indices,
        pipelines={"image": [*image, ToTensor(), ToTorchImage()], "label": [IntDecoder(), ToTensor()]},
    )


class FFCVAdapter(Adapter):
    system = "FFCV"
    modules = ("ffcv",)
    distribution = "ffcv"
    isolated = True

    def stores(self, group: str) -> list[Store]:
        if group == "photo":
            m, cap, t = FFCV_MAX_RESOLUTION, Cap("long", FFCV_MAX_RESOLUTION), FFCV_TRAIN_MAX_RESOLUTION
            return [
                # the ffcv-imagenet recipe's two ends: all JPEG and all raw, long side capped at 500
                Store(f"jpg q{FFCV_QUALITY}", ".ffcv", convert=lambda s, d, w: ffcv_write(s, d, "photo", "jpg", w, m),
                      reencoded=True, cap=cap),
                Store("raw", ".ffcv", convert=lambda s, d, w: ffcv_write(s, d, "photo", "raw", w, m), cap=cap, raw_photos=True),
                # decoded pixels at full size (max_resolution=None: nothing is resized): FFCV's lossless store
                Store("raw full", ".ffcv", convert=lambda s, d, w: ffcv_write(s, d, "photo", "raw", w), raw_photos=True),
                # for the training pipeline: JPEG q90, long side capped at 256
                Store(f"jpg q{FFCV_QUALITY} max {t}", ".ffcv", convert=lambda s, d, w: ffcv_write(s, d, "photo", "jpg", w, t),
                      reencoded=True, cap=Cap("long", t)),
            ]
        return [Store("raw", ".ffcv", convert=lambda s, d, w: ffcv_write(s, d, "tiny", "raw", w))]

    def routes(self, group: str) -> list[Route]:
        def probe(store: str) -> Probe:
            k = FIRST_K[group]

            def iterate():
                for images, targets in ffcv_loader(store, group, 1, k, "SEQUENTIAL", indices=list(range(k))):
                    for image, target in zip(images, targets.view(-1).tolist()):
                        yield image.contiguous(), target

            return Probe(iterate=iterate, notes=["Loader only: no dataset object, len() or dataset[i]"])

        w = self.settings.workers
        loader = lambda store, workers, batch: ffcv_loader(store, group, workers, batch)  # noqa: E731
        train = lambda store, workers, batch: ffcv_loader(store, group, workers, batch, pipeline=TRAINING)  # noqa: E731
        if group == "photo":
            m, t, q = FFCV_MAX_RESOLUTION, FFCV_TRAIN_MAX_RESOLUTION, FFCV_QUALITY
            rrc = "fused RandomResizedCrop decode + RandomHorizontalFlip, Loader"
            return [
                Route(f"jpg q{q} long side {m}, fused center crop, Loader", f"jpg q{q}", loader=loader, probe=probe, threads=w),
                Route(f"raw long side {m}, fused center crop, Loader", "raw", loader=loader, probe=probe, threads=w),
                Route("raw full size (max_resolution=None), fused center crop, Loader", "raw full", loader=loader, probe=probe,
                      threads=w),
                Route(f"jpg q{q} long side {t}, {rrc}", f"jpg q{q} max {t}", loader=train, pipeline=TRAINING, threads=w),
                Route(f"jpg q{q} long side {m}, {rrc}", f"jpg q{q}", loader=train, pipeline=TRAINING, threads=w),
                Route(f"raw full size (max_resolution=None), {rrc}", "raw full", loader=train, pipeline=TRAINING, threads=w),
            ]
        return [Route("raw field, Loader (threads)", "raw", loader=loader, probe=probe, threads=w)]
