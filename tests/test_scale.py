"""VDV at full size: the training loader yields what it yielded before, a release's files are laid
out for random and sequential reads, the card's sizes are what ``datasets`` reports, pictures fan
out by clip id and the report lists each folder once (docs/SCALE.md)."""

from __future__ import annotations

import hashlib
import logging
import os
import sys
from pathlib import Path

import numpy as np
import pyarrow.parquet as pq
import pytest

from pipeline.core import tables
from pipeline.release import read_card_header
from pipeline.release.shards import ROW_GROUP_BYTES
from tests.support import epoch

ROOT = Path(__file__).resolve().parents[1]

# sha256 of the first epoch's batches (tests/support/epoch.py), computed once with the code of
# commit 95d487e (before the loader and the release layout changed) by
#   git archive 95d487e | tar -x -C REF && cp tests/support/epoch.py REF/tests/support/
#   cd REF && PYTHONPATH=REF python -m tests.support.epoch DIR
# The two sources order their clips differently (a release's stored split, the work directory's
# scores table), hence two values.
GOLDEN = {
    "work": "36fd078a11075a4a65c197d640d9ff96356ce69f4857da31766253be192b477b",
    "release": "e17a6d3cbf7349c4426f84b0cc867b134824a4b275cc55bfd4738d882d78ccd3",
}


@pytest.fixture(scope="module")
def built(tmp_path_factory) -> tuple[Path, Path]:
    return epoch.build(tmp_path_factory.mktemp("epoch"))


@pytest.mark.parametrize("side", ["work", "release"])
def test_an_epoch_yields_the_reference_batches(built: tuple[Path, Path], side: str) -> None:
    work, release = built
    digest, clips = epoch.epoch_digest(work if side == "work" else release)
    assert clips == 40  # the all track's train side of the 50 clips
    assert digest == GOLDEN[side]


def test_release_row_groups_hold_whole_clips_up_to_the_bound_without_text_statistics(built) -> None:
    _, release = built
    for path in sorted((release / "data").glob("*/*.parquet")):
        meta = pq.ParquetFile(path).metadata
        config = path.parent.name
        names = [meta.schema.column(i).path for i in range(meta.num_columns)]
        sizes = []
        for rg in range(meta.num_row_groups):
            group = meta.row_group(rg)
            sizes.append(group.total_byte_size)
            stats = {names[i] for i in range(group.num_columns) if group.column(i).is_stats_set}
            if config != "scores":
                # min/max of clip_id only: never of the provenance text (params, identity...)
                assert stats == {"clip_id"}, (path, stats)
        if config == "holistic":  # 96 floats x up to 500 samples a clip: several clips per group
            assert meta.num_row_groups < meta.num_rows
        # a group closes once it holds ROW_GROUP_BYTES: every group but the last reaches it, and
        # none is bigger than the bound plus one clip (the largest holistic clip is < 0.2 MiB)
        assert all(size >= ROW_GROUP_BYTES * 0.9 for size in sizes[:-1]), (path, sizes)
        assert all(size < ROW_GROUP_BYTES + (1 << 20) for size in sizes), (path, sizes)


def test_the_card_sizes_are_what_load_dataset_reports(built, caplog) -> None:
    datasets = pytest.importorskip("datasets")
    _, release = built
    header = read_card_header(release / "README.md")
    cache = release.parent / "hf-cache"
    with caplog.at_level(logging.WARNING):
        for info in header["dataset_info"]:
            loaded = datasets.load_dataset(str(release), info["config_name"], cache_dir=str(cache))
            for split in info["splits"]:
                reported = loaded[split["name"]].info.splits[split["name"]]
                assert split["num_examples"] == reported.num_examples
                assert split["num_bytes"] == reported.num_bytes, (info["config_name"], split["name"])
    assert not [r for r in caplog.records if r.name.startswith("datasets")], caplog.text


def test_pictures_fan_out_by_clip_id_and_old_flat_ones_are_still_found(tmp_path: Path) -> None:
    from pipeline.extraction.stage import _write_preview

    clip = "ab" + "c" * 62
    flat = tables.preview_dir(tmp_path, "backgrounds") / f"{clip[:16]}.0001000ms.png"
    flat.parent.mkdir(parents=True)
    flat.write_bytes(b"old")  # a picture of the layout before the fan-out
    other = "de" + "f" * 62
    old_other = tables.preview_dir(tmp_path, "backgrounds") / f"{other[:16]}.0002000ms.png"
    old_other.write_bytes(b"old")
    assert tables.preview_files(tmp_path, "backgrounds") == {clip[:16]: [flat], other[:16]: [old_other]}
    _write_preview(tmp_path, "scenic", clip, (1.5, np.zeros((8, 8, 3), np.uint8)))
    new = tables.preview_path(tmp_path, "backgrounds", clip, 1500)
    assert new.parent.name == "ab" and new.is_file()
    assert not flat.exists()  # the clip's stale picture of the old layout is replaced
    assert tables.preview_files(tmp_path, "backgrounds") == {clip[:16]: [new], other[:16]: [old_other]}
    assert tables.thumbnail_name(clip, "f03.jpg") == f"ab/{clip[:16]}.f03.jpg"


