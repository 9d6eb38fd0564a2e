"""Smoke tests of ``examples/``: each script runs as a user would run it, on tiny generated data."""

from __future__ import annotations

import importlib.util
import math
import os
import re
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
from torchvision.datasets import ImageFolder

import torchpack
from conftest import BACKENDS, EXTENSION, damage_sample, dataset_class

EXAMPLES = Path(__file__).resolve().parent.parent / "examples"
TIMEOUT = 300


def run(args: list[str], cwd: Path, env: dict[str, str] | None = None, expect: int = 0) -> str:
    """Run a command with ``cwd`` (and temporary files) under the test's folder; returns stdout."""
    full_env = {**os.environ, "TMPDIR": str(cwd), "PYTHONUNBUFFERED": "1", **(env or {})}
    result = subprocess.run(args, cwd=cwd, env=full_env, capture_output=True, text=True, timeout=TIMEOUT)
    assert result.returncode == expect, f"exit code {result.returncode}\n{result.stdout}\n{result.stderr}"
    return result.stdout


def run_example(name: str, *args: str, cwd: Path) -> str:
    return run([sys.executable, str(EXAMPLES / name), *args], cwd)


def load_example_module(name: str):
    """Import an example script as a module, without writing its bytecode into the repository."""
    spec = importlib.util.spec_from_file_location(name.removesuffix(".py"), EXAMPLES / name)
    module = importlib.util.module_from_spec(spec)
    dont_write, sys.dont_write_bytecode = sys.dont_write_bytecode, True
    try:
        spec.loader.exec_module(module)
    finally:
        sys.dont_write_bytecode = dont_write
    return module


def losses(output: str, steps: int) -> list[float]:
    found = re.findall(rf"^step (\d+)/{steps} loss (\S+) batch (\d+)$", output, re.M)
    assert [int(step) for step, _, _ in found] == list(range(1, steps + 1)), output
    values = [float(loss) for _, loss, _ in found]
    assert all(math.isfinite(v) and v > 0 for v in values), output
    return values


def relative_samples(tree: str) -> list[tuple[str, int]]:
    return [(os.path.relpath(p, tree).replace(os.sep, "/"), t) for p, t in ImageFolder(tree).samples]


def test_examples_readme_lists_every_example():
    index = (EXAMPLES / "README.md").read_text(encoding="utf-8")
    examples = sorted(p.name for p in EXAMPLES.iterdir() if p.suffix in (".py", ".sh", ".md") and p.name != "README.md")
    assert {"train_classifier.py", "lightning_datamodule.py", "read_with_paths.py"} <= set(examples)
    for name in examples:
        assert f"({name})" in index, f"examples/README.md does not link {name}"


@pytest.mark.parametrize("backend", BACKENDS)
def test_train_classifier_converts_the_example_tree_and_trains(backend, tmp_path, capsys):
    # In-process (the subprocess run is below): main() is what `python train_classifier.py` calls.
    example = load_example_module("train_classifier.py")
    argv = ["--backend", backend, "--dir", str(tmp_path), "--steps", "2", "--batch-size", "8", "--workers", "0", "--device", "cpu"]
    assert example.main(argv) == 0
    output = capsys.readouterr().out
    assert (tmp_path / f"example{EXTENSION[backend]}").is_file() and (tmp_path / "tree" / "circle").is_dir()
    assert f"{dataset_class(backend).__name__}: 72 images, 3 classes ['circle', 'square', 'triangle']" in output
    losses(output, 2)
    assert "done: 2 steps, 16 images" in output and "skipped 0 bad samples" in output


def test_train_classifier_marks_the_one_changed_line():
    source = (EXAMPLES / "train_classifier.py").read_text(encoding="utf-8")
    marked = [line for line in source.splitlines() if "torchpack: the one changed line" in line]
    assert len(marked) == 1 and marked[0].lstrip().startswith("dataset = DATASETS[args.backend](store, transform=tf")
    assert 'on_error="skip"' in marked[0] and "collate_fn=torchpack.SkipBadCollate()" in source
    assert "# dataset = torchvision.datasets.ImageFolder(" in source


