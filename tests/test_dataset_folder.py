"""DatasetFolder stores: any file type, converted byte for byte and read with DatasetFolder's contract.

The tree holds three kinds of non-image files that the test writes itself: ``.npy`` arrays
(numpy), WAV clips (the standard library's ``wave``) and UTF-8 text, plus a few distractors
(a PNG and a ``.json`` file) that the selections must leave out.
"""

from __future__ import annotations

import json
import os
import wave

import numpy as np
import pytest
import torch
from PIL import Image
from torch.utils.data import DataLoader
from torchvision.datasets import DatasetFolder, ImageFolder
from torchvision.datasets.folder import IMG_EXTENSIONS, default_loader, pil_loader

import torchpack
from conftest import BACKENDS, EXTENSION, dataset_class, photo_like, save
from torchpack import cli

KINDS = (".npy", ".wav", ".txt")
DATASET_FOLDER = {"lmdb": "LMDBDatasetFolder", "hdf5": "HDF5DatasetFolder"}


def folder_class(backend: str):
    return getattr(torchpack, DATASET_FOLDER[backend])


def write_wav(path: str, samples: np.ndarray, rate: int = 8000) -> None:
    os.makedirs(os.path.dirname(path), exist_ok=True)
    with wave.open(path, "wb") as f:
        f.setnchannels(1)
        f.setsampwidth(2)
        f.setframerate(rate)
        f.writeframes(samples.astype("<i2").tobytes())


def make_files_tree(root: str) -> str:
    rng = np.random.default_rng(7)
    for c, name in enumerate(["speech", "music", "noise"]):
        for i in range(4):
            sub = "nested/" if i == 3 else ""
            os.makedirs(f"{root}/{name}/{sub}", exist_ok=True)
            np.save(f"{root}/{name}/{sub}feat{i}.npy", rng.normal(size=(3, 5 + i)).astype(np.float32))
            write_wav(f"{root}/{name}/{sub}clip{i}.wav", rng.integers(-3000, 3000, 400 + 50 * i))
            with open(f"{root}/{name}/{sub}note{i}.txt", "w", encoding="utf-8") as f:
                f.write(f"class {name}, sample {i}: ünïcødé text\n" * (i + 1))
    save(Image.fromarray(photo_like(rng, 20, 20)), f"{root}/speech/cover.png")
    with open(f"{root}/music/meta.json", "w") as f:
        json.dump({"not": "selected"}, f)
    os.makedirs(f"{root}/empty_class")
    return root


# Loaders as people write them for DatasetFolder; module level, so spawn workers can unpickle them.
def npy_loader(file) -> np.ndarray:
    return np.load(file)


def wav_loader(file) -> np.ndarray:
    with wave.open(file, "rb") as f:
        return np.frombuffer(f.readframes(f.getnframes()), dtype="<i2")


def text_loader(file) -> str:
    return file.read().decode("utf-8")


def any_loader(file):
    name = file if isinstance(file, str) else file.name
    if name.endswith(".npy"):
        return npy_loader(file)
    if name.endswith(".wav"):
        return wav_loader(file)
    return text_loader(file) if not isinstance(file, str) else open(file, encoding="utf-8").read()


def path_only_loader(path: str) -> bytes:
    """A loader that insists on a path, as many do: it opens the file itself."""
    with open(path, "rb") as f:
        return f.read()


def same(a, b) -> bool:
    if isinstance(b, np.ndarray):
        return a.dtype == b.dtype and np.array_equal(a, b)
    return a == b


def as_is(tensor: torch.Tensor) -> torch.Tensor:
    return tensor


def check_npy(path: str) -> None:
    if path.endswith(".npy"):
        np.load(path)


def identity_collate(batch):
    return batch


@pytest.fixture(scope="module")
def files_tree(tmp_path_factory) -> str:
    return make_files_tree(str(tmp_path_factory.mktemp("files") / "tree"))


@pytest.fixture(scope="module")
def file_stores(files_tree, tmp_path_factory) -> dict[str, str]:
    out = tmp_path_factory.mktemp("file_stores")
    return {b: torchpack.convert(files_tree, out / f"files{EXTENSION[b]}", extensions=KINDS, workers=0).stores[0] for b in BACKENDS}


def relative(samples, root):
    return [(os.path.relpath(path, root).replace(os.sep, "/"), target) for path, target in samples]


