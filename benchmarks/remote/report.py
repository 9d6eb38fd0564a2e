"""The figures of a run, from the jobs' epoch times: the rows, the Markdown tables, ``remote.md`` and ``remote.json``."""

from __future__ import annotations

import json
import os
from typing import Any

import numpy as np

MB = 1e6
COLD_GOAL, WARM_GOAL = 0.90, 0.95


def _median(values: list[float]) -> float | None:
    return float(np.median(values)) if values else None


def epoch_row(system: str, pipeline: str, store: dict[str, Any], result: dict[str, Any] | None, bandwidth: float,
              images: int, error: str | None = None) -> dict[str, Any]:
    """One table row: medians over the rounds of each epoch's images/s, and what they are against the link and local disk.

    Rates count the images the loader gave (a system may pad an epoch); the link-bound rate is
    the tree's ``images`` over the seconds the store's bytes take on the link.
    """
    row: dict[str, Any] = {"system": system, "pipeline": pipeline, "store_bytes": store.get("bytes") or None,
                           "error": error or store.get("error"), "rounds": result}
    if result is None or row["error"]:
        return row
    rate = lambda kind: [i / s for i, s in zip(result[f"{kind}_images"], result[kind])]  # noqa: E731
    cold, warm, local = rate("cold"), rate("warm"), rate("local")
    row.update({
        "images_per_cold_epoch": _median(result["cold_images"]),
        "open_seconds": _median(result["open"]),
        "cold_seconds": _median(result["cold"]),
        "cold_first_batch_seconds": _median(result["cold_first_batch"]),
        "cold_link_idle_seconds": _median(result["cold_link_idle"]),
        "cold_rate": _median(cold),
        "warm_rate": _median(warm),
        "local_rate": _median(local),
        "warm_over_local": _median([w / l for w, l in zip(warm, local)]),
        "cold_over_warm": _median([c / w for c, w in zip(cold, warm)]),
        "served_over_store": _median([b / store["bytes"] for b in result["cold_bytes"]]) if store.get("bytes") else None,
        "warm_bytes": _median(result["warm_bytes"]),
        "cold_server_cpu_seconds": _median(result["cold_server_cpu"]),
    })
    if bandwidth > 0 and store.get("bytes"):
        bound_seconds = store["bytes"] / bandwidth
        row["link_bound_rate"] = images / bound_seconds
        row["link_fraction"] = _median([store["bytes"] / s / bandwidth for s in result["cold"]])
        if result.get("cold_before_first_byte"):  # the epoch less its start-up and its tail: the sustained rate
            spans = [s - a - b for s, a, b in zip(result["cold"], result["cold_before_first_byte"], result["cold_after_last_byte"])]
            row["sustained_link_fraction"] = _median([store["bytes"] / s / bandwidth for s in spans if s > 0])
            row["cold_ends_seconds"] = _median([a + b for a, b in zip(result["cold_before_first_byte"], result["cold_after_last_byte"])])
    return row


def _f(value: float | None, fmt: str = ".0f", suffix: str = "") -> str:
    return "–" if value is None else f"{value:{fmt}}{suffix}"


def server_table(server: dict[str, Any]) -> list[str]:
    lines = ["| server figure | value |", "| --- | ---: |"]
    lines.append(f"| link bandwidth (the throttle, shared by every connection) | {server['bandwidth'] / MB:.0f} MB/s |")
    for streams, rate in server["unthrottled"].items():
        lines.append(f"| unthrottled, {streams} connection(s) at once, each downloading the largest torchpack shard "
                     f"({server['probe_bytes'] / MB:.1f} MB) | {rate / MB:.0f} MB/s |")
    lines.append(f"| round trip of a 1-byte ranged GET of that shard | {server['latency'] * 1e3:.1f} ms |")
    return lines


def epoch_table(rows: list[dict[str, Any]]) -> list[str]:
    lines = [
        "| system | pipeline | store MB | open s | cold epoch img/s | link-bound img/s | fraction of the link "
        "| first to last byte: fraction of the link | cold: before the first byte + after the last s "
        "| cold: first batch s | cold: link idle s | warm img/s | local img/s | warm / local | served / store (cold) |",
        "| --- | --- | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: |",
    ]
    for r in rows:
        size = _f(r["store_bytes"] / MB if r.get("store_bytes") else None, ".1f")
        if r.get("error"):
            error = r["error"] if len(r["error"]) <= 240 else r["error"][:237] + "..."
            lines.append(f"| {r['system']} | {r['pipeline']} | {size} | {error.replace('|', '/')} |" + "  |" * 9)
            continue
        fraction = r.get("link_fraction")
        cells = [
            _f(r["open_seconds"], ".2f"), _f(r["cold_rate"]), _f(r.get("link_bound_rate")),
            _f(None if fraction is None else 100 * fraction, ".0f", "%"),
            _f(None if r.get("sustained_link_fraction") is None else 100 * r["sustained_link_fraction"], ".0f", "%"),
            _f(r.get("cold_ends_seconds"), ".2f"), _f(r["cold_first_batch_seconds"], ".2f"),
            _f(r["cold_link_idle_seconds"], ".2f"), _f(r["warm_rate"]), _f(r["local_rate"]), _f(r["warm_over_local"], ".2f"),
            _f(r["served_over_store"], ".2f"),
        ]
        lines.append(f"| {r['system']} | {r['pipeline']} | {size} | " + " | ".join(cells) + " |")
    return lines


