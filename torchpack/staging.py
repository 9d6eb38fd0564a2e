"""A conversion's staging folder, ``<shard>.partial/``: its plan, its journal of commits, and durable writes.

The journal (``journal.jsonl``) has one fsync'd line per commit, written after the backend
made that commit's samples durable; replaying it gives exactly the samples a resumed
conversion can keep. A torn last line (a crash mid-write) is cut off.
"""

from __future__ import annotations

import fcntl
import glob
import json
import os
import shutil
from dataclasses import dataclass, field
from typing import Any, TextIO

__all__ = ["ConversionInProgressError", "Journal", "Progress", "Staging", "fsync_folder", "write_durably"]

_PLAN = "plan.json"
_JOURNAL = "journal.jsonl"
_LOCK = "lock"


class ConversionInProgressError(FileExistsError):
    """Another process is converting into the same destination right now (it holds the staging folder's lock)."""


@dataclass
class Progress:
    """What is durably in a shard's staged store: the index rows, the left-out files, where to go on."""

    next_position: int
    rows: list[tuple] = field(default_factory=list)
    bad: list[dict[str, str]] = field(default_factory=list)
    data_size: int = 0


def write_durably(path: str, data: bytes) -> None:
    """Write ``path`` so that after a crash it holds ``data`` whole or not at all."""
    tmp = path + ".tmp"
    with open(tmp, "wb") as f:
        f.write(data)
        f.flush()
        os.fsync(f.fileno())
    os.replace(tmp, path)


