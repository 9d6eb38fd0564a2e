"""ImageFolder's contract (classes, class_to_idx, order, pixels, random access, len), checked on a system's output."""

from __future__ import annotations

from typing import Any

import numpy as np
import torch
from torchvision.datasets import ImageFolder

from suite.common import PIL_TRANSFORM

from .common import FIRST_K, TINY_PIPELINE, Route, dataset_probe

# Mean absolute difference (0-255) under which two outputs are "the same picture", re-encoded or
# resized differently; different pictures of the photo tree differ by far more.
SAME_PICTURE = 12.0


def collect_probe(route: Route, path: str, group: str, indices: list[int]) -> dict[str, Any]:
    """What the contract checks need from a route, as plain data (so a job interpreter can send it back)."""
    probe = route.probe(path) if route.probe else dataset_probe(route.dataset(path))
    out: dict[str, Any] = {
        "length": probe.length,
        "classes": probe.classes,
        "class_to_idx": probe.class_to_idx,
        "notes": list(probe.notes),
        "first": [],
        "random": None,
    }
    try:
        for image, target in probe.iterate():
            out["first"].append((torch.as_tensor(image).clone(), int(target)))
            if len(out["first"]) >= FIRST_K[group]:
                break
    except Exception as exc:
        out["first_error"] = f"{type(exc).__name__}: {exc}"
    if probe.getitem is not None:
        try:
            out["random"] = {}
            for i in indices:
                image, target = probe.getitem(i)
                out["random"][i] = (torch.as_tensor(image).clone(), int(target))
        except Exception as exc:
            out["random_error"] = f"{type(exc).__name__}: {exc}"
    return out


def reference(tree: str, group: str, indices: list[int]) -> dict[str, Any]:
    """ImageFolder's answers for the contract checks: attributes and the samples that will be compared."""
    folder = ImageFolder(tree, transform=PIL_TRANSFORM if group == "photo" else TINY_PIPELINE)
    wanted = sorted(set(range(FIRST_K[group])) | set(indices))
    return {
        "length": len(folder),
        "classes": folder.classes,
        "class_to_idx": folder.class_to_idx,
        "samples": {i: (folder[i][0], int(folder[i][1])) for i in wanted},
    }


def compare(got: tuple[torch.Tensor, int], want: tuple[torch.Tensor, int]) -> tuple[bool, float | None, float | None]:
    """(same label and same picture, max abs difference, mean abs difference); None when the shapes differ."""
    image, target = got
    if tuple(image.shape) != tuple(want[0].shape):
        return False, None, None
    diff = (image.to(torch.int16) - want[0].to(torch.int16)).abs()
    mean = float(diff.float().mean())
    return target == want[1] and mean <= SAME_PICTURE, float(diff.max()), mean


def contract(probe: dict[str, Any], ref: dict[str, Any]) -> dict[str, Any]:
    """Each of ImageFolder's promises, checked: True, False, or None where the system offers no such thing."""
    pairs = [(got, ref["samples"][i]) for i, got in enumerate(probe["first"])]
    randoms = probe.get("random") or {}
    pairs_random = [(got, ref["samples"][int(i)]) for i, got in randoms.items()]
    checks = [compare(g, w) for g, w in pairs + pairs_random]
    # Pixels are compared on the samples that are ImageFolder's (label and picture); where none is,
    # the order column says so and a pixel difference would only measure two different pictures.
    matched = [c for c in checks if c[0]]
    shapes_ok = bool(checks) and all(c[1] is not None for c in checks)
    # Sample order, two ways: the first samples of the system's own unshuffled iteration, and
    # dataset[i] at random i where it has random access, are ImageFolder's (same label and picture).
    iteration = all(c[0] for c in checks[: len(pairs)]) if pairs else None
    index = all(c[0] for c in checks[len(pairs):]) if pairs_random else None
    result: dict[str, Any] = {
        "classes": None if probe["classes"] is None else list(probe["classes"]) == list(ref["classes"]),
        "class_to_idx": None if probe["class_to_idx"] is None else dict(probe["class_to_idx"]) == dict(ref["class_to_idx"]),
        "order": None if iteration is None and index is None else bool(iteration is not False and index is not False),
        "order_iteration": iteration,
        "order_index": index,
        "pixels_max_abs": max(c[1] for c in matched) if shapes_ok and matched else None,
        "pixels_mean_abs": float(np.mean([c[2] for c in matched])) if shapes_ok and matched else None,
        "pixels_exact": bool(shapes_ok and matched and all(c[1] == 0 for c in matched)),
        "pixels_compared": len(matched),
        # dataset[i] answers for arbitrary i (whether it is ImageFolder's sample i is "order")
        "random_access": None if probe.get("random") is None and "random_error" not in probe else "random_error" not in probe,
        "len": None if probe["length"] is None else probe["length"] == ref["length"],
        "checked_samples": len(checks),
        "output": f"{probe['first'][0][0].dtype} {tuple(probe['first'][0][0].shape)}".replace("torch.", "") if probe["first"] else None,
        "notes": probe.get("notes", []),
    }
    for key in ("first_error", "random_error"):
        if key in probe:
            result[key] = probe[key]
    if checks and not shapes_ok:
        result["pixels_note"] = "output shape differs from ImageFolder's"
    elif checks and not matched:
        result["pixels_note"] = "no sample in ImageFolder's order to compare"
    return result