def test_the_report_lists_the_picture_folder_once(tmp_path: Path, monkeypatch) -> None:
    from pipeline.report import gather

    clips = [f"{i:02x}" + "0" * 62 for i in range(30)]
    for i, clip in enumerate(clips):
        target = tables.preview_path(tmp_path, "backgrounds", clip, 1000 + i)
        target.parent.mkdir(parents=True, exist_ok=True)
        target.write_bytes(b"png")
    listed: list[str] = []
    real_scandir = os.scandir

    def counting_scandir(path):
        listed.append(str(path))
        return real_scandir(path)

    monkeypatch.setattr(os, "scandir", counting_scandir)
    monkeypatch.setattr(Path, "glob", lambda *a, **k: pytest.fail("the report globs a picture folder per clip"))
    found = gather._previews(tmp_path, clips)
    assert [found[c][0][1] for c in clips] == [
        tables.preview_path(tmp_path, "backgrounds", c, 1000 + i).relative_to(tables.report_dir(tmp_path)).as_posix()
        for i, c in enumerate(clips)
    ]
    top = str(tables.preview_dir(tmp_path, "backgrounds"))
    assert listed.count(top) == 1  # once for the 30 clips, then each of its sub-folders once
    assert len(listed) == 1 + len({c[:2] for c in clips})


def test_bench_scale_builds_and_measures_a_work_directory_from_a_built_one(tmp_path: Path) -> None:
    """The benchmark end to end at a small size, from a built work directory of two real clips
    (tests/support/scale_demo.py): it synthesises the clips (pixel-rule and feature shards
    recorded in the ledger, so that screening reuses them), runs the stages in child processes
    and writes their figures."""
    import json

    from tests.support import scale_demo

    demo, raw, pairing, config = scale_demo.build(tmp_path / "demo")
    stages = ["ingest", "screen", "score"]
    sys.path.insert(0, str(ROOT / "bench"))
    import bench_scale

    # the synthesis runs here (its imports shared with the build above), each stage in a child
    code = bench_scale.main(
        ["--baseline", "6", "--out", str(tmp_path / "bench"), "--json", str(tmp_path / "b.jsonl")]
        + ["--demo", str(demo), "--raw", str(raw), "--pairing", str(pairing), "--config", str(config)]
        + ["--stages", *stages]
    )
    assert code == 0
    lines = [json.loads(line) for line in (tmp_path / "b.jsonl").read_text().splitlines()]
    by_stage = {line["stage"]: line for line in lines if "clips" in line}
    assert set(by_stage) == set(stages)
    assert by_stage["ingest"]["clips"] == 6 and by_stage["ingest"]["rejected"] == 0
    # every synthetic clip kept from its recorded pixel-rule shard: no video decoded
    assert by_stage["screen"]["kept"] == 6 and by_stage["screen"]["pixel_rules_computed"] == 0
    assert by_stage["score"]["scored"] == 6
    assert all(line["cpu_s"] > 0 and line["rss_mib"] > 0 for line in by_stage.values())
    work = tmp_path / "bench" / "n6" / "work"
    assert len(list((work / "features" / "holistic").glob("*.parquet"))) == 6


def test_bench_scale_fits_the_growth_of_the_marginal_cost() -> None:
    sys.path.insert(0, str(ROOT / "bench"))
    from bench_scale import exponent

    # cost = 2 + 0.01 * N**1.5 at 50, 1000 and 4292 clips: the start-up (2) does not flatten it
    points = {n: 2 + 0.01 * n**1.5 for n in (50, 1000, 4292)}
    # log(4292**1.5 - 50**1.5) - log(1000**1.5 - 50**1.5), over log(4292) - log(1000): 1.5069
    assert exponent(points) == pytest.approx(1.5069, abs=1e-3)
    assert exponent({50: 1.0, 1000: 1.0, 4292: 2.0}) is None  # no marginal cost at 1000: no fit


