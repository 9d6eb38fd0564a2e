"""The crop-aware decode: torchvision's RandomResizedCrop distribution, only the crop decoded, the same pixels where no DCT scale applies."""

from __future__ import annotations

import io

import numpy as np
import pytest
import simplejpeg
import torch
from PIL import Image
from torch.utils.data import DataLoader
from torchvision.transforms import RandomResizedCrop, v2
from torchvision.transforms.functional import pil_to_tensor

import torchpack
import torchpack.crop_decode as crop_decode
from conftest import BACKENDS, EXTENSION, dataset_class, photo_like, save
from defects import DHT, insert, segment_start
from torchpack.crop_decode import RandomResizedCropDecode
from torchpack.jpeg_region import region_decoder


def jpeg(pixels: np.ndarray, **options) -> bytes:
    out = io.BytesIO()
    Image.fromarray(pixels).save(out, format="JPEG", quality=90, **options)
    return out.getvalue()


def test_the_region_decoder_is_available_from_the_test_extra():
    assert region_decoder() is not None, "pip install -e '.[test]' installs turbojpeg, whose libturbojpeg it uses"


@pytest.mark.parametrize("scale", [1, 2, 4, 8])
def test_a_region_is_exactly_that_region_of_a_whole_decode(scale):
    rng = np.random.default_rng(0)
    pixels = photo_like(rng, 203, 157)
    encoded = [jpeg(pixels, subsampling=s) for s in (0, 1, 2)] + [jpeg(pixels, progressive=True), jpeg(pixels[..., 0])]
    encoded += [simplejpeg.encode_jpeg(pixels, 90, colorsubsampling=layout) for layout in ("440", "411")]
    decoder = region_decoder()
    for data in encoded:
        height, width, decodable = decoder.header(data)
        assert (height, width, decodable) == (157, 203, True)
        whole = simplejpeg.decode_jpeg(data, colorspace="RGB", min_height=-(-height // scale), min_width=-(-width // scale))
        for top, left, h, w in [(0, 0, 5, 7), (3, 17, 30, 41), (whole.shape[0] - 9, whole.shape[1] - 11, 9, 11), (1, 1, 1, 1)]:
            h, w = min(h, whole.shape[0] - top), min(w, whole.shape[1] - left)
            if h < 1 or w < 1:
                continue
            assert np.array_equal(decoder.decode(data, scale, top, left, h, w), whole[top : top + h, left : left + w])


def test_the_region_decoder_refuses_what_libjpeg_warns_about():
    data = jpeg(photo_like(np.random.default_rng(1), 64, 48))
    damaged = insert(data, segment_start(data, DHT), b"junk")  # stray bytes before a marker: a libjpeg warning
    with pytest.raises(ValueError):
        region_decoder().decode(damaged, 1, 0, 0, 8, 8)  # the warning is an error here; Pillow decodes those
    with pytest.raises(ValueError):
        region_decoder().header(b"not a jpeg")


def test_the_crop_is_drawn_by_torchvisions_own_get_params():
    crop = RandomResizedCropDecode(224)
    for seed in range(20):
        torch.manual_seed(seed)
        ours = crop.params(375, 500)
        torch.manual_seed(seed)
        theirs = RandomResizedCrop.get_params(torch.empty(3, 375, 500), crop.scale, crop.ratio)
        assert ours == theirs


def ks_statistic(a: np.ndarray, b: np.ndarray) -> float:
    """The two-sample Kolmogorov-Smirnov statistic: the largest gap between the two empirical CDFs."""
    values = np.sort(np.concatenate([a, b]))
    cdf_a = np.searchsorted(np.sort(a), values, side="right") / len(a)
    cdf_b = np.searchsorted(np.sort(b), values, side="right") / len(b)
    return float(np.abs(cdf_a - cdf_b).max())


def test_the_crop_distribution_is_torchvisions_statistically():
    """Independent draws (other seeds) of ours and of v2.RandomResizedCrop: the same distribution of
    area, aspect ratio and position, by a two-sample KS test at alpha = 0.001."""
    n, height, width = 4000, 333, 500
    torch.manual_seed(1)
    ours = np.array([RandomResizedCropDecode(224).params(height, width) for _ in range(n)], dtype=float)
    torch.manual_seed(2)
    transform = v2.RandomResizedCrop(224, antialias=True)
    image = torch.empty(3, height, width)
    theirs = np.array([[p["top"], p["left"], p["height"], p["width"]] for p in (transform.make_params([image]) for _ in range(n))], dtype=float)
    critical = 1.95 * np.sqrt(2 / n)
    for name, column in (("area", lambda p: p[:, 2] * p[:, 3]), ("ratio", lambda p: p[:, 3] / p[:, 2]), ("top", lambda p: p[:, 0]), ("left", lambda p: p[:, 1])):
        assert ks_statistic(column(ours), column(theirs)) < critical, name


@pytest.fixture(scope="module")
def crop_stores(tmp_path_factory) -> dict[str, str]:
    """JPEGs (4:2:0, 4:4:4, gray, progressive), a PNG and a CMYK JPEG, large enough for DCT scales to apply."""
    root = tmp_path_factory.mktemp("crop")
    rng = np.random.default_rng(3)
    for i, (width, height) in enumerate([(640, 480), (900, 1000), (500, 333), (1200, 800)]):
        image = Image.fromarray(photo_like(rng, width, height))
        save(image, str(root / f"tree/a/{i}_420.jpg"), quality=90)
        save(image, str(root / f"tree/b/{i}_444.jpg"), quality=90, subsampling=0)
    save(Image.fromarray(photo_like(rng, 480, 360)).convert("L"), str(root / "tree/a/gray.jpg"), quality=90)
    save(Image.fromarray(photo_like(rng, 480, 360)), str(root / "tree/a/progressive.jpg"), quality=90, progressive=True)
    save(Image.fromarray(photo_like(rng, 300, 260)), str(root / "tree/b/plain.png"))
    save(Image.fromarray(photo_like(rng, 300, 260)).convert("CMYK"), str(root / "tree/b/cmyk.jpg"), quality=90)
    return {b: torchpack.convert(root / "tree", root / f"s{EXTENSION[b]}", workers=0).stores[0] for b in BACKENDS}


def reference_crops(store: str, backend: str, seed: int) -> list[torch.Tensor]:
    """v2.RandomResizedCrop(224, antialias=True) on each whole image (ImageFolder's pixels), drawn from ``seed``."""
    plain = dataset_class(backend)(store, decode="tensor")
    transform = v2.RandomResizedCrop(224, antialias=True)
    torch.manual_seed(seed)
    return [transform(plain[i][0]) for i in range(len(plain))]


@pytest.mark.parametrize("backend", BACKENDS)
@pytest.mark.parametrize("region", [True, False], ids=["libturbojpeg-region", "simplejpeg-whole"])
def test_each_sample_is_torchvisions_crop_and_exact_where_no_dct_scale_applies(backend, region, crop_stores, monkeypatch):
    if not region:
        monkeypatch.setattr(crop_decode, "region_decoder", lambda: None)
    crop = RandomResizedCropDecode(224)
    dataset = dataset_class(backend)(crop_stores[backend], decode="tensor", decode_crop=crop)
    expected = reference_crops(crop_stores[backend], backend, seed=11)
    torch.manual_seed(11)
    got = [dataset[i][0] for i in range(len(dataset))]
    torch.manual_seed(11)
    sizes = [dataset_class(backend)(crop_stores[backend], decode="numpy")[i][0].shape for i in range(len(dataset))]
    torch.manual_seed(11)
    scales = [crop.dct_scale(*crop.params(h, w)[2:]) for h, w, _ in sizes]
    assert 1 in scales and any(s > 1 for s in scales)  # both cases are shown
    for image, reference, scale in zip(got, expected, scales):
        assert image.shape == (3, 224, 224) and image.is_contiguous()
        if scale == 1:
            assert torch.equal(image, reference)
        else:  # libjpeg's DCT scaling: other pixels, the same picture
            assert (image.float() - reference.float()).abs().mean() < 6


@pytest.mark.parametrize("backend", BACKENDS)
def test_every_output_type_has_the_same_pixels(backend, crop_stores):
    outputs = {}
    for mode in ("tensor", "numpy", "pil"):
        dataset = dataset_class(backend)(crop_stores[backend], decode=mode, decode_crop=RandomResizedCropDecode(96))
        torch.manual_seed(4)
        outputs[mode] = [dataset[i][0] for i in range(len(dataset))]
    for tensor, array, image in zip(outputs["tensor"], outputs["numpy"], outputs["pil"]):
        assert torch.equal(tensor, torch.from_numpy(array).permute(2, 0, 1))
        assert isinstance(image, Image.Image) and np.array_equal(np.asarray(image), array)


@pytest.mark.parametrize("backend", BACKENDS)
def test_crops_with_workers_threads_and_a_flip(backend, crop_stores):
    transform = v2.RandomHorizontalFlip()
    dataset = dataset_class(backend)(crop_stores[backend], decode="tensor", decode_crop=RandomResizedCropDecode(64), transform=transform)
    for loader in (
        DataLoader(dataset, batch_size=4, num_workers=2),
        DataLoader(dataset, batch_size=4, num_workers=0),
    ):
        images = torch.cat([batch[0] for batch in loader])
        assert images.shape == (len(dataset), 3, 64, 64)
    threaded = dataset_class(backend)(crop_stores[backend], decode="tensor", decode_crop=RandomResizedCropDecode(64), threads=2)
    assert threaded.__getitems__(list(range(len(threaded))))[0][0].shape == (3, 64, 64)


def test_a_raw_store_is_cropped_too(tmp_path):
    rng = np.random.default_rng(6)
    for i in range(4):
        save(Image.fromarray(photo_like(rng, 50, 40)), str(tmp_path / f"tree/c/{i}.png"))
    store = torchpack.convert(tmp_path / "tree", tmp_path / "raw.h5", storage="raw", workers=0).stores[0]
    dataset = torchpack.HDF5ImageFolder(store, decode="tensor", decode_crop=RandomResizedCropDecode(32))
    torch.manual_seed(2)
    got = [dataset[i][0] for i in range(4)]
    plain = torchpack.HDF5ImageFolder(store, decode="tensor")
    reference = v2.RandomResizedCrop(32, antialias=True)
    torch.manual_seed(2)
    assert all(torch.equal(image, reference(plain[i][0])) for i, image in enumerate(got))


def test_bad_arguments_are_refused(small_stores):
    with pytest.raises(ValueError, match="Pass `decode_size` or `decode_crop`, not both"):
        torchpack.LMDBImageFolder(small_stores["lmdb"], decode_size=224, decode_crop=RandomResizedCropDecode(224))
    with pytest.raises(TypeError, match="must be a torchpack.RandomResizedCropDecode"):
        torchpack.LMDBImageFolder(small_stores["lmdb"], decode_crop=v2.RandomResizedCrop(224))
    with pytest.raises(ValueError, match="`size` must be a positive int"):
        RandomResizedCropDecode(0)