def _break_even(value: float | None, fractions: list[float]) -> str:
    if value is None:
        return f"never: ranged reads are faster up to {fractions[-1]:.0%} of the shard"
    if value == 0.0:
        return f"below {fractions[0]:.0%}: the download is faster at every fraction measured"
    return f"{value:.1%} of the shard's samples"


def hdf5_table(hdf5: dict[str, Any], fractions: list[float]) -> list[str]:
    lines = [
        f"One HDF5 shard of {hdf5['shard_bytes'] / MB:.1f} MB, {hdf5['samples']} samples of "
        f"{hdf5['mean_sample_bytes'] / 1e3:.0f} KB on average:",
        "",
        "| added delay | round trip | samples read | ranged GETs, one at a time s | ranged GETs, all at once s "
        "| download whole + local reads s |",
        "| ---: | ---: | ---: | ---: | ---: | ---: |",
    ]
    for entry in hdf5["delays"]:
        for r in entry["rows"]:
            lines.append(
                f"| {entry['delay'] * 1e3:.0f} ms | {entry['latency'] * 1e3:.1f} ms | {r['fraction']:.0%} ({r['samples']}) "
                f"| {r['ranged_sequential']:.3f} | {r['ranged_concurrent']:.3f} | {r['download']:.3f} |"
            )
    lines.append("")
    for entry in hdf5["delays"]:
        one = _break_even(entry["break_even_ranged_sequential"], fractions)
        many = _break_even(entry["break_even_ranged_concurrent"], fractions)
        lines.append(f"- +{entry['delay'] * 1e3:.0f} ms: break-even, one at a time: {one}; all at once: {many}.")
    whole = [(e["delay"], e["rows"][-1]) for e in hdf5["delays"] if e["rows"][-1]["fraction"] == 1.0]
    if whole:
        verdicts = ", ".join(
            f"+{delay * 1e3:.0f} ms: " + ("the download" if r["download"] <= min(r["ranged_sequential"], r["ranged_concurrent"])
                                          else "ranged GETs") + " faster"
            for delay, r in whole
        )
        lines.append(f"- An epoch through ShardWindowSampler reads every sample of each shard it opens (100%): {verdicts}.")
    return lines


def goals(rows: list[dict[str, Any]]) -> list[str]:
    """The issue's two goals, with torchpack's figures."""
    lines = []
    for r in rows:
        if r["system"] != "torchpack" or r.get("error"):
            continue
        if r["pipeline"] == "link" and r.get("link_fraction") is not None:
            met = "met" if r["link_fraction"] >= COLD_GOAL else "not met"
            lines.append(f"- torchpack, cold epoch, link pipeline: {r['link_fraction']:.0%} of the link "
                         f"(goal >= {COLD_GOAL:.0%}: {met})")
            if r.get("sustained_link_fraction") is not None:
                lines.append(f"  - from the first body byte to the last: {r['sustained_link_fraction']:.0%}; the epoch's "
                             f"{r['cold_ends_seconds']:.2f} s before and after them (requests, workers, the last "
                             "shard's reads) weigh less on a larger store")
        met = "met" if r["warm_over_local"] >= WARM_GOAL else "not met"
        lines.append(f"- torchpack, warm epoch, {r['pipeline']} pipeline: {r['warm_over_local']:.2f} of local "
                     f"(goal >= {WARM_GOAL:.2f}: {met})")
    return lines


def render(report: dict[str, Any]) -> str:
    settings = report["settings"]
    parts = [
        f"# Reading from object storage: {settings['images']} images of {settings['tree']}, "
        f"{settings['workers']} DataLoader workers, batch {settings['batch']}, {settings['rounds']} round(s), medians",
        "",
        *server_table(report["server"]),
        "",
        "## Epochs from the bucket (cold: empty local cache; warm: the next epoch) and from local disk",
        "",
        *epoch_table(report["rows"]),
        "",
        "`link`: the stored bytes of each sample, nothing decoded (each system's cheapest read); `training`: "
        "decode + RandomResizedCrop(224) + flip. Fraction of the link: store bytes / cold epoch seconds / bandwidth; "
        "first to last byte: the same over the seconds from the server's first body byte of the epoch to its last.",
        "",
        *goals(report["rows"]),
    ]
    if report.get("hdf5"):
        parts += ["", "## HDF5: ranged reads without a download, against downloading the shard", "",
                  *hdf5_table(report["hdf5"], settings["fractions"])]
    elif report.get("hdf5_error"):
        parts += ["", f"HDF5 ranged reads: {report['hdf5_error']}"]
    return "\n".join(parts) + "\n"


def write(report: dict[str, Any], out: str) -> str:
    """Write ``remote.md`` and ``remote.json`` into ``out``; the Markdown."""
    os.makedirs(out, exist_ok=True)
    text = render(report)
    with open(os.path.join(out, "remote.md"), "w") as f:
        f.write(text)
    with open(os.path.join(out, "remote.json"), "w") as f:
        json.dump(report, f, indent=1)
    return text