@pytest.mark.parametrize("backend", BACKENDS)
def test_files_are_stored_byte_for_byte_with_dataset_folder_order(backend, files_tree, file_stores):
    reference = DatasetFolder(files_tree, loader=any_loader, extensions=KINDS, allow_empty=True)
    dataset = folder_class(backend)(file_stores[backend], loader=any_loader, extensions=KINDS, allow_empty=True)
    assert isinstance(dataset, DatasetFolder) and not isinstance(dataset, ImageFolder)
    assert dataset.classes == reference.classes and "empty_class" in dataset.classes
    assert dataset.class_to_idx == reference.class_to_idx
    assert relative(dataset.samples, file_stores[backend]) == relative(reference.samples, files_tree)
    assert list(dataset.targets) == reference.targets and dataset.extensions == KINDS
    assert len(dataset) == len(reference) == 36
    for i, (path, _) in enumerate(reference.samples):
        with open(path, "rb") as f:
            assert dataset.read_bytes(i) == f.read(), path
        assert same(dataset[i][0], reference[i][0]), path


@pytest.mark.parametrize("backend", BACKENDS)
def test_the_index_records_the_sniffed_encoding(backend, file_stores):
    assert torchpack.store_info(file_stores[backend])["encodings"] == {"npy": 12, "wav": 12, "text": 12}
    header = folder_class(backend)(file_stores[backend], loader=npy_loader, extensions=(".npy",), allow_empty=True).header
    assert header["selection"]["extensions"] == list(KINDS)
    assert header["selection"]["not_selected_paths"] == ["music/meta.json", "speech/cover.png"]
    assert torchpack.verify_store(file_stores[backend], decode=True).ok  # non-images: checksums only


@pytest.mark.parametrize("backend", BACKENDS)
def test_the_loader_gets_a_file_object_named_by_the_stored_path(backend, file_stores):
    seen = []

    def recording_loader(file):
        seen.append((type(file).__name__, file.name, file.read(6)))
        return file.name

    dataset = folder_class(backend)(file_stores[backend], loader=recording_loader, extensions=(".npy",), allow_empty=True)
    assert dataset[0][0] == dataset.relative_path(0) == "music/feat0.npy"
    assert seen == [("SampleFile", "music/feat0.npy", b"\x93NUMPY")]


@pytest.mark.parametrize("backend", BACKENDS)
def test_extensions_and_is_valid_file_select_like_dataset_folder(backend, files_tree, file_stores):
    def only_wav(path: str) -> bool:
        return path.endswith(".wav")

    for kwargs in ({"extensions": (".npy",)}, {"extensions": ".txt"}, {"is_valid_file": only_wav}):
        reference = DatasetFolder(files_tree, loader=any_loader, allow_empty=True, **kwargs)
        dataset = folder_class(backend)(file_stores[backend], loader=any_loader, allow_empty=True, **kwargs)
        assert relative(dataset.samples, file_stores[backend]) == relative(reference.samples, files_tree), kwargs
        assert all(same(dataset[i][0], reference[i][0]) for i in range(len(reference))), kwargs


@pytest.mark.parametrize("backend", BACKENDS)
def test_errors_are_dataset_folders(backend, files_tree, file_stores):
    cls = folder_class(backend)
    for kwargs in ({}, {"extensions": (".npy",), "is_valid_file": bool}):
        with pytest.raises(ValueError) as expected:
            DatasetFolder(files_tree, loader=any_loader, **kwargs)
        with pytest.raises(ValueError) as got:
            cls(file_stores[backend], loader=any_loader, **kwargs)
        assert str(got.value) == str(expected.value)
    with pytest.raises(FileNotFoundError) as expected:
        DatasetFolder(files_tree, loader=any_loader, extensions=KINDS)
    with pytest.raises(FileNotFoundError) as got:
        cls(file_stores[backend], loader=any_loader, extensions=KINDS)
    assert str(got.value) == str(expected.value)


@pytest.mark.parametrize("backend", BACKENDS)
def test_a_selection_wider_than_the_conversion_is_refused(backend, file_stores):
    """The tree's cover.png and meta.json were not converted: a rule that accepts them would lose them silently."""
    with pytest.raises(ValueError, match=r"accept 1 or more file\(s\) .* such as 'music/meta.json'.*extensions=\('.npy', '.wav', '.txt'\)"):
        folder_class(backend)(file_stores[backend], loader=any_loader, extensions=[".npy", ".json"])
    with pytest.warns(UserWarning, match="is_valid_file accepts 2 file"):
        dataset = folder_class(backend)(file_stores[backend], loader=any_loader, is_valid_file=lambda p: True, allow_empty=True)
    assert len(dataset) == 36  # a filter of what the store holds: it may be meant that way


