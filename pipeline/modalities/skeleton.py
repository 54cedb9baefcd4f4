"""The MPII-16 skeleton: joint order, limbs, and the mappings of other estimators onto it.

The one place that defines the skeleton layout. Pose extraction (:mod:`pipeline.modalities.pose`), the
upper-body screening rule and its contact sheets (:mod:`pipeline.screening.visual`) and the skeleton
models (:mod:`models.graph`, :mod:`models.data`) all read it; it imports nothing but numpy, so
the models get the layout without the estimator's libraries (mediapipe, PyAV).

Joint order is SPEC section 4 (the order of the pose feature rows, joint-major: 16 x (x, y,
confidence)); limbs follow the MPII definition (paper section 4.1, Fig. 4a).

BlazePose 33 -> MPII 16 (:func:`blazepose_to_mpii`)
---------------------------------------------------
=====  ============  =====================================================================
MPII   joint         BlazePose landmarks
=====  ============  =====================================================================
0      r-ankle       28 right_ankle
1      r-knee        26 right_knee
2      r-hip         24 right_hip
3      l-hip         23 left_hip
4      l-knee        25 left_knee
5      l-ankle       27 left_ankle
6      pelvis        derived: mean(23, 24)
7      thorax        derived: mean(11, 12), the shoulders' midpoint
8      upper-neck    derived: midway between the mouth centre mean(9, 10) and the thorax
9      head-top      derived: eye centre mean(2, 5) + 2 x (eye centre - mouth centre), i.e.
                     extended from the mouth through the eyes by twice their distance (the
                     crown sits about two eye-mouth distances above the eyes)
10     r-wrist       16 right_wrist
11     r-elbow       14 right_elbow
12     r-shoulder    12 right_shoulder
13     l-shoulder    11 left_shoulder
14     l-elbow       13 left_elbow
15     l-wrist       15 left_wrist
=====  ============  =====================================================================

A derived joint's confidence is the LOWEST confidence of the landmarks it is computed from
(pelvis: 23, 24; thorax: 11, 12; upper neck: 9, 10, 11, 12; head top: 2, 5, 9, 10), so that the
upper-body rule of SPEC section 2 cannot be passed on borrowed confidence.

COCO-17 -> MPII 16 (:func:`coco17_to_mpii`)
-------------------------------------------
For keypoints in the COCO-17 layout (MoveNet, tfjs pose-detection): limbs map one to one;
pelvis = mean of the hips; thorax = mean of the shoulders; COCO has no neck or head top, so
with head centre = mean of the ears, upper neck = midpoint of thorax and head centre and head
top = head centre + (head centre - upper neck). Derived joints take the lowest confidence of
their sources, as above.
"""

from __future__ import annotations

import numpy as np

MPII_JOINTS: tuple[str, ...] = (
    "r_ankle",
    "r_knee",
    "r_hip",
    "l_hip",
    "l_knee",
    "l_ankle",
    "pelvis",
    "thorax",
    "upper_neck",
    "head_top",
    "r_wrist",
    "r_elbow",
    "r_shoulder",
    "l_shoulder",
    "l_elbow",
    "l_wrist",
)
MPII_INDEX: dict[str, int] = {name: i for i, name in enumerate(MPII_JOINTS)}
NUM_JOINTS = len(MPII_JOINTS)

# MPII limbs (paper Fig. 4a): legs to the pelvis, spine to the head, arms to the thorax
LIMBS: tuple[tuple[str, str], ...] = (
    ("r_ankle", "r_knee"),
    ("r_knee", "r_hip"),
    ("r_hip", "pelvis"),
    ("l_hip", "pelvis"),
    ("l_hip", "l_knee"),
    ("l_knee", "l_ankle"),
    ("pelvis", "thorax"),
    ("thorax", "upper_neck"),
    ("upper_neck", "head_top"),
    ("r_wrist", "r_elbow"),
    ("r_elbow", "r_shoulder"),
    ("r_shoulder", "thorax"),
    ("l_shoulder", "thorax"),
    ("l_shoulder", "l_elbow"),
    ("l_elbow", "l_wrist"),
)
EDGES: tuple[tuple[int, int], ...] = tuple((MPII_INDEX[a], MPII_INDEX[b]) for a, b in LIMBS)
"""The limbs as (joint index, joint index) pairs."""


# -- BlazePose 33 -------------------------------------------------------------------------------

