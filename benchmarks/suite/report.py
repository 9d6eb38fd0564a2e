"""The suite's output: the issues' floors, then results.md (also printed), results.json and results.png."""

from __future__ import annotations

import json
import os
from dataclasses import asdict
from typing import Any

import numpy as np

from .common import Result, log

# -- floors -------------------------------------------------------------------------------------


def floors(results: list[Result], workers: int, hard_tree: str) -> list[dict[str, Any]]:
    """The issues' floors, each with the measured figure of the worse backend."""

    def worst(section: str, contains: str, w: int | None, key: str = "ratio", tree: str | None = None) -> float | None:
        values = [
            r.extra.get(key) if key != "ratio" else r.ratio
            for r in results
            if r.section == section
            and (r.name.endswith(contains) if section == "tiny" else contains in r.name)
            and (w is None or r.workers == w)
            and (tree is None or r.tree == tree)
        ]
        values = [v for v in values if v is not None]
        return min(values) if values else None

    table = [
        ("default path vs ImageFolder (issue 9: no lower than before, 1.03)", worst("photo", "default", workers), 1.03),
        ("fast path vs ImageFolder (issue 9: no lower than before, 2.32)", worst("photo", "fast", workers), 2.32),
        (f"training-ready store, tensor path, vs ImageFolder, {hard_tree} tree", worst("photo", "training-ready store, tensor", workers, tree=hard_tree), 4.0),
        (f"conversion with the check vs its in-memory decode bound, {hard_tree} tree", worst("convert", "checked", workers, tree=hard_tree), 0.90),
        ("tiny raw per item vs ImageFolder", worst("tiny", "raw none, per item", workers), 6.0),
        ("tiny raw batched in-process vs ImageFolder", worst("tiny", "HDF5ImageFolder raw none, batched", 0), 100.0),
        ("tiny raw batched in-process vs numpy gather from RAM", worst("tiny", "HDF5ImageFolder raw none, batched", 0, "of_bound"), 0.70),
        ("tiny raw batched with workers vs DataLoader transport", worst("tiny", "HDF5ImageFolder raw none, batched", workers, "of_bound"), 0.85),
    ]
    return [{"floor": n, "measured": v, "at_least": f, "met": v is not None and v >= f} for n, v, f in table]


# -- reporting ----------------------------------------------------------------------------------


def _rate(value: float | None) -> str:
    return "" if value is None else f"{value:,.0f}"


def _x(value: float | None) -> str:
    return "" if value is None else f"{value:.2f}x"


def paired_rows(results: list[Result], section: str, workers: int) -> list[dict[str, Any]]:
    """One row per (tree, configuration): its figure with workers and its figure in-process side by side."""
    rows: dict[tuple[str, str], dict[str, Any]] = {}
    for r in results:
        if r.section != section:
            continue
        row = rows.setdefault((r.tree, r.name), {"tree": r.tree, "name": r.name})
        key = "w" if r.workers == workers else "p"
        row[key] = r
    return list(rows.values())


def markdown(results: list[Result], floor_rows: list[dict[str, Any]], config: dict[str, Any]) -> str:
    w = config["workers"]
    lines = [
        f"CPUs: {config['cpus']}; {w} DataLoader workers; trees: "
        + ", ".join(f"{label} ({n} images of {kb:.0f} KB on average, {path})" for label, path, n, kb in config["trees"])
        + f"; tiny: {config['tiny_count']} 28x28 PNGs; medians of {config['rounds']} rounds.",
        "",
        f"Ratios are against ImageFolder with {w} workers on the same tree, in the same run; "
        "\"in-process\" is `num_workers=0` (images per CPU-second); \"of bound\" is against the same "
        "work on bytes already in memory, with as many processes.",
        "",
        f"| tree | configuration | {w} workers: img/s | x ImageFolder | of bound | in-process: img/s | x ImageFolder | of bound |",
        "| --- | --- | ---: | ---: | ---: | ---: | ---: | ---: |",
    ]
    for section in ("photo", "tiny"):
        for row in paired_rows(results, section, w):
            a, b = row.get("w"), row.get("p")
            cells = []
            for r in (a, b):
                of_bound = r.extra.get("of_bound") if r else None
                cells += [_rate(r.value if r else None), _x(r.ratio if r else None), "" if of_bound is None else f"{of_bound:.0%}"]
            lines.append(f"| {row['tree']} | {row['name']} | " + " | ".join(cells) + " |")
    lines += train_lines(results, w, config["photo_batch"])
    lines += ["", f"| tree | conversion ({w} workers) | img/s | of its bound | of a Pillow decode |", "| --- | --- | ---: | ---: | ---: |"]
    for r in results:
        if r.section == "convert":
            pillow = r.extra.get("of_pillow_decode")
            lines.append(
                f"| {r.tree} | {r.name} | {r.value:,.0f} | {'' if r.ratio is None else f'{r.ratio:.0%}'} | "
                f"{'' if pillow is None else f'{pillow:.0%}'} |"
            )
    lines += ["", "| tree | size on disk | MiB | of the tree |", "| --- | --- | ---: | ---: |"]
    for r in results:
        if r.section == "size":
            lines.append(f"| {r.tree} | {r.name} | {r.value / 2**20:,.1f} | {'' if r.ratio is None else f'{r.ratio:.1%}'} |")
    lines += ["", "| floor | measured | needed | met |", "| --- | ---: | ---: | :---: |"]
    for f in floor_rows:
        measured = "n/a" if f["measured"] is None else f"{f['measured']:.2f}"
        lines.append(f"| {f['floor']} | {measured} | >= {f['at_least']} | {'yes' if f['met'] else 'NO'} |")
    return "\n".join(lines) + "\n"


