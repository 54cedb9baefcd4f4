"""Files as people make them: one bad item is one rejection or one line, never the whole run.

Metadata records with fields of the wrong kind, text files saved by spreadsheets and Windows
editors (a byte-order mark, UTF-16, a semicolon), broken links and images in ``clips/``, and
configuration that contradicts itself.
"""

from __future__ import annotations

import codecs
import json
import logging
import os
from pathlib import Path

import av
import cv2
import numpy as np
import pytest
from conftest import SCRAPER_SAMPLE, SHARED_CLIPS

import models  # noqa: F401 - registers the models' configuration sections
from cli import main
from pipeline.core.config import ConfigError
from pipeline.core.errors import ClipError, InputError, Reason
from pipeline.ingest.metadata import read_metadata_file
from pipeline.ingest.probe import probe
from pipeline.ingest.stage import IngestConfig, load_records, prepare_clips, read_pairing
from pipeline.screening.stage import read_overrides
from pipeline.sections import load_config

SAMPLE = json.loads(SCRAPER_SAMPLE.read_text())
CLIP = SHARED_CLIPS / "tfjs_pose_1.mp4"  # the smallest real clip (4 s)


# -- metadata records with fields of the wrong kind -----------------------------------------------

# (field changed, its new value, what the rejection's message must name)
WRONG_KINDS = [
    ("authorMeta", "thebigbradwolf", "'authorMeta'"),
    ("musicMeta", [{"musicId": "1"}], "'musicMeta'"),
    ("diggCount", "12k", "'diggCount'"),
    ("commentCount", {"n": 3}, "'commentCount'"),
    ("createTime", [1609180933], "'createTime'"),
    ("hashtags", {"name": "fyp"}, "'hashtags'"),
    ("id", {"value": 1}, "'id'"),
    ("playCount", float("inf"), "'playCount'"),
    ("crawlTime", 10**30, "'crawlTime'"),
]


def _sample_with_wrong_kinds() -> list[dict]:
    records = [dict(r) for r in SAMPLE[: len(WRONG_KINDS) + 3]]
    for record, (key, value, _) in zip(records, WRONG_KINDS, strict=False):
        record[key] = value
    records[len(WRONG_KINDS)]["authorMeta"] = dict(SAMPLE[0]["authorMeta"], fans=True)  # a nested field
    return records


def test_a_field_of_the_wrong_kind_is_one_bad_metadata_rejection_naming_record_and_field(make_raw):
    records = _sample_with_wrong_kinds()
    good = records[-1]["id"]
    raw = make_raw({f"{good}.mp4": CLIP}, {"crawl_1609948309033.json": json.dumps(records)})
    result = prepare_clips(raw, config=IngestConfig(challenge_rule="music_id"))
    bad = [r for r in result.rejections if r["reason"] == Reason.BAD_METADATA.value]
    assert len(bad) == len(WRONG_KINDS) + 1
    for i, (key, _, named) in enumerate(WRONG_KINDS):
        message = bad[i]["message"]
        assert message.startswith(f"record {i}") and named in message, message
        if key != "id":
            assert f"video {SAMPLE[i]['id']}" in message and bad[i]["video_id"] == SAMPLE[i]["id"]
    assert "'authorMeta.fans'" in bad[-1]["message"]
    # the rest goes on: the good records are ingested or rejected for their own reasons
    assert [row["video_id"] for row in result.clips] == [good]
    no_clip = [r for r in result.rejections if r["reason"] == Reason.NO_CLIP.value]
    assert len(no_clip) == 1  # the one good record that has no file


def test_a_count_like_12k_names_the_column_in_a_csv(tmp_path):
    path = tmp_path / "m.csv"
    path.write_text(
        "video_id,likes,comments,reposts,create_time,crawl_time\n"
        "v1,12k,1,2,2021-01-01,2021-01-03\n"
        "v2,5,1,2,2021-01-01,2021-01-03\n"
    )
    records, problems = read_metadata_file(path)
    assert [r.video_id for r in records] == ["v2"]
    assert len(problems) == 1 and "record 0 (video v1): field 'likes': not a count: text '12k'" in problems[0].message