@pytest.mark.parametrize("backend", BACKENDS)
def test_train_classifier_skips_a_sample_damaged_after_conversion(backend, small_stores, tmp_path):
    store = str(tmp_path / os.path.basename(small_stores[backend]))
    shutil.copyfile(small_stores[backend], store)
    damage_sample(store, dataset_class(backend)(small_stores[backend]).read_bytes(5))
    # 3 steps of 8 are exactly one epoch of the 24 samples: every sample is read once.
    output = run_example(
        "train_classifier.py", "--backend", backend, "--store", store, "--steps", "3",
        "--batch-size", "8", "--workers", "2", "--device", "cpu", cwd=tmp_path,
    )
    losses(output, 3)
    assert "done: 3 steps, 23 images" in output and "skipped 1 bad samples" in output


@pytest.mark.parametrize("backend", BACKENDS)
def test_read_with_paths_prints_each_samples_relative_path(backend, small_tree, small_stores, tmp_path):
    output = run_example(
        "read_with_paths.py", "--backend", backend, "--store", small_stores[backend],
        "--batch-size", "5", "--workers", "2", cwd=tmp_path,
    )
    classes = ImageFolder(small_tree).classes
    expected = [f"{classes[target]}\t{path}" for path, target in relative_samples(small_tree)]
    printed = [line for line in output.splitlines() if "\t" in line]
    assert printed == expected
    assert f"read 24 images with their paths from {small_stores[backend]}" in output


@pytest.mark.parametrize("backend", BACKENDS)
def test_audio_or_features_example_trains_on_wav_and_npy_files(backend, tmp_path):
    output = run_example("audio_or_features.py", "--backend", backend, "--dir", str(tmp_path), "--steps", "20", cwd=tmp_path)
    assert "converted 144 files" in output and "same samples and order as DatasetFolder: True" in output
    assert f"{'LMDB' if backend == 'lmdb' else 'HDF5'}DatasetFolder: 144 samples, classes ['chirp', 'hum', 'noise']" in output
    found = [float(v) for v in re.findall(r"^step \d+/20 loss (\S+)$", output, re.M)]
    assert len(found) == 2 and all(math.isfinite(v) for v in found), output
    source = (EXAMPLES / "audio_or_features.py").read_text(encoding="utf-8")
    assert "# dataset = DatasetFolder(" in source and "# the one changed line" in source


@pytest.mark.parametrize("backend", BACKENDS)
def test_lightning_example_fits_two_steps(backend, tmp_path):
    pytest.importorskip("lightning")  # the documented optional extra: pip install "torchpack[lightning]"
    output = run_example("lightning_datamodule.py", "--backend", backend, "--dir", str(tmp_path), "--workers", "2", cwd=tmp_path)
    match = re.search(r"fitted (\d+) steps on (\d+) train / (\d+) val images: train_loss (\S+) val_loss (\S+)", output)
    assert match, output
    assert int(match[1]) == 2 and int(match[2]) + int(match[3]) == 24 and int(match[3]) > 0
    assert math.isfinite(float(match[4])) and math.isfinite(float(match[5]))
    assert not (tmp_path / "lightning_logs").exists()


@pytest.mark.parametrize("backend", BACKENDS)
def test_lightning_datamodule_splits_one_store_or_reads_two(backend, small_stores):
    pytest.importorskip("lightning")
    example = load_example_module("lightning_datamodule.py")
    n = len(dataset_class(backend)(small_stores[backend]))

    split = example.StoreDataModule(small_stores[backend], backend, val_fraction=0.25, batch_size=4, num_workers=0)
    split.setup("fit")
    train, val = split.train_set.indices, split.val_set.indices
    assert len(val) == 6 and sorted(train + val) == list(range(n))
    assert split.train_set.dataset.transform is split.train_tf and split.val_set.dataset.transform is split.val_tf
    images, targets = next(iter(split.val_dataloader()))
    assert images.shape == (4, 3, 64, 64) and targets.tolist() == [split.val_set.dataset.targets[i] for i in val[:4]]

    two = example.StoreDataModule(small_stores[backend], backend, val_store=small_stores[backend], num_workers=0)
    two.setup("fit")
    assert len(two.train_set) == len(two.val_set) == n
    assert two.train_set.transform is two.train_tf and two.val_set.transform is two.val_tf
    with pytest.raises(ValueError, match="`backend` must be one of"):
        example.StoreDataModule(small_stores[backend], "zip")


