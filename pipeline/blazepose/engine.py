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

Device and precision are the caller's (:func:`pipeline.core.runtime.place`); frames are uploaded as
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
from pipeline.blazepose.settings import TRACKING, TrackOptions

log = logging.getLogger(__name__)

DTYPES = {"float32": torch.float32, "float16": torch.float16, "bfloat16": torch.bfloat16}


@dataclass
class Result:
    """One frame of one slot: the 33 landmarks (x, y in pixels of the frame, visibility) or
    None, and the segmentation probabilities (float32, at the size asked for) or None."""

    landmarks: np.ndarray | None
    segmentation: np.ndarray | None = None


class Networks:
    """The detector and the landmark network on one device and precision, loaded once."""

    def __init__(self, device: str = "cpu", precision: str = "float32", *, cache_dir=None):
        from pipeline.weights.inference import load_model

        self.device = torch.device(device)
        self.precision = precision
        self.dtype = DTYPES[precision]
        place = {"cache_dir": cache_dir, "device": self.device, "dtype": self.dtype}
        self.detector, detector = load_model("blazepose_detector", **place)
        self.landmark, landmark = load_model("blazepose_landmark_full", **place)
        self.detector_sha256, self.landmark_sha256 = detector.sha256, landmark.sha256
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
    (:class:`pipeline.core.batching.BatchServer` serialises the clips of a process)."""

    def __init__(self, nets: Networks, options: TrackOptions = TRACKING, capacity: int = 8):
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
        (width, height) or None for the frame's size) where segmentation is on.

        Host work per step, not per frame: the rows are ordered by (frame size, mask size), each
        frame size goes up in one copy, the detector's ROIs are made on the device, the landmark
        network runs on every row (a row whose detector found nobody is dropped after it), each
        (frame size, mask size) group's masks are one ``grid_sample``, and everything the step
        returns comes down in one copy (:meth:`_download`)."""
        slots = np.asarray(slots, dtype=np.int64)
        if len(set(slots.tolist())) != len(slots):
            raise ValueError("a slot appears twice in one step")
        n = len(slots)
        self.time_us[slots] += calc.FRAME_INTERVAL_US
        sizes = np.array([(im.shape[1], im.shape[0]) for im in images], dtype=np.float64)
        masks_wh = [self._mask_size(mask_sizes, i, sizes[i]) for i in range(n)]
        order = np.array(sorted(range(n), key=lambda i: (images[i].shape, masks_wh[i])), dtype=np.int64)
        detect = ~(self.has_roi[slots[order]] & (not self.options.static))  # in step order
        rois = self.roi[slots[order]].copy()
        for i in np.flatnonzero(detect):  # until detected: the whole frame (a harmless crop)
            rois[i] = calc.letterbox(*(int(v) for v in sizes[order[i]]))[0]
        blocks = _blocks([images[i].shape for i in order])
        frames = [self._upload([images[order[i]] for i in range(a, b)]) for a, b in blocks]
        rois_dev = torch.from_numpy(rois).to(self.nets.device)
        found = torch.ones(n, dtype=torch.bool, device=self.nets.device)
        if detect.any():
            rois_dev, found = self._detect(frames, blocks, detect, sizes[order], rois_dev, found)
        flag, decoded, seg = self._landmarks(frames, blocks, rois_dev)
        mask_blocks = _blocks([(images[i].shape, masks_wh[i]) for i in order]) if seg is not None else []
        probs = [self._segment(seg, rois_dev, a, b, sizes[order[a]], masks_wh[order[a]]) for a, b in mask_blocks]
        flag, found, rois, decoded, masks = self._download(flag, found, rois_dev, decoded, probs, mask_blocks)
        landmarks = calc.project(decoded, rois)
        kept = found & (flag > self.options.min_tracking_confidence)  # ThresholdingCalculator: strictly above
        results = [Result(None) for _ in range(n)]
        rows = np.flatnonzero(kept)  # step order
        if len(rows):
            owners = order[rows]
            filtered, next_roi = self._filter(slots[owners], landmarks[rows, :33], landmarks[rows, 33:35])
            for j, i in enumerate(owners):
                results[i].landmarks = filtered[j]
                if masks is not None:
                    results[i].segmentation = masks[rows[j]]
            if not self.options.static:
                self.roi[slots[owners]] = next_roi
                self.has_roi[slots[owners]] = True
        lost = np.ones(n, dtype=bool)
        lost[order[rows]] = False
        self._forget(slots[lost])
        return results

    @staticmethod
    def _mask_size(mask_sizes, i: int, size: np.ndarray) -> tuple[int, int]:
        asked = mask_sizes[i] if mask_sizes is not None else None
        return tuple(int(v) for v in (asked or size))

    def _upload(self, images: list[np.ndarray]) -> torch.Tensor:
        """Frames of one size in one copy (pinned and asynchronous on CUDA): (g, 3, H, W) float32."""
        host = torch.from_numpy(np.stack(images))
        cuda = self.nets.device.type == "cuda"
        if cuda:
            host = host.pin_memory()
        return host.to(self.nets.device, non_blocking=cuda).permute(0, 3, 1, 2).float()

    def _detect(self, frames, blocks, detect, sizes, rois, found):
        """The detector on the letterboxed frames of the ``detect`` rows: their ROIs and
        found flags replace ``rois`` (n, 4) and ``found`` (n,), on the device."""
        device = self.nets.device
        inputs, pads, where = [], [], []
        for (a, b), batch in zip(blocks, frames, strict=True):
            pick = np.flatnonzero(detect[a:b])
            if not len(pick):
                continue
            w, h = sizes[a]
            box, pad = calc.letterbox(int(w), int(h))
            if len(pick) < b - a:
                batch = batch.index_select(0, torch.from_numpy(pick).to(device))
            boxes = torch.from_numpy(np.repeat(box[None], len(pick), 0)).to(device)
            inputs.append(calc.crop(batch, boxes, calc.DETECTOR_SIZE, "zeros") * (2.0 / 255.0) - 1.0)
            pads += [(*pad, w, h)] * len(pick)
            where.extend((a + pick).tolist())
        out = self.nets.run(self.nets.detector, torch.cat(inputs))
        hit, _, keypoints = calc.first_detection(
            out["Identity"], out["Identity_1"], self.nets.anchors, self.options.min_detection_confidence
        )
        detected = calc.detection_rois(keypoints.double(), torch.tensor(pads, dtype=torch.float64, device=device))
        index = torch.tensor(where, device=device)
        detected = torch.where(hit[:, None], detected, rois.index_select(0, index))  # nobody: a harmless crop
        return rois.index_copy(0, index, detected), found.index_copy(0, index, hit)

    def _landmarks(self, frames, blocks, rois: torch.Tensor):
        """The landmark network on every row's crop: (pose flag (n,), landmarks (n, 39, 5) in crop
        pixels, segmentation logits (n, 1, 256, 256) or None), on the device."""
        crops = [
            calc.crop(batch, rois[a:b], calc.CROP_SIZE, "border") for (a, b), batch in zip(blocks, frames, strict=True)
        ]
        out = self.nets.run(self.nets.landmark, torch.cat(crops) / 255.0)
        decoded = calc.decode_landmarks(out["Identity"], out["Identity_3"])
        seg = out["Identity_2"] if self.options.segmentation else None
        return out["Identity_1"][:, 0], decoded, seg

    def _download(self, flag, found, rois, decoded, probs, mask_blocks):
        """Everything the step returns in one device-to-host copy: (flag, found, ROIs (float64),
        landmarks (n, 39, 5) float64, masks (float32 (h, w) per row) or None)."""
        n = len(flag)
        head = torch.cat([flag.double(), found.double(), rois.reshape(-1), decoded.double().reshape(-1)])
        parts = [head.view(torch.uint8)] + [p.float().reshape(-1).view(torch.uint8) for p in probs]
        host = torch.cat(parts).cpu().numpy()
        values = host[: head.numel() * 8].view(np.float64)
        flag, found = values[:n].astype(np.float32), values[n : 2 * n] > 0.5  # the network's float32
        rois = values[2 * n : 6 * n].reshape(n, 4)
        decoded = values[6 * n :].reshape(n, calc.NUM_LANDMARKS, 5)
        if not mask_blocks:
            return flag, found, rois, decoded, None
        masks, at = [None] * n, head.numel() * 8
        for (a, b), p in zip(mask_blocks, probs, strict=True):
            h, w = p.shape[-2:]
            block = host[at : at + 4 * (b - a) * h * w].view(np.float32).reshape(b - a, h, w)
            masks[a:b] = list(block)
            at += block.nbytes
        return flag, found, rois, decoded, masks

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

    def _segment(self, logits, rois, a: int, b: int, size, mask_wh) -> torch.Tensor:
        """The masks of rows ``a:b`` (one frame size, one mask size) in one ``grid_sample``
        (TensorsToSegmentationCalculator's sigmoid, WarpAffineCalculator's inverse warp with
        BORDER_ZERO): (b - a, 1, h, w) on the device."""
        w, h = (int(v) for v in size)
        probs = torch.sigmoid(logits[a:b])
        grid = calc.segmentation_grid(rois[a:b], mask_wh[0], mask_wh[1], w, h).to(probs.dtype)
        return F.grid_sample(probs, grid, mode="bilinear", padding_mode="zeros", align_corners=False)


def _blocks(keys: list) -> list[tuple[int, int]]:
    """The runs of equal keys of a sorted list, as (start, stop)."""
    out, start = [], 0
    for i in range(1, len(keys) + 1):
        if i == len(keys) or keys[i] != keys[start]:
            out.append((start, i))
            start = i
    return out
