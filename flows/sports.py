"""The AQA-7 recipe (SPEC section 8): the samples ingested, extracted and scored into a work dir.

A sample of AQA-7 / UNLV-Sports (read by :func:`models.sports.read_split`) becomes a clip: its
frames are encoded (PyAV) into a temporary MP4 at ``fps`` and handed to the pipeline's own
extraction stage (:func:`pipeline.extraction.stage.run_extraction`: one decode pass per clip for every
modality, the attempt ledger, the extraction rejections), so a sports clip gets exactly the
features, shards and provenance of a dance clip; its clip id is the sha256 of
``aqa7/<class>/<NNN>``. The scores, their scale and the sports rejections are written by the
score stage's writer (:func:`pipeline.scoring.virality.write_scores`, stage ``sports``). Training and
evaluation on what this prepares is :func:`models.sports.train_sports`.
"""

from __future__ import annotations

import json
import tempfile
from collections.abc import Sequence
from pathlib import Path

from models.sports import SportsConfig, SportsSample, class_scales, normalised_scores, read_split
from pipeline.core.errors import ClipError, Reason, rejection_row
from pipeline.extraction import stage as extraction
from pipeline.scoring.virality import ChallengeScale, ScoreResult, write_scores

SCALE_PARAMS = json.dumps({"score": "AQA-7 expert score", "scale": "per-class min-max over the Split_4 train samples"})


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


def prepare_aqa7(
    root: str | Path, work: str | Path, plan: extraction.ExtractionPlan, config: SportsConfig | None = None
) -> dict:
    """Extract the streams of every AQA-7 sample into ``work`` and write its scores and splits.

    ``plan`` is the extraction plan of the streams (:func:`pipeline.extraction.stage.plan_extraction`
    of ``pose`` and ``holistic``). Writes ``<work>/features/...`` shards and the extraction
    rejections (the extraction stage's), ``<work>/scores`` and ``score_scale`` (challenge = class
    name, raw score = expert score, score = per-class min-max on the train samples) and
    ``<work>/rejections/rejections.sports.parquet`` for every other problem. Returns
    ``{"train": [clip ids], "test": [clip ids], "rejected": n}``.
    """
    work, config = Path(work), config or SportsConfig()
    samples, rejections = [], []
    for split in ("train", "test"):
        found, problems = read_split(root, split, config)
        samples += found
        rejections += [_rejection(f"{p['class_index']}/{p['sample']}", p["reason"], p["message"]) for p in problems]
    kept, failed = _extract(samples, work, plan, config.fps, rejections)
    norm = normalised_scores(kept)
    for s in kept:
        if s.clip_id not in norm:
            message = f"class {s.class_name} has no train sample to fit its score scale on"
            rejections.append(_sample_rejection(s, Reason.NO_SCALE.value, message))
    kept = [s for s in kept if s.clip_id in norm]
    scores = ScoreResult(_score_rows(kept, norm), _class_scales(kept), rejections)
    write_scores(scores, SCALE_PARAMS, work, stage="sports")
    return {
        "train": [s.clip_id for s in kept if s.split == "train"],
        "test": [s.clip_id for s in kept if s.split == "test"],
        "rejected": len(rejections) + failed,
    }


def _rejection(
    video_id: str, reason: str, message: str, *, clip_id: str | None = None, path: str | None = None
) -> dict:
    """A row of the rejections table of the sports stage (``reason``: a :class:`Reason` value)."""
    return rejection_row("sports", Reason(reason), message, clip_id=clip_id, video_id=video_id, path=path)


def _sample_rejection(s: SportsSample, reason: str, message: str) -> dict:
    return _rejection(f"{s.class_index}/{s.sample}", reason, message, clip_id=s.clip_id, path=str(s.frames_dir))


def _extract(
    samples: list[SportsSample], work: Path, plan: extraction.ExtractionPlan, fps: float, rejections: list[dict]
) -> tuple[list[SportsSample], int]:
    """Every sample through the extraction stage, its frames encoded into a temporary MP4 just
    before its turn; returns the samples every stream was extracted for, and how many samples
    failed extraction (a sample whose frames do not encode gets a sports rejection instead, one
    whose extraction failed its extraction rejection)."""
    by_id = {s.clip_id: s for s in samples}
    with tempfile.TemporaryDirectory() as tmp:
        clips = [
            {
                "clip_id": s.clip_id,
                "path": str(Path(tmp) / f"{s.clip_id[:16]}.mp4"),
                "video_id": f"{s.class_index}/{s.sample:03d}",
            }
            for s in samples
        ]

        def encoded_then_extracted(jobs: list[dict]):
            for job in jobs:
                s, video = by_id[job["clip"]["clip_id"]], Path(job["clip"]["path"])
                try:
                    encode_frames(frame_paths(s), video, fps)
                except ClipError as err:
                    rejections.append(_sample_rejection(s, err.reason.value, err.message))
                    continue
                try:
                    yield job["clip"], extraction.attempt_clip(**job)
                finally:
                    video.unlink(missing_ok=True)

        # a sample's id names it, not its temporary MP4's bytes: no file to confirm against an ingest
        run = extraction.run_extraction(work, clips, plan, run_clips=encoded_then_extracted, confirm=False)
    done: dict[str, set[str]] = {}
    for it in run.items:
        if it.status != extraction.REJECTED:
            done.setdefault(it.clip_id, set()).add(it.modality)
    failed = {it.clip_id for it in run.items if it.status == extraction.REJECTED}
    return [s for s in samples if done.get(s.clip_id) == set(plan.modalities)], len(failed)


def _class_scales(kept: Sequence[SportsSample]) -> dict[str, ChallengeScale]:
    """class name -> the train samples' score range (the scale the scores were normalised on)."""
    names = {s.class_index: s.class_name for s in kept}
    return {
        names[c]: ChallengeScale(names[c], lo, hi, sum(s.split == "train" and s.class_index == c for s in kept))
        for c, (lo, hi) in class_scales(kept).items()
    }


def _score_rows(kept: Sequence[SportsSample], norm: dict[str, float]) -> list[dict]:
    """Rows of the scores table (:data:`pipeline.core.tables.SCORES`): one per sample, class = challenge."""
    train_scores: dict[int, set[float]] = {}
    for s in kept:
        if s.split == "train":
            train_scores.setdefault(s.class_index, set()).add(s.score)
    return [
        {
            "clip_id": s.clip_id,
            "video_id": f"{s.class_index}/{s.sample:03d}",
            "challenge": s.class_name,
            "existing_days": 0.0,  # expert scores do not accumulate over time
            "raw_score": s.score,
            "score": norm[s.clip_id],
            "out_of_scale": not 0.0 <= norm[s.clip_id] <= 1.0,
            "degenerate_challenge": len(train_scores.get(s.class_index, ())) == 1,
        }
        for s in kept
    ]
