"""Audio clips and precomputed features from one store: a ``DatasetFolder`` swap, one line.

``DatasetFolder`` users have the small-files problem too (a clip or a feature file per sample).
Convert the tree with the extensions your loader reads; the loader then gets a file object
over each stored file, which ``np.load``, ``wave.open``, ``soundfile.read`` and
``torch.load(..., weights_only=True)`` all take as they are::

    torchpack convert data/clips data/clips.lmdb --extensions .wav,.npy
    python examples/audio_or_features.py --store data/clips.lmdb --workers 4
    python examples/audio_or_features.py --backend hdf5          # on a small generated tree

Without ``--store`` it writes a tree of WAV clips (the standard library's ``wave``) and
``.npy`` spectrogram-like features in three classes, converts it, and trains a linear
classifier on both kinds of sample for a few steps.
"""

from __future__ import annotations

import argparse
import os
import tempfile
import wave
from typing import Sequence

import numpy as np
import torch
from torch.utils.data import DataLoader
from torchvision.datasets import DatasetFolder

import torchpack

DATASETS = {"lmdb": torchpack.LMDBDatasetFolder, "hdf5": torchpack.HDF5DatasetFolder}
EXTENSIONS = (".wav", ".npy")
CLASSES = ("hum", "chirp", "noise")
FEATURES = 64


def load_sample(file) -> torch.Tensor:
    """A clip or a feature file, as a fixed-size float vector; ``file.name`` says which kind it is.

    Written for DatasetFolder (which passes a path) and works unchanged on a store (which
    passes a file object): ``wave.open`` and ``np.load`` take either.
    """
    name = file if isinstance(file, str) else file.name
    if name.endswith(".wav"):
        with wave.open(file, "rb") as clip:
            samples = np.frombuffer(clip.readframes(clip.getnframes()), dtype="<i2").astype(np.float32) / 32768
        spectrum = np.abs(np.fft.rfft(samples, n=2 * FEATURES))[:FEATURES]
        return torch.from_numpy(np.log1p(spectrum).astype(np.float32))
    return torch.from_numpy(np.load(file).mean(axis=1).astype(np.float32))


def make_tree(root: str, per_class: int = 24, rate: int = 8000) -> str:
    """Half a second of audio per clip (a hum, a chirp or noise) and a (64, 10) feature array per sample."""
    rng = np.random.default_rng(0)
    t = np.arange(rate // 2) / rate
    for c, name in enumerate(CLASSES):
        folder = os.path.join(root, name)
        os.makedirs(folder, exist_ok=True)
        for i in range(per_class):
            if name == "hum":
                signal = np.sin(2 * np.pi * rng.uniform(100, 300) * t)
            elif name == "chirp":
                signal = np.sin(2 * np.pi * (500 + 3000 * t) * t)
            else:
                signal = rng.normal(0, 0.5, t.shape)
            with wave.open(os.path.join(folder, f"clip{i:03d}.wav"), "wb") as clip:
                clip.setnchannels(1)
                clip.setsampwidth(2)
                clip.setframerate(rate)
                clip.writeframes((np.clip(signal, -1, 1) * 20000).astype("<i2").tobytes())
            features = rng.normal(c, 1.0, (FEATURES, 10)).astype(np.float32)
            np.save(os.path.join(folder, f"feat{i:03d}.npy"), features)
    return root


def main(argv: Sequence[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--store", help="a store of .wav and .npy files (default: convert a generated tree)")
    ap.add_argument("--backend", choices=DATASETS, default="lmdb")
    ap.add_argument("--dir", help="where to write the generated tree and store (default: a temporary folder)")
    ap.add_argument("--workers", type=int, default=2)
    ap.add_argument("--steps", type=int, default=30)
    args = ap.parse_args(argv)

    store = args.store
    if store is None:
        folder = args.dir or tempfile.mkdtemp(prefix="torchpack-audio-")
        tree = make_tree(os.path.join(folder, "tree"))
        store = os.path.join(folder, "clips.lmdb" if args.backend == "lmdb" else "clips.h5")
        result = torchpack.convert(tree, store, extensions=EXTENSIONS, workers=args.workers, overwrite=True)
        print(f"converted {result.num_samples} files ({result.bytes_in / 1024:.0f} KiB) into {store}")
        reference = DatasetFolder(tree, loader=load_sample, extensions=EXTENSIONS)
    # dataset = DatasetFolder("data/clips", loader=load_sample, extensions=EXTENSIONS)
    dataset = DATASETS[args.backend](store, loader=load_sample, extensions=EXTENSIONS)  # the one changed line
    if args.store is None:
        same = [os.path.relpath(p, tree) for p, _ in reference.samples] == [os.path.relpath(p, store) for p, _ in dataset.samples]
        print(f"same samples and order as DatasetFolder: {same}")
    print(f"{type(dataset).__name__}: {len(dataset)} samples, classes {dataset.classes}")

    loader = DataLoader(dataset, batch_size=16, shuffle=True, num_workers=args.workers, persistent_workers=args.workers > 0)
    model = torch.nn.Linear(FEATURES, len(dataset.classes))
    optimizer = torch.optim.SGD(model.parameters(), lr=0.1)
    step = 0
    while step < args.steps:
        for vectors, targets in loader:
            loss = torch.nn.functional.cross_entropy(model((vectors - vectors.mean()) / (vectors.std() + 1e-6)), targets)
            optimizer.zero_grad()
            loss.backward()
            optimizer.step()
            step += 1
            if step % 10 == 0 or step == args.steps:
                print(f"step {step}/{args.steps} loss {loss.item():.3f}")
            if step == args.steps:
                break
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
