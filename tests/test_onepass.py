"""Screening and extraction in one decode pass (pipeline/extraction/onepass.py): the same pixel-rule results
as a pass of their own, features written only for a clip the rules keep, and each clip decoded
once (frames out of the codec, pipeline/core/decode.py's counter)."""

from __future__ import annotations

import json

import pyarrow.parquet as pq
import pytest

from pipeline.core.placement import Placement
from pipeline.core.provenance import sha256_file
from pipeline.extraction import stage as extraction
from pipeline.extraction.onepass import one_pass_on, screen_and_extract
from pipeline.ingest.probe import probe
from pipeline.screening.stage import PixelRules
from tests.realdata import SHARED

# few sampled frames and a small pose grid: the point is the pass, not the thresholds
CONFIG = {"pose": {"fps": 5.0, "max_side": 256}, "visual": {"max_frames": 6}}


def _clip(name: str) -> dict:
    path = SHARED / "clips" / name
    found = probe(path)
    return {
        "clip_id": sha256_file(path),
        "path": str(path),
        "duration_s": found.duration_s,
        "frames": found.frame_count,
    }


def _results(work, clip) -> list[dict]:
    rules = PixelRules(CONFIG, work, thumbnails=True, placement=Placement())
    return [{"rule": r.rule, "passed": r.passed, "details": r.details} for r in rules.cached(clip["clip_id"])]


@pytest.mark.slow
@pytest.mark.parametrize(("name", "kept"), [("tfjs_pose_1.mp4", True), ("tokenflow_woman-running.mp4", False)])
def test_one_pass_screens_as_two_passes_and_decodes_once(tmp_path, name, kept):
    clip = _clip(name)
    plan = extraction.plan_extraction(["pose"], CONFIG, placement=Placement())
    # two passes: the pixel rules on their own, then (when kept) the extraction
    apart = tmp_path / "apart"
    rules = PixelRules(CONFIG, apart, thumbnails=True, placement=plan.placement)
    results, computed = rules.run(clip)
    assert computed and all(r.passed for r in results) is kept
    # one pass
    together = tmp_path / "together"
    done = screen_and_extract(together, clip, CONFIG, plan)
    assert done["computed"] and done["passed"] is kept
    assert json.dumps(_results(together, clip), sort_keys=True, default=str) == json.dumps(
        _results(apart, clip), sort_keys=True, default=str
    )
    # the screening pass alone decodes the whole clip; the one pass decodes it once for both
    assert rules.decoded_frames == clip["frames"]
    assert done["decoded_frames"] == clip["frames"]
    shards = list((together / "features" / "pose").glob("*.parquet"))
    if kept:
        (item,) = done["items"]
        assert item["status"] == extraction.COMPUTED and item["decoded_frames"] == clip["frames"]
        assert len(shards) == 1 and pq.read_metadata(shards[0]).num_rows > 0
    else:  # the rejected clip's features were computed and discarded: nothing written
        assert done["items"] is None and shards == []
    # a second call reuses the stored rules and decodes nothing
    again = screen_and_extract(together, clip, CONFIG, plan)
    assert (again["computed"], again["decoded_frames"], again["passed"]) == (False, 0, kept)


def test_one_pass_is_on_with_cuda_unless_configured():
    gpu, cpu = Placement(device="cuda"), Placement(device="cpu")
    assert one_pass_on({}, gpu) and not one_pass_on({}, cpu)
    assert one_pass_on({"extract": {"one_pass": True}}, cpu)
    assert not one_pass_on({"extract": {"one_pass": False}}, gpu)


def test_the_build_report_says_decoded_frames_per_kept_clip():
    from pipeline.core.decode import decoded_per_clip
    from pipeline.report.render import decoding_html

    clips = [
        {"clip_id": "a", "frame_count": 300},  # decoded once
        {"clip_id": "b", "frame_count": 300},  # screened, then extracted: twice
        {"clip_id": "c", "frame_count": 10},  # everything reused: nothing decoded
    ]
    found = decoded_per_clip({"a": 300, "b": 600}, clips)
    assert found == {
        "clips": 2,
        "not_decoded": 1,
        "decoded_frames": 900,
        "frame_count": 600,
        "ratio": 1.5,
        "max_ratio": 2.0,
    }
    html = decoding_html({"decoding": {**found, "one_pass": False}})
    assert "<b>1.50x</b>" in html and "worst clip 2.00x" in html and "1 reused" in html
    assert decoding_html({}) == ""
