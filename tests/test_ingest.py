"""Ingest on real clips: the manifest, every rejection reason, duplicates, pairing, the tables."""

from __future__ import annotations

import csv
import json
import os
from datetime import UTC, datetime

import pytest
from conftest import DEMO, SAMPLE_CRAWL_TIME, SCRAPER_SAMPLE, SHARED_CLIPS

from pipeline.core import tables
from pipeline.core.errors import InputError
from pipeline.ingest.stage import IngestConfig, Pairing, prepare_clips, read_pairing

# sha256 of the real clips (../shared/data/SOURCES.md)
TA_CHI_SHA = "0a65dcd054bd8539aa6af91f8cfdf00c43a33cdf8eae74210b186da1cfd243c7"
CLEAN_AND_JERK_SHA = "64406fcbaba318cc4054df43fb4192a600d00aec9fd4664d0838e7fbf5615df3"


def _row(
    video_id, *, likes=10, comments=1, reposts=1, create="2021-01-01T00:00:00Z", crawl="2021-01-05T00:00:00Z", **kw
):
    row = {
        "video_id": video_id,
        "challenge": "#c",
        "likes": likes,
        "comments": comments,
        "reposts": reposts,
        "create_time": create,
        "crawl_time": crawl,
        "followers": 120,
    }
    row.update(kw)
    return row


