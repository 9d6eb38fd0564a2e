"""The marker a dataset returns for a skipped sample, and the error it raises for a bad one."""

from __future__ import annotations

__all__ = ["BadSample", "BadSampleError"]


class BadSample:
    """Returned by a dataset with ``on_error="skip"`` in place of a sample that failed to load.

    :class:`torchpack.SkipBadCollate` drops these from a batch. Plain data, so it crosses
    process boundaries intact.
    """

    __slots__ = ("index", "path", "error")

    def __init__(self, index: int, path: str, error: str) -> None:
        self.index = index
        self.path = path
        self.error = error

    def __reduce__(self):
        return (BadSample, (self.index, self.path, self.error))

    def __repr__(self) -> str:
        return f"BadSample(index={self.index}, path={self.path!r}, error={self.error!r})"


class BadSampleError(RuntimeError):
    """A sample could not be read, decoded or transformed (``on_error="raise"``).

    The message names the sample's index and relative path; the original exception is
    chained as ``__cause__``.
    """
