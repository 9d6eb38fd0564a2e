"""The ``torchpack`` command: a thin layer over the Python API.

Exit codes: 0 success; 1 an error (bad input, damaged store, failed write); 2 wrong usage;
3 ``verify`` found damaged samples; 128 + the signal's number when a signal stopped it
(130 SIGINT, 143 SIGTERM, 129 SIGHUP).
"""

from __future__ import annotations

import argparse
import json
import os
import signal
import sys
import tempfile
import time
from typing import Any, Sequence

EXIT_OK, EXIT_ERROR, EXIT_USAGE, EXIT_DAMAGED = 0, 1, 2, 3

__all__ = ["main"]


def _human(n: float) -> str:
    for unit in ("B", "KB", "MB", "GB", "TB"):
        if abs(n) < 1024 or unit == "TB":
            return f"{n:.1f} {unit}" if unit != "B" else f"{int(n)} B"
        n /= 1024
    return str(n)


def _print_json(data: Any) -> None:
    print(json.dumps(data, indent=2, ensure_ascii=False, default=str))


def _cmd_convert(args: argparse.Namespace) -> int:
    from torchpack.converter import convert

    result = convert(
        args.src,
        args.dst,
        backend=args.backend,
        extensions=_extensions(args.extensions),
        workers=args.workers,
        overwrite=args.overwrite,
        resume=args.resume,
        check=False if args.no_check else None,
        storage=args.storage,
        short_side=args.short_side,
        long_side=args.long_side,
        quality=args.quality,
        raw_compression=args.raw_compression,
        num_shards=args.num_shards,
        shard_size=args.shard_size,
        shard_index=args.shard_index,
        progress=not args.quiet and not args.json,
        storage_options=_storage_options(args),
        stage_dir=args.stage_dir,
        shuffle=args.shuffle,
    )
    if args.json:
        _print_json(result.as_dict())
        return EXIT_OK
    stores = ", ".join(result.stores)
    print(
        f"Wrote {stores}\n"
        f"  images:  {result.num_samples} stored, {len(result.bad_files)} left out\n"
        f"  classes: {result.num_classes}\n"
        f"  bytes:   {_human(result.bytes_in)} in, {_human(result.bytes_out)} out\n"
        f"  speed:   {result.images_per_second:.0f} images/s ({result.seconds:.1f} s"
        + (f", resumed after {result.resumed_from} files" if result.resumed_from else "")
        + ")"
    )
    _print_bad_files(result.bad_files)
    return EXIT_OK


def _storage_options(args: argparse.Namespace) -> dict[str, Any] | None:
    """``--storage-option KEY=VALUE`` (repeated) as fsspec's ``storage_options``; a VALUE that is JSON is parsed."""
    options: dict[str, Any] = {}
    for item in args.storage_option or ():
        key, sep, value = item.partition("=")
        if not sep or not key:
            raise ValueError(f"--storage-option {item!r} is not KEY=VALUE (e.g. endpoint_url=http://127.0.0.1:9000)")
        try:
            options[key] = json.loads(value)
        except ValueError:
            options[key] = value
    return options or None


def _cache(args: argparse.Namespace) -> Any:
    from torchpack.shard_cache import ShardCache

    return ShardCache(args.cache_dir, args.cache_limit)


def _extensions(listed: str | None) -> tuple[str, ...] | None:
    """``".wav,.flac"`` (or ``"wav, flac"``) as DatasetFolder's ``extensions``: ``(".wav", ".flac")``."""
    if listed is None:
        return None
    extensions = tuple("." + e.strip().lstrip(".").lower() for e in listed.split(",") if e.strip())
    if not extensions:
        raise ValueError(f"--extensions {listed!r} names no extension; give a list like .wav,.flac")
    return extensions


def _print_bad_files(bad_files: list[dict[str, str]]) -> None:
    if bad_files:
        print(f"Left out {len(bad_files)} file(s) that do not load:")
        for bad in bad_files:
            print(f"  {bad['path']}: {bad['error_type']}: {bad['error']}")


def _cmd_info(args: argparse.Namespace) -> int:
    from torchpack.inspection import store_info

    info = store_info(args.store, _storage_options(args), _cache(args))
    if args.json:
        _print_json(info)
        return EXIT_OK
    storage = info["storage"]
    print(f"Store:    {', '.join(info['files'])}")
    print(f"Format:   torchpack {info['format_version']} ({info['backend']}), written by {info['created_by']}")
    print(
        f"Samples:  {info['num_samples']} in {info['num_classes']} classes, {info['shards']} shard(s); "
        f"stored {storage['mode']}" + (", checked at conversion" if storage.get("checked") else ", not checked")
    )
    print(f"Encoding: {', '.join(f'{k} {v}' for k, v in info['encodings'].items())}")
    print(f"Decoder:  {', '.join(f'{k} {v}' for k, v in info['decoders'].items())}")
    print(f"Size:     {_human(info['store_bytes'])} on disk, {_human(info['source_bytes'])} of source files")
    print("Classes:")
    for name, count in info["classes"].items():
        print(f"  {name}: {count}")
    _print_bad_files(info["bad_files"])
    return EXIT_OK


