"""The one writer/reader pair: casting, atomic writes, errors that name the file, shard naming."""

from __future__ import annotations

from datetime import UTC, datetime

import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from pipeline.core import tables
from pipeline.core.tables import SchemaMismatch


def _rejection(**kw):
    row = {
        "stage": "ingest",
        "clip_id": "a" * 64,
        "video_id": "v",
        "path": "/x.mp4",
        "reason": "truncated",
        "message": "cut",
    }
    row.update(kw)
    return row


def test_round_trip_carries_name_and_version(tmp_path):
    path = tables.write_table([_rejection()], tables.REJECTIONS, tmp_path / "r.parquet")
    meta = pq.read_schema(path).metadata
    assert meta[b"vdv.table"] == b"rejections" and meta[b"vdv.schema_version"] == b"1"
    assert tables.read_file(path, tables.REJECTIONS).to_pylist() == [_rejection()]


def test_rows_are_cast_to_the_schema(tmp_path):
    row = {name: None for name in tables.CLIPS.schema.names}
    row.update(clip_id="c" * 64, video_id="v", path="/v.mp4", width=1080, create_time=datetime(2021, 1, 1, tzinfo=UTC))
    table = tables.to_table([row], tables.CLIPS)
    assert table.schema.field("width").type == pa.int32()
    assert table.column("create_time").type == pa.timestamp("s", tz="UTC")


def test_mismatches_are_errors(tmp_path):
    with pytest.raises(SchemaMismatch, match="not nullable"):
        tables.to_table([_rejection(reason=None)], tables.REJECTIONS)
    with pytest.raises(SchemaMismatch, match="unexpected columns"):
        tables.to_table([_rejection(extra=1)], tables.REJECTIONS)
    with pytest.raises(SchemaMismatch, match=r"rejections v1 \(in memory\)"):
        tables.to_table([_rejection(clip_id=12.5)], tables.REJECTIONS)


def test_writer_names_the_target_file_on_a_bad_batch(tmp_path):
    target = tmp_path / "scores" / "scores.000000.parquet"
    with pytest.raises(SchemaMismatch, match=str(target)):
        tables.write_table([{"clip_id": "x"}], tables.SCORES, target)
    assert not target.exists()


def test_reader_names_the_file_on_table_version_or_schema_mismatch(tmp_path):
    path = tables.write_table([_rejection()], tables.REJECTIONS, tmp_path / "r.parquet")
    with pytest.raises(SchemaMismatch, match=rf"{path}: holds table 'rejections' v1, expected 'scores' v1"):
        tables.read_file(path, tables.SCORES)
    newer = tables.TableSpec("rejections", 2, tables.REJECTIONS.schema)
    with pytest.raises(SchemaMismatch, match=rf"{path}: .*expected 'rejections' v2"):
        tables.read_file(path, newer)
    # right name and version, wrong columns (a hand-edited file)
    forged = tmp_path / "forged.parquet"
    table = pa.table({"stage": ["x"]}).replace_schema_metadata(
        {b"vdv.table": b"rejections", b"vdv.schema_version": b"1"}
    )
    pq.write_table(table, forged)
    with pytest.raises(SchemaMismatch, match=str(forged)):
        tables.read_file(forged, tables.REJECTIONS)
    junk = tmp_path / "junk.parquet"
    junk.write_text("not parquet")
    with pytest.raises(SchemaMismatch, match=rf"{junk}: not a readable Parquet file"):
        tables.read_file(junk, tables.REJECTIONS)


def test_atomic_write_leaves_the_old_file_and_no_temporary_on_failure(tmp_path):
    target = tables.write_table([_rejection(message="old")], tables.REJECTIONS, tmp_path / "r.parquet")

    def crash(tmp):
        tmp.write_bytes(b"half a file")
        raise RuntimeError("disk full")

    with pytest.raises(RuntimeError):
        tables.atomic_write(target, crash)
    assert tables.read_file(target, tables.REJECTIONS).column("message").to_pylist() == ["old"]
    assert [p.name for p in tmp_path.iterdir()] == ["r.parquet"]


def test_shard_naming_and_batch_replacement(tmp_path):
    assert tables.shard_path(tmp_path, "clips", 0) == tmp_path / "clips" / "clips.000000.parquet"
    assert tables.shard_path(tmp_path, "rejections", "ingest") == tmp_path / "rejections" / "rejections.ingest.parquet"
    assert (
        tables.shard_path(tmp_path, "features/pose", "ab.cd") == tmp_path / "features" / "pose" / "pose.ab.cd.parquet"
    )
    assert tables.read_table(tmp_path, tables.REJECTIONS).num_rows == 0
    tables.write_table([_rejection()], tables.REJECTIONS, tables.shard_path(tmp_path, "rejections", "ingest"))
    tables.write_table(
        [_rejection(stage="screen"), _rejection(stage="screen")],
        tables.REJECTIONS,
        tables.shard_path(tmp_path, "rejections", "screen"),
    )
    (tmp_path / "rejections" / ".rejections.x.parquet.tmp").write_bytes(b"partial")  # hidden: ignored
    assert sorted(tables.read_table(tmp_path, tables.REJECTIONS).column("stage").to_pylist()) == [
        "ingest",
        "screen",
        "screen",
    ]
    stale = tables.write_table([_rejection()], tables.REJECTIONS, tmp_path / "t" / "t.000001.parquet")
    tables.replace_table([_rejection(message="new")], tables.REJECTIONS, tmp_path, "t")
    assert not stale.exists()
    assert tables.read_table(tmp_path, tables.REJECTIONS, "t").column("message").to_pylist() == ["new"]