def bash_env(tmp_path: Path, **env: str) -> dict[str, str]:
    command = shutil.which("torchpack", path=os.path.dirname(sys.executable)) or shutil.which("torchpack")
    assert command, "the torchpack command is not installed next to the Python running the tests"
    return {"TORCHPACK": command, "SLURM_ARRAY_TASK_COUNT": "2", "SLURM_CPUS_PER_TASK": "1", **env}


@pytest.mark.parametrize("backend", BACKENDS)
def test_slurm_array_script_writes_one_shard_per_task(backend, small_tree, tmp_path):
    script, out = str(EXAMPLES / "convert_imagenet_slurm.sh"), tmp_path / "out"
    ext = EXTENSION[backend]
    for task in (0, 1):
        env = bash_env(tmp_path, SLURM_ARRAY_TASK_ID=str(task), EXT=ext, NAME="train")
        output = run(["bash", script, small_tree, str(out)], tmp_path, env)
        assert f"Wrote {out / f'train-{task:05d}-of-00002{ext}'}" in output
    assert sorted(p.name for p in out.iterdir()) == [f"train-00000-of-00002{ext}", f"train-00001-of-00002{ext}"]

    dataset = dataset_class(backend)(str(out))
    assert [(dataset.relative_path(i), dataset.targets[i]) for i in range(len(dataset))] == relative_samples(small_tree)

    first = out / f"train-00000-of-00002{ext}"
    before = first.stat().st_mtime_ns
    again = run(["bash", script, small_tree, str(out)], tmp_path, bash_env(tmp_path, SLURM_ARRAY_TASK_ID="0", EXT=ext, NAME="train"))
    assert "already complete" in again and first.stat().st_mtime_ns == before
    run(["bash", script, small_tree, str(out)], tmp_path, bash_env(tmp_path, SLURM_ARRAY_TASK_ID="2", EXT=ext), expect=2)


def distributed_snippet() -> str:
    text = (EXAMPLES / "imagenet_at_scale.md").read_text(encoding="utf-8")
    blocks = re.findall(r"```python\n(.*?)```", text, re.S)
    assert len(blocks) == 1 and "DistributedSampler" in blocks[0]
    return blocks[0]


@pytest.mark.parametrize("backend", BACKENDS)
def test_distributed_reading_recipe_runs_under_torchrun(backend, small_tree, tmp_path):
    out = tmp_path / "shards"
    out.mkdir()
    torchpack.convert(small_tree, out / f"train{EXTENSION[backend]}", num_shards=3, workers=0)
    script = tmp_path / "read_distributed.py"
    script.write_text(distributed_snippet(), encoding="utf-8")
    args = [str(out), "--batch-size", "4", "--workers", "1", "--image-size", "32", *(["--hdf5"] if backend == "hdf5" else [])]
    output = run([sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc-per-node", "2", str(script), *args], tmp_path)
    # DistributedSampler gives each of the 2 ranks half of the 24 samples of the 3 shards.
    assert sorted(re.findall(r"^rank (\d)/2 epoch 0: (\d+) images$", output, re.M)) == [("0", "12"), ("1", "12")], output


def test_preemptible_training_runs_as_is_on_the_example_tree(tmp_path):
    """With no arguments: the example tree, 4 shards, 2 epochs; the SIGTERM resume is tested in test_stateful_loading.py."""
    output = run_example("preemptible_training.py", "--workers", "0", cwd=tmp_path)
    assert "epoch 0 done" in output and "epoch 1 done" in output
    assert len((tmp_path / "checkpoint.pt.seen").read_text().splitlines()) == 2 * 72 // 4
    assert sorted(p.name for p in (tmp_path / "preemptible-example").glob("*.lmdb")) == [f"train-0000{i}-of-00004.lmdb" for i in range(4)]
