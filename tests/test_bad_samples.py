"""Bad files are found at conversion and left out; bad samples are filtered at load time, never a crashed run."""

from __future__ import annotations

import io
import logging
import os
import re
import signal
import struct
import subprocess
import sys
import time
import zlib

import h5py
import lmdb
import numpy as np
import psutil
import pytest
import torch
from PIL import Image, ImageFile
from torch.utils.data import DataLoader
from torchvision import transforms
from torchvision.datasets import ImageFolder

import torchpack
from conftest import BACKENDS, EXTENSION, dataset_class, photo_like
from torchpack import BadSample, BadSampleError, SkipBadCollate
from torchpack.cli import main as cli_main
from torchpack.format import sample_key
from torchpack.ingest import IngestOptions, ingest_file
from torchpack.store import load_store_index

# -- the broken-file corpus ------------------------------------------------------------------------


def encode(image: Image.Image, fmt: str, **kwargs) -> bytes:
    out = io.BytesIO()
    image.save(out, format=fmt, **kwargs)
    return out.getvalue()


def png_claiming_size(width: int, height: int) -> bytes:
    """A real 8x8 PNG whose IHDR (with a recomputed CRC) claims ``width`` x ``height`` pixels."""
    png = encode(Image.new("RGB", (8, 8), (10, 20, 30)), "PNG")
    ihdr = bytearray(png[8:33])  # length (4), b"IHDR", width, height, 5 more bytes, CRC (4)
    assert ihdr[4:8] == b"IHDR"
    ihdr[8:16] = struct.pack(">II", width, height)
    ihdr[21:25] = struct.pack(">I", zlib.crc32(bytes(ihdr[4:21])))
    return png[:8] + bytes(ihdr) + png[33:]


