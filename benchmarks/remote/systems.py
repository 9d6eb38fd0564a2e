"""How each system reads its store from the bucket (cache cold, then warm) and from local disk, on the two pipelines.

``link``: each sample's stored bytes are read and nothing is decoded (torchpack: a loader that
returns the byte count; Mosaic: its ``jpeg`` column is opened lazily by PIL, which parses the
header only; LitData: its ``jpeg`` items deserialized as bytes with ``serializers=``; WebDataset:
the raw ``jpg`` entry), so that on 2 CPUs the epoch is bound by the link, not by decoding.
``training``: ImageNet's training pipeline, each system's own way to it as in ``bench_peers.py``
(torchpack: ``decode="tensor", decode_size=224`` then ``v2.RandomResizedCrop(224)`` and a flip).

Used in the job interpreters (``remote.jobs``), each system's modules imported on first use.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from typing import Any, Iterable

from suite.common import PHOTO_BATCH, TRAIN_DECODE_SIZE, TRAIN_PIL_TO_TENSOR, TRAIN_TENSOR_TRANSFORM

LINK, TRAINING = "link", "training"
PIPELINES = (LINK, TRAINING)
WINDOW, PREFETCH = 2, 2  # ShardWindowSampler's defaults


@dataclass
class RemoteStore:
    """A store in the bucket, as a job reads it: its URL, its objects' keys (``bucket/prefix/name``) and presigned
    ``http://`` URLs (for readers of plain URLs: the bucket is private, as a real one), the server."""

    url: str
    objects: list[str]
    signed: list[str]
    endpoint: str


def byte_count(file) -> int:
    """torchpack's link loader: read the sample's bytes (their CRC-32 is checked on the way), decode nothing."""
    return len(file.read())


class System:
    """One system's loaders; ``settings``: ``workers`` and ``batch``."""

    name = ""
    peer = ""  # its adapter in peers.registry (converts the tree); "": torchpack, converted here
    peer_store = ""

    def __init__(self, settings: dict[str, Any]) -> None:
        self.workers = int(settings.get("workers", 2))
        self.batch = int(settings.get("batch", PHOTO_BATCH))

    def remote_loader(self, store: RemoteStore, cache_dir: str, pipeline: str) -> Any:
        raise NotImplementedError

    def local_loader(self, path: str, pipeline: str) -> Any:
        raise NotImplementedError

    def batches(self, loader: Any, epoch: int) -> Iterable[Any]:
        """The batches of epoch ``epoch``, ``(samples, targets)`` each."""
        return loader

    def _loader(self, dataset: Any, **kwargs: Any) -> Any:
        from torch.utils.data import DataLoader

        workers = self.workers
        return DataLoader(dataset, batch_size=self.batch, num_workers=workers, persistent_workers=workers > 0, **kwargs)


class Torchpack(System):
    name = "torchpack"

    def _dataset(self, root: str, pipeline: str, **remote: Any) -> Any:
        import torchpack
        from torchvision.datasets.folder import IMG_EXTENSIONS

        if pipeline == LINK:
            return torchpack.LMDBDatasetFolder(root, loader=byte_count, extensions=IMG_EXTENSIONS, **remote)
        return torchpack.LMDBImageFolder(
            root, decode="tensor", decode_size=TRAIN_DECODE_SIZE, transform=TRAIN_TENSOR_TRANSFORM, **remote
        )

    def _sampled(self, dataset: Any) -> Any:
        import torchpack

        sampler = torchpack.ShardWindowSampler(dataset, window=WINDOW, prefetch=PREFETCH, num_replicas=1, rank=0)
        return self._loader(dataset, sampler=sampler)

    def remote_loader(self, store: RemoteStore, cache_dir: str, pipeline: str) -> Any:
        import torchpack

        options = {"endpoint_url": store.endpoint, "key": os.environ["AWS_ACCESS_KEY_ID"],
                   "secret": os.environ["AWS_SECRET_ACCESS_KEY"]}
        dataset = self._dataset(store.url, pipeline, storage_options=options, cache=torchpack.ShardCache(cache_dir))
        return self._sampled(dataset)

    def local_loader(self, path: str, pipeline: str) -> Any:
        return self._sampled(self._dataset(path, pipeline))

    def batches(self, loader: Any, epoch: int) -> Iterable[Any]:
        loader.sampler.set_epoch(epoch)
        return loader


def _mosaic_class() -> type:
    from streaming import StreamingDataset

    class MosaicLink(StreamingDataset):
        """The ``jpeg`` column as Streaming hands it over (``Image.open``, lazy: the header only)."""

        def get_item(self, idx: int):
            sample = super().get_item(idx)
            return sample["x"].size[0], int(sample["y"])

    MosaicLink.__module__, MosaicLink.__qualname__ = __name__, "MosaicLink"
    globals()["MosaicLink"] = MosaicLink
    return MosaicLink


