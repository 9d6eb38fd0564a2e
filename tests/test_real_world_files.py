"""Real-world files (tests/defects.py): whatever ImageFolder loads, a store returns with its pixels;
whatever ImageFolder cannot load, the converter leaves out and a store read of it fails."""

from __future__ import annotations

import io
import os
import struct
import warnings
from typing import Callable, Optional

import numpy as np
import pytest
import simplejpeg
import torch
from PIL import Image, ImageFile
from torch.utils.data import DataLoader
from torchvision.datasets import ImageFolder

import torchpack
from conftest import BACKENDS, EXTENSION, dataset_class
from defects import make_defect_corpus, png_chunks, rst_offsets, sampling_factors
from torchpack import BadSample, BadSampleError

# Pillow warns about the corpus's broken metadata (EXIF, MPF) and then ignores it, as it should.
pytestmark = pytest.mark.filterwarnings("ignore::UserWarning:PIL")

DECODES = ("pil", "tensor", "numpy")
DECODE_SIZES = (64, (50, 40))
#: JPEGs that Pillow's segment parser refuses although their image data is sound.
METADATA_PILLOW_REJECTS = {"jpeg_metadata/adobe_truncated.jpg", "jpeg_metadata/icc_too_short.jpg"}


# -- fixtures: the corpus, ImageFolder's view of it, and stores ------------------------------------


@pytest.fixture(scope="module")
def corpus(tmp_path_factory) -> tuple[str, dict[str, str]]:
    """The tree's root and ``{relative path: description}``."""
    root = str(tmp_path_factory.mktemp("real_world") / "tree")
    return root, make_defect_corpus(root)


@pytest.fixture(scope="module")
def reference(corpus) -> dict[str, Optional[np.ndarray]]:
    """ImageFolder's HWC pixels for every file, or None where ``ImageFolder[i]`` raises."""
    root, _ = corpus
    assert ImageFile.LOAD_TRUNCATED_IMAGES is False  # Pillow's default, which ImageFolder runs with
    folder = ImageFolder(root, allow_empty=True)
    pixels = {}
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # Pillow warns about some metadata it then ignores
        for i, (path, _) in enumerate(folder.samples):
            relative = os.path.relpath(path, root).replace(os.sep, "/")
            try:
                pixels[relative] = np.asarray(folder[i][0])
            except Exception:
                pixels[relative] = None
    return pixels


@pytest.fixture(scope="module")
def checked(corpus, tmp_path_factory) -> dict[str, torchpack.ConvertResult]:
    """The corpus converted with the default check, once per backend."""
    root, _ = corpus
    out = tmp_path_factory.mktemp("real_world_checked")
    return {b: torchpack.convert(root, out / f"checked{EXTENSION[b]}", workers=0) for b in BACKENDS}


@pytest.fixture(scope="module")
def unchecked(corpus, tmp_path_factory) -> dict[str, torchpack.ConvertResult]:
    """The corpus converted with ``check=False``: bad files are stored too (all but empty ones)."""
    root, _ = corpus
    out = tmp_path_factory.mktemp("real_world_unchecked")
    return {b: torchpack.convert(root, out / f"unchecked{EXTENSION[b]}", workers=0, check=False) for b in BACKENDS}


# -- helpers ---------------------------------------------------------------------------------------


def rows_by_path(dataset) -> dict[str, int]:
    return {dataset.relative_path(i): i for i in range(len(dataset))}


def as_hwc(image, decode: str) -> np.ndarray:
    """The decoded sample as HWC uint8 pixels, after checking it has the type ``decode`` promises."""
    if decode == "pil":
        assert isinstance(image, Image.Image) and image.mode == "RGB", f"not a PIL RGB image: {image!r}"
        return np.asarray(image)
    if decode == "tensor":
        assert isinstance(image, torch.Tensor) and image.dtype == torch.uint8, f"not a uint8 tensor: {type(image)}"
        assert image.ndim == 3 and image.shape[0] == 3, f"not CHW RGB: {tuple(image.shape)}"
        return image.permute(1, 2, 0).numpy()
    assert isinstance(image, np.ndarray) and image.dtype == np.uint8, f"not a uint8 array: {type(image)}"
    assert image.ndim == 3 and image.shape[2] == 3, f"not HWC RGB: {image.shape}"
    return image


