"""What an adversarial new user tried, each case on both backends: signals, unreadable files, races, odd trees, bombs.

Conversions that must be caught mid-way are slowed down by a ``sitecustomize`` module put on
the ``PYTHONPATH`` of the processes the tests start (the converter and every worker it starts
import it): each file then takes ``TORCHPACK_TEST_SLOW`` seconds, and its path is logged.
"""

from __future__ import annotations

import errno
import os
import signal
import subprocess
import sys
import textwrap
import time
import warnings

import numpy as np
import psutil
import pytest
import torch
from PIL import Image

import torchpack
from conftest import BACKENDS, EXTENSION, crash_at_second_commit, dataset_class, photo_like, save, store_contents
from torchpack.errors import BadSampleError

SITECUSTOMIZE = '''
import os, time
if os.environ.get("TORCHPACK_TEST_SLOW"):
    import torchpack.ingest as ingest
    real = ingest.ingest_file

    def slow(path, options):
        time.sleep(float(os.environ["TORCHPACK_TEST_SLOW"]))
        with open(os.environ["TORCHPACK_TEST_LOG"], "a") as log:
            log.write(path + "\\n")
        return real(path, options)

    ingest.ingest_file = slow
'''


@pytest.fixture
def slow_env(tmp_path):
    """Environment for a subprocess whose conversion takes 0.15 s per file, logging each file to ``log``."""
    hooks = tmp_path / "hooks"
    hooks.mkdir()
    (hooks / "sitecustomize.py").write_text(SITECUSTOMIZE)
    log = tmp_path / "ingested.log"
    log.write_text("")
    env = {**os.environ, "PYTHONPATH": str(hooks), "TORCHPACK_TEST_SLOW": "0.15", "TORCHPACK_TEST_LOG": str(log)}
    return env, log


def torchpack_cli() -> list[str]:
    return [sys.executable, "-m", "torchpack"]


def wait_for(condition, seconds: float, what: str) -> None:
    deadline = time.monotonic() + seconds
    while not condition():
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out waiting for {what}")
        time.sleep(0.05)


def descendants(pid: int) -> list[psutil.Process]:
    return psutil.Process(pid).children(recursive=True)


def alive(processes: list[psutil.Process]) -> list[psutil.Process]:
    living = []
    for process in processes:
        try:
            if process.is_running() and process.status() != psutil.STATUS_ZOMBIE:
                living.append(process)
        except psutil.NoSuchProcess:
            pass
    return living


def reference_store(backend: str, tree: str, tmp_path) -> str:
    return torchpack.convert(tree, tmp_path / f"reference{EXTENSION[backend]}", workers=0).stores[0]


# -- signals ---------------------------------------------------------------------------------------


@pytest.mark.parametrize("backend", BACKENDS)
@pytest.mark.parametrize("signum", [signal.SIGTERM, signal.SIGHUP])
def test_a_stop_signal_ends_the_cli_conversion_like_ctrl_c(backend, signum, small_tree, tmp_path, slow_env):
    env, log = slow_env
    dst = str(tmp_path / f"store{EXTENSION[backend]}")
    process = subprocess.Popen(
        [*torchpack_cli(), "convert", small_tree, dst, "--workers", "2"],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        env=env,
        # As a terminal or a scheduler starts it. Under nohup SIGHUP arrives ignored, and the
        # converter rightly leaves it so (it takes over only signals at their default action).
        preexec_fn=lambda: signal.signal(signum, signal.SIG_DFL),
    )
    wait_for(lambda: len(log.read_text().splitlines()) >= 4, 60, "the workers to read files")
    children = descendants(process.pid)
    assert len(children) >= 2  # the workers, at least (and the forkserver and resource tracker)
    started = time.monotonic()
    process.send_signal(signum)
    out, err = process.communicate(timeout=20)  # the caller's read of the pipes returns
    assert time.monotonic() - started < 10
    assert process.returncode == 128 + signum
    assert f"stopped by {signal.Signals(signum).name}" in err.decode() and "--resume" in err.decode()
    wait_for(lambda: not alive(children), 10, "every child process to exit")
    assert not os.path.exists(dst) and os.path.isdir(dst + ".partial")
    resumed = subprocess.run(
        [*torchpack_cli(), "convert", small_tree, dst, "--workers", "2", "--resume", "--json"], capture_output=True, timeout=120
    )
    assert resumed.returncode == 0, resumed.stderr.decode()
    assert store_contents(dst) == store_contents(reference_store(backend, small_tree, tmp_path))


