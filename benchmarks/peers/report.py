"""The peers' output: the validation and training tables (printed and in peers.md), the head-to-head lines, peers.json and peers.png."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from dataclasses import asdict
from typing import Any

from suite.common import log

from .common import TRAINING, VALIDATION, Adapter, Row
from .head_to_head import HEAD_TO_HEAD_TITLE, TRAINING_TITLE, head_to_head, head_to_head_lines, training_head_to_head
from .registry import ADAPTERS

__all__ = ["head_to_head", "head_to_head_lines", "report", "training_head_to_head", "versions"]


def yes_no(value: Any, absent: str = "no") -> str:
    """A contract cell: a promise the system does not offer (None) is one it does not keep ("no")."""
    return {True: "yes", False: "no", None: absent}.get(value, str(value))


def order_cell(c: dict[str, Any]) -> str:
    if c.get("order") is False and c.get("order_index") and c.get("order_iteration") is False:
        return "by index only"  # dataset[i] is ImageFolder's sample i, its unshuffled iteration is not in that order
    return yes_no(c.get("order"), "n/a")


def pixels_cell(c: dict[str, Any]) -> str:
    if not c or c.get("pixels_max_abs") is None:
        return {None: "n/a"}.get(c.get("pixels_note"), "shape differs" if "shape" in c.get("pixels_note", "") else "n/a (order)")
    if c["pixels_exact"]:
        return "exact"
    return f"max {c['pixels_max_abs']:.0f}, mean {c['pixels_mean_abs']:.2f}"


def rate_cell(row: Row) -> str:
    if row.rate is not None:
        return f"{row.rate:,.0f}"
    if row.missing:
        return "not installed"
    return "skipped" if row.error and row.error.startswith("skipped") else "failed" if row.error else ""


def cpu_cell(row: Row) -> str:
    return "" if row.cpu_rate is None else f"{row.cpu_rate:,.0f}"


def cells(row: Row) -> dict[str, str]:
    """A row of the validation (and tiny) table."""
    c = row.contract
    rate = rate_cell(row)
    ratio = f"{row.ratio:.2f}x" if row.ratio is not None else ""
    return {
        "system / route": row.label,
        "kind": row.kind,
        "stored MP": "" if row.stored_megapixels is None else f"{row.stored_megapixels:.2f}",
        "convert s": "" if row.convert_seconds is None else f"{row.convert_seconds:.1f}",
        "size vs tree": "" if row.size_ratio is None else f"{row.size_ratio:.1%}",
        "photos img/s": rate if row.group == "photo" else "",
        "photos vs IF": ratio if row.group == "photo" else "",
        "tiny img/s": rate if row.group == "tiny" else "",
        "tiny vs IF": ratio if row.group == "tiny" else "",
        "img/CPU-s": cpu_cell(row),
        "classes": yes_no(c.get("classes")) if c and "error" not in c else "",
        "class_to_idx": yes_no(c.get("class_to_idx")) if c and "error" not in c else "",
        "order": order_cell(c) if c and "error" not in c else "",
        "pixels": pixels_cell(c) if c and "error" not in c else "",
        "random access": yes_no(c.get("random_access")) if c and "error" not in c else "",
        "len": yes_no(c.get("len")) if c and "error" not in c else "",
    }


def training_cells(row: Row) -> dict[str, str]:
    """A row of the training-pipeline table: no contract columns (the validation table has them)."""
    return {
        "system / route": row.label,
        "kind": row.kind,
        "runs as": row.runs,
        "stored MP": "" if row.stored_megapixels is None else f"{row.stored_megapixels:.2f}",
        "size vs tree": "" if row.size_ratio is None else f"{row.size_ratio:.1%}",
        "img/s": rate_cell(row),
        "x ImageFolder": "" if row.ratio is None else f"{row.ratio:.2f}x",
        "img/CPU-s": cpu_cell(row),
    }


#: Columns of numbers (right-aligned in Markdown); the contract columns are centred, the rest left.
NUMBER_COLUMNS = ("stored MP", "convert s", "size vs tree", "photos img/s", "photos vs IF", "tiny img/s", "tiny vs IF",
                  "img/CPU-s", "img/s", "x ImageFolder")
TEXT_COLUMNS = ("system / route", "kind", "runs as")
TRAINING_NOTE = ("Training pipeline: `RandomResizedCrop(224)` and a horizontal flip of every image, to uint8 CHW, each "
                 "system by its own route; x ImageFolder is against ImageFolder's PIL training pipeline with the same "
                 "workers, in the same rounds. img/CPU-s: images per CPU-second of the reading process, its threads "
                 "and its workers, over the same window as img/s. What each system keeps of ImageFolder's contract is "
                 "in the validation table.")


def table_lines(table: list[dict[str, str]]) -> list[str]:
    if not table:
        return []
    head = list(table[0])
    return ["| " + " | ".join(head) + " |", alignment(head)] + ["| " + " | ".join(t[h] for h in head) + " |" for t in table]


def split(rows: list[Row]) -> tuple[list[Row], list[Row]]:
    """(validation and tiny rows, training rows)."""
    return [r for r in rows if r.pipeline != TRAINING], [r for r in rows if r.pipeline == TRAINING]


def alignment(head: list[str]) -> str:
    return "| " + " | ".join("---:" if h in NUMBER_COLUMNS else "---" if h in TEXT_COLUMNS else ":---:" for h in head) + " |"


def errors_of(row: Row) -> list[str]:
    found = [row.error] if row.error else []
    found += [f"contract: {row.contract[k]}" for k in ("error", "first_error", "random_error") if k in row.contract]
    return found


def markdown(rows: list[Row], config: dict[str, Any], summary: list[dict[str, Any]], training: list[dict[str, Any]]) -> str:
    validation, train = split(rows)
    lines = [
        f"Workers: {config['workers']}, rounds: {config['rounds']} (medians), photo tree: {config['photo_images']} images, "
        f"tiny tree: {config['tiny_images']} images, CPUs: {config['cpus']}, Python {config['python']}, torch {config['torch']}.",
        "",
    ]
    if validation:
        lines += ["Validation pipeline (`Resize(256)`, `CenterCrop(224)`, uint8 CHW) and 28x28 images:", ""]
        lines += table_lines([cells(r) for r in validation])
    if train:
        lines += ["", TRAINING_NOTE, ""] + table_lines([training_cells(r) for r in train])
    lines += ["", "Kinds: lossless = the source files' bytes, or pixels decoded from them without resizing; re-encoded "
              "= resized and/or JPEG re-encoded (cap in the route's name); tiny/decoded = 28x28 images stored as pixels. "
              "Stored MP: mean megapixels per stored photo, from the tree's image sizes and the store's cap."]
    if config.get("skip_raw_photos"):
        lines += ["", "Raw photo stores (decoded pixels) were skipped (--skip-raw-photos)."]
    lines += ["", HEAD_TO_HEAD_TITLE, ""]
    lines += head_to_head_lines(summary) or ["- nothing measured"]
    if train:
        lines += ["", TRAINING_TITLE, ""] + (head_to_head_lines(training) or ["- nothing measured"])
    found = [(r, e) for r in rows for e in errors_of(r)]
    for title, part in (("Skipped", [f for f in found if f[1].startswith("skipped")]),
                        ("Failures", [f for f in found if not f[1].startswith("skipped")])):
        if part:
            lines += ["", f"{title}:", ""] + [f"- {r.key} ({r.group}): {e}" for r, e in part]
    lines += ["", "Versions: " + ", ".join(f"{k} {v}" for k, v in config["versions"].items()) + "."]
    return "\n".join(lines) + "\n"


def print_table(rows: list[Row]) -> None:
    validation, train = split(rows)
    for title, table in (("validation pipeline and 28x28 images", [cells(r) for r in validation]),
                         ("training pipeline", [training_cells(r) for r in train])):
        if not table:
            continue
        print(f"\n{title}:")
        widths = {h: max(len(h), *(len(t[h]) for t in table)) for h in table[0]}
        print("  ".join(h.ljust(widths[h]) for h in widths))
        for t in table:
            print("  ".join(t[h].ljust(widths[h]) for h in widths))
    for r in rows:
        for e in errors_of(r):
            print(f"! {r.key} ({r.group}): {e}")


def plot(rows: list[Row], path: str) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    panels = {
        ("photo", VALIDATION): "Photos, validation pipeline: Resize(256), CenterCrop(224), uint8 tensor",
        ("photo", TRAINING): "Photos, training pipeline: RandomResizedCrop(224), flip, uint8 tensor",
        ("tiny", VALIDATION): "28x28 images, 3x28x28 uint8 tensor",
    }
    panels = {key: title for key, title in panels.items() if any((r.group, r.pipeline) == key for r in rows)}
    fig, axes = plt.subplots(len(panels), 1, figsize=(13, 1.6 + 0.42 * len(rows)), squeeze=False)
    for ax, (key, title) in zip(axes[:, 0], panels.items()):
        part = [r for r in rows if (r.group, r.pipeline) == key]
        values = [r.ratio if r.ratio else 1.0 for r in part]
        colours = ["tab:grey" if r.system == "ImageFolder" else "tab:blue" if r.system == "torchpack" else "tab:orange" for r in part]
        colours = [c if r.ratio else "white" for c, r in zip(colours, part)]
        ax.barh([f"{r.label} [{r.kind}]" for r in part], values, color=colours, edgecolor="black", linewidth=0.3)
        for y, (r, v) in enumerate(zip(part, values)):
            text = f" {r.ratio:.2f}x ({r.rate:,.0f}/s)" if r.ratio else f" {rate_cell(r)}: {(r.error or '').split(':')[0]}" if r.error else " n/a"
            ax.text(v, y, text, va="center", fontsize=8)
        ax.set_xscale("log")
        ax.axvline(1.0, color="black", linewidth=0.6)
        ax.set_xlim(min(min(values) / 1.5, 0.5), max(values) * 6)
        ax.invert_yaxis()
        ax.set_title(title, fontsize=10)
        ax.set_xlabel("images/s against ImageFolder in the same rounds (log scale)")
        ax.tick_params(axis="y", labelsize=8)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


def versions(adapters: list[Adapter]) -> dict[str, str]:
    """Installed versions of the systems (as pip sees them), for the report."""
    from importlib import metadata

    names = {"torchpack": "torchpack", "torch": "torch", "torchvision": "torchvision", "numpy": "numpy"}
    names.update({cls.system: cls.distribution for cls in ADAPTERS.values() if cls.distribution})
    found = {}
    for label, dist in names.items():
        adapter = next((a for a in adapters if a.system == label), None)
        if adapter is not None and adapter.python != sys.executable:
            done = subprocess.run([adapter.python, "-c", f"from importlib import metadata; print(metadata.version({dist!r}))"],
                                  capture_output=True, text=True)
            found[label] = done.stdout.strip() if done.returncode == 0 else "not installed"
            continue
        try:
            found[label] = metadata.version(dist)
        except metadata.PackageNotFoundError:
            found[label] = "not installed"
    return found


def report(rows: list[Row], config: dict[str, Any], out: str) -> None:
    summary, training = head_to_head(rows), training_head_to_head(rows)
    print_table(rows)
    print("\n" + HEAD_TO_HEAD_TITLE)
    print("\n".join(head_to_head_lines(summary)) or "- nothing measured")
    if training:
        print("\n" + TRAINING_TITLE)
        print("\n".join(head_to_head_lines(training)))
    with open(os.path.join(out, "peers.json"), "w", encoding="utf-8") as f:
        json.dump({"config": config, "rows": [asdict(r) for r in rows], "head_to_head": summary,
                   "training_head_to_head": training}, f, indent=2)
    with open(os.path.join(out, "peers.md"), "w", encoding="utf-8") as f:
        f.write(markdown(rows, config, summary, training))
    plot(rows, os.path.join(out, "peers.png"))
    log(f"wrote {out}/peers.json, peers.md, peers.png")
