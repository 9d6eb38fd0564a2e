"""The head-to-head summary: torchpack's best route against a peer's, like with like, for each pipeline."""

from __future__ import annotations

from typing import Any

from suite.common import SHORT_SIDE

from .common import LOSSLESS, REENCODED, TINY_DECODED, TRAINING, VALIDATION, Row
from .dali import TP_READY
from .ffcv import FFCV_QUALITY, FFCV_TRAIN_MAX_RESOLUTION
from .torchpack_routes import TP_TRAIN_LONG_SIDE

#: The comparisons of the validation summary: (title, group, kind).
MATCHUPS = (("photos, lossless", "photo", LOSSLESS), ("photos, re-encoded", "photo", REENCODED), ("tiny", "tiny", TINY_DECODED))
BASELINE = "ImageFolder"  # the baseline every ratio is against, not a peer
HEAD_TO_HEAD_TITLE = "Head to head (the best torchpack route against the best peer route, by images/s; ratio = torchpack / peer):"
TRAINING_TITLE = ("Head to head, training pipeline (RandomResizedCrop(224) + flip; the best torchpack route on the "
                  "store named against the peer route named; ratio = torchpack / peer):")
#: The training pipeline's comparisons: (title, torchpack's store or None for any lossless one, peer, peer's store).
TRAINING_MATCHUPS = (
    ("training, lossless: torchpack's lossless store vs DALI over the same files", None, "DALI", None),
    (f"training, training-ready store (q90, short side {SHORT_SIDE}) vs FFCV JPEG q{FFCV_QUALITY}, "
     f"max_resolution={FFCV_TRAIN_MAX_RESOLUTION}", TP_READY[1], "FFCV", f"jpg q{FFCV_QUALITY} max {FFCV_TRAIN_MAX_RESOLUTION}"),
    (f"training, the same pixel budget: torchpack's store with the long side capped at {TP_TRAIN_LONG_SIDE} (q90) vs FFCV JPEG "
     f"q{FFCV_QUALITY}, max_resolution={FFCV_TRAIN_MAX_RESOLUTION}", f"lmdb reencode l{TP_TRAIN_LONG_SIDE}", "FFCV",
     f"jpg q{FFCV_QUALITY} max {FFCV_TRAIN_MAX_RESOLUTION}"),
    ("training, training-ready store vs DALI over the same re-encoded files (exported from it)", TP_READY[1], "DALI",
     "tree exported from torchpack's training-ready store"),
)


def best(rows: list[Row]) -> Row | None:
    """The measured row with the most images/s, or None."""
    measured = [r for r in rows if r.rate is not None]
    return max(measured, key=lambda r: r.rate) if measured else None


def matchup(title: str, ours: Row | None, theirs: Row | None, **extra: Any) -> dict[str, Any]:
    """One line of the summary: both routes, their rates, the ratio torchpack / peer and the winner."""
    entry: dict[str, Any] = {"comparison": title, **extra}
    for side, row in (("torchpack", ours), ("peer", theirs)):
        entry[side] = None if row is None else row.label
        entry[f"{side}_rate"] = None if row is None else row.rate
        entry[f"{side}_cpu_rate"] = None if row is None else row.cpu_rate
        entry[f"{side}_cap"] = None if row is None else row.cap
        entry[f"{side}_stored_megapixels"] = None if row is None else row.stored_megapixels
    if ours is None or theirs is None:
        entry["ratio"] = entry["cpu_ratio"] = None
        entry["winner"] = "no peer measured" if ours else "no torchpack route measured" if theirs else "nothing measured"
    else:
        entry["ratio"] = ours.rate / theirs.rate
        entry["cpu_ratio"] = ours.cpu_rate / theirs.cpu_rate if ours.cpu_rate and theirs.cpu_rate else None
        entry["winner"] = "torchpack" if ours.rate > theirs.rate else "peer" if ours.rate < theirs.rate else "tie"
    return entry


def head_to_head(rows: list[Row]) -> list[dict[str, Any]]:
    """Validation pipeline: for each (group, kind) of MATCHUPS, the best torchpack route against the best peer route.

    Re-encoded photos get a line per kind of store (JPEG, decoded pixels): the best peer route of
    that kind against torchpack's of the same kind whose stored megapixels are closest (the first
    line may set a small store of ours against a larger one of theirs).
    """
    rows = [r for r in rows if r.pipeline == VALIDATION]
    summary = []
    for title, group, kind in MATCHUPS:
        part = [r for r in rows if r.group == group and r.kind == kind]
        mine = [r for r in part if r.system == "torchpack"]
        theirs = best([r for r in part if r.system not in ("torchpack", BASELINE)])
        if not mine and theirs is None:
            continue
        summary.append(matchup(title, best(mine), theirs, group=group, kind=kind))
        if kind != REENCODED:
            continue
        # Like with like: each kind of store a peer re-encodes to (JPEG, decoded pixels) against
        # torchpack's of the same kind at the nearest pixel budget.
        for holds, what in (("jpeg", "JPEG stores"), ("pixels", "decoded-pixel stores")):
            peer = best([r for r in part if r.system not in ("torchpack", BASELINE) and r.holds == holds])
            budget = [r for r in mine if r.holds == holds and r.rate is not None and r.stored_megapixels is not None]
            if peer is None or peer.stored_megapixels is None or not budget:
                continue
            closest = min(abs(r.stored_megapixels - peer.stored_megapixels) for r in budget)
            near = best([r for r in budget if abs(r.stored_megapixels - peer.stored_megapixels) == closest])
            summary.append(matchup(f"{title}, {what} at a comparable pixel budget", near, peer, group=group, kind=kind))
    return summary


def training_head_to_head(rows: list[Row]) -> list[dict[str, Any]]:
    """Training pipeline: each of TRAINING_MATCHUPS, where either side has a row in this run."""
    rows = [r for r in rows if r.pipeline == TRAINING and r.group == "photo"]
    summary = []
    for title, store, system, peer_store in TRAINING_MATCHUPS:
        mine = [r for r in rows if r.system == "torchpack" and (r.store == store if store else r.kind == LOSSLESS)]
        theirs = [r for r in rows if r.system == system and r.store == peer_store]
        if mine or theirs:
            summary.append(matchup(title, best(mine), best(theirs), group="photo", pipeline=TRAINING))
    return summary


def head_to_head_lines(summary: list[dict[str, Any]]) -> list[str]:
    """The summary as Markdown bullets (also printed)."""

    def side(entry: dict[str, Any], who: str) -> str:
        if entry[who] is None:
            return "none measured"
        size = entry[f"{who}_stored_megapixels"]  # None for tiny images
        store = "" if size is None else f" [{entry[f'{who}_cap'] or 'full size'}, {size:.2f} MP stored]"
        cpu = entry.get(f"{who}_cpu_rate")
        return f"{entry[who]}{store}: {entry[f'{who}_rate']:,.0f} img/s" + ("" if cpu is None else f", {cpu:,.0f} img/CPU-s")

    lines = []
    for e in summary:
        verdict = f"{e['ratio']:.2f}x, {e['winner']} wins" if e["ratio"] is not None else e["winner"]
        if e.get("cpu_ratio") is not None:
            verdict += f" (per CPU-second {e['cpu_ratio']:.2f}x)"
        lines.append(f"- {e['comparison']}: {side(e, 'torchpack')} vs {side(e, 'peer')}: {verdict}")
    return lines
