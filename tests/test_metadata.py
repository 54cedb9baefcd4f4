"""Metadata readers: the real tiktok-scraper sample, CSV/JSONL columns, crawl time, challenges."""

from __future__ import annotations

import shutil
from datetime import UTC, datetime

import pytest
from conftest import SAMPLE_CRAWL_TIME, SAMPLE_FOLLOWERS, SCRAPER_SAMPLE

from pipeline.core.errors import ClipError, Reason
from pipeline.ingest.metadata import (
    GENERIC_HASHTAGS,
    MetadataRecord,
    check_record,
    derive_challenge,
    parse_crawl_stamp,
    parse_time,
    read_metadata_file,
    split_hashtags,
)


def test_crawl_stamp_from_crawler_file_name():
    assert parse_crawl_stamp("thebigbradwolf_1609948309033.json") == datetime(2021, 1, 6, 15, 51, 49, 33000, tzinfo=UTC)
    assert parse_crawl_stamp("/x/y/user.name_1609948309033.json") == SAMPLE_CRAWL_TIME
    # no stamp, too short a number, or a stamp not at the end of the stem
    assert parse_crawl_stamp("tiktok_scraper_sample.json") is None
    assert parse_crawl_stamp("user_160994830903.json") is None
    assert parse_crawl_stamp("user_1609948309033_extra.json") is None


def test_parse_time_forms():
    expected = datetime(2021, 1, 6, 15, 51, 49, tzinfo=UTC)
    assert parse_time("2021-01-06T15:51:49Z") == expected
    assert parse_time("2021-01-06T16:51:49+01:00") == expected
    assert parse_time("2021-01-06 15:51:49") == expected  # naive = UTC
    assert parse_time(1609948309) == expected
    assert parse_time("1609948309000") == expected  # milliseconds
    assert parse_time("") is None and parse_time(None) is None
    with pytest.raises(ValueError):
        parse_time("yesterday")


def test_real_scraper_sample_fields():
    records, problems = read_metadata_file(SCRAPER_SAMPLE)
    assert problems == []
    assert len(records) == 65
    assert len({r.video_id for r in records}) == 65
    assert len({r.music_id for r in records}) == 55
    first = records[0]
    assert first.video_id == "6911379416308305158"
    assert (first.likes, first.comments, first.reposts, first.plays) == (4165, 58, 117, 18800)
    assert first.followers == SAMPLE_FOLLOWERS
    assert first.uploader_id == "6744808547165799429"
    assert first.music_id == "6911379433966357253"
    assert first.hashtags == ("fyp", "harrystyles")
    assert first.create_time == datetime(2020, 12, 28, 18, 42, 13, tzinfo=UTC)
    # the renamed sample carries no stamp and the records no crawl time: never "now"
    assert all(r.crawl_time is None and r.crawl_time_source is None for r in records)
    assert all(r.followers == SAMPLE_FOLLOWERS for r in records)


def test_crawl_time_order_option_then_file_stamp(tmp_path):
    stamped = tmp_path / "thebigbradwolf_1609948309033.json"
    shutil.copyfile(SCRAPER_SAMPLE, stamped)
    records, _ = read_metadata_file(stamped)
    assert {(r.crawl_time, r.crawl_time_source) for r in records} == {(SAMPLE_CRAWL_TIME, "file_name")}
    option = datetime(2021, 2, 1, tzinfo=UTC)
    records, _ = read_metadata_file(stamped, crawl_time=option)
    assert {(r.crawl_time, r.crawl_time_source) for r in records} == {(option, "option")}


