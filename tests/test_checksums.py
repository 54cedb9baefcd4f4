"""A shard is what its writer wrote and a clip file is what ingest hashed, or the run says why.

Real clips from ../shared/data (or copies made here). Shards are made by the project's writers:
the release tests' colour extractor (``tests.test_release.make_work``: pose shards of real decoded
frames) and the toy brightness modality run through ``vdv extract`` (the whole extraction path,
cheaply). An *altered* shard is one byte flipped so that it is still valid Parquet with other values.
"""

from __future__ import annotations

import contextlib
import json
import logging
import os
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from pipeline import release, stages
from pipeline.core import checksums, tables
from pipeline.core.errors import Reason
from pipeline.core.provenance import sha256_file
from pipeline.extraction import stage as extraction
from pipeline.modalities import registry as modalities
from tests.support import brightness
from tests.test_release import SHARED, colour_extractors, make_work

ROOT = Path(__file__).resolve().parents[1]
TWO = ["tfjs_pose_1.mp4", "stgcn_ta_chi.mp4"]


def flip_a_value(path: Path) -> int:
    """Flip one byte of the shard's ``features`` column data so that the file stays valid Parquet
    holding other values; returns the offset. Fails the test if no such byte exists."""
    data = bytearray(path.read_bytes())
    before = pq.read_table(path).column("features").to_pylist()
    meta = pq.ParquetFile(path).metadata.row_group(0)
    (chunk,) = [meta.column(i) for i in range(meta.num_columns) if meta.column(i).path_in_schema.startswith("features")]
    start = chunk.data_page_offset
    for offset in range(start + chunk.total_compressed_size - 1, start, -1):  # the values sit at the end of the page
        data[offset] ^= 0x01
        try:
            after = pq.read_table(pa.BufferReader(bytes(data))).column("features").to_pylist()
        except (pa.ArrowException, OSError):
            after = before
        if after != before:
            path.write_bytes(bytes(data))
            return offset
        data[offset] ^= 0x01
    pytest.fail(f"no single byte of {path} changes a value and keeps it readable")


@contextlib.contextmanager
def _warnings(logger: str):
    """The warnings ``logger`` emits inside the block (a handler of its own: Prefect, once
    imported, replaces the root logger's handlers and with them pytest's caplog)."""
    records: list[logging.LogRecord] = []
    handler = logging.Handler(logging.WARNING)
    handler.emit = records.append
    log = logging.getLogger(logger)
    log.addHandler(handler)
    try:
        yield records
    finally:
        log.removeHandler(handler)


def _pose_shards(work: Path) -> dict[str, Path]:
    return {p.name.split(".")[1]: p for p in tables.table_files(work, "features/pose")}


def _release_error(work: Path, out: Path) -> str:
    with pytest.raises(release.ReleaseError) as err:
        release.package_release(
            work, out, allow_untrained=True, salt="s", extractors=colour_extractors(modalities=("pose",))
        )
    assert not (out / "vdv-0.1.0").exists()
    return str(err.value)