def test_equal_crawl_times_with_conflicting_counts_warn_naming_both_files(make_raw, caplog):
    record = dict(SAMPLE[0])
    other = dict(record, diggCount=record["diggCount"] + 100)
    same = dict(SAMPLE[1])
    raw = make_raw(
        {},
        {
            "a_1609948309033.json": json.dumps([record, same]),
            "b_1609948309033.json": json.dumps([other, same]),
        },
    )
    with caplog.at_level(logging.WARNING, logger="pipeline.ingest.stage"):
        found, _ = load_records(raw, None)
    warnings = [r.getMessage() for r in caplog.records if r.levelno == logging.WARNING]
    assert len(warnings) == 1, warnings  # the record with equal counts in both files is no conflict
    assert "a_1609948309033.json" in warnings[0] and "b_1609948309033.json" in warnings[0]
    assert f"likes {record['diggCount']} vs {other['diggCount']}" in warnings[0]
    assert found[record["id"]].likes == record["diggCount"]  # the first by file name, as the warning says


# -- text files as spreadsheets and editors save them ----------------------------------------------

CSV_METADATA = (
    "video_id,challenge,likes,comments,reposts,create_time,crawl_time,followers\n"
    "v1,#a,10,1,2,2021-01-01T00:00:00Z,2021-01-05T00:00:00Z,7\n"
)


def test_utf8_with_a_byte_order_mark_reads_everywhere(tmp_path):
    bom = codecs.BOM_UTF8
    meta = tmp_path / "m.csv"
    meta.write_bytes(bom + CSV_METADATA.encode())
    records, problems = read_metadata_file(meta)
    assert problems == [] and records[0].video_id == "v1" and records[0].likes == 10
    for suffix, text in ((".jsonl", '{"video_id": "v1", "likes": 1}\n'), (".json", json.dumps([SAMPLE[0]]))):
        path = tmp_path / f"m{suffix}"
        path.write_bytes(bom + text.encode())
        records, problems = read_metadata_file(path)
        assert problems == [] and len(records) == 1, problems
    pairing = tmp_path / "pairing.csv"
    pairing.write_bytes(bom + b"file,video_id,challenge\r\na.mp4,v1,#a\r\n")
    assert read_pairing(pairing)["a.mp4"].video_id == "v1"
    overrides = tmp_path / "overrides.csv"
    overrides.write_bytes(bom + b"id,decision,note\nv1,keep,checked\n")
    assert read_overrides(overrides)["v1"].decision == "keep"
    config = tmp_path / "config.toml"
    config.write_bytes(bom + b"[screen]\nmax_followers = 0\n")
    assert load_config(config) == {"screen": {"max_followers": 0}}


@pytest.mark.parametrize(
    ("encode", "named"),
    [
        (lambda t: t.encode("utf-16"), "UTF-16 (little-endian) text (byte-order mark FF FE)"),
        (lambda t: t.encode("utf-16-be"), "UTF-16 (big-endian, no byte-order mark)"),
        (lambda t: t.replace("v1", "vidéo").encode("latin-1"), "not UTF-8 text (byte 0xe9 at offset"),
    ],
)
def test_another_encoding_is_one_line_naming_it(tmp_path, encode, named):
    meta = tmp_path / "m.csv"
    meta.write_bytes(encode(CSV_METADATA))
    records, problems = read_metadata_file(meta)
    assert records == [] and len(problems) == 1 and named in problems[0].message
    assert problems[0].message.startswith(f"{meta}: metadata file")
    pairing = tmp_path / "pairing.csv"
    pairing.write_bytes(encode("file,video_id\na.mp4,v1\n"))
    with pytest.raises(InputError, match="pairing file") as caught:
        read_pairing(pairing)
    assert named.split(" (")[0] in str(caught.value)
    config = tmp_path / "config.toml"
    config.write_bytes(encode("[screen]\nmax_followers = 0  # vidéo\n"))
    with pytest.raises(ConfigError, match="configuration file") as caught:
        load_config(config)
    assert "save it as UTF-8" in str(caught.value)


