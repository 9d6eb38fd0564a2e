"""torchpack: ``torchpack.convert`` into LMDB and HDF5 stores (lossless, re-encoded, raw), read by each of its routes."""

from __future__ import annotations

import torchpack
from suite.common import CROP, PIL_TRANSFORM, SHORT_SIDE, TENSOR_TRANSFORM, TRAIN_DECODE_SIZE, TRAIN_TENSOR_TRANSFORM
from suite.train_routes import crop_aware, crop_aware_missing

from .common import TRAINING, Adapter, Cap, Route, Store

# torchpack's re-encoded store at a pixel budget comparable to FFCV's: on photos of aspect ~4:3 a
# long side of 500 is a short side of ~375-400, so short side 384 stores about as many pixels.
TP_COMPARABLE_SHORT_SIDE = 384
TP_QUALITY = 90

# -- torchpack: one small function per route, so that new routes are one more function -------------


def tp_default(store: str):
    """The drop-in: LMDB, PIL decode, the same transforms as ImageFolder (pixel-identical)."""
    return torchpack.LMDBImageFolder(store, transform=PIL_TRANSFORM)


def tp_fast(store: str):
    """The fast path: scaled JPEG decode to a uint8 tensor, then v2 Resize(256)+CenterCrop(224)."""
    return torchpack.LMDBImageFolder(store, transform=TENSOR_TRANSFORM, decode="tensor", decode_size=SHORT_SIDE)


def tp_tensor(store: str):
    """Decode to a uint8 tensor (JPEG without PIL; raw pixels with one copy), then v2 Resize(256)+CenterCrop(224)."""
    cls = torchpack.HDF5ImageFolder if store.endswith(".h5") else torchpack.LMDBImageFolder
    return cls(store, transform=TENSOR_TRANSFORM, decode="tensor")


class tp_fused:  # noqa: N801 - used like the functions above
    """torchpack's fastest route: decode to a tensor (scaled, for JPEG), then the crop-first fused
    ``ResizedCenterCrop`` (FFCV's geometry), in ``threads`` threads of the training process.

    A class, not a closure: the route is picklable like the others.
    """

    def __init__(self, threads: int, decode_size: int | None = SHORT_SIDE) -> None:
        self.threads = threads
        self.decode_size = decode_size

    def __call__(self, store: str):
        cls = torchpack.HDF5ImageFolder if store.endswith(".h5") else torchpack.LMDBImageFolder
        return cls(
            store, transform=torchpack.ResizedCenterCrop(CROP, CROP / SHORT_SIDE), decode="tensor",
            decode_size=self.decode_size, threads=self.threads,
        )


class tp_train:  # noqa: N801 - used like the functions above
    """The training pipeline: decode to a uint8 tensor (scaled to ``decode_size`` for JPEG), then v2
    RandomResizedCrop(224) and a horizontal flip, in ``threads`` threads of the reading process."""

    def __init__(self, threads: int = 1, decode_size: int | None = None) -> None:
        self.threads = threads
        self.decode_size = decode_size

    def __call__(self, store: str):
        return torchpack.LMDBImageFolder(
            store, transform=TRAIN_TENSOR_TRANSFORM, decode="tensor", decode_size=self.decode_size, threads=self.threads
        )


class tp_crop_aware:  # noqa: N801 - used like the functions above
    """torchpack's crop-aware training route (``decode_crop=RandomResizedCropDecode(224)``), once it exists."""

    def __init__(self, threads: int) -> None:
        self.threads = threads

    def __call__(self, store: str):
        return crop_aware(torchpack.LMDBImageFolder, store, self.threads)


def tp_raw(store: str):
    """Raw (decoded) tiny images: whole-batch reads through ``__getitems__`` with SkipBadCollate."""
    return torchpack.HDF5ImageFolder(store, decode="tensor")


#: The training comparison with FFCV's JPEG store at max_resolution=256: the same rule (the long side
#: capped at 256, q90), so the same pixel budget.
TP_TRAIN_LONG_SIDE = 256


def tp_long_side_store(long_side: int) -> Store:
    """torchpack's re-encoded store with the long side capped, as FFCV's ``max_resolution`` caps it."""
    options = {"storage": "reencode", "long_side": long_side, "quality": TP_QUALITY}
    return Store(f"lmdb reencode l{long_side}", ".lmdb", torchpack_options=options, reencoded=True, cap=Cap("long", long_side))


def tp_reencode_store(short_side: int) -> Store:
    """torchpack's re-encoded store: JPEG q90 with the short side capped at ``short_side``."""
    options = {"storage": "reencode", "short_side": short_side, "quality": TP_QUALITY}
    return Store(f"lmdb reencode s{short_side}", ".lmdb", torchpack_options=options, reencoded=True, cap=Cap("short", short_side))


