"""Virality scores against values computed by hand (SPEC section 3, paper eq. 1-2)."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import pytest
from conftest import SAMPLE_CRAWL_TIME, SCRAPER_SAMPLE

from pipeline.core import tables
from pipeline.core.config import ConfigError
from pipeline.ingest.metadata import read_metadata_file
from pipeline.scoring.virality import (
    ChallengeScale,
    ScoreConfig,
    existing_days,
    normalise,
    raw_score,
    read_scale,
    score_clips,
)

CREATED = datetime(2021, 1, 1, tzinfo=UTC)


def _clip(clip_id, days, likes=100, comments=10, reposts=5, challenge="#a"):
    return {
        "clip_id": clip_id,
        "video_id": clip_id,
        "challenge": challenge,
        "likes": likes,
        "comments": comments,
        "reposts": reposts,
        "create_time": CREATED,
        "crawl_time": CREATED + timedelta(days=days),
    }


# L + C + R + 1 = 100 + 10 + 5 + 1 = 116 throughout; values by hand:
#   T = 0.5 d -> clipped to 1: ln(116)      = 4.753590191106
#   T = 3.5 d -> kept:         ln(116/3.5)  = 3.500827222611
#   T = 7.0 d -> kept:         ln(116/7)    = 2.807680042051
#   T = 30  d -> clipped to 7: ln(116/7)    = 2.807680042051
@pytest.mark.parametrize(
    ("days", "expected"),
    [
        (0.5, 4.753590191106),
        (1.0, 4.753590191106),
        (3.5, 3.500827222611),
        (7.0, 2.807680042051),
        (30.0, 2.807680042051),
    ],
)
def test_raw_score_by_hand(days, expected):
    assert raw_score(100, 10, 5, days) == pytest.approx(expected, abs=1e-9)


def test_weights_and_clipping_bounds_are_configurable():
    # 2*100 + 10 + 5 + 1 = 216 -> ln(216) = 5.375278407684
    assert raw_score(100, 10, 5, 0.2, ScoreConfig(like_weight=2.0)) == pytest.approx(5.375278407684, abs=1e-9)
    # t_max 14: T = 10 is kept -> ln(116 / 10) = 2.451005098112
    assert raw_score(100, 10, 5, 10.0, ScoreConfig(t_max_days=14.0)) == pytest.approx(2.451005098112, abs=1e-9)
    with pytest.raises(ValueError):
        ScoreConfig(t_min_days=8.0)


def test_existing_days():
    assert existing_days(CREATED, CREATED + timedelta(hours=36)) == 1.5


def test_min_max_per_challenge_over_kept_clips_by_hand():
    clips = [
        _clip("young", 0.5),  # 4.753590191106 (max of #a)
        _clip("mid", 3.5),  # 3.500827222611
        _clip("old", 30.0),  # 2.807680042051 (min of #a)
        _clip("rejected", 0.5, likes=10**9),  # not kept: must not set the scale
        _clip("solo", 2.0, challenge="#b"),
    ]
    result = score_clips(clips, kept=["young", "mid", "old", "solo"])
    scores = {row["clip_id"]: row for row in result.rows}
    assert set(scores) == {"young", "mid", "old", "solo"}
    assert scores["young"]["score"] == 1.0 and scores["old"]["score"] == 0.0
    # (3.500827222611 - 2.807680042051) / (4.753590191106 - 2.807680042051) = 0.356207...
    assert scores["mid"]["score"] == pytest.approx(0.693147180560 / 1.945910149055, abs=1e-9)
    assert scores["mid"]["existing_days"] == 3.5 and scores["young"]["existing_days"] == 0.5
    assert not any(row["out_of_scale"] for row in result.rows)
    # a challenge whose raw scores are all equal: 0.5 and a warning
    assert scores["solo"]["score"] == 0.5 and scores["solo"]["degenerate_challenge"] is True
    assert len(result.warnings) == 1 and "#b" in result.warnings[0]
    assert result.scale["#a"] == ChallengeScale("#a", pytest.approx(2.807680042051), pytest.approx(4.753590191106), 3)


def test_new_clips_on_a_stored_scale_are_clipped_and_flagged(tmp_path):
    fitted = score_clips([_clip("a", 1.0), _clip("b", 7.0)], output_dir=tmp_path)
    scale = read_scale(tmp_path, ScoreConfig())
    assert scale == fitted.scale
    assert read_scale(tables.shard_path(tmp_path, "score_scale", 0), ScoreConfig()) == scale
    new = [
        _clip("above", 1.0, likes=10_000),  # raw above the stored max
        _clip("below", 7.0, likes=1, comments=0, reposts=0),  # below the min
        _clip("inside", 3.5),
        _clip("other", 2.0, challenge="#unknown"),
    ]
    result = score_clips(new, scale=scale)
    rows = {row["clip_id"]: row for row in result.rows}
    assert (rows["above"]["score"], rows["above"]["out_of_scale"]) == (1.0, True)
    assert (rows["below"]["score"], rows["below"]["out_of_scale"]) == (0.0, True)
    assert rows["inside"]["out_of_scale"] is False
    assert rows["inside"]["score"] == pytest.approx(0.693147180560 / 1.945910149055, abs=1e-9)
    assert [(r["clip_id"], r["reason"], r["stage"]) for r in result.rejections] == [("other", "no_scale", "score")]
    assert any("outside the stored scale" in w for w in result.warnings)


def test_stored_scale_must_match_the_score_configuration(tmp_path):
    score_clips([_clip("a", 1.0), _clip("b", 7.0)], output_dir=tmp_path)
    with pytest.raises(ConfigError, match="fitted with"):
        read_scale(tmp_path, ScoreConfig(t_max_days=14.0))
    with pytest.raises(FileNotFoundError):
        read_scale(tmp_path / "nowhere.parquet", ScoreConfig())


def test_degenerate_stored_scale():
    scale = ChallengeScale("#a", 3.0, 3.0, 1)
    assert normalise(3.0, scale) == (0.5, False)
    assert normalise(3.5, scale) == (1.0, True)
    assert normalise(2.5, scale) == (0.0, True)


def test_real_metadata_sample_by_hand():
    records, _ = read_metadata_file(SCRAPER_SAMPLE, crawl_time=SAMPLE_CRAWL_TIME)
    clips = [
        {
            "clip_id": r.video_id,
            "video_id": r.video_id,
            "challenge": "#sample",
            "likes": r.likes,
            "comments": r.comments,
            "reposts": r.reposts,
            "create_time": r.create_time,
            "crawl_time": r.crawl_time,
        }
        for r in records
    ]
    rows = {row["clip_id"]: row for row in score_clips(clips).rows}
    newest = rows["6911379416308305158"]  # 4165 likes, 58 comments, 117 reposts, created 2020-12-28 18:42:13
    assert newest["existing_days"] == pytest.approx(8.881667, abs=1e-6)  # older than a week: T clipped to 7
    assert newest["raw_score"] == pytest.approx(6.429949866244, abs=1e-9)  # ln(4341 / 7)
    top = rows["6894714574797393158"]  # 1,500,000 + 4,369 + 6,270 + 1 = 1,510,640
    assert top["raw_score"] == pytest.approx(12.282133811000, abs=1e-9) and top["score"] == 1.0
    low = rows["6894420219100417286"]  # 2,248 + 26 + 3 + 1 = 2,278
    assert low["raw_score"] == pytest.approx(5.785142994952, abs=1e-9) and low["score"] == 0.0
    # (6.429949866244 - 5.785142994952) / (12.282133811000 - 5.785142994952)
    assert newest["score"] == pytest.approx(0.644806871292 / 6.496990816048, abs=1e-9)


def test_real_records_younger_than_a_day_and_within_the_week():
    records, _ = read_metadata_file(SCRAPER_SAMPLE)
    first = records[0]  # created 2020-12-28 18:42:13
    half_day = first.create_time + timedelta(hours=12)
    three_days = first.create_time + timedelta(days=3)
    clip = {
        "clip_id": "x",
        "likes": first.likes,
        "comments": first.comments,
        "reposts": first.reposts,
        "challenge": "#s",
        "create_time": first.create_time,
    }
    young = score_clips([{**clip, "crawl_time": half_day}]).rows[0]
    assert young["existing_days"] == 0.5 and young["raw_score"] == pytest.approx(
        8.375860015300, abs=1e-9
    )  # ln(4341 / 1)
    mid = score_clips([{**clip, "crawl_time": three_days}]).rows[0]
    assert mid["existing_days"] == 3.0 and mid["raw_score"] == pytest.approx(7.277247726631, abs=1e-9)  # ln(4341 / 3)