def fsync_folder(folder: str) -> None:
    """Make the names in ``folder`` (a rename into it, say) durable."""
    fd = os.open(folder, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


class Journal:
    """The append-only record of a shard's commits."""

    def __init__(self, path: str) -> None:
        self.path = path
        self._file: TextIO | None = None

    def replay(self, start: int) -> Progress:
        """The state after the journal's complete commits (scan position ``start`` if none); cuts a torn tail."""
        progress = Progress(start)
        good_size = 0
        if not os.path.exists(self.path):
            return progress
        with open(self.path, "rb") as f:
            for line in f:
                if not line.endswith(b"\n"):
                    break
                try:
                    commit = json.loads(line)
                except ValueError:
                    break
                progress.rows.extend(tuple(row) for row in commit["rows"])
                progress.bad.extend(commit["bad"])
                progress.next_position = commit["next"]
                progress.data_size = commit["data_size"]
                good_size += len(line)
        with open(self.path, "r+b") as f:
            f.truncate(good_size)
        return progress

    def append(self, position: int, data_size: int, rows: list[tuple], bad: list[dict[str, str]]) -> None:
        """Record one commit durably: the scan position reached, the data size, its rows and left-out files."""
        if self._file is None:
            self._file = open(self.path, "a", encoding="utf-8")
        record = {"next": position, "data_size": data_size, "rows": rows, "bad": bad}
        self._file.write(json.dumps(record, ensure_ascii=False) + "\n")
        self._file.flush()
        os.fsync(self._file.fileno())

    def close(self) -> None:
        if self._file is not None:
            self._file.close()
            self._file = None


class Staging:
    """The staging folder of one shard file: ``<path>.partial/``, locked for as long as a conversion writes it.

    The lock is an ``flock`` on ``<path>.partial/lock``, held from :meth:`open` to :meth:`publish`
    or :meth:`close`; the kernel drops it when the process dies, however it dies. So a staging
    folder whose lock is free is an interrupted conversion, and one whose lock is held is a live
    one, which nothing else may join or delete.

    Args:
        path: the shard file the conversion will write.
    """

    def __init__(self, path: str) -> None:
        self.path = path
        self.folder = path + ".partial"
        self.journal = Journal(os.path.join(self.folder, _JOURNAL))
        self._lock: int | None = None

    def open(self, plan: dict[str, Any], start: int, resume: bool) -> Progress:
        """Start a new staging folder, or (with ``resume``) continue the one there; either way, hold its lock.

        Raises:
            ConversionInProgressError: another process is writing this staging folder.
            FileExistsError: an interrupted conversion is staged and ``resume`` is False.
            ValueError: the staged conversion cannot be resumed with this plan.
        """
        if not os.path.exists(self.folder) and self._create(plan):
            return Progress(start)
        if not self._lock_existing():  # the folder went away meanwhile (its conversion finished): start again
            return self.open(plan, start, resume)
        if not resume:
            self.close()
            raise FileExistsError(
                f"{self.folder} holds an interrupted conversion (no process is writing it): pass resume=True "
                "(--resume) to continue it, or delete that folder to start over."
            )
        try:
            with open(os.path.join(self.folder, _PLAN), encoding="utf-8") as f:
                staged_plan = json.load(f)
        except (OSError, ValueError):
            # A staging folder from before plans were written inside it first: nothing committed.
            self.close()
            shutil.rmtree(self.folder)
            return self.open(plan, start, resume=False)
        try:
            self._check_resumable(staged_plan, plan)
        except ValueError:
            self.close()
            raise
        return self.journal.replay(start)

    def _create(self, plan: dict[str, Any]) -> bool:
        """Make the staging folder, locked and with its plan, under a temporary name, then rename it into place.

        Returns False when another process made it first.
        """
        for stale in glob.glob(glob.escape(self.folder) + ".tmp-*"):
            _remove_if_unlocked(stale)  # left by a process killed while creating its folder
        tmp = f"{self.folder}.tmp-{os.getpid()}"
        os.mkdir(tmp)
        lock = _acquire(os.path.join(tmp, _LOCK))
        write_durably(os.path.join(tmp, _PLAN), json.dumps(plan, sort_keys=True).encode())
        try:
            os.rename(tmp, self.folder)
        except OSError:  # someone else's folder is there now
            os.close(lock)
            shutil.rmtree(tmp, ignore_errors=True)
            return False
        fsync_folder(os.path.dirname(self.folder))
        self._lock = lock
        return True

    def _lock_existing(self) -> bool:
        """Take the lock of the staging folder there; False if the folder is gone by the time it is held."""
        path = os.path.join(self.folder, _LOCK)
        try:
            lock = os.open(path, os.O_RDWR | os.O_CREAT, 0o644)
        except FileNotFoundError:
            return False
        try:
            fcntl.flock(lock, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            owner = os.pread(lock, 32, 0).decode(errors="replace").strip() or "?"
            os.close(lock)
            raise ConversionInProgressError(
                f"Another conversion (pid {owner}) is writing {self.path} (its staging folder {self.folder} is "
                "locked); wait for it to finish or stop it, then run again (with --resume to continue its work)."
            ) from None
        try:
            still_there = os.stat(path).st_ino == os.fstat(lock).st_ino
        except FileNotFoundError:
            still_there = False
        if not still_there:
            os.close(lock)
            return False
        os.ftruncate(lock, 0)
        os.pwrite(lock, str(os.getpid()).encode(), 0)
        self._lock = lock
        return True

    def _check_resumable(self, staged: dict[str, Any], plan: dict[str, Any]) -> None:
        if staged.get("format_version") != plan["format_version"]:
            raise ValueError(
                f"The interrupted conversion in {self.folder} was begun by a torchpack that writes format "
                f"{staged.get('format_version', '1.0')!r}, not {plan['format_version']!r}, so it cannot be "
                "resumed; delete that folder to start over."
            )
        if staged.get("fingerprint") != plan["fingerprint"]:
            raise ValueError(
                f"The source tree changed since the interrupted conversion in {self.folder} began (files were "
                "added, removed or modified), so it cannot be resumed; delete that folder to start over."
            )
        if staged != plan:
            raise ValueError(
                f"The interrupted conversion in {self.folder} used other options ({staged['options']}, "
                f"backend {staged['backend']!r}); resume with the same options or delete that folder."
            )

    def publish(self, built: str) -> None:
        """Move the finished store file ``built`` (inside the folder) to the shard's path, then remove the folder."""
        os.replace(built, self.path)
        fsync_folder(os.path.dirname(self.path))
        self.journal.close()
        shutil.rmtree(self.folder)
        self.close()

    def close(self) -> None:
        """Close the journal and release the lock (the folder stays, resumable)."""
        self.journal.close()
        if self._lock is not None:
            os.close(self._lock)
            self._lock = None


def _acquire(path: str) -> int:
    """A new lock file at ``path``, locked by this process, naming its pid."""
    lock = os.open(path, os.O_RDWR | os.O_CREAT | os.O_EXCL, 0o644)
    fcntl.flock(lock, fcntl.LOCK_EX | fcntl.LOCK_NB)
    os.pwrite(lock, str(os.getpid()).encode(), 0)
    return lock


def _remove_if_unlocked(folder: str) -> None:
    try:
        lock = os.open(os.path.join(folder, _LOCK), os.O_RDWR)
    except OSError:
        return
    try:
        fcntl.flock(lock, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
        return  # its creator is alive
    finally:
        os.close(lock)
    shutil.rmtree(folder, ignore_errors=True)