def test_the_card_loads_one_clip_rows_with_a_small_writer_batch_and_shows_streaming_when_large() -> None:
    from pipeline.release import card

    def info(name: str, rows: int, row_bytes: int) -> dict:
        splits = [{"name": "train", "num_examples": rows - rows // 5}, {"name": "test", "num_examples": rows // 5}]
        return {"config_name": name, "dataset_size": rows * row_bytes, "splits": splits}

    infos = [info("holistic", 4292, 2_200_000), info("pose", 4292, 60_000), info("small", 40, 1_100_000)]
    lines = card._loading(infos)
    (holistic,) = [line for line in lines if line.startswith("| holistic")]
    (pose,) = [line for line in lines if line.startswith("| pose")]
    (small,) = [line for line in lines if line.startswith("| small")]
    # 2.2 MB rows: one clip a row group, read by datasets one row at a time
    assert '`load_dataset("<this directory>", "holistic", writer_batch_size=16)`' in holistic
    assert 'load_dataset("<this directory>", "holistic", streaming=True)' in holistic  # 8.8 GiB
    assert "8.8 GiB" in holistic
    assert pose.endswith('| `load_dataset("<this directory>", "pose")` |')  # 60 KB rows, 0.24 GiB
    assert "writer_batch_size=16" in small and "streaming" not in small  # 42 MiB of 1.1 MB rows
    assert card.load_options(infos[1]) == {} and card.load_options(infos[0]) == {"writer_batch_size": 16}


@pytest.mark.parametrize("side", ["work", "release"])
def test_an_epoch_from_a_cold_then_a_warm_decoded_cache_yields_the_reference_batches(
    built: tuple[Path, Path], side: str, tmp_path: Path, monkeypatch
) -> None:
    """The decoded cache (models/decoded.py) written by one epoch and read by the next process's
    epoch: both give the batches of commit 95d487e, and the warm one decodes no Parquet at all."""
    from models import data

    work, release = built
    path = work if side == "work" else release
    monkeypatch.setenv("VDV_DECODED_CACHE", str(tmp_path / "decoded"))
    assert epoch.epoch_digest(path) == (GOLDEN[side], 40)  # cold: decodes and writes
    written = {p: p.stat().st_ino for p in (tmp_path / "decoded").rglob("*.arrow")}
    # one copy per source file read, named by its sha256: the release's four feature configs'
    # train files, or the work directory's shards of the train side's clips
    if side == "release":
        sources = [p for p in release.glob("data/*/train-*.parquet") if p.parent.name != "scores"]
    else:
        from pipeline.modalities.features import current_shards

        train = {cid[:16] for cid in data.side_ids(data.track_split(data.open_source(work), "all"), "train")}
        sources = [p for m in data.registry.names() for k, p in current_shards(work, m).items() if k in train]
    assert len(sources) >= 4
    assert {p.stem for p in written} == {hashlib.sha256(p.read_bytes()).hexdigest() for p in sources}
    monkeypatch.setattr(data, "_rows", lambda table: pytest.fail("a warm epoch decoded a Parquet row group"))
    assert epoch.epoch_digest(path) == (GOLDEN[side], 40)  # warm: a new source reads the copies
    assert {p: p.stat().st_ino for p in (tmp_path / "decoded").rglob("*.arrow")} == written  # none rewritten


def test_a_release_file_is_decoded_from_the_bytes_sha256sums_lists_and_a_damaged_copy_is_rebuilt(
    built: tuple[Path, Path], tmp_path: Path, caplog
) -> None:
    import shutil

    from models import data, decoded

    _, built_release = built
    release = tmp_path / "release"
    shutil.copytree(built_release, release)
    cache = decoded.DecodedCache(tmp_path / "decoded")
    clip = pq.read_table(next(release.glob("data/holistic/train-*.parquet")), columns=["clip_id"])["clip_id"][3]
    plain = data.ReleaseSource(release, cache=False).load("holistic", clip.as_py())
    assert np.array_equal(data.ReleaseSource(release, cache=cache).load("holistic", clip.as_py())[0], plain[0])
    (copy,) = (tmp_path / "decoded").rglob("*.arrow")  # the one file of that clip, all its clips decoded
    good = copy.read_bytes()
    at = good.find(plain[0][2].tobytes()) + 6  # one bit of one of the clip's floats
    copy.write_bytes(good[:at] + bytes([good[at] ^ 0x04]) + good[at + 1 :])
    with caplog.at_level(logging.WARNING, logger="models.decoded"):
        got = data.ReleaseSource(release, cache=cache).load("holistic", clip.as_py())
    assert np.array_equal(got[0], plain[0]) and np.array_equal(got[1], plain[1])
    assert "fails its checksum" in caplog.text and copy.read_bytes() == good  # rebuilt
    # a file whose bytes are not those SHA256SUMS lists is refused, not decoded into the cache
    sums = (release / "SHA256SUMS").read_text()
    listed = copy.stem
    (release / "SHA256SUMS").write_text(sums.replace(listed, "0" * 64))
    with pytest.raises(data.ShardNotVerified, match="not the ones SHA256SUMS lists"):
        data.ReleaseSource(release, cache=cache).load("holistic", clip.as_py())
    assert [p.stem for p in (tmp_path / "decoded").rglob("*.arrow")] == [listed]