def _cmd_verify(args: argparse.Namespace) -> int:
    from torchpack.inspection import verify_store

    report = verify_store(args.store, decode=args.decode, storage_options=_storage_options(args), cache=_cache(args))
    if args.json:
        _print_json(report.as_dict())
    else:
        what = "checksums and decoding" if args.decode else "checksums"
        print(f"Checked {report.checked} samples ({what}) in {', '.join(report.files)}")
        for problem in report.problems:
            print(f"  BAD {problem['path'] or problem['file']}: {problem['problem']}")
        print("OK" if report.ok else f"{len(report.problems)} problem(s) found")
    return EXIT_OK if report.ok else EXIT_DAMAGED


def _cmd_export(args: argparse.Namespace) -> int:
    from torchpack.export import export_store

    count = export_store(args.store, args.out, _storage_options(args), _cache(args))
    if args.json:
        _print_json({"written": count, "out": os.path.abspath(args.out)})
    else:
        print(f"Wrote {count} files under {args.out}")
    return EXIT_OK


def _cmd_demo(args: argparse.Namespace) -> int:
    """Make the built-in example tree, convert it to both formats, read each through a DataLoader."""
    import torch
    from torch.utils.data import DataLoader
    from torchvision import transforms
    from torchvision.datasets import ImageFolder

    from torchpack import HDF5ImageFolder, LMDBImageFolder, SkipBadCollate, convert
    from torchpack.example import make_example_tree

    out = args.dir or tempfile.mkdtemp(prefix="torchpack-demo-")
    tree = make_example_tree(os.path.join(out, "tree"))
    reference = ImageFolder(tree)
    print(f"Example tree: {tree} ({len(reference)} images, classes {reference.classes})")
    tf = transforms.Compose([transforms.Resize(64), transforms.CenterCrop(64), transforms.PILToTensor()])
    for dataset_class, name in ((LMDBImageFolder, "demo.lmdb"), (HDF5ImageFolder, "demo.h5")):
        dst = os.path.join(out, name)
        result = convert(tree, dst, workers=args.workers, overwrite=True)
        print(
            f"\nconvert -> {dst}: {result.num_samples} images, {_human(result.bytes_in)} in, "
            f"{_human(result.bytes_out)} out, {result.images_per_second:.0f} images/s"
        )
        dataset = dataset_class(dst, transform=tf)
        same = list(dataset.samples) == [(os.path.join(dst, os.path.relpath(p, tree)), t) for p, t in reference.samples]
        loader = DataLoader(dataset, batch_size=16, shuffle=True, num_workers=args.workers, collate_fn=SkipBadCollate())
        start, seen, labels = time.perf_counter(), 0, torch.zeros(len(dataset.classes), dtype=torch.long)
        for images, targets in loader:
            seen += len(targets)
            labels += torch.bincount(targets, minlength=len(dataset.classes))
        seconds = time.perf_counter() - start
        print(
            f"{dataset_class.__name__}: read {seen} images in batches of {tuple(images.shape[1:])} with "
            f"{args.workers} workers in {seconds:.2f} s; per class {dict(zip(dataset.classes, labels.tolist()))}; "
            f"same samples and order as ImageFolder: {same}"
        )
        if seen != len(reference) or not same:
            print("demo: the store does not match the tree", file=sys.stderr)
            return EXIT_ERROR
    print(f"\nDone. Files are in {out}")
    return EXIT_OK


