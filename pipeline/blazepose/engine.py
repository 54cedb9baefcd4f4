"""BlazePose's tracking graph in torch, advancing many clips one frame at a time.

:class:`PoseEngine` runs mediapipe's ``PoseLandmarkCpu`` graph (what ``mp.solutions.pose.Pose``
runs) for any number of clips at once. Each clip holds a *slot*: its region of interest (ROI) from
the previous frame and its landmark filters. :meth:`PoseEngine.step` takes
one frame of each of several slots and makes one batched forward of each network:

1. slots without an ROI (a new clip, or one that lost its person) run the person detector on the
   letterboxed frame; its first detection gives the ROI (:mod:`pipeline.blazepose.calculators`);
2. every slot with an ROI is cropped (256 x 256, rotated) and the landmark network runs on the
   batch of crops; a pose flag at or below ``min_tracking_confidence`` drops the track, so the next
   frame runs the detector again;
3. landmarks are refined from the heatmap, projected to the frame, smoothed (visibility low-pass,
   one-euro filters timed as mediapipe's Python API times them: 30 Hz whatever the clip's rate),
   and the next frame's ROI is built from the two auxiliary landmarks *after* filtering;
4. with segmentation on, the mask is warped back onto the frame (or a smaller picture of it). The
   graph then blends it with the previous frame's mask (SegmentationSmoothingCalculator), but the
   binary's "smoothed" mask is its unsmoothed one: against ``mp.solutions.pose`` the mask IoU is
   0.996 without the blend and 0.971 with it (four clips, 100 frames each), so there is no blend.

A slot's result never depends on which other slots share its steps: every operation is per row,
the detector runs only on the rows that need it, and the crops are continuous in the ROI
(``tests/test_blazepose.py`` checks 1e-4 px whatever the batch). ``static=True`` is mediapipe's
static image mode (the detector on every frame, no filters), which the people counter uses.

Device and precision are the caller's (:func:`pipeline.runtime.place`); frames are uploaded as
uint8 and every crop is made on the device.
"""

from __future__ import annotations

import contextlib
import logging
from dataclasses import dataclass

import numpy as np
import torch
import torch.nn.functional as F

from pipeline.blazepose import calculators as calc

log = logging.getLogger(__name__)

DTYPES = {"float32": torch.float32, "float16": torch.float16, "bfloat16": torch.bfloat16}


@dataclass(frozen=True)
class TrackOptions:
    """What decides a track's output besides its frames (``mp.solutions.pose.Pose``'s arguments)."""

    min_detection_confidence: float = 0.5
    min_tracking_confidence: float = 0.5
    smooth_landmarks: bool = True
    static: bool = False  # detector on every frame, no smoothing
    segmentation: bool = False


@dataclass
class Result:
    """One frame of one slot: the 33 landmarks (x, y in pixels of the frame, visibility) or
    None, and the segmentation probabilities (float32, at the size asked for) or None."""

    landmarks: np.ndarray | None
    segmentation: np.ndarray | None = None


class Networks:
    """The detector and the landmark network on one device and precision, loaded once."""

    def __init__(self, device: str = "cpu", precision: str = "float32", *, cache_dir=None):
        from pipeline.blazepose.weights import load_network

        self.device = torch.device(device)
        self.precision = precision
        self.dtype = DTYPES[precision]
        self.detector, self.detector_sha256 = load_network("blazepose_detector", self.device, self.dtype, cache_dir)
        self.landmark, self.landmark_sha256 = load_network(
            "blazepose_landmark_full", self.device, self.dtype, cache_dir
        )
        self.anchors = torch.from_numpy(calc.ssd_anchors()).to(self.device)

    def run(self, net: torch.nn.Module, x: torch.Tensor) -> dict[str, torch.Tensor]:
        """One forward in the networks' precision; float32 on CUDA without TF32, whose 10-bit
        mantissa would make "float32" lose more than float16 does."""
        exact = self.device.type == "cuda" and self.dtype == torch.float32
        flags = torch.backends.cudnn.flags(enabled=True, allow_tf32=False) if exact else contextlib.nullcontext()
        with torch.inference_mode(), flags:
            out = net(x.to(self.dtype).contiguous(memory_format=torch.channels_last))
        return {k: v.float() for k, v in out.items()}


