"""Mosaic Streaming: MDS shards written by ``MDSWriter``, read by ``StreamingImageNet`` / ``StreamingDataset`` in a DataLoader."""

from __future__ import annotations

import torch
from PIL import Image

from suite.common import PIL_TRANSFORM, TRAIN_PIL_TO_TENSOR

from .common import TRAINING, VALIDATION, Adapter, Probe, Route, RGBThen, Store, chw_pixels, shard_bytes, tree_samples


def mds_write(src: str, dst: str, group: str, workers: int) -> None:
    """MDSWriter with the columns of Streaming's own ImageNet converter (``x`` jpeg, ``y`` int)."""
    from streaming import MDSWriter

    columns = {"x": "jpeg", "y": "int"} if group == "photo" else {"x": "ndarray:uint8:3,28,28", "y": "int"}
    with MDSWriter(out=dst, columns=columns, size_limit=shard_bytes(src, group, workers)) as out:
        for path, target in tree_samples(src):
            if group == "photo":
                with Image.open(path) as image:  # the jpeg encoding stores an opened JPEG file's bytes as they are
                    out.write({"x": image, "y": target})
            else:
                out.write({"x": chw_pixels(path), "y": target})


def mds_dataset(store: str, group: str, shuffle: bool, batch: int, pipeline: str = VALIDATION):
    """``StreamingImageNet`` (photos: the PIL transforms, or PILToTensor then the v2 training
    transforms) or a two-line StreamingDataset subclass (tiny)."""
    if group == "photo":
        from streaming.vision import StreamingImageNet

        transform = RGBThen(TRAIN_PIL_TO_TENSOR if pipeline == TRAINING else PIL_TRANSFORM)
        return StreamingImageNet(local=store, shuffle=shuffle, batch_size=batch, transform=transform)
    return mosaic_tiny_class()(local=store, shuffle=shuffle, batch_size=batch)


def mosaic_tiny_class() -> type:
    """MosaicTiny subclasses a class of an optional package, so it is made on first use."""
    if "MosaicTiny" in globals():
        return globals()["MosaicTiny"]
    from streaming import StreamingDataset

    class MosaicTiny(StreamingDataset):
        """Streaming's documented way to shape samples: subclass and override ``get_item``."""

        def get_item(self, idx: int):
            sample = super().get_item(idx)
            return torch.tensor(sample["x"]), sample["y"]  # a copy: the decoded array is read-only

    MosaicTiny.__module__, MosaicTiny.__qualname__ = __name__, "MosaicTiny"
    globals()["MosaicTiny"] = MosaicTiny  # so that pickle finds it as peers.mosaic.MosaicTiny
    return MosaicTiny


def __getattr__(name: str):
    if name == "MosaicTiny":  # unpickling in a process that has not made it yet
        return mosaic_tiny_class()
    raise AttributeError(name)


class MosaicAdapter(Adapter):
    system = "Mosaic Streaming"
    modules = ("streaming",)
    distribution = "mosaicml-streaming"

    def stores(self, group: str) -> list[Store]:
        return [Store("MDS shards", "", convert=lambda s, d, w, g=group: mds_write(s, d, g, w))]

    def routes(self, group: str) -> list[Route]:
        def loader(store: str, workers: int, batch: int, pipeline: str = VALIDATION):
            from torch.utils.data import DataLoader

            ds = mds_dataset(store, group, True, batch, pipeline)
            return DataLoader(ds, batch_size=batch, num_workers=workers, persistent_workers=workers > 0)

        def probe(store: str) -> Probe:
            ds = mds_dataset(store, group, False, self.settings.batch(group))
            unpack = lambda item: (item[0], int(item[1]))  # noqa: E731
            return Probe(length=len(ds), iterate=lambda: map(unpack, iter(ds)), getitem=lambda i: unpack(ds[i]))

        what = "StreamingImageNet, PIL transforms" if group == "photo" else "ndarray column"
        routes = [Route(f"MDS, {what}, DataLoader", "MDS shards", loader=loader, probe=probe)]
        if group == "photo":
            routes.append(Route(
                "MDS, StreamingImageNet, PILToTensor + v2 RandomResizedCrop, flip, DataLoader", "MDS shards",
                loader=lambda store, workers, batch: loader(store, workers, batch, TRAINING), pipeline=TRAINING,
            ))
        return routes
