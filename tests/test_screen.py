"""Screening: cheap rules, every failing reason, overrides, and the plug-in point of pixel rules."""

from __future__ import annotations

import json

import pytest
from conftest import ROOT, SAMPLE_FOLLOWERS, SCRAPER_SAMPLE, SHARED_CLIPS

from pipeline.core import tables
from pipeline.core.config import stage_config
from pipeline.core.errors import ClipError, Reason
from pipeline.ingest.stage import IngestConfig, prepare_clips
from pipeline.screening.rules import RuleResult
from pipeline.screening.stage import Override, ScreenConfig, read_overrides, screen_clip, screen_clips


def _clip(clip_id="c" * 64, video_id="v1", followers=500, duration=10.0, path="/x/v1.mp4"):
    return {
        "clip_id": clip_id,
        "video_id": video_id,
        "uploader_followers": followers,
        "duration_s": duration,
        "path": path,
    }


def test_default_rule_rejects_the_real_sample_creator(make_raw):
    """The demo turns the follower rule off; the default (1,000) must reject this creator."""
    raw = make_raw({"6911379416308305158.mp4": SHARED_CLIPS / "stgcn_ta_chi.mp4"}, {})
    (raw / "metadata" / "thebigbradwolf_1609948309033.json").symlink_to(SCRAPER_SAMPLE)
    (clip,) = prepare_clips(raw, config=IngestConfig(challenge_rule="music_id")).clips
    assert clip["uploader_followers"] == SAMPLE_FOLLOWERS
    result = screen_clips([clip], ScreenConfig())
    (row,) = result.rows
    assert row["kept"] is False and row["reasons"] == [Reason.TOO_MANY_FOLLOWERS.value]
    assert result.rejections[0]["reason"] == "too_many_followers"
    assert json.loads(row["details"])["followers"] == {"passed": False, "followers": 398_700, "max_followers": 1000}
    # the demo's configuration disables the rule and the run says so
    demo = stage_config(ScreenConfig, {"screen": {"max_followers": 0}}, "screen")
    result = screen_clips([clip], demo)
    assert result.rows[0]["kept"] is True and result.rows[0]["rules_evaluated"] == ["duration"]
    assert any("follower rule DISABLED" in note for note in result.notes)


def test_demo_config_turns_the_follower_rule_off():
    from pipeline.sections import load_config

    config = stage_config(ScreenConfig, load_config(ROOT / "data" / "demo" / "config.toml"), "screen")
    assert config.max_followers == 0 and not config.follower_rule_on


def test_every_failing_reason_is_recorded():
    row = screen_clip(_clip(followers=5000, duration=3.0), ScreenConfig())
    assert row["reasons"] == ["too_many_followers", "too_short"]
    assert row["rules_evaluated"] == ["followers", "duration"]
    assert row["kept"] is False and row["automatic_kept"] is False


@pytest.mark.parametrize(
    ("duration", "config", "reasons"),
    [
        (4.99, ScreenConfig(), ["too_short"]),
        (5.0, ScreenConfig(), []),
        (60.0, ScreenConfig(), []),
        (60.01, ScreenConfig(), ["too_long"]),
        (139.3, ScreenConfig(max_duration_s=0), []),  # 0 disables the upper bound
        (20.0, ScreenConfig(max_duration_s=15.0), ["too_long"]),
        (None, ScreenConfig(), ["too_short"]),
    ],
)
def test_duration_bounds(duration, config, reasons):
    assert screen_clip(_clip(duration=duration), config)["reasons"] == reasons


def test_followers_at_the_limit_and_unknown():
    assert screen_clip(_clip(followers=1000), ScreenConfig())["kept"] is True
    assert screen_clip(_clip(followers=1001), ScreenConfig())["reasons"] == ["too_many_followers"]
    assert screen_clip(_clip(followers=None), ScreenConfig())["reasons"] == ["unknown_followers"]
    assert screen_clip(_clip(followers=None), ScreenConfig(max_followers=None))["kept"] is True


def test_overrides_win_both_ways(tmp_path):
    path = tmp_path / "overrides.csv"
    path.write_text(
        "id,decision,note\n" + "a" * 64 + ",reject,looks staged\nv2,KEEP,reviewer: one dancer\nnobody,keep,\n"
    )
    overrides = read_overrides(path)
    assert overrides["v2"] == Override("keep", "reviewer: one dancer")
    clips = [_clip(clip_id="a" * 64, video_id="v1"), _clip(clip_id="b" * 64, video_id="v2", duration=2.0)]
    result = screen_clips(clips, ScreenConfig(), overrides=overrides)
    by_id = {row["video_id"]: row for row in result.rows}
    assert by_id["v1"]["automatic_kept"] is True and by_id["v1"]["kept"] is False
    assert by_id["v1"]["reasons"] == ["override_reject"] and by_id["v1"]["override_note"] == "looks staged"
    assert by_id["v2"]["automatic_kept"] is False and by_id["v2"]["kept"] is True
    assert by_id["v2"]["reasons"] == ["too_short"] and by_id["v2"]["override"] == "keep"
    assert [r["video_id"] for r in result.rejections] == ["v1"]
    assert any("nobody" in note for note in result.notes)


