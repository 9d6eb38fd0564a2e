"""The crop-aware decode: torchvision's RandomResizedCrop distribution, only the crop decoded, the same pixels where no DCT scale applies."""

from __future__ import annotations

import io
import subprocess
import sys

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


def test_without_a_fitting_try_the_crop_is_torchvisions_central_one():
    crop = RandomResizedCropDecode(8, scale=(0.9, 1.0))
    for height, width in [(10, 1000), (1000, 10), (40, 50)]:  # far too wide, far too tall, in range
        torch.manual_seed(0)
        expected = RandomResizedCrop.get_params(torch.empty(3, height, width), (2.0, 3.0), crop.ratio)  # never fits
        fallback = RandomResizedCropDecode(8, scale=(2.0, 3.0))
        assert fallback.params(height, width) == expected


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


class Recorded(RandomResizedCropDecode):
    """The crop decode, keeping the crop each draw gave (to apply torchvision's transform with the same crop)."""

    def params(self, height: int, width: int) -> tuple[int, int, int, int]:
        drawn = super().params(height, width)
        self.drawn.append(drawn)
        return drawn


@pytest.mark.parametrize("backend", BACKENDS)
@pytest.mark.parametrize("region", [True, False], ids=["libturbojpeg-region", "simplejpeg-whole"])
def test_each_sample_is_torchvisions_crop_and_exact_where_no_dct_scale_applies(backend, region, crop_stores, monkeypatch):
    if not region:
        monkeypatch.setattr(crop_decode, "region_decoder", lambda: None)
    crop = Recorded(224)
    crop.drawn = []
    dataset = dataset_class(backend)(crop_stores[backend], decode="tensor", decode_crop=crop)
    plain = dataset_class(backend)(crop_stores[backend], decode="tensor")
    scales = []
    for i in range(len(dataset)):
        image = dataset[i][0]
        top, left, height, width = crop.drawn[-1]
        scales.append(crop.dct_scale(height, width))
        reference = v2.functional.resized_crop(plain[i][0], top, left, height, width, [224, 224], antialias=True)
        assert image.shape == (3, 224, 224) and image.is_contiguous()
        if scales[-1] == 1:
            assert torch.equal(image, reference)
        else:  # libjpeg's DCT scaling: other pixels, the same picture
            assert (image.float() - reference.float()).abs().mean() < 6
    assert 1 in scales and any(s > 1 for s in scales)  # both cases are shown


def test_the_fused_flip_flips_half_the_crops(crop_stores):
    crop = Recorded(64, flip=True)
    crop.drawn = []
    dataset = torchpack.HDF5ImageFolder(crop_stores["hdf5"], decode="tensor", decode_crop=crop)
    plain = torchpack.HDF5ImageFolder(crop_stores["hdf5"], decode="tensor")
    flipped = checked = 0
    for _ in range(10):
        for i in range(len(dataset)):
            image = dataset[i][0].float()
            top, left, height, width = crop.drawn[-1]
            straight = v2.functional.resized_crop(plain[i][0], top, left, height, width, [64, 64], antialias=True).float()
            distance, mirrored = (image - straight).abs().mean(), (image - straight.flip(-1)).abs().mean()
            assert min(distance, mirrored) < 6  # the crop, straight or mirrored (DCT scaling aside)
            flipped += bool(mirrored < distance)
            checked += 1
    assert 0.3 < flipped / checked < 0.7


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
    crop = Recorded(32)
    crop.drawn = []
    dataset = torchpack.HDF5ImageFolder(store, decode="tensor", decode_crop=crop)
    plain = torchpack.HDF5ImageFolder(store, decode="tensor")
    for i in range(4):
        image = dataset[i][0]
        top, left, height, width = crop.drawn[-1]
        assert torch.equal(image, v2.functional.resized_crop(plain[i][0], top, left, height, width, [32, 32], antialias=True))


def test_bad_arguments_are_refused(small_stores):
    with pytest.raises(ValueError, match="Pass `decode_size` or `decode_crop`, not both"):
        torchpack.LMDBImageFolder(small_stores["lmdb"], decode_size=224, decode_crop=RandomResizedCropDecode(224))
    with pytest.raises(TypeError, match="must be a torchpack.RandomResizedCropDecode"):
        torchpack.LMDBImageFolder(small_stores["lmdb"], decode_crop=v2.RandomResizedCrop(224))
    with pytest.raises(ValueError, match="`size` must be a positive int"):
        RandomResizedCropDecode(0)


def test_a_read_only_crop_is_resized_without_a_warning():
    # Pillow hands out read-only arrays, and a crop as wide as the image is a contiguous view of
    # one: torch warns once per process on those, so a fresh interpreter tells whether we copy.
    code = (
        "import warnings, numpy as np\n"
        "warnings.simplefilter('error')\n"
        "from torchpack.crop_decode import resize_square\n"
        "pixels = np.zeros((40, 30, 3), np.uint8); pixels.flags.writeable = False\n"
        "assert tuple(resize_square(pixels, 16).shape) == (3, 16, 16)\n"
    )
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stderr[-2000:]
