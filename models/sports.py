"""Sports rating extension (SPEC section 8): AQA-7 / UNLV-Sports as distributed.

Layout read (as the AQA-7 archive unpacks)::

    <root>/Seven/<class>-out/<NNN>/img_<xxxxx>.jpg      frames of sample NNN (1-based, 3 digits)
    <root>/Split_4/split_4_train_list.mat                key consolidated_train_list
    <root>/Split_4/split_4_test_list.mat                 key consolidated_test_list

Each split row is ``(class index, sample number, score)``. Class indices are 1-based in the
order of the AQA-7 paper (Parmar and Morris, 2019): diving, gym vault, ski big air, snowboard
big air, synchronised diving 3 m, synchronised diving 10 m, trampoline. Expert scores are not
bounded by 100 (synchronised diving goes above it), so they are kept raw and normalised per
class by min-max for training, like VDV's per-challenge scores (paper eq. 2). Rows can repeat in
the distributed lists: they are deduplicated on (class, sample), the first row winning; a
repeated row whose score differs is reported, not silently merged.

The same framework runs with the skeletal and holistic streams only (SPEC section 8). A sample
becomes a clip: its frames are encoded (PyAV) into a temporary MP4 at ``fps`` and handed to the
pipeline's own extractors (``extract_to``), so a sports clip gets exactly the features, shards
and provenance of a dance clip; its clip id is the sha256 of ``aqa7/<class>/<NNN>``.
"""

from __future__ import annotations

import hashlib
import logging
import tempfile
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from pipeline import tables
from pipeline.errors import ClipError, Reason

log = logging.getLogger(__name__)

AQA7_CLASSES: tuple[str, ...] = (
    "diving",
    "gym_vault",
    "ski_big_air",
    "snowboard_big_air",
    "sync_diving_3m",
    "sync_diving_10m",
    "trampoline",
)
SPLIT_FILES = {
    "train": ("split_4_train_list.mat", "consolidated_train_list"),
    "test": ("split_4_test_list.mat", "consolidated_test_list"),
}
STREAMS: tuple[str, ...] = ("skeletal", "holistic")  # SPEC section 8


@dataclass(frozen=True)
class SportsConfig:
    """How AQA-7 samples become clips. Config section ``[sports]``."""

    fps: float = 25.0  # rate at which a sample's frames are played (one frame per grid step)
    classes: tuple[str, ...] = AQA7_CLASSES  # folder stem of class index i+1 is classes[i]


@dataclass(frozen=True)
class SportsSample:
    class_index: int  # 1-based, as in the split files
    sample: int  # 1-based sample number: folder NNN
    score: float  # expert score, raw
    split: str
    frames_dir: Path
    class_name: str

    @property
    def clip_id(self) -> str:
        return hashlib.sha256(f"aqa7/{self.class_name}/{self.sample:03d}".encode()).hexdigest()


def read_split(
    root: str | Path, split: str, config: SportsConfig = SportsConfig()
) -> tuple[list[SportsSample], list[dict]]:
    """Samples of one split, deduplicated on (class, sample); also the problems found, as records.

    A problem (unknown class, missing frame folder, conflicting duplicate) is returned with a
    reason, never raised for the whole split and never dropped silently.
    """
    from scipy.io import loadmat

    filename, key = SPLIT_FILES[split]
    path = Path(root) / "Split_4" / filename
    mat = loadmat(path)
    if key not in mat:
        raise KeyError(f"{path}: no key {key!r} (keys: {sorted(k for k in mat if not k.startswith('__'))})")
    rows = np.asarray(mat[key], dtype=np.float64).reshape(-1, 3)
    seen: dict[tuple[int, int], float] = {}
    samples: list[SportsSample] = []
    problems: list[dict] = []
    for cls, num, score in rows:
        cls_i, num_i = int(round(cls)), int(round(num))
        if (cls_i, num_i) in seen:
            if seen[(cls_i, num_i)] != float(score):
                problems.append(
                    {
                        "class_index": cls_i,
                        "sample": num_i,
                        "reason": "conflicting_duplicate",
                        "message": f"score {score} after {seen[(cls_i, num_i)]}; first kept",
                    }
                )
            continue
        seen[(cls_i, num_i)] = float(score)
        if not 1 <= cls_i <= len(config.classes):
            problems.append(
                {"class_index": cls_i, "sample": num_i, "reason": "unknown_class", "message": f"class index {cls_i}"}
            )
            continue
        name = config.classes[cls_i - 1]
        frames = Path(root) / "Seven" / f"{name}-out" / f"{num_i:03d}"
        if not frames.is_dir() or not any(frames.glob("img_*.jpg")):
            problems.append(
                {
                    "class_index": cls_i,
                    "sample": num_i,
                    "reason": Reason.NO_CLIP.value,
                    "message": f"no frames in {frames}",
                }
            )
            continue
        samples.append(SportsSample(cls_i, num_i, float(score), split, frames, name))
    for p in problems:
        log.warning(
            "AQA-7 %s split: class %s sample %s: %s (%s)",
            split,
            p["class_index"],
            p["sample"],
            p["reason"],
            p["message"],
        )
    return samples, problems


