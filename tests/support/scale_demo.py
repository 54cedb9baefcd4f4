"""A built work directory of two real clips, as ``bench/bench_scale.py`` copies one, made cheaply.

``make demo`` decodes and extracts every clip (minutes); ``bench_scale`` only needs what a build
leaves: the ``clips`` table, kept clips in ``screening``, their pixel-rule shards and their
feature shards of every modality. :func:`build` makes that from the real sample data in place:

- ``raw/`` links two real clips (``stgcn_ta_chi.mp4``, ``tfjs_pose_squats.mp4``) and the real
  metadata sample, with their real video ids in ``pairing.csv``; ``clips`` is written by the real
  ingest stage (probing the files);
- the pixel rules are *not* run (they decode the video): each clip's shard holds a passing result
  of each of the three pixel rules, written through :meth:`pipeline.screening.stage.PixelRules.store`, and
  ``screening`` is written by the real screen stage reusing them (the cheap rules are real);
- the feature shards are written by the pipeline's shard writer at each modality's real width:
  pose rows from the real tfjs keypoint files, seeded random holistic, facial and scenic
  sequences of two seconds.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[2]
SHARED = ROOT.parent / "shared" / "data"
CLIPS = {  # file -> (video id, challenge), as data/demo/pairing.csv pairs them
    "stgcn_ta_chi.mp4": ("6899121222454463749", "#dancechallenge"),
    "tfjs_pose_squats.mp4": ("6898819208759479557", "#workoutchallenge"),
}
KEYPOINTS = {"stgcn_ta_chi.mp4": "tfjs_pose_1.json", "tfjs_pose_squats.mp4": "tfjs_pose_squats.full.json"}
PIXEL_RULES = ("one_dancer", "upper_body_visible", "camera_motion")


def build(root: Path) -> tuple[Path, Path, Path, Path]:
    """(work directory, raw directory, pairing file, config file) under ``root``."""
    from pipeline.modalities import registry as modalities
    from pipeline.screening.rules import RuleResult
    from pipeline.screening.stage import PixelRules
    from pipeline.sections import load_config
    from pipeline.stages import run_ingest, run_screen
    from tests.support.keypoints import load_keypoint_file
    from tests.support.shards import write_stream

    raw = root / "raw"
    (raw / "clips").mkdir(parents=True)
    (raw / "metadata").mkdir()
    for name in CLIPS:
        (raw / "clips" / name).symlink_to(SHARED / "clips" / name)
    (raw / "metadata" / "tiktok_scraper_sample.json").symlink_to(SHARED / "metadata" / "tiktok_scraper_sample.json")
    pairing = root / "pairing.csv"
    pairing.write_text("file,video_id,challenge\n" + "".join(f"{f},{v},{c}\n" for f, (v, c) in CLIPS.items()))
    config_path = ROOT / "data" / "demo" / "config.toml"
    config = load_config(config_path)
    work = root / "work"
    clips = run_ingest(raw, work, config, pairing=pairing).clips
    pixels = PixelRules(config, work, thumbnails=True)
    rng = np.random.default_rng(27)
    for clip in clips:
        pixels.store(clip, [RuleResult(rule, True, [], {"frames": 8}) for rule in PIXEL_RULES], 0.0)
        name = Path(clip["path"]).name
        rows = load_keypoint_file(SHARED / "keypoints" / KEYPOINTS[name])
        write_stream(work, "pose", clip["clip_id"], rows, fps=25.0)
        for record in modalities.registered():
            if record.name == "pose":
                continue
            rate = record.default_rate()
            length = max(1, int(2.0 * rate))
            write_stream(
                work, record.name, clip["clip_id"], rng.normal(size=(length, record.dim)).astype(np.float32), fps=rate
            )
    kept = run_screen(work, config, pixels=pixels).kept
    if len(kept) != len(CLIPS) or pixels.computed:
        raise AssertionError(f"the two sample clips should be kept from their stored pixel rules: {kept}")
    return work, raw, pairing, config_path