def failure(exc: BaseException) -> str:
    """The decoder's error in one line: a BadSampleError's cause, which its message repeats with the store's path."""
    cause = exc.__cause__ if isinstance(exc, BadSampleError) and exc.__cause__ is not None else exc
    return f"{type(cause).__name__}: {cause}"


def covers(shape: tuple[int, ...], full: tuple[int, ...], size) -> bool:
    """Whether a scaled decode of ``shape`` (HW...) still covers ``size``, where the full image does."""
    if isinstance(size, int):
        return min(shape[:2]) >= size or min(full[:2]) < size
    return (shape[0] >= size[0] and shape[1] >= size[1]) or full[0] < size[0] or full[1] < size[1]


def read_problem(dataset, row: int, decode: str, size, expected: np.ndarray) -> Optional[str]:
    """What is wrong with one read of one sample, compared with ImageFolder's pixels, or None."""
    try:
        pixels = as_hwc(dataset[row][0], decode)
    except Exception as exc:  # as_hwc's assertions too: every problem goes into one report
        return failure(exc)
    if size is None and not np.array_equal(pixels, expected):
        detail = f"shape {pixels.shape} vs {expected.shape}"
        if pixels.shape == expected.shape:
            differ = int((pixels != expected).any(-1).sum())
            detail += f", {differ} pixels differ, by up to {int(np.abs(pixels.astype(int) - expected).max())}"
        return f"pixels differ from ImageFolder's ({detail})"
    if size is not None and not covers(pixels.shape, expected.shape, size):
        return f"decoded {pixels.shape[:2]} does not cover {size} (full size {expected.shape[:2]})"
    return None


def read_mismatches(datasets: dict, row: int, expected: np.ndarray) -> list[str]:
    """The problems of one sample read in every decode mode and size; modes with the same problem share a line."""
    modes_by_problem: dict[str, list[str]] = {}
    for (decode, size), dataset in datasets.items():
        problem = read_problem(dataset, row, decode, size, expected)
        if problem is not None:
            mode = decode + (f"@{size}" if size is not None else "")
            modes_by_problem.setdefault(problem, []).append(mode)
    return [f"[{', '.join(modes)}] {problem}" for problem, modes in modes_by_problem.items()]


def report(problems: list[str]) -> str:
    return f"{len(problems)} problem(s):\n" + "\n".join(problems)


def labelled(path: str, described: dict[str, str]) -> str:
    return f"{path} ({described.get(path, '?')})"


def set_difference(a: set, b: set, only_a: str, only_b: str, described: dict[str, str]) -> list[str]:
    """One line per path in exactly one of two sets that should be equal, saying which."""
    return [f"{labelled(p, described)}: {only_a}" for p in sorted(a - b)] + [
        f"{labelled(p, described)}: {only_b}" for p in sorted(b - a)
    ]


def as_list(batch):
    """A collate function that keeps the samples as they are (module level, so spawn can pickle it)."""
    return batch


# -- a. the checked store ---------------------------------------------------------------------------


def test_imagefolder_lists_every_corpus_file(corpus, reference):
    _, described = corpus
    assert set(reference) == set(described)
    loadable = [p for p, pixels in reference.items() if pixels is not None]
    assert 0 < len(loadable) < len(reference)  # the corpus has both kinds


