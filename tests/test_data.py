"""Datasets over feature shards written by the pipeline's own writers, and over a release layout."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pyarrow.parquet as pq
import pytest

from models import data
from pipeline.core import tables
from pipeline.modalities.features import current_shards, read_features
from tests import realdata
from tests.support.keypoints import load_keypoint_file
from tests.support.shards import write_stream

SHARED = Path(__file__).resolve().parents[1].parent / "shared" / "data"
KEYPOINTS = SHARED / "keypoints"


@pytest.fixture(scope="session")
def release(tmp_path_factory) -> Path:
    return realdata.session_release(tmp_path_factory)


def _scores(work: Path, rows: list[tuple[str, str, float]]) -> None:
    tables.replace_table(
        [
            {
                "clip_id": cid,
                "video_id": cid[:8],
                "challenge": ch,
                "existing_days": 3.0,
                "raw_score": s,
                "score": s,
                "out_of_scale": False,
                "degenerate_challenge": False,
            }
            for cid, ch, s in rows
        ],
        tables.SCORES,
        work,
    )


@pytest.fixture()
def work(tmp_path: Path) -> Path:
    """Two clips: real skeletons (tfjs keypoints), holistic everywhere, a face only in one."""
    rng = np.random.default_rng(0)
    dance = load_keypoint_file(KEYPOINTS / "tfjs_pose_1.json")  # 120 frames
    squats = load_keypoint_file(KEYPOINTS / "tfjs_pose_squats.full.json")  # 65 frames
    a, b = "a" * 64, "b" * 64
    valid = np.ones(len(dance), bool)
    valid[10:20] = False  # no person found in these frames
    write_stream(tmp_path, "pose", a, dance, valid)
    write_stream(tmp_path, "pose", b, squats)
    write_stream(tmp_path, "holistic", a, rng.normal(size=(120, 2048)))
    write_stream(tmp_path, "holistic", b, rng.normal(size=(65, 2048)))
    write_stream(tmp_path, "facial", a, rng.normal(size=(12, 512)), fps=3.0)
    write_stream(tmp_path, "facial", b, np.zeros((7, 512)), np.zeros(7, bool), fps=3.0)  # never a face
    _scores(tmp_path, [(a, "c1", 0.25), (b, "c2", 0.75), ("c" * 64, "c1", 0.5)])
    return tmp_path


def test_written_shards_read_back_with_the_pipeline_reader(work: Path) -> None:
    shards = current_shards(work, "pose")
    assert set(shards) == {"a" * 16, "b" * 16}
    table = read_features(shards["a" * 16], "pose")
    assert table.column("features").type.value_type.list_size == 48
    assert table.column("extractor").to_pylist() == ["arrays"]


def test_uniform_sampling_and_padding() -> None:
    assert data.sample_indices(10, 5).tolist() == [1, 3, 5, 7, 9]
    assert data.sample_indices(3, 5).tolist() == [0, 1, 2]
    feats = np.arange(6, dtype=np.float32)[:, None]
    out, mask = data.fix_length(feats, np.array([1, 1, 0, 1, 1, 1], bool), 8)
    assert mask.tolist() == [True, True, False, True, True, True, False, False]
    assert out[:, 0].tolist() == [0, 1, 0, 3, 4, 5, 0, 0]  # invalid and padded samples are zero


def test_skeleton_normalisation_on_real_keypoints() -> None:
    rows = load_keypoint_file(KEYPOINTS / "tfjs_pose_squats.full.json")
    valid = np.ones(len(rows), bool)
    x, mask = data.skeleton_tensor(rows, valid, 32)
    assert x.shape == (3, 32, 16) and mask.all()
    # centred on the clip's mean pelvis, scaled by the median torso length
    assert np.allclose(x[:2, :, data.PELVIS].mean(axis=1), 0.0, atol=0.15)
    torso = np.linalg.norm(x[:2, :, data.THORAX] - x[:2, :, data.PELVIS], axis=0)
    assert np.median(torso) == pytest.approx(1.0, abs=0.1)
    assert np.all(x[2] == 1.0)  # confidence channel kept as is
    # the scale does not depend on the resolution: a 3x larger image gives the same tensor
    big = rows.reshape(-1, 16, 3).copy()
    big[..., :2] *= 3.0
    x3, _ = data.skeleton_tensor(big.reshape(-1, 48), valid, 32)
    assert np.allclose(x, x3, atol=1e-4)


def test_dataset_items_masks_and_absent_streams(work: Path) -> None:
    # spans in seconds; the frames follow each stream's rate in its shards (25 fps, facial 3 fps)
    cfg = data.DataConfig(seconds={"pose": 64 / 25, "holistic": 4.0, "facial": 8 / 3})
    ds = data.ViralityDataset(data.open_source(work), ("pose", "holistic", "facial"), config=cfg)
    # the third clip has a score but no features: left out, with its reason recorded
    assert len(ds) == 2 and ds.skipped == {"c" * 64: "no features of ['pose', 'holistic', 'facial']"}
    assert ds.frames == {"pose": 64, "holistic": 100, "facial": 8}
    a = ds[ds.clip_ids.index("a" * 64)]
    b = ds[ds.clip_ids.index("b" * 64)]
    assert a["pose"].shape == (3, 64, 16) and a["holistic"].shape == (100, 2048) and a["facial"].shape == (8, 512)
    # 120 frames sampled to 64 uniformly: the 10 frames without a person are masked (about 5)
    assert 3 <= (~a["pose_mask"]).sum() <= 7
    # 65 holistic frames padded to 100
    assert b["holistic_mask"].sum() == 65 and not b["holistic"][65:].any()
    # clip b never had a face: the facial stream is absent
    assert a["stream_mask"].tolist() == [True, True, True]
    assert b["stream_mask"].tolist() == [True, True, False]
    assert a["score"] == pytest.approx(0.25) and b["challenge"] == "c2"


def test_changing_a_rate_keeps_the_span_a_stream_sees(work: Path) -> None:
    """``[facial] fps = 5`` instead of 3: the facial stream still sees its 10.7 s, in more frames."""
    default = data.DataConfig()
    assert default.frames("facial", 3.0) == 32 and default.frames("facial", 5.0) == 53
    assert default.frames("pose", 25.0) == 256 and default.frames("scenic", 25 / 12) == 32
    rng = np.random.default_rng(1)
    write_stream(work, "facial", "a" * 64, rng.normal(size=(60, 512)), fps=5.0)  # re-extracted at 5 fps
    write_stream(work, "facial", "b" * 64, rng.normal(size=(40, 512)), fps=5.0)
    ds = data.ViralityDataset(data.open_source(work), ("facial",))
    assert ds.frames == {"facial": 53} and ds[0]["facial"].shape == (53, 512)
    assert ds.frames["facial"] / 5.0 == pytest.approx(32 / 3.0, abs=0.2)  # the same span as 32 at 3 fps


def test_dataset_batches_with_default_collate(work: Path) -> None:
    import torch
    from torch.utils.data import DataLoader

    cfg = data.DataConfig(seconds={"pose": 16 / 25, "facial": 4 / 3, "holistic": 8 / 25, "scenic": 4 * 12 / 25})
    ds = data.ViralityDataset(data.open_source(work), config=cfg)
    assert ds.dims == {"pose": 48, "holistic": 2048, "facial": 512, "scenic": 512}
    assert ds.frames == {"pose": 16, "holistic": 8, "facial": 4, "scenic": 4}  # scenic: its default rate
    batch = next(iter(DataLoader(ds, batch_size=2)))
    assert batch["pose"].shape == (2, 3, 16, 16) and batch["pose"].dtype == torch.float32
    assert batch["stream_mask"].shape == (2, 4)
    assert not batch["stream_mask"][:, 3].any()  # no scenic shards at all


def test_a_packaged_release_is_a_source(release: Path) -> None:
    """The output of pipeline.release.package_release on real skeleton windows: scores from
    data/scores/, skeletons from data/pose/, splits from splits/, all as packaged."""
    src = data.open_source(release)
    assert isinstance(src, data.ReleaseSource)
    records = {r.clip_id: r for r in src.records()}
    work_scores = tables.read_table(release.parents[1] / "work", tables.SCORES).to_pylist()
    assert {r["clip_id"]: r["score"] for r in work_scores} == {c: r.score for c, r in records.items()}
    assert len(records) == len(realdata.windows()) >= 60
    # every window's rows come back unchanged from the release's multi-clip files
    for cid, _, rows, valid in realdata.windows()[::17]:
        got_rows, got_valid = src.load("skeletal", cid)
        np.testing.assert_array_equal(got_rows, rows)
        np.testing.assert_array_equal(got_valid, valid)
    # the stored splits are the ones used, and every track has at least 10 test clips
    tracks = data.track_splits(src)
    stored = pq.read_table(release / "splits" / "all.parquet").to_pylist()
    assert tracks["all"] == {r["clip_id"]: r["split"] for r in stored}
    assert set(tracks) == {"all", "challenge-lifting", "challenge-taichi"}
    assert all(sum(s == "test" for s in t.values()) >= 10 for t in tracks.values())
    # the models' older name of the pose stream is still read
    ds = data.ViralityDataset(src, ("skeletal",), config=data.DataConfig(seconds={"skeletal": 32 / 25}))
    item = ds[0]
    assert ds.modalities == ("pose",) and item["pose"].shape == (3, 32, 16)
    assert not item["pose_mask"][realdata.WINDOW :].any()


def test_a_release_that_names_the_pose_config_skeletal_still_loads(release: Path, tmp_path: Path) -> None:
    import shutil

    old = tmp_path / "old-release"
    shutil.copytree(release, old)
    (old / "data" / "pose").rename(old / "data" / "skeletal")
    src = data.open_source(old)
    cid, _, rows, _ = realdata.windows()[0]
    assert src.has("pose", cid) and src.rate("pose") == 25.0
    np.testing.assert_array_equal(src.load("pose", cid)[0], rows)


def test_old_data_configs_in_frames_read_as_seconds() -> None:
    old = {"skeletal_frames": 256, "holistic_frames": 128, "facial_frames": 32, "scenic_frames": 32, "min_torso": 1e-5}
    cfg = data.DataConfig.from_dict(old)
    assert cfg.seconds == pytest.approx({"pose": 10.24, "holistic": 5.12, "facial": 32 / 3, "scenic": 15.36})
    assert [cfg.frames(m) for m in ("pose", "holistic", "facial", "scenic")] == [256, 128, 32, 32]
    assert cfg.min_torso == 1e-5


def test_unknown_modality_is_an_error(work: Path) -> None:
    with pytest.raises(ValueError, match="unknown modality 'audio'"):
        data.ViralityDataset(data.open_source(work), ("audio",))


def test_a_work_directory_shard_is_checked_against_the_ledger_once_and_refused_when_it_differs(
    work: Path, monkeypatch
) -> None:
    from pipeline.core import checksums

    hashed: list[Path] = []
    real_check = checksums.check_shard

    def counting(root, path, **kw):
        hashed.append(Path(path))
        return real_check(root, path, **kw)

    monkeypatch.setattr(checksums, "check_shard", counting)
    source = data.WorkDirSource(work)
    first = source.load("holistic", "a" * 64)
    again = source.load("holistic", "a" * 64)
    assert np.array_equal(first[0], again[0]) and first[0].shape == (120, 2048)
    shard = current_shards(work, "holistic")["a" * 16]
    assert hashed.count(shard) == 1  # hashed before its first use, not on every read

    # the same bytes with one float changed, written in place: not what its writer recorded
    table = pq.read_table(shard)
    features = table.column("features").to_pylist()
    features[0][0][0] += 1.0
    changed = table.set_column(table.schema.get_field_index("features"), "features", [features])
    pq.write_table(changed.cast(table.schema), shard, compression="zstd")
    with pytest.raises(data.ShardNotVerified, match=str(shard)):
        data.WorkDirSource(work).load("holistic", "a" * 64)
    # a shard with no record (its writer stopped before recording it) is refused too
    pose = current_shards(work, "pose")["b" * 16]
    unrecorded = pose.with_name(pose.name.replace("b" * 16, "c" * 16))
    unrecorded.write_bytes(pose.read_bytes())
    with pytest.raises(data.ShardNotVerified, match="no checksum was recorded"):
        data.WorkDirSource(work).load("pose", "c" * 64)