def __getattr__(name: str):
    if name == "MosaicLink":  # unpickling in a process that has not made the class yet
        return _mosaic_class()
    raise AttributeError(name)


class Mosaic(System):
    name = "Mosaic Streaming"
    peer, peer_store = "Mosaic Streaming", "MDS shards"

    def _dataset(self, pipeline: str, **where: Any) -> Any:
        if pipeline == LINK:
            return _mosaic_class()(shuffle=True, batch_size=self.batch, **where)
        from peers.common import RGBThen
        from streaming.vision import StreamingImageNet

        return StreamingImageNet(shuffle=True, batch_size=self.batch, transform=RGBThen(TRAIN_PIL_TO_TENSOR), **where)

    def remote_loader(self, store: RemoteStore, cache_dir: str, pipeline: str) -> Any:
        # Streaming's S3 client (boto3) finds the server in S3_ENDPOINT_URL, set by the parent.
        return self._loader(self._dataset(pipeline, remote=store.url, local=cache_dir))

    def local_loader(self, path: str, pipeline: str) -> Any:
        return self._loader(self._dataset(pipeline, local=path))


def lit_link(sample: dict) -> tuple[int, int]:
    return len(sample["image"]), int(sample["label"])


def lit_training(sample: dict):
    return TRAIN_TENSOR_TRANSFORM(sample["image"]), int(sample["label"])


class LitData(System):
    name = "LitData"
    peer, peer_store = "LitData", "optimized chunks"

    def _dataset(self, root: str, pipeline: str, **remote: Any) -> Any:
        import litdata
        from litdata.streaming.serializers import BytesSerializer

        if pipeline == LINK:  # its JPEG items handed over as stored, not decoded with decode_jpeg
            serializers = {"jpeg": BytesSerializer()}
            return litdata.StreamingDataset(root, shuffle=True, transform=lit_link, serializers=serializers, **remote)
        return litdata.StreamingDataset(root, shuffle=True, transform=lit_training, **remote)

    def _loader(self, dataset: Any, **kwargs: Any) -> Any:
        import litdata

        workers = self.workers
        return litdata.StreamingDataLoader(dataset, batch_size=self.batch, num_workers=workers, persistent_workers=workers > 0)

    def remote_loader(self, store: RemoteStore, cache_dir: str, pipeline: str) -> Any:
        if store.endpoint.startswith("http://"):
            # LitData downloads chunks with obstore, whose client options it fixes without allow_http:
            # obstore then refuses a plain-HTTP endpoint. A real bucket is https; this server is not.
            from litdata.streaming import downloader

            downloader._OBSTORE_CLIENT_OPTIONS = {**downloader._OBSTORE_CLIENT_OPTIONS, "allow_http": "true"}
        options = {
            "endpoint_url": store.endpoint,
            "aws_access_key_id": os.environ["AWS_ACCESS_KEY_ID"],
            "aws_secret_access_key": os.environ["AWS_SECRET_ACCESS_KEY"],
        }
        return self._loader(self._dataset(store.url, pipeline, cache_dir=cache_dir, storage_options=options))

    def local_loader(self, path: str, pipeline: str) -> Any:
        return self._loader(self._dataset(path, pipeline))


class WebDataset(System):
    name = "WebDataset"
    peer, peer_store = "WebDataset", "tar shards"

    def _pipeline(self, urls: list[str], pipeline: str, **cache: Any) -> Any:
        import webdataset as wds

        ds = wds.WebDataset(urls, shardshuffle=100, empty_check=False, **cache).shuffle(1000)
        if pipeline == LINK:
            ds = ds.to_tuple("jpg;jpeg;png", "cls").map_tuple(len, int)
        else:
            ds = ds.decode("pil").to_tuple("jpg;jpeg;png", "cls").map_tuple(TRAIN_PIL_TO_TENSOR, int)
        return ds.batched(self.batch)

    def _web_loader(self, ds: Any) -> Any:
        import webdataset as wds

        return wds.WebLoader(ds, batch_size=None, num_workers=self.workers, persistent_workers=self.workers > 0)

    def remote_loader(self, store: RemoteStore, cache_dir: str, pipeline: str) -> Any:
        # Its http:// opener (curl) on the objects' presigned URLs; with cache_dir each shard is kept
        # whole on local disk after its first read, and the later epochs read it there.
        urls = [url for key, url in zip(store.objects, store.signed) if key.endswith(".tar")]
        os.makedirs(cache_dir, exist_ok=True)
        return self._web_loader(self._pipeline(urls, pipeline, cache_dir=cache_dir))

    def local_loader(self, path: str, pipeline: str) -> Any:
        urls = sorted(os.path.join(path, n) for n in os.listdir(path) if n.endswith(".tar"))
        return self._web_loader(self._pipeline(urls, pipeline))


SYSTEMS: dict[str, type[System]] = {s.name: s for s in (Torchpack, Mosaic, LitData, WebDataset)}