class TorchpackAdapter(Adapter):
    system = "torchpack"
    modules = ("torchpack",)
    distribution = "torchpack"

    def fused_routes(self) -> list[Route]:
        """Each photo store read by torchpack's fastest route: in the training process, with as many
        decode threads as the other systems get workers, and the crop-first fused resize."""
        t, s, c = self.settings.workers, SHORT_SIDE, TP_COMPARABLE_SHORT_SIDE
        fused = f"in-process, threads={t}, fused crop+resize"
        workers = f"{t} workers, fused crop+resize"
        return [
            Route(f"LMDB fast (decode_size=256), {fused}", "lmdb", dataset=tp_fused(t), workers=0, threads=t),
            Route(f"HDF5 raw, full size, {fused}", "hdf5 raw", dataset=tp_fused(t, None), workers=0, threads=t),
            Route(f"HDF5 raw, full size, {workers}", "hdf5 raw", dataset=tp_fused(1, None)),
            Route(f"HDF5 raw short side {c}, {fused}", f"hdf5 raw s{c}", dataset=tp_fused(t, None), workers=0, threads=t),
            Route(f"HDF5 raw short side {c}, {workers}", f"hdf5 raw s{c}", dataset=tp_fused(1, None)),
            Route(f"LMDB reencode q{TP_QUALITY} short side {s}, {fused}", f"lmdb reencode s{s}", dataset=tp_fused(t), workers=0, threads=t),
            Route(f"LMDB reencode q{TP_QUALITY} short side {c}, {fused}", f"lmdb reencode s{c}", dataset=tp_fused(t), workers=0, threads=t),
            Route(f"LMDB reencode q{TP_QUALITY} short side {c}, {workers}", f"lmdb reencode s{c}", dataset=tp_fused(1)),
        ]

    def training_routes(self) -> list[Route]:
        """The training pipeline on the lossless and the training-ready store, with workers and with
        decode threads in the training process; and the crop-aware route, skipped until it exists."""
        t, s = self.settings.workers, SHORT_SIDE
        lossless, ready = "lmdb", f"lmdb reencode s{s}"
        rrc = "v2 RandomResizedCrop, flip"
        routes = []
        for name, store, size in (
            (f"LMDB lossless, tensor (decode_size={TRAIN_DECODE_SIZE}) + {rrc}", lossless, TRAIN_DECODE_SIZE),
            (f"LMDB reencode q{TP_QUALITY} short side {s} (training-ready), tensor + {rrc}", ready, None),
        ):
            routes += [
                Route(f"{name}, {t} workers", store, dataset=tp_train(1, size), pipeline=TRAINING),
                Route(f"{name}, num_workers=0, threads={t}", store, dataset=tp_train(t, size), workers=0, threads=t,
                      pipeline=TRAINING),
            ]
        long_side = f"lmdb reencode l{TP_TRAIN_LONG_SIDE}"
        for name, store in (
            ("LMDB lossless", lossless),
            (f"LMDB reencode q{TP_QUALITY} short side {s} (training-ready)", ready),
            (f"LMDB reencode q{TP_QUALITY} long side {TP_TRAIN_LONG_SIDE} (FFCV's max_resolution)", long_side),
        ):
            crop = f"{name}, crop-aware decode_crop=RandomResizedCropDecode(224, flip=True)"
            routes.append(Route(f"{crop}, num_workers=0, threads={t}", store, dataset=tp_crop_aware(t), workers=0, threads=t,
                                pipeline=TRAINING, skip=crop_aware_missing))
            routes.append(Route(f"{crop}, {t} workers", store, dataset=tp_crop_aware(1), pipeline=TRAINING, skip=crop_aware_missing))
        return routes

    def stores(self, group: str) -> list[Store]:
        if group == "photo":
            return [
                Store("lmdb", ".lmdb", torchpack_options={}),
                tp_reencode_store(SHORT_SIDE),  # our recipe: ImageNet's evaluation resize
                tp_reencode_store(TP_COMPARABLE_SHORT_SIDE),  # about FFCV's pixel budget
                tp_long_side_store(TP_TRAIN_LONG_SIDE),  # FFCV's max_resolution=256 rule, for the training pipeline
                # decoded pixels at full size: the counterpart of FFCV's raw field without resizing
                Store("hdf5 raw", ".h5", torchpack_options={"storage": "raw", "raw_compression": "none"}, raw_photos=True),
                # decoded pixels at about FFCV's pixel budget: the counterpart of its resized raw field
                Store(
                    f"hdf5 raw s{TP_COMPARABLE_SHORT_SIDE}",
                    ".h5",
                    torchpack_options={"storage": "raw", "raw_compression": "none", "short_side": TP_COMPARABLE_SHORT_SIDE},
                    cap=Cap("short", TP_COMPARABLE_SHORT_SIDE),
                    raw_photos=True,
                ),
            ]
        return [Store("hdf5 raw", ".h5", torchpack_options={"storage": "raw", "raw_compression": "none"})]

    def routes(self, group: str) -> list[Route]:
        if group == "photo":
            s, c = SHORT_SIDE, TP_COMPARABLE_SHORT_SIDE
            return [
                Route("LMDB default (PIL)", "lmdb", dataset=tp_default),
                Route("LMDB fast (tensor, decode_size=256)", "lmdb", dataset=tp_fast),
                Route("HDF5 raw, full size, tensor + v2", "hdf5 raw", dataset=tp_tensor),
                Route(f"LMDB reencode q{TP_QUALITY} short side {s}, PIL", f"lmdb reencode s{s}", dataset=tp_default),
                Route(f"LMDB reencode q{TP_QUALITY} short side {s}, tensor", f"lmdb reencode s{s}", dataset=tp_fast),
                Route(f"LMDB reencode q{TP_QUALITY} short side {c}, tensor + v2", f"lmdb reencode s{c}", dataset=tp_tensor),
                *self.fused_routes(),
                *self.training_routes(),
            ]
        collate = torchpack.SkipBadCollate()
        return [
            Route(f"HDF5 raw, batched, {self.settings.workers} workers", "hdf5 raw", dataset=tp_raw, collate=collate, array_batches=True),
            Route(
                "HDF5 raw, whole batches in-process (num_workers=0, ArrayBatchSampler: recommended for raw tiny stores)",
                "hdf5 raw", dataset=tp_raw, collate=collate, workers=0, array_batches=True,
            ),
        ]
