"""A small work directory and its release with every modality, and a digest of one training epoch.

The work directory holds ``CLIPS`` clips: pose rows cut from the real tfjs keypoint files
(joint coordinates in pixels, a few frames marked invalid), and seeded random holistic, facial
and scenic sequences of varied lengths, shorter and longer than the spans the models see, with
some frames invalid and some streams absent (no face in a clip, no scenic shard). Everything is
written through the pipeline's own shard writer and packaged by ``package_release``.

:func:`epoch_digest` is the sha256 of every batch that ``vdv train``'s loader yields in its
first epoch (``TrainConfig``'s batch size, seed and shuffling, ``DataConfig`` defaults) over
the ``all`` track's train side: names, dtypes, shapes and bytes of every tensor, in order.
"""

from __future__ import annotations

import hashlib
import json
from datetime import UTC, datetime
from pathlib import Path

import numpy as np

SHARED = Path(__file__).resolve().parents[2].parent / "shared" / "data"
KEYPOINT_FILES = ("tfjs_pose_1.json", "tfjs_pose_squats.full.json")
CLIPS = 50
DIMS = {"holistic": 96, "facial": 64, "scenic": 32}  # narrower than the real networks': cheap, same code path
RATES = {"pose": 25.0, "holistic": 25.0, "facial": 3.0, "scenic": 25.0 / 12}
CHALLENGES = ("dance", "workout", "lipsync")


def _clip_rows(i: int, rng: np.random.Generator, skeletons: list[np.ndarray]) -> tuple[np.ndarray, np.ndarray]:
    """Pose rows of clip ``i``: real keypoints, tiled to a length from 40 to 400 frames, shifted."""
    source = skeletons[i % len(skeletons)]
    length = int(rng.integers(40, 400))
    rows = np.concatenate([source] * (length // len(source) + 1))[:length].copy()
    rows[:, 0::3] += float(rng.normal(0, 20))  # the dancer elsewhere in the frame
    valid = rng.random(length) > 0.1
    return rows, valid


def build(root: Path) -> tuple[Path, Path]:
    """``root/work`` and its release (returned as (work, release directory))."""
    from pipeline.core import tables
    from pipeline.release import package_release
    from pipeline.scoring import virality
    from tests.support.keypoints import load_keypoint_file
    from tests.support.shards import ArrayShardWriter, write_stream

    rng = np.random.default_rng(27)
    skeletons = [load_keypoint_file(SHARED / "keypoints" / name) for name in KEYPOINT_FILES]
    records = json.loads((SHARED / "metadata" / "tiktok_scraper_sample.json").read_text())
    work = root / "work"
    clips = []
    for i in range(CLIPS):
        cid = hashlib.sha256(f"epoch-clip-{i}".encode()).hexdigest()
        rows, valid = _clip_rows(i, rng, skeletons)
        write_stream(work, "pose", cid, rows, valid, fps=RATES["pose"])
        for modality, dim in DIMS.items():
            if modality == "scenic" and i % 7 == 3:
                continue  # no shard of this stream: absent
            seconds = float(rng.uniform(2.0, 20.0))
            length = max(1, int(seconds * RATES[modality]))
            features = rng.normal(size=(length, dim)).astype(np.float32)
            valid = rng.random(length) > (1.0 if modality == "facial" and i % 5 == 1 else 0.15)
            write_stream(work, modality, cid, features, valid, fps=RATES[modality])
        rec = records[i % len(records)]
        clips.append(
            {
                "clip_id": cid,
                "video_id": f"{rec['id']}-{i}",
                "path": f"clip-{i}.mp4",
                "challenge": CHALLENGES[i % len(CHALLENGES)],
                "uploader_id": f"uploader-{i}",
                "uploader_followers": 500,
                "likes": int(rec["diggCount"]) + i,
                "comments": int(rec["commentCount"]),
                "reposts": int(rec["shareCount"]),
                "create_time": datetime.fromtimestamp(int(rec["createTime"]), tz=UTC),
                "crawl_time": datetime(2021, 1, 6, 15, 51, 49, tzinfo=UTC),
                "duration_s": 10.0,
            }
        )
    tables.replace_table(clips, tables.CLIPS, work)
    config = virality.ScoreConfig()
    virality.write_scores(virality.score_clips(clips, config), config, work)
    writers = {m: [ArrayShardWriter(m, DIMS.get(m, 48), name="arrays")] for m in ("pose", *DIMS)}
    summary = package_release(
        work, root / "release", allow_untrained=True, salt="epoch-digest", extractors=writers, allow_missing=True
    )
    return work, summary.path


def epoch_digest(source_path: Path) -> tuple[str, int]:
    """(sha256 of the first epoch's batches, clips in it) of ``vdv train``'s loader on a source."""
    from models.data import DataConfig, ViralityDataset, open_source, side_ids, track_split
    from models.train import TrainConfig, _make_loader

    config = TrainConfig().resolved()
    source = open_source(source_path)
    ds = ViralityDataset(source, config.modalities, clip_ids=side_ids(track_split(source, "all"), "train"))
    assert ds.config == DataConfig()
    digest = hashlib.sha256()
    for batch in _make_loader(ds, config, shuffle=True, seed=config.seed):
        for key in sorted(batch):
            value = batch[key]
            if isinstance(value, list):
                digest.update(f"{key}:{value}".encode())
                continue
            array = value.numpy()
            digest.update(f"{key}:{array.dtype}:{array.shape}".encode())
            digest.update(np.ascontiguousarray(array).tobytes())
    return digest.hexdigest(), len(ds)


if __name__ == "__main__":  # the golden values: python -m tests.support.epoch DIR
    import sys

    work, release = build(Path(sys.argv[1]))
    print(json.dumps({"work": epoch_digest(work), "release": epoch_digest(release)}))
