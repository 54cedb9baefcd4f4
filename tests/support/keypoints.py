"""The real keypoint files of ``../shared/data/keypoints`` (tfjs pose-detection outputs) as MPII rows."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np

from pipeline.modalities.skeleton import BLAZEPOSE_LANDMARKS, BLAZEPOSE_OF_COCO, COCO17, coco17_to_mpii


def load_keypoint_file(path: str | Path) -> np.ndarray:
    """A tfjs pose-detection test file as MPII rows ``(T, 48)``.

    Two layouts are read: a list of frames each a dict of COCO-17 names -> ``{x, y[, score]}``
    (``tfjs_pose_1.json``), and a list of frames of 33 BlazePose landmarks ``[x, y, z]``
    (``tfjs_pose_squats.full.json``). Files without scores get confidence 1.
    """
    frames = json.loads(Path(path).read_text())
    if not frames:
        raise ValueError(f"{path}: no frames")
    if isinstance(frames[0], dict):
        xy = np.array([[[f[n]["x"], f[n]["y"]] for n in COCO17] for f in frames], np.float32)
        conf = np.array([[f[n].get("score", 1.0) for n in COCO17] for f in frames], np.float32)
        return coco17_to_mpii(xy, conf)
    arr = np.asarray(frames, dtype=np.float32)
    if arr.ndim != 3 or arr.shape[1] != BLAZEPOSE_LANDMARKS:
        raise ValueError(f"{path}: expected frames of 33 BlazePose landmarks, got shape {arr.shape}")
    return coco17_to_mpii(arr[:, BLAZEPOSE_OF_COCO, :2])
