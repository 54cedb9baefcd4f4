"""Real material for the model tests: BlazePose skeletons of real clips and the real keypoint
files, cut into windows and packaged into a release by the pipeline's own ``package_release``.

Each window of ``WINDOW`` frames (stride ``STRIDE``) of a real skeleton sequence becomes one
clip of the release, paired with a record of the real tiktok-scraper sample (its likes,
comments, reposts and create time, taken in turn) and standing for its own uploader, so the
80/20 split rule has about 100 clips to divide: every evaluated track gets at least 10 test
clips. Windows of one source overlap, so train and test windows can share frames; these tests
check the plumbing from a release to training, evaluation and feedback, not generalisation (the
learning check does that, holding out whole clips).

The skeletons are computed once per process (BlazePose is the slow part, about 30 s on this
CPU for the two clips) and cached in memory, so every test module that asks gets the same
arrays; the release is built once per directory.
"""

from __future__ import annotations

import hashlib
import json
from datetime import UTC, datetime
from pathlib import Path

import numpy as np
import pytest

SHARED = Path(__file__).resolve().parents[1].parent / "shared" / "data"
POSE_CLIPS = ("stgcn_ta_chi", "stgcn_clean_and_jerk")  # one moving person each (SOURCES.md)
KEYPOINT_FILES = ("tfjs_pose_1.json", "tfjs_pose_squats.full.json")
WINDOW, STRIDE = 24, 6
CHALLENGES = ("taichi", "lifting")
CRAWL_TIME = datetime.fromtimestamp(1609948309.033, tz=UTC)  # the sample's crawler file stamp

_SKELETONS: dict[str, tuple[np.ndarray, np.ndarray]] = {}
_RELEASES: dict[str, Path] = {}


def real_skeletons() -> dict[str, tuple[np.ndarray, np.ndarray]]:
    """Source name -> (pose rows (L, 48), valid (L,)): BlazePose on the real clips (pipeline.modalities.pose,
    320 px) and the real keypoint files (tests.support.keypoints.load_keypoint_file)."""
    if not _SKELETONS:
        from pipeline.modalities import pose
        from tests.support.keypoints import load_keypoint_file

        extractor = pose.MODALITY.build({"max_side": 320})
        for name in POSE_CLIPS:
            seq = extractor.compute(SHARED / "clips" / f"{name}.mp4", name.ljust(64, "_"))
            _SKELETONS[name] = (np.asarray(seq.features, np.float32), np.asarray(seq.valid, bool))
        for name in KEYPOINT_FILES:
            rows = load_keypoint_file(SHARED / "keypoints" / name)
            _SKELETONS[f"{name.split('.')[0]}:keypoints"] = (rows, np.ones(len(rows), bool))
    return dict(_SKELETONS)


def windows() -> list[tuple[str, str, np.ndarray, np.ndarray]]:
    """(clip id, source, rows (WINDOW, 48), valid) of every window with at least half its frames valid."""
    out = []
    for source, (rows, valid) in sorted(real_skeletons().items()):
        for start in range(0, len(rows) - WINDOW + 1, STRIDE):
            v = valid[start : start + WINDOW]
            if v.mean() >= 0.5:
                cid = hashlib.sha256(f"{source}:{start}".encode()).hexdigest()
                out.append((cid, source, rows[start : start + WINDOW], v))
    return out


def build_release(root: Path) -> Path:
    """Work directory ``root/work`` (clips, scores, score scale, pose shards) and its packaged
    release ``root/release/vdv-<version>``; returns the release directory."""
    key = str(root)
    if key in _RELEASES:
        return _RELEASES[key]
    from pipeline.core import tables
    from pipeline.release import package_release
    from pipeline.scoring import virality
    from tests.support.shards import ArrayShardWriter, write_stream

    work = root / "work"
    records = json.loads((SHARED / "metadata" / "tiktok_scraper_sample.json").read_text())
    clips = []
    for i, (cid, source, rows, valid) in enumerate(windows()):
        write_stream(work, "pose", cid, rows, valid, name="blazepose-window", params={"source": source})
        rec = records[i % len(records)]
        clips.append(
            {
                "clip_id": cid,
                "video_id": f"{rec['id']}-{i}",
                "path": f"{source}.mp4#{i}",
                "challenge": CHALLENGES[i % len(CHALLENGES)],
                "uploader_id": f"uploader-{i}",
                "uploader_followers": 500,
                "likes": int(rec["diggCount"]),
                "comments": int(rec["commentCount"]),
                "reposts": int(rec["shareCount"]),
                "create_time": datetime.fromtimestamp(int(rec["createTime"]), tz=UTC),
                "crawl_time": CRAWL_TIME,
                "duration_s": WINDOW / 25.0,
            }
        )
    tables.replace_table(clips, tables.CLIPS, work)
    config = virality.ScoreConfig()
    virality.write_scores(virality.score_clips(clips, config), config, work)
    # the shards' own writers are what a current shard must match (one per source window set)
    writers = [
        ArrayShardWriter("pose", 48, name="blazepose-window", params={"source": source})
        for source in sorted({c["path"].split(".mp4#")[0] for c in clips})
    ]
    summary = package_release(
        work, root / "release", allow_untrained=True, salt="model-tests", extractors={"pose": writers}
    )
    _RELEASES[key] = summary.path
    return summary.path


def session_release(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The packaged release of real skeleton windows, built once per test session (every test
    module's ``release`` fixture calls this)."""
    return build_release(tmp_path_factory.getbasetemp() / "real-release")


SMALL_RUN = """\
[data]
seconds = { pose = 1.28 }  # 32 frames at 25 fps; windows are 24 frames: 8 padded frames in every clip

[psgcn]
channels = [8, 16, 16]
"""


def train_on_release(release: Path, out: Path, *extra: str) -> Path:
    """``vdv train --source RELEASE`` with a small PSGCN (the ``[psgcn]`` section); returns the run dir."""
    from cli import main

    config = out.parent / f"{out.name}.toml"
    config.parent.mkdir(parents=True, exist_ok=True)
    config.write_text(SMALL_RUN)
    args = ["train", "--source", str(release), "--config", str(config), "--out", str(out), "--device", "cpu"]
    rc = main([*args, "--epochs", "1", *extra])
    if rc != 0:
        raise RuntimeError(f"vdv train failed with exit code {rc}")
    return out
