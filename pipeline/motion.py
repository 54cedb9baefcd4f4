"""Camera motion and shot cuts between consecutive sampled frames (SPEC section 2, choice).

Global motion
-------------
Both frames are shrunk to ``width`` pixels wide and turned grey. Corners (Shi-Tomasi) are taken
from the earlier frame *outside the people's boxes*, so that a dancer's movement is not read as
camera movement, tracked into the later frame with pyramidal Lucas-Kanade, and a similarity
transform (translation, rotation, uniform scale) is fitted with RANSAC. The camera's speed is
how far that transform moves the frame's four corners, on average, as a share of the frame
diagonal per second. A pair with fewer than ``min_points`` tracked background corners (a
person filling the frame, a blank wall) is left unmeasured rather than guessed.

Shot cuts
---------
The Bhattacharyya distance between the hue-saturation histograms of the two frames (0 for the
same colours, 1 for disjoint ones). A dancer moving in front of a fixed background changes
little of the histogram; a cut to another scene changes most of it.
"""

from __future__ import annotations

from dataclasses import dataclass

import cv2
import numpy as np


@dataclass(frozen=True)
class MotionParams:
    """Thresholds of the estimate; :class:`pipeline.visual.VisualConfig` holds the configured values."""

    width: int = 160  # frames are shrunk to this width for the estimate
    max_corners: int = 300
    min_points: int = 12  # fewer tracked background corners: the pair is unmeasured
    hist_bins: int = 32  # per axis of the hue-saturation histogram


@dataclass(frozen=True)
class PreparedFrame:
    grey: np.ndarray  # (h, w) uint8, shrunk
    hist: np.ndarray  # normalised hue-saturation histogram
    scale: float  # shrunk width / original width


@dataclass(frozen=True)
class PairMotion:
    dt: float  # seconds between the two frames
    speed: float | None  # corner displacement / diagonal / second; None when unmeasured
    points: int  # tracked background corners (RANSAC inliers)
    hist_distance: float  # Bhattacharyya distance of the hue-saturation histograms


def prepare(image: np.ndarray, params: MotionParams = MotionParams()) -> PreparedFrame:
    """Shrink, grey and histogram one upright RGB frame."""
    height, width = image.shape[:2]
    scale = min(1.0, params.width / width)
    small = cv2.resize(
        image, (max(8, round(width * scale)), max(8, round(height * scale))), interpolation=cv2.INTER_AREA
    )
    grey = cv2.cvtColor(small, cv2.COLOR_RGB2GRAY)
    hsv = cv2.cvtColor(small, cv2.COLOR_RGB2HSV)
    hist = cv2.calcHist([hsv], [0, 1], None, [params.hist_bins, params.hist_bins], [0, 180, 0, 256])
    cv2.normalize(hist, hist, 1.0, 0.0, cv2.NORM_L1)
    return PreparedFrame(grey, hist, scale)


def background_mask(frame: PreparedFrame, boxes: list[tuple[int, int, int, int]]) -> np.ndarray:
    """255 outside the people's boxes (boxes in original pixels), 0 inside."""
    mask = np.full(frame.grey.shape, 255, dtype=np.uint8)
    for x0, y0, x1, y1 in boxes:
        s = frame.scale
        mask[int(y0 * s) : int(np.ceil(y1 * s)), int(x0 * s) : int(np.ceil(x1 * s))] = 0
    return mask


def hist_distance(a: PreparedFrame, b: PreparedFrame) -> float:
    return float(cv2.compareHist(a.hist, b.hist, cv2.HISTCMP_BHATTACHARYYA))


def pair_motion(
    a: PreparedFrame,
    b: PreparedFrame,
    dt: float,
    boxes: list[tuple[int, int, int, int]] = (),
    params: MotionParams = MotionParams(),
) -> PairMotion:
    """Camera speed and histogram distance from frame ``a`` to frame ``b``, ``dt`` seconds later.

    ``boxes`` are the people's boxes (original pixels) in either frame; corners inside them are
    not used.
    """
    distance = hist_distance(a, b)
    if a.grey.shape != b.grey.shape or dt <= 0:
        return PairMotion(dt, None, 0, distance)
    corners = cv2.goodFeaturesToTrack(
        a.grey, maxCorners=params.max_corners, qualityLevel=0.01, minDistance=4, mask=background_mask(a, list(boxes))
    )
    if corners is None or len(corners) < params.min_points:
        return PairMotion(dt, None, 0 if corners is None else len(corners), distance)
    moved, status, _ = cv2.calcOpticalFlowPyrLK(a.grey, b.grey, corners, None, winSize=(21, 21), maxLevel=3)
    ok = status.reshape(-1) == 1
    src, dst = corners.reshape(-1, 2)[ok], moved.reshape(-1, 2)[ok]
    if len(src) < params.min_points:
        return PairMotion(dt, None, int(len(src)), distance)
    matrix, inliers = cv2.estimateAffinePartial2D(src, dst, method=cv2.RANSAC, ransacReprojThreshold=1.0)
    n_in = int(inliers.sum()) if inliers is not None else 0
    if matrix is None or n_in < params.min_points:
        return PairMotion(dt, None, n_in, distance)
    h, w = a.grey.shape
    frame_corners = np.array([[0, 0, 1], [w, 0, 1], [0, h, 1], [w, h, 1]], dtype=np.float64)
    shift = np.linalg.norm(frame_corners @ matrix.T - frame_corners[:, :2], axis=1).mean()
    return PairMotion(dt, float(shift / np.hypot(w, h) / dt), n_in, distance)
