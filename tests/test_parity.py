"""The datasets are drop-in replacements for torchvision's ImageFolder."""

from __future__ import annotations

import os

import numpy as np
import pytest
import torch
from torchvision.datasets import ImageFolder

from conftest import BACKENDS, dataset_class


def relative(samples, root):
    return [(os.path.relpath(path, root).replace(os.sep, "/"), target) for path, target in samples]


@pytest.mark.parametrize("backend", BACKENDS)
def test_same_classes_samples_targets_and_pixels(backend, parity_tree, stores):
    reference = ImageFolder(parity_tree, allow_empty=True)
    dataset = dataset_class(backend)(stores[backend], allow_empty=True)
    assert dataset.classes == reference.classes
    assert "empty_class" in dataset.classes
    assert dataset.class_to_idx == reference.class_to_idx
    assert relative(dataset.samples, stores[backend]) == relative(reference.samples, parity_tree)
    assert list(dataset.targets) == reference.targets
    assert dataset.imgs == dataset.samples
    assert dataset.extensions == reference.extensions
    assert len(dataset) == len(reference) == 11
    for i in range(len(reference)):
        expected, expected_target = reference[i]
        image, target = dataset[i]
        assert target == expected_target and isinstance(target, int)
        assert image.mode == "RGB" and image.size == expected.size
        assert np.array_equal(np.asarray(image), np.asarray(expected)), dataset.relative_path(i)


@pytest.mark.parametrize("backend", BACKENDS)
def test_tensor_and_numpy_output_match_pil(backend, stores, parity_tree):
    reference = ImageFolder(parity_tree, allow_empty=True)
    as_tensor = dataset_class(backend)(stores[backend], allow_empty=True, decode="tensor")
    as_numpy = dataset_class(backend)(stores[backend], allow_empty=True, decode="numpy")
    for i in range(len(reference)):
        expected = torch.from_numpy(np.asarray(reference[i][0])).permute(2, 0, 1)
        image, _ = as_tensor[i]
        assert image.dtype == torch.uint8 and torch.equal(image, expected)
        assert np.array_equal(as_numpy[i][0], np.asarray(reference[i][0]))


@pytest.mark.parametrize("backend", BACKENDS)
def test_empty_class_raises_like_imagefolder(backend, parity_tree, stores):
    with pytest.raises(FileNotFoundError) as expected:
        ImageFolder(parity_tree)
    with pytest.raises(FileNotFoundError, match="Found no valid file for the classes empty_class") as got:
        dataset_class(backend)(stores[backend])
    assert str(got.value) == str(expected.value)


@pytest.mark.parametrize("backend", BACKENDS)
def test_is_valid_file_filters_like_imagefolder(backend, parity_tree, stores):
    def only_png(path: str) -> bool:
        return path.endswith(".png")

    reference = ImageFolder(parity_tree, is_valid_file=only_png, allow_empty=True)
    dataset = dataset_class(backend)(stores[backend], is_valid_file=only_png, allow_empty=True)
    assert relative(dataset.samples, stores[backend]) == relative(reference.samples, parity_tree)
    assert dataset.extensions is None
    assert np.array_equal(np.asarray(dataset[0][0]), np.asarray(reference[0][0]))
    with pytest.raises(FileNotFoundError, match="Found no valid file for the classes"):
        dataset_class(backend)(stores[backend], is_valid_file=only_png)


@pytest.mark.parametrize("backend", BACKENDS)
def test_transforms_are_read_at_call_time(backend, stores):
    dataset = dataset_class(backend)(stores[backend], allow_empty=True)
    dataset.transform = lambda image: image.size
    dataset.target_transform = lambda target: target + 100
    size, target = dataset[0]
    assert isinstance(size, tuple) and target >= 100


@pytest.mark.parametrize("backend", BACKENDS)
def test_custom_loader_gets_a_binary_file(backend, stores, parity_tree):
    seen = []

    def loader(file):
        data = file.read()
        seen.append(data)
        return len(data)

    dataset = dataset_class(backend)(stores[backend], loader=loader, allow_empty=True)
    length, _ = dataset[0]
    with open(os.path.join(parity_tree, dataset.relative_path(0)), "rb") as f:
        assert seen[0] == f.read() and length == len(seen[0])
    assert dataset.read_bytes(0) == seen[0]


@pytest.mark.parametrize("backend", BACKENDS)
def test_tensor_decoder_route(backend, stores, parity_tree):
    from torchvision.io import ImageReadMode, decode_image

    from torchpack import from_tensor_decoder

    dataset = dataset_class(backend)(stores[backend], loader=from_tensor_decoder(decode_image, mode=ImageReadMode.RGB), allow_empty=True)
    image, _ = dataset[0]  # cat/cmyk.jpg is first; any decoded tensor will do
    assert image.dtype == torch.uint8 and image.shape[0] == 3
    assert image.shape[1:] == ImageFolder(parity_tree, allow_empty=True)[0][0].size[::-1]


@pytest.mark.parametrize("backend", BACKENDS)
def test_index_errors_and_negative_indices(backend, stores):
    dataset = dataset_class(backend)(stores[backend], allow_empty=True)
    assert dataset[-1][1] == dataset[len(dataset) - 1][1]
    with pytest.raises(IndexError, match="out of range"):
        dataset[len(dataset)]
    with pytest.raises(IndexError):
        dataset.samples[len(dataset)]


@pytest.mark.parametrize("backend", BACKENDS)
def test_targets_and_samples_are_arrays_not_lists(backend, stores):
    dataset = dataset_class(backend)(stores[backend], allow_empty=True)
    assert not isinstance(dataset.samples, list) and not isinstance(dataset.targets, list)
    assert np.asarray(dataset.targets).dtype.kind == "i"
    assert dataset.targets[0] == list(dataset.targets)[0] and isinstance(dataset.targets[0], int)
    assert torch.tensor(list(dataset.targets)).shape == (len(dataset),)


@pytest.mark.parametrize("backend", BACKENDS)
@pytest.mark.parametrize("selected", [False, True])
def test_targets_as_an_array_are_a_copy_or_read_only(backend, selected, stores):
    """As with ImageFolder's list, ``np.array(targets)`` is the user's to change; ``ds.targets`` is not."""
    rule = (lambda path: path.endswith(".jpg")) if selected else None
    dataset = dataset_class(backend)(stores[backend], allow_empty=True, is_valid_file=rule)
    before = list(dataset.targets)
    mine = np.array(dataset.targets)
    mine[:] = -1
    assert list(dataset.targets) == before
    with pytest.raises(ValueError, match="read-only"):
        np.asarray(dataset.targets)[0] = -1
    assert list(dataset.targets) == before


@pytest.mark.parametrize("backend", BACKENDS)
@pytest.mark.parametrize("size", [0, -5, (224,), (0, 10), 2.5, True])
def test_a_bad_decode_size_is_refused_by_name(backend, size, stores):
    with pytest.raises(ValueError, match="`decode_size` must be"):
        dataset_class(backend)(stores[backend], allow_empty=True, decode_size=size)