@pytest.mark.parametrize(("delimiter", "named"), [(";", "a semicolon (';')"), ("\t", "a tab ('\\t')")])
def test_a_csv_with_another_delimiter_names_it(tmp_path, delimiter, named):
    meta = tmp_path / "m.csv"
    meta.write_text(CSV_METADATA.replace(",", delimiter))
    records, problems = read_metadata_file(meta)
    assert records == [] and len(problems) == 1 and f"separated by {named}, not a comma" in problems[0].message
    pairing = tmp_path / "pairing.csv"
    pairing.write_text(f"file{delimiter}video_id\na.mp4{delimiter}v1\n")
    with pytest.raises(InputError) as caught:
        read_pairing(pairing)
    assert f"pairing file: the columns are separated by {named}" in str(caught.value)
    overrides = tmp_path / "o.csv"
    overrides.write_text(f"id{delimiter}decision\nv1{delimiter}keep\n")
    with pytest.raises(ValueError, match="override file: the columns are separated by"):
        read_overrides(overrides)


def test_cli_reads_a_config_with_a_mark_and_names_utf16_in_one_line(tmp_path, capsys):
    config = tmp_path / "config.toml"
    config.write_bytes(codecs.BOM_UTF8 + b"[screen]\nmax_followers = 0\n")
    work = tmp_path / "work"
    main(["summary", "--work", str(work), "--config", str(config)])
    err = capsys.readouterr().err
    assert "work directory" in err and str(config) not in err  # the file was read; the work directory is next
    config.write_bytes("[screen]\nmax_followers = 0\n".encode("utf-16"))
    assert main(["summary", "--work", str(work), "--config", str(config)]) == 2
    err = capsys.readouterr().err
    assert err.strip().splitlines() == [
        f"vdv summary: error: {config}: configuration file is UTF-16 (little-endian) text "
        "(byte-order mark FF FE); save it as UTF-8"
    ]


# -- clips/ as people leave it ------------------------------------------------------------------


def test_a_dangling_link_and_a_link_loop_are_one_rejection_each(make_raw):
    raw = make_raw({})
    clips = raw / "clips"
    os.symlink(clips / "gone.mp4.orig", clips / "gone.mp4")
    os.symlink(clips / "loop_b.mp4", clips / "loop_a.mp4")
    os.symlink(clips / "loop_a.mp4", clips / "loop_b.mp4")
    os.symlink(clips / "nowhere", clips / "notes.txt")  # another suffix: rejected as not a video
    result = prepare_clips(raw)
    by_path = {Path(r["path"]).name: r for r in result.rejections}
    assert sorted(by_path) == ["gone.mp4", "loop_a.mp4", "loop_b.mp4", "notes.txt"]
    assert by_path["gone.mp4"]["reason"] == Reason.UNREADABLE.value
    assert "gone.mp4 is a symbolic link to" in by_path["gone.mp4"]["message"]
    assert "which does not exist" in by_path["gone.mp4"]["message"]
    for name in ("loop_a.mp4", "loop_b.mp4"):
        assert by_path[name]["reason"] == Reason.UNREADABLE.value
        assert f"{name} is a symbolic link loop" in by_path[name]["message"]
    assert by_path["notes.txt"]["reason"] == Reason.NOT_A_VIDEO.value


def _image(path: Path, size=(96, 64)) -> Path:
    rng = np.random.default_rng(0)
    image = rng.integers(0, 255, (*size, 3), dtype=np.uint8)
    suffix = path.name.split(".")[1]  # a.png.mp4 -> written as png
    ok, data = cv2.imencode(f".{suffix}", image)
    assert ok
    path.write_bytes(data.tobytes())
    return path


def _one_frame_mp4(path: Path) -> Path:
    with av.open(str(path), "w") as out:
        stream = out.add_stream("libx264", rate=25)
        stream.width, stream.height, stream.pix_fmt = 64, 48, "yuv420p"
        frame = av.VideoFrame.from_ndarray(np.full((48, 64, 3), 128, np.uint8), format="rgb24")
        for packet in [*stream.encode(frame), *stream.encode(None)]:
            out.mux(packet)
    return path


@pytest.mark.parametrize("name", ["a.png.mp4", "a.jpg.mp4", "a.webp.mp4", "a.bmp.mp4"])
def test_an_image_renamed_mp4_is_not_a_video(tmp_path, name):
    path = _image(tmp_path / name)
    with pytest.raises(ClipError) as caught:
        probe(path)
    assert caught.value.reason is Reason.NOT_A_VIDEO
    assert "is an image (" in caught.value.message and "_pipe demuxer" in caught.value.message


