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

Composed motion
---------------
A move that is slow between any two samples can still add up: a zoom of 2 % a second is far
below the per-pair speed limit, yet over 15 s the frame is 35 % larger. :func:`composed_motion`
chains the pairs' similarity transforms into the transform from the *first* sampled frame to
each later one and reports how far the view has moved from where it started: scale change,
rotation, and the shift of the frame centre along each axis as a share of the frame's extent on
that axis (horizontal: of the width; vertical: of the height). An unmeasured pair adds nothing
to the chain (its motion is unknown, not guessed), and a pair between frames of different sizes
(a cut between clips) restarts it.

Why per axis, not as a share of the diagonal: how much of the first view a pan leaves in the
frame depends on the frame's extent along the pan. TikTok clips are portrait (9:16), where the
diagonal is about twice the width: a pan across a quarter of the width over 13 s measured 0.12
of the diagonal, under the old limit of 0.15, which a landscape pan reaches after 17 % of its
width. Per axis it measures 0.24 of the width, whatever the frame's shape
(``tests/test_motion.py`` builds such a clip from a real frame, and one from the real video).

What the estimate relies on: the people's boxes. A dancer the people counter misses on a pair
where he moves fast can outnumber the background's corners, and the pair then measures him
(docs/BEHAVIOUR.md gives what that did to a measured pan).

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
    """Thresholds of the estimate; :class:`pipeline.screening.visual.VisualConfig` holds the configured values."""

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
    # the fitted similarity from the earlier frame to the later one (2 x 3, shrunk pixels), and
    # the shrunk frame's (width, height); None when unmeasured
    matrix: tuple[tuple[float, float, float], tuple[float, float, float]] | None = None
    size: tuple[int, int] | None = None


@dataclass(frozen=True)
class ComposedMotion:
    """How far the view has moved from the first sampled frame, at its furthest (SPEC section 2)."""

    scale_change: float  # max |s - 1| of the composed similarity (0.3: 30 % zoom in or out)
    rotation_deg: float  # max |rotation| in degrees
    shift_x: float  # max horizontal displacement of the frame centre, share of the frame width
    shift_y: float  # max vertical displacement of the frame centre, share of the frame height
    chained_pairs: int  # measured pairs that entered the chain

    @property
    def shift(self) -> float:
        """The larger per-axis shift: what the composed pan rule compares with its limit."""
        return max(self.shift_x, self.shift_y)


def _similarity_parts(m: np.ndarray, width: int, height: int) -> tuple[float, float, float, float]:
    """(scale change, rotation in degrees, centre shift / width, centre shift / height) of a 3 x 3 similarity."""
    a, b = m[0, 0], m[1, 0]
    scale = float(np.hypot(a, b))
    rotation = float(np.degrees(np.arctan2(b, a)))
    centre = np.array([width / 2, height / 2, 1.0])
    dx, dy = (m @ centre)[:2] - centre[:2]
    return abs(scale - 1.0), abs(rotation), abs(float(dx)) / width, abs(float(dy)) / height


def composed_motion(pairs: list[PairMotion]) -> ComposedMotion:
    """Chain the pairs' transforms from the first sampled frame and keep the largest departure."""
    worst = [0.0, 0.0, 0.0, 0.0]
    chained = 0
    total = np.eye(3)
    size = None
    for pair in pairs:
        if pair.matrix is None:
            continue  # unmeasured: nothing known to add
        if size is not None and pair.size != size:
            total = np.eye(3)  # another frame size: a new chain
        size = pair.size
        step = np.vstack([np.asarray(pair.matrix, dtype=np.float64), [0.0, 0.0, 1.0]])
        total = step @ total  # points of the first frame -> points of this pair's later frame
        chained += 1
        for i, value in enumerate(_similarity_parts(total, *size)):
            worst[i] = max(worst[i], value)
    return ComposedMotion(round(worst[0], 4), round(worst[1], 3), round(worst[2], 4), round(worst[3], 4), chained)


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
    fitted = tuple(tuple(float(v) for v in row) for row in matrix)
    return PairMotion(dt, float(shift / np.hypot(w, h) / dt), n_in, distance, fitted, (w, h))