def make_broken_tree(root: str) -> str:
    """Good, odd-but-valid and broken files in three classes, all written by Pillow (or by hand)."""
    rng = np.random.default_rng(3)
    rgb = lambda w, h: Image.fromarray(photo_like(rng, w, h))  # noqa: E731
    jpeg, png = encode(rgb(64, 48), "JPEG", quality=90), encode(rgb(40, 30), "PNG")
    exif = Image.Exif()
    exif[0x0112] = 6  # orientation: rotate 90; ImageFolder does not apply it, neither may we
    gray16 = Image.fromarray((rng.random((24, 20)) * 65535).astype(np.uint16))
    palette = rgb(32, 32).convert("P", palette=Image.Palette.ADAPTIVE, colors=16)
    files = {
        "broken/truncated.jpg": jpeg[: len(jpeg) // 2],
        "broken/truncated.png": png[: len(png) // 2],
        "broken/empty.jpg": b"",
        "broken/random.jpg": rng.bytes(3000),
        "broken/bomb.png": png_claiming_size(30000, 30000),
        "broken/zz_good.jpg": encode(rgb(35, 27), "JPEG", quality=85),  # the class keeps a sample
        "good/a.jpg": encode(rgb(36, 28), "JPEG", quality=85),
        "good/b.jpg": encode(rgb(37, 29), "JPEG", quality=85),
        "good/c.png": encode(rgb(38, 30), "PNG"),
        "good/nested/d.jpg": encode(rgb(39, 31), "JPEG", quality=85),
        "odd/png_named.jpg": encode(rgb(30, 20), "PNG"),
        "odd/gray16.png": encode(gray16, "PNG"),
        "odd/palette_transparency.png": encode(palette, "PNG", transparency=0),
        "odd/cmyk.jpg": encode(rgb(50, 40).convert("CMYK"), "JPEG", quality=90),
        "odd/exif_orientation.jpg": encode(rgb(48, 32), "JPEG", quality=90, exif=exif),
    }
    for rel, data in files.items():
        path = os.path.join(root, rel)
        os.makedirs(os.path.dirname(path), exist_ok=True)
        with open(path, "wb") as f:
            f.write(data)
    return root


def imagefolder_failures(root: str) -> dict[str, type]:
    """Relative path -> exception type, for every sample ``ImageFolder(root)[i]`` fails to load."""
    reference = ImageFolder(root)
    failures = {}
    for i, (path, _) in enumerate(reference.samples):
        try:
            reference[i]
        except Exception as exc:
            failures[os.path.relpath(path, root).replace(os.sep, "/")] = type(exc)
    return failures


@pytest.fixture(scope="module")
def broken_tree(tmp_path_factory) -> str:
    return make_broken_tree(str(tmp_path_factory.mktemp("broken") / "tree"))


@pytest.fixture(scope="module")
def expected_bad(broken_tree) -> dict[str, type]:
    assert ImageFile.LOAD_TRUNCATED_IMAGES is False  # Pillow's default, which ImageFolder runs with
    return imagefolder_failures(broken_tree)


@pytest.fixture(scope="module")
def checked(broken_tree, tmp_path_factory) -> dict[str, torchpack.ConvertResult]:
    """The corpus converted with the check (the default) and a real worker pool, once per backend."""
    out = tmp_path_factory.mktemp("checked")
    return {b: torchpack.convert(broken_tree, out / f"checked{EXTENSION[b]}", workers=2) for b in BACKENDS}


@pytest.fixture(scope="module")
def unchecked(broken_tree, tmp_path_factory) -> dict[str, str]:
    """The corpus converted with check=False: the broken files are stored and fail at load time."""
    out = tmp_path_factory.mktemp("unchecked")
    return {
        b: torchpack.convert(broken_tree, out / f"unchecked{EXTENSION[b]}", workers=0, check=False).stores[0]
        for b in BACKENDS
    }


def bad_rows(dataset, expected_bad: dict[str, type]) -> list[int]:
    return [i for i in range(len(dataset)) if dataset.relative_path(i) in expected_bad]


def to_tensor16(image: Image.Image) -> torch.Tensor:
    """A fixed-size tensor, so that any batch of good samples collates."""
    return transforms.functional.pil_to_tensor(image.resize((16, 16)))


class FailOnWidth:
    """A transform that raises on images of the given widths (picklable, for worker processes)."""

    def __init__(self, *widths: int) -> None:
        self.widths = widths

    def __call__(self, image: Image.Image) -> torch.Tensor:
        if image.width in self.widths:
            raise ValueError(f"transform refuses width {image.width}")
        return to_tensor16(image)


# -- at conversion ---------------------------------------------------------------------------------


def test_the_corpus_has_every_kind_of_file(broken_tree, expected_bad):
    broken = {f"broken/{name}" for name in os.listdir(os.path.join(broken_tree, "broken"))}
    assert set(expected_bad) == broken - {"broken/zz_good.jpg"}
    assert expected_bad["broken/bomb.png"] is Image.DecompressionBombError
    assert expected_bad["broken/truncated.jpg"] is OSError and expected_bad["broken/truncated.png"] is OSError
    with Image.open(os.path.join(broken_tree, "odd/png_named.jpg")) as image:
        assert image.format == "PNG"
    with Image.open(os.path.join(broken_tree, "odd/gray16.png")) as image:
        assert image.mode.startswith("I")
    with Image.open(os.path.join(broken_tree, "odd/palette_transparency.png")) as image:
        assert image.mode == "P" and "transparency" in image.info
    with Image.open(os.path.join(broken_tree, "odd/cmyk.jpg")) as image:
        assert image.mode == "CMYK"
    with Image.open(os.path.join(broken_tree, "odd/exif_orientation.jpg")) as image:
        assert image.getexif()[0x0112] == 6


@pytest.mark.parametrize("backend", BACKENDS)
def test_conversion_reports_exactly_what_imagefolder_cannot_load(backend, broken_tree, checked, expected_bad):
    result = checked[backend]
    reported = {bad["path"]: bad for bad in result.bad_files}
    assert set(reported) == set(expected_bad)
    assert reported["broken/bomb.png"]["error_type"] == "DecompressionBombError"
    assert reported["broken/random.jpg"]["error_type"] == "UnidentifiedImageError"
    assert reported["broken/truncated.jpg"]["error_type"] == "OSError"
    assert "truncated" in reported["broken/truncated.png"]["error"]
    assert reported["broken/empty.jpg"]["error"] == "empty file"
    assert all(bad["error"] for bad in result.bad_files)
    dataset = dataset_class(backend)(result.stores[0])
    assert dataset.header["bad_files"] == result.bad_files
    reference = ImageFolder(broken_tree)
    kept = [(os.path.relpath(p, broken_tree).replace(os.sep, "/"), t) for p, t in reference.samples]
    kept = [(p, t) for p, t in kept if p not in expected_bad]
    assert [(dataset.relative_path(i), dataset.targets[i]) for i in range(len(dataset))] == kept
    assert result.num_samples == len(dataset) == len(reference) - len(expected_bad)


@pytest.mark.parametrize("backend", BACKENDS)
def test_every_stored_file_loads_pixel_identical_to_imagefolder(backend, broken_tree, checked):
    reference = ImageFolder(broken_tree)
    by_path = {os.path.relpath(p, broken_tree).replace(os.sep, "/"): i for i, (p, _) in enumerate(reference.samples)}
    dataset = dataset_class(backend)(checked[backend].stores[0])
    for i in range(len(dataset)):
        expected, expected_target = reference[by_path[dataset.relative_path(i)]]
        image, target = dataset[i]
        assert target == expected_target
        assert image.mode == "RGB" and image.size == expected.size, dataset.relative_path(i)
        assert np.array_equal(np.asarray(image), np.asarray(expected)), dataset.relative_path(i)
    assert dataset.header["storage"]["checked"] is True
    png_named = next(i for i in range(len(dataset)) if dataset.relative_path(i) == "odd/png_named.jpg")
    assert dataset.read_bytes(png_named)[:8] == b"\x89PNG\r\n\x1a\n"  # stored untouched; Pillow sniffs it


def test_check_accepts_exactly_what_the_default_loader_accepts(broken_tree, expected_bad):
    """File by file, in this process: the converter's check fails where ImageFolder's loader fails."""
    reference = ImageFolder(broken_tree)
    for path, _ in reference.samples:
        rel = os.path.relpath(path, broken_tree).replace(os.sep, "/")
        assert ingest_file(path, IngestOptions()).ok is (rel not in expected_bad), rel


@pytest.mark.parametrize("backend", BACKENDS)
def test_check_follows_pillow_settings_of_the_converting_process(backend, broken_tree, tmp_path, monkeypatch):
    """With LOAD_TRUNCATED_IMAGES set, ImageFolder loads truncated files; so does the check, even in workers."""
    monkeypatch.setattr(ImageFile, "LOAD_TRUNCATED_IMAGES", True)
    expected = imagefolder_failures(broken_tree)
    assert "broken/truncated.jpg" not in expected  # the setting changes what ImageFolder accepts
    result = torchpack.convert(broken_tree, tmp_path / f"s{EXTENSION[backend]}", workers=2)
    assert {bad["path"] for bad in result.bad_files} == set(expected)


@pytest.mark.parametrize("backend", BACKENDS)
def test_bombs_and_junk_never_break_the_pool(backend, tmp_path):
    """A chunk of nothing but bombs, empty and random files, then good files: all in one pool."""
    rng = np.random.default_rng(5)
    root = tmp_path / "tree"
    for i in range(6):
        for name, data in (
            (f"bomb{i}.png", png_claiming_size(30000, 30000)),
            (f"empty{i}.jpg", b""),
            (f"random{i}.jpg", rng.bytes(500 + i)),
        ):
            (root / "junk").mkdir(parents=True, exist_ok=True)
            (root / "junk" / name).write_bytes(data)
        (root / "zgood").mkdir(exist_ok=True)
        (root / "zgood" / f"{i}.jpg").write_bytes(encode(Image.fromarray(photo_like(rng, 20, 20)), "JPEG"))
    result = torchpack.convert(root, tmp_path / f"s{EXTENSION[backend]}", workers=2, commit_every=4)
    assert result.num_samples == 6 and len(result.bad_files) == 18
    kinds = {bad["error_type"] for bad in result.bad_files}
    assert kinds == {"DecompressionBombError", "ValueError", "UnidentifiedImageError"}
    dataset = dataset_class(backend)(result.stores[0], allow_empty=True)
    assert [dataset[i][0].size for i in range(len(dataset))] == [(20, 20)] * 6


_CONVERT_SCRIPT = """
import sys, torchpack
torchpack.convert(sys.argv[1], sys.argv[2], workers=2)
print("finished")
"""


def _pool_workers(proc: psutil.Process) -> list[psutil.Process]:
    """The converter's pool processes: forked by its forkserver, so its grandchildren.

    The direct children are the forkserver and the resource tracker; telling them apart by
    command line races with their exec, so the process tree decides.
    """
    try:
        return [child for child in proc.children(recursive=True) if child.ppid() != proc.pid]
    except psutil.NoSuchProcess:
        return []


@pytest.mark.parametrize("backend", BACKENDS)
def test_a_killed_worker_is_a_clear_error_not_a_hang(backend, broken_tree, tmp_path):
    # A FIFO named .jpg holds one worker in open() until we kill the pool: the kill lands while
    # the conversion is surely running, without any timing guesses.
    tree = tmp_path / "tree"
    for rel in ("good/a.jpg", "good/b.jpg", "good/c.png", "odd/cmyk.jpg"):
        (tree / rel).parent.mkdir(parents=True, exist_ok=True)
        (tree / rel).write_bytes(open(os.path.join(broken_tree, rel), "rb").read())
    fifo = tree / "good" / "blocks.jpg"
    os.mkfifo(fifo)
    dst = tmp_path / f"s{EXTENSION[backend]}"
    proc = subprocess.Popen(
        [sys.executable, "-c", _CONVERT_SCRIPT, str(tree), str(dst)],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        start_new_session=True,
    )
    descendants: list[psutil.Process] = []
    try:
        parent = psutil.Process(proc.pid)
        deadline = time.monotonic() + 120
        while not (workers := _pool_workers(parent)) and time.monotonic() < deadline and proc.poll() is None:
            time.sleep(0.1)
        assert workers, "the converter never started its pool"
        descendants = parent.children(recursive=True)
        workers[0].send_signal(signal.SIGKILL)
        _, stderr = proc.communicate(timeout=60)
    finally:
        if proc.poll() is None:
            os.killpg(proc.pid, signal.SIGKILL)
            proc.wait()
        _release(fifo)
    assert proc.returncode != 0
    assert "RuntimeError" in stderr and "worker process died" in stderr, stderr[-2000:]
    assert "resume" in stderr
    assert not dst.exists()
    _, alive = psutil.wait_procs(descendants, timeout=30)
    assert not alive, f"processes left behind: {alive}"


def test_a_worker_killed_while_the_pool_starts_is_a_clear_error(monkeypatch):
    # The pool starts its workers one by one; a worker killed before the last one has started
    # breaks the pool inside that start (BrokenProcessPool, or EOFError/EBADF from the forkserver).
    # Kill the first worker from inside the second one's start, so the race is not left to chance.
    from multiprocessing.process import BaseProcess

    from torchpack.ingest_pool import IngestPool

    started: list[BaseProcess] = []
    original_start = BaseProcess.start

    def start_after_killing_the_first(process: BaseProcess) -> None:
        if started:
            os.kill(started[0].pid, signal.SIGKILL)
            started[0].join(30)
        original_start(process)
        started.append(process)

    monkeypatch.setattr(BaseProcess, "start", start_after_killing_the_first)
    with pytest.raises(RuntimeError, match="worker process died .*while the workers were starting.*resume"):
        with IngestPool(workers=3):
            pass
    _, alive = psutil.wait_procs([psutil.Process(p.pid) for p in started if psutil.pid_exists(p.pid)], timeout=30)
    assert not alive, f"workers left behind: {alive}"


def _release(fifo) -> None:
    """Unblock a reader still waiting on the FIFO, if any."""
    try:
        os.close(os.open(fifo, os.O_WRONLY | os.O_NONBLOCK))
    except OSError:
        pass  # no reader left


@pytest.mark.parametrize("backend", BACKENDS)
def test_cli_lists_left_out_files(backend, broken_tree, checked, expected_bad, tmp_path, capsys):
    assert cli_main(["info", checked[backend].stores[0]]) == 0
    out = capsys.readouterr().out
    assert f"Left out {len(expected_bad)} file(s)" in out
    for path in expected_bad:
        assert re.search(rf"^  {re.escape(path)}: \w+: .+$", out, re.MULTILINE), path
    assert "broken/bomb.png: DecompressionBombError" in out

    dst = tmp_path / f"cli{EXTENSION[backend]}"
    assert cli_main(["convert", broken_tree, str(dst), "--workers", "0", "--quiet"]) == 0
    lines = capsys.readouterr().out.splitlines()
    summary = next(i for i, line in enumerate(lines) if "stored," in line)
    assert f"{len(expected_bad)} left out" in lines[summary]
    listed = next(i for i, line in enumerate(lines) if line.startswith("Left out"))
    assert listed > summary
    assert {line.split(":")[0].strip() for line in lines[listed + 1 :]} == set(expected_bad)


# -- at load time ----------------------------------------------------------------------------------


@pytest.mark.parametrize("backend", BACKENDS)
def test_unchecked_store_keeps_the_broken_files(backend, unchecked, expected_bad):
    dataset = dataset_class(backend)(unchecked[backend])
    stored = {dataset.relative_path(i) for i in range(len(dataset))}
    # A zero-byte file holds no sample even unchecked; every other broken file is stored.
    assert stored & set(expected_bad) == set(expected_bad) - {"broken/empty.jpg"}
    assert dataset.header["storage"]["checked"] is False


@pytest.mark.parametrize("backend", BACKENDS)
def test_skip_runs_a_full_epoch_with_two_workers_and_counts(backend, unchecked, expected_bad):
    dataset = dataset_class(backend)(unchecked[backend], transform=to_tensor16, on_error="skip")
    bad = bad_rows(dataset, expected_bad)
    assert len(bad) == 4
    loader = DataLoader(dataset, batch_size=3, shuffle=True, num_workers=2, collate_fn=SkipBadCollate())
    seen = []
    for batch in loader:
        if batch is None:
            continue
        images, targets = batch
        assert images.shape[1:] == (3, 16, 16)
        seen.extend(targets.tolist())
    assert len(seen) == len(dataset) - len(bad)
    assert sorted(seen) == sorted(dataset.targets[i] for i in range(len(dataset)) if i not in bad)
    assert dataset.skipped_count == len(bad)  # counted in the workers, read in the parent
    for _ in loader:
        pass
    assert dataset.skipped_count == 2 * len(bad)
    dataset.reset_skipped_count()
    assert dataset.skipped_count == 0


@pytest.mark.parametrize("backend", BACKENDS)
def test_skip_returns_a_marker_and_logs(backend, unchecked, expected_bad, caplog):
    dataset = dataset_class(backend)(unchecked[backend], on_error="skip")
    index = bad_rows(dataset, expected_bad)[0]
    path = dataset.relative_path(index)
    with caplog.at_level(logging.WARNING, logger="torchpack"):
        marker = dataset[index]
    assert isinstance(marker, BadSample) and marker.index == index and marker.path == path
    assert path == "broken/bomb.png" and marker.error.startswith("DecompressionBombError: ")
    records = [r for r in caplog.records if r.name == "torchpack"]
    assert len(records) == 1 and records[0].levelno == logging.WARNING
    assert path in records[0].getMessage() and str(index) in records[0].getMessage()
    assert dataset.skipped_count == 1


@pytest.mark.parametrize("backend", BACKENDS)
def test_raise_names_index_and_path_and_chains_the_cause(backend, unchecked, expected_bad):
    dataset = dataset_class(backend)(unchecked[backend])
    assert dataset.on_error == "raise"
    bad = bad_rows(dataset, expected_bad)
    for index in bad:
        path = dataset.relative_path(index)
        with pytest.raises(BadSampleError, match=rf"Sample {index} \({re.escape(path)}\)") as info:
            dataset[index]
        assert isinstance(info.value.__cause__, Exception)
        assert type(info.value.__cause__).__name__ in str(info.value)
    bomb = next(i for i in bad if dataset.relative_path(i) == "broken/bomb.png")
    with pytest.raises(BadSampleError) as info:
        dataset[bomb]
    assert isinstance(info.value.__cause__, Image.DecompressionBombError)
    assert dataset.skipped_count == 0


@pytest.mark.parametrize("backend", BACKENDS)
def test_replace_returns_the_next_valid_sample(backend, unchecked, expected_bad):
    dataset = dataset_class(backend)(unchecked[backend], transform=to_tensor16, on_error="replace")
    bad = bad_rows(dataset, expected_bad)
    assert bad == list(range(len(bad)))  # "broken" sorts first: bad rows 0..3, then broken/zz_good.jpg
    first_good = len(bad)
    expected_image, expected_target = dataset[first_good]
    dataset.reset_skipped_count()
    image, target = dataset[bad[0]]
    assert torch.equal(image, expected_image) and target == expected_target
    assert dataset.skipped_count == len(bad)  # the bad sample asked for, and the bad ones after it
    for index in bad:
        assert not isinstance(dataset[index], BadSample)


@pytest.mark.parametrize("backend", BACKENDS)
def test_replace_gives_up_with_a_clear_error_when_nothing_loads(backend, unchecked):
    dataset = dataset_class(backend)(unchecked[backend], on_error="replace")
    dataset[len(dataset) - 1]  # one good sample first: later transform failures are then the data's, not a bug
    dataset.transform = FailOnWidth(*range(100))
    tried = len(dataset) - 1
    with pytest.raises(BadSampleError, match=rf"Sample 0 \(broken/bomb.png\) of .*unchecked.* could not be loaded, nor any of the {tried} "):
        dataset[0]


@pytest.mark.parametrize("backend", BACKENDS)
def test_a_raising_transform_follows_the_policy(backend, checked):
    store = checked[backend].stores[0]
    probe = dataset_class(backend)(store)
    index = next(i for i in range(len(probe)) if probe.relative_path(i) == "good/b.jpg")
    width = probe[index][0].width
    refuse = FailOnWidth(width)

    with pytest.raises(BadSampleError, match=rf"Sample {index} \(good/b.jpg\)") as info:
        dataset_class(backend)(store, transform=refuse)[index]
    assert isinstance(info.value.__cause__, ValueError) and "refuses" in str(info.value.__cause__)

    skipping = dataset_class(backend)(store, transform=refuse, on_error="skip")
    marker = skipping[index]
    assert isinstance(marker, BadSample) and marker.path == "good/b.jpg" and "refuses" in marker.error
    assert skipping.skipped_count == 1

    replacing = dataset_class(backend)(store, transform=refuse, on_error="replace")
    image, target = replacing[index]
    expected_image, expected_target = replacing[index + 1]
    assert torch.equal(image, expected_image) and target == expected_target


@pytest.mark.filterwarnings("ignore:.*pin_memory.*:UserWarning")  # pinning needs an accelerator
@pytest.mark.parametrize("backend", BACKENDS)
def test_an_all_bad_batch_is_none_with_spawn_and_pin_memory(backend, unchecked, expected_bad):
    dataset = dataset_class(backend)(unchecked[backend], transform=to_tensor16, on_error="skip")
    bad = bad_rows(dataset, expected_bad)
    good = [i for i in range(len(dataset)) if i not in bad]
    batches = [bad[:2], good[:3], bad[2:], [bad[0], good[3]]]
    loader = DataLoader(
        dataset,
        batch_sampler=batches,
        num_workers=1,
        multiprocessing_context="spawn",
        pin_memory=True,
        collate_fn=SkipBadCollate(),
    )
    results = list(loader)
    assert results[0] is None and results[2] is None
    assert results[1][0].shape == (3, 3, 16, 16) and results[3][0].shape == (1, 3, 16, 16)
    if torch.cuda.is_available():
        assert results[1][0].is_pinned()
    assert dataset.skipped_count == len(bad) + 1


@pytest.mark.parametrize("backend", BACKENDS)
def test_refill_keeps_the_batch_size_constant(backend, unchecked, expected_bad):
    dataset = dataset_class(backend)(unchecked[backend], transform=to_tensor16, on_error="skip")
    bad = bad_rows(dataset, expected_bad)
    collate = SkipBadCollate(refill_from=dataset)
    loader = DataLoader(dataset, batch_size=4, shuffle=True, drop_last=True, num_workers=2, collate_fn=collate)
    sizes = [len(targets) for _, targets in loader]
    assert sizes == [4] * (len(dataset) // 4)
    all_bad = list(DataLoader(dataset, batch_sampler=[bad], num_workers=0, collate_fn=collate))
    assert len(all_bad) == 1 and all_bad[0][0].shape == (len(bad), 3, 16, 16)


def corrupt_sample(store: str, backend: str, row: int) -> None:
    """Overwrite the middle of one sample's stored bytes in place (same length), as disk damage would."""
    index = load_store_index(store, backend)
    offset, length = int(index.offsets[row]), int(index.lengths[row])
    start, stop = length // 3, length // 3 + 16
    if backend == "hdf5":
        with h5py.File(store, "r+") as f:
            data = f["torchpack/data"]
            data[offset + start : offset + stop] = 255 - data[offset + start : offset + stop]
        return
    env = lmdb.open(store, subdir=False, lock=False)
    try:
        with env.begin(write=True) as txn:
            value = bytearray(txn.get(sample_key(row)))
            value[start:stop] = bytes(255 - b for b in value[start:stop])
            assert len(value) == length
            txn.put(sample_key(row), bytes(value))
    finally:
        env.close()


@pytest.mark.parametrize("backend", BACKENDS)
def test_a_sample_damaged_after_conversion_is_caught_by_its_checksum(backend, broken_tree, tmp_path, caplog):
    store = torchpack.convert(broken_tree, tmp_path / f"s{EXTENSION[backend]}", workers=0).stores[0]
    probe = dataset_class(backend)(store)  # reads no sample: this process holds no handle on the store
    row = next(i for i in range(len(probe)) if probe.relative_path(i) == "good/a.jpg")
    with open(os.path.join(broken_tree, "good/a.jpg"), "rb") as f:
        before = f.read()
    corrupt_sample(store, backend, row)

    after = dataset_class(backend)(store, check_crc=False).read_bytes(row)
    assert len(after) == len(before) and after != before

    raising = dataset_class(backend)(store)
    with pytest.raises(BadSampleError, match=rf"Sample {row} \(good/a.jpg\).*checksum") as info:
        raising[row]
    assert isinstance(info.value.__cause__, ValueError)

    skipping = dataset_class(backend)(store, on_error="skip")
    with caplog.at_level(logging.WARNING, logger="torchpack"):
        marker = skipping[row]
    assert isinstance(marker, BadSample) and "checksum" in marker.error
    assert any("good/a.jpg" in r.getMessage() for r in caplog.records if r.name == "torchpack")
    assert skipping.skipped_count == 1
    others = [i for i in range(len(skipping)) if i != row]
    assert not any(isinstance(skipping[i], BadSample) for i in others)