class PoseEngine:
    """Tracking BlazePose for many clips (module docstring). Not thread-safe: one caller steps it
    (:class:`pipeline.batching.BatchServer` serialises the clips of a process)."""

    def __init__(self, nets: Networks, options: TrackOptions = TrackOptions(), capacity: int = 8):
        self.nets, self.options = nets, options
        self._free: list[int] = []
        self._used = 0
        self._allocate(capacity)

    # -- slots -------------------------------------------------------------------------------

    def _allocate(self, capacity: int) -> None:
        old = getattr(self, "roi", None)
        self.capacity = capacity
        roi = np.zeros((capacity, 4))
        has_roi = np.zeros(capacity, dtype=bool)
        time_us = np.zeros(capacity, dtype=np.int64)
        if old is not None:
            n = len(old)
            roi[:n], has_roi[:n], time_us[:n] = self.roi, self.has_roi, self.time_us
        self.roi, self.has_roi, self.time_us = roi, has_roi, time_us
        filters = (
            calc.LowPass((capacity, 33), calc.VISIBILITY_ALPHA),
            calc.OneEuro((capacity, 33, 3), *calc.LANDMARK_FILTER),
            calc.OneEuro((capacity, 2, 3), *calc.AUX_FILTER),
        )
        if old is not None:
            for new, previous in zip(filters, (self.visibility, self.landmark_filter, self.aux_filter), strict=True):
                for name, value in vars(previous).items():
                    if isinstance(value, np.ndarray):
                        getattr(new, name)[: len(value)] = value
        self.visibility, self.landmark_filter, self.aux_filter = filters

    def open(self) -> int:
        """A fresh slot for a new clip."""
        if self._free:
            slot = self._free.pop()
        else:
            if self._used == self.capacity:
                self._allocate(self.capacity * 2)
            slot = self._used
            self._used += 1
        self._forget(np.array([slot]))
        self.time_us[slot] = 0
        return slot

    def close(self, slot: int) -> None:
        self._forget(np.array([slot]))
        self._free.append(slot)

    def _forget(self, slots: np.ndarray) -> None:
        """The track of ``slots`` is lost: the next frame detects, the filters start over."""
        self.has_roi[slots] = False
        for f in (self.visibility, self.landmark_filter, self.aux_filter):
            f.reset(slots)

    # -- one step ----------------------------------------------------------------------------

    def step(self, slots, images, mask_sizes=None) -> list[Result]:
        """One frame (H, W, 3 uint8 RGB) for each of ``slots``; ``mask_sizes`` (per slot, a
        (width, height) or None for the frame's size) where segmentation is on."""
        slots = np.asarray(slots, dtype=np.int64)
        if len(set(slots.tolist())) != len(slots):
            raise ValueError("a slot appears twice in one step")
        n = len(slots)
        self.time_us[slots] += calc.FRAME_INTERVAL_US
        frames = [torch.from_numpy(np.ascontiguousarray(im)).to(self.nets.device) for im in images]
        sizes = np.array([(im.shape[1], im.shape[0]) for im in images], dtype=np.float64)
        rois = self.roi[slots].copy()
        tracked = self.has_roi[slots] & (not self.options.static)
        detect = np.flatnonzero(~tracked)
        if len(detect):
            found, det_rois = self._detect([frames[i] for i in detect], sizes[detect])
            rois[detect] = det_rois
            tracked[detect] = found
        results = [Result(None) for _ in range(n)]
        rows = np.flatnonzero(tracked)
        lost = np.ones(n, dtype=bool)
        if len(rows):
            kept, landmarks, aux, seg = self._landmarks([frames[i] for i in rows], rois[rows])
            rows, landmarks, aux = rows[kept], landmarks[kept], aux[kept]
            lost[rows] = False
            if len(rows):
                landmarks, next_roi = self._filter(slots[rows], landmarks, aux)
                for j, i in enumerate(rows):
                    results[i].landmarks = landmarks[j]
                if not self.options.static:
                    self.roi[slots[rows]] = next_roi
                    self.has_roi[slots[rows]] = True
                if seg is not None:
                    seg = seg[torch.as_tensor(kept, device=seg.device)]
                    masks = self._segment(seg, rois[rows], sizes[rows], mask_sizes, rows)
                    for i, mask in zip(rows, masks, strict=True):
                        results[i].segmentation = mask
        self._forget(slots[lost])
        return results

    def _by_size(self, frames: list[torch.Tensor]):
        """Indices of ``frames`` grouped by frame size, each group stacked (g, 3, H, W) float32."""
        groups: dict[tuple, list[int]] = {}
        for i, f in enumerate(frames):
            groups.setdefault(tuple(f.shape), []).append(i)
        for idx in groups.values():
            yield idx, torch.stack([frames[i] for i in idx]).permute(0, 3, 1, 2).float()

    def _detect(self, frames: list[torch.Tensor], sizes: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """The detector on letterboxed frames: (found (n,), ROIs (n, 4) in pixels)."""
        n = len(frames)
        inputs = torch.empty((n, 3, calc.DETECTOR_SIZE, calc.DETECTOR_SIZE), device=self.nets.device)
        pads = np.zeros((n, 2))
        for idx, batch in self._by_size(frames):
            w, h = sizes[idx[0]]
            box, pad = calc.letterbox(int(w), int(h))
            pads[idx] = pad
            boxes = torch.as_tensor(np.repeat(box[None], len(idx), 0), device=self.nets.device)
            crops = calc.crop(batch, boxes, calc.DETECTOR_SIZE, "zeros")
            inputs[torch.as_tensor(idx, device=self.nets.device)] = crops * (2.0 / 255.0) - 1.0
        out = self.nets.run(self.nets.detector, inputs)
        found, _, keypoints = calc.first_detection(
            out["Identity"], out["Identity_1"], self.nets.anchors, self.options.min_detection_confidence
        )
        found = found.cpu().numpy()
        keypoints = keypoints.double().cpu().numpy()  # (n, 4, 2) in the letterboxed square
        points = np.stack([calc.remove_letterbox(keypoints[i], tuple(pads[i])) for i in range(n)]) * sizes[:, None, :]
        return found, calc.alignment_roi(points[:, 0], points[:, 1])

    def _landmarks(self, frames: list[torch.Tensor], rois: np.ndarray):
        """The landmark network on the crops: (kept (n,) bool, landmarks (n, 33, 5) and
        auxiliary landmarks (n, 2, 5) in frame pixels, segmentation logits (n, 1, 256, 256) or None)."""
        n = len(frames)
        inputs = torch.empty((n, 3, calc.CROP_SIZE, calc.CROP_SIZE), device=self.nets.device)
        for idx, batch in self._by_size(frames):
            boxes = torch.as_tensor(rois[idx], device=self.nets.device)
            inputs[torch.as_tensor(idx, device=self.nets.device)] = calc.crop(batch, boxes, calc.CROP_SIZE, "border")
        out = self.nets.run(self.nets.landmark, inputs / 255.0)
        flag = out["Identity_1"][:, 0].cpu().numpy()
        decoded = calc.decode_landmarks(out["Identity"], out["Identity_3"]).double().cpu().numpy()
        projected = calc.project(decoded, rois)
        kept = flag > self.options.min_tracking_confidence  # ThresholdingCalculator: strictly above
        seg = out["Identity_2"] if self.options.segmentation else None
        return kept, projected[:, :33], projected[:, 33:35], seg

    def _filter(self, slots: np.ndarray, landmarks: np.ndarray, aux: np.ndarray):
        """PoseLandmarkFiltering and PoseLandmarksToRoi: (33 x (x, y, visibility), next ROIs)."""
        if self.options.static or not self.options.smooth_landmarks:
            xyz, vis = landmarks[..., :3], landmarks[..., 3]
        else:
            t = self.time_us[slots]
            # OBJECT_SCALE_ROI: the ROI of the raw auxiliary landmarks, before the 1.25 expansion
            scale = 1.0 / calc.alignment_roi(aux[:, 0, :2], aux[:, 1, :2], expand=False)[:, 2]
            vis = self.visibility.apply(slots, landmarks[..., 3])
            xyz = self.landmark_filter.apply(slots, t, scale, landmarks[..., :3])
        next_roi = None
        if not self.options.static:
            t = self.time_us[slots]
            scale = 1.0 / calc.alignment_roi(aux[:, 0, :2], aux[:, 1, :2], expand=False)[:, 2]
            filtered_aux = self.aux_filter.apply(slots, t, scale, aux[..., :3])
            next_roi = calc.alignment_roi(filtered_aux[:, 0, :2], filtered_aux[:, 1, :2])
        out = np.concatenate([xyz[..., :2], vis[..., None]], axis=-1)
        return out, next_roi

    def _segment(self, logits, rois, sizes, mask_sizes, rows) -> list[np.ndarray]:
        """The masks of the tracked rows, each at its asked size (TensorsToSegmentationCalculator's
        sigmoid, WarpAffineCalculator's inverse warp with BORDER_ZERO)."""
        probs = torch.sigmoid(logits)
        masks = []
        for j, row in enumerate(rows.tolist()):
            w, h = (int(v) for v in sizes[j])
            size = (mask_sizes[row] if mask_sizes is not None else None) or (w, h)
            roi = torch.as_tensor(rois[j : j + 1], device=probs.device)
            grid = calc.segmentation_grid(roi, size[0], size[1], w, h).to(probs.dtype)
            mask = F.grid_sample(probs[j : j + 1], grid, mode="bilinear", padding_mode="zeros", align_corners=False)
            masks.append(mask[0, 0].cpu().numpy())
        return masks