@pytest.mark.parametrize("backend", BACKENDS)
def test_files_left_out_beyond_the_listed_ones_are_still_refused(backend, tmp_path):
    """Over 1,000 files turned down: the header lists the first 1,000 and counts every suffix."""
    tree = tmp_path / "tree"
    (tree / "a").mkdir(parents=True)
    np.save(tree / "a" / "x.npy", np.zeros(3))
    for i in range(1001):
        (tree / "a" / f"note{i:04d}.txt").write_text("x")
    (tree / "a" / "zz.json").write_text("{}")  # sorts after every listed path
    store = torchpack.convert(tree, tmp_path / f"s{EXTENSION[backend]}", extensions=(".npy",), workers=0).stores[0]
    selection = folder_class(backend)(store, loader=npy_loader, extensions=(".npy",)).header["selection"]
    assert selection["not_selected"] == 1002 and len(selection["not_selected_paths"]) == 1000
    assert selection["not_selected_suffixes"] == {".txt": 1001, ".json": 1}
    with pytest.raises(ValueError, match="with suffixes these extensions match"):
        folder_class(backend)(store, loader=npy_loader, extensions=(".npy", ".json"))
    assert len(folder_class(backend)(store, loader=npy_loader, extensions=(".npy", ".wav"))) == 1


@pytest.mark.parametrize("backend", BACKENDS)
def test_a_loader_that_insists_on_a_path_works_with_a_warning(backend, files_tree, file_stores):
    dataset = folder_class(backend)(file_stores[backend], loader=path_only_loader, extensions=(".wav",), allow_empty=True)
    with pytest.warns(RuntimeWarning, match="temporary file.*loader_input='path'"):
        first = dataset[0][0]
    assert first == dataset.read_bytes(0)
    assert [dataset[i][0] for i in range(len(dataset))] == [dataset.read_bytes(i) for i in range(len(dataset))]
    explicit = folder_class(backend)(
        file_stores[backend], loader=path_only_loader, extensions=(".wav",), allow_empty=True, loader_input="path"
    )
    assert explicit[3][0] == dataset.read_bytes(3)
    leftovers = [n for n in os.listdir("/dev/shm" if os.path.isdir("/dev/shm") else "/tmp") if n.startswith("torchpack-")]
    assert leftovers == []


@pytest.mark.parametrize("backend", BACKENDS)
@pytest.mark.parametrize("loader", [pil_loader, default_loader])
def test_torchvisions_image_loaders_decode_without_a_path(backend, loader, parity_tree, stores, monkeypatch):
    monkeypatch.setattr(torchpack.loaders.LoaderCall, "_with_path", lambda *a: pytest.fail("used a temporary file"))
    reference = ImageFolder(parity_tree, allow_empty=True)
    dataset = folder_class(backend)(stores[backend], loader=loader, extensions=IMG_EXTENSIONS, allow_empty=True)
    for i in range(len(reference)):
        assert np.array_equal(np.asarray(dataset[i][0]), np.asarray(reference[i][0]))
    assert dataset_class(backend)(stores[backend], allow_empty=True).loader is default_loader is reference.loader


@pytest.mark.parametrize("backend", BACKENDS)
@pytest.mark.parametrize("method", ["fork", "spawn", "forkserver"])
def test_workers_of_every_start_method(backend, method, files_tree, file_stores):
    reference = DatasetFolder(files_tree, loader=any_loader, extensions=(".npy",), allow_empty=True)
    dataset = folder_class(backend)(file_stores[backend], loader=npy_loader, extensions=(".npy",), allow_empty=True)
    loader = DataLoader(dataset, batch_size=3, num_workers=2, multiprocessing_context=method, collate_fn=identity_collate)
    got = [sample for batch in loader for sample in batch]
    assert len(got) == len(reference)
    for (array, target), (expected, expected_target) in zip(got, (reference[i] for i in range(len(reference)))):
        assert target == expected_target and np.array_equal(array, expected)