@pytest.mark.parametrize("backend", BACKENDS)
def test_checked_store_reads_what_imagefolder_loads(backend, corpus, reference, checked):
    _, described = corpus
    result = checked[backend]
    bad = {entry["path"]: f"{entry.get('error_type')}: {entry.get('error')}" for entry in result.bad_files}
    cls = dataset_class(backend)
    datasets = {
        (decode, size): cls(result.stores[0], decode=decode, decode_size=size, allow_empty=True)
        for decode in DECODES
        for size in (None, *DECODE_SIZES)
    }
    rows = rows_by_path(datasets["pil", None])
    problems = []
    for path, expected in sorted(reference.items()):
        label = labelled(path, described)
        if expected is None:
            if path not in bad:
                problems.append(f"{label}: ImageFolder cannot load it, yet the converter kept it")
            continue
        if path in bad:
            problems.append(f"{label}: ImageFolder loads it, yet the converter left it out ({bad[path]})")
            continue
        if path not in rows:
            problems.append(f"{label}: neither in the store nor in bad_files")
            continue
        problems += [f"{label}: {problem}" for problem in read_mismatches(datasets, rows[path], expected)]
    assert not problems, report(problems)


# -- b. the unchecked store ------------------------------------------------------------------------


@pytest.mark.parametrize("backend", BACKENDS)
def test_unchecked_store_fails_exactly_where_imagefolder_fails(backend, corpus, reference, unchecked):
    """Unchecked, the store fails only where ImageFolder fails, and verify reports exactly those reads.

    It may read more than ImageFolder: a JPEG whose metadata segment Pillow's parser trips on
    (a cut APP14 or ICC segment) but whose image data simplejpeg decodes cleanly. The converter's
    check runs Pillow's parser, so a checked store leaves these out, as ImageFolder would.
    """
    _, described = corpus
    result = unchecked[backend]
    store = result.stores[0]
    left_out = {entry["path"] for entry in result.bad_files}  # an empty file is left out even unchecked
    verify_problems = {problem["path"] for problem in torchpack.verify_store(store, decode=True).problems}
    dataset = dataset_class(backend)(store, decode="pil", allow_empty=True)
    assert set(rows_by_path(dataset)) | left_out == set(reference)
    read_failures = set()
    for i in range(len(dataset)):
        try:
            dataset[i]
        except BadSampleError:
            read_failures.add(dataset.relative_path(i))
    imagefolder_failures = {path for path, pixels in reference.items() if pixels is None}
    problems = set_difference(
        verify_problems,
        read_failures,
        "verify_store(decode=True) reports it, yet a decode='pil' read works",
        "a decode='pil' read raises, yet verify_store(decode=True) does not report it",
        described,
    )
    problems += [
        f"{path} ({described[path]}): ImageFolder loads it, yet the unchecked store cannot read it"
        for path in sorted((read_failures | left_out) - imagefolder_failures)
    ]
    assert not problems, report(problems)
    read_beyond_imagefolder = imagefolder_failures - read_failures - left_out
    assert read_beyond_imagefolder == METADATA_PILLOW_REJECTS, read_beyond_imagefolder


# -- c. the corpus holds what it says --------------------------------------------------------------


def png_ihdr(data: bytes) -> tuple[int, int, int, int, int, int, int]:
    """width, height, bit depth, colour type, compression, filter, interlace."""
    kind, body = png_chunks(data)[0]
    assert kind == b"IHDR"
    return struct.unpack(">IIBBBBB", body)


def libjpeg_warns(data: bytes, message: str) -> bool:
    """Whether libjpeg-turbo warns with ``message`` while Pillow loads the file (simplejpeg raises
    on warnings by default)."""
    Image.open(io.BytesIO(data)).convert("RGB")
    try:
        simplejpeg.decode_jpeg(data)
    except ValueError as exc:
        return message in str(exc)
    return False


def opened(data: bytes) -> Image.Image:
    return Image.open(io.BytesIO(data))


