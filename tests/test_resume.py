"""Crash safety: conversions SIGKILLed at random points resume to the very store an uninterrupted run writes."""

from __future__ import annotations

import hashlib
import json
import os
import random
import select
import shutil
import signal
import subprocess
import sys
import time

import numpy as np
import pytest
from PIL import Image

import torchpack
from conftest import BACKENDS, EXTENSION, photo_like, save
from torchpack.backends import open_reader

KILLED_CONVERSIONS = 12  # per backend; the issue asks for at least 10
COMMIT_EVERY = 3


@pytest.fixture(scope="module")
def tree(tmp_path_factory) -> str:
    """40 PNG photos in 3 classes (PNG decodes slowly enough to give a kill many places to land)."""
    root = str(tmp_path_factory.mktemp("resume") / "tree")
    rng = np.random.default_rng(5)
    for i in range(40):
        sub = "nested/" if i % 5 == 0 else ""
        save(Image.fromarray(photo_like(rng, 160, 120)), f"{root}/class{i % 3}/{sub}{i:02d}.png")
    return root


def store_contents(path: str) -> tuple[dict, object, list[bytes]]:
    """Header, index table and every sample's stored bytes."""
    with open_reader(path) as reader:
        header = reader.read_header()
        index = reader.read_index(header)
        offsets, lengths = index.column("offset").to_pylist(), index.column("length").to_pylist()
        samples = [bytes(reader.read(row, o, n)) for row, (o, n) in enumerate(zip(offsets, lengths))]
    return header, index, samples


def assert_same_store(path: str, reference: tuple[dict, object, list[bytes]]) -> None:
    header, index, samples = store_contents(path)
    assert header == reference[0]
    assert index.equals(reference[1]), "index tables differ"
    assert samples == reference[2], "stored bytes differ"


#: Imports torchpack once, then forks one conversion per request. Forking from this
#: single-threaded server (not from pytest, whose threads may hold locks a forked child
#: would wait on forever) makes a conversion start at once, without importing torch again.
CONVERTER_SERVER = """
import json, os, sys
from torchpack.converter import convert
for line in sys.stdin:
    src, dst, resume = json.loads(line)
    pid = os.fork()
    if pid == 0:
        try:
            convert(src, dst, workers=0, commit_every=%d, resume=resume)
        except BaseException as exc:
            sys.stderr.write(repr(exc) + "\\n")
            os._exit(1)
        os._exit(0)
    print(pid, flush=True)
    kill = sys.stdin.readline().strip() == "kill"
    done, status = os.waitpid(pid, os.WNOHANG)
    if not done:
        if kill:
            os.kill(pid, 9)
        done, status = os.waitpid(pid, 0)
    print(os.waitstatus_to_exitcode(status), flush=True)
""" % COMMIT_EVERY


class Converter:
    """Runs conversions in forked processes of a converter server, SIGKILLing them on request."""

    def __init__(self) -> None:
        self.server = subprocess.Popen(
            [sys.executable, "-c", CONVERTER_SERVER], stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True, bufsize=1
        )

    def _readline(self, timeout: float) -> str:
        ready, _, _ = select.select([self.server.stdout], [], [], timeout)
        assert ready, "the conversion hung"
        line = self.server.stdout.readline()
        assert line, "the converter server died"
        return line

    def start(self, src: str, dst: str, resume: bool) -> int:
        self.server.stdin.write(json.dumps([src, dst, resume]) + "\n")
        return int(self._readline(120))

    def finish(self, kill: bool) -> int:
        """SIGKILL the running conversion (if it is still running) or wait for it; returns its exit code."""
        self.server.stdin.write("kill\n" if kill else "wait\n")
        return int(self._readline(120))

    def run(self, src: str, dst: str, resume: bool, delay: float | None) -> int:
        """Convert; SIGKILL the conversion ``delay`` seconds after it started (None: let it finish)."""
        self.start(src, dst, resume)
        if delay is not None:
            time.sleep(delay)
        return self.finish(kill=delay is not None)

    def close(self) -> None:
        self.server.stdin.close()
        self.server.wait(30)


@pytest.fixture(scope="module")
def converter():
    converter = Converter()
    yield converter
    converter.close()