@pytest.mark.parametrize("backend", BACKENDS)
def test_a_stop_signal_during_convert_called_from_python(backend, small_tree, tmp_path, slow_env):
    env, log = slow_env
    dst = str(tmp_path / f"store{EXTENSION[backend]}")
    script = tmp_path / "train.py"
    script.write_text(textwrap.dedent(f"""
        import sys, torchpack
        if __name__ == "__main__":
            try:
                torchpack.convert({small_tree!r}, {dst!r}, workers=2, commit_every=3)
            except torchpack.ConversionInterrupted as exc:
                print("interrupted by", exc.signum, flush=True)
                sys.exit(7)
    """))
    process = subprocess.Popen([sys.executable, str(script)], stdout=subprocess.PIPE, stderr=subprocess.PIPE, env=env)
    wait_for(lambda: len(log.read_text().splitlines()) >= 8, 60, "the workers to read files")
    children = descendants(process.pid)
    process.send_signal(signal.SIGTERM)
    out, err = process.communicate(timeout=20)
    assert process.returncode == 7 and out.decode().strip() == f"interrupted by {int(signal.SIGTERM)}", err.decode()
    wait_for(lambda: not alive(children), 10, "every child process to exit")
    result = torchpack.convert(small_tree, dst, workers=0, resume=True)
    assert result.resumed_from >= 3  # commits made before the signal were kept
    assert store_contents(dst) == store_contents(reference_store(backend, small_tree, tmp_path))


def test_a_handler_the_program_installed_stays_in_charge(small_tree, tmp_path):
    calls = []
    previous = signal.signal(signal.SIGTERM, lambda signum, frame: calls.append(signum))
    try:
        from torchpack.interrupts import stop_signals_raise

        with stop_signals_raise():
            os.kill(os.getpid(), signal.SIGTERM)
            time.sleep(0.1)
        assert calls == [signal.SIGTERM]
        assert signal.getsignal(signal.SIGTERM) is not signal.SIG_DFL
    finally:
        signal.signal(signal.SIGTERM, previous)


def test_a_script_without_a_main_guard_is_told_so(small_tree, tmp_path):
    script = tmp_path / "unguarded.py"
    script.write_text(f"import torchpack\ntorchpack.convert({small_tree!r}, {str(tmp_path / 'x.lmdb')!r}, workers=2)\n")
    done = subprocess.run([sys.executable, str(script)], capture_output=True, text=True, timeout=120)
    assert done.returncode != 0
    last_line = done.stderr.strip().splitlines()[-1]
    assert "without an `if __name__ == \"__main__\":` guard" in last_line and str(script) in last_line


# -- unreadable files ---------------------------------------------------------------------------


@pytest.fixture
def tree_with_a_dangling_symlink(small_tree, tmp_path) -> str:
    import shutil

    root = str(tmp_path / "tree")
    shutil.copytree(small_tree, root)
    os.symlink("/nonexistent/x.jpg", os.path.join(root, "class0", "broken.jpg"))
    return root


@pytest.mark.parametrize("backend", BACKENDS)
@pytest.mark.parametrize("workers", [0, 2])
def test_a_dangling_symlink_is_a_bad_file_not_a_failed_conversion(backend, workers, tree_with_a_dangling_symlink, tmp_path):
    result = torchpack.convert(tree_with_a_dangling_symlink, tmp_path / f"s{EXTENSION[backend]}", workers=workers)
    assert result.num_samples == 24
    assert [(bad["path"], bad["error_type"]) for bad in result.bad_files] == [("class0/broken.jpg", "FileNotFoundError")]
    assert "No such file or directory" in result.bad_files[0]["error"]
    assert len(dataset_class(backend)(result.stores[0])) == 24


@pytest.mark.parametrize("backend", BACKENDS)
def test_a_file_removed_after_the_listing_is_a_bad_file(backend, small_tree, tmp_path, monkeypatch):
    import shutil

    import torchpack.converter as converter

    root = str(tmp_path / "tree")
    shutil.copytree(small_tree, root)
    real_scan = converter.scan_tree

    def scan_then_remove(*args, **kwargs):
        tree = real_scan(*args, **kwargs)
        os.remove(os.path.join(root, tree.paths[5]))
        return tree

    monkeypatch.setattr(converter, "scan_tree", scan_then_remove)
    result = torchpack.convert(root, tmp_path / f"s{EXTENSION[backend]}", workers=2)
    assert result.num_samples == 23 and len(result.bad_files) == 1
    assert result.bad_files[0]["error_type"] == "FileNotFoundError"