def test_override_file_errors_and_the_example(tmp_path):
    bad = tmp_path / "bad.csv"
    bad.write_text("id,decision\nv1,maybe\n")
    with pytest.raises(ValueError, match="keep or reject"):
        read_overrides(bad)
    bad.write_text("clip,verdict\nv1,keep\n")
    with pytest.raises(ValueError, match="needs columns"):
        read_overrides(bad)
    example = read_overrides(ROOT / "data" / "overrides.example.csv")
    assert {o.decision for o in example.values()} == {"keep", "reject"}


def test_pixel_rules_plug_in_after_the_cheap_rules():
    calls = []

    def fake_visual(clip):
        clip_id = clip["clip_id"]
        calls.append(clip_id)
        if clip_id.startswith("two"):
            return [
                RuleResult("one_dancer", False, [Reason.MULTIPLE_PEOPLE], {"people_share": 0.8}),
                RuleResult("upper_body_visible", True, [], {"min_conf": 0.9}),
            ]
        if clip_id.startswith("bad"):
            raise ClipError(clip_id, Reason.UNREADABLE, "cannot decode")
        if clip_id.startswith("bug"):
            raise RuntimeError("pose model exploded")
        return [RuleResult("one_dancer", True, [], {}), RuleResult("upper_body_visible", True, [], {})]

    clips = [
        _clip(clip_id="one" + "0" * 61, video_id="one"),
        _clip(clip_id="two" + "0" * 61, video_id="two"),
        _clip(clip_id="short" + "0" * 59, video_id="short", duration=2.0),
        _clip(clip_id="bad" + "0" * 61, video_id="bad"),
        _clip(clip_id="bug" + "0" * 61, video_id="bug"),
    ]
    result = screen_clips(clips, ScreenConfig(), visual=fake_visual)
    assert "short" not in {c[:5] for c in calls} and len(calls) == 4  # pixels only after cheap rules pass
    rows = {row["video_id"]: row for row in result.rows}
    assert rows["one"]["kept"] and rows["one"]["rules_evaluated"] == [
        "followers",
        "duration",
        "one_dancer",
        "upper_body_visible",
    ]
    assert rows["two"]["reasons"] == ["multiple_people"]
    assert json.loads(rows["two"]["details"])["one_dancer"] == {"passed": False, "people_share": 0.8}
    assert rows["short"]["rules_evaluated"] == ["followers", "duration"]
    assert rows["bad"]["reasons"] == ["unreadable_video"] and rows["bug"]["reasons"] == ["extract_failed"]
    assert not any("NOT evaluated" in note for note in result.notes)


def test_screening_tables_written(tmp_path):
    clips = [_clip(clip_id="a" * 64, video_id="a"), _clip(clip_id="b" * 64, video_id="b", duration=70.0)]
    result = screen_clips(clips, ScreenConfig(), output_dir=tmp_path)
    assert any("NOT evaluated" in note for note in result.notes)
    screening = tables.read_table(tmp_path, tables.SCREENING).to_pylist()
    assert [(r["video_id"], r["kept"], r["reasons"]) for r in screening] == [
        ("a", True, []),
        ("b", False, ["too_long"]),
    ]
    rejected = tables.read_file(tables.shard_path(tmp_path, "rejections", "screen"), tables.REJECTIONS).to_pylist()
    assert [(r["stage"], r["video_id"], r["reason"]) for r in rejected] == [("screen", "b", "too_long")]


def test_pixel_rules_are_stored_per_clip_and_reused_while_clip_settings_and_code_are_unchanged(tmp_path):
    from pathlib import Path

    from pipeline.core.provenance import sha256_file
    from pipeline.screening.stage import PixelRules

    path = Path(__file__).resolve().parents[1].parent / "shared" / "data" / "clips" / "tfjs_pose_1.mp4"
    clip = {"clip_id": sha256_file(path), "path": str(path), "duration_s": 4.0}
    config = {"visual": {"max_frames": 6}}
    results, computed = PixelRules(config, tmp_path).run(clip)
    assert computed and [r.rule for r in results] == ["one_dancer", "upper_body_visible", "camera_motion"]
    shards = sorted((tmp_path / "pixel_rules").rglob("*.parquet"))  # fanned out by clip id
    assert len(shards) == 1 and shards[0].name.startswith(f"pixel_rules.{clip['clip_id'][:16]}.")
    assert shards[0].parent.name == clip["clip_id"][:2]
    again, computed = PixelRules(config, tmp_path).run(clip)  # a new process would see the same
    assert not computed and [(r.rule, r.passed, r.reasons, r.details) for r in again] == [
        (r.rule, r.passed, r.reasons, r.details) for r in results
    ]
    changed = PixelRules({"visual": {"max_frames": 5}}, tmp_path)
    assert changed.identity(clip["clip_id"]) != PixelRules(config).identity(clip["clip_id"])
    _, computed = changed.run(clip)
    assert computed and len(list((tmp_path / "pixel_rules").rglob("*.parquet"))) == 1  # the stale shard replaced
