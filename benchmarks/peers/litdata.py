"""LitData: ``litdata.optimize`` into chunks, read by ``StreamingDataset`` in a ``StreamingDataLoader``."""

from __future__ import annotations

import torch
from PIL import Image

from suite.common import TENSOR_TRANSFORM, TRAIN_TENSOR_TRANSFORM

from .common import TRAINING, VALIDATION, Adapter, Probe, Route, Store, chw_pixels, shard_bytes, tree_samples


def lit_photo_item(item: tuple[str, int]) -> dict:
    # A JpegImageFile opened from a file: LitData's JPEG serializer stores the file's bytes as they are.
    return {"image": Image.open(item[0]), "label": item[1]}


def lit_tiny_item(item: tuple[str, int]) -> dict:
    # A fixed-shape uint8 tensor: LitData stores and returns it as is.
    return {"image": torch.from_numpy(chw_pixels(item[0])), "label": item[1]}


def lit_photo_transform(sample: dict) -> tuple[torch.Tensor, int]:
    # LitData decodes JPEG with torchvision.io.decode_jpeg to a uint8 CHW tensor: tensor transforms follow.
    return TENSOR_TRANSFORM(sample["image"]), sample["label"]


def lit_train_transform(sample: dict) -> tuple[torch.Tensor, int]:
    return TRAIN_TENSOR_TRANSFORM(sample["image"]), sample["label"]


def lit_tiny_transform(sample: dict) -> tuple[torch.Tensor, int]:
    return sample["image"], sample["label"]


def lit_optimize(src: str, dst: str, group: str, workers: int) -> None:
    import litdata

    litdata.optimize(
        fn=lit_photo_item if group == "photo" else lit_tiny_item,
        inputs=tree_samples(src),
        output_dir=dst,
        num_workers=max(workers, 1),
        chunk_bytes=shard_bytes(src, group, workers),
        mode="overwrite",
        verbose=False,
    )


class LitDataAdapter(Adapter):
    system = "LitData"
    modules = ("litdata",)
    distribution = "litdata"

    def stores(self, group: str) -> list[Store]:
        return [Store("optimized chunks", "", convert=lambda s, d, w, g=group: lit_optimize(s, d, g, w))]

    def _dataset(self, store: str, group: str, shuffle: bool, pipeline: str = VALIDATION):
        import litdata

        transform = lit_photo_transform if group == "photo" else lit_tiny_transform
        transform = lit_train_transform if pipeline == TRAINING else transform
        return litdata.StreamingDataset(store, shuffle=shuffle, transform=transform)

    def routes(self, group: str) -> list[Route]:
        def loader(store: str, workers: int, batch: int, pipeline: str = VALIDATION):
            import litdata

            # persistent workers as for every other row; LitData still yields each epoch in full
            return litdata.StreamingDataLoader(
                self._dataset(store, group, True, pipeline), batch_size=batch, num_workers=workers,
                persistent_workers=workers > 0,
            )

        def probe(store: str) -> Probe:
            ds = self._dataset(store, group, False)
            return Probe(length=len(ds), iterate=lambda: iter(ds), getitem=lambda i: ds[i])

        what = "decode_jpeg + v2 transforms" if group == "photo" else "uint8 tensors"
        routes = [Route(f"optimize, {what}, StreamingDataLoader", "optimized chunks", loader=loader, probe=probe)]
        if group == "photo":
            routes.append(Route(
                "optimize, decode_jpeg + v2 RandomResizedCrop, flip, StreamingDataLoader", "optimized chunks",
                loader=lambda store, workers, batch: loader(store, workers, batch, TRAINING), pipeline=TRAINING,
            ))
        return routes
