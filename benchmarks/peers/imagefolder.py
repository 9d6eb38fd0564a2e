"""ImageFolder, the baseline every ratio is against: torchvision's ``ImageFolder`` on the tree itself."""

from __future__ import annotations

from torchvision.datasets import ImageFolder

from suite.common import PIL_TRANSFORM, TRAIN_PIL_TRANSFORM

from .common import TINY_PIPELINE, TRAINING, Adapter, Route


class ImageFolderAdapter(Adapter):
    system = "ImageFolder"

    def routes(self, group: str) -> list[Route]:
        if group == "photo":
            return [
                Route("ImageFolder (PIL)", None, dataset=lambda tree: ImageFolder(tree, transform=PIL_TRANSFORM)),
                Route("ImageFolder (PIL RandomResizedCrop, flip, PILToTensor)", None, pipeline=TRAINING,
                      dataset=lambda tree: ImageFolder(tree, transform=TRAIN_PIL_TRANSFORM)),
            ]
        return [Route("ImageFolder (PIL, PILToTensor)", None, dataset=lambda tree: ImageFolder(tree, transform=TINY_PIPELINE))]