def test_csv_columns_and_explicit_crawl_time_wins(tmp_path):
    path = tmp_path / "records_1609948309033.csv"
    path.write_text(
        "video_id,challenge,likes,comments,reposts,create_time,crawl_time,followers,hashtags,music_id\n"
        "v1,#wipeitdown,10,2,1,2021-01-01T00:00:00Z,2021-01-03T12:00:00Z,500,#fyp #wipeitdown,m1\n"
        "v2,,5,0,0,1609459200,,800,,\n"
        "v3,,many,0,0,2021-01-01,,1,,\n"
        ",,1,1,1,2021-01-01,,1,,\n"
    )
    records, problems = read_metadata_file(path, crawl_time=datetime(2021, 1, 5, tzinfo=UTC))
    assert [r.video_id for r in records] == ["v1", "v2"]
    v1, v2 = records
    assert v1.crawl_time == datetime(2021, 1, 3, 12, tzinfo=UTC) and v1.crawl_time_source == "column"
    assert v1.challenge == "#wipeitdown" and v1.challenge_source == "column"
    assert v1.hashtags == ("fyp", "wipeitdown") and v1.followers == 500
    assert v2.crawl_time == datetime(2021, 1, 5, tzinfo=UTC) and v2.crawl_time_source == "option"
    assert v2.create_time == datetime(2021, 1, 1, tzinfo=UTC) and v2.challenge is None
    assert [(p.video_id, "record 2" in p.message) for p in problems] == [("v3", True), (None, False)]


def test_jsonl_and_unreadable_file(tmp_path):
    path = tmp_path / "a.jsonl"
    path.write_text(
        '{"video_id": "v9", "likes": 1, "comments": 2, "reposts": 3, "create_time": "2021-01-01", "followers": 7}\n'
    )
    records, problems = read_metadata_file(path)
    assert problems == [] and records[0].video_id == "v9" and records[0].reposts == 3
    broken = tmp_path / "b.json"
    broken.write_text("{not json")
    records, problems = read_metadata_file(broken)
    assert records == [] and len(problems) == 1 and str(broken) == problems[0].source


def _record(**kw) -> MetadataRecord:
    base = dict(
        video_id="v",
        source="s.csv",
        likes=1,
        comments=1,
        reposts=1,
        create_time=datetime(2021, 1, 1, tzinfo=UTC),
        crawl_time=datetime(2021, 1, 2, tzinfo=UTC),
        challenge="#c",
    )
    base.update(kw)
    return MetadataRecord(**base)


def test_challenge_rules():
    record = _record(
        challenge=None, music_id="6894785909909228293", hashtags=("fyp", "foryou", "hurricane", "bridgitmendler")
    )
    assert derive_challenge(_record(), "music_id") == ("#c", "column")  # explicit wins
    assert derive_challenge(record, "none") == (None, None)
    assert derive_challenge(record, "music_id") == ("music:6894785909909228293", "music_id")
    assert derive_challenge(record, "hashtag", ["#bridgitmendler"]) == ("#bridgitmendler", "hashtag")
    # the first of the record's own hashtags that is named, generic ones skipped even if named
    assert derive_challenge(record, "hashtag", ["fyp", "#FYP", "bridgitmendler", "hurricane"]) == (
        "#hurricane",
        "hashtag",
    )
    assert derive_challenge(record, "hashtag", ["fyp", "foryou"]) == (None, None)
    assert derive_challenge(record, "hashtag", []) == (None, None)
    assert {"fyp", "foryou", "foryoupage", "viral", "xyzbca"} <= GENERIC_HASHTAGS
    assert split_hashtags("#FYP, #Hurricane;dance") == ("fyp", "hurricane", "dance")


def test_challenge_by_hashtag_on_the_real_sample():
    records, _ = read_metadata_file(SCRAPER_SAMPLE)
    derived = [derive_challenge(r, "hashtag", ["fyp", "hurricane", "harvard"])[0] for r in records]
    assert derived.count("#hurricane") == 13
    assert derived.count("#harvard") == 4  # records tagged #harvard but not #hurricane
    assert "#fyp" not in derived


@pytest.mark.parametrize(
    ("changes", "reason"),
    [
        ({"likes": None}, Reason.MISSING_COUNTS),
        ({"reposts": None, "comments": None}, Reason.MISSING_COUNTS),
        ({"comments": -1}, Reason.NEGATIVE_COUNTS),
        ({"followers": -5}, Reason.NEGATIVE_COUNTS),
        ({"crawl_time": None}, Reason.NO_CRAWL_TIME),
        ({"create_time": datetime(2021, 1, 3, tzinfo=UTC)}, Reason.CREATE_AFTER_CRAWL),
        ({"challenge": None}, Reason.NO_CHALLENGE),
        ({"create_time": None}, Reason.BAD_METADATA),
    ],
)
def test_check_record_reasons(changes, reason):
    check_record(_record())  # the base record is valid
    with pytest.raises(ClipError) as info:
        check_record(_record(**changes))
    assert info.value.reason is reason