def frame_paths(sample: SportsSample) -> list[Path]:
    """The sample's frames in numeric order (``img_00002`` before ``img_00010``)."""
    return sorted(sample.frames_dir.glob("img_*.jpg"), key=lambda p: int(p.stem.split("_")[-1]))


def encode_frames(paths: Sequence[Path], out: Path, fps: float) -> Path:
    """Encode JPEG frames into an H.264 MP4 (even size, yuv420p) so extractors read a video."""
    import av
    import cv2

    first = cv2.imread(str(paths[0]))
    if first is None:
        raise ClipError(None, Reason.UNREADABLE, f"cannot read {paths[0]}")
    h, w = first.shape[0] // 2 * 2, first.shape[1] // 2 * 2
    with av.open(str(out), "w") as container:
        stream = container.add_stream("libx264", rate=int(round(fps)))
        stream.width, stream.height, stream.pix_fmt = w, h, "yuv420p"
        stream.options = {"crf": "18", "preset": "veryfast"}
        for p in paths:
            img = cv2.imread(str(p))
            if img is None:
                raise ClipError(None, Reason.UNREADABLE, f"cannot read {p}")
            img = cv2.cvtColor(cv2.resize(img, (w, h)) if img.shape[:2] != (h, w) else img, cv2.COLOR_BGR2RGB)
            for packet in stream.encode(av.VideoFrame.from_ndarray(img, format="rgb24")):
                container.mux(packet)
        for packet in stream.encode():
            container.mux(packet)
    return out


def normalised_scores(samples: Iterable[SportsSample]) -> dict[str, float]:
    """clip id -> per-class min-max score in [0, 1] (0.5 for a class whose scores are all equal)."""
    samples = list(samples)
    out: dict[str, float] = {}
    for cls in {s.class_index for s in samples}:
        group = [s for s in samples if s.class_index == cls]
        lo, hi = min(s.score for s in group), max(s.score for s in group)
        for s in group:
            out[s.clip_id] = 0.5 if hi == lo else (s.score - lo) / (hi - lo)
    return out


def prepare_aqa7(root: str | Path, work: str | Path, extractors: dict, config: SportsConfig = SportsConfig()) -> dict:
    """Extract the streams of every AQA-7 sample into ``work`` and write its scores and splits.

    ``extractors`` maps a stream name (``skeletal``, ``holistic``) to a pipeline
    ``FeatureExtractor``. Writes ``<work>/features/...`` shards, ``<work>/scores`` (challenge =
    class name, raw score = expert score, score = per-class min-max) and
    ``<work>/rejections/rejections.sports.parquet`` for every problem. Returns
    ``{"train": [clip ids], "test": [clip ids], "rejected": n}``.
    """
    work = Path(work)
    samples, problems = [], []
    for split in ("train", "test"):
        s, p = read_split(root, split, config)
        samples += s
        problems += [{**x, "split": split} for x in p]
    rejections = [
        {
            "stage": "sports",
            "clip_id": None,
            "video_id": f"{p['class_index']}/{p['sample']}",
            "path": None,
            "reason": p["reason"],
            "message": p["message"],
        }
        for p in problems
    ]
    kept: list[SportsSample] = []
    with tempfile.TemporaryDirectory() as tmp:
        for s in samples:
            video = Path(tmp) / f"{s.clip_id[:16]}.mp4"
            try:
                encode_frames(frame_paths(s), video, config.fps)
                for extractor in extractors.values():
                    extractor.extract_to(work, video, s.clip_id)
            except ClipError as err:
                rejections.append(
                    {
                        "stage": "sports",
                        "clip_id": s.clip_id,
                        "video_id": f"{s.class_index}/{s.sample}",
                        "path": str(s.frames_dir),
                        "reason": err.reason.value,
                        "message": err.message,
                    }
                )
                continue
            finally:
                video.unlink(missing_ok=True)
            kept.append(s)
    norm = normalised_scores(kept)
    tables.replace_table(
        [
            {
                "clip_id": s.clip_id,
                "video_id": f"{s.class_index}/{s.sample:03d}",
                "challenge": s.class_name,
                "existing_days": 0.0,  # expert scores do not accumulate over time
                "raw_score": s.score,
                "score": norm[s.clip_id],
                "out_of_scale": False,
                "degenerate_challenge": len({x.score for x in kept if x.class_index == s.class_index}) == 1,
            }
            for s in kept
        ],
        tables.SCORES,
        work,
    )
    tables.write_table(rejections, tables.REJECTIONS, tables.shard_path(work, "rejections", "sports"))
    return {
        "train": [s.clip_id for s in kept if s.split == "train"],
        "test": [s.clip_id for s in kept if s.split == "test"],
        "rejected": len(rejections),
    }