@pytest.fixture
def messy_raw(make_raw, tmp_path):
    """Good real clips beside every kind of bad input."""
    cat = (SHARED_CLIPS / "trackanything_test-sample2_cat.mp4").read_bytes()
    clips = {
        "tachi.mp4": SHARED_CLIPS / "stgcn_ta_chi.mp4",
        "lift.mp4": SHARED_CLIPS / "stgcn_clean_and_jerk.mp4",
        "lift_reupload.mp4": SHARED_CLIPS / "stgcn_clean_and_jerk.mp4",  # same bytes, later
        "cut.mp4": cat[: len(cat) // 2],  # a real clip cut mid-stream
        "empty.mp4": b"",
        "text.mp4": b"not a video at all\n" * 50,
        "orphan.mp4": SHARED_CLIPS / "tfjs_pose_1.mp4",  # no metadata record
        "negative.mp4": SHARED_CLIPS / "liveportrait_d18_face.mp4",
        "future.mp4": SHARED_CLIPS / "liveportrait_d19_face.mp4",
        "nocount.mp4": SHARED_CLIPS / "tokenflow_woman-running.mp4",
        "readme.txt": b"notes about the crawl",
    }
    rows = [
        _row("tachi", likes=100),
        _row("lift", create="2021-01-02T00:00:00Z"),
        _row("lift_reupload", create="2021-01-03T00:00:00Z"),
        _row("cut"),
        _row("empty"),
        _row("text"),
        _row("negative", likes=-3),
        _row("future", create="2021-01-06T00:00:00Z"),
        _row("nocount", reposts=""),
        _row("ghost"),  # a record with no clip
    ]
    return make_raw(clips, {"records.csv": rows})


def test_every_bad_input_is_rejected_with_its_reason_and_good_clips_are_unaffected(messy_raw):
    result = prepare_clips(messy_raw)
    reasons = {r["video_id"] or r["path"].rsplit("/", 1)[-1]: r["reason"] for r in result.rejections}
    assert reasons == {
        "lift_reupload": "duplicate_content",
        "cut": "truncated",
        "empty": "not_a_video",
        "text": "not_a_video",
        "orphan": "no_metadata",
        "negative": "negative_counts",
        "future": "create_after_crawl",
        "nocount": "missing_counts",
        "ghost": "no_clip",
        "readme.txt": "not_a_video",
    }
    assert all(r["stage"] == "ingest" and r["message"] for r in result.rejections)
    clips = {row["video_id"]: row for row in result.clips}
    assert sorted(clips) == ["lift", "tachi"]
    tachi = clips["tachi"]
    assert tachi["clip_id"] == TA_CHI_SHA
    assert (tachi["frame_count"], tachi["width"], tachi["height"], tachi["video_codec"]) == (300, 340, 256, "h264")
    assert tachi["likes"] == 100 and tachi["uploader_followers"] == 120 and tachi["challenge"] == "#c"
    assert tachi["crawl_time"] == datetime(2021, 1, 5, tzinfo=UTC) and tachi["crawl_time_source"] == "column"
    assert tachi["size_bytes"] == 136988 and tachi["metadata_source"] == "records.csv"
    # the earliest upload of the duplicated bytes survives; the re-upload names it
    assert clips["lift"]["clip_id"] == CLEAN_AND_JERK_SHA
    dup = next(r for r in result.rejections if r["reason"] == "duplicate_content")
    assert dup["clip_id"] == CLEAN_AND_JERK_SHA and "lift.mp4" in dup["message"]


def test_earliest_upload_survives_whatever_the_file_order(make_raw):
    raw = make_raw(
        {"a_late.mp4": SHARED_CLIPS / "stgcn_ta_chi.mp4", "b_early.mp4": SHARED_CLIPS / "stgcn_ta_chi.mp4"},
        {"r.jsonl": [_row("a_late", create="2021-01-03T00:00:00Z"), _row("b_early", create="2021-01-01T00:00:00Z")]},
    )
    result = prepare_clips(raw)
    assert [row["video_id"] for row in result.clips] == ["b_early"]
    assert [(r["video_id"], r["reason"]) for r in result.rejections] == [("a_late", "duplicate_content")]


def test_tables_written_only_given_an_output_dir(messy_raw, tmp_path):
    work = tmp_path / "work"
    result = prepare_clips(messy_raw)
    assert not work.exists()
    prepare_clips(messy_raw, output_dir=work)
    clips = tables.read_table(work, tables.CLIPS)
    assert sorted(clips.column("video_id").to_pylist()) == ["lift", "tachi"]
    rejections = tables.read_file(tables.shard_path(work, "rejections", "ingest"), tables.REJECTIONS)
    assert rejections.num_rows == len(result.rejections) == 10
    assert [p.name for p in tables.table_files(work, "clips")] == ["clips.000000.parquet"]


def test_probe_budget_is_enforced_and_the_run_goes_on(make_raw):
    raw = make_raw(
        {"a.mp4": SHARED_CLIPS / "hybrik_taiji.mp4", "b.mp4": SHARED_CLIPS / "stgcn_ta_chi.mp4"},
        {"r.csv": [_row("a"), _row("b")]},
    )
    # a budget no probe can meet: each clip is killed and rejected, none hangs the run
    result = prepare_clips(raw, config=IngestConfig(probe_budget_s=1e-4))
    assert result.clips == []
    assert [r["reason"] for r in result.rejections] == ["decode_timeout", "decode_timeout"]


def test_real_sample_needs_a_crawl_time(make_raw):
    raw = make_raw({"6911379416308305158.mp4": SHARED_CLIPS / "stgcn_ta_chi.mp4"}, {})
    (raw / "metadata" / "tiktok_scraper_sample.json").symlink_to(SCRAPER_SAMPLE)
    result = prepare_clips(raw, config=IngestConfig(challenge_rule="hashtag", challenge_hashtags=("harrystyles",)))
    assert [r["reason"] for r in result.rejections if r["video_id"] == "6911379416308305158"] == ["no_crawl_time"]
    # the crawler's own file name carries the stamp
    stamped = make_raw({"6911379416308305158.mp4": SHARED_CLIPS / "stgcn_ta_chi.mp4"}, {}, name="stamped")
    (stamped / "metadata" / "thebigbradwolf_1609948309033.json").symlink_to(SCRAPER_SAMPLE)
    result = prepare_clips(stamped, config=IngestConfig(challenge_rule="hashtag", challenge_hashtags=("harrystyles",)))
    (row,) = result.clips
    assert row["crawl_time"] == SAMPLE_CRAWL_TIME.replace(microsecond=0) and row["crawl_time_source"] == "file_name"
    assert row["challenge"] == "#harrystyles" and row["uploader_followers"] == 398_700
    assert (row["likes"], row["comments"], row["reposts"], row["plays"]) == (4165, 58, 117, 18800)
    assert sum(r["reason"] == "no_clip" for r in result.rejections) == 64
    # --crawl-time wins over the stamp
    result = prepare_clips(stamped, crawl_time="2021-02-01T00:00:00Z", config=IngestConfig(challenge_rule="music_id"))
    assert (
        result.clips[0]["crawl_time_source"] == "option" and result.clips[0]["challenge"] == "music:6911379433966357253"
    )


def test_generic_hashtag_never_defines_the_challenge(make_raw):
    raw = make_raw(
        {"v.mp4": SHARED_CLIPS / "stgcn_ta_chi.mp4"}, {"r.csv": [_row("v", challenge="", hashtags="#fyp #foryou")]}
    )
    result = prepare_clips(raw, config=IngestConfig(challenge_rule="hashtag", challenge_hashtags=("fyp", "foryou")))
    assert result.clips == [] and [r["reason"] for r in result.rejections] == ["no_challenge"]


def test_pairing_maps_files_to_records_and_assigns_challenges(make_raw, tmp_path):
    raw = make_raw(
        {"dance.mp4": SHARED_CLIPS / "stgcn_ta_chi.mp4", "other.mp4": SHARED_CLIPS / "tfjs_pose_1.mp4"},
        {"r.csv": [_row("111", challenge=""), _row("222")]},
    )
    pairing_file = tmp_path / "pairing.csv"
    pairing_file.write_text("file,video_id,challenge\ndance.mp4,111,#taichi\nother.mp4,222,\n")
    pairing = read_pairing(pairing_file)
    assert pairing == {"dance.mp4": Pairing("111", "#taichi"), "other.mp4": Pairing("222", None)}
    result = prepare_clips(raw, pairing=pairing)
    assert {(r["video_id"], r["challenge"]) for r in result.clips} == {("111", "#taichi"), ("222", "#c")}
    bad = tmp_path / "bad.csv"
    bad.write_text("file,video\nx.mp4,1\n")
    with pytest.raises(InputError, match=r"bad.csv: pairing file lacks column video_id"):
        read_pairing(bad)


def test_demo_pairing_pairs_every_shared_clip_with_a_distinct_real_record():
    with open(DEMO / "pairing.csv", newline="") as fh:
        rows = list(csv.DictReader(fh))
    files = sorted(p.name for p in SHARED_CLIPS.iterdir())
    assert sorted(r["file"] for r in rows) == files
    sample_ids = {str(r["id"]) for r in json.loads(SCRAPER_SAMPLE.read_text())}
    video_ids = [r["video_id"] for r in rows]
    assert len(set(video_ids)) == len(video_ids) and set(video_ids) <= sample_ids
    assert len({r["challenge"] for r in rows}) >= 2 and all(r["challenge"] for r in rows)


def test_probes_made_elsewhere_give_the_same_manifest_and_are_not_repeated(messy_raw, monkeypatch):
    from pipeline.ingest import probe
    from pipeline.ingest import stage as ingest

    alone = prepare_clips(messy_raw)
    files = ingest.clip_files(messy_raw)
    assert [p.name for p in files] == sorted(
        ["tachi.mp4", "lift.mp4", "lift_reupload.mp4", "cut.mp4", "empty.mp4", "text.mp4", "orphan.mp4"]
        + ["negative.mp4", "future.mp4", "nocount.mp4"]
    )  # readme.txt is no video: ingest rejects it without probing
    try:
        probed = {str(p): ingest.probe_file(p) for p in files}  # what the flows' probe tasks return
    finally:
        probe.close_idle_workers()
    assert probed[str(files[0])]["worker"].endswith(f":{os.getpid()}")
    assert {f["reason"] for f in probed.values()} == {None, "truncated", "not_a_video"}

    def no_probe(*args, **kwargs):
        raise AssertionError("prepare_clips probed a file that was probed already")

    monkeypatch.setattr(probe.ProbeWorker, "probe", no_probe)
    monkeypatch.setattr(ingest, "sha256_file", no_probe)
    again = prepare_clips(messy_raw, probed=probed)
    assert again.clips == alone.clips
    assert again.rejections == alone.rejections