@pytest.mark.parametrize("backend", BACKENDS)
def test_killed_conversions_resume_to_the_uninterrupted_store(backend, tree, tmp_path, converter):
    reference_path = str(tmp_path / f"reference{EXTENSION[backend]}")
    torchpack.convert(tree, reference_path, workers=0, commit_every=COMMIT_EVERY)
    reference = store_contents(reference_path)
    # How long one uninterrupted child run takes, so the kills spread over the whole conversion.
    durations = []
    for attempt in range(2):
        started = time.perf_counter()
        assert converter.run(tree, str(tmp_path / f"timed{attempt}{EXTENSION[backend]}"), False, None) == 0
        durations.append(time.perf_counter() - started)
    duration = min(durations)
    assert len(reference[2]) == 40
    dst = str(tmp_path / f"resumed{EXTENSION[backend]}")
    rng = random.Random(f"resume-{backend}")
    kills = rounds = 0
    while kills < KILLED_CONVERSIONS:
        rounds += 1
        assert rounds <= 4 * KILLED_CONVERSIONS, "the kills keep landing after the conversion finished"
        shutil.rmtree(dst + ".partial", ignore_errors=True)
        if os.path.exists(dst):
            os.remove(dst)
        resume = False
        while not os.path.exists(dst):
            # Resumed runs are killed again half of the time.
            delay = rng.uniform(0, duration) if not resume or rng.random() < 0.5 else None
            code = converter.run(tree, dst, resume, delay)
            if code == -signal.SIGKILL:
                kills += 1
                # A kill can only leave a store under the final name after its atomic rename: then it is whole.
                if os.path.exists(dst):
                    assert_same_store(dst, reference)
            else:
                assert code == 0
                assert os.path.exists(dst)
            resume = True
        assert_same_store(dst, reference)
    print(f"{backend}: {kills} kills in {rounds} rounds, {duration:.2f} s per uninterrupted run")


def _kill_after_first_commit(converter: Converter, src: str, dst: str) -> None:
    converter.start(src, dst, False)
    journal = dst + ".partial/journal.jsonl"
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline and not (os.path.exists(journal) and os.path.getsize(journal) > 0):
        time.sleep(0.001)
    assert converter.finish(kill=True) == -signal.SIGKILL, "the conversion finished before it could be interrupted"


@pytest.mark.parametrize("backend", BACKENDS)
def test_resume_refuses_a_changed_tree(backend, tree, tmp_path, converter):
    src = str(tmp_path / "tree")
    shutil.copytree(tree, src)
    dst = str(tmp_path / f"store{EXTENSION[backend]}")
    _kill_after_first_commit(converter, src, dst)
    assert not os.path.exists(dst)
    save(Image.new("RGB", (8, 8)), f"{src}/class1/added.png")
    with pytest.raises(ValueError, match="source tree changed"):
        torchpack.convert(src, dst, workers=0, resume=True)
    assert not os.path.exists(dst)
    assert os.path.isdir(dst + ".partial"), "a refused resume must keep the interrupted work"
    with pytest.raises(FileExistsError, match="interrupted conversion"):
        torchpack.convert(src, dst, workers=0)


def tree_digest(root: str) -> str:
    digest = hashlib.sha256()
    for folder, dirs, files in sorted(os.walk(root)):
        dirs.sort()
        for name in sorted(files):
            path = os.path.join(folder, name)
            digest.update(os.path.relpath(path, root).encode())
            with open(path, "rb") as f:
                digest.update(f.read())
            digest.update(str(os.stat(path).st_mtime_ns).encode())
    return digest.hexdigest()


DISK_FULL_SCRIPT = """
import resource, signal, sys
import torchpack
signal.signal(signal.SIGXFSZ, signal.SIG_IGN)
resource.setrlimit(resource.RLIMIT_FSIZE, (200_000, 200_000))
torchpack.convert(sys.argv[1], sys.argv[2], workers=0, commit_every=3)
"""


@pytest.mark.parametrize("backend", BACKENDS)
def test_disk_full_is_a_clear_error_and_leaves_nothing_behind(backend, tree, tmp_path):
    before = tree_digest(tree)
    dst = str(tmp_path / f"store{EXTENSION[backend]}")
    run = subprocess.run(
        [sys.executable, "-c", DISK_FULL_SCRIPT, tree, dst], capture_output=True, text=True, timeout=120
    )
    assert run.returncode == 1, run.stderr
    last_line = run.stderr.strip().splitlines()[-1]
    assert last_line.startswith("OSError") and dst + ".partial" in last_line, run.stderr
    assert "too large" in last_line.lower() or "disk full" in last_line.lower(), run.stderr
    assert not os.path.exists(dst)
    assert tree_digest(tree) == before
