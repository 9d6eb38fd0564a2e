"""How a dataset's ``loader`` meets a stored sample: a file object, or a path when the loader insists.

``DatasetFolder`` calls ``loader(path)``. A store has no file per sample, so a loader gets a
binary file object over the sample's bytes, with ``.name`` set to the stored relative path;
``np.load``, ``torch.load`` (with ``weights_only=True``), ``soundfile.read``, ``PIL.Image.open`` and ``json.load`` all take
one as they are. A loader that opens a path itself (``open(path)``, ``cv2.imread``) still works:
when it fails on the file object and succeeds on a path, each sample is written to a temporary
file and the loader is called with that path, and a warning says what it costs.
"""

from __future__ import annotations

import io
import os
import tempfile
import time
import warnings
from typing import Any, Callable

from torchvision.datasets import folder

from torchpack.decode import bytes_loader

__all__ = ["LOADER_INPUTS", "SampleFile", "from_tensor_decoder", "is_builtin_image_loader", "LoaderCall"]

#: What a dataset hands its loader: ``"auto"`` (a file object, or a path for a loader that needs one),
#: ``"file"`` or ``"path"``.
LOADER_INPUTS = ("auto", "file", "path")


def is_builtin_image_loader(loader: Callable) -> bool:
    """torchvision's own image loaders, and torchpack's: the datasets decode for them, with the same pixels."""
    if loader is folder.default_loader:
        from torchvision import get_image_backend

        return get_image_backend() == "PIL"  # with accimage, default_loader returns accimage images
    return loader is bytes_loader or loader is folder.pil_loader


class SampleFile(io.BytesIO):
    """A stored sample as a binary file object; ``name`` is its path relative to the converted tree."""

    def __init__(self, data: bytes, name: str) -> None:
        super().__init__(data)
        self.name = name

    def __repr__(self) -> str:
        return f"<torchpack.SampleFile name={self.name!r}>"


#: Samples larger than this go to the temporary folder on disk, not /dev/shm: containers often give
#: /dev/shm 64 MB, which the DataLoader's own shared-memory batches need.
_SHM_LIMIT = 8 << 20


def _temporary_folder(size: int = 0) -> str:
    shm = "/dev/shm"  # memory-backed where there is one: the file never reaches a disk
    if size <= _SHM_LIMIT and os.path.isdir(shm) and os.access(shm, os.W_OK):
        return shm
    return tempfile.gettempdir()


def _temporary_copy(data, suffix: str, folder: str):
    """A named temporary file in ``folder`` holding ``data``; deleted when closed."""
    copy = tempfile.NamedTemporaryFile(prefix="torchpack-", suffix=suffix, dir=folder)
    try:
        copy.write(data)
        copy.flush()
    except BaseException:
        copy.close()
        raise
    return copy


class LoaderCall:
    """Calls one dataset's loader on stored samples, in this process, as ``input`` says.

    With ``"auto"`` the first sample decides: a loader that fails on the file object but
    succeeds on a path gets paths from then on; one that succeeds on a file object keeps
    getting file objects, and its later failures are the sample's, not a reason to retry.
    """

    def __init__(self, loader: Callable[[Any], Any], input: str = "auto") -> None:
        if input not in LOADER_INPUTS:
            raise ValueError(f"`loader_input` must be one of {LOADER_INPUTS}, got {input!r}.")
        self.loader = loader
        self.input = input
        #: torchvision's own image loaders are not called: the dataset decodes for them, with their pixels.
        self.builtin_image = is_builtin_image_loader(loader)

    def __call__(self, data, name: str) -> Any:
        if self.input == "path":
            return self._with_path(data, name)
        if self.input == "file":
            return self.loader(SampleFile(bytes(data), name))
        try:
            result = self.loader(SampleFile(bytes(data), name))
        except Exception as file_error:
            try:
                started = time.perf_counter()
                result = self._with_path(data, name)
            except Exception as path_error:
                raise file_error from path_error  # the path attempt's error stays visible
            self._warn_path_fallback(name, time.perf_counter() - started)
            self.input = "path"
            return result
        self.input = "file"
        return result

    def _with_path(self, data, name: str) -> Any:
        # The end of the sample's own file name as the suffix: loaders that look at the extension
        # still can, and the name stays within the file system's 255 bytes.
        suffix = "-" + os.path.basename(name)[-100:]
        try:
            copy = _temporary_copy(data, suffix, _temporary_folder(len(data)))
        except OSError:  # /dev/shm full, say: the disk's temporary folder
            copy = _temporary_copy(data, suffix, tempfile.gettempdir())
        with copy:  # the loader's own errors are the sample's: it is called once
            return self.loader(copy.name)

    def _warn_path_fallback(self, name: str, seconds: float) -> None:
        loader = getattr(self.loader, "__qualname__", repr(self.loader))
        warnings.warn(
            f"torchpack: the loader {loader} failed on a file object and works on a path, so every sample "
            f"is now written to a temporary file in {_temporary_folder()} before it is called ({seconds * 1e6:.0f} µs "
            f"for {name}, loader included). Give it a loader that reads a file object (its argument has "
            "read() and .name), or pass loader_input='path' to skip this probe.",
            RuntimeWarning,
            stacklevel=4,
        )

    def __repr__(self) -> str:
        return f"LoaderCall({self.loader!r}, input={self.input!r})"


class from_tensor_decoder:  # noqa: N801 - used like a function
    """Wrap a decoder that takes a ``uint8`` tensor of encoded bytes as a dataset ``loader``.

    Example::

        from torchvision.io import decode_image, ImageReadMode
        ds = LMDBImageFolder("train.lmdb", loader=from_tensor_decoder(decode_image, mode=ImageReadMode.RGB))

    Picklable (for spawn and forkserver workers) as long as ``decoder`` is a module-level function.
    """

    def __init__(self, decoder: Callable[..., Any], **kwargs: Any) -> None:
        self.decoder = decoder
        self.kwargs = kwargs

    def __call__(self, file) -> Any:
        import torch

        data = torch.frombuffer(bytearray(file.read()), dtype=torch.uint8)
        return self.decoder(data, **self.kwargs)

    def __repr__(self) -> str:
        return f"from_tensor_decoder({getattr(self.decoder, '__name__', self.decoder)!r})"