@pytest.mark.parametrize("backend", BACKENDS)
def test_a_read_that_raises_eio_is_a_bad_file(backend, small_tree, tmp_path, monkeypatch):
    import torchpack.ingest as ingest

    victim = "class1/02.jpg"

    def failing_open(path, *args, **kwargs):
        if str(path).endswith(victim):
            raise OSError(errno.EIO, os.strerror(errno.EIO), str(path))
        return open(path, *args, **kwargs)

    monkeypatch.setattr(ingest, "open", failing_open, raising=False)
    result = torchpack.convert(small_tree, tmp_path / f"s{EXTENSION[backend]}", workers=0)
    assert [bad["path"] for bad in result.bad_files] == [victim]
    assert result.bad_files[0]["error_type"] == "OSError" and "Input/output error" in result.bad_files[0]["error"]
    assert result.num_samples == 23


# -- two conversions at once ------------------------------------------------------------------


@pytest.mark.parametrize("backend", BACKENDS)
def test_a_second_conversion_into_a_live_one_is_refused(backend, small_tree, tmp_path, slow_env):
    env, log = slow_env
    env = {**env, "TORCHPACK_TEST_SLOW": "0.6"}  # 24 files in one worker: alive for 15 s
    dst = str(tmp_path / f"store{EXTENSION[backend]}")
    first = subprocess.Popen([*torchpack_cli(), "convert", small_tree, dst, "--workers", "1"], env=env,
                             stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        wait_for(lambda: log.read_text(), 60, "the first conversion to start")
        for resume in (False, True):
            with pytest.raises(torchpack.ConversionInProgressError, match=f"Another conversion \\(pid {first.pid}\\) is writing"):
                torchpack.convert(small_tree, dst, workers=0, resume=resume)
        second = subprocess.run([*torchpack_cli(), "convert", small_tree, dst, "--resume"], capture_output=True, text=True)
        assert second.returncode == 1 and f"Another conversion (pid {first.pid})" in second.stderr
        assert "interrupted" not in second.stderr
    finally:
        first.kill()  # SIGKILL: no clean-up at all; its lock dies with it
        first.wait()
    with pytest.raises(FileExistsError, match="holds an interrupted conversion"):
        torchpack.convert(small_tree, dst, workers=0)
    torchpack.convert(small_tree, dst, workers=0, resume=True)  # a dead process's lock does not block
    assert store_contents(dst) == store_contents(reference_store(backend, small_tree, tmp_path))


# -- the destination inside the source --------------------------------------------------------


@pytest.mark.parametrize("backend", BACKENDS)
@pytest.mark.parametrize("shards", [None, 2])
def test_the_destination_inside_the_source_resumes(backend, shards, small_tree, tmp_path, monkeypatch):
    import shutil

    root = str(tmp_path / "tree")
    shutil.copytree(small_tree, root)
    dst = os.path.join(root, f"x{EXTENSION[backend]}")
    with crash_at_second_commit(monkeypatch, backend):
        torchpack.convert(root, dst, workers=0, commit_every=5, num_shards=shards)
    result = torchpack.convert(root, dst, workers=0, resume=True, num_shards=shards)
    assert result.resumed_from > 0 and result.num_samples == 24
    dataset = torchpack.StoreImageFolder(result.stores if shards else result.stores[0])
    assert dataset.classes == ["class0", "class1", "class2"]  # neither the staging folder nor the store is a class
    again = torchpack.convert(root, tmp_path / f"again{EXTENSION[backend]}", workers=0)  # the stores in the tree stay out
    assert again.num_samples == 24 and torchpack.StoreImageFolder(again.stores[0]).classes == dataset.classes


# -- decompression bombs -----------------------------------------------------------------------


@pytest.fixture(scope="module")
def bomb_stores(tmp_path_factory) -> dict[str, str]:
    """Unchecked stores of a 120x100 JPEG and PNG (12,000 pixels) and a small one, read under a tiny limit."""
    root = tmp_path_factory.mktemp("bombs")
    rng = np.random.default_rng(5)
    save(Image.fromarray(photo_like(rng, 120, 100)), str(root / "tree/a/big.jpg"), quality=90)
    save(Image.fromarray(photo_like(rng, 120, 100)), str(root / "tree/a/big.png"))
    save(Image.fromarray(photo_like(rng, 20, 20)), str(root / "tree/a/small.jpg"), quality=90)
    return {b: torchpack.convert(root / "tree", root / f"s{EXTENSION[b]}", workers=0, check=False).stores[0] for b in BACKENDS}


READ_PATHS = [
    {"decode": "pil"},
    {"decode": "tensor"},
    {"decode": "numpy"},
    {"decode": "tensor", "decode_size": 16},
    {"decode": "pil", "decode_size": 16},
    {"decode": "tensor", "decode_crop": torchpack.RandomResizedCropDecode(16)},
]


@pytest.mark.parametrize("backend", BACKENDS)
@pytest.mark.parametrize("options", READ_PATHS, ids=lambda o: "-".join(map(str, o.values())))
def test_reads_honour_pillows_pixel_limit_exactly_as_imagefolder(backend, options, bomb_stores, monkeypatch):
    from torchvision.datasets.folder import pil_loader

    dataset = dataset_class(backend)(bomb_stores[backend], **options)
    files = {dataset.relative_path(i): i for i in range(len(dataset))}
    monkeypatch.setattr(Image, "MAX_IMAGE_PIXELS", 5_000)  # 12,000 pixels > twice the limit: an error
    for name in ("a/big.jpg", "a/big.png"):  # the fast decoder (JPEG) and Pillow (PNG)
        with pytest.raises(BadSampleError) as raised:
            dataset[files[name]]
        assert isinstance(raised.value.__cause__, Image.DecompressionBombError)
    monkeypatch.setattr(Image, "MAX_IMAGE_PIXELS", 8_000)  # over the limit, under twice it: a warning, as ImageFolder gives
    for name in ("a/big.jpg", "a/big.png"):
        with warnings.catch_warnings(record=True) as caught:
            warnings.simplefilter("always")
            dataset[files[name]]
        assert [w.category for w in caught] == [Image.DecompressionBombWarning], name
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        dataset[files["a/small.jpg"]]
    assert caught == []


@pytest.mark.parametrize("backend", BACKENDS)
def test_verify_decode_reports_bombs_in_an_unchecked_store(backend, bomb_stores, monkeypatch):
    assert torchpack.verify_store(bomb_stores[backend], decode=True).ok
    monkeypatch.setattr(Image, "MAX_IMAGE_PIXELS", 5_000)
    report = torchpack.verify_store(bomb_stores[backend], decode=True)
    assert sorted(p["path"] for p in report.problems) == ["a/big.jpg", "a/big.png"]
    assert all("DecompressionBombError" in p["problem"] for p in report.problems)


# -- small ones ---------------------------------------------------------------------------------


@pytest.mark.parametrize("backend", BACKENDS)
def test_small_mistakes_get_clear_messages(backend, small_stores):
    store = small_stores[backend]
    with pytest.raises(FileNotFoundError, match="is a store file; pass it without the trailing slash"):
        dataset_class(backend)(store + "/")
    with pytest.raises(TypeError, match="`check_crc` must be True or False, got 'no'"):
        dataset_class(backend)(store, check_crc="no")


@pytest.mark.parametrize("backend", BACKENDS)
@pytest.mark.parametrize("on_error", ["skip", "replace"])
def test_a_broken_transform_raises_instead_of_skipping_every_sample(backend, on_error, small_stores):
    not_callable = dataset_class(backend)(small_stores[backend], transform=5, on_error=on_error)
    with pytest.raises(BadSampleError, match="bug in a transform") as raised:
        [not_callable[i] for i in range(len(not_callable))]
    assert isinstance(raised.value.__cause__, TypeError)

    def wrong_type(image):
        return image + 1  # a PIL image: TypeError on every sample

    always_failing = dataset_class(backend)(small_stores[backend], transform=wrong_type, on_error=on_error)
    loader = torch.utils.data.DataLoader(always_failing, batch_size=8, num_workers=2, collate_fn=torchpack.SkipBadCollate())
    with pytest.raises(Exception, match="bug in a transform"):
        list(loader)


# -- a full disk ----------------------------------------------------------------------------------


def _limit_file_size() -> None:
    import resource

    signal.signal(signal.SIGXFSZ, signal.SIG_IGN)  # a write past the limit then fails with EFBIG, as on a full disk
    resource.setrlimit(resource.RLIMIT_FSIZE, (48 * 1024, 48 * 1024))


@pytest.mark.parametrize("backend", BACKENDS)
def test_a_full_disk_keeps_the_staged_work(backend, small_tree, tmp_path):
    dst = str(tmp_path / f"store{EXTENSION[backend]}")
    code = f"import torchpack; torchpack.convert({small_tree!r}, {dst!r}, workers=0, commit_every=4)"
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120, preexec_fn=_limit_file_size)
    assert done.returncode == 1
    assert "is the disk full, or a file size limit reached?" in done.stderr.strip().splitlines()[-1]
    assert not os.path.exists(dst) and os.path.isdir(dst + ".partial")
    result = torchpack.convert(small_tree, dst, workers=0, resume=True)
    assert result.resumed_from > 0
    assert store_contents(dst) == store_contents(reference_store(backend, small_tree, tmp_path))