def test_an_altered_or_truncated_pose_shard_is_named_by_the_release_and_computed_again(tmp_path):
    work = tmp_path / "work"
    ids = make_work(work, clips=TWO, modalities=("pose",))
    shards = _pose_shards(work)
    altered, truncated = ids[TWO[0]], ids[TWO[1]]
    original = pq.read_table(shards[altered[:16]]).column("features").to_pylist()
    flip_a_value(shards[altered[:16]])
    size = shards[truncated[:16]].stat().st_size
    os.truncate(shards[truncated[:16]], size // 2)

    # the release names each clip, its modality, what is wrong and the command that fixes it
    line = _release_error(work, tmp_path / "out")
    assert (
        f"clip {altered[:16]}" in line and f"clip {truncated[:16]}" in line and line.startswith("pose: 2 kept clip(s)")
    )
    assert "not the ones recorded" in line and f"`vdv reextract --work {work} --modalities pose`" in line
    assert "magic bytes" not in line

    # extraction does not reuse them: both are computed again, the others' values come back
    (ex,) = colour_extractors(modalities=("pose",))["pose"]
    for name, cid in ids.items():
        _, computed = ex.extract_to(work, SHARED / "clips" / name, cid)
        assert computed, name
    assert pq.read_table(_pose_shards(work)[altered[:16]]).column("features").to_pylist() == original
    done = release.package_release(work, tmp_path / "out", allow_untrained=True, salt="s", extractors={"pose": [ex]})
    assert release.verify_release(done.path).ok and sum(done.counts["pose"].values()) == 2


def test_a_shard_whose_writer_stopped_before_its_record_is_missing(tmp_path, monkeypatch):
    work = tmp_path / "work"
    ids = make_work(work, clips=TWO, modalities=())
    (ex,) = colour_extractors(modalities=("pose",))["pose"]
    ex.extract_to(work, SHARED / "clips" / TWO[0], ids[TWO[0]])

    def killed(*_args, **_kwargs):
        raise KeyboardInterrupt("stopped between the shard's rename and its record")

    monkeypatch.setattr(checksums, "_record", killed)
    with pytest.raises(KeyboardInterrupt):
        ex.extract_to(work, SHARED / "clips" / TWO[1], ids[TWO[1]])
    monkeypatch.undo()
    unrecorded = ex.shard_path(work, ids[TWO[1]])
    assert unrecorded.is_file() and pq.read_table(unrecorded).num_rows == 1  # a good file, but nobody vouches for it

    assert not ex.is_current(work, ids[TWO[1]]) and ex.is_current(work, ids[TWO[0]])
    line = _release_error(work, tmp_path / "out")
    assert f"clip {ids[TWO[1]][:16]}" in line and "no checksum was recorded" in line
    assert f"clip {ids[TWO[0]][:16]}" not in line
    assert ex.extract_to(work, SHARED / "clips" / TWO[1], ids[TWO[1]])[1]  # computed again
    assert ex.is_current(work, ids[TWO[1]])


@pytest.fixture()
def toy():
    """The brightness modality (one value a second), registered for one test."""
    modalities.register(brightness.MODALITY)
    try:
        yield brightness.MODALITY
    finally:
        modalities.unregister(brightness.MODALITY.name)


def _vdv(*args: str) -> int:
    from cli import main

    return main([*args])


def test_vdv_extract_computes_a_damaged_shard_again_and_vdv_release_names_it_first(toy, tmp_path, capsys):
    work = tmp_path / "work"
    ids = make_work(work, clips=TWO, modalities=())
    # the toy's network has no published weights: it runs untrained, and the release allows it
    extract = ["extract", "brightness", "--all", "--untrained", "--work", str(work), "--no-progress"]
    assert _vdv(*extract) == 0
    assert "extract brightness: 2 computed" in capsys.readouterr().out
    (first, second) = (tables.table_files(work, "features/brightness")[i] for i in (0, 1))
    by_name = {p: p.name.split(".")[1] for p in (first, second)}
    flip_a_value(first)
    os.truncate(second, second.stat().st_size // 2)

    out = tmp_path / "release"
    assert _vdv("release", "--work", str(work), "--out", str(out), "--no-flow", "--salt", "s", "--allow-untrained") == 1
    err = capsys.readouterr().err
    assert "Traceback" not in err and "magic bytes" not in err
    (line,) = [x for x in err.splitlines() if x.startswith("vdv release:")]
    assert all(f"clip {prefix}" in line for prefix in by_name.values()) and "brightness: 2 kept clip(s)" in line
    assert f"vdv reextract --work {work} --modalities brightness" in line

    with _warnings("pipeline.extraction.stage") as records:
        assert _vdv(*extract) == 0
    assert "extract brightness: 2 computed, 0 skipped" in capsys.readouterr().out
    warned = " ".join(r.getMessage() for r in records)
    assert str(first) in warned and str(second) in warned and "computed again" in warned
    assert _vdv(*extract) == 0
    assert "extract brightness: 0 computed, 2 skipped" in capsys.readouterr().out  # the ledger agrees with itself
    assert _vdv("release", "--work", str(work), "--out", str(out), "--no-flow", "--salt", "s", "--allow-untrained") == 0
    assert "(verified)" in capsys.readouterr().out and len(ids) == 2


def test_a_damaged_pixel_rule_shard_is_computed_again(tmp_path, monkeypatch):
    from pipeline.screening import visual
    from pipeline.screening.rules import RuleResult
    from pipeline.screening.stage import PixelRules

    calls = []

    def rules(path, clip_id, config, **_):
        calls.append(clip_id)
        return [RuleResult("one_dancer", True, [], {"people": 1})]

    monkeypatch.setattr(visual, "screen_visual", rules)
    path = SHARED / "clips" / "tfjs_pose_1.mp4"
    clip = {"clip_id": sha256_file(path), "path": str(path), "duration_s": 4.0}
    assert PixelRules({}, tmp_path).run(clip)[1] and not PixelRules({}, tmp_path).run(clip)[1]
    (shard,) = sorted((tmp_path / "pixel_rules").rglob("*.parquet"))  # fanned out by clip id
    os.truncate(shard, 40)
    with _warnings("pipeline.screening.stage") as records:
        results, computed = PixelRules({}, tmp_path).run(clip)
    assert computed and results[0].details == {"people": 1} and len(calls) == 2
    assert any(str(shard) in r.getMessage() for r in records)
    assert not PixelRules({}, tmp_path).run(clip)[1]  # the new shard is recorded


def _swapped_raw(tmp_path: Path) -> tuple[Path, dict]:
    """A clip file copied from the real data, its clips row as ingest writes it, then another
    video copied over it (as a person replacing a file after ingest does)."""
    raw = tmp_path / "raw"
    raw.mkdir()
    path = raw / "clip.mp4"
    shutil.copyfile(SHARED / "clips" / "stgcn_ta_chi.mp4", path)
    clip = {"clip_id": sha256_file(path), "path": str(path), "video_id": "v1", "duration_s": 6.0}
    return path, clip


def test_a_clip_file_replaced_after_ingest_is_clip_changed_in_screening_and_extraction(toy, tmp_path, monkeypatch):
    from pipeline.screening import visual

    work = tmp_path / "work"
    path, clip = _swapped_raw(tmp_path)
    make_work(work, clips=["stgcn_ta_chi.mp4"], modalities=())
    rows = tables.read_table(work, tables.CLIPS).to_pylist()
    rows[0]["path"] = str(path)
    tables.replace_table(rows, tables.CLIPS, work)
    # the ingested file confirmed once (its stat recorded), then replaced in place, as cp does
    checksums.confirm_clip(work, clip["clip_id"], path)
    with open(path, "r+b") as fh:
        fh.write((SHARED / "clips" / "tfjs_pose_1.mp4").read_bytes())
        fh.truncate()

    used = []
    monkeypatch.setattr(visual, "screen_visual", lambda *a, **k: used.append(a) or [])
    screened = stages.run_screen(work, {"screen": {"max_followers": 0}})
    assert screened.rows[0]["reasons"] == ["clip_changed"] and not screened.rows[0]["kept"] and not used
    (row,) = tables.read_file(tables.shard_path(work, "rejections", "screen"), tables.REJECTIONS).to_pylist()
    assert row["reason"] == Reason.CLIP_CHANGED.value and row["path"] == str(path)
    assert str(path) in row["message"] and "vdv ingest" in row["message"]
    assert not tables.table_files(work, "pixel_rules")  # nothing stored: restoring the file screens it again
    # the build's per-clip task says so too: neither computed nor reused (the flow's summary counts it apart)
    from flows.tasks import screen_clip

    done = screen_clip.fn(str(work), clip, {})
    assert done["changed"] == 1 and not done["computed"] and not done["passed"] and not used

    # extraction of the clip (kept or not: --all) decodes nothing and writes no shard
    plan = extraction.plan_extraction(["brightness"], {}, untrained=True)
    run = extraction.run_extraction(work, [clip], plan, show_progress=False)
    (item,) = run.items
    assert item.status == extraction.REJECTED and item.reason == "clip_changed" and str(path) in item.message
    assert not tables.table_files(work, "features/brightness")
    (rejected,) = tables.read_file(extraction.rejections_path(work, "brightness"), tables.REJECTIONS).to_pylist()
    assert rejected["reason"] == "clip_changed" and rejected["path"] == str(path)


def test_a_changed_stat_forces_a_hash_and_an_unchanged_one_does_not(tmp_path, monkeypatch):
    path, clip = _swapped_raw(tmp_path)
    work = tmp_path / "work"
    hashed = []
    real = checksums.sha256_file
    monkeypatch.setattr(checksums, "sha256_file", lambda p, *a: hashed.append(p) or real(p, *a))
    checksums.confirm_clip(work, clip["clip_id"], path)
    checksums.confirm_clip(work, clip["clip_id"], path)
    assert len(hashed) == 1  # the second time the recorded stat vouches for it
    # same size, same mtime, same inode: only the ctime tells, and it forces the hash
    data = bytearray(path.read_bytes())
    data[len(data) // 2] ^= 0xFF
    st = path.stat()
    with open(path, "r+b") as fh:
        fh.write(bytes(data))
    os.utime(path, ns=(st.st_atime_ns, st.st_mtime_ns))
    assert (path.stat().st_size, path.stat().st_mtime_ns, path.stat().st_ino) == (st.st_size, st.st_mtime_ns, st.st_ino)
    with pytest.raises(Exception, match="vdv ingest") as err:
        checksums.confirm_clip(work, clip["clip_id"], path)
    assert err.value.reason is Reason.CLIP_CHANGED and len(hashed) == 2


def test_clip_records_of_a_batch_are_written_a_batch_at_a_time_and_at_its_end(tmp_path, monkeypatch):
    """Screening confirms thousands of clip files in a row (``stages.run_screen``): inside
    ``batched_clip_records`` the process rewrites its ledger segment once a ``CLIP_BATCH`` and at
    the block's end, not once a clip; outside one, at once. Every record is known to the process
    from the start, and a refresh never reads back the segment the process wrote itself."""
    monkeypatch.setattr(checksums, "CLIP_BATCH", 4)
    work = tmp_path / "work"
    files = []
    for i in range(11):
        path = tmp_path / "raw" / f"clip{i}.mp4"
        path.parent.mkdir(exist_ok=True)
        path.write_bytes(os.urandom(2048))
        files.append(path)
    writes, hashed, reads = [], [], []
    write_table, read_file, sha = tables.write_table, tables.read_file, checksums.sha256_file
    monkeypatch.setattr(tables, "write_table", lambda rows, *a: writes.append(len(rows)) or write_table(rows, *a))
    monkeypatch.setattr(tables, "read_file", lambda path, *a, **k: reads.append(Path(path)) or read_file(path, *a, **k))
    monkeypatch.setattr(checksums, "sha256_file", lambda p, *a: hashed.append(p) or sha(p, *a))
    with checksums.batched_clip_records():
        for path in files[:10]:
            checksums.clip_sha256(work, path)
        assert writes == [4, 8]  # two batches written, two records held
        for path in files[:10]:
            checksums.clip_sha256(work, path)  # held or written, known: no second hash
        assert len(hashed) == 10
    assert writes == [4, 8, 10]  # the held ones at the block's end
    checksums.clip_sha256(work, files[10])
    assert writes == [4, 8, 10, 11]  # outside a block: at once
    (segment,) = tables.table_files(work, checksums.TABLE)
    assert sum(r["kind"] == checksums.CLIP for r in read_file(segment, tables.CHECKSUMS).to_pylist()) == 11
    checksums._known(checksums._root(work)).refresh()
    assert segment not in reads  # this process's own segment: its rows are known already


_WRITER = """
import sys
import numpy as np
from tests.support.shards import write_stream
work, who, n = sys.argv[1], sys.argv[2], int(sys.argv[3])
for i in range(n):
    write_stream(work, "pose", f"{who}{i:03d}".ljust(64, "0"), np.full((4, 48), i, np.float32))
"""


def test_writers_in_several_processes_record_every_shard_and_a_fold_keeps_them(tmp_path):
    work = tmp_path / "work"
    env = {**os.environ, "PYTHONPATH": str(ROOT), "OMP_NUM_THREADS": "1"}
    writers = [
        subprocess.Popen([sys.executable, "-c", _WRITER, str(work), who, "40"], env=env, cwd=ROOT) for who in "abc"
    ]
    assert [p.wait(timeout=300) for p in writers] == [0, 0, 0]
    shards = tables.table_files(work, "features/pose")
    assert len(shards) == 120
    ledger = tables.table_files(work, "checksums")
    assert len(ledger) == 3  # one segment per process, no file per shard
    fresh = checksums._Known(os.path.abspath(work))
    fresh.refresh()
    assert all(checksums.check_shard(work, p).ok for p in shards) and len(fresh.shards) == 120
    shards[0].unlink()  # a removed shard's record can never vouch again: the fold drops it
    assert checksums.fold(work) == 3
    (folded,) = tables.table_files(work, "checksums")
    rows = tables.read_file(folded, tables.CHECKSUMS).to_pylist()
    assert len(rows) == 119 and {r["writer"].split(":")[1] for r in rows} == {str(p.pid) for p in writers}
    assert all(checksums.check_shard(work, p).ok for p in shards[1:])
    assert json.dumps(sorted(r["path"] for r in rows)) == json.dumps(
        sorted(f"features/pose/{p.name}" for p in shards[1:])
    )
    assert np.all([r["size"] > 0 for r in rows])
