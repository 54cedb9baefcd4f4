"""Screening and extraction of a clip in one decode pass: the node build's way to decode each kept
clip once (docs/PLACEMENT.md, "One decode per kept clip").

A build screens a clip with its pixel rules (3 frames a second, at most 24) and then, if the clip
is kept, extracts its features; each decodes the clip whole (a sampled frame still needs every
frame before it decoded), so a kept clip is decoded twice. :func:`screen_and_extract` runs both
on one :func:`pipeline.core.decode.decode_pass`: the pixel rules' grid rides along the extraction
grids (:class:`pipeline.extraction.stage.Rider`), every modality's consumer is fed as usual, and once
the pass is over the pixel rules judge the sampled frames. Features are written only when the
rules pass; a rejected clip's are discarded (never written, never counted). The sampled frames
are the ones a pass of their own yields (a grid's samples do not depend on the other grids of a
pass), so the screening decisions are the same either way.

The price is the network work spent on clips the pixel rules then reject. It pays where decoding,
not the networks, bounds the build: a GPU node, where the networks run at thousands of frames a
second and 16 cores decode about 1,400 grid frames/s of 1080p. On the CPU the networks cost far
more than a decode (the demo's holistic, facial and scenic extractors), so ``[extract] one_pass =
"auto"`` (default) is on exactly when the run's placement is on CUDA; ``true`` or ``false`` choose.
"""

from __future__ import annotations

import time
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from pipeline.core.errors import ClipError
from pipeline.core.placement import Placement
from pipeline.extraction import stage as extraction
from pipeline.screening import visual
from pipeline.screening.stage import PixelRules

ONE_PASS = ("auto", True, False)


def one_pass_on(config: Mapping[str, Any], placement: Placement) -> bool:
    """Whether a build screens and extracts in one pass (``[extract] one_pass``, module docstring)."""
    setting = extraction.extract_config(config).one_pass
    return placement.cuda if setting == "auto" else bool(setting)


def screen_and_extract(
    work: str | Path, clip: Mapping[str, Any], config: Mapping[str, Any], plan: extraction.ExtractionPlan
) -> dict:
    """The pixel rules of ``clip`` and, when they pass, every modality of ``plan``, from one pass.

    Returns ``clip_id``, ``computed`` (the pixel rules ran now), ``passed``, ``decoded_frames``
    (frames out of the codec for it here) and ``items``: the extraction's item dicts when the rules
    passed and the features were extracted here, else None (stored rules are reused as they are;
    a clip whose shards are all current, or whose file is gone, is screened on its own).
    """
    pixels = PixelRules(config, work, thumbnails=True, placement=plan.placement)
    out = {"clip_id": clip["clip_id"], "computed": False, "passed": None, "decoded_frames": 0, "items": None}
    found = pixels.cached(clip["clip_id"])
    if found is not None:
        return {**out, "passed": all(r.passed for r in found)}
    extractors = extraction.load_extractors(plan)
    stale = [m for m, ex in extractors.items() if not ex.is_current(work, clip["clip_id"])]
    if not stale or not Path(clip["path"]).is_file():
        results, _ = pixels.run(clip)
        return {
            **out,
            "computed": True,
            "passed": all(r.passed for r in results),
            "decoded_frames": pixels.decoded_frames,
        }
    sampled = visual.SampledFrames(clip["path"], pixels.config, clip.get("duration_s"))
    verdict: dict[str, bool] = {}
    t0 = time.monotonic()

    def finish(error: ClipError | None) -> bool:
        results = pixels.judge(clip, sampled, error, time.monotonic() - t0)
        verdict["passed"] = all(r.passed for r in results)
        return verdict["passed"]

    items = extraction.extract_clip(
        clip,
        extractors,
        work,
        decode=extraction.decode_config(config),
        rider=extraction.Rider(sampled.params, sampled.push, finish),
    )
    passed = verdict["passed"]
    return {
        **out,
        "computed": True,
        "passed": passed,
        "decoded_frames": max(it.decoded_frames for it in items),
        "items": [it.as_dict() for it in items] if passed else None,
    }