def _parser() -> argparse.ArgumentParser:
    from torchpack import __version__
    from torchpack.backends import backend_names

    parser = argparse.ArgumentParser(
        prog="torchpack",
        description="Pack ImageFolder and DatasetFolder trees into one LMDB or HDF5 file and check such stores.",
        epilog="Exit codes: 0 success, 1 error, 2 usage, 3 verify found damage. Run 'torchpack COMMAND --help' for details.",
    )
    parser.add_argument("--version", action="version", version=f"torchpack {__version__}")
    commands = parser.add_subparsers(dest="command", metavar="COMMAND", required=True)

    p = commands.add_parser("convert", help="convert an ImageFolder or DatasetFolder tree to a store", description="Convert a tree (SRC/<class>/**/<file>) into one store file, or shards of one: its images (ImageFolder's extensions), or the files --extensions names.")
    p.add_argument("src", help="root of the tree")
    p.add_argument("dst", help="store to write: .lmdb, or .h5/.hdf5")
    p.add_argument("--backend", choices=backend_names(), help="backend, when DST's extension does not say")
    p.add_argument("--extensions", help="convert the files with these extensions, as DatasetFolder lists them (e.g. .wav,.flac; default: ImageFolder's image extensions)")
    p.add_argument("--workers", type=int, default=None, help="reader processes (default: one per CPU; 0: none)")
    p.add_argument("--overwrite", action="store_true", help="replace an existing store")
    p.add_argument("--resume", action="store_true", help="continue an interrupted conversion")
    p.add_argument("--no-check", action="store_true", help="decode no image (trust the data); by default an ImageFolder tree's images are decoded, a DatasetFolder tree's (--extensions) files are not")
    p.add_argument("--storage", choices=("encoded", "reencode", "raw"), default="encoded", help="encoded: files untouched (default); reencode: JPEG with --short-side cap; raw: decoded pixels for tiny images")
    p.add_argument("--short-side", type=int, default=None, help="cap the short side (reencode, raw)")
    p.add_argument("--long-side", type=int, default=None, help="cap the long side (reencode, raw), as FFCV's max_resolution")
    p.add_argument("--quality", type=int, default=90, help="JPEG quality for reencode (default 90)")
    p.add_argument("--raw-compression", choices=("lz4", "none"), default="lz4", help="compression of raw pixels")
    p.add_argument("--num-shards", type=int, help="write this many shards")
    p.add_argument("--shard-size", type=int, help="write shards of at most this many files")
    p.add_argument("--shard-index", type=int, help="write only this shard (one job of an array)")
    p.add_argument("--quiet", action="store_true", help="no progress bar")
    p.add_argument("--json", action="store_true", help="print the result as JSON")
    _remote_arguments(p, cache=False)
    p.add_argument("--stage-dir", help="for a URL DST: the local folder shards are converted in before upload")
    p.add_argument("--shuffle", type=int, metavar="SEED", help="store the samples in a random order (every shard then mixes every class), for ShardWindowSampler")
    p.set_defaults(run=_cmd_convert)

    p = commands.add_parser("info", help="describe a store", description="Show a store's header, classes with counts, sizes, storage and left-out files.")
    p.add_argument("store", help="store file, or a folder/glob of shards, or a URL (s3://bucket/train/)")
    p.add_argument("--json", action="store_true", help="print as JSON")
    _remote_arguments(p)
    p.set_defaults(run=_cmd_info)

    p = commands.add_parser("verify", help="check a store's integrity", description="Check the header, the index and every sample's checksum (and with --decode, that every image decodes as a dataset would decode it). Exit code 3 if anything is damaged.")
    p.add_argument("store", help="store file, or a folder/glob of shards, or a URL")
    p.add_argument("--decode", action="store_true", help="also decode every image, as the datasets do")
    p.add_argument("--json", action="store_true", help="print the report as JSON")
    _remote_arguments(p)
    p.set_defaults(run=_cmd_verify)

    p = commands.add_parser("export", help="write a store back to an ImageFolder tree", description="Write every sample to OUT/<relative path>. Stored paths that are absolute or contain '..' are refused.")
    p.add_argument("store", help="store file, or a folder/glob of shards, or a URL")
    p.add_argument("out", help="output folder")
    p.add_argument("--json", action="store_true", help="print the result as JSON")
    _remote_arguments(p)
    p.set_defaults(run=_cmd_export)

    p = commands.add_parser("demo", help="run the built-in example end to end", description="Generate a small example tree, convert it to LMDB and HDF5, and read both through a multi-worker DataLoader.")
    p.add_argument("--dir", help="where to write (default: a new temporary folder)")
    p.add_argument("--workers", type=int, default=2, help="DataLoader and converter workers (default 2)")
    p.set_defaults(run=_cmd_demo)
    return parser


def _remote_arguments(p: argparse.ArgumentParser, cache: bool = True) -> None:
    p.add_argument("--storage-option", action="append", metavar="KEY=VALUE", help="an fsspec storage option for URLs (repeat it; VALUE may be JSON), e.g. endpoint_url=http://127.0.0.1:9000")
    if cache:
        p.add_argument("--cache-dir", help="the node's shard cache for URLs (default: $TORCHPACK_CACHE or ~/.cache/torchpack)")
        p.add_argument("--cache-limit", help="the most the shard cache may hold, e.g. 200GB")


def main(argv: Sequence[str] | None = None) -> int:
    """Run the command line; returns the exit code."""
    parser = _parser()
    try:
        args = parser.parse_args(argv)
    except SystemExit as exc:
        return EXIT_OK if exc.code in (0, None) else EXIT_USAGE
    from torchpack.format import InvalidStoreError

    try:
        return args.run(args)
    except (OSError, ValueError, RuntimeError, InvalidStoreError) as exc:
        print(f"torchpack: error: {exc}", file=sys.stderr)
        return EXIT_ERROR
    except KeyboardInterrupt as exc:  # Ctrl-C, or SIGTERM/SIGHUP during a conversion (ConversionInterrupted)
        signum = getattr(exc, "signum", signal.SIGINT)
        kept = "; the work committed so far is kept: run the same command with --resume to continue" if args.command == "convert" else ""
        print(f"torchpack: stopped by {signal.Signals(signum).name}{kept}", file=sys.stderr)
        return 128 + signum


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
