"""WebDataset: tar shards written by ``ShardWriter``, read by its ``WebDataset`` pipeline in a ``WebLoader``."""

from __future__ import annotations

import os

import torch

from suite.common import PIL_TRANSFORM, TRAIN_PIL_TO_TENSOR

from .common import TRAINING, VALIDATION, Adapter, Probe, Route, Store, chw_pixels, shard_bytes, tree_samples


def wds_write(src: str, dst: str, group: str, workers: int) -> None:
    """ShardWriter, as WebDataset's docs write ImageNet: one sample = key + image file + class."""
    import webdataset as wds

    os.makedirs(dst, exist_ok=True)
    size = shard_bytes(src, group, workers)
    with wds.ShardWriter(os.path.join(dst, "shard-%06d.tar"), maxsize=size, maxcount=10**7, verbose=0) as sink:
        for i, (path, target) in enumerate(tree_samples(src)):
            sample = {"__key__": f"{i:08d}", "cls": target}  # no dots: WebDataset splits keys at the first one
            if group == "photo":
                with open(path, "rb") as f:  # the file's bytes under its extension ("jpg")
                    sample[os.path.splitext(path)[1][1:].lower()] = f.read()
            else:
                sample["npy"] = chw_pixels(path)
            sink.write(sample)


def wds_pipeline(store: str, group: str, shuffle: bool, batch: int | None, pipeline: str = VALIDATION):
    """The docs' pipeline: shard shuffle, sample shuffle on the bytes, decode, transform, batch in the workers.

    Photos: the PIL transforms (validation), or PILToTensor then the v2 training transforms."""
    import webdataset as wds

    urls = sorted(os.path.join(store, n) for n in os.listdir(store) if n.endswith(".tar"))
    ds = wds.WebDataset(urls, shardshuffle=100 if shuffle else False, empty_check=False)
    if shuffle:
        ds = ds.shuffle(1000)
    if group == "photo":
        transform = TRAIN_PIL_TO_TENSOR if pipeline == TRAINING else PIL_TRANSFORM
        ds = ds.decode("pil").to_tuple("jpg;jpeg;png", "cls").map_tuple(transform, int)
    else:
        ds = ds.decode().to_tuple("npy", "cls")
    return ds.batched(batch) if batch else ds


class WebDatasetAdapter(Adapter):
    system = "WebDataset"
    modules = ("webdataset",)
    distribution = "webdataset"

    def stores(self, group: str) -> list[Store]:
        return [Store("tar shards", "", convert=lambda s, d, w, g=group: wds_write(s, d, g, w))]

    def routes(self, group: str) -> list[Route]:
        def loader(store: str, workers: int, batch: int, pipeline: str = VALIDATION):
            import webdataset as wds

            return wds.WebLoader(
                wds_pipeline(store, group, True, batch, pipeline), batch_size=None, num_workers=workers,
                persistent_workers=workers > 0,
            )

        def probe(store: str) -> Probe:
            def iterate():
                for image, target in wds_pipeline(store, group, False, None):
                    yield torch.as_tensor(image), int(target)

            return Probe(iterate=iterate, notes=["IterableDataset: no len, no dataset[i]"])

        what = "decode('pil') + the PIL transforms" if group == "photo" else "decoded .npy arrays"
        routes = [Route(f"tar shards, {what}, WebLoader", "tar shards", loader=loader, probe=probe)]
        if group == "photo":
            routes.append(Route(
                "tar shards, decode('pil') + PILToTensor + v2 RandomResizedCrop, flip, WebLoader", "tar shards",
                loader=lambda store, workers, batch: loader(store, workers, batch, TRAINING), pipeline=TRAINING,
            ))
        return routes
