"""Hugging Face datasets: ``load_dataset("imagefolder")`` + ``save_to_disk``, read by ``load_from_disk`` in a DataLoader."""

from __future__ import annotations

import os
import shutil
import tempfile

from torchvision.datasets import ImageFolder

from suite.common import PIL_TRANSFORM, TRAIN_PIL_TO_TENSOR

from .common import (
    TRAINING, VALIDATION, Adapter, DictToTuple, Probe, Route, Store, chw_pixels, dataset_probe, first_image, tree_samples,
)


def hf_tiny_rows(items: list[tuple[str, int]]):
    for path, target in items:
        yield {"image": chw_pixels(path), "label": target}


def hf_convert(src: str, dst: str, group: str, workers: int) -> None:
    """Photos: the ``imagefolder`` builder, then ``save_to_disk`` (which embeds the image bytes).
    Tiny: ``from_generator`` into an ``Array3D`` uint8 column, HF's fixed-shape array type."""
    import datasets

    cache = tempfile.mkdtemp(prefix="hf_cache_", dir=os.path.dirname(os.path.abspath(dst)))
    try:
        num_proc = workers if workers > 1 else None
        if group == "photo":
            ds = datasets.load_dataset("imagefolder", data_dir=src, split="train", cache_dir=cache, num_proc=num_proc)
        else:
            classes = ImageFolder(src).classes
            features = datasets.Features(
                {"image": datasets.Array3D(shape=(3, 28, 28), dtype="uint8"), "label": datasets.ClassLabel(names=classes)}
            )
            ds = datasets.Dataset.from_generator(
                hf_tiny_rows, features=features, gen_kwargs={"items": tree_samples(src)}, num_proc=num_proc, cache_dir=cache
            )
        ds.save_to_disk(dst, num_proc=num_proc)
    finally:
        shutil.rmtree(cache, ignore_errors=True)


def hf_photo_transform(batch: dict) -> dict:
    return {"image": [PIL_TRANSFORM(image.convert("RGB")) for image in batch["image"]], "label": batch["label"]}


def hf_train_transform(batch: dict) -> dict:
    return {"image": [TRAIN_PIL_TO_TENSOR(image.convert("RGB")) for image in batch["image"]], "label": batch["label"]}


class HFAdapter(Adapter):
    system = "HF datasets"
    modules = ("datasets",)
    distribution = "datasets"

    def stores(self, group: str) -> list[Store]:
        return [Store("save_to_disk", "", convert=lambda s, d, w, g=group: hf_convert(s, d, g, w))]

    def _dataset(self, store: str, group: str, pipeline: str = VALIDATION):
        import datasets

        ds = datasets.load_from_disk(store)
        if group != "photo":
            return ds.with_format("torch")
        return ds.with_transform(hf_train_transform if pipeline == TRAINING else hf_photo_transform)

    def routes(self, group: str) -> list[Route]:
        def probe(store: str) -> Probe:
            ds = self._dataset(store, group)
            label = ds.features["label"]  # a ClassLabel: the class names are kept, though not as attributes
            return dataset_probe(
                ds,
                unpack=first_image,
                classes=list(label.names),
                class_to_idx={n: label.str2int(n) for n in label.names},
                notes=["classes from features['label'].names"],
            )

        what = "with_transform, PIL transforms" if group == "photo" else "Array3D, with_format('torch')"
        routes = [
            Route(
                f"load_from_disk, {what}, DataLoader",
                "save_to_disk",
                dataset=lambda store: self._dataset(store, group),
                collate=DictToTuple(),
                probe=probe,
            )
        ]
        if group == "photo":
            routes.append(Route(
                "load_from_disk, with_transform, PILToTensor + v2 RandomResizedCrop, flip, DataLoader", "save_to_disk",
                dataset=lambda store: self._dataset(store, group, TRAINING), collate=DictToTuple(), pipeline=TRAINING,
            ))
        return routes
