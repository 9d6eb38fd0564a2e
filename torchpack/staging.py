"""A conversion's staging folder, ``<shard>.partial/``: its plan, its journal of commits, and durable writes.

The journal (``journal.jsonl``) has one fsync'd line per commit, written after the backend
made that commit's samples durable; replaying it gives exactly the samples a resumed
conversion can keep. A torn last line (a crash mid-write) is cut off.
"""

from __future__ import annotations

import json
import os
import shutil
from dataclasses import dataclass, field
from typing import Any, TextIO

__all__ = ["Journal", "Progress", "Staging", "fsync_folder", "write_durably"]

_PLAN = "plan.json"
_JOURNAL = "journal.jsonl"


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
    """The staging folder of one shard file: ``<path>.partial/``.

    Args:
        path: the shard file the conversion will write.
    """

    def __init__(self, path: str) -> None:
        self.path = path
        self.folder = path + ".partial"
        self.journal = Journal(os.path.join(self.folder, _JOURNAL))

    def open(self, plan: dict[str, Any], start: int, resume: bool) -> Progress:
        """Start a new staging folder, or (with ``resume``) continue the one there.

        Raises:
            FileExistsError: an interrupted conversion is staged and ``resume`` is False.
            ValueError: the staged conversion cannot be resumed with this plan.
        """
        plan_path = os.path.join(self.folder, _PLAN)
        if not os.path.exists(self.folder):
            os.mkdir(self.folder)
            write_durably(plan_path, json.dumps(plan, sort_keys=True).encode())
            return Progress(start)
        if not resume:
            raise FileExistsError(
                f"{self.folder} holds an interrupted conversion: pass resume=True (--resume) to continue it, "
                "or delete that folder to start over."
            )
        try:
            with open(plan_path, encoding="utf-8") as f:
                staged_plan = json.load(f)
        except (OSError, ValueError):
            # Killed before the plan was durable: nothing was committed yet.
            shutil.rmtree(self.folder)
            return self.open(plan, start, resume=False)
        self._check_resumable(staged_plan, plan)
        return self.journal.replay(start)

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
        self.close()
        shutil.rmtree(self.folder)

    def close(self) -> None:
        """Close the journal (the folder stays, resumable)."""
        self.journal.close()