CLAIMS: dict[str, Callable[[bytes], bool]] = {
    "jpeg_damage/extraneous_114_before_eoi.jpg": lambda d: libjpeg_warns(d, "extraneous bytes before marker 0xd9"),
    "jpeg_damage/junk_before_dht.jpg": lambda d: libjpeg_warns(d, "9 extraneous bytes before marker 0xc4"),
    "jpeg_damage/junk_before_rst.jpg": lambda d: libjpeg_warns(d, "37 extraneous bytes before marker 0xd"),
    "jpeg_damage/missing_eoi.jpg": lambda d: not d.endswith(b"\xff\xd9"),
    "jpeg_variants/ycck_simplejpeg.jpg": lambda d: simplejpeg.decode_jpeg_header(d)[2] == "YCCK",
    "jpeg_variants/cmyk_pillow.jpg": lambda d: simplejpeg.decode_jpeg_header(d)[2] == "CMYK",
    "jpeg_variants/rgb_colourspace.jpg": lambda d: simplejpeg.decode_jpeg_header(d)[2] == "RGB",
    "jpeg_variants/subsampling_440.jpg": lambda d: sampling_factors(d) == [0x12, 0x11, 0x11],
    "jpeg_variants/subsampling_411.jpg": lambda d: sampling_factors(d) == [0x41, 0x11, 0x11],
    "jpeg_variants/subsampling_422.jpg": lambda d: sampling_factors(d) == [0x21, 0x11, 0x11],
    "jpeg_variants/restart_rows.jpg": lambda d: len(rst_offsets(d)) > 3,
    "jpeg_variants/progressive.jpg": lambda d: opened(d).info.get("progressive") == 1,
    "jpeg_metadata/mpo_two_frames.jpg": lambda d: opened(d).format == "MPO" and opened(d).n_frames == 2,
    "jpeg_metadata/exif_orientation_6.jpg": lambda d: opened(d).getexif().get(0x0112) == 6,
    "png/rgb16.png": lambda d: png_ihdr(d)[2:4] == (16, 2),
    "png/gray16.png": lambda d: opened(d).mode == "I;16",
    "png/interlaced.png": lambda d: png_ihdr(d)[6] == 1 and opened(d).info.get("interlace") == 1,
    "png/palette_trns.png": lambda d: opened(d).mode == "P" and "transparency" in opened(d).info,
    "other_formats/gif_animated.png": lambda d: opened(d).format == "GIF" and opened(d).n_frames == 3,
    "other_formats/webp_lossless_alpha.webp": lambda d: opened(d).mode == "RGBA",
    "other_formats/tiff_gray16.tif": lambda d: opened(d).mode == "I;16",
}


@pytest.mark.parametrize("path", sorted(CLAIMS))
def test_corpus_file_is_what_it_claims(path, corpus):
    root, described = corpus
    with open(os.path.join(root, path), "rb") as f:
        data = f.read()
    assert CLAIMS[path](data), labelled(path, described)


# -- d. through a DataLoader -----------------------------------------------------------------------


@pytest.mark.parametrize("backend", BACKENDS)
def test_dataloader_workers_read_imagefolder_pixels(backend, corpus, reference, checked):
    _, described = corpus
    # "skip" turns a failing read into a BadSample marker, so one run reports every failing sample.
    dataset = dataset_class(backend)(checked[backend].stores[0], decode="tensor", allow_empty=True, on_error="skip")
    loader = DataLoader(dataset, num_workers=2, batch_size=4, collate_fn=as_list)
    samples = [sample for batch in loader for sample in batch]
    assert len(samples) == len(dataset)
    problems = []
    for i, sample in enumerate(samples):
        label = labelled(dataset.relative_path(i), described)
        expected = reference.get(dataset.relative_path(i))
        if isinstance(sample, BadSample):
            problems.append(f"{label}: read failed in a worker: {sample.error}")
        elif expected is None:
            problems.append(f"{label}: ImageFolder cannot load it, yet a worker read it")
        elif not np.array_equal(as_hwc(sample[0], "tensor"), expected):
            problems.append(f"{label}: pixels differ from ImageFolder's")
    assert not problems, report(problems)