def train_lines(results: list[Result], w: int, batch: int) -> list[str]:
    """The training-pipeline table: images/s, the ratio to ImageFolder's, and images per CPU-second."""
    rows = paired_rows(results, "train", w)
    if not rows:
        return []
    lines = [
        "",
        f"Training pipeline (`RandomResizedCrop(224)` + horizontal flip, uint8 CHW, batch {batch}): ratios against "
        f"ImageFolder's PIL training pipeline with {w} workers, same tree, same rounds; img/CPU-s is images per "
        "CPU-second of the process, its threads and its workers over the same window. In-process is "
        f"`num_workers=0`, and torchpack's rows decode in `threads={w}` there.",
        "",
        f"| tree | training pipeline | {w} workers: img/s | x ImageFolder | img/CPU-s | in-process: img/s | x ImageFolder | img/CPU-s |",
        "| --- | --- | ---: | ---: | ---: | ---: | ---: | ---: |",
    ]
    for row in rows:
        cells = []
        for r in (row.get("w"), row.get("p")):
            if r is not None and r.extra.get("skipped"):
                cells += ["skipped", "", ""]
                continue
            per_cpu = r.extra.get("per_cpu_second") if r else None
            cells += [_rate(r.value if r else None), _x(r.ratio if r else None), _rate(per_cpu)]
        lines.append(f"| {row['tree']} | {row['name']} | " + " | ".join(cells) + " |")
    skipped = sorted({r.extra["skipped"] for r in results if r.section == "train" and r.extra.get("skipped")})
    return lines + ["", *(f"- {why}" for why in skipped)] if skipped else lines


def plot(results: list[Result], workers: int, path: str) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    panels = [(s, t) for s in ("photo", "train", "tiny") for t in dict.fromkeys(r.tree for r in results if r.section == s)]
    heights = [len({r.name for r in results if (r.section, r.tree) == p}) for p in panels]
    fig, axes = plt.subplots(len(panels), 1, figsize=(10, 1.5 + 0.42 * sum(heights)), squeeze=False,
                             gridspec_kw={"height_ratios": heights or [1]})
    for ax, (section, tree) in zip(axes[:, 0], panels):
        rows = paired_rows([r for r in results if r.tree == tree], section, workers)
        names = [row["name"] for row in rows]
        y = np.arange(len(rows))
        for offset, key, colour, label in ((-0.2, "w", "tab:blue", f"{workers} workers"), (0.2, "p", "tab:orange", "in-process")):
            values = [(row[key].ratio or 0) if key in row else 0 for row in rows]
            ax.barh(y + offset, values, height=0.4, color=colour, label=label)
            for yy, v in zip(y + offset, values):
                if v:
                    ax.text(v, yy, f" {v:.2f}x", va="center", fontsize=7)
        ax.set_yticks(y, names, fontsize=7)
        ax.invert_yaxis()
        ax.axvline(1.0, color="grey", lw=0.8)
        ax.set_xscale("log")
        what = "training pipeline" if section == "train" else section
        ax.set_title(f"{what}: {tree} (x ImageFolder with {workers} workers)", fontsize=9)
        ax.legend(fontsize=7, loc="lower right")
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


def report(results: list[Result], config: dict[str, Any], out: str) -> None:
    hard = max(config["trees"], key=lambda t: t[3])[0] if config["trees"] else ""  # the largest files
    floor_rows = floors(results, config["workers"], hard)
    text = markdown(results, floor_rows, config)
    print(text)
    with open(os.path.join(out, "results.json"), "w", encoding="utf-8") as f:
        json.dump({"config": config, "results": [asdict(r) for r in results], "floors": floor_rows}, f, indent=2)
    with open(os.path.join(out, "results.md"), "w", encoding="utf-8") as f:
        f.write(text)
    plot(results, config["workers"], os.path.join(out, "results.png"))
    log(f"wrote {out}/results.json, results.md, results.png")