@pytest.mark.parametrize("backend", BACKENDS)
def test_check_callable_leaves_out_and_reports_files_that_raise(backend, files_tree, tmp_path):
    tree = str(tmp_path / "tree")
    make_files_tree(tree)
    with open(f"{tree}/noise/feat1.npy", "r+b") as f:
        f.truncate(40)  # a cut array: np.load raises
    result = torchpack.convert(tree, tmp_path / f"checked{EXTENSION[backend]}", extensions=KINDS, check=check_npy, workers=2)
    assert [(b["path"], b["error_type"]) for b in result.bad_files] == [("noise/feat1.npy", "ValueError")]
    assert result.num_samples == 35
    unchecked = torchpack.convert(tree, tmp_path / f"unchecked{EXTENSION[backend]}", extensions=KINDS, workers=0)
    assert unchecked.num_samples == 36 and not unchecked.bad_files


@pytest.mark.parametrize("backend", BACKENDS)
def test_is_valid_file_converts_what_it_accepts_and_checks_only_images(backend, tmp_path):
    """An ImageFolder conversion with a rule that takes .txt files too: they are stored (unchecked), not dropped."""
    tree = str(tmp_path / "tree")
    rng = np.random.default_rng(3)
    save(Image.fromarray(photo_like(rng, 30, 20)), f"{tree}/a/one.jpg", quality=90)
    save(Image.fromarray(photo_like(rng, 30, 20)).convert("P"), f"{tree}/a/two.gif")
    with open(f"{tree}/a/caption.txt", "w") as f:
        f.write("a caption, not an image")
    with open(f"{tree}/a/broken.gif", "wb") as f:
        f.write(b"GIF89a broken")

    def everything(path: str) -> bool:
        return True

    result = torchpack.convert(tree, tmp_path / f"all{EXTENSION[backend]}", is_valid_file=everything, workers=0)
    assert [b["path"] for b in result.bad_files] == ["a/broken.gif"]
    reference = ImageFolder(tree, is_valid_file=lambda p: not p.endswith("broken.gif"))
    store = result.stores[0]
    images = dataset_class(backend)(store, is_valid_file=lambda p: not p.endswith((".txt", "broken.gif")))
    assert [os.path.basename(p) for p, _ in images.samples] == ["one.jpg", "two.gif"]
    assert np.array_equal(np.asarray(images[1][0]), np.asarray(reference[2][0]))
    texts = folder_class(backend)(store, loader=text_loader, extensions=(".txt",))
    assert texts[0][0] == "a caption, not an image"


@pytest.mark.parametrize("backend", BACKENDS)
def test_raw_storage_refuses_non_images_clearly(backend, files_tree, tmp_path):
    result = torchpack.convert(files_tree, tmp_path / f"raw{EXTENSION[backend]}", extensions=(".npy", ".png"), storage="raw", workers=0)
    assert result.num_samples == 1  # the PNG
    assert {b["error"] for b in result.bad_files} == {"storage='raw' stores images only; this file is npy"}


@pytest.mark.parametrize("backend", BACKENDS)
def test_cli_extensions(backend, files_tree, tmp_path, capsys):
    dst = str(tmp_path / f"cli{EXTENSION[backend]}")
    assert cli.main(["convert", files_tree, dst, "--extensions", "npy, .WAV", "--workers", "0", "--quiet"]) == 0
    assert "24 stored" in capsys.readouterr().out
    dataset = folder_class(backend)(dst, loader=any_loader, extensions=(".npy", ".wav"), allow_empty=True)
    assert len(dataset) == 24 and {dataset[i][0].dtype for i in range(len(dataset))} == {np.dtype("<i2"), np.dtype(np.float32)}
    assert cli.main(["convert", files_tree, dst + "2", "--extensions", ",", "--backend", backend]) == 1


@pytest.mark.parametrize("backend", BACKENDS)
def test_image_stores_are_dataset_folder_stores(backend, stores):
    dataset = dataset_class(backend)(stores[backend], allow_empty=True)
    assert isinstance(dataset, folder_class(backend)) and isinstance(dataset, ImageFolder)
    tensors = folder_class(backend)(stores[backend], loader=torchpack.from_tensor_decoder(as_is), extensions=(".jpg",), allow_empty=True)
    assert tensors[0][0].dtype == torch.uint8 and bytes(tensors[0][0].numpy()) == tensors.read_bytes(0)


INTERRUPT_AT = {"path": None}


def interrupt_at_a_file(path: str) -> None:
    """A check that stops the conversion (as Ctrl-C would) when it reaches one file."""
    if path == INTERRUPT_AT["path"]:
        raise KeyboardInterrupt