def test_a_single_frame_in_a_video_container_is_not_a_video(tmp_path):
    with pytest.raises(ClipError) as caught:
        probe(_one_frame_mp4(tmp_path / "still.mp4"))
    assert caught.value.reason is Reason.NOT_A_VIDEO and "a single h264 frame" in caught.value.message
    assert probe(CLIP).frame_count > 1  # a real clip of the same container still probes


# -- configuration that contradicts itself ---------------------------------------------------------

CONTRADICTIONS = [
    ("[screen]\nmin_duration_s = 70.0\nmax_duration_s = 60.0\n", ["min_duration_s = 70.0", "max_duration_s = 60.0"]),
    ("[screen]\nmax_followers = -1\n", ["max_followers = -1"]),
    ("[facial]\nmin_face_size = 700\ndetect_max_side = 640\n", ["min_face_size = 700", "detect_max_side = 640"]),
    ("[visual]\nmax_people = 1\n", ["max_people = 1", "multi_person_share"]),
    ("[visual]\nmin_person_share = 1.5\n", ["min_person_share = 1.5"]),
    ("[release]\ntrain_fraction = 1.0\n", ["train_fraction = 1.0"]),
]


@pytest.mark.parametrize(("text", "named"), CONTRADICTIONS)
def test_contradictory_settings_are_refused_when_the_file_is_read(tmp_path, text, named):
    config = tmp_path / "config.toml"
    config.write_text(text)
    with pytest.raises(ConfigError) as caught:
        load_config(config)
    for key in named:
        assert key in str(caught.value)


def test_cli_refuses_min_above_max_duration_in_one_line_exit_2(tmp_path, capsys):
    config = tmp_path / "config.toml"
    config.write_text("[screen]\nmin_duration_s = 70.0\nmax_duration_s = 60.0\n")
    assert main(["summary", "--work", str(tmp_path / "work"), "--config", str(config)]) == 2
    line = capsys.readouterr().err.strip()
    assert "\n" not in line and line.startswith(f"vdv summary: error: {config}: [screen] min_duration_s = 70.0")
    assert "max_duration_s = 60.0" in line
    config.write_text("[screen]\nmin_duration_s = 70.0\nmax_duration_s = 0\n")  # 0 disables the maximum
    assert load_config(config)["screen"]["min_duration_s"] == 70.0


# -- weights files that are not checkpoints ------------------------------------------------------


class _Hostile:
    def __reduce__(self):
        return (os.system, ("echo hostile",))


def _torch_file(path: Path, obj) -> bytes:
    import torch

    torch.save(obj, path)
    return path.read_bytes()


@pytest.mark.parametrize(
    ("name", "make", "named"),
    [
        ("resnet18_places365", lambda p: b"<html>Not Found</html>\n", "is not a checkpoint: it is text starting"),
        ("resnet18_places365", lambda p: b"", "is empty (0 bytes), not a checkpoint"),
        ("resnet50_vggface2", lambda p: b"\x80\x02}q\x00X\x01\x00\x00\x00a", "it ends before its pickle does"),
        ("resnet18_places365", lambda p: _torch_file(p, {"x": _Hostile()}), "refused to load global posix.system"),
        ("blazepose_detector", lambda p: b"model,version\n", "is not a TFLite model: no TFL3 identifier"),
        ("blazepose_detector", lambda p: b"", "is empty (0 bytes), not a TFLite model"),
    ],
)
def test_weights_import_of_a_file_that_is_no_checkpoint_is_one_line(tmp_path, capsys, caplog, name, make, named):
    source = tmp_path / "weights.bin"
    source.write_bytes(make(source))
    argv = ["weights", "import", name, str(source), "--dir", str(tmp_path / "cache"), "--allow-other-source"]
    with caplog.at_level(logging.DEBUG, logger="pipeline.weights"):
        assert main(argv) == 2
    assert "weights_only" not in caplog.text  # not in the log either, at any level
    err = capsys.readouterr().err
    lines = [line for line in err.splitlines() if line.strip()]
    assert len(lines) == 1 and "Traceback" not in err, err
    assert lines[0].startswith(f"vdv weights: error: {source}") and named in lines[0]
    assert "weights_only" not in err  # never torch's advice to load the file with code enabled