BLAZEPOSE_LANDMARKS = 33
BLAZEPOSE_DIRECT: dict[int, int] = {
    0: 28,
    1: 26,
    2: 24,
    3: 23,
    4: 25,
    5: 27,
    10: 16,
    11: 14,
    12: 12,
    13: 11,
    14: 13,
    15: 15,
}
"""MPII index -> the BlazePose landmark it copies (the derived joints are computed)."""
DERIVED_SOURCES: dict[int, tuple[int, ...]] = {6: (23, 24), 7: (11, 12), 8: (9, 10, 11, 12), 9: (2, 5, 9, 10)}
"""MPII index -> BlazePose landmarks a derived joint is computed from (its confidence is their minimum)."""


def blazepose_to_mpii(landmarks: np.ndarray) -> np.ndarray:
    """``(33, 3)`` BlazePose (x, y, confidence) -> ``(16, 3)`` MPII joints (see the module table)."""
    lm = np.asarray(landmarks, dtype=np.float64)
    if lm.shape != (BLAZEPOSE_LANDMARKS, 3):
        raise ValueError(f"expected ({BLAZEPOSE_LANDMARKS}, 3) landmarks, got {lm.shape}")
    out = np.zeros((NUM_JOINTS, 3), dtype=np.float64)
    for mpii, blaze in BLAZEPOSE_DIRECT.items():
        out[mpii] = lm[blaze]
    xy = lm[:, :2]
    pelvis = xy[[23, 24]].mean(axis=0)
    thorax = xy[[11, 12]].mean(axis=0)
    mouth = xy[[9, 10]].mean(axis=0)
    eyes = xy[[2, 5]].mean(axis=0)
    out[6, :2] = pelvis
    out[7, :2] = thorax
    out[8, :2] = (mouth + thorax) / 2.0
    out[9, :2] = eyes + 2.0 * (eyes - mouth)
    for mpii, sources in DERIVED_SOURCES.items():
        out[mpii, 2] = lm[list(sources), 2].min()
    return out


# -- COCO 17 ------------------------------------------------------------------------------------

COCO17: tuple[str, ...] = (
    "nose", "left_eye", "right_eye", "left_ear", "right_ear", "left_shoulder", "right_shoulder",
    "left_elbow", "right_elbow", "left_wrist", "right_wrist", "left_hip", "right_hip",
    "left_knee", "right_knee", "left_ankle", "right_ankle",
)  # fmt: skip
"""COCO-17 joint names in COCO order (MoveNet, tfjs pose-detection)."""
BLAZEPOSE_OF_COCO: tuple[int, ...] = (0, 2, 5, 7, 8, 11, 12, 13, 14, 15, 16, 23, 24, 25, 26, 27, 28)
"""The BlazePose-33 landmark of each COCO-17 joint, in COCO order."""


def coco17_to_mpii(xy: np.ndarray, conf: np.ndarray | None = None) -> np.ndarray:
    """COCO-17 keypoints ``(T, 17, 2)`` -> MPII-16 rows ``(T, 48)`` (x, y, confidence), joint-major.

    See the module docstring for the mapping; ``conf`` (T, 17) defaults to 1.
    """
    xy = np.asarray(xy, dtype=np.float32)
    conf = np.ones(xy.shape[:2], np.float32) if conf is None else np.asarray(conf, np.float32)
    c = {name: i for i, name in enumerate(COCO17)}

    def mean(*names):
        idx = [c[n] for n in names]
        return xy[:, idx].mean(axis=1), conf[:, idx].min(axis=1)

    pelvis = mean("left_hip", "right_hip")
    thorax = mean("left_shoulder", "right_shoulder")
    head, head_c = mean("left_ear", "right_ear")
    neck = ((thorax[0] + head) / 2, np.minimum(thorax[1], head_c))
    top = (head + (head - neck[0]), neck[1])

    def j(name):
        return xy[:, c[name]], conf[:, c[name]]

    order = [
        j("right_ankle"), j("right_knee"), j("right_hip"), j("left_hip"), j("left_knee"), j("left_ankle"),
        pelvis, thorax, neck, top,
        j("right_wrist"), j("right_elbow"), j("right_shoulder"), j("left_shoulder"), j("left_elbow"), j("left_wrist"),
    ]  # fmt: skip
    joints = np.stack([np.concatenate([p, cf[:, None]], axis=1) for p, cf in order], axis=1)
    return joints.reshape(len(xy), NUM_JOINTS * 3).astype(np.float32)