@pytest.mark.parametrize("backend", BACKENDS)
def test_resume_is_not_refused_when_only_unselected_files_changed(backend, tmp_path):
    tree = tmp_path / "tree"
    (tree / "a").mkdir(parents=True)
    for i in range(6):
        np.save(tree / "a" / f"x{i}.npy", np.zeros(i + 1))
    (tree / "a" / "notes.txt").write_text("left out")
    dst = tmp_path / f"s{EXTENSION[backend]}"
    INTERRUPT_AT["path"] = str(tree / "a" / "x4.npy")
    with pytest.raises(KeyboardInterrupt):
        torchpack.convert(tree, dst, extensions=(".npy",), check=interrupt_at_a_file, workers=0, commit_every=2)
    assert os.path.isdir(f"{dst}.partial") and not dst.exists()
    (tree / "a" / "more_notes.txt").write_text("also left out, added meanwhile")
    INTERRUPT_AT["path"] = None
    result = torchpack.convert(tree, dst, extensions=(".npy",), check=interrupt_at_a_file, workers=0, commit_every=2, resume=True)
    assert result.num_samples == 6 and result.resumed_from == 4
    selection = folder_class(backend)(dst, loader=npy_loader, extensions=(".npy",)).header["selection"]
    assert selection["not_selected_paths"] == ["a/more_notes.txt", "a/notes.txt"]


@pytest.mark.parametrize("backend", BACKENDS)
def test_a_datasetfolder_conversion_keeps_files_pillow_cannot_open(backend, tmp_path):
    """A .tif that is not an image Pillow reads (a 6-band scientific TIFF, say) is the loader's business."""
    tree = tmp_path / "tree"
    (tree / "a").mkdir(parents=True)
    (tree / "a" / "bands.tif").write_bytes(b"II*\x00" + bytes(range(256)) * 8)
    np.save(tree / "a" / "x.npy", np.zeros(2))
    kept = torchpack.convert(tree, tmp_path / f"kept{EXTENSION[backend]}", extensions=(".tif", ".npy"), workers=0)
    assert kept.num_samples == 2 and not kept.bad_files
    checked = torchpack.convert(tree, tmp_path / f"checked{EXTENSION[backend]}", extensions=(".tif", ".npy"), check=True, workers=0)
    assert checked.num_samples == 1 and [b["path"] for b in checked.bad_files] == ["a/bands.tif"]


def long_name_path_loader(path: str) -> bytes:
    assert os.path.basename(path).endswith(".wav")
    with open(path, "rb") as f:
        return f.read()


@pytest.mark.parametrize("backend", BACKENDS)
def test_the_path_fallback_copes_with_long_names_and_names_failures(backend, tmp_path):
    tree = tmp_path / "tree"
    long_name = "x" * 240 + ".wav"
    write_wav(str(tree / "a" / long_name), np.zeros(10))
    store = torchpack.convert(tree, tmp_path / f"s{EXTENSION[backend]}", extensions=(".wav",), workers=0).stores[0]
    dataset = folder_class(backend)(store, loader=long_name_path_loader, extensions=(".wav",), loader_input="path")
    assert dataset[0][0] == dataset.read_bytes(0)

    calls = []

    def fails_both_ways(path):
        calls.append(path)
        raise OSError("the loader's own failure")

    broken = folder_class(backend)(store, loader=fails_both_ways, extensions=(".wav",))
    with pytest.raises(torchpack.BadSampleError) as caught:
        broken[0]
    assert isinstance(caught.value.__cause__, OSError) and isinstance(caught.value.__cause__.__cause__, OSError)
    assert len(calls) == 2  # once with the file object, once with a path: its OSError is not a full /dev/shm


def test_name_suffix_matches_the_end_of_the_name_as_torchvision_does():
    from torchpack.scan import name_suffix

    assert name_suffix("a/b.TAR.gz") == ".gz"
    assert name_suffix("a/.npy") == ".npy"  # has_file_allowed_extension(".npy", ".npy") is True
    assert name_suffix("a.d/README") == ""


def test_an_unpicklable_check_is_refused_before_anything_is_written(files_tree, tmp_path):
    dst = tmp_path / "s.lmdb"
    with pytest.raises(ValueError, match="`check` must be picklable"):
        torchpack.convert(files_tree, dst, extensions=KINDS, check=lambda path: None, workers=1)
    assert not dst.exists() and not os.path.exists(f"{dst}.partial")
    assert torchpack.convert(files_tree, dst, extensions=KINDS, check=lambda path: None, workers=0).num_samples == 36
